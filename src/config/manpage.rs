//! The man page qalqan.toml(5), rendered from docs/configuration.md: the
//! one description of every key, which `config::raw::docs_tests` checks
//! against the config structs, so the page cannot drift from the code.
//!
//! A small Markdown-to-roff renderer for the shapes that file uses:
//! headings, paragraphs, `| key | default | meaning |` tables, bullet
//! lists and fenced code blocks; inline code becomes bold, links their text.

/// The Markdown the page is made from.
pub const CONFIGURATION_MD: &str = include_str!("../../docs/configuration.md");

/// qalqan.toml(5) as roff (`man -l` reads it). Cost: one pass over the
/// document; no I/O.
pub fn render(version: &str) -> String {
    let mut out = String::new();
    out.push_str(".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n");
    out.push_str(&format!(".TH QALQAN.TOML 5 \"\" \"qalqan {}\" \"File Formats Manual\"\n", escape(version)));
    out.push_str(".SH NAME\nqalqan.toml \\- configuration file of the qalqan DNS filtering resolver\n");
    out.push_str(".SH SYNOPSIS\n/etc/qalqan/qalqan.toml (as packaged); \\fBqalqan run \\-\\-config\\fR \\fIFILE\\fR\n");
    out.push_str(".SH DESCRIPTION\n");
    let mut in_code = false;
    let mut in_table = false;
    let mut para = false;
    for line in CONFIGURATION_MD.lines() {
        if line.starts_with("```") {
            if in_code {
                out.push_str(".fi\n.RE\n");
            } else {
                out.push_str(".PP\n.RS 4\n.nf\n");
            }
            in_code = !in_code;
            para = false;
            continue;
        }
        if in_code {
            out.push_str(&code_line(line));
            out.push('\n');
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            in_table = false;
            para = false;
            continue;
        }
        if let Some(h) = line.strip_prefix("# ") {
            // the document's title: the page has its own
            let _ = h;
            continue;
        }
        if let Some(h) = line.strip_prefix("## ") {
            out.push_str(&format!(".SH \"{}\"\n", escape(&plain(h)).to_uppercase().replace('"', "")));
            para = false;
            continue;
        }
        if let Some(h) = line.strip_prefix("### ").or_else(|| line.strip_prefix("#### ")) {
            out.push_str(&format!(".SS \"{}\"\n", escape(&plain(h)).replace('"', "")));
            para = false;
            continue;
        }
        if trimmed.starts_with('|') {
            let cells: Vec<&str> = trimmed.trim_matches('|').split(" | ").map(str::trim).collect();
            if !in_table {
                // the header row: the rows under it say what each column is
                in_table = true;
                continue;
            }
            if trimmed.chars().all(|ch| matches!(ch, '|' | '-' | ':' | ' ')) {
                continue;
            }
            out.push_str(".TP\n");
            match cells.as_slice() {
                [key, default, meaning] => {
                    out.push_str(&format!("{} (default: {})\n{}\n", inline(key), inline(default), inline(meaning)));
                }
                [first, rest @ ..] => {
                    let rest: Vec<String> = rest.iter().map(|c| inline(c)).collect();
                    out.push_str(&format!("{}\n{}\n", inline(first), rest.join(" \\(em ")));
                }
                [] => {}
            }
            continue;
        }
        if let Some(item) = trimmed.strip_prefix("- ").or_else(|| trimmed.strip_prefix("* ")) {
            out.push_str(&format!(".IP \\(bu 2\n{}\n", inline(item)));
            para = true;
            continue;
        }
        if !para {
            out.push_str(".PP\n");
            para = true;
        }
        out.push_str(&inline(trimmed));
        out.push('\n');
    }
    out.push_str(".SH FILES\n.TP\n/etc/qalqan/qalqan.toml\nthe packaged configuration (a conffile)\n");
    out.push_str(".TP\n/var/lib/qalqan\n[state] dir of the package: last good copies of remote and pushed lists\n");
    out.push_str(".SH \"SEE ALSO\"\n\\fBqalqan\\fR(8)\n");
    out
}

