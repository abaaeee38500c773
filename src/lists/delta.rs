//! Updates by delta: a list's version in force as edits over the version
//! compiled into the base index, and the edits each channel hands in (a
//! PATCH's removed and appended lines, an IXFR's removed and added records,
//! a changed file's diff against the last version). [`ListEdits::apply`]
//! takes one update's hunks in O(edits so far + k); [`build_delta`] turns
//! the edits of every list into the `policy::Delta` published next to the
//! unchanged base.
//!
//! Only name rules travel by delta: an update that adds or removes a
//! keyword, regex, address or RPZ local-data rule, or a line whose rules are
//! not known (a bad line of a file), goes through a full build, as does a
//! list whose base has such rules.

use std::sync::Arc;

use super::parse::{self, ParseOutput};
use crate::config::ListConfig;
use crate::policy::delta::{Delta, LineMap};
use crate::policy::index::{BuildError, Builder};
use crate::rules::{Entry, ListId, ListKind, Rule, RuleAction};

/// A stretch of a list's current version: base lines kept, or new lines.
#[derive(Debug, Clone)]
enum Seg {
    /// Base lines `start..start + len` (1-based).
    Base { start: u32, len: u32 },
    /// `len` new lines and their rules (lines 1-based within the stretch).
    New { len: u32, entries: Arc<Vec<Entry>> },
}

impl Seg {
    fn len(&self) -> u32 {
        match self {
            Seg::Base { len, .. } | Seg::New { len, .. } => *len,
        }
    }

    /// Lines `from..from + n` of this stretch.
    fn slice(&self, from: u32, n: u32) -> Seg {
        match self {
            Seg::Base { start, .. } => Seg::Base { start: start + from, len: n },
            Seg::New { entries, .. } => {
                let inside = entries
                    .iter()
                    .filter(|e| e.line > from && e.line <= from + n)
                    .map(|e| Entry { line: e.line - from, rule: e.rule.clone() })
                    .collect();
                Seg::New { len: n, entries: Arc::new(inside) }
            }
        }
    }
}

/// One change, in the lines of the version in force (0-based): lines
/// `at..at + del` are replaced by `ins` new lines, whose rules are
/// `entries` (lines 1-based within the `ins` lines).
#[derive(Debug, Clone, Default)]
pub struct Hunk {
    pub at: u32,
    pub del: u32,
    pub ins: u32,
    pub entries: Vec<Entry>,
}

/// An update as a channel hands it in: hunks over the version in force,
/// and what they do to its statistics.
#[derive(Debug, Clone, Default)]
pub struct Edit {
    /// Content version of the version the hunks apply to (16 hex digits):
    /// the update goes by delta only if that is the version in force.
    pub from_version: String,
    /// Lines of that version, as its parse counted them.
    pub from_lines: u32,
    /// Sorted by `at`, not overlapping.
    pub hunks: Vec<Hunk>,
    /// Rules and bad lines on the removed lines.
    pub removed_rules: usize,
    pub removed_bad: u32,
    /// Bad lines among the added ones (their rules are the hunks' entries).
    pub added_bad: u32,
    /// Per-line codes of the new version (file lists, see [`line_codes`]).
    pub codes: Option<Vec<u64>>,
}

impl Edit {
    /// Rules the hunks add.
    pub fn added_rules(&self) -> usize {
        self.hunks.iter().map(|h| h.entries.len()).sum()
    }

    /// Lines of the new version.
    pub fn to_lines(&self) -> u32 {
        let del: u32 = self.hunks.iter().map(|h| h.del).sum();
        let ins: u32 = self.hunks.iter().map(|h| h.ins).sum();
        self.from_lines.saturating_sub(del).saturating_add(ins)
    }
}

/// Whether every entry may travel by delta: name rules with no RPZ local data.
pub fn name_only(entries: &[Entry]) -> bool {
    entries.iter().all(|e| matches!(&e.rule, Rule::Name { action, .. } if !matches!(action, RuleAction::Local(_))))
}

/// A list's version in force over its version in the base index.
#[derive(Debug, Clone)]
pub struct ListEdits {
    segs: Vec<Seg>,
    /// Lines of the list's version in the base.
    base_lines: u32,
}

impl ListEdits {
    /// No edits over a base version of `base_lines` lines.
    pub fn identity(base_lines: u32) -> Self {
        let segs = if base_lines > 0 { vec![Seg::Base { start: 1, len: base_lines }] } else { Vec::new() };
        Self { segs, base_lines }
    }

    /// Lines of the current version.
    pub fn lines(&self) -> u32 {
        self.segs.iter().map(Seg::len).sum()
    }

    /// Base lines removed plus new lines: the size of the delta.
    pub fn size(&self) -> usize {
        let (mut kept, mut new) = (0u64, 0u64);
        for s in &self.segs {
            match s {
                Seg::Base { len, .. } => kept += u64::from(*len),
                Seg::New { len, .. } => new += u64::from(*len),
            }
        }
        usize::try_from(u64::from(self.base_lines).saturating_sub(kept) + new).unwrap_or(usize::MAX)
    }

    /// These edits followed by `hunks` (over the current version); `None`
    /// when a hunk does not fit it (then the update is built in full).
    /// Cost: O(stretches + hunks + entries of the split stretches).
    pub fn apply(&self, hunks: &[Hunk]) -> Option<ListEdits> {
        let mut src: std::collections::VecDeque<Seg> = self.segs.iter().cloned().collect();
        let mut out: Vec<Seg> = Vec::with_capacity(self.segs.len() + hunks.len() * 2);
        let mut cursor = 0u32;
        // moves (keep) or drops the next `n` lines of `src`
        let advance = |src: &mut std::collections::VecDeque<Seg>, out: &mut Vec<Seg>, mut n: u32, keep: bool| -> Option<()> {
            while n > 0 {
                let seg = src.pop_front()?;
                let len = seg.len();
                if len <= n {
                    n -= len;
                    if keep {
                        out.push(seg);
                    }
                } else {
                    if keep {
                        out.push(seg.slice(0, n));
                    }
                    src.push_front(seg.slice(n, len - n));
                    n = 0;
                }
            }
            Some(())
        };
        for h in hunks {
            let gap = h.at.checked_sub(cursor)?;
            advance(&mut src, &mut out, gap, true)?;
            advance(&mut src, &mut out, h.del, false)?;
            if h.ins > 0 {
                if h.entries.iter().any(|e| e.line == 0 || e.line > h.ins) {
                    return None;
                }
                out.push(Seg::New { len: h.ins, entries: Arc::new(h.entries.clone()) });
            }
            cursor = h.at.checked_add(h.del)?;
        }
        out.extend(src);
        out.retain(|s| s.len() > 0);
        Some(ListEdits { segs: out, base_lines: self.base_lines })
    }

