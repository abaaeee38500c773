//! Lists: read a source, parse it, gate it, compile every list into one
//! [`Policy`] and publish it atomically. A list that fails to load keeps its
//! last good version; the others are not affected.

pub mod http;
pub mod parse;
pub mod source;
pub mod publish;
pub mod push;
pub mod push_body;
pub mod version;
pub mod delta;
pub mod guard;
pub mod state;
pub mod watch;
pub mod zone_sync;
pub mod catalog;

pub use version::{chained_version, content_version, ContentHasher};

use std::path::Path;
use std::time::SystemTime;

use crate::config::ListConfig;
use crate::policy::index::{BuildError, Builder};
use crate::policy::{Delta, Index, ListInfo, Policy};
use crate::rules::{Entry, ListId, ListKind, Rule};
use parse::{ParseError, ParseOutput};

/// What is remembered about the version of a list in force (its rules
/// live only in the compiled index).
#[derive(Debug, Clone)]
pub struct ListState {
    pub version: String,
    pub rules: usize,
    pub lines: u32,
    pub bad_lines: u32,
    /// The first few skipped lines.
    pub errors: Vec<ParseError>,
    pub unsupported: std::collections::BTreeMap<String, u32>,
    /// Entries by kind (`registry-xml`: by blockType and by how DNS enforces them).
    pub entry_kinds: std::collections::BTreeMap<String, u32>,
    pub loaded_at: SystemTime,
    pub bytes: usize,
    /// Source details of this version (ETag, serial, push version, who).
    pub meta: SourceMeta,
    /// Its addresses and prefixes, and how many of them are answer rules.
    pub addresses: AddressStats,
}

/// A list's addresses and prefixes (registry IP column, IP-literal URL
/// hosts, adblock `1.2.3.4^`, RPZ `rpz-ip`), each counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressStats {
    /// Distinct addresses and prefixes in the list.
    pub listed: usize,
    /// How many of them block answers (see [`crate::config::IpRules`]).
    pub enforced: usize,
}

impl std::fmt::Display for AddressStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "addresses: {}, enforced by DNS: {}", self.listed, self.enforced)
    }
}

/// Counts distinct addresses as rules stream past (no memory for lists without any).
#[derive(Default)]
pub struct AddressCounter {
    listed: std::collections::HashSet<ipnet::IpNet>,
    enforced: std::collections::HashSet<ipnet::IpNet>,
}

impl AddressCounter {
    /// Notes `rule` if it is an address rule; `enforced` says whether the list enforces it.
    pub fn note(&mut self, rule: &Rule, enforced: bool) {
        if let Rule::Ip { net, .. } | Rule::AnswerIp { net, .. } = rule {
            self.listed.insert(net.trunc());
            if enforced {
                self.enforced.insert(net.trunc());
            }
        }
    }

    pub fn stats(&self) -> AddressStats {
        AddressStats { listed: self.listed.len(), enforced: self.enforced.len() }
    }
}

/// What a source knows about a version, kept with it (and persisted for remote lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// SOA serial (axfr sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u32>,
    /// Monotonic version of a pushed list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_version: Option<u64>,
    /// Who delivered it (file watch, http, push from ADDR, axfr, persisted copy).
    #[serde(default)]
    pub who: String,
}

impl ListState {
    /// From the statistics of a parse of `bytes` bytes with content `version`.
    pub fn from_stats(p: &ParseOutput<'_>, addresses: AddressStats, version: String, bytes: usize, meta: SourceMeta) -> Self {
        Self {
            addresses,
            meta,
            version,
            rules: p.rules,
            lines: p.lines,
            bad_lines: p.bad_lines,
            errors: p.errors.iter().take(5).cloned().collect(),
            unsupported: p.unsupported.clone(),
            entry_kinds: p.entry_kinds.clone(),
            loaded_at: SystemTime::now(),
            bytes,
        }
    }
}

/// One list, parsed and accepted.
#[derive(Debug)]
pub struct LoadedList {
    pub config: ListConfig,
    pub parsed: ParseOutput<'static>,
    /// Content hash of the source bytes (16 hex digits).
    pub version: String,
    pub loaded_at: SystemTime,
    pub bytes: usize,
}

