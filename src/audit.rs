//! The tamper-evident audit log (`[log] audit = "PATH"`): one JSON object
//! per line, each carrying the BLAKE3 hash of the line before it
//! (`"prev"`), so that editing, inserting or deleting a line breaks the
//! chain at that line. `qalqan audit verify FILE` walks the chain
//! ([`verify`]) and names the first broken line.
//!
//! What the chain does not show: lines cut from the end of the file (keep
//! the head hash [`verify`] prints somewhere else to detect that), or a
//! file rewritten whole by someone who recomputes every hash.
//!
//! A leaf apart from `serde_json`/`blake3`: the list layer writes to it.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The `prev` of a chain's first line (a new file).
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An open audit log. Appends are serialised (audit events are rare: list
/// updates and refused pushes) and written through at once.
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: std::fs::File,
    /// The hash of the last line written (hex), the next line's `prev`.
    prev: String,
    /// Lines in the file.
    seq: u64,
}

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct OpenError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// 1-based line number.
    pub line: u64,
    pub reason: String,
}

/// A verified chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub lines: u64,
    /// The hash of the last line (the `prev` the next line will carry).
    pub head: String,
}

/// The hex BLAKE3 hash of one line (without its newline).
pub fn line_hash(line: &[u8]) -> String {
    blake3::hash(line).to_hex().to_string()
}

impl AuditLog {
    /// Opens (creates) `path` for appending; an existing chain is continued
    /// from its last line. A file that does not verify is still appended to
    /// (the log must not stop because someone broke it) and the break is
    /// logged; `qalqan audit verify` will report it.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let err = |source| OpenError { path: path.display().to_string(), source };
        let (prev, seq) = match std::fs::File::open(path) {
            Ok(f) => match verify(std::io::BufReader::new(f)) {
                Ok(v) => (v.head, v.lines),
                Err(b) => {
                    tracing::error!(path = %path.display(), line = b.line, reason = %b.reason, "audit log chain is broken; appending after it");
                    last_line(path).map_err(err)?
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (GENESIS.to_owned(), 0),
            Err(e) => return Err(err(e)),
        };
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
        Ok(Self { path: path.to_owned(), inner: Mutex::new(Inner { file, prev, seq }) })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event: `event` names it, `fields` (a JSON object) says
    /// the rest. The line is `{"seq":N,"ts":UNIX,"prev":HASH,"event":…,…fields}`.
    /// A write error is logged, not returned (auditing never stops a list update).
    pub fn append(&self, event: &str, fields: serde_json::Value) {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let Ok(mut inner) = self.inner.lock() else { return };
        let mut obj = serde_json::Map::new();
        obj.insert("seq".into(), (inner.seq + 1).into());
        obj.insert("ts".into(), ts.into());
        obj.insert("prev".into(), inner.prev.clone().into());
        obj.insert("event".into(), event.into());
        if let serde_json::Value::Object(m) = fields {
            for (k, v) in m {
                if !obj.contains_key(&k) {
                    obj.insert(k, v);
                }
            }
        }
        let line = serde_json::Value::Object(obj).to_string();
        let mut bytes = line.clone().into_bytes();
        bytes.push(b'\n');
        match inner.file.write_all(&bytes) {
            Ok(()) => {
                inner.prev = line_hash(line.as_bytes());
                inner.seq += 1;
            }
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "audit log write failed"),
        }
    }
}

/// The hash and number of the last line of `path` (for continuing a chain
/// that does not verify).
fn last_line(path: &Path) -> std::io::Result<(String, u64)> {
    let f = std::fs::File::open(path)?;
    let mut last = None;
    let mut n = 0;
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line?;
        n += 1;
        last = Some(line_hash(&line));
    }
    Ok((last.unwrap_or_else(|| GENESIS.to_owned()), n))
}

/// Walks the chain: every line must be a JSON object whose `prev` is the
/// hash of the line before it (the first line's `prev` is taken as given:
/// [`GENESIS`] for a new log, the last hash of the rotated file before it
/// otherwise). Returns the first broken line.
pub fn verify(reader: impl BufRead) -> Result<Verified, Broken> {
    let mut prev: Option<String> = None;
    let mut n = 0u64;
    for line in reader.split(b'\n') {
        n += 1;
        let line = line.map_err(|e| Broken { line: n, reason: format!("read error: {e}") })?;
        let v: serde_json::Value =
            serde_json::from_slice(&line).map_err(|e| Broken { line: n, reason: format!("not a JSON line: {e}") })?;
        let Some(p) = v.get("prev").and_then(|p| p.as_str()) else {
            return Err(Broken { line: n, reason: "no \"prev\" hash".into() });
        };
        if let Some(expected) = &prev {
            if p != expected {
                return Err(Broken {
                    line: n,
                    reason: format!("\"prev\" is {p}, the hash of line {} is {expected} (line {} or this one was changed, or lines between were removed)", n - 1, n - 1),
                });
            }
        }
        prev = Some(line_hash(&line));
    }
    Ok(Verified { lines: n, head: prev.unwrap_or_else(|| GENESIS.to_owned()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_verifies_continues_across_reopen_and_breaks_where_edited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append("list updated", serde_json::json!({"list": "a", "new_rules": 3}));
        log.append("list updated", serde_json::json!({"list": "b", "prev": "forged"}));
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.append("push refused", serde_json::json!({"list": "a"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let v = verify(text.as_bytes()).unwrap();
        assert_eq!(v.lines, 3);
        assert!(text.lines().next().unwrap().contains(GENESIS), "{text}");
        assert!(text.lines().nth(2).unwrap().contains("\"seq\":3"), "{text}");
        assert!(!text.contains("forged"), "fields never override the chain's own");
        // one byte changed in line 2: line 3's prev no longer matches
        let edited = text.replacen("\"list\":\"b\"", "\"list\":\"c\"", 1);
        assert_eq!(verify(edited.as_bytes()).unwrap_err().line, 3);
        // a line removed
        let lines: Vec<&str> = text.lines().collect();
        let removed = format!("{}\n{}\n", lines[0], lines[2]);
        assert_eq!(verify(removed.as_bytes()).unwrap_err().line, 2);
        // garbage
        assert_eq!(verify(format!("{}\nnot json\n", lines[0]).as_bytes()).unwrap_err().line, 2);
        assert_eq!(verify(&b""[..]).unwrap().head, GENESIS);
    }
}