    /// The line map of the base lines and the added rules with their current lines.
    fn layout(&self) -> (LineMap, Vec<Entry>) {
        let mut runs = Vec::new();
        let mut added = Vec::new();
        let mut pos = 0u32;
        for s in &self.segs {
            match s {
                Seg::Base { start, len } => runs.push((*start, pos + 1, *len)),
                Seg::New { entries, .. } => {
                    added.extend(entries.iter().map(|e| Entry { line: pos + e.line, rule: e.rule.clone() }));
                }
            }
            pos += s.len();
        }
        (LineMap::new(runs), added)
    }
}

/// The delta of every list that has edits, over a base built from
/// `configs`. Cost: O(stretches + added rules) of every list with edits.
pub fn build_delta(configs: &[ListConfig], edits: &[Option<ListEdits>]) -> Result<Delta, BuildError> {
    let mut maps = Vec::with_capacity(edits.len());
    let mut lists = Vec::new();
    let mut size = 0usize;
    for (i, e) in edits.iter().enumerate() {
        match e {
            Some(e) => {
                let (map, added) = e.layout();
                size = size.saturating_add(e.size());
                maps.push(Some(map));
                lists.push((i, added));
            }
            None => maps.push(None),
        }
    }
    let total: usize = lists.iter().map(|(_, a)| a.len()).sum();
    let mut b = Builder::with_capacity(total, total.saturating_mul(32));
    for (i, added) in &lists {
        let list = ListId::from_index(*i).ok_or(BuildError::TooManyLists)?;
        let allow = configs.get(*i).is_some_and(|c| c.kind == ListKind::Allow);
        for e in added {
            b.add_entry(list, allow, e)?;
        }
    }
    Ok(Delta::new(b.finish()?, maps, size))
}

/// Code in the low bits of a line code: the rules on the line (0..=13),
/// or [`UNKNOWN`]: a bad line, one with more rules, or rules that cannot
/// travel by delta. Removing such a line means a full build.
const CODE_BITS: u64 = 0xF;
const UNKNOWN: u64 = 0xF;
const MAX_COUNTED: usize = 13;

fn line_hash(line: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x51_7cc1_b727_220a).hash_one(line) & !CODE_BITS
}

/// The lines of `bytes` as the text parsers split them (`parse::for_each_line`:
/// a BOM and one final newline dropped, `\r` stripped), each as its hash
/// (the code bits clear). Cost: one pass, one hash per line.
pub fn line_hashes(bytes: &[u8]) -> Vec<u64> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(bytes.len() / 24 + 1);
    let mut start = 0usize;
    for end in memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len())) {
        let line = bytes.get(start..end).unwrap_or(&[]);
        out.push(line_hash(line.strip_suffix(b"\r").unwrap_or(line)));
        start = end + 1;
    }
    out
}

/// What [`stream_lines`] read: the bytes' [`super::version::content_version`], their
/// length, and how many lines [`line_hashes`] sees in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    pub version: String,
    pub len: u64,
    pub lines: usize,
}

