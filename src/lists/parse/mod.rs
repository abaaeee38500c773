//! List parsers: bytes in, [`Entry`] values out. No I/O, no tokio.
//!
//! Every format is line-oriented. A bad line becomes a [`ParseError`] with its
//! list name, line and column, is counted and skipped; the caller decides
//! (by the error budget, see [`ParseOutput::over_budget`]) whether the whole
//! list is rejected.

use std::collections::BTreeMap;

use crate::name::NameError;
// The rule vocabulary lives in `crate::rules` (shared with `policy` and
// `config`); re-exported here so the parsers and their callers name it
// as before.
pub use crate::rules::{parse_ip_net, Entry, Format, LocalData, Rule, RuleAction, Scope};

pub mod adblock;
pub mod domains;
pub mod hosts;
pub mod keywords;
pub mod registry_csv;
pub mod registry_xml;
pub mod rpz;
pub mod urls;

#[cfg(test)]
mod real_data_tests;

/// How many parse errors are kept with their full text (the rest are only counted).
pub const KEPT_ERRORS: usize = 20;

/// Why one line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    #[error("bad name: {0}")]
    Name(#[from] NameError),
    #[error("address with no host name")]
    MissingName,
    #[error("not a valid IP address")]
    BadAddress,
    #[error("line is not valid UTF-8")]
    NotUtf8,
    #[error("adblock option `{0}` is not supported")]
    UnsupportedOption(String),
    #[error("unsupported rule syntax")]
    UnsupportedSyntax,
    #[error("RPZ action `{0}` is not supported")]
    UnsupportedRpzAction(String),
    #[error("RPZ trigger `{0}` is not supported")]
    UnsupportedRpzTrigger(String),
    #[error("bad URL: {0}")]
    BadUrl(String),
    #[error("bad regular expression: {0}")]
    BadRegex(String),
    #[error("{0}")]
    Other(String),
}

/// A rejected line, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {kind}")]
pub struct ParseError {
    /// The file (or URL) the list came from, as configured.
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub kind: ParseErrorKind,
}

/// Where parsed rules go when they are not collected in `entries`.
pub struct Sink<'s>(pub &'s mut dyn FnMut(Entry));

impl std::fmt::Debug for Sink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

/// What one parse run produced.
#[derive(Debug, Default)]
pub struct ParseOutput<'s> {
    /// The rules, unless a sink takes them as they are parsed.
    pub entries: Vec<Entry>,
    /// Rules produced (collected or sent to the sink).
    pub rules: usize,
    sink: Option<Sink<'s>>,
    /// Lines read (including comments and blanks).
    pub lines: u32,
    /// Lines rejected (all of them; only the first [`KEPT_ERRORS`] are in `errors`).
    pub bad_lines: u32,
    pub errors: Vec<ParseError>,
    /// Lines deliberately ignored because they use a construct we do not
    /// enforce (unsupported adblock modifiers, RPZ IP triggers…), by construct.
    pub unsupported: BTreeMap<String, u32>,
    /// Lines ignored on purpose that are not errors (`localhost` in hosts files…).
    pub ignored: u32,
    /// Entries by kind, for formats that have kinds (`registry-xml`:
    /// `blockType=…`, and `enforced` / `host-level` / `not enforceable by DNS`).
    pub entry_kinds: BTreeMap<String, u32>,
}

impl<'s> ParseOutput<'s> {
    /// An output that hands every rule to `sink` instead of collecting it
    /// (streaming into the index builder: no per-list entry vector).
    pub fn streaming(sink: &'s mut dyn FnMut(Entry)) -> Self {
        Self { sink: Some(Sink(sink)), ..Self::default() }
    }

    /// Records a bad line.
    pub fn error(&mut self, file: &str, line: u32, column: u32, kind: ParseErrorKind) {
        self.bad_lines += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(ParseError { file: file.to_owned(), line, column, kind });
        }
    }

    /// Records a line skipped for an unsupported construct: counted by
    /// construct, and kept as an error text for `qalqan check` but not
    /// against the error budget.
    pub fn unsupported(&mut self, construct: &str) {
        *self.unsupported.entry(construct.to_owned()).or_insert(0) += 1;
    }

    /// Whether bad lines exceed `max_share` (0.01 = 1 %) of the non-empty lines.
    pub fn over_budget(&self, max_share: f64) -> bool {
        let considered = (self.rules as f64) + f64::from(self.bad_lines);
        considered > 0.0 && f64::from(self.bad_lines) > max_share * considered
    }

    /// Everything but the rules and the sink: the statistics of a streamed parse.
    pub fn into_stats(self) -> ParseOutput<'static> {
        ParseOutput {
            entries: Vec::new(),
            rules: self.rules,
            sink: None,
            lines: self.lines,
            bad_lines: self.bad_lines,
            errors: self.errors,
            unsupported: self.unsupported,
            ignored: self.ignored,
            entry_kinds: self.entry_kinds,
        }
    }

    pub(crate) fn push(&mut self, line: u32, rule: Rule) {
        self.rules += 1;
        match &mut self.sink {
            Some(Sink(f)) => f(Entry { line, rule }),
            None => self.entries.push(Entry { line, rule }),
        }
    }
}

/// Parses `bytes` in `format`. `file` names the source in error messages.
///
/// Never panics and never fails as a whole: bad lines are recorded in the
/// output. Cost: O(bytes); one `String` per rule.
pub fn parse(format: Format, file: &str, bytes: &[u8]) -> ParseOutput<'static> {
    let mut out = ParseOutput::default();
    parse_into(format, file, bytes, &mut out);
    out
}

