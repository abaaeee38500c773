//! A pushed list's bytes as a PATCH sees them: the lines of the last full
//! version (a PUT, or the journal replayed at start) indexed by their
//! trimmed text, and the PATCHes since as a small overlay (base lines
//! removed, lines appended). A PATCH of k lines then costs O(k) look-ups
//! plus the overlay (O(patches so far)), not a pass over the list: it finds
//! the lines it removes and their line numbers in the version in force
//! (the delta's hunks, `lists/delta.rs`) without reading the other lines,
//! and the new bytes are made only when something needs them (a full
//! build, a held version, the copy written behind).
//!
//! The result is byte for byte what [`super::push::apply_patch`] makes,
//! for bodies without a CR; a body with one, a PATCH with one, or a PATCH
//! that would empty the list (`apply_patch` writes `"\n"` then) is left to
//! the scanning path ([`Patched::apply`] answers `None`).
//!
//! Memory: 8 bytes a line for its place, 4 for the chain of equal lines,
//! about 5 for the hash table: ≈ 17 MB at a million lines, besides the
//! bytes themselves (which a push list keeps anyway).

use std::sync::{Arc, OnceLock};

/// Ends a chain of equal lines.
const END: u32 = u32::MAX;

/// The indexed version: its bytes, each line's place, and the index.
struct Base {
    bytes: Arc<Vec<u8>>,
    /// (start, length) of each line, without its newline.
    lines: Vec<(u32, u32)>,
    /// First line of each distinct trimmed text.
    table: hashbrown::HashTable<u32>,
    /// Next line with the same trimmed text, or [`END`].
    next: Vec<u32>,
    hasher: foldhash::fast::RandomState,
    /// Length of the bytes as `apply_patch` writes them (each line + '\n').
    len: u64,
}

/// The text of line `line` of `bytes`, whose lines are at `lines`
/// (`""` past the end).
fn line_text<'a>(bytes: &'a [u8], lines: &[(u32, u32)], line: u32) -> &'a str {
    let Some(&(start, len)) = lines.get(line as usize) else { return "" };
    let (start, len) = (start as usize, len as usize);
    bytes.get(start..start + len).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

impl Base {
    fn text(&self, line: u32) -> &str {
        line_text(&self.bytes, &self.lines, line)
    }

    fn hash(&self, trimmed: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(trimmed)
    }

    /// The lines whose trimmed text is `trimmed`, in no particular order.
    fn lines_equal_to<'a>(&'a self, trimmed: &'a str) -> impl Iterator<Item = u32> + 'a {
        let head = self.table.find(self.hash(trimmed), |&l| self.text(l).trim() == trimmed).copied().unwrap_or(END);
        std::iter::successors((head != END).then_some(head), move |&l| self.next.get(l as usize).copied().filter(|&n| n != END))
    }
}

/// A push list's version: the indexed base and the PATCHes since.
/// Cloning copies the overlay only (the base is shared).
#[derive(Clone)]
pub struct Patched {
    base: Arc<Base>,
    /// Base lines removed since, sorted.
    dead: Vec<u32>,
    /// Lines appended since, in order; `None` once removed.
    added: Vec<Option<Arc<str>>>,
    /// Lines of this version.
    live: u32,
    /// Length of this version's bytes.
    len: u64,
    /// This version's bytes, once made.
    bytes: Arc<OnceLock<Arc<Vec<u8>>>>,
}

impl std::fmt::Debug for Patched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patched").field("lines", &self.live).field("len", &self.len).field("removed", &self.dead.len()).finish()
    }
}

/// What one PATCH does to a [`Patched`] version.
#[derive(Debug)]
pub struct Applied<'a> {
    /// The version after the PATCH.
    pub next: Patched,
    /// Lines of the version before it.
    pub from_lines: u32,
    /// The lines it removes: (line number in the version before, 1-based;
    /// text), by line number.
    pub removed: Vec<(u32, Arc<str>)>,
    /// The lines it appends (after its own removals), in order.
    pub appended: Vec<&'a str>,
}