/// Why a list was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{list}: reading {path}")]
    Source {
        list: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{list}: {bad} of {total} lines are bad (over the {budget}% budget); first: {first}")]
    TooManyErrors { list: String, bad: u32, total: u32, budget: f64, first: Box<ParseError> },
    #[error("{list}: new version has {new} rules, down from {old} (more than {max_shrink}% fewer); keeping the old one")]
    Shrink { list: String, old: usize, new: usize, max_shrink: f64 },
    #[error("{list}: {what} over the limit ({size} > {limit})")]
    TooLarge { list: String, what: &'static str, size: u64, limit: u64 },
    /// The source answered, but not with a list (HTTP status, HTML, an
    /// empty body, a refused redirect, a bad signature): `reason` says how.
    #[error("{list}: {reason}")]
    Fetch { list: String, reason: String },
    /// The HTTP request itself failed (connect, TLS, timeout, body).
    #[error("{list}: GET {url}")]
    Http {
        list: String,
        /// Credentials redacted.
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A zone transfer (or its SOA probe) failed.
    #[error("{list}: {zone} from {primary}")]
    Transfer {
        list: String,
        zone: String,
        primary: std::net::SocketAddr,
        #[source]
        source: Box<source::AxfrError>,
    },
    /// A value of the list's config that its source needs does not parse
    /// (config checking normally refuses it first).
    #[error("{list}: {what}")]
    Config {
        list: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The new version parsed but could not be compiled into the policy.
    #[error("{list}: compiling")]
    Compile {
        list: String,
        #[source]
        source: BuildError,
    },
    /// The thread that builds updates failed (see `publish::on_build_thread`).
    #[error("{list}: update task failed")]
    BuildThread {
        list: String,
        #[source]
        source: publish::BuildThreadError,
    },
    #[error("{list}: {reason}")]
    Rejected { list: String, reason: String },
    /// The guard holds the version: it would newly block protected names
    /// (`[guard]`; released by `POST /v1/lists/{list}/confirm`).
    #[error("{list}: version {version} held by the guard: it would newly block protected name(s) {}; confirm with POST /v1/lists/{list}/confirm", names.join(", "))]
    Held { list: String, version: String, names: Vec<String> },
}

/// An error and every cause below it, `a: b: c` (what `main` prints with
/// `{:#}`), for logs and API answers: error types keep each cause in
/// `#[source]` and never repeat it in their own text, so a plain `{e}`
/// would drop it.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl LoadError {
    /// The list this error is about.
    pub fn list(&self) -> &str {
        match self {
            LoadError::Source { list, .. }
            | LoadError::TooManyErrors { list, .. }
            | LoadError::Shrink { list, .. }
            | LoadError::TooLarge { list, .. }
            | LoadError::Fetch { list, .. }
            | LoadError::Http { list, .. }
            | LoadError::Transfer { list, .. }
            | LoadError::Config { list, .. }
            | LoadError::Compile { list, .. }
            | LoadError::BuildThread { list, .. }
            | LoadError::Rejected { list, .. }
            | LoadError::Held { list, .. } => list,
        }
    }

    /// This error with its causes, for logs and answers ([`ErrorChain`]).
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain(self)
    }

    /// The stage that failed (a bounded label value).
    pub fn stage(&self) -> &'static str {
        match self {
            LoadError::Source { .. } => "source",
            LoadError::TooManyErrors { .. } => "parse",
            LoadError::Shrink { .. }
            | LoadError::TooLarge { .. }
            | LoadError::Rejected { .. }
            | LoadError::Compile { .. }
            | LoadError::BuildThread { .. } => "validate",
            LoadError::Fetch { .. } | LoadError::Http { .. } | LoadError::Transfer { .. } | LoadError::Config { .. } => "source",
            LoadError::Held { .. } => "guard",
        }
    }
}

/// Reads and parses one list from its file. Cost: O(file size).
pub fn load(cfg: &ListConfig, path: &Path) -> Result<LoadedList, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Source {
        list: cfg.name.clone(),
        path: path.display().to_string(),
        source,
    })?;
    Ok(load_bytes(cfg, &bytes))
        .and_then(|l| gate_errors(cfg, l))
}

/// Parses `bytes` as the content of list `cfg` (no budget check).
pub fn load_bytes(cfg: &ListConfig, bytes: &[u8]) -> LoadedList {
    let parsed = parse::parse(cfg.format, &cfg.source, bytes);
    LoadedList {
        config: cfg.clone(),
        parsed,
        version: content_version(bytes),
        loaded_at: SystemTime::now(),
        bytes: bytes.len(),
    }
}

