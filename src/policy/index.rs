//! The compiled matcher: every name rule of every list in one hash table over
//! one string arena, plus an aho-corasick automaton for keywords and a
//! `RegexSet` for adblock regex rules.
//!
//! Memory per name rule: 16 bytes of [`RuleRec`] + the name bytes in the arena
//! + 4 bytes per table slot (hashbrown keeps the load factor ≤ 7/8).

use std::hash::BuildHasher;

use aho_corasick::{AhoCorasick, MatchKind};
use hashbrown::HashTable;

use crate::lists::parse::{LocalData, Rule, RuleAction, Scope};
use crate::name::{NameRef, QName};

/// Index of a rule in [`Index`]; stable for the life of one compiled policy.
pub type RuleId = u32;

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

#[derive(Clone, Copy, Debug)]
struct RuleRec {
    /// Offset of the pattern text in the arena.
    text_off: u32,
    /// Source line (1-based).
    line: u32,
    /// Next rule with the same name (chain), or NONE.
    next: u32,
    /// Position of the list in config order.
    list: u16,
    text_len: u8,
    bits: u8,
}

/// A matching rule and how it matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: RuleId,
    pub list: u16,
    /// Labels between the query name and the rule's name (0 = the name itself).
    pub depth: u8,
}

/// Input to [`Index::build`]: the entries of one list.
pub struct ListInput<'a> {
    /// Whether the list as a whole is an allowlist (`kind = "allow"`).
    pub allow: bool,
    pub entries: &'a [crate::lists::parse::Entry],
}

/// Why a policy could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("too many rules (more than 4 G)")]
    TooManyRules,
    #[error("pattern arena over 4 GiB")]
    ArenaFull,
    #[error("keyword automaton: {0}")]
    Keywords(#[from] aho_corasick::BuildError),
    #[error("regex set: {0}")]
    Regex(#[from] regex::Error),
    #[error("too many lists (more than 65535)")]
    TooManyLists,
}

/// The compiled, immutable matcher.
pub struct Index {
    hasher: foldhash::fast::FixedState,
    rules: Vec<RuleRec>,
    arena: String,
    table: HashTable<u32>,
    keywords: Option<(AhoCorasick, Vec<RuleId>)>,
    /// Regex rules: the set, and (pattern, rule) in set order.
    regexes: Option<(regex::RegexSet, Vec<(String, RuleId)>)>,
    ips: Vec<(ipnet::IpNet, RuleId)>,
    decisions: Vec<Box<str>>,
    decision_of: hashbrown::HashMap<RuleId, u32, foldhash::fast::FixedState>,
    locals: hashbrown::HashMap<RuleId, Vec<LocalData>, foldhash::fast::FixedState>,
    /// Rules per list position.
    per_list: Vec<usize>,
    /// Whether any rule can override a block hit (allow rules, `$important`
    /// aside); without them the suffix walk stops at the first hit of the
    /// first block list.
    has_allow: bool,
    /// The earliest list position that has block rules.
    first_block_list: u16,
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
}

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
        }
    }

    /// Adds the parsed entries of the list at config position `list`.
    ///
    /// Cost: O(entries + name bytes), one hash insert per name rule.
    pub fn add_list(&mut self, list: u16, allow: bool, entries: &[crate::lists::parse::Entry]) -> Result<(), BuildError> {
        for entry in entries {
            self.add_entry(list, allow, entry)?;
        }
        Ok(())
    }

    /// Adds one parsed entry of the list at config position `list`.
    pub fn add_entry(&mut self, list: u16, allow: bool, entry: &crate::lists::parse::Entry) -> Result<(), BuildError> {
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
                    let (ov, local) = match action {
                        RuleAction::List => (RuleOverride::None, None),
                        RuleAction::Allow => {
                            bits |= ALLOW;
                            (RuleOverride::None, None)
                        }
                        RuleAction::Nxdomain => (RuleOverride::Nxdomain, None),
                        RuleAction::Nodata => (RuleOverride::Nodata, None),
                        RuleAction::Drop => (RuleOverride::Drop, None),
                        RuleAction::Local(data) => (RuleOverride::Local, Some(data.clone())),
                    };
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
                    self.push("", entry.line, list, bits, decision.as_deref(), None, Some(Extra::Ip(*net)))?;
                }
            }
        }
        Ok(())
    }

    /// Copies every rule of `old` whose list position satisfies `keep`,
    /// in their original order. Cost: O(kept rules), no parsing.
    pub fn carry(&mut self, old: &Index, keep: impl Fn(u16) -> bool) -> Result<(), BuildError> {
        let regex_of: std::collections::HashMap<RuleId, &str> = old
            .regexes
            .as_ref()
            .map(|(_, v)| v.iter().map(|(p, id)| (*id, p.as_str())).collect())
            .unwrap_or_default();
        let ip_of: std::collections::HashMap<RuleId, ipnet::IpNet> = old.ips.iter().map(|(n, id)| (*id, *n)).collect();
        for (id, rec) in old.rules.iter().enumerate() {
            if !keep(rec.list) {
                continue;
            }
            let id = u32::try_from(id).map_err(|_| BuildError::TooManyRules)?;
            let text = text_of(&old.arena, rec);
            let decision = old.decision(id);
            let local = old.locals.get(&id).cloned();
            let extra = if rec.bits & SCOPE_MASK == SCOPE_OTHER {
                match (rec.bits >> ACT_SHIFT) & 0b111 {
                    KIND_REGEX => regex_of.get(&id).map(|p| Extra::Regex((*p).to_owned())),
                    KIND_IP => ip_of.get(&id).map(|n| Extra::Ip(*n)),
                    _ => None,
                }
            } else {
                None
            };
            self.push(text, rec.line, rec.list, rec.bits, decision, local, extra)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        text: &str,
        line: u32,
        list: u16,
        bits: u8,
        decision: Option<&str>,
        local: Option<Vec<LocalData>>,
        extra: Option<Extra>,
    ) -> Result<(), BuildError> {
        let idx = &mut self.idx;
        let id = u32::try_from(idx.rules.len()).map_err(|_| BuildError::TooManyRules)?;
        if id == NONE {
            return Err(BuildError::TooManyRules);
        }
        let text = if text.len() > 255 { "" } else { text };
        let text_off = u32::try_from(idx.arena.len()).map_err(|_| BuildError::ArenaFull)?;
        idx.arena.push_str(text);
        idx.rules.push(RuleRec {
            text_off,
            line,
            next: NONE,
            list,
            text_len: u8::try_from(text.len()).unwrap_or(0),
            bits,
        });
        let li = usize::from(list);
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
            Some(Extra::Ip(n)) => idx.ips.push((n, id)),
            None => {}
        }
        if bits & SCOPE_MASK == SCOPE_OTHER {
            if (bits >> ACT_SHIFT) & 0b111 == KIND_KEYWORD {
                self.keywords.push((text.to_owned(), id));
            }
            return Ok(());
        }
        let h = idx.hasher.hash_one(text);
        let arena = &idx.arena;
        let rules = &idx.rules;
        let found = idx
            .table
            .find(h, |&r| rules.get(r as usize).map(|rr| text_of(arena, rr)) == Some(text))
            .copied();
        match found {
            Some(head) => {
                let tail = self.tails.get(&head).copied().unwrap_or(head);
                if let Some(t) = idx.rules.get_mut(tail as usize) {
                    t.next = id;
                }
                self.tails.insert(head, id);
            }
            None => {
                let hasher = idx.hasher;
                let arena = &idx.arena;
                let rules = &idx.rules;
                idx.table.insert_unique(h, id, |&r| {
                    hasher.hash_one(rules.get(r as usize).map(|rr| text_of(arena, rr)).unwrap_or(""))
                });
            }
        }
        Ok(())
    }

    /// Builds the keyword automaton and regex set; shrinks buffers.
    pub fn finish(mut self) -> Result<Index, BuildError> {
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
        self.idx.arena.shrink_to_fit();
        self.idx.rules.shrink_to_fit();
        Ok(self.idx)
    }
}

