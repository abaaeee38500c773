//! The compiled matcher: every name rule of every list in one hash table over
//! one string arena, plus an aho-corasick automaton for keywords and a
//! `RegexSet` for adblock regex rules.
//!
//! Memory per name rule: a 12-byte record header and the name bytes, back
//! to back in one store, plus 8 / 0.6 ≈ 13 bytes of table slots (load
//! factor ≤ 0.6 once built).
//!
//! Layout, chosen for the cold lookup at a million rules: a probe reads one
//! table slot, which holds a 32-bit hash tag and the record's offset, and
//! then the record, whose text sits right after its header. A hit costs two
//! dependent cache misses (slot, record) where a hashbrown table of rule
//! numbers over a separate record array and string arena cost four (control
//! group, slot, record, text). A miss costs one (the slot's cache line; a
//! wrong tag rejects without reading the record).

use std::hash::BuildHasher;

use aho_corasick::{AhoCorasick, MatchKind};

use super::hit::{Hit, RuleId};
use super::iptable::{IpRule, IpTable};
use crate::name::{NameRef, QName};
use crate::rules::{Entry, ListId, LocalData, Rule, RuleAction, Scope};

/// The "no list" value of [`Index::first_block_list`] (no valid
/// [`ListId`] has it: see [`ListId::MAX_LISTS`]).
const NO_LIST: ListId = ListId::from_raw(u16::MAX);

const NONE: u32 = u32::MAX;

// bits of RuleRec::bits
const SCOPE_MASK: u8 = 0b11; // 0 subtree, 1 exact, 2 below
const ALLOW: u8 = 1 << 2;
const IMPORTANT: u8 = 1 << 3;
const ACT_SHIFT: u8 = 4; // 3 bits: RuleOverride

/// A rule's own action, when it has one (RPZ), overriding the list's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOverride {
    None,
    Nxdomain,
    Nodata,
    Drop,
    Local,
}

impl RuleOverride {
    fn to_bits(self) -> u8 {
        match self {
            RuleOverride::None => 0,
            RuleOverride::Nxdomain => 1,
            RuleOverride::Nodata => 2,
            RuleOverride::Drop => 3,
            RuleOverride::Local => 4,
        }
    }
    fn from_bits(b: u8) -> Self {
        match b {
            1 => RuleOverride::Nxdomain,
            2 => RuleOverride::Nodata,
            3 => RuleOverride::Drop,
            4 => RuleOverride::Local,
            _ => RuleOverride::None,
        }
    }
}

/// Bytes of a record header in the store; the pattern text follows it.
///
/// `[0]` bits, `[1]` text length, `[2..4]` list position (LE), `[4..8]`
/// source line (LE, 1-based), `[8..12]` next rule with the same name (LE;
/// `NONE` ends the chain).
const HDR: usize = 12;

/// A decoded record header.
#[derive(Clone, Copy, Debug)]
struct RuleRec {
    /// Source line (1-based).
    line: u32,
    /// Next rule with the same name (chain), or NONE.
    next: u32,
    /// The list, by position in config order.
    list: ListId,
    text_len: u8,
    bits: u8,
}

impl RuleRec {
    /// Reads the header at `id`; `None` past the end of the store.
    #[inline]
    fn at(store: &[u8], id: u32) -> Option<Self> {
        let start = id as usize;
        let h: &[u8; HDR] = store.get(start..start.checked_add(HDR)?)?.try_into().ok()?;
        Some(RuleRec {
            bits: h[0],
            text_len: h[1],
            list: ListId::from_raw(u16::from_le_bytes([h[2], h[3]])),
            line: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            next: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.bits);
        out.push(self.text_len);
        out.extend_from_slice(&self.list.raw().to_le_bytes());
        out.extend_from_slice(&self.line.to_le_bytes());
        out.extend_from_slice(&self.next.to_le_bytes());
    }
}

/// The text bytes of the record at `id` (empty when out of range).
#[inline]
fn text_at(store: &[u8], id: u32) -> &[u8] {
    let start = id as usize;
    let Some(&len) = store.get(start + 1) else { return &[] };
    store.get(start + HDR..start + HDR + usize::from(len)).unwrap_or(&[])
}

/// Open-addressing hash table of record offsets, linear probing.
///
/// A slot is one `u64`: the high half a 32-bit tag taken from the hash (odd,
/// so never zero), the low half the record offset; `0` is an empty slot. The
/// start position comes from the hash's other 32 bits by multiply-shift, so
/// the slot count need not be a power of two and the table can be sized to
/// its load factor exactly.
struct Table {
    slots: Vec<u64>,
    len: usize,
}

/// The tag half of a slot.
const TAG_MASK: u64 = 0xffff_ffff_0000_0000;

/// Load factor a finished table is sized to (`len / slots`).
const LOAD_BUILT: f64 = 0.6;
/// Load factor at which a table being built doubles.
const LOAD_MAX: f64 = 0.75;

impl Table {
    fn with_capacity(n: usize) -> Self {
        Table { slots: vec![0; Self::slots_for(n)], len: 0 }
    }

    fn slots_for(n: usize) -> usize {
        ((n as f64 / LOAD_BUILT).ceil() as usize).max(8)
    }

    #[inline]
    fn start(&self, h: u64) -> usize {
        (((h >> 32) * self.slots.len() as u64) >> 32) as usize
    }

