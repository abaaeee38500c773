//! `keywords`: one substring per line, matched against the whole query name
//! (`casino`, `xn--80a`); `#` starts a comment (whole line or after the
//! keyword). Keywords are trimmed and lowercased; a non-ASCII keyword is
//! converted with IDNA (`казино` → `xn--80aodfsg`), which only matches
//! names whose label is exactly that word, so such keywords are of limited
//! use but kept rather than silently dropped.

use super::{column_of, push_rule, ParseErrorKind, ParseOutput, Rule};

/// Parses one line. Cost: O(len), one allocation per rule.
pub fn parse_line(file: &str, n: u32, line: &str, out: &mut ParseOutput) {
    let content = line.split('#').next().unwrap_or("").trim();
    if content.is_empty() {
        return;
    }
    if let Some(c) = content.chars().find(|c| c.is_whitespace()) {
        out.error(file, n, column_of(line, content), ParseErrorKind::Other(format!("white space {c:?} inside a keyword")));
        return;
    }
    let keyword = if content.is_ascii() {
        content.to_ascii_lowercase()
    } else {
        match idna::domain_to_ascii(content) {
            Ok(k) if !k.is_empty() => k,
            _ => {
                let kind = ParseErrorKind::Name(crate::name::NameError::Idna);
                out.error(file, n, column_of(line, content), kind);
                return;
            }
        }
    };
    if let Some(c) = keyword.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        let kind = ParseErrorKind::Name(crate::name::NameError::BadChar(c));
        out.error(file, n, column_of(line, content), kind);
        return;
    }
    push_rule(out, n, Rule::Keyword(keyword));
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Format, ParseErrorKind, Rule};
    use crate::name::NameError;

    fn first(line: &str) -> Result<Option<String>, ParseErrorKind> {
        let out = parse(Format::Keywords, "k.txt", line.as_bytes());
        if let Some(e) = out.errors.first() {
            return Err(e.kind.clone());
        }
        Ok(out.entries.first().map(|e| match &e.rule {
            Rule::Keyword(k) => k.clone(),
            other => panic!("unexpected {other:?}"),
        }))
    }

    #[test]
    fn keyword_lines() {
        type Case = (&'static str, &'static str, Result<Option<&'static str>, ParseErrorKind>);
        let cases: &[Case] = &[
            ("plain", "casino", Ok(Some("casino"))),
            ("case", "CaSiNo", Ok(Some("casino"))),
            ("padding", "  casino\t", Ok(Some("casino"))),
            ("with dot", "bet.", Ok(Some("bet."))),
            ("hyphen", "porn-", Ok(Some("porn-"))),
            ("punycode", "xn--80aodfsg", Ok(Some("xn--80aodfsg"))),
            ("cyrillic", "казино", Ok(Some("xn--80aodfsg"))),
            ("comment", "# adult words", Ok(None)),
            ("inline comment", "casino # gambling", Ok(Some("casino"))),
            ("blank", "   ", Ok(None)),
            ("inner space", "online casino", Err(ParseErrorKind::Other("white space ' ' inside a keyword".into()))),
            ("bad char", "ca$ino", Err(ParseErrorKind::Name(NameError::BadChar('$')))),
            ("bad idn", "a\u{200d}б\u{0301}\u{0301}", Err(ParseErrorKind::Name(NameError::Idna))),
        ];
        for (name, line, want) in cases {
            let want = want.clone().map(|o| o.map(str::to_owned));
            assert_eq!(first(line), want, "case `{name}`");
        }
    }

    #[test]
    fn error_positions_name_file_and_line() {
        let out = parse(Format::Keywords, "lists/k.txt", b"casino\n\n  bad word\n");
        assert_eq!(out.entries.len(), 1);
        assert_eq!(out.errors[0].to_string(), "lists/k.txt:3:3: white space ' ' inside a keyword");
    }
}