impl Patched {
    /// Indexes `bytes` (a PUT's body, or a replayed journal's). `None` when
    /// the scanning path must handle this body: not UTF-8, a CR in it, over
    /// 4 GiB, or empty. Cost: O(bytes): one hash and one table insert per
    /// line (≈ 60 ms at a million lines).
    pub fn index(bytes: Arc<Vec<u8>>) -> Option<Self> {
        if bytes.is_empty() || u32::try_from(bytes.len()).is_err() || memchr::memchr(b'\r', &bytes).is_some() {
            return None;
        }
        let text = std::str::from_utf8(&bytes).ok()?;
        let mut base = Base {
            bytes: Arc::clone(&bytes),
            lines: Vec::new(),
            table: hashbrown::HashTable::new(),
            next: Vec::new(),
            hasher: foldhash::fast::RandomState::default(),
            len: 0,
        };
        let mut start = 0usize;
        for end in memchr::memchr_iter(b'\n', text.as_bytes()).chain(std::iter::once(text.len())) {
            if start >= text.len() {
                break;
            }
            let line = u32::try_from(base.lines.len()).ok()?;
            base.lines.push((u32::try_from(start).ok()?, u32::try_from(end - start).ok()?));
            base.len += (end - start) as u64 + 1;
            let t = text.get(start..end).unwrap_or("").trim();
            let h = base.hash(t);
            let (lines, bytes_ref) = (&base.lines, &base.bytes);
            let text_of = |l: u32| line_text(bytes_ref, lines, l).trim();
            // a repeated line joins the chain of the first one
            let mut chained = END;
            if let Some(head) = base.table.find_mut(h, |&l| text_of(l) == t) {
                chained = *head;
                *head = line;
            } else {
                let hasher = base.hasher;
                base.table.insert_unique(h, line, |&l| {
                    use std::hash::BuildHasher;
                    hasher.hash_one(text_of(l))
                });
            }
            base.next.push(chained);
            start = end + 1;
        }
        let live = u32::try_from(base.lines.len()).ok()?;
        let len = base.len;
        let cell = OnceLock::new();
        let _ = cell.set(bytes);
        Some(Patched { base: Arc::new(base), dead: Vec::new(), added: Vec::new(), live, len, bytes: Arc::new(cell) })
    }

    /// Lines of this version.
    pub fn lines(&self) -> u32 {
        self.live
    }

    /// Length of this version's bytes (without making them).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether this version has no bytes (never: an emptied list is left to
    /// the scanning path).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// This version's bytes: made on first use, O(bytes), then shared.
    pub fn bytes(&self) -> Arc<Vec<u8>> {
        Arc::clone(self.bytes.get_or_init(|| {
            let mut out = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
            let mut dead = self.dead.iter().peekable();
            for l in 0..self.base.lines.len() as u32 {
                if dead.peek() == Some(&&l) {
                    dead.next();
                    continue;
                }
                out.extend_from_slice(self.base.text(l).as_bytes());
                out.push(b'\n');
            }
            for a in self.added.iter().flatten() {
                out.extend_from_slice(a.as_bytes());
                out.push(b'\n');
            }
            Arc::new(out)
        }))
    }