/// Rejects a list whose bad lines exceed its `max_bad_share` or whose rules exceed `max_rules`.
pub fn gate_errors(cfg: &ListConfig, l: LoadedList) -> Result<LoadedList, LoadError> {
    gate(cfg, None, &l.parsed, true).map(|()| l)
}

/// Every check a new version must pass: rule cap, bad-line budget and
/// (unless `forced`) the shrink gate against the version in force.
pub fn gate(cfg: &ListConfig, prev: Option<&ListState>, p: &ParseOutput<'_>, forced: bool) -> Result<(), LoadError> {
    if p.rules > cfg.max_rules {
        return Err(LoadError::TooLarge {
            list: cfg.name.clone(),
            what: "rules",
            size: p.rules as u64,
            limit: cfg.max_rules as u64,
        });
    }
    if p.over_budget(cfg.max_bad_share) {
        if let Some(first) = p.errors.first() {
            return Err(LoadError::TooManyErrors {
                list: cfg.name.clone(),
                bad: p.bad_lines,
                total: p.lines,
                budget: cfg.max_bad_share * 100.0,
                first: Box::new(first.clone()),
            });
        }
    }
    if let (Some(prev), false) = (prev, forced) {
        let (old, new) = (prev.rules, p.rules);
        if old > 0 && (new as f64) < (old as f64) * (1.0 - cfg.max_shrink) {
            return Err(LoadError::Shrink { list: cfg.name.clone(), old, new, max_shrink: cfg.max_shrink * 100.0 });
        }
    }
    Ok(())
}

/// How to parse a version that its source holds as more than bytes: a
/// zone transfer keeps its records and hands them to the RPZ parser as
/// records (`zone_sync`). Called with the list's source (for positions) and
/// the output to fill; [`build_with`] calls it instead of the text parser.
#[derive(Clone)]
pub struct RecordParser(std::sync::Arc<ParseFn>);

type ParseFn = dyn Fn(&str, &mut ParseOutput<'_>) + Send + Sync;

impl RecordParser {
    pub fn new(parse: impl Fn(&str, &mut ParseOutput<'_>) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(parse))
    }
}

impl std::fmt::Debug for RecordParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordParser")
    }
}

/// Parses a new version of list `id` straight into a new index, carrying
/// every other list's rules over from `base` (with `delta`, the changes
/// layered over it, folded in: see `Builder::carry_merged`). Returns the
/// index and the parse statistics (no per-rule entries are ever collected),
/// and, when `codes_up_to` lines or fewer of a line-by-line format were
/// read, the per-line codes a later change of the file is diffed against
/// (`delta::parse_with_codes`). With `records`, the rules come from it;
/// `bytes` then only sizes the tables.
///
/// Cost: O(rules of the other lists + bytes of this one); peak memory is
/// the old index plus the new one.
pub struct Built {
    pub index: Index,
    pub stats: ParseOutput<'static>,
    pub addresses: AddressStats,
    pub codes: Option<Vec<u64>>,
}