    #[inline]
    fn tag(h: u64) -> u64 {
        u64::from(h as u32 | 1) << 32
    }

    /// The first offset whose tag matches `h` and for which `eq` holds.
    ///
    /// Cost: one cache line for the slots in the common case (expected
    /// probe length 1.75 for a present key, 3.6 for an absent one at load
    /// 0.6), plus `eq` for each slot whose 32-bit tag matches.
    #[inline]
    fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let tag = Self::tag(h);
        let mut i = self.start(h);
        // the load factor stays below 1, so an empty slot always ends the walk;
        // the bound is for safety only
        for _ in 0..n {
            let s = *self.slots.get(i)?;
            if s == 0 {
                return None;
            }
            if s & TAG_MASK == tag && eq(s as u32) {
                return Some(s as u32);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
        None
    }

    /// Puts `id` in the first empty slot of its walk; the caller has checked
    /// that no equal key is present.
    fn insert(&mut self, h: u64, id: u32, rehash: impl Fn(u32) -> u64) {
        if (self.len + 1) as f64 > self.slots.len() as f64 * LOAD_MAX {
            self.resize((self.slots.len() * 2).max(Self::slots_for(self.len + 1)), &rehash);
        }
        self.place(h, id);
        self.len += 1;
    }

    fn place(&mut self, h: u64, id: u32) {
        let n = self.slots.len();
        let mut i = self.start(h);
        for _ in 0..n {
            match self.slots.get_mut(i) {
                Some(s) if *s == 0 => {
                    *s = Self::tag(h) | u64::from(id);
                    return;
                }
                _ => {}
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    fn resize(&mut self, slots: usize, rehash: impl Fn(u32) -> u64) {
        let old = std::mem::replace(&mut self.slots, vec![0; slots.max(8)]);
        for s in old.into_iter().filter(|&s| s != 0) {
            let id = s as u32;
            self.place(rehash(id), id);
        }
    }

    /// Sizes the table to [`LOAD_BUILT`] for the keys it holds, unless it is
    /// within a quarter of that already (a rehash touches every rule: a
    /// sizeable part of a build, `compile/1m_rules` in `benches/hot_path.rs`).
    fn fit(&mut self, rehash: impl Fn(u32) -> u64) {
        let want = Self::slots_for(self.len);
        let n = self.slots.len();
        if n < want || n > want + want / 4 {
            self.resize(want, rehash);
        }
    }

    fn bytes(&self) -> usize {
        self.slots.capacity() * 8
    }

    /// The record offset in the start slot of `h`'s walk when that slot's
    /// tag is `h`'s (what a hit usually reads); no probing further.
    #[inline]
    fn first_tagged(&self, h: u64) -> Option<u32> {
        let s = *self.slots.get(self.start(h))?;
        (s & TAG_MASK == Self::tag(h)).then_some(s as u32)
    }

    /// Reads the start slot of `h`'s walk, so that a later probe finds it
    /// in the cache (loads of several touches overlap).
    #[inline]
    fn touch(&self, h: u64) {
        std::hint::black_box(self.slots.get(self.start(h)).copied());
    }
}

/// Input to [`Index::build`]: the entries of one list.
pub struct ListInput<'a> {
    /// Whether the list as a whole is an allowlist (`kind = "allow"`).
    pub allow: bool,
    pub entries: &'a [Entry],
}

/// Why a policy could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("too many rules (more than 4 G)")]
    TooManyRules,
    #[error("pattern arena over 2 GiB")]
    ArenaFull,
    #[error("keyword automaton")]
    Keywords(#[from] aho_corasick::BuildError),
    #[error("regex set")]
    Regex(#[from] regex::Error),
    #[error("too many lists (more than {})", ListId::MAX_LISTS)]
    TooManyLists,
}

/// The compiled, immutable matcher.
pub struct Index {
    hasher: foldhash::fast::FixedState,
    /// Rule records back to back (see [`HDR`]); a [`RuleId`] is an offset here.
    store: Vec<u8>,
    /// Number of rules in `store`.
    count: usize,
    table: Table,
    keywords: Option<(AhoCorasick, Vec<RuleId>)>,
    /// Regex rules: the set, and (pattern, rule) in set order.
    regexes: Option<(regex::RegexSet, Vec<(String, RuleId)>)>,
    /// Answer-address rules in the order added (what [`Builder::carry`] copies).
    ips: Vec<(ipnet::IpNet, RuleId)>,
    /// The same rules flattened for lookup (built in [`Builder::finish`]).
    ip_table: IpTable,
    /// Actions of answer-address rules that carry their own (RPZ `rpz-ip`).
    ip_override: hashbrown::HashMap<RuleId, RuleOverride, foldhash::fast::FixedState>,
    decisions: Vec<Box<str>>,
    decision_of: hashbrown::HashMap<RuleId, u32, foldhash::fast::FixedState>,
    locals: hashbrown::HashMap<RuleId, Vec<LocalData>, foldhash::fast::FixedState>,
    /// Rules per list position.
    per_list: Vec<usize>,
    /// Whether any rule can override a block hit (allow rules, `$important`
    /// aside); without them the suffix walk stops at the first hit of the
    /// first block list.
    has_allow: bool,
    /// The earliest list that has block rules ([`NO_LIST`]: none).
    first_block_list: ListId,
    /// Per list position: whether it has rules other than name rules.
    other_lists: Vec<bool>,
}

// Non-name rules use scope value 3 and say their kind in the action bits.
const SCOPE_OTHER: u8 = 3;
const KIND_KEYWORD: u8 = 5;
const KIND_REGEX: u8 = 6;
const KIND_IP: u8 = 7;

/// Builds an [`Index`] from parsed entries and/or rules carried over from a
/// previous index (so a reload of one list never re-reads the others, and
/// no list keeps its parsed entries in memory).
pub struct Builder {
    idx: Index,
    decision_ids: hashbrown::HashMap<Box<str>, u32, foldhash::fast::FixedState>,
    keywords: Vec<(String, RuleId)>,
    regexes: Vec<(String, RuleId)>,
    /// Last rule of each name chain (keyed by chain head), so appends keep order.
    tails: hashbrown::HashMap<u32, u32, foldhash::fast::FixedState>,
    /// Name rules stored but not yet in the table, (hash, rule), in order.
    pending: Vec<(u64, u32)>,
}

/// Name rules put in the table together (see [`Builder::flush`]).
const PENDING: usize = 32;

impl Builder {
    /// A builder expecting about `rules` rules and `arena` bytes of names.
    pub fn with_capacity(rules: usize, arena: usize) -> Self {
        let idx = Index::with_capacity(rules, arena);
        let h = idx.hasher;
        Self {
            idx,
            decision_ids: hashbrown::HashMap::with_hasher(h),
            keywords: Vec::new(),
            regexes: Vec::new(),
            tails: hashbrown::HashMap::with_hasher(h),
            pending: Vec::with_capacity(PENDING),
        }
    }

    /// Adds the parsed entries of `list`.
    ///
    /// Cost: O(entries + name bytes), one hash insert per name rule.
    pub fn add_list(&mut self, list: ListId, allow: bool, entries: &[Entry]) -> Result<(), BuildError> {
        for entry in entries {
            self.add_entry(list, allow, entry)?;
        }
        Ok(())
    }

    /// Adds one parsed entry of `list`.
    pub fn add_entry(&mut self, list: ListId, allow: bool, entry: &Entry) -> Result<(), BuildError> {
        let allow_bit = if allow { ALLOW } else { 0 };
        {
            match &entry.rule {
                Rule::Name { name, scope, action, important, decision } => {
                    let mut bits = match scope {
                        Scope::Subtree => 0,
                        Scope::Exact => 1,
                        Scope::Below => 2,
                    } | allow_bit;
                    if *important {
                        bits |= IMPORTANT;
                    }
                    let (ov, local) = rule_action(action, &mut bits);
                    bits |= ov.to_bits() << ACT_SHIFT;
                    self.push(name, entry.line, list, bits, decision.as_deref(), local, None)?;
                }
                Rule::Keyword(k) => {
                    let bits = SCOPE_OTHER | allow_bit | (KIND_KEYWORD << ACT_SHIFT);
                    self.push(k, entry.line, list, bits, None, None, None)?;
                }
                Rule::Regex(r) => {
                    let bits = SCOPE_OTHER | allow_bit | (KIND_REGEX << ACT_SHIFT);
                    self.push("", entry.line, list, bits, None, None, Some(Extra::Regex(r.clone())))?;
                }
                Rule::Ip { net, decision } => {
                    let bits = SCOPE_OTHER | allow_bit | (KIND_IP << ACT_SHIFT);
                    let text = net.to_string();
                    self.push(&text, entry.line, list, bits, decision.as_deref(), None, Some(Extra::Ip(*net, RuleOverride::None)))?;
                }
                Rule::AnswerIp { net, action } => {
                    let mut bits = SCOPE_OTHER | allow_bit | (KIND_IP << ACT_SHIFT);
                    let (ov, local) = rule_action(action, &mut bits);
                    let text = net.to_string();
                    self.push(&text, entry.line, list, bits, None, local, Some(Extra::Ip(*net, ov)))?;
                }
            }
        }
        Ok(())
    }

    /// Copies every rule of `old` whose list satisfies `keep`,
    /// in their original order. Cost: O(kept rules), no parsing.
    pub fn carry(&mut self, old: &Index, keep: impl Fn(ListId) -> bool) -> Result<(), BuildError> {
        self.carry_merged(old, None, keep, |_, line| Some(line))
    }

    /// [`Builder::carry`] of a base index with changes layered over it (a
    /// `policy/delta.rs` `Delta`): every rule of `old` whose list satisfies
    /// `keep` and for which `line` gives a current line (`None`: the line
    /// was removed), renumbered to it, with the rules of `added` of the
    /// same list merged in where their lines fall, so that each list's
    /// rules come in the order a fresh parse of its current version gives
    /// (name rules by line, RPZ local data after them). This is how a
    /// delta is folded back into a fresh base. Cost: O(kept rules + added
    /// rules), no parsing.
    pub fn carry_merged(
        &mut self,
        old: &Index,
        added: Option<&Index>,
        keep: impl Fn(ListId) -> bool,
        line: impl Fn(ListId, u32) -> Option<u32>,
    ) -> Result<(), BuildError> {
        let side_old = Side::of(old);
        // the added rules by list, in their order (each list's added rules
        // are in line order: see `Delta`)
        let mut pending: Vec<std::collections::VecDeque<(RuleId, RuleRec)>> = Vec::new();
        let side_added = added.map(Side::of);
        if let Some(a) = added {
            for (id, rec) in a.records() {
                if !keep(rec.list) {
                    continue;
                }
                let li = rec.list.index();
                if pending.len() <= li {
                    pending.resize_with(li + 1, Default::default);
                }
                if let Some(q) = pending.get_mut(li) {
                    q.push_back((id, rec));
                }
            }
        }
        let mut last: Option<ListId> = None;
        for (id, rec) in old.records() {
            if last.is_some_and(|l| l != rec.list) {
                self.flush_added(added, side_added.as_ref(), &mut pending, last, None)?;
            }
            last = Some(rec.list);
            if !keep(rec.list) {
                continue;
            }
            let Some(now) = line(rec.list, rec.line) else { continue };
            let order = (is_local(&rec), now);
            self.flush_added(added, side_added.as_ref(), &mut pending, Some(rec.list), Some(order))?;
            self.carry_one(old, &side_old, id, RuleRec { line: now, ..rec })?;
        }
        self.flush_added(added, side_added.as_ref(), &mut pending, last, None)?;
        for li in 0..pending.len() {
            self.flush_added(added, side_added.as_ref(), &mut pending, ListId::from_index(li), None)?;
        }
        Ok(())
    }

    /// Pushes the pending added rules of `list` that come before `until`
    /// (all of them when `None`).
    fn flush_added(
        &mut self,
        added: Option<&Index>,
        side: Option<&Side<'_>>,
        pending: &mut [std::collections::VecDeque<(RuleId, RuleRec)>],
        list: Option<ListId>,
        until: Option<(bool, u32)>,
    ) -> Result<(), BuildError> {
        let (Some(added), Some(side), Some(list)) = (added, side, list) else { return Ok(()) };
        let Some(q) = pending.get_mut(list.index()) else { return Ok(()) };
        while let Some(&(id, rec)) = q.front() {
            if until.is_some_and(|u| (is_local(&rec), rec.line) >= u) {
                break;
            }
            q.pop_front();
            self.carry_one(added, side, id, rec)?;
        }
        Ok(())
    }

    /// Copies rule `id` of `old` with header `rec` (its line possibly renumbered).
    fn carry_one(&mut self, old: &Index, side: &Side<'_>, id: RuleId, rec: RuleRec) -> Result<(), BuildError> {
        let text = std::str::from_utf8(text_at(&old.store, id)).unwrap_or("");
        let decision = old.decision_raw(id);
        let local = old.locals.get(&id).cloned();
        let extra = if rec.bits & SCOPE_MASK == SCOPE_OTHER {
            match (rec.bits >> ACT_SHIFT) & 0b111 {
                KIND_REGEX => side.regex_of.get(&id).map(|p| Extra::Regex((*p).to_owned())),
                KIND_IP => side.ip_of.get(&id).map(|n| Extra::Ip(*n, old.ip_override.get(&id).copied().unwrap_or(RuleOverride::None))),
                _ => None,
            }
        } else {
            None
        };
        self.push(text, rec.line, rec.list, rec.bits, decision, local, extra)
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        text: &str,
        line: u32,
        list: ListId,
        bits: u8,
        decision: Option<&str>,
        local: Option<Vec<LocalData>>,
        extra: Option<Extra>,
    ) -> Result<(), BuildError> {
        let idx = &mut self.idx;
        let text = if text.len() > 255 { "" } else { text };
        // rule ids stay below 2^31: the top bit tags rules of a delta
        // (`policy/delta.rs` `DELTA_BIT`)
        let id = u32::try_from(idx.store.len()).ok().filter(|&i| i < 1 << 31).ok_or(BuildError::ArenaFull)?;
        if idx.store.len() + HDR + text.len() >= 1 << 31 {
            return Err(BuildError::ArenaFull);
        }
        RuleRec { line, next: NONE, list, text_len: u8::try_from(text.len()).unwrap_or(0), bits }.write(&mut idx.store);
        idx.store.extend_from_slice(text.as_bytes());
        idx.count += 1;
        let li = list.index();
        if idx.per_list.len() <= li {
            idx.per_list.resize(li + 1, 0);
        }
        if let Some(c) = idx.per_list.get_mut(li) {
            *c += 1;
        }
        if bits & ALLOW != 0 {
            idx.has_allow = true;
        } else {
            idx.first_block_list = idx.first_block_list.min(list);
        }
        if let Some(d) = decision {
            let did = match self.decision_ids.get(d) {
                Some(&x) => x,
                None => {
                    let next_id = u32::try_from(idx.decisions.len()).unwrap_or(u32::MAX);
                    idx.decisions.push(Box::from(d));
                    self.decision_ids.insert(Box::from(d), next_id);
                    next_id
                }
            };
            idx.decision_of.insert(id, did);
        }
        if let Some(l) = local {
            idx.locals.insert(id, l);
        }
        match extra {
            Some(Extra::Regex(r)) => self.regexes.push((r, id)),
            Some(Extra::Ip(n, ov)) => {
                idx.ips.push((n, id));
                if ov != RuleOverride::None {
                    idx.ip_override.insert(id, ov);
                }
            }
            None => {}
        }
        if bits & SCOPE_MASK == SCOPE_OTHER {
            if idx.other_lists.len() <= li {
                idx.other_lists.resize(li + 1, false);
            }
            if let Some(o) = idx.other_lists.get_mut(li) {
                *o = true;
            }
            if (bits >> ACT_SHIFT) & 0b111 == KIND_KEYWORD {
                self.keywords.push((text.to_owned(), id));
            }
            return Ok(());
        }
        let h = idx.hasher.hash_one(text.as_bytes());
        self.pending.push((h, id));
        if self.pending.len() >= PENDING {
            self.flush();
        }
        Ok(())
    }

    /// Puts the pending name rules in the table, in the order they came.
    ///
    /// Each insert's probe misses the cache at a random slot; touching the
    /// start slots of the whole group first lets those misses overlap
    /// instead of stalling one by one (the table of a million rules is
    /// 15 MB): a 1M-rule list loaded in 0.6 s with hashbrown's small control
    /// array, 0.8 s with one insert at a time here.
    fn flush(&mut self) {
        let idx = &mut self.idx;
        for &(h, _) in &self.pending {
            idx.table.touch(h);
        }
        for (h, id) in self.pending.drain(..) {
            let store = &idx.store;
            let found = idx.table.find(h, |r| text_at(store, r) == text_at(store, id));
            match found {
                Some(head) => {
                    let tail = self.tails.get(&head).copied().unwrap_or(head);
                    let at = tail as usize + 8;
                    if let Some(next) = idx.store.get_mut(at..at + 4) {
                        next.copy_from_slice(&id.to_le_bytes());
                    }
                    self.tails.insert(head, id);
                }
                None => {
                    let hasher = idx.hasher;
                    let store = &idx.store;
                    idx.table.insert(h, id, |r| hasher.hash_one(text_at(store, r)));
                }
            }
        }
    }

    /// Builds the keyword automaton and regex set; shrinks buffers.
    pub fn finish(mut self) -> Result<Index, BuildError> {
        self.flush();
        if !self.keywords.is_empty() {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(self.keywords.iter().map(|(k, _)| k.as_str()))?;
            self.idx.keywords = Some((ac, self.keywords.into_iter().map(|(_, id)| id).collect()));
        }
        if !self.regexes.is_empty() {
            let set = regex::RegexSetBuilder::new(self.regexes.iter().map(|(r, _)| r.as_str()))
                .size_limit(16 << 20)
                .dfa_size_limit(16 << 20)
                .build()?;
            self.idx.regexes = Some((set, self.regexes));
        }
        if !self.idx.ips.is_empty() {
            let store = &self.idx.store;
            let rules: Vec<IpRule> = self
                .idx
                .ips
                .iter()
                .filter_map(|&(net, rule)| {
                    RuleRec::at(store, rule).map(|r| IpRule { net, rule, list: r.list, allow: r.bits & ALLOW != 0 })
                })
                .collect();
            self.idx.ip_table = IpTable::build(&rules);
        }
        // trim only real waste: shrinking copies the store (30 MB at 1M rules)
        if self.idx.store.capacity() - self.idx.store.len() > self.idx.store.len() / 8 {
            self.idx.store.shrink_to_fit();
        }
        let (hasher, store) = (self.idx.hasher, &self.idx.store);
        self.idx.table.fit(|r| hasher.hash_one(text_at(store, r)));
        Ok(self.idx)
    }
}

/// A rule's own action as an override and its local data; an allow action
/// sets the [`ALLOW`] bit in `bits`.
fn rule_action(action: &RuleAction, bits: &mut u8) -> (RuleOverride, Option<Vec<LocalData>>) {
    match action {
        RuleAction::List => (RuleOverride::None, None),
        RuleAction::Allow => {
            *bits |= ALLOW;
            (RuleOverride::None, None)
        }
        RuleAction::Nxdomain => (RuleOverride::Nxdomain, None),
        RuleAction::Nodata => (RuleOverride::Nodata, None),
        RuleAction::Drop => (RuleOverride::Drop, None),
        RuleAction::Local(data) => (RuleOverride::Local, Some(data.clone())),
    }
}

enum Extra {
    Regex(String),
    Ip(ipnet::IpNet, RuleOverride),
}

/// What [`Builder::carry_one`] looks up by rule in an index being copied.
struct Side<'a> {
    regex_of: std::collections::HashMap<RuleId, &'a str>,
    ip_of: std::collections::HashMap<RuleId, ipnet::IpNet>,
}

impl<'a> Side<'a> {
    fn of(old: &'a Index) -> Self {
        let regex_of = old
            .regexes
            .as_ref()
            .map(|(_, v)| v.iter().map(|(p, id)| (*id, p.as_str())).collect())
            .unwrap_or_default();
        let ip_of = old.ips.iter().map(|(n, id)| (*id, *n)).collect();
        Side { regex_of, ip_of }
    }
}

/// Whether a record is an RPZ local-data rule (the RPZ parsers add those
/// after every other rule of the zone, so they come last in a name's chain).
fn is_local(rec: &RuleRec) -> bool {
    rec.bits & SCOPE_MASK != SCOPE_OTHER && RuleOverride::from_bits((rec.bits >> ACT_SHIFT) & 0b111) == RuleOverride::Local
}

impl Index {
    /// Compiles the entries of all lists (in config order) into one index.
    ///
    /// Cost: O(total entries + total pattern bytes); one pass, no sorting.
    /// Meant to run on a blocking thread, off the serving path.
    pub fn build(lists: &[ListInput<'_>]) -> Result<Self, BuildError> {
        let total: usize = lists.iter().map(|l| l.entries.len()).sum();
        let mut b = Builder::with_capacity(total, total.saturating_mul(20));
        for (pos, l) in lists.iter().enumerate() {
            let list = ListId::from_index(pos).ok_or(BuildError::TooManyLists)?;
            b.add_list(list, l.allow, l.entries)?;
        }
        b.finish()
    }

    /// Rules of `list`.
    pub fn list_rules(&self, list: ListId) -> usize {
        self.per_list.get(list.index()).copied().unwrap_or(0)
    }

    /// Bytes of rule records (a size hint for rebuilding).
    pub fn arena_len(&self) -> usize {
        self.store.len()
    }

    /// Every rule with its record header, in the order they were added.
    fn records(&self) -> impl Iterator<Item = (RuleId, RuleRec)> + '_ {
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let id = u32::try_from(at).ok()?;
            let rec = RuleRec::at(&self.store, id)?;
            at += HDR + usize::from(rec.text_len);
            Some((id, rec))
        })
    }

    /// An index with no rules: everything passes.
    pub fn empty() -> Self {
        Self::with_capacity(0, 0)
    }

    fn with_capacity(total: usize, arena: usize) -> Self {
        let hasher = foldhash::fast::FixedState::with_seed(0x9e37_79b9_7f4a_7c15);
        Index {
            hasher,
            store: Vec::with_capacity(arena.saturating_add(total.saturating_mul(HDR))),
            count: 0,
            table: Table::with_capacity(total),
            keywords: None,
            regexes: None,
            ips: Vec::new(),
            ip_table: IpTable::default(),
            ip_override: hashbrown::HashMap::with_hasher(hasher),
            decisions: Vec::new(),
            decision_of: hashbrown::HashMap::with_hasher(hasher),
            locals: hashbrown::HashMap::with_hasher(hasher),
            per_list: Vec::new(),
            has_allow: false,
            first_block_list: NO_LIST,
            other_lists: Vec::new(),
        }
    }

    /// Finds the deciding allow and block rules for `name`.
    ///
    /// Cost: one foldhash + one table probe per label of `name` (a probe
    /// compares at most a few arena strings), a chain walk per matching
    /// name, then one aho-corasick scan when keyword rules exist and one
    /// regex-set scan when regex rules exist. No allocation without regex
    /// rules (the regex set allocates its match set). Measured by
    /// `policy_check_*` (warm), `policy_check_cold_*` and `keyword_1000` in
    /// `benches/hot_path.rs`.
    ///
    /// Block precedence: the earliest list in config order; within a list the
    /// most specific name (exact beats wildcard within one RPZ zone).
    pub fn check(&self, name: &QName) -> (Option<Hit>, Option<Hit>) {
        self.check_name(name.as_name())
    }

    /// The hash [`Index::check_name`] probes first for `name` (the name
    /// itself), for [`Index::prefetch_slot`] and [`Index::prefetch_rule`].
    /// Cost: one foldhash of the name.
    #[inline]
    pub fn name_hash(&self, name: NameRef<'_>) -> u64 {
        self.hasher.hash_one(name.as_str().as_bytes())
    }

    /// Starts loading the table slot of hash `h` ([`Index::name_hash`]).
    /// The fast path calls it for every datagram of a batch, in a loop of
    /// its own, before deciding any of them, so that the batch's cache
    /// misses (a slot is a random line of a 13 MB table at a million rules)
    /// overlap instead of stalling one after another. Cost: one load
    /// nothing waits for.
    #[inline]
    pub fn prefetch_slot(&self, h: u64) {
        self.table.touch(h);
    }

    /// After [`Index::prefetch_slot`] of `h`: starts loading the record the slot
    /// points to when its tag matches (the second of a hit's two misses).
    /// Cost: one slot read (cached by then), one load nothing waits for.
    #[inline]
    pub fn prefetch_rule(&self, h: u64) {
        if let Some(id) = self.table.first_tagged(h) {
            let at = id as usize;
            // the header's length byte and a byte 32 into the name: every
            // cache line of a record whose name is up to 33 bytes (the
            // harness list's names average 29)
            std::hint::black_box(self.store.get(at + 1).copied());
            std::hint::black_box(self.store.get(at + HDR + 32).copied());
        }
    }

    /// [`Index::check`] for a borrowed name (same cost, no allocation).
    pub fn check_name(&self, name: NameRef<'_>) -> (Option<Hit>, Option<Hit>) {
        self.walk::<true>(name, |_, _| true)
    }

    /// [`Index::check_name`] over the rules for which `keep(list, line)`
    /// holds (the rules a delta has not removed), without the early stop
    /// (a delta's rules may still beat what this walk found). Cost: that of
    /// [`Index::check_name`] with every label probed, plus `keep` for each
    /// rule that matches.
    pub fn check_filtered(&self, name: NameRef<'_>, keep: impl Fn(ListId, u32) -> bool) -> (Option<Hit>, Option<Hit>) {
        self.walk::<false>(name, keep)
    }

    /// Rank of a rule among the candidates of one list (see
    /// `policy/delta.rs`): name rules (0) before keywords (1) before regex
    /// rules (2), then RPZ local data after the other name rules of a name.
    pub fn order_of(&self, id: RuleId) -> (u8, bool) {
        match RuleRec::at(&self.store, id) {
            Some(r) if r.bits & SCOPE_MASK == SCOPE_OTHER => match (r.bits >> ACT_SHIFT) & 0b111 {
                KIND_KEYWORD => (1, false),
                KIND_REGEX => (2, false),
                _ => (3, false),
            },
            Some(r) => (0, is_local(&r)),
            None => (4, false),
        }
    }

    /// Whether this index holds rules other than name rules for `list`
    /// (keywords, regexes, addresses): such lists are never updated by delta.
    pub fn has_other_rules(&self, list: ListId) -> bool {
        self.other_lists.get(list.index()).copied().unwrap_or(false)
    }

    #[inline(always)]
    fn walk<const EARLY: bool>(&self, name: NameRef<'_>, keep: impl Fn(ListId, u32) -> bool) -> (Option<Hit>, Option<Hit>) {
        let mut allow: Option<Hit> = None;
        let mut block: Option<Hit> = None;
        for (depth, suffix) in name.suffixes().enumerate() {
            let depth = u8::try_from(depth).unwrap_or(u8::MAX);
            let h = self.hasher.hash_one(suffix.as_bytes());
            let Some(head) = self.table.find(h, |r| text_at(&self.store, r) == suffix.as_bytes()) else {
                continue;
            };
            let mut cur = head;
            while let Some(rec) = RuleRec::at(&self.store, cur) {
                let applies = match rec.bits & SCOPE_MASK {
                    0 => true,
                    1 => depth == 0,
                    2 => depth > 0,
                    _ => false,
                };
                if applies && keep(rec.list, rec.line) {
                    let hit = Hit { rule: cur, list: rec.list, depth };
                    consider(&mut allow, &mut block, rec.bits, hit);
                }
                cur = rec.next;
            }
            // nothing later in the walk (or in keywords/regexes) can beat this
            if EARLY && !self.has_allow && block.is_some_and(|b| b.list == self.first_block_list) {
                return (None, block);
            }
        }
        if let Some((ac, ids)) = &self.keywords {
            if let Ok(Some(m)) = ac.try_find(name.as_str()) {
                if let Some(&id) = ids.get(m.pattern().as_usize()) {
                    if let Some(rec) = RuleRec::at(&self.store, id).filter(|r| keep(r.list, r.line)) {
                        consider(&mut allow, &mut block, rec.bits, Hit { rule: id, list: rec.list, depth: 0 });
                    }
                }
            }
        }
        if let Some((set, ids)) = &self.regexes {
            for m in set.matches(name.as_str()).iter() {
                if let Some(&(_, id)) = ids.get(m) {
                    if let Some(rec) = RuleRec::at(&self.store, id).filter(|r| keep(r.list, r.line)) {
                        consider(&mut allow, &mut block, rec.bits, Hit { rule: id, list: rec.list, depth: 0 });
                    }
                }
            }
        }
        (allow, block)
    }

    /// The allow and block rules deciding answer address `ip` (answer-address
    /// rules: RPZ `rpz-ip` triggers, and listed addresses of lists with
    /// `ip_rules = "answer"`): the earliest list, then the most specific
    /// prefix, then the first rule.
    ///
    /// Cost: one binary search over the flattened ranges ([`IpTable`]:
    /// ≈ 18 comparisons at 100k prefixes); no allocation
    /// (`answer_ip_100k/check_ip` in `benches/hot_path.rs`).
    #[inline]
    pub fn check_ip(&self, ip: std::net::IpAddr) -> (Option<Hit>, Option<Hit>) {
        let d = self.ip_table.lookup(ip);
        (d.allow, d.block)
    }

    /// Whether this index has any IP rules (so answer addresses need checking).
    pub fn has_ip_rules(&self) -> bool {
        !self.ips.is_empty()
    }

    /// The pattern text of a rule (the normalised name for name rules).
    pub fn rule_text(&self, id: RuleId) -> &str {
        std::str::from_utf8(text_at(&self.store, id)).unwrap_or("")
    }

    /// The list of a rule.
    pub fn rule_list(&self, id: RuleId) -> Option<ListId> {
        RuleRec::at(&self.store, id).map(|r| r.list)
    }

    /// Source line of a rule.
    pub fn rule_line(&self, id: RuleId) -> u32 {
        RuleRec::at(&self.store, id).map(|r| r.line).unwrap_or(0)
    }

    /// The rule's own action, if it has one.
    pub fn rule_override(&self, id: RuleId) -> RuleOverride {
        match RuleRec::at(&self.store, id) {
            Some(r) if r.bits & SCOPE_MASK != SCOPE_OTHER => RuleOverride::from_bits((r.bits >> ACT_SHIFT) & 0b111),
            Some(r) if (r.bits >> ACT_SHIFT) & 0b111 == KIND_IP => {
                self.ip_override.get(&id).copied().unwrap_or(RuleOverride::None)
            }
            _ => RuleOverride::None,
        }
    }

    /// The rule's registry decision, if any.
    pub fn decision(&self, id: RuleId) -> Option<&str> {
        self.decision_raw(id).map(|d| crate::rules::decision_parts(d).0)
    }

    /// The date of the rule's registry decision, when its row had one.
    pub fn decision_date(&self, id: RuleId) -> Option<&str> {
        self.decision_raw(id).and_then(|d| crate::rules::decision_parts(d).1)
    }

    /// The decision as the rule carried it (text and date).
    fn decision_raw(&self, id: RuleId) -> Option<&str> {
        self.decision_of.get(&id).and_then(|d| self.decisions.get(*d as usize)).map(|b| &**b)
    }

    /// RPZ local data of a rule.
    pub fn local_data(&self, id: RuleId) -> Option<&[LocalData]> {
        self.locals.get(&id).map(Vec::as_slice)
    }

    /// Number of rules of every kind.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Heap bytes held by the index (approximate: exact for the arrays, the
    /// table's slot array, and the automaton's own report).
    pub fn memory_bytes(&self) -> usize {
        self.store.capacity()
            + self.table.bytes()
            + self.keywords.as_ref().map(|(ac, ids)| ac.memory_usage() + ids.len() * 4).unwrap_or(0)
            + self.ips.capacity() * std::mem::size_of::<(ipnet::IpNet, RuleId)>()
            + self.ip_table.memory_bytes()
            + self.decision_of.capacity() * 12
            + self.decisions.iter().map(|d| d.len() + 16).sum::<usize>()
    }
}

fn consider(allow: &mut Option<Hit>, block: &mut Option<Hit>, bits: u8, hit: Hit) {
    let slot = if bits & ALLOW != 0 { allow } else { block };
    match slot {
        None => *slot = Some(hit),
        Some(cur) if hit.list < cur.list => *slot = Some(hit),
        Some(_) => {}
    }
}

/// Whether a rule carries adblock `$important`.
pub fn is_important(index: &Index, id: RuleId) -> bool {
    RuleRec::at(&index.store, id).is_some_and(|r| r.bits & IMPORTANT != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L0: ListId = ListId::from_raw(0);
    const L1: ListId = ListId::from_raw(1);
    const L2: ListId = ListId::from_raw(2);

    fn name_rule(name: &str, scope: Scope, line: u32) -> Entry {
        Entry {
            line,
            rule: Rule::Name { name: name.into(), scope, action: RuleAction::List, important: false, decision: None },
        }
    }

    fn q(s: &str) -> QName {
        QName::parse(s).unwrap()
    }

    /// The table against a model: many random names, built with a small
    /// capacity hint so the table grows several times and is refitted, then
    /// every present name found with its line and every absent one not.
    #[test]
    fn table_finds_every_name_and_no_other() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let names: Vec<String> = (0..20_000).map(|i| format!("n{:x}-{i}.example{}.com", rand() % 100_000, i % 7)).collect();
        let entries: Vec<Entry> = names.iter().enumerate().map(|(i, n)| name_rule(n, Scope::Exact, i as u32 + 1)).collect();
        let mut b = Builder::with_capacity(10, 10);
        b.add_list(L0, false, &entries).unwrap();
        let idx = b.finish().unwrap();
        assert_eq!(idx.len(), names.len());
        assert!(idx.table.len as f64 <= idx.table.slots.len() as f64 * LOAD_BUILT + 1.0);
        for (i, n) in names.iter().enumerate() {
            let (_, block) = idx.check(&q(n));
            let hit = block.unwrap_or_else(|| panic!("{n} not found"));
            assert_eq!(idx.rule_line(hit.rule), i as u32 + 1);
            assert_eq!(idx.rule_text(hit.rule), n);
        }
        for i in 0..20_000 {
            let n = format!("absent{i}.example.com");
            assert_eq!(idx.check(&q(&n)), (None, None), "{n}");
        }
    }

    /// Rules for one name in several lists chain in list order; the earliest
    /// list decides, scopes filter by depth, and a carried index answers the same.
    #[test]
    fn chains_scopes_and_carry() {
        let mut b = Builder::with_capacity(4, 64);
        b.add_list(L0, false, &[name_rule("below.test", Scope::Below, 1), name_rule("both.test", Scope::Exact, 2)]).unwrap();
        b.add_list(L1, false, &[name_rule("both.test", Scope::Subtree, 7)]).unwrap();
        b.add_list(L2, true, &[name_rule("both.test", Scope::Subtree, 9)]).unwrap();
        let idx = b.finish().unwrap();
        let check = |idx: &Index| {
            let (allow, block) = idx.check(&q("both.test"));
            let block = block.unwrap();
            assert_eq!((block.list, idx.rule_line(block.rule)), (L0, 2));
            assert_eq!(allow.map(|a| a.list), Some(L2));
            let (_, block) = idx.check(&q("x.both.test"));
            assert_eq!(block.map(|b| (b.list, b.depth)), Some((L1, 1)), "exact rule of list 0 must not match below");
            assert_eq!(idx.check(&q("below.test")).1, None);
            assert_eq!(idx.check(&q("a.below.test")).1.map(|b| b.list), Some(L0));
        };
        check(&idx);
        let mut c = Builder::with_capacity(1, 1);
        c.carry(&idx, |l| l != L1).unwrap();
        let carried = c.finish().unwrap();
        assert_eq!(carried.len(), 3);
        assert_eq!(carried.list_rules(L1), 0);
        assert_eq!(carried.check(&q("x.both.test")).1, None);
        let mut d = Builder::with_capacity(1, 1);
        d.carry(&idx, |_| true).unwrap();
        check(&d.finish().unwrap());
    }
}