/// Reads `r` through one buffer of `chunk` bytes and calls `f` with each
/// line as [`line_hashes`] splits the whole (a BOM and one final newline
/// dropped, `\r` stripped; `f` gets the line's number, 0-based; the one
/// exception: bytes that are only a newline make one empty line for `f`
/// and none in [`Streamed::lines`]), hashing
/// every byte for the content version on the way. `None` once more than
/// `limit` bytes come. Memory: the buffer and the longest line that spans
/// two chunks, whatever the size of the file: a reload diffs a file
/// without reading it into memory whole (fresh memory is what a reload
/// of a big list spends most of its time on: the kernel zeroing the pages).
pub fn stream_lines(mut r: impl std::io::Read, chunk: usize, limit: u64, mut f: impl FnMut(usize, &[u8])) -> std::io::Result<Option<Streamed>> {
    let mut buf = vec![0u8; chunk.max(8)];
    let mut hasher = super::version::ContentHasher::default();
    let mut partial: Vec<u8> = Vec::new();
    let (mut line, mut first, mut after_bom) = (0usize, true, 0u64);
    let mut emit = |line: &mut usize, l: &[u8]| {
        f(*line, l.strip_suffix(b"\r").unwrap_or(l));
        *line += 1;
    };
    loop {
        // fill the buffer (a read may come short before the end)
        let mut got = 0;
        while got < buf.len() {
            match r.read(buf.get_mut(got..).unwrap_or(&mut [])) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let data = buf.get(..got).unwrap_or(&[]);
        hasher.update(data);
        if hasher.len() > limit {
            return Ok(None);
        }
        let mut data = data;
        if first {
            first = false;
            data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
        }
        after_bom += data.len() as u64;
        let mut start = 0usize;
        for end in memchr::memchr_iter(b'\n', data) {
            let seg = data.get(start..end).unwrap_or(&[]);
            if partial.is_empty() {
                emit(&mut line, seg);
            } else {
                partial.extend_from_slice(seg);
                emit(&mut line, &partial);
                partial.clear();
            }
            start = end + 1;
        }
        partial.extend_from_slice(data.get(start..).unwrap_or(&[]));
        if got < buf.len() {
            break;
        }
    }
    // the last line, unless the bytes ended with a newline; "\n" alone is
    // no line at all (`line_hashes` drops the final newline first)
    let tail = !partial.is_empty();
    if tail {
        emit(&mut line, &partial);
    }
    let lines = if after_bom == 1 && !tail { 0 } else { line };
    let len = hasher.len();
    Ok(Some(Streamed { version: hasher.finish(), len, lines }))
}

/// Parses `bytes` of a line-by-line format into `out` and returns each
/// line's code: its hash and what it holds (see [`UNKNOWN`]). `odd` is set
/// by the caller's sink when a rule that cannot travel by delta goes by
/// (see [`name_only`]). Used by full builds of file lists, so that their
/// next change can be diffed. Cost: one hash per line on top of the parse.
pub fn parse_with_codes(
    line_fn: parse::LineFn,
    file: &str,
    bytes: &[u8],
    out: &mut ParseOutput<'_>,
    odd: &std::cell::Cell<bool>,
) -> Vec<u64> {
    let mut codes: Vec<u64> = Vec::with_capacity(bytes.len() / 24 + 1);
    let hashes = line_hashes(bytes);
    let unsupported = |out: &ParseOutput<'_>| out.unsupported.values().map(|&v| u64::from(v)).sum::<u64>();
    parse::for_each_line(file, bytes, out, |file, n, line, out| {
        let at = usize::try_from(n).unwrap_or(usize::MAX).saturating_sub(1);
        while codes.len() < at {
            codes.push(hashes.get(codes.len()).copied().unwrap_or(0) | UNKNOWN);
        }
        let (rules, bad, unsup) = (out.rules, out.bad_lines, if out.unsupported.is_empty() { 0 } else { unsupported(out) });
        odd.set(false);
        line_fn(file, n, line, out);
        let count = out.rules - rules;
        let unsup_now = if out.unsupported.is_empty() { 0 } else { unsupported(out) };
        let clean = out.bad_lines == bad && unsup_now == unsup && !odd.get() && count <= MAX_COUNTED;
        codes.push(hashes.get(at).copied().unwrap_or(0) | if clean { count as u64 } else { UNKNOWN });
    });
    while codes.len() < hashes.len() {
        codes.push(hashes.get(codes.len()).copied().unwrap_or(0) | UNKNOWN);
    }
    codes
}

/// The changes between line sequences `a` and `b` (compared on their
/// hashes, code bits ignored) as `(a_at, a_len, b_at, b_len)` hunks, sorted,
/// or `None` if they come to more than `max_edits` line deletions plus
/// insertions.
///
/// First one sequential [`window_walk`] (lines matched in step, a line out
/// of step looked for 32 lines ahead on either side): scattered edits, the
/// shape of a regulator's or the harness's update, cost one pass. If that
/// goes out of step (a block moved or inserted past the window) and past
/// `max_edits`, the multiset walk below decides.
///
/// A list is a set of rules with line numbers, so the changes are found as
/// a multiset difference of the line hashes, not as a longest common
/// subsequence: after trimming the common head and tail, both sides'
/// hashes are sorted and merged, which gives the hashes whose line counts
/// differ (how many of their lines are kept, deleted or inserted), and one
/// walk over both sequences emits the changes in order. A line that
/// moved (kept by the counts, but met out of order) is deleted where it was
/// and inserted where it is, so the hunks always turn `a` into `b` and the
/// line numbers of everything after them are those of `b`; the script is
/// minimal unless lines moved. The size of the difference is known before
/// the walk, so a change past `max_edits` costs one counting pass.
///
/// Cost: two sorts of 8 bytes a line (sequential passes; a hash table of
/// every line cost a cache miss a line, 3x slower at 1M lines) and linear
/// walks; a small table of the changed hashes only. No edit cap is needed
/// for the time to stay O((N + M) log(N + M)).
pub fn diff(a: &[u64], b: &[u64], max_edits: usize) -> Option<Vec<(usize, usize, usize, usize)>> {
    let key = |x: u64| x & !CODE_BITS;
    let head = a.iter().zip(b).take_while(|(x, y)| key(**x) == key(**y)).count();
    let (a2, b2) = (a.get(head..)?, b.get(head..)?);
    let tail = a2.iter().rev().zip(b2.iter().rev()).take_while(|(x, y)| key(**x) == key(**y)).count();
    let (a2, b2) = (a2.get(..a2.len() - tail)?, b2.get(..b2.len() - tail)?);
    if a2.len().abs_diff(b2.len()) > max_edits {
        return None;
    }
    window_walk(a2, b2, head, max_edits).or_else(|| multiset_walk(a2, b2, head, max_edits))
}

/// [`diff`] of the trimmed `a2`, `b2` by their multiset difference (see
/// there); hunks offset by `head`.
fn multiset_walk(a2: &[u64], b2: &[u64], head: usize, max_edits: usize) -> Option<Vec<(usize, usize, usize, usize)>> {
    let key = |x: u64| x & !CODE_BITS;
    // The hashes whose numbers of lines differ between a2 and b2, found by
    // sorting both (sequential passes: a hash table of every line costs a
    // cache miss per line), with [kept pairs, deletions, insertions] still
    // to place. A hash in neither has its lines all kept: [unknown > 0, 0, 0].
    let mut sa: Vec<u64> = a2.iter().map(|&x| key(x)).collect();
    let mut sb: Vec<u64> = b2.iter().map(|&y| key(y)).collect();
    sa.sort_unstable();
    sb.sort_unstable();
    let mut counts: std::collections::HashMap<u64, [u32; 3], foldhash::fast::RandomState> = std::collections::HashMap::default();
    let mut edits = 0usize;
    let (mut i, mut j) = (0usize, 0usize);
    while i < sa.len() || j < sb.len() {
        let k = match (sa.get(i), sb.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        let na = sa.get(i..)?.iter().take_while(|&&x| x == k).count();
        let nb = sb.get(j..)?.iter().take_while(|&&y| y == k).count();
        (i, j) = (i + na, j + nb);
        if na != nb {
            let kept = na.min(nb);
            edits += na - kept + nb - kept;
            if edits > max_edits {
                return None;
            }
            let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
            counts.insert(k, [n(kept), n(na - kept), n(nb - kept)]);
        }
    }
    drop((sa, sb));
    const KEPT: [u32; 3] = [u32::MAX / 2, 0, 0];
    let mut hunks: Vec<(usize, usize, usize, usize)> = Vec::new();
    let push = |del: bool, x: usize, y: usize, hunks: &mut Vec<(usize, usize, usize, usize)>| push_op(hunks, del, x, y, head);
    let (mut i, mut j) = (0usize, 0usize);
    while i < a2.len() && j < b2.len() {
        let (x, y) = (key(*a2.get(i)?), key(*b2.get(j)?));
        if x == y {
            let Some(c) = counts.get_mut(&x) else {
                i += 1;
                j += 1;
                continue;
            };
            if c[0] > 0 {
                c[0] -= 1;
            } else {
                // a deletion and an insertion of the same line: keep it instead
                c[1] = c[1].checked_sub(1)?;
                c[2] = c[2].checked_sub(1)?;
            }
            i += 1;
            j += 1;
            continue;
        }
        // a line none of whose copies is kept goes first; then one that has
        // copies to go (a repeated line: which copy goes is a guess, a
        // wrong one costs a move below, never a wrong script)
        let (cx, cy) = (counts.get(&x).copied().unwrap_or(KEPT), counts.get(&y).copied().unwrap_or(KEPT));
        let delete = if cx[1] > 0 && cx[0] == 0 {
            true
        } else if cy[2] > 0 && cy[0] == 0 {
            false
        } else if cx[1] > 0 {
            true
        } else {
            cy[2] == 0
        };
        if delete && cx[1] > 0 {
            let c = counts.get_mut(&x)?;
            c[1] = c[1].checked_sub(1)?;
            push(true, i, j, &mut hunks);
            i += 1;
            continue;
        }
        if !delete {
            let c = counts.get_mut(&y)?;
            c[2] = c[2].checked_sub(1)?;
            push(false, i, j, &mut hunks);
            j += 1;
            continue;
        }
        // both lines are kept somewhere, but not here: a[i] moved. Delete
        // it; its partner in `b` becomes an insertion.
        let cx = counts.entry(x).or_insert(KEPT);
        cx[0] = cx[0].checked_sub(1)?;
        cx[2] += 1;
        edits += 2;
        if edits > max_edits {
            return None;
        }
        push(true, i, j, &mut hunks);
        i += 1;
    }
    for k in i..a2.len() {
        push(true, k, j, &mut hunks);
    }
    for k in j..b2.len() {
        push(false, a2.len(), k, &mut hunks);
    }
    Some(hunks)
}

/// Lines a [`window_walk`] looks ahead on each side for a line out of step.
const WINDOW: usize = 32;

/// Appends one deleted (`del`) or inserted line at `x` of `a2`, `y` of
/// `b2` (offset by `head`) to `hunks`, joining it to the last hunk when
/// they touch.
fn push_op(hunks: &mut Vec<(usize, usize, usize, usize)>, del: bool, x: usize, y: usize, head: usize) {
    let (ax, by) = (x + head, y + head);
    match hunks.last_mut() {
        Some(h) if h.0 + h.1 == ax && h.2 + h.3 == by => {
            if del {
                h.1 += 1
            } else {
                h.3 += 1
            }
        }
        _ if del => hunks.push((ax, 1, by, 0)),
        _ => hunks.push((ax, 0, by, 1)),
    }
}

/// The common case of [`diff`] in one sequential pass: lines are matched
/// in step, and a line out of step is looked for within [`WINDOW`] lines
/// ahead on the other side (the nearer wins: lines removed from `a2`, or
/// inserted from `b2`); found on neither side, it is replaced. Always a
/// valid script; `None` once it passes `max_edits` (a block moved or
/// inserted past the window puts the walk out of step for good, and the
/// sorted multiset difference takes over). Cost: O(N + M + edits × WINDOW).
fn window_walk(a2: &[u64], b2: &[u64], head: usize, max_edits: usize) -> Option<Vec<(usize, usize, usize, usize)>> {
    let key = |x: u64| x & !CODE_BITS;
    let mut hunks = Vec::new();
    let (mut i, mut j, mut edits) = (0usize, 0usize, 0usize);
    while i < a2.len() && j < b2.len() {
        let (x, y) = (key(*a2.get(i)?), key(*b2.get(j)?));
        if x == y {
            i += 1;
            j += 1;
            continue;
        }
        let ahead = |s: &[u64], from: usize, want: u64| s.get(from..)?.iter().take(WINDOW).position(|&v| key(v) == want);
        // a[i..i + d] removed (b[j] is a[i + d]), or b[j..j + d] inserted (a[i] is b[j + d])
        let (dels, ins) = match (ahead(a2, i + 1, y), ahead(b2, j + 1, x)) {
            (Some(d), Some(n)) if n < d => (0, n + 1),
            (Some(d), _) => (d + 1, 0),
            (None, Some(n)) => (0, n + 1),
            (None, None) => (1, 1),
        };
        edits += dels + ins;
        if edits > max_edits {
            return None;
        }
        for k in 0..dels {
            push_op(&mut hunks, true, i + k, j, head);
        }
        i += dels;
        for k in 0..ins {
            push_op(&mut hunks, false, i, j + k, head);
        }
        j += ins;
    }
    edits += (a2.len() - i) + (b2.len() - j);
    if edits > max_edits {
        return None;
    }
    for k in i..a2.len() {
        push_op(&mut hunks, true, k, j, head);
    }
    for k in j..b2.len() {
        push_op(&mut hunks, false, a2.len(), k, head);
    }
    Some(hunks)
}

/// The edit that takes a file list from its version in force (line codes
/// `old`, content version `from_version`) to `new_bytes`, or `None` when a
/// full build is the way: more than `max_edits` lines changed, a removed
/// line holds what cannot travel by delta, or an added one does.
///
/// Cost: one hash per line of the new file, the diff ([`diff`]), and a
/// parse of the added lines only.
pub fn file_edit(
    line_fn: parse::LineFn,
    file: &str,
    from_version: String,
    old: &[u64],
    new_bytes: &[u8],
    max_edits: usize,
) -> Option<Edit> {
    let new = line_hashes(new_bytes);
    let changes = diff(old, &new, max_edits)?;
    // the new version's lines, split as for `line_hashes`
    let text = new_bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(new_bytes);
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    // a cursor over the new lines: the hunks ask for them in increasing
    // order, so one forward pass finds them all (no table of line starts)
    let (mut cur_line, mut cur_at) = (0usize, 0usize);
    let line_of = |i: usize| -> &[u8] {
        while cur_line < i {
            cur_at = memchr::memchr(b'\n', text.get(cur_at..).unwrap_or(&[])).map_or(text.len() + 1, |e| cur_at + e + 1);
            cur_line += 1;
        }
        let rest = text.get(cur_at..).unwrap_or(&[]);
        let l = rest.get(..memchr::memchr(b'\n', rest).unwrap_or(rest.len())).unwrap_or(&[]);
        l.strip_suffix(b"\r").unwrap_or(l)
    };
    edit_of_changes(line_fn, file, from_version, old, new, &changes, line_of)
}

/// [`file_edit`] for a file read twice through a small buffer
/// ([`stream_lines`]) instead of whole: the line hashes of the first pass,
/// then the changed lines' text from a second pass, which must read the
/// same bytes (same content version) or there is no edit. `Ok(None)`: no
/// edit (too big a change, a line that cannot travel by delta, the file
/// changed between the passes, or over `limit` bytes); `Ok(Some((None,
/// s)))`: unchanged (`s` its content version). Memory: 8 bytes a line
/// (the new line codes) and the changed lines, never the file.
#[allow(clippy::type_complexity)]
pub fn file_edit_streamed(
    line_fn: parse::LineFn,
    file: &str,
    path: &std::path::Path,
    from_version: String,
    old: &[u64],
    limit: u64,
    max_edits: usize,
) -> std::io::Result<Option<(Option<Edit>, Streamed)>> {
    const CHUNK: usize = 1 << 20;
    let file_once = std::fs::File::open(path)?;
    // sized once (as `line_hashes` does): no regrowth, no fresh pages twice
    let size = file_once.metadata()?.len().min(limit);
    let mut new: Vec<u64> = Vec::with_capacity(usize::try_from(size / 24 + 1).unwrap_or(0));
    let Some(first) = stream_lines(file_once, CHUNK, limit, |_, l| new.push(line_hash(l)))? else { return Ok(None) };
    new.truncate(first.lines);
    if first.version == from_version {
        return Ok(Some((None, first)));
    }
    let Some(changes) = diff(old, &new, max_edits) else { return Ok(None) };
    // the changed lines' text, in line order, back to back
    let mut want: Vec<usize> = changes.iter().flat_map(|&(_, _, b_at, b_len)| b_at..b_at + b_len).collect();
    want.sort_unstable();
    let (mut arena, mut spans): (Vec<u8>, Vec<(usize, usize, usize)>) = (Vec::new(), Vec::with_capacity(want.len()));
    let mut next = want.iter().peekable();
    let Some(second) = stream_lines(std::fs::File::open(path)?, CHUNK, limit, |i, l| {
        while next.peek().is_some_and(|&&w| w < i) {
            next.next();
        }
        if next.peek() == Some(&&i) {
            spans.push((i, arena.len(), arena.len() + l.len()));
            arena.extend_from_slice(l);
        }
    })?
    else {
        return Ok(None);
    };
    if second != first {
        return Ok(None); // written to between the passes: read it whole
    }
    let line_of = |i: usize| -> &[u8] {
        let k = spans.partition_point(|&(l, _, _)| l < i);
        match spans.get(k) {
            Some(&(l, a, b)) if l == i => arena.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    };
    Ok(edit_of_changes(line_fn, file, from_version, old, new, &changes, line_of).map(|e| (Some(e), first)))
}

/// The [`Edit`] of a diff (`changes` from [`diff`]) of `old`'s line codes
/// against `new`'s line hashes, with the new lines' text from `line_of`
/// (asked in increasing order). The new version's codes are written into
/// `new` itself (a kept line takes its old code, an added one the code of
/// its parse): no second array the size of the list.
fn edit_of_changes<'t>(
    line_fn: parse::LineFn,
    file: &str,
    from_version: String,
    old: &[u64],
    mut new: Vec<u64>,
    changes: &[(usize, usize, usize, usize)],
    mut line_of: impl FnMut(usize) -> &'t [u8],
) -> Option<Edit> {
    let mut edit = Edit { from_version, from_lines: u32::try_from(old.len()).ok()?, ..Default::default() };
    let (mut ai, mut bi) = (0usize, 0usize);
    for &(a_at, a_len, b_at, b_len) in changes {
        // kept lines before the hunk: their old codes (same hash, and what they hold)
        let kept = old.get(ai..a_at)?;
        if b_at != bi + kept.len() {
            return None;
        }
        new.get_mut(bi..b_at)?.copy_from_slice(kept);
        for &c in old.get(a_at..a_at + a_len)? {
            if c & CODE_BITS == UNKNOWN {
                return None;
            }
            edit.removed_rules += (c & CODE_BITS) as usize;
        }
        let mut out = ParseOutput::default();
        let mut entries = Vec::new();
        for j in 0..b_len {
            let raw = line_of(b_at + j);
            let n = u32::try_from(j + 1).ok()?;
            let before = out.entries.len();
            let bad_before = out.bad_lines;
            match std::str::from_utf8(raw) {
                Ok(line) => line_fn(file, u32::try_from(b_at + j + 1).ok()?, line, &mut out),
                Err(_) => out.error(file, u32::try_from(b_at + j + 1).ok()?, 1, parse::ParseErrorKind::NotUtf8),
            }
            let added = out.entries.get(before..).unwrap_or(&[]);
            let clean = out.bad_lines == bad_before && name_only(added) && added.len() <= MAX_COUNTED;
            let code = if clean { added.len() as u64 } else { UNKNOWN };
            *new.get_mut(b_at + j)? |= code;
            entries.extend(added.iter().map(|e| Entry { line: n, rule: e.rule.clone() }));
        }
        if !name_only(&entries) || !out.unsupported.is_empty() {
            return None;
        }
        edit.added_bad += out.bad_lines;
        edit.hunks.push(Hunk {
            at: u32::try_from(a_at).ok()?,
            del: u32::try_from(a_len).ok()?,
            ins: u32::try_from(b_len).ok()?,
            entries,
        });
        ai = a_at + a_len;
        bi = b_at + b_len;
    }
    let rest = old.get(ai..)?;
    if new.len().checked_sub(bi)? != rest.len() {
        return None;
    }
    new.get_mut(bi..)?.copy_from_slice(rest);
    edit.codes = Some(new);
    Some(edit)
}

/// Applies a PATCH (`+LINE` appends, `-LINE` removes every line equal to
/// it after trimming, in the patch's order) to `base`: the new bytes
/// (exactly what `push::apply_patch` makes) and, when `line_fn` is given
/// and every changed line may travel by delta, the [`Edit`].
///
/// Cost: one pass over the base (memchr for the line ends; a set look-up
/// only for lines as long as a removed one), the kept stretches copied
/// whole, plus a parse of the removed and added lines: O(base bytes +
/// patch), no per-line allocation.
pub fn patch_edit(
    line_fn: Option<parse::LineFn>,
    file: &str,
    from_version: String,
    base: &[u8],
    patch: &[u8],
) -> Result<(Vec<u8>, Option<Edit>), String> {
    let base = std::str::from_utf8(base).map_err(|_| "the base version is not UTF-8; PUT the full list".to_owned())?;
    let patch = std::str::from_utf8(patch).map_err(|_| "the patch is not UTF-8".to_owned())?;
    let hasher = foldhash::fast::RandomState::default();
    let mut removals: std::collections::HashSet<&str, _> = std::collections::HashSet::with_hasher(hasher);
    let mut appended: Vec<Option<&str>> = Vec::new();
    // appends not removed yet, by their trimmed text
    let mut pending: std::collections::HashMap<&str, Vec<usize>, _> = std::collections::HashMap::with_hasher(hasher);
    for (n, l) in patch.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        if let Some(add) = l.strip_prefix('+') {
            pending.entry(add.trim()).or_default().push(appended.len());
            appended.push(Some(add));
        } else if let Some(del) = l.strip_prefix('-') {
            let del = del.trim();
            removals.insert(del);
            // an earlier append of the same line goes too
            for k in pending.remove(del).unwrap_or_default() {
                if let Some(a) = appended.get_mut(k) {
                    *a = None;
                }
            }
        } else {
            return Err(format!("patch line {}: must start with + or -", n + 1));
        }
    }
    let mut out = String::with_capacity(base.len() + patch.len() + 1);
    let mut removed: Vec<(u32, &str)> = Vec::new();
    let mut base_lines = 0u32;
    if memchr::memchr(b'\r', base.as_bytes()).is_none() {
        // no CR: `str::lines` would give the bytes back as they are, so the
        // stretches between removed lines are copied whole
        let mut lens = [0u64; 8]; // trimmed lengths of the removals, below 512
        for r in &removals {
            if let Some(w) = lens.get_mut(r.len().min(511) / 64) {
                *w |= 1 << (r.len().min(511) % 64);
            }
        }
        let maybe = |len: usize| lens.get(len.min(511) / 64).is_some_and(|w| w & (1 << (len.min(511) % 64)) != 0);
        let (mut start, mut kept_from) = (0usize, 0usize);
        for end in memchr::memchr_iter(b'\n', base.as_bytes()).chain(std::iter::once(base.len())) {
            if start >= base.len() {
                break;
            }
            base_lines = base_lines.saturating_add(1);
            let line = base.get(start..end).unwrap_or("");
            let t = line.trim();
            if !removals.is_empty() && maybe(t.len()) && removals.contains(t) {
                out.push_str(base.get(kept_from..start).unwrap_or(""));
                removed.push((base_lines, line));
                kept_from = end + 1;
            }
            start = end + 1;
        }
        out.push_str(base.get(kept_from.min(base.len())..).unwrap_or(""));
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    } else {
        for (i, l) in base.lines().enumerate() {
            base_lines = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if !removals.is_empty() && removals.contains(l.trim()) {
                removed.push((base_lines, l));
                continue;
            }
            out.push_str(l);
            out.push('\n');
        }
    }
    let appended: Vec<&str> = appended.into_iter().flatten().collect();
    for a in &appended {
        out.push_str(a);
        out.push('\n');
    }
    if out.is_empty() {
        out.push('\n');
    }
    let Some(line_fn) = line_fn else { return Ok((out.into_bytes(), None)) };
    let edit = patch_hunks(line_fn, file, from_version, base_lines, &removed, &appended);
    Ok((out.into_bytes(), edit))
}

/// The [`Edit`] of a PATCH over a version of `from_lines` lines: the lines
/// it removes (`(line, text)`, 1-based line numbers of that version, in
/// order) and the lines it appends. `None` when a changed line is not a
/// name rule (then a full build). Cost: a parse of the removed and the
/// appended lines only.
pub fn patch_hunks(
    line_fn: parse::LineFn,
    file: &str,
    from_version: String,
    from_lines: u32,
    removed: &[(u32, &str)],
    appended: &[&str],
) -> Option<Edit> {
    let mut edit = Edit { from_version, from_lines, ..Default::default() };
    for &(n, l) in removed {
        let mut probe = ParseOutput::default();
        line_fn(file, n, l, &mut probe);
        if !name_only(&probe.entries) || !probe.unsupported.is_empty() {
            return None;
        }
        edit.removed_rules += probe.entries.len();
        edit.removed_bad += probe.bad_lines;
        match edit.hunks.last_mut() {
            Some(h) if h.at + h.del == n - 1 => h.del += 1,
            _ => edit.hunks.push(Hunk { at: n - 1, del: 1, ins: 0, entries: Vec::new() }),
        }
    }
    if !appended.is_empty() {
        let mut probe = ParseOutput::default();
        for (j, a) in appended.iter().enumerate() {
            line_fn(file, u32::try_from(j + 1).ok()?, a.strip_suffix('\r').unwrap_or(a), &mut probe);
        }
        if !name_only(&probe.entries) || !probe.unsupported.is_empty() {
            return None;
        }
        edit.added_bad = probe.bad_lines;
        let ins = u32::try_from(appended.len()).ok()?;
        edit.hunks.push(Hunk { at: from_lines, del: 0, ins, entries: probe.entries });
    }
    Some(edit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read through any buffer size, the lines, their count and the content
    /// version are those of the whole bytes: BOM, CRLF, blank lines, no
    /// final newline, a lone newline, lines longer than the buffer.
    #[test]
    fn streamed_lines_are_those_of_the_whole_bytes() {
        let mut rng = crate::lists::TestRng(0x2545_f491_4f6c_dd1du64);
        let mut rnd = |n: u64| rng.below(n);
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\n".to_vec(),
            b"\xef\xbb\xbf".to_vec(),
            b"\xef\xbb\xbf\n".to_vec(),
            b"\n\n".to_vec(),
            b"a".to_vec(),
            b"a\r\nb\r\n".to_vec(),
            b"a\nb".to_vec(),
            b"\xef\xbb\xbfa\n\nb\r".to_vec(),
        ];
        for _ in 0..300 {
            let n = rnd(200) as usize;
            cases.push((0..n).map(|_| [b'a', b'b', b'.', b'\n', b'\r', 0xef, 0xbb, 0xbf][rnd(8) as usize]).collect());
        }
        for bytes in &cases {
            let want = line_hashes(bytes);
            for chunk in [1usize, 2, 3, 7, 8, 64, 4096] {
                let mut got = Vec::new();
                let s = stream_lines(std::io::Cursor::new(bytes), chunk, u64::MAX, |i, l| {
                    assert_eq!(i, got.len());
                    got.push(line_hash(l));
                })
                .unwrap()
                .unwrap();
                got.truncate(s.lines);
                assert_eq!(got, want, "{bytes:?} in chunks of {chunk}");
                assert_eq!(s.lines, want.len());
                assert_eq!(s.version, crate::lists::version::content_version(bytes), "{bytes:?} in chunks of {chunk}");
                assert_eq!(s.len, bytes.len() as u64);
            }
        }
        assert!(stream_lines(std::io::Cursor::new(b"a\nb\n"), 2, 3, |_, _| {}).unwrap().is_none(), "past the limit");
    }

    /// A streamed diff finds the edit an in-memory diff finds, with the
    /// same line codes; an unchanged file says so; a file too big does not.
    #[test]
    fn a_streamed_file_edit_is_the_in_memory_one() {
        let line_fn = parse::line_parser(crate::rules::Format::Domains).unwrap();
        let old_text: String = (0..5000).map(|i| format!("n{i}.test\n")).collect();
        let mut old_out = ParseOutput::default();
        let old_codes = parse_with_codes(line_fn, "l.txt", old_text.as_bytes(), &mut old_out, &std::cell::Cell::new(false));
        let mut lines: Vec<String> = old_text.lines().map(str::to_owned).collect();
        lines.remove(4000);
        lines.insert(10, "added.test".into());
        lines[2500] = "changed.test".into();
        let new_text = lines.join("\n") + "\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.txt");
        std::fs::write(&path, &new_text).unwrap();
        let from = crate::lists::version::content_version(old_text.as_bytes());
        let want = file_edit(line_fn, "l.txt", from.clone(), &old_codes, new_text.as_bytes(), 100).unwrap();
        let (got, s) = file_edit_streamed(line_fn, "l.txt", &path, from.clone(), &old_codes, u64::MAX, 100).unwrap().unwrap();
        let got = got.unwrap();
        assert_eq!(s.version, crate::lists::version::content_version(new_text.as_bytes()));
        assert_eq!(format!("{:?}", got.hunks), format!("{:?}", want.hunks));
        assert_eq!(got.codes, want.codes);
        assert_eq!((got.removed_rules, got.added_rules()), (2, 2));
        std::fs::write(&path, &old_text).unwrap();
        let (none, _) = file_edit_streamed(line_fn, "l.txt", &path, from.clone(), &old_codes, u64::MAX, 100).unwrap().unwrap();
        assert!(none.is_none(), "unchanged");
        assert!(file_edit_streamed(line_fn, "l.txt", &path, from, &old_codes, 10, 100).unwrap().is_none(), "over the limit");
    }

    #[test]
    fn diff_finds_small_edits() {
        let a: Vec<u64> = (0..1000u64).map(|i| i << 8).collect();
        let mut b = a.clone();
        b.remove(500);
        b.insert(10, 7 << 8);
        b.push(9 << 40);
        let h = diff(&a, &b, 10).unwrap();
        assert_eq!(h, vec![(10, 0, 10, 1), (500, 1, 501, 0), (1000, 0, 1000, 1)]);
        assert!(diff(&a, &b, 2).is_none(), "over the edit budget");
        assert_eq!(diff(&a, &a, 0).unwrap(), vec![]);
    }

    /// The PATCH's bytes are exactly what the journal's replay
    /// (`push::apply_patch`) makes: CRLF or not, a missing last newline,
    /// blank and padded lines, a line removed twice, an append removed
    /// later and a removal appended again.
    #[test]
    fn patch_bytes_are_those_of_the_replay() {
        let bases: &[&str] = &[
            "",
            "\n",
            "a.test\nb.test\n",
            "a.test\nb.test",
            "a.test\r\nb.test\r\n",
            " a.test \n\nb.test\na.test\n\n",
            "b.test\n",
            "c.test\na.test",
        ];
        let patches: &[&str] = &["-a.test\n", "+c.test\n-c.test\n", "-b.test\n+b.test\n", "-a.test\n-a.test\n+ d.test\n", "+x\n", "-zz\n-b.test\n"];
        for base in bases {
            for patch in patches {
                let (got, _) = patch_edit(None, "f", String::new(), base.as_bytes(), patch.as_bytes()).unwrap();
                let want = crate::lists::push::apply_patch(base.as_bytes(), patch.as_bytes()).unwrap();
                assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap(), "base {base:?} patch {patch:?}");
            }
        }
    }

    /// `b` rebuilt from `a` and the hunks.
    fn patched(a: &[u64], b: &[u64], hunks: &[(usize, usize, usize, usize)]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut ai = 0;
        for &(a_at, a_len, b_at, b_len) in hunks {
            out.extend_from_slice(&a[ai..a_at]);
            out.extend_from_slice(&b[b_at..b_at + b_len]);
            ai = a_at + a_len;
        }
        out.extend_from_slice(&a[ai..]);
        out
    }

    /// Moved lines, repeated lines (blank lines, comments) and random edits:
    /// the hunks always turn `a` into `b`, and are minimal when nothing moved.
    #[test]
    fn diff_turns_a_into_b() {
        let a: Vec<u64> = (0..100u64).map(|i| i << 8).collect();
        // line 3 moved to the end: deleted there, inserted here
        let mut b = a.clone();
        let moved = b.remove(3);
        b.push(moved);
        let h = diff(&a, &b, 10).unwrap();
        assert_eq!(patched(&a, &b, &h), b);
        assert_eq!(h, vec![(3, 1, 3, 0), (100, 0, 99, 1)]);
        // a block of 40 lines inserted: past the window, so the window walk
        // goes out of step and gives up within the budget; the multiset
        // walk finds the 40 insertions
        let mut b = a.clone();
        for k in 0..40u64 {
            b.insert(50, (1000 + k) << 8);
        }
        assert!(window_walk(&a[3..], &b[3..], 3, 60).is_none());
        assert_eq!(diff(&a, &b, 60).unwrap(), vec![(50, 0, 50, 40)]);
        let mut rng = crate::lists::TestRng(0x2545_f491_4f6c_dd1du64);
        let mut rnd = |n: u64| rng.below(n);
        for round in 0..500 {
            // a few distinct values so that lines repeat
            let len = rnd(40) as usize;
            // repeated lines in odd rounds (blank lines, comments), unique ones in even rounds
            let a: Vec<u64> =
                if round % 2 == 1 { (0..len).map(|_| rnd(6) << 8 | rnd(3)).collect() } else { (0..len as u64).map(|i| i << 8 | rnd(3)).collect() };
            let mut b = a.clone();
            let mut moves = false;
            for _ in 0..rnd(6) {
                match rnd(3) {
                    0 if !b.is_empty() => {
                        b.remove(rnd(b.len() as u64) as usize);
                    }
                    1 if b.len() > 1 => {
                        let x = b.remove(rnd(b.len() as u64) as usize);
                        b.insert(rnd(b.len() as u64 + 1) as usize, x);
                        moves = true;
                    }
                    _ => b.insert(rnd(b.len() as u64 + 1) as usize, (100 + round + rnd(8)) << 8),
                }
            }
            let key: Vec<u64> = b.iter().map(|x| x & !CODE_BITS).collect();
            // each walk on its own (diff tries the window first), then diff
            let window = window_walk(&a, &b, 0, usize::MAX).unwrap();
            let got: Vec<u64> = patched(&a, &b, &window).iter().map(|x| x & !CODE_BITS).collect();
            assert_eq!(got, key, "round {round}: window walk {a:?} -> {b:?}: {window:?}");
            let h = multiset_walk(&a, &b, 0, usize::MAX).unwrap();
            let got: Vec<u64> = patched(&a, &b, &h).iter().map(|x| x & !CODE_BITS).collect();
            assert_eq!(got, key, "round {round}: multiset walk {a:?} -> {b:?}: {h:?}");
            let d = diff(&a, &b, usize::MAX).unwrap();
            let got: Vec<u64> = patched(&a, &b, &d).iter().map(|x| x & !CODE_BITS).collect();
            assert_eq!(got, key, "round {round}: diff {a:?} -> {b:?}: {d:?}");
            let edits: usize = h.iter().map(|h| h.1 + h.3).sum();
            let mut sa: Vec<u64> = a.iter().map(|x| x & !CODE_BITS).collect();
            let mut sb = key.clone();
            sa.sort_unstable();
            sb.sort_unstable();
            let (mut i, mut j, mut common) = (0, 0, 0);
            while i < sa.len() && j < sb.len() {
                match sa[i].cmp(&sb[j]) {
                    std::cmp::Ordering::Equal => (common, i, j) = (common + 1, i + 1, j + 1),
                    std::cmp::Ordering::Less => i += 1,
                    std::cmp::Ordering::Greater => j += 1,
                }
            }
            let least = sa.len() + sb.len() - 2 * common;
            assert!(edits >= least);
            if !moves && round % 2 == 0 {
                assert_eq!(edits, least, "round {round}: not minimal without moves: {a:?} -> {b:?}: {h:?}");
            }
            if least > 0 {
                assert!(diff(&a, &b, least - 1).is_none(), "round {round}: over the budget");
                assert!(multiset_walk(&a, &b, 0, least - 1).is_none(), "round {round}: over the budget");
            }
        }
    }
}