#[allow(clippy::too_many_arguments)] // one build's inputs, each from a different owner
pub fn build_with(
    configs: &[ListConfig],
    base: &Index,
    delta: Option<&Delta>,
    id: ListId,
    bytes: &[u8],
    records: Option<&RecordParser>,
    codes_up_to: usize,
    drop_lines: &[u32],
) -> Result<Built, BuildError> {
    let cfg = configs.get(id.index()).ok_or(BuildError::TooManyLists)?;
    let allow = cfg.kind == ListKind::Allow;
    let kept = base.len().saturating_sub(base.list_rules(id)) + delta.map_or(0, |d| d.added.len());
    // size hints: one rule a line (exact for a domains list; hosts lines
    // with several names make the table grow, which is only slower). A
    // guess from the byte count was off by 1.8x on the harness's 1M list
    // (29.7 bytes a line), which cost a rehash of every rule and a copy of
    // the record store in `finish`; counting lines is one pass over the bytes
    let new_rules = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
    let kept_bytes = base.arena_len().saturating_mul(kept) / base.len().max(1);
    let mut b = Builder::with_capacity(kept + new_rules, kept_bytes + bytes.len() + new_rules * 12);
    b.carry_merged(base, delta.map(|d| &d.added), |l| l != id, |l, line| delta.map_or(Some(line), |d| d.current_line(l, line)))?;
    let mut failed: Option<BuildError> = None;
    let mut addresses = AddressCounter::default();
    let odd = std::cell::Cell::new(false);
    let line_fn = parse::line_parser(cfg.format).filter(|_| records.is_none() && new_rules <= codes_up_to);
    let mut codes = None;
    let stats = {
        let mut sink = |e: Entry| {
            let enforced = cfg.enforces(&e.rule);
            addresses.note(&e.rule, enforced);
            if !delta::name_only(std::slice::from_ref(&e)) {
                odd.set(true);
            }
            // the guard's `apply_rest`: these lines of the version are left out
            let enforced = enforced && (drop_lines.is_empty() || !drop_lines.contains(&e.line));
            if failed.is_none() && enforced {
                if let Err(err) = b.add_entry(id, allow, &e) {
                    failed = Some(err);
                }
            }
        };
        let mut out = ParseOutput::streaming(&mut sink);
        match (records, line_fn) {
            (Some(RecordParser(parse_records)), _) => parse_records(&cfg.source, &mut out),
            (None, Some(f)) => codes = Some(delta::parse_with_codes(f, &cfg.source, bytes, &mut out, &odd)),
            (None, None) => parse::parse_into(cfg.format, &cfg.source, bytes, &mut out),
        }
        out.into_stats()
    };
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Built { index: b.finish()?, stats, addresses: addresses.stats(), codes })
}

/// The policy for `index` with the configured lists.
pub fn policy_of(configs: &[ListConfig], index: Index, generation: u64) -> Policy {
    let lists = infos(configs);
    Policy { index: std::sync::Arc::new(index), delta: None, has_shadow: crate::policy::any_shadow(&lists), lists, generation }
}


/// The last line of a zone's persisted text (`zone_sync`), naming its version.
pub const ZONE_VERSION_LINE: &str = "; qalqan-zone-version ";

/// The version a zone's persisted text names on its last line, if any
/// (`None`: an older copy, then its version is the hash of its bytes).
pub fn zone_version_in_text(bytes: &[u8]) -> Option<String> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let line = std::str::from_utf8(body.get(start..)?).ok()?;
    let v = line.strip_prefix(ZONE_VERSION_LINE)?.trim();
    (v.len() == 65 && v.starts_with('z') && v[1..].bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_owned())
}

pub(crate) fn infos(configs: &[ListConfig]) -> Vec<ListInfo> {
    configs
        .iter()
        .map(|c| ListInfo {
            name: c.name.clone(),
            // shown by /explain and in logs: credentials in a URL never are
            source: http::redact_url(&c.source),
            format: c.format,
            kind: c.kind,
            action: c.action,
            shadow: c.mode == crate::rules::ListMode::Shadow,
            ede: c.ede,
            sde: c.sde.clone(),
        })
        .collect()
}

/// A small deterministic xorshift generator for the randomised tests of
/// the list code (the same sequence on every run).
#[cfg(test)]
pub(crate) struct TestRng(pub u64);

#[cfg(test)]
impl TestRng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message says what failed; the cause is the source, shown once
    /// by the chain (and not at all by the bare message).
    #[test]
    fn a_load_error_shows_each_cause_once_in_its_chain() {
        let gone = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let cases: &[(&str, LoadError, &str, &str)] = &[
            (
                "file",
                LoadError::Source { list: "ads".into(), path: "/x".into(), source: gone() },
                "ads: reading /x",
                "ads: reading /x: gone",
            ),
            (
                "compile",
                LoadError::Compile { list: "ads".into(), source: BuildError::TooManyRules },
                "ads: compiling",
                "ads: compiling: too many rules (more than 4 G)",
            ),
            (
                "transfer",
                LoadError::Transfer {
                    list: "rpz".into(),
                    zone: "rpz.test.".into(),
                    primary: "192.0.2.1:53".parse().unwrap(),
                    source: Box::new(source::AxfrError::Io(gone())),
                },
                "rpz: rpz.test. from 192.0.2.1:53",
                "rpz: rpz.test. from 192.0.2.1:53: talking to the primary: gone",
            ),
        ];
        for (name, e, message, chain) in cases {
            assert_eq!(e.to_string(), *message, "case `{name}`");
            assert_eq!(e.chain().to_string(), *chain, "case `{name}`");
        }
    }
}
