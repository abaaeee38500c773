//! Structured DNS errors (draft-ietf-dnsop-structured-dns-error, the
//! editor's copy after -22): the EDE EXTRA-TEXT of a blocked answer as an
//! I-JSON object — `c` contact URIs, `j` justification, `s` sub-error,
//! `o` organisation, `l` language of `j` and `o` — for clients that send
//! the draft's SDE option (or the EDE option, as -09 had them signal), or
//! for every client (`[sde] mode = "always"`).
//!
//! Each list's JSON is prepared when the policy is built ([`ListSde`]):
//! everything but `j` is one precomputed string, and `j` a template whose
//! literal parts are already escaped. Rendering a blocked hit's text costs
//! one allocation of about the text's length and a copy of its pieces
//! (the list name and decision escaped on the way); clients that do not
//! ask pay nothing (the mode is one branch, taken only for blocked answers).

use std::fmt::Write as _;

/// `[sde] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SdeMode {
    /// Plain EXTRA-TEXT for everyone.
    Off,
    /// JSON for clients that signal support, plain text for the rest.
    #[default]
    Signalled,
    /// JSON for every client with EDNS.
    Always,
}

impl SdeMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "signalled" | "signaled" => Some(Self::Signalled),
            "always" => Some(Self::Always),
            _ => None,
        }
    }
}

/// The server side of `[sde]`: when JSON is sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdeSignal {
    pub mode: SdeMode,
    /// The SDE option's code in queries (the draft leaves it to IANA).
    pub option_code: u16,
}

/// EDE INFO-CODEs the draft lets carry structured text: Blocked (15),
/// Censored (16), Filtered (17).
pub fn structured_code(code: u16) -> bool {
    matches!(code, 15..=17)
}

/// Where a `j` template holds a value of the hit.
#[derive(Debug, Clone)]
enum Piece {
    /// JSON-escaped literal text.
    Lit(Box<str>),
    List,
    Decision,
    Authority,
    Date,
    /// The rule as the policy holds it (the normalised name).
    Rule,
}

/// One list's structured error, prepared at policy build.
#[derive(Debug, Clone)]
pub struct ListSde {
    /// `{` then `"c":[…]` and `"s":N` when set (no trailing comma).
    head: Box<str>,
    /// `"o":"…","l":"…"` or `"l":"…"`, after `j`.
    tail: Box<str>,
    /// `None`: `j` is the plain EXTRA-TEXT (the list's `blocked by list …`).
    justification: Option<Vec<Piece>>,
    /// `{"c":[…],"s":N}`: what is left when `j` and `o` do not fit; `None`
    /// when neither `c` nor `s` is set (the draft needs one of `c`, `j`, `s`).
    short: Option<Box<str>>,
}

/// What a `j` template may name.
pub const PLACEHOLDERS: &str = "{list}, {decision}, {authority}, {date}, {rule}";

/// A hit's registry decision: `ID (AUTHORITY)` and the row's date.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decision<'a> {
    pub text: Option<&'a str>,
    pub date: Option<&'a str>,
}

impl ListSde {
    /// Prepares a list's JSON. `template`: the list's `j` (or `[sde]
    /// justification`), with [`PLACEHOLDERS`]; `None` = the plain text.
    /// Fails on an unknown placeholder or an unclosed `{`.
    pub fn new(contact: &[String], organization: Option<&str>, language: &str, sub_error: Option<u8>, template: Option<&str>) -> Result<Self, String> {
        let mut head = String::from("{");
        if !contact.is_empty() {
            head.push_str("\"c\":[");
            for (i, c) in contact.iter().enumerate() {
                if i > 0 {
                    head.push(',');
                }
                push_json_str(&mut head, c);
            }
            head.push(']');
        }
        if let Some(s) = sub_error {
            if head.len() > 1 {
                head.push(',');
            }
            let _ = write!(head, "\"s\":{s}");
        }
        let short = (head.len() > 1).then(|| format!("{head}}}").into_boxed_str());
        let mut tail = String::new();
        if let Some(o) = organization.filter(|o| !o.is_empty()) {
            tail.push_str("\"o\":");
            push_json_str(&mut tail, o);
            tail.push(',');
        }
        tail.push_str("\"l\":");
        push_json_str(&mut tail, language);
        let justification = template.map(parse_template).transpose()?;
        Ok(Self { head: head.into_boxed_str(), tail: tail.into_boxed_str(), justification, short })
    }