enum Extra {
    Regex(String),
    Ip(ipnet::IpNet),
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
            let pos = u16::try_from(pos).map_err(|_| BuildError::TooManyLists)?;
            b.add_list(pos, l.allow, l.entries)?;
        }
        b.finish()
    }

    /// Rules of the list at config position `list`.
    pub fn list_rules(&self, list: u16) -> usize {
        self.per_list.get(usize::from(list)).copied().unwrap_or(0)
    }

    /// Name-arena bytes (a size hint for rebuilding).
    pub fn arena_len(&self) -> usize {
        self.arena.len()
    }

    /// An index with no rules: everything passes.
    pub fn empty() -> Self {
        Self::with_capacity(0, 0)
    }

    fn with_capacity(total: usize, arena: usize) -> Self {
        let hasher = foldhash::fast::FixedState::with_seed(0x9e37_79b9_7f4a_7c15);
        Index {
            hasher,
            rules: Vec::with_capacity(total),
            arena: String::with_capacity(arena),
            table: HashTable::with_capacity(total),
            keywords: None,
            regexes: None,
            ips: Vec::new(),
            decisions: Vec::new(),
            decision_of: hashbrown::HashMap::with_hasher(hasher),
            locals: hashbrown::HashMap::with_hasher(hasher),
            per_list: Vec::new(),
            has_allow: false,
            first_block_list: u16::MAX,
        }
    }

    /// Finds the deciding allow and block rules for `name`.
    ///
    /// Cost: one foldhash + one table probe per label of `name` (a probe
    /// compares at most a few arena strings), a chain walk per matching
    /// name, then one aho-corasick scan when keyword rules exist and one
    /// regex-set scan when regex rules exist. No allocation without regex
    /// rules (the regex set allocates its match set).
    ///
    /// Block precedence: the earliest list in config order; within a list the
    /// most specific name (exact beats wildcard within one RPZ zone).
    pub fn check(&self, name: &QName) -> (Option<Hit>, Option<Hit>) {
        self.check_name(name.as_name())
    }

    /// [`Index::check`] for a borrowed name (same cost, no allocation).
    pub fn check_name(&self, name: NameRef<'_>) -> (Option<Hit>, Option<Hit>) {
        let mut allow: Option<Hit> = None;
        let mut block: Option<Hit> = None;
        for (depth, suffix) in name.suffixes().enumerate() {
            let depth = u8::try_from(depth).unwrap_or(u8::MAX);
            let h = self.hasher.hash_one(suffix);
            let Some(&head) = self.table.find(h, |&r| self.text(r) == suffix) else {
                continue;
            };
            let mut cur = head;
            while let Some(rec) = self.rules.get(cur as usize) {
                let applies = match rec.bits & SCOPE_MASK {
                    0 => true,
                    1 => depth == 0,
                    2 => depth > 0,
                    _ => false,
                };
                if applies {
                    let hit = Hit { rule: cur, list: rec.list, depth };
                    consider(&mut allow, &mut block, rec.bits, hit);
                }
                cur = rec.next;
            }
            // nothing later in the walk (or in keywords/regexes) can beat this
            if !self.has_allow && block.is_some_and(|b| b.list == self.first_block_list) {
                return (None, block);
            }
        }
        if let Some((ac, ids)) = &self.keywords {
            if let Ok(Some(m)) = ac.try_find(name.as_str()) {
                if let Some(&id) = ids.get(m.pattern().as_usize()) {
                    if let Some(rec) = self.rules.get(id as usize) {
                        consider(&mut allow, &mut block, rec.bits, Hit { rule: id, list: rec.list, depth: 0 });
                    }
                }
            }
        }
        if let Some((set, ids)) = &self.regexes {
            for m in set.matches(name.as_str()).iter() {
                if let Some(&(_, id)) = ids.get(m) {
                    if let Some(rec) = self.rules.get(id as usize) {
                        consider(&mut allow, &mut block, rec.bits, Hit { rule: id, list: rec.list, depth: 0 });
                    }
                }
            }
        }
        (allow, block)
    }

    /// Rules blocking or allowing answer address `ip` (from URL / registry IP rules).
    ///
    /// Cost: O(IP rules), linear; only called for answers of allowed names.
    pub fn check_ip(&self, ip: std::net::IpAddr) -> (Option<Hit>, Option<Hit>) {
        let mut allow = None;
        let mut block = None;
        for (net, id) in &self.ips {
            if net.contains(&ip) {
                if let Some(rec) = self.rules.get(*id as usize) {
                    consider(&mut allow, &mut block, rec.bits, Hit { rule: *id, list: rec.list, depth: 0 });
                }
            }
        }
        (allow, block)
    }

    /// Whether this index has any IP rules (so answer addresses need checking).
    pub fn has_ip_rules(&self) -> bool {
        !self.ips.is_empty()
    }

    fn text(&self, id: u32) -> &str {
        self.rules.get(id as usize).map(|r| text_of(&self.arena, r)).unwrap_or("")
    }

    /// The pattern text of a rule (the normalised name for name rules).
    pub fn rule_text(&self, id: RuleId) -> &str {
        self.text(id)
    }

    /// Source line of a rule.
    pub fn rule_line(&self, id: RuleId) -> u32 {
        self.rules.get(id as usize).map(|r| r.line).unwrap_or(0)
    }

    /// The rule's own action, if it has one.
    pub fn rule_override(&self, id: RuleId) -> RuleOverride {
        self.rules
            .get(id as usize)
            .filter(|r| r.bits & SCOPE_MASK != SCOPE_OTHER)
            .map(|r| RuleOverride::from_bits((r.bits >> ACT_SHIFT) & 0b111))
            .unwrap_or(RuleOverride::None)
    }

    /// The rule's registry decision, if any.
    pub fn decision(&self, id: RuleId) -> Option<&str> {
        self.decision_of.get(&id).and_then(|d| self.decisions.get(*d as usize)).map(|b| &**b)
    }

    /// RPZ local data of a rule.
    pub fn local_data(&self, id: RuleId) -> Option<&[LocalData]> {
        self.locals.get(&id).map(Vec::as_slice)
    }

    /// Number of rules of every kind.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Heap bytes held by the index (approximate: exact for the arrays, the
    /// table's slot array, and the automaton's own report).
    pub fn memory_bytes(&self) -> usize {
        self.rules.capacity() * std::mem::size_of::<RuleRec>()
            + self.arena.capacity()
            + self.table.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.keywords.as_ref().map(|(ac, ids)| ac.memory_usage() + ids.len() * 4).unwrap_or(0)
            + self.ips.capacity() * std::mem::size_of::<(ipnet::IpNet, RuleId)>()
            + self.decision_of.capacity() * 12
            + self.decisions.iter().map(|d| d.len() + 16).sum::<usize>()
    }
}

fn text_of<'a>(arena: &'a str, r: &RuleRec) -> &'a str {
    let start = r.text_off as usize;
    arena.get(start..start + usize::from(r.text_len)).unwrap_or("")
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
    index.rules.get(id as usize).is_some_and(|r| r.bits & IMPORTANT != 0)
}
