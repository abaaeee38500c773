//! `registry-csv`: the Russian blocked-resources registry dump as mirrored by
//! zapret-info (`dump.csv`):
//!
//! ```text
//! Updated: 2016-06-13 12:04:00 +0000
//! IP;domain;URL;authority;decision;date
//! 139.99.67.4;www.posttoday.pro;https://www.posttoday.pro/video/7Z;Генпрокуратура;27-31-2015/Ид831-15 ;2015-03-12
//! ```
//!
//! The file is Windows-1251 (older mirrors) or UTF-8: valid UTF-8 is read
//! as such, anything else is decoded as cp1251. Fields may be quoted with `"`
//! (`""` inside a quoted field is a quote). The IP, domain and URL fields
//! hold several values separated by ` | `. Every IP/CIDR becomes a
//! [`Rule::Ip`], every domain a [`Scope::Subtree`] name rule (`*.name` too),
//! every URL host a rule as in [`super::urls`]; all carry
//! `decision: "<decision id> (<authority>)"`, then the date after
//! `rules::DECISION_DATE` when the row has one. The `Updated:` header line
//! and a textual `IP;domain;…` column header are skipped.

use std::borrow::Cow;

use super::{column_of, for_each_line, parse_ip_net, push_rule, urls, ParseErrorKind, ParseOutput, Rule, RuleAction, Scope};

/// Parses a whole dump. Cost: O(bytes); a cp1251 file is decoded into one
/// `String` first; one `String` per rule plus one per record for the decision.
pub fn parse(file: &str, bytes: &[u8], out: &mut ParseOutput) {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text: Cow<'_, str> = match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => encoding_rs::WINDOWS_1251.decode_without_bom_handling(bytes).0,
    };
    for_each_line(file, text.as_bytes(), out, parse_record);
}

fn parse_record(file: &str, n: u32, line: &str, out: &mut ParseOutput) {
    if line.trim().is_empty() {
        return;
    }
    if n == 1 && line.starts_with("Updated:") {
        return;
    }
    let fields = match split_fields(line) {
        Ok(f) => f,
        Err(col) => {
            out.error(file, n, col, ParseErrorKind::Other("unterminated quoted field".into()));
            return;
        }
    };
    if fields.len() < 5 {
        out.error(
            file,
            n,
            1,
            ParseErrorKind::Other(format!("expected 6 fields `IP;domain;URL;authority;decision;date`, found {}", fields.len())),
        );
        return;
    }
    let field = |i: usize| fields.get(i).map_or("", |f| f.text.as_ref());
    if field(0).eq_ignore_ascii_case("ip") && field(1).eq_ignore_ascii_case("domain") {
        return; // a column header
    }
    let decision = format_decision(field(4), field(3), field(5));

    // IPs and subnets
    if let Some(f) = fields.first() {
        for value in values(&f.text, "|") {
            match parse_ip_net(value) {
                Some(net) => push_rule(out, n, Rule::Ip { net, decision: decision.clone() }),
                None => out.error(file, n, f.col(line, value), ParseErrorKind::BadAddress),
            }
        }
    }
    // domains (`*.name` masks cover the same subtree)
    if let Some(f) = fields.get(1) {
        for value in values(&f.text, "|") {
            let raw = value.strip_prefix("*.").unwrap_or(value);
            match crate::name::normalize(raw) {
                Ok(name) => push_rule(
                    out,
                    n,
                    Rule::Name { name, scope: Scope::Subtree, action: RuleAction::List, important: false, decision: decision.clone() },
                ),
                Err(e) => out.error(file, n, f.col(line, raw), ParseErrorKind::Name(e)),
            }
        }
    }
    // URLs: ` | ` with spaces (a bare `|` may occur inside a query)
    if let Some(f) = fields.get(2) {
        for value in values(&f.text, " | ") {
            // columns are exact for unquoted fields; inside a quoted field
            // with `""` escapes they count from the start of the URL
            let context = if f.is_slice() { line } else { value };
            urls::push_url(out, file, n, context, value, decision.clone());
        }
    }
}