    /// Applies one PATCH (`+LINE` appends, `-LINE` removes every line equal
    /// to it after trimming, earlier appends of the same PATCH included):
    /// the version after it and what changed, or `None` when the scanning
    /// path must do it (a CR in the PATCH, or the list would be empty).
    /// Nothing of `self` changes. Errors: the PATCH is not UTF-8, or a line
    /// starts with neither `+` nor `-` (the scanning path's words).
    ///
    /// Cost: O(k) table look-ups for a PATCH of k lines, plus O(r log r + a)
    /// for the r base lines removed so far and a lines appended so far (the
    /// overlay is copied into the new version).
    pub fn apply<'a>(&self, patch: &'a [u8]) -> Result<Option<Applied<'a>>, String> {
        let patch = std::str::from_utf8(patch).map_err(|_| "the patch is not UTF-8".to_owned())?;
        if memchr::memchr(b'\r', patch.as_bytes()).is_some() {
            return Ok(None);
        }
        // the PATCH's own effect: the texts it removes, and its appends not
        // removed by a later line of it (as `apply_patch` processes lines in order)
        let mut removals: Vec<&str> = Vec::new();
        let mut appended: Vec<Option<&str>> = Vec::new();
        for (n, l) in patch.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            if let Some(add) = l.strip_prefix('+') {
                appended.push(Some(add));
            } else if let Some(del) = l.strip_prefix('-') {
                let del = del.trim();
                removals.push(del);
                for a in appended.iter_mut() {
                    if a.is_some_and(|a| a.trim() == del) {
                        *a = None;
                    }
                }
            } else {
                return Err(format!("patch line {}: must start with + or -", n + 1));
            }
        }
        removals.sort_unstable();
        removals.dedup();
        let appended: Vec<&str> = appended.into_iter().flatten().collect();
        // base lines and earlier appends the PATCH removes
        let mut gone_base: Vec<u32> = Vec::new();
        for r in &removals {
            gone_base.extend(self.base.lines_equal_to(r).filter(|l| self.dead.binary_search(l).is_err()));
        }
        gone_base.sort_unstable();
        let mut gone_added: Vec<usize> = Vec::new();
        if !removals.is_empty() {
            for (j, a) in self.added.iter().enumerate() {
                if a.as_ref().is_some_and(|a| removals.binary_search(&a.trim()).is_ok()) {
                    gone_added.push(j);
                }
            }
        }
        let from_lines = self.live;
        let base_live = self.base.lines.len() as u32 - self.dead.len() as u32;
        let mut removed: Vec<(u32, Arc<str>)> = Vec::with_capacity(gone_base.len() + gone_added.len());
        let mut len = self.len;
        for &l in &gone_base {
            // 1-based line number: base lines before it that are still there
            let dead_before = self.dead.partition_point(|&d| d < l) as u32;
            let text = self.base.text(l);
            len = len.saturating_sub(text.len() as u64 + 1);
            removed.push((l - dead_before + 1, Arc::from(text)));
        }
        if !gone_added.is_empty() {
            let (mut rank, mut g) = (base_live, gone_added.iter().peekable());
            for (j, a) in self.added.iter().enumerate() {
                let Some(a) = a else { continue };
                rank += 1;
                if g.peek() == Some(&&j) {
                    g.next();
                    len = len.saturating_sub(a.len() as u64 + 1);
                    removed.push((rank, Arc::clone(a)));
                }
            }
        }
        let live = (from_lines as usize + appended.len()).checked_sub(removed.len()).and_then(|n| u32::try_from(n).ok());
        let Some(live) = live.filter(|&n| n > 0) else { return Ok(None) };
        let mut dead = Vec::with_capacity(self.dead.len() + gone_base.len());
        let (mut x, mut y) = (self.dead.iter().peekable(), gone_base.iter().peekable());
        while let (Some(&&a), Some(&&b)) = (x.peek(), y.peek()) {
            if a < b {
                dead.push(a);
                x.next();
            } else {
                dead.push(b);
                y.next();
            }
        }
        dead.extend(x);
        dead.extend(y);
        let mut added = self.added.clone();
        for &j in &gone_added {
            if let Some(a) = added.get_mut(j) {
                *a = None;
            }
        }
        for a in &appended {
            len += a.len() as u64 + 1;
            added.push(Some(Arc::from(*a)));
        }
        let next = Patched { base: Arc::clone(&self.base), dead, added, live, len, bytes: Arc::new(OnceLock::new()) };
        Ok(Some(Applied { next, from_lines, removed, appended }))
    }
}

/// The bytes of a push list's version in force, as the next PATCH wants
/// them: indexed ([`Patched`]) when the body allows it, else plain bytes
/// (the scanning path, `delta::patch_edit`).
#[derive(Clone, Debug)]
pub enum PushBody {
    Bytes(Arc<Vec<u8>>),
    Indexed(Patched),
}

impl PushBody {
    /// Indexes `bytes` when it can ([`Patched::index`]: O(bytes)).
    pub fn new(bytes: Arc<Vec<u8>>) -> Self {
        match Patched::index(Arc::clone(&bytes)) {
            Some(p) => PushBody::Indexed(p),
            None => PushBody::Bytes(bytes),
        }
    }

    /// This version indexed for the next PATCH ([`PushBody::new`] of its
    /// bytes; an indexed version as it is).
    pub fn indexed(self) -> Self {
        match self {
            PushBody::Bytes(b) => PushBody::new(b),
            indexed => indexed,
        }
    }