/// Parses `bytes` into `out` (which may stream, see [`ParseOutput::streaming`]).
pub fn parse_into(format: Format, file: &str, bytes: &[u8], out: &mut ParseOutput<'_>) {
    match format {
        Format::RegistryCsv => registry_csv::parse(file, bytes, out),
        Format::RegistryXml => registry_xml::parse(file, bytes, out),
        Format::Rpz => rpz::parse(file, bytes, out),
        _ => {
            let line_fn: fn(&str, u32, &str, &mut ParseOutput) = match format {
                Format::Domains => domains::parse_line,
                Format::Hosts => hosts::parse_line,
                Format::Adblock => adblock::parse_line,
                Format::Urls => urls::parse_line,
                Format::Keywords => keywords::parse_line,
                Format::RegistryCsv | Format::RegistryXml | Format::Rpz => unreachable_line,
            };
            for_each_line(file, bytes, out, line_fn);
        }
    }
}

/// The parser of one line of `format`, for formats whose lines parse
/// each on its own (no state carried from line to line: not RPZ zone text,
/// not the registry CSV with its header): what an update by delta parses
/// its added and removed lines with (`lists/delta.rs`).
pub fn line_parser(format: Format) -> Option<LineFn> {
    match format {
        Format::Domains => Some(domains::parse_line),
        Format::Hosts => Some(hosts::parse_line),
        Format::Adblock => Some(adblock::parse_line),
        Format::Urls => Some(urls::parse_line),
        _ => None,
    }
}

/// A parser of one line: file, 1-based line number, the line, the output.
pub type LineFn = fn(&str, u32, &str, &mut ParseOutput);

fn unreachable_line(_: &str, _: u32, _: &str, _: &mut ParseOutput) {}

/// Calls `f` for every line of `bytes` as UTF-8 (a UTF-8 BOM and `\r` are
/// stripped); lines that are not UTF-8 are recorded as errors.
pub fn for_each_line(
    file: &str,
    bytes: &[u8],
    out: &mut ParseOutput,
    mut f: impl FnMut(&str, u32, &str, &mut ParseOutput),
) {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return;
    }
    // the whole file checked at once (word at a time), not line by line: a
    // per-line check showed in a 1M-name reload (`parse/*` in
    // benches/lists.rs); a file that is not
    // UTF-8 throughout is checked per line, to name the lines that are not
    // (lines found with memchr: `str::split` was slower than the check)
    let text = std::str::from_utf8(bytes).ok();
    let mut start = 0usize;
    let ends = memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len()));
    for (i, end) in ends.enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        out.lines = n;
        let line_end = if bytes.get(start..end).is_some_and(|l| l.ends_with(b"\r")) { end - 1 } else { end };
        let line = match text {
            // `\n` and `\r` are one byte each, so both ends are character boundaries
            Some(text) => Ok(text.get(start..line_end).unwrap_or("")),
            None => std::str::from_utf8(bytes.get(start..line_end).unwrap_or(&[])),
        };
        start = end + 1;
        match line {
            Ok(line) => f(file, n, line, out),
            Err(e) => {
                let col = u32::try_from(e.valid_up_to() + 1).unwrap_or(u32::MAX);
                out.error(file, n, col, ParseErrorKind::NotUtf8);
            }
        }
    }
}

/// 1-based column of `part` inside `line` (both must come from the same string).
pub fn column_of(line: &str, part: &str) -> u32 {
    let offset = (part.as_ptr() as usize).saturating_sub(line.as_ptr() as usize);
    u32::try_from(offset.min(line.len()) + 1).unwrap_or(u32::MAX)
}

/// Adds a name rule covering `raw` (normalised here) or records why it is bad.
#[allow(clippy::too_many_arguments)]
pub fn push_name(
    out: &mut ParseOutput,
    file: &str,
    n: u32,
    line: &str,
    raw: &str,
    scope: Scope,
    action: RuleAction,
    important: bool,
    decision: Option<String>,
) {
    match crate::name::normalize(raw) {
        Ok(name) => out.push(n, Rule::Name { name, scope, action, important, decision }),
        Err(e) => out.error(file, n, column_of(line, raw), ParseErrorKind::Name(e)),
    }
}

/// Adds any rule.
pub fn push_rule(out: &mut ParseOutput, n: u32, rule: Rule) {
    out.push(n, rule);
}

#[cfg(test)]
mod line_tests {
    use super::*;

    fn names(out: &ParseOutput<'_>) -> Vec<(u32, String)> {
        out.entries
            .iter()
            .filter_map(|e| match &e.rule {
                Rule::Name { name, .. } => Some((e.line, name.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lines_are_numbered_alike_whether_the_file_is_utf8_throughout_or_not() {
        let good = parse(Format::Domains, "l.txt", b"\xef\xbb\xbfa.example\r\n\r\n# c\nb.example\nc.example");
        assert!(good.errors.is_empty());
        assert_eq!(names(&good), [(1, "a.example".into()), (4, "b.example".into()), (5, "c.example".into())]);
        assert_eq!(good.lines, 5);
        // one line not UTF-8: that line is named, the others are kept
        let bad = parse(Format::Domains, "l.txt", b"a.example\r\n\r\n\xff.bad\nb.example\nc.example\n");
        assert_eq!(names(&bad), [(1, "a.example".into()), (4, "b.example".into()), (5, "c.example".into())]);
        assert_eq!(bad.errors.len(), 1);
        assert_eq!((bad.errors[0].line, bad.errors[0].column), (3, 1));
        assert!(matches!(bad.errors[0].kind, ParseErrorKind::NotUtf8));
        assert_eq!(bad.lines, 5);
    }
}