/// `"27-31-2015/Ид2971-15 (Генпрокуратура)"`; whichever part is present;
/// then the date after [`crate::rules::DECISION_DATE`] when there is one
/// (for the structured DNS errors; [`crate::rules::decision_parts`] splits
/// it off again).
pub(super) fn format_decision(decision: &str, authority: &str, date: &str) -> Option<String> {
    let clean = |s: &str| s.trim().replace(crate::rules::DECISION_DATE, " ");
    let text = match (clean(decision).as_str(), clean(authority).as_str()) {
        ("", "") => return None,
        (d, "") => d.to_owned(),
        ("", a) => format!("({a})"),
        (d, a) => format!("{d} ({a})"),
    };
    match clean(date).as_str() {
        "" => Some(text),
        d => Some(format!("{text}{}{d}", crate::rules::DECISION_DATE)),
    }
}

/// Non-empty trimmed values of a multi-value field.
fn values<'a>(field: &'a str, sep: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    field.split(sep).map(str::trim).filter(|v| !v.is_empty())
}

/// One CSV field: its text (unquoted) and where it starts in the line.
struct Field<'a> {
    text: Cow<'a, str>,
    /// Byte offset of the field's first character (after an opening quote).
    start: usize,
}

impl Field<'_> {
    /// Column of `part` (a slice of this field's text) in the line.
    fn col(&self, line: &str, part: &str) -> u32 {
        match &self.text {
            Cow::Borrowed(_) => column_of(line, part),
            Cow::Owned(_) => u32::try_from(self.start + 1).unwrap_or(u32::MAX),
        }
    }

    /// Whether the text is a slice of the line (so `column_of` works on it).
    fn is_slice(&self) -> bool {
        matches!(self.text, Cow::Borrowed(_))
    }
}