/// The text of a heading without Markdown marks.
fn plain(s: &str) -> String {
    s.replace('`', "")
}

/// Escapes roff's specials in running text: backslash, and a `.` or `'`
/// that would start a line as a request.
fn escape(s: &str) -> String {
    s.replace('\\', "\\e")
}

/// A line of a code block: escaped, and guarded against starting with a
/// request character.
fn code_line(s: &str) -> String {
    let e = escape(s).replace('-', "\\-");
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
    }
}

/// Inline Markdown → roff: `code` bold, `[text](target)` → text,
/// `**strong**` bold; a line never starts with `.` or `'`.
fn inline(s: &str) -> String {
    let s = escape(s);
    let mut out = String::new();
    let mut rest = s.as_str();
    let mut code = false;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            out.push_str(if code { "\\fR" } else { "\\fB" });
            code = !code;
            rest = &rest[1..];
            continue;
        }
        if !code && rest.starts_with("**") {
            rest = &rest[2..];
            let end = rest.find("**").unwrap_or(rest.len());
            out.push_str(&format!("\\fB{}\\fR", &rest[..end]));
            rest = rest.get(end + 2..).unwrap_or("");
            continue;
        }
        if !code && c == '[' {
            if let Some((text, after)) = link(rest) {
                out.push_str(&inline_plain(text));
                rest = after;
                continue;
            }
        }
        if code && c == '-' {
            out.push_str("\\-");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    if code {
        out.push_str("\\fR");
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// Link text with code spans made bold (links hold no nested links).
fn inline_plain(text: &str) -> String {
    let mut out = String::new();
    for (i, piece) in text.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("\\fB{}\\fR", piece.replace('-', "\\-")));
        } else {
            out.push_str(piece);
        }
    }
    out
}

/// `[text](target)rest` → (`text`, `rest`).
fn link(s: &str) -> Option<(&str, &str)> {
    let close = s.find("](")?;
    let text = s.get(1..close)?;
    // a `[` outside code spans: not a link we know how to read
    if text.split('`').step_by(2).any(|p| p.contains('[')) {
        return None;
    }
    let after = s.get(close + 2..)?;
    let end = after.find(')')?;
    Some((text, after.get(end + 1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markdown() {
        let cases: &[(&str, &str, &str)] = &[
            ("code span", "`max_ttl` caps", "\\fBmax_ttl\\fR caps"),
            ("link", "see [operations.md](operations.md#commands).", "see operations.md."),
            ("code in link", "[`[admin]`](#admin)", "\\fB[admin]\\fR"),
            ("strong", "**not** here", "\\fBnot\\fR here"),
            ("backslash", "a\\b", "a\\eb"),
            ("leading dot", ".hidden", "\\&.hidden"),
            ("option in code", "`--config`", "\\fB\\-\\-config\\fR"),
        ];
        for (name, md, want) in cases {
            assert_eq!(inline(md), *want, "case `{name}`");
        }
    }

    #[test]
    fn every_documented_key_is_on_the_page() {
        let page = render("0.0.0");
        assert!(page.starts_with(".ie"));
        assert!(page.contains(".SH \"[SERVER]\""), "a section per table");
        let rows = CONFIGURATION_MD.lines().filter(|l| l.starts_with("| `")).count();
        assert!(rows > 60, "{rows} key rows");
        for row in CONFIGURATION_MD.lines().filter(|l| l.starts_with("| `")) {
            let key = row[3..].split('`').next().unwrap_or("");
            assert!(page.contains(&format!(".TP\n\\fB{}\\fR", key.replace('-', "\\-"))), "key `{key}` missing from the page");
        }
        assert!(!page.contains("---|"), "table rules are not text");
        // no line of running text starts a roff request by accident
        for l in page.lines() {
            assert!(!l.starts_with('\''), "{l}");
        }
    }
}
