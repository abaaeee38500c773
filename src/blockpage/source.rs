//! What a blocking rule's source says about its decision: the decision id
//! and authority (from the policy's decision text, `ID (AUTHORITY)` as the
//! registry parser writes it) and, for a registry dump, the date, re-read
//! from the rule's line of the list's file (the policy does not keep it).
//! Re-reads are cached per policy generation and run one at a time off the
//! workers, so a flood of distinct names costs at most one reader thread.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::policy::RuleId;

/// Cached rows before the cache is emptied (one page view fills one).
const MAX_CACHED: usize = 4096;

/// A decision as the page shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub authority: String,
    /// As the source writes it (a registry dump: `2015-03-12`); empty when unknown.
    pub date: String,
}

/// `ID (AUTHORITY)` split (shared with the structured DNS errors).
pub use crate::policy::sde::split_decision;

/// Rows read for one policy generation: rule → its row's decision, or
/// `None` when the line could not be matched to the rule.
type Rows = HashMap<RuleId, Option<Arc<Decision>>>;

/// The registry-dump rows of the lists, re-read on demand.
pub struct SourceRows {
    /// Per list (by `ListId` index): the file to re-read, for registry
    /// dumps with a file on disk (a file list, or a remote list's persisted
    /// copy: then `true`, opened without following a symlink, as
    /// `lists/state.rs` reads it).
    files: Vec<Option<(PathBuf, bool)>>,
    /// The rows read for the policy generation it names.
    cache: Mutex<(u64, Rows)>,
    reading: Semaphore,
}

impl SourceRows {
    pub fn new(files: Vec<Option<(PathBuf, bool)>>) -> Self {
        Self { files, cache: Mutex::new((0, HashMap::new())), reading: Semaphore::new(1) }
    }

    /// The decision of `rule` (policy `generation`, list `list`, source line
    /// `line`), whose decision text in the policy is `text`: the row's own
    /// fields when the line still holds that decision (a newer file may have
    /// moved it), else `text` split. Waits at most `wait` for a re-read.
    pub async fn decision(&self, generation: u64, rule: RuleId, list: usize, line: u32, text: &str, wait: Duration) -> Decision {
        let fallback = || {
            let (id, authority) = split_decision(text);
            Decision { id: id.to_owned(), authority: authority.to_owned(), date: String::new() }
        };
        let Some(Some((path, nofollow))) = self.files.get(list) else { return fallback() };
        if let Some(hit) = self.cached(generation, rule) {
            return hit.map_or_else(fallback, |d| (*d).clone());
        }
        // one reader at a time; whoever waited finds the row cached
        let Ok(Ok(_permit)) = tokio::time::timeout(wait, self.reading.acquire()).await else { return fallback() };
        if let Some(hit) = self.cached(generation, rule) {
            return hit.map_or_else(fallback, |d| (*d).clone());
        }
        let (path, nofollow, want) = (path.clone(), *nofollow, text.to_owned());
        let read = tokio::task::spawn_blocking(move || read_line(&path, nofollow, line).and_then(|l| registry_row(&l)).filter(|d| matches(d, &want)));
        let row = match tokio::time::timeout(wait, read).await {
            Ok(Ok(row)) => row.map(Arc::new),
            // too slow or failed: not cached, the next view tries again
            _ => return fallback(),
        };
        let mut c = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.0 != generation || c.1.len() >= MAX_CACHED {
            *c = (generation, HashMap::new());
        }
        c.1.insert(rule, row.clone());
        drop(c);
        row.map_or_else(fallback, |d| (*d).clone())
    }

    fn cached(&self, generation: u64, rule: RuleId) -> Option<Option<Arc<Decision>>> {
        let c = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.0 != generation {
            return None;
        }
        c.1.get(&rule).cloned()
    }
}

/// Whether a re-read row is the rule's: it yields the decision text the
/// policy holds (the registry parser's `ID (AUTHORITY)`).
fn matches(d: &Decision, text: &str) -> bool {
    let formatted = match (d.id.as_str(), d.authority.as_str()) {
        ("", "") => String::new(),
        (id, "") => id.to_owned(),
        ("", a) => format!("({a})"),
        (id, a) => format!("{id} ({a})"),
    };
    formatted == text
}