/// Splits on `;` honouring `"` quoting. Err = column of an unterminated quote.
fn split_fields(line: &str) -> Result<Vec<Field<'_>>, u32> {
    let mut fields = Vec::with_capacity(6);
    let mut pos = 0usize;
    loop {
        let rest = line.get(pos..).unwrap_or("");
        if let Some(quoted) = rest.strip_prefix('"') {
            // quoted field: up to a `"` not followed by another `"`
            let mut text = String::new();
            let mut i = 0usize;
            let bytes = quoted.as_bytes();
            let mut closed = None;
            while let Some(&b) = bytes.get(i) {
                if b == b'"' {
                    if bytes.get(i + 1) == Some(&b'"') {
                        text.push('"');
                        i += 2;
                        continue;
                    }
                    closed = Some(i);
                    break;
                }
                let ch_len = quoted.get(i..).and_then(|s| s.chars().next()).map_or(1, char::len_utf8);
                text.push_str(quoted.get(i..i + ch_len).unwrap_or(""));
                i += ch_len;
            }
            let Some(close) = closed else {
                return Err(u32::try_from(pos + 1).unwrap_or(u32::MAX));
            };
            let text = if text.len() == close { Cow::Borrowed(quoted.get(..close).unwrap_or("")) } else { Cow::Owned(text) };
            fields.push(Field { text, start: pos + 1 });
            // skip the closing quote and anything up to the next `;`
            let after = pos + 1 + close + 1;
            match line.get(after..).and_then(|s| s.find(';')) {
                Some(j) => pos = after + j + 1,
                None => return Ok(fields),
            }
        } else {
            match rest.find(';') {
                Some(j) => {
                    fields.push(Field { text: Cow::Borrowed(rest.get(..j).unwrap_or("")), start: pos });
                    pos += j + 1;
                }
                None => {
                    fields.push(Field { text: Cow::Borrowed(rest), start: pos });
                    return Ok(fields);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Format, Rule, Scope};
    use super::split_fields;

    /// Renders every rule as a short string: `name/scope`, `ip` — each with `@decision`.
    fn run(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        let out = parse(Format::RegistryCsv, "r.csv", bytes);
        let rules = out
            .entries
            .iter()
            .map(|e| match &e.rule {
                Rule::Name { name, scope, decision, .. } => {
                    let s = match scope {
                        Scope::Subtree => "subtree",
                        Scope::Exact => "exact",
                        Scope::Below => "below",
                    };
                    format!("{}:{name}/{s}@{}", e.line, decision.as_deref().map_or("-", |d| crate::rules::decision_parts(d).0))
                }
                Rule::Ip { net, decision } => format!("{}:{net}@{}", e.line, decision.as_deref().map_or("-", |d| crate::rules::decision_parts(d).0)),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        (rules, out.errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn registry_records() {
        let d = "Генпрокуратура;27-31-2015/Ид2971-15;2015-03-12";
        let cases: Vec<(&str, String, &[&str], &[&str])> = vec![
            (
                "full record",
                format!("139.99.67.4;www.posttoday.pro;https://www.posttoday.pro/video/7Z;{d}"),
                &[
                    "1:139.99.67.4/32@27-31-2015/Ид2971-15 (Генпрокуратура)",
                    "1:www.posttoday.pro/subtree@27-31-2015/Ид2971-15 (Генпрокуратура)",
                    "1:www.posttoday.pro/exact@27-31-2015/Ид2971-15 (Генпрокуратура)",
                ],
                &[],
            ),
            ("ip only", "104.16.173.117;;;суд;2-1687/2013;2013-05-23".into(), &["1:104.16.173.117/32@2-1687/2013 (суд)"], &[]),
            (
                "several ips and v6",
                "1.2.3.4 | 2620:12a:8000::3 | 10.0.0.0/8;;;суд;1;2013-05-23".into(),
                &["1:1.2.3.4/32@1 (суд)", "1:2620:12a:8000::3/128@1 (суд)", "1:10.0.0.0/8@1 (суд)"],
                &[],
            ),
            (
                "domain no url",
                "1.2.3.4;Kupit-Diplom.club.;;ФНС;2-1 ;2016-01-01".into(),
                &["1:1.2.3.4/32@2-1 (ФНС)", "1:kupit-diplom.club/subtree@2-1 (ФНС)"],
                &[],
            ),
            ("idn domain", ";76автобар.рф;;суд;7;2016-01-01".into(), &["1:xn--76-8kcaef8fsao.xn--p1ai/subtree@7 (суд)"], &[]),
            ("mask", ";*.casino.example;;суд;7;2016-01-01".into(), &["1:casino.example/subtree@7 (суд)"], &[]),
            (
                "several urls",
                ";a.example;http://a.example/x | https://b.example/ | http://a.example/q?x=1|2;суд;7;d".into(),
                &[
                    "1:a.example/subtree@7 (суд)",
                    "1:a.example/exact@7 (суд)",
                    "1:b.example/subtree@7 (суд)",
                    "1:a.example/exact@7 (суд)",
                ],
                &[],
            ),
            (
                "quoted url with semicolon",
                "160.153.62.102;forumkavkaz.com;\"http://forumkavkaz.com/index.php?topic=4931.25;wap2\";суд;2-522/2014;2014-12-03".into(),
                &["1:160.153.62.102/32@2-522/2014 (суд)", "1:forumkavkaz.com/subtree@2-522/2014 (суд)", "1:forumkavkaz.com/exact@2-522/2014 (суд)"],
                &[],
            ),
            (
                "quote escape",
                ";x.example;\"http://x.example/a\"\"b\";суд;1;d".into(),
                &["1:x.example/subtree@1 (суд)", "1:x.example/exact@1 (суд)"],
                &[],
            ),
            ("url with port and idn", ";;http://Пример.рф:8080/;суд;1;d".into(), &["1:xn--e1afmkfd.xn--p1ai/subtree@1 (суд)"], &[]),
            ("url ip host", ";;http://192.0.2.1/x;суд;1;d".into(), &["1:192.0.2.1/32@1 (суд)"], &[]),
            ("header", "Updated: 2016-06-13 12:04:00 +0000".into(), &[], &[]),
            ("column header", "IP;domain;URL;authority;decision;date".into(), &[], &[]),
            ("blank", "".into(), &[], &[]),
            ("bad ip", "1.2.3.999;;;суд;1;d".into(), &[], &["r.csv:1:1: not a valid IP address"]),
            ("bad domain", "1.1.1.1;a..b;;суд;1;d".into(), &["1:1.1.1.1/32@1 (суд)"], &["r.csv:1:9: bad name: empty label"]),
            ("bad url", ";;http://a..b/;суд;1;d".into(), &[], &["r.csv:1:10: bad URL: host `a..b`: empty label"]),
            ("too few fields", "1.1.1.1;x.example".into(), &[], &["r.csv:1:1: expected 6 fields `IP;domain;URL;authority;decision;date`, found 2"]),
            ("unterminated quote", ";x.example;\"http://x;суд;1;d".into(), &[], &["r.csv:1:12: unterminated quoted field"]),
        ];
        for (name, line, rules, errors) in cases {
            let got = run(line.as_bytes());
            let want = (rules.iter().map(|s| s.to_string()).collect(), errors.iter().map(|s| s.to_string()).collect());
            assert_eq!(got, want, "case `{name}`");
        }
    }

    #[test]
    fn the_decision_date_rides_along() {
        let out = parse(Format::RegistryCsv, "r.csv", ";a.example;;суд;2-1;2016-01-02\n;b.example;;суд;2-2;\n".as_bytes());
        let dates: Vec<(&str, Option<&str>)> = out
            .entries
            .iter()
            .filter_map(|e| match &e.rule {
                Rule::Name { decision: Some(d), .. } => Some(crate::rules::decision_parts(d)),
                _ => None,
            })
            .collect();
        assert_eq!(dates, [("2-1 (суд)", Some("2016-01-02")), ("2-2 (суд)", None)]);
    }

    #[test]
    fn cp1251_is_detected_and_header_skipped() {
        let utf8 = "Updated: 2016-06-13 12:04:00 +0000\n1.2.3.4;пример.рф;;Роскомнадзор;9843-URL-on;2013-08-06\n";
        let (cp, _, bad) = encoding_rs::WINDOWS_1251.encode(utf8);
        assert!(!bad);
        assert!(std::str::from_utf8(&cp).is_err());
        let want = vec![
            "2:1.2.3.4/32@9843-URL-on (Роскомнадзор)".to_string(),
            "2:xn--e1afmkfd.xn--p1ai/subtree@9843-URL-on (Роскомнадзор)".to_string(),
        ];
        assert_eq!(run(&cp), (want.clone(), vec![]));
        assert_eq!(run(utf8.as_bytes()), (want, vec![]));
    }

    #[test]
    fn split_fields_table() {
        type Case = (&'static str, &'static str, Result<&'static [&'static str], u32>);
        let cases: &[Case] = &[
            ("plain", "a;b;c", Ok(&["a", "b", "c"])),
            ("empty", ";;", Ok(&["", "", ""])),
            ("quoted", "a;\"b;c\";d", Ok(&["a", "b;c", "d"])),
            ("escaped", "\"a\"\"b\";c", Ok(&["a\"b", "c"])),
            ("quoted last", "a;\"b\"", Ok(&["a", "b"])),
            ("unterminated", "a;\"b", Err(3)),
        ];
        for (name, line, want) in cases {
            let got = split_fields(line).map(|v| v.iter().map(|f| f.text.to_string()).collect::<Vec<_>>());
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "case `{name}`");
        }
    }
}