    /// The JSON text for a hit of list `list` with decision `decision`
    /// (`ID (AUTHORITY)` and date), `plain` the plain EXTRA-TEXT pieces and `rule`
    /// the rule's text; at most `max` bytes: the whole object, else the
    /// object without `j`, `o` and `l` (the draft's order of omission),
    /// else `None` (then no EXTRA-TEXT at all).
    /// Cost: one allocation, a copy of the pieces.
    pub fn render(&self, list: &str, decision: Decision<'_>, plain: &[&str], rule: &str, max: usize) -> Option<String> {
        let mut out = String::with_capacity(self.head.len() + self.tail.len() + 96);
        out.push_str(&self.head);
        let mut j = String::with_capacity(64);
        let (id, authority) = decision.text.map_or(("", ""), split_decision);
        match &self.justification {
            None => plain.iter().for_each(|p| j.push_str(p)),
            Some(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Lit(t) => j.push_str(t),
                        Piece::List => j.push_str(list),
                        Piece::Decision => j.push_str(id),
                        Piece::Authority => j.push_str(authority),
                        Piece::Date => j.push_str(decision.date.unwrap_or("")),
                        Piece::Rule => j.push_str(rule),
                    }
                }
            }
        }
        if out.len() > 1 {
            out.push(',');
        }
        if !j.trim().is_empty() {
            out.push_str("\"j\":");
            push_json_str(&mut out, j.trim());
            out.push(',');
        }
        out.push_str(&self.tail);
        out.push('}');
        if out.len() <= max {
            return Some(out);
        }
        self.short.as_deref().filter(|s| s.len() <= max).map(str::to_owned)
    }
}

fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let (lit, after) = rest.split_at(open);
        if !lit.is_empty() {
            out.push(Piece::Lit(lit.into()));
        }
        let close = after.find('}').ok_or_else(|| format!("`{{` without `}}` in `{t}`"))?;
        out.push(match &after[1..close] {
            "list" => Piece::List,
            "decision" => Piece::Decision,
            "authority" => Piece::Authority,
            "date" => Piece::Date,
            "rule" => Piece::Rule,
            other => return Err(format!("unknown placeholder `{{{other}}}` in `{t}` (use {PLACEHOLDERS})")),
        });
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Lit(rest.into()));
    }
    Ok(out)
}

/// Appends `s` as a JSON string (quotes, `\"`, `\\`, control characters
/// as `\u00XX`).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Splits the policy's decision text `ID (AUTHORITY)` (the registry
/// parser's form) into id and authority: the authority is the balanced
/// parenthesised tail after a space, so ids with parentheses
/// (`2-236(1)/2014`) and authorities with them survive. Anything else is
/// all id.
pub fn split_decision(text: &str) -> (&str, &str) {
    let t = text.trim();
    let Some(body) = t.strip_suffix(')') else { return (t, "") };
    let mut depth = 1usize;
    for (i, c) in body.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    let id = &body[..i];
                    if id.is_empty() || id.ends_with(' ') {
                        return (id.trim_end(), &body[i + 1..]);
                    }
                    return (t, "");
                }
            }
            _ => {}
        }
    }
    (t, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rendered_json_table() {
        let contact = vec!["mailto:abuse@isp.example".to_owned(), "tel:+7-727-000".to_owned()];
        let full = ListSde::new(&contact, Some("ISP \"Q\""), "ru", Some(5), Some("{list}: решение {decision} ({authority}) от {date} {rule}")).unwrap();
        let d = Decision { text: Some("2-6 (ФНС)"), date: Some("2016-02-03") };
        let got = parse(&full.render("reg", d, &[], "a.test", 4096).unwrap());
        assert_eq!(got["c"], serde_json::json!(["mailto:abuse@isp.example", "tel:+7-727-000"]));
        assert_eq!(got["s"], 5);
        assert_eq!(got["j"], "reg: решение 2-6 (ФНС) от 2016-02-03 a.test");
        assert_eq!(got["o"], "ISP \"Q\"");
        assert_eq!(got["l"], "ru");
        // too long: c and s only, then nothing
        let short = full.render("reg", d, &[], "a.test", 80).unwrap();
        assert_eq!(parse(&short), serde_json::json!({"c": ["mailto:abuse@isp.example", "tel:+7-727-000"], "s": 5}));
        assert_eq!(full.render("reg", Decision::default(), &[], "a.test", 10), None);
        // no template: j is the plain text; no c, s or o
        let plain = ListSde::new(&[], None, "en", None, None).unwrap();
        let got = parse(&plain.render("ads", Decision::default(), &["blocked by list ", "ads"], "x", 4096).unwrap());
        assert_eq!(got, serde_json::json!({"j": "blocked by list ads", "l": "en"}));
        assert_eq!(plain.render("ads", Decision::default(), &["blocked by list ", "ads"], "x", 5), None, "nothing to keep without c or s");
        // control characters and backslashes stay valid JSON
        let t = ListSde::new(&[], None, "en", None, Some("a\\b\t{decision}")).unwrap();
        assert_eq!(parse(&t.render("l", Decision { text: Some("x\"y"), date: None }, &[], "r", 4096).unwrap())["j"], "a\\b\tx\"y");
    }

    #[test]
    fn templates_are_checked() {
        assert!(ListSde::new(&[], None, "en", None, Some("{nope}")).unwrap_err().contains("unknown placeholder"));
        assert!(ListSde::new(&[], None, "en", None, Some("a {list")).is_err());
        assert!(ListSde::new(&[], None, "en", None, Some("{list} {decision} {authority} {date} {rule}")).is_ok());
    }
}