/// Line `line` (1-based) of the file at `path`, as text: UTF-8, or
/// Windows-1251 when the line is not UTF-8 (older registry mirrors).
/// Streams the file up to that line. Blocking.
fn read_line(path: &std::path::Path, nofollow: bool, line: u32) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let flags = if nofollow { nix::fcntl::OFlag::O_NOFOLLOW.bits() } else { 0 };
    let file = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).ok()?;
    let mut r = std::io::BufReader::with_capacity(64 * 1024, file);
    let mut buf = Vec::new();
    for n in 1..=line {
        buf.clear();
        if r.read_until(b'\n', &mut buf).ok()? == 0 {
            return None;
        }
        if n == 1 && buf.starts_with(b"\xef\xbb\xbf") {
            buf.drain(..3);
        }
    }
    let text = match std::str::from_utf8(&buf) {
        Ok(s) => s.to_owned(),
        Err(_) => encoding_rs::WINDOWS_1251.decode_without_bom_handling(&buf).0.into_owned(),
    };
    Some(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// The decision of a registry dump row `IP;domain;URL;authority;decision;date`
/// (`;`-separated, `"` quoting with `""` inside).
fn registry_row(line: &str) -> Option<Decision> {
    let fields = split_fields(line);
    if fields.len() < 5 {
        return None;
    }
    let f = |i: usize| fields.get(i).map_or("", |s| s.trim()).to_owned();
    Some(Decision { authority: f(3), id: f(4), date: f(5) })
}

fn split_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::with_capacity(6);
    let mut cur = String::new();
    let mut quoted = false;
    let mut at_start = true;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => quoted = true,
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            ';' if !quoted => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            c => cur.push(c),
        }
        at_start = false;
    }
    fields.push(cur);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_text_table() {
        let cases: &[(&str, (&str, &str))] = &[
            ("27-31-2015/Ид831-15 (Генпрокуратура)", ("27-31-2015/Ид831-15", "Генпрокуратура")),
            ("2-236(1)/2014 (суд)", ("2-236(1)/2014", "суд")),
            ("1-2 (Роскомнадзор (РКН))", ("1-2", "Роскомнадзор (РКН)")),
            ("(ФНС)", ("", "ФНС")),
            ("27-31-2015/Ид831-15", ("27-31-2015/Ид831-15", "")),
            ("Ид831(1)", ("Ид831(1)", "")),
            ("a) (b", ("a) (b", "")),
            ("))", ("))", "")),
            ("", ("", "")),
        ];
        for (text, want) in cases {
            assert_eq!(split_decision(text), *want, "case `{text}`");
        }
    }

    #[test]
    fn registry_rows() {
        let d = registry_row("1.2.3.4;a.example;;Генпрокуратура;27-31-2015/Ид831-15 ;2015-03-12").unwrap();
        assert_eq!((d.id.as_str(), d.authority.as_str(), d.date.as_str()), ("27-31-2015/Ид831-15", "Генпрокуратура", "2015-03-12"));
        assert!(matches(&d, "27-31-2015/Ид831-15 (Генпрокуратура)"));
        let q = registry_row("\"1.1.1.1 | 2.2.2.2\";b.example;\"http://b.example/?a=\"\"x;y\"\"\";суд;2-1;2016-01-02").unwrap();
        assert_eq!((q.id.as_str(), q.date.as_str()), ("2-1", "2016-01-02"));
        assert!(registry_row("a;b").is_none());
    }

    #[tokio::test]
    async fn rows_reread_checked_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dump.csv");
        std::fs::write(&p, "Updated: x\n1.2.3.4;a.example;;суд;2-1;2016-01-02\n").unwrap();
        let rows = SourceRows::new(vec![Some((p.clone(), false))]);
        let rule: RuleId = 7;
        let w = Duration::from_secs(5);
        let d = rows.decision(1, rule, 0, 2, "2-1 (суд)", w).await;
        assert_eq!(d.date, "2016-01-02");
        // cached: the file changing under the same generation is not re-read
        std::fs::write(&p, "Updated: x\n1.2.3.4;a.example;;суд;2-1;2020-12-31\n").unwrap();
        assert_eq!(rows.decision(1, rule, 0, 2, "2-1 (суд)", w).await.date, "2016-01-02");
        assert_eq!(rows.decision(2, rule, 0, 2, "2-1 (суд)", w).await.date, "2020-12-31", "a new generation re-reads");
        // a line holding another decision is not used
        let d = rows.decision(3, rule, 0, 2, "9-9 (ФНС)", w).await;
        assert_eq!(d, Decision { id: "9-9".into(), authority: "ФНС".into(), date: String::new() });
        // no file for the list: the policy's text only
        assert_eq!(rows.decision(3, rule, 1, 2, "2-1 (суд)", w).await.date, "");
        // a persisted copy is not read through a symlink
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let rows = SourceRows::new(vec![Some((link, true))]);
        assert_eq!(rows.decision(1, rule, 0, 2, "2-1 (суд)", w).await.date, "");
    }
}