    /// The bytes (made on first use for an indexed version: O(bytes)).
    pub fn bytes(&self) -> Arc<Vec<u8>> {
        match self {
            PushBody::Bytes(b) => Arc::clone(b),
            PushBody::Indexed(p) => p.bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::push::apply_patch;

    fn index(s: &str) -> Patched {
        Patched::index(Arc::new(s.as_bytes().to_vec())).unwrap()
    }

    /// The bytes are those of `apply_patch`, PATCH after PATCH, and the
    /// removed lines carry their numbers in the version before.
    #[test]
    fn patches_match_apply_patch() {
        let base = "a.test\nb.test\n  c.test \nb.test\nd.test";
        let patches: &[&str] = &[
            "-b.test\n+e.test\n",
            "+f.test\n-e.test\n+e.test\n",
            "- c.test\n-zz.test\n+g.test\n+g.test\n",
            "-g.test\n-a.test\n",
            "+h.test\n-h.test\n\n",
        ];
        let mut want = base.as_bytes().to_vec();
        let mut cur = index(base);
        for p in patches {
            let before: Vec<String> = String::from_utf8(want.clone()).unwrap().lines().map(str::to_owned).collect();
            let applied = cur.apply(p.as_bytes()).unwrap().unwrap();
            want = apply_patch(&want, p.as_bytes()).unwrap();
            assert_eq!(applied.from_lines as usize, before.len(), "{p:?}");
            for (n, text) in &applied.removed {
                assert_eq!(before[*n as usize - 1], &**text, "line {n} of {p:?}");
            }
            let next = applied.next;
            assert_eq!(String::from_utf8_lossy(&next.bytes()), String::from_utf8_lossy(&want), "after {p:?}");
            assert_eq!(next.len(), want.len() as u64);
            assert_eq!(next.lines() as usize, String::from_utf8(want.clone()).unwrap().lines().count());
            cur = next;
        }
    }

    /// The version a PATCH starts from is not changed by it.
    #[test]
    fn apply_leaves_the_version_alone() {
        let cur = index("a.test\nb.test\n");
        let applied = cur.apply(b"-a.test\n+c.test\n").unwrap().unwrap();
        assert_eq!(&**cur.bytes(), b"a.test\nb.test\n");
        assert_eq!(&**applied.next.bytes(), b"b.test\nc.test\n");
        assert_eq!(applied.removed, vec![(1, Arc::from("a.test"))]);
        assert_eq!(applied.appended, vec!["c.test"]);
    }

    /// What the scanning path keeps: CRs, an emptied list; and the errors.
    #[test]
    fn leaves_the_odd_cases_to_the_scan() {
        assert!(Patched::index(Arc::new(b"a.test\r\n".to_vec())).is_none());
        assert!(Patched::index(Arc::new(Vec::new())).is_none());
        let cur = index("a.test\n");
        assert!(cur.apply(b"-a.test\n").unwrap().is_none());
        assert!(cur.apply(b"+b.test\r\n").unwrap().is_none());
        assert!(cur.apply(b"x.test\n").unwrap_err().contains("line 1"));
        assert!(cur.apply(&[0xff]).is_err());
    }

    /// Random PATCHes over a list with repeated lines: the same bytes and
    /// line numbers as `apply_patch`.
    #[test]
    fn random_patches_agree_with_apply_patch() {
        let mut rng = crate::lists::TestRng(0x9e37_79b9_7f4a_7c15u64);
        let mut rnd = |n: u64| rng.below(n);
        let base: String = (0..300).map(|_| format!("n{}.test\n", rnd(120))).collect();
        let mut want = base.clone().into_bytes();
        let mut cur = index(&base);
        for _ in 0..200 {
            let patch: String = (0..1 + rnd(6))
                .map(|_| format!("{}{}n{}.test\n", if rnd(2) == 0 { '+' } else { '-' }, if rnd(5) == 0 { " " } else { "" }, rnd(150)))
                .collect();
            let before: Vec<String> = String::from_utf8(want.clone()).unwrap().lines().map(str::to_owned).collect();
            let next = apply_patch(&want, patch.as_bytes()).unwrap();
            match cur.apply(patch.as_bytes()).unwrap() {
                Some(a) => {
                    for (n, text) in &a.removed {
                        assert_eq!(before[*n as usize - 1], &**text);
                    }
                    assert!(a.removed.windows(2).all(|w| w[0].0 < w[1].0), "sorted by line");
                    assert_eq!(a.next.bytes().as_slice(), next.as_slice(), "{patch:?}");
                    cur = a.next;
                }
                None => {
                    assert_eq!(next, b"\n", "only an emptied list goes to the scan");
                    cur = index(&base);
                    want = base.clone().into_bytes();
                    continue;
                }
            }
            want = next;
        }
    }
}
