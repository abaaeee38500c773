//! `domains`: one name per line; `#` starts a comment (whole line or after the
//! name). Each name blocks itself and everything below it.
//!
//! Lines in the shipped data look like `ads.example.com`, `ads.example.com.`
//! and, in hagezi's wildcard flavour, `*.ads.example.com` (same subtree rule).

use super::{push_name, ParseOutput, Rule, RuleAction, Scope};

/// Parses one line. Cost: O(len), one allocation per rule.
pub fn parse_line(file: &str, n: u32, line: &str, out: &mut ParseOutput) {
    // most lines are a plain name (or `*.` and one) and nothing else: one
    // pass does them
    if let Some(name) = crate::name::normalize_plain_line(line.strip_prefix("*.").unwrap_or(line)) {
        out.push(n, Rule::Name { name, scope: Scope::Subtree, action: RuleAction::List, important: false, decision: None });
        return;
    }
    // byte scans, not `str::split`: short lines, and this runs per line
    let content = match line.bytes().position(|b| b == b'#') {
        Some(i) => line.get(..i).unwrap_or(""),
        None => line,
    }
    .trim();
    if content.is_empty() {
        return;
    }
    if content.is_ascii() && !content.bytes().any(|b| b.is_ascii_whitespace()) {
        let raw = content.strip_prefix("*.").unwrap_or(content);
        push_name(out, file, n, line, raw, Scope::Subtree, RuleAction::List, false, None);
        return;
    }
    let mut words = content.split_whitespace();
    let Some(raw) = words.next() else { return };
    if words.next().is_some() {
        out.error(file, n, super::column_of(line, content), super::ParseErrorKind::Other(
            "more than one name on the line".into(),
        ));
        return;
    }
    let raw = raw.strip_prefix("*.").unwrap_or(raw);
    push_name(out, file, n, line, raw, Scope::Subtree, RuleAction::List, false, None);
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Format, ParseErrorKind, Rule};
    use crate::name::NameError;

    fn first(line: &str) -> Result<Option<(String, u32)>, ParseErrorKind> {
        let out = parse(Format::Domains, "t.txt", line.as_bytes());
        if let Some(e) = out.errors.first() {
            return Err(e.kind.clone());
        }
        Ok(out.entries.first().map(|e| match &e.rule {
            Rule::Name { name, .. } => (name.clone(), e.line),
            other => panic!("unexpected {other:?}"),
        }))
    }

    /// (case name, line, the parse of that line)
    type LineCase<'a> = (&'a str, &'a str, Result<Option<(&'a str, u32)>, ParseErrorKind>);

    #[test]
    fn domains_lines() {
        let cases: &[LineCase<'_>] = &[
            ("plain", "ads.example.com", Ok(Some(("ads.example.com", 1)))),
            ("trailing dot", "ads.example.com.", Ok(Some(("ads.example.com", 1)))),
            ("case", "ADS.Example.COM", Ok(Some(("ads.example.com", 1)))),
            ("wildcard flavour", "*.ads.example", Ok(Some(("ads.example", 1)))),
            ("comment", "# header", Ok(None)),
            ("inline comment", "ads.example # why", Ok(Some(("ads.example", 1)))),
            ("crlf", "ads.example\r\n", Ok(Some(("ads.example", 1)))),
            ("blank", "   ", Ok(None)),
            ("idn", "пример.рф", Ok(Some(("xn--e1afmkfd.xn--p1ai", 1)))),
            ("garbage", "not a name", Err(ParseErrorKind::Other("more than one name on the line".into()))),
            ("bad char", "a/b.example", Err(ParseErrorKind::Name(NameError::BadChar('/')))),
        ];
        for (name, line, want) in cases {
            let got = first(line);
            let want = want.clone().map(|o| o.map(|(s, l)| (s.to_owned(), l)));
            assert_eq!(got, want, "case `{name}`");
        }
    }

    #[test]
    fn error_positions_name_file_and_line() {
        let out = parse(Format::Domains, "lists/x.txt", b"good.example\n# c\nbad..name\nok.example\n");
        assert_eq!(out.entries.len(), 2);
        assert_eq!(out.bad_lines, 1);
        assert_eq!(out.errors[0].to_string(), "lists/x.txt:3:1: bad name: empty label");
        assert_eq!(out.lines, 4);
    }
}
