//! Rules changed since the base index was compiled, published with it: a
//! small index of the added rules and, per changed list, where each of the
//! base's lines is now (or that it was removed). An update of k rules
//! publishes a new delta next to the same base (O(k) plus the size of the
//! delta, which is kept under a share of the base: `[server]
//! delta_merge_share`); a build thread folds it back into a fresh base
//! (`Builder::carry_merged`) past that share.
//!
//! The verdict, the rule and its line are those of a fresh build of the
//! current versions: the candidates of the base (minus removed lines) and
//! of the delta are ranked the way a build orders them — earliest list,
//! then name rules before keywords before regexes, then the most specific
//! name, then RPZ local data after other rules of a name, then the earlier
//! line. The property test is `lists/publish.rs` `delta_property`.

use super::hit::{Hit, RuleId};
use super::index::Index;
use crate::name::NameRef;
use crate::rules::ListId;

/// Set in the [`RuleId`] of a hit on a rule of the delta (a base index
/// keeps its ids below it: `BuildError::ArenaFull`).
pub const DELTA_BIT: RuleId = 1 << 31;

/// Where the base lines of one changed list are in its current version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineMap {
    /// Runs of base lines kept, `(base_start, current_start, len)`, 1-based,
    /// sorted and disjoint; a base line in no run was removed.
    runs: Vec<(u32, u32, u32)>,
}

impl LineMap {
    /// From runs sorted by base line (both coordinates increasing).
    pub fn new(runs: Vec<(u32, u32, u32)>) -> Self {
        Self { runs }
    }

    /// The current line of base line `base`, `None` if it was removed.
    /// Line 0 (rules with no line) is kept as it is. Cost: one binary
    /// search over the runs (O(log k) for k edits).
    #[inline]
    pub fn current(&self, base: u32) -> Option<u32> {
        if base == 0 {
            return Some(0);
        }
        let i = self.runs.partition_point(|r| r.0 <= base);
        let &(b, c, n) = self.runs.get(i.checked_sub(1)?)?;
        (base - b < n).then(|| c + (base - b))
    }
}

/// The changes layered over a base index (see the module docs).
pub struct Delta {
    /// The added rules (name rules only), each list's in line order, with
    /// their lines in the current version.
    pub added: Index,
    /// Per list position: the line map of a changed list, `None` for a
    /// list the delta leaves as the base has it.
    maps: Vec<Option<LineMap>>,
    /// Base lines removed plus lines added, over every list (what
    /// `delta_merge_share` is compared with).
    pub size: usize,
}

impl Delta {
    pub fn new(added: Index, maps: Vec<Option<LineMap>>, size: usize) -> Self {
        Self { added, maps, size }
    }

    /// The line map of `list`, if the delta changed it.
    pub fn map(&self, list: ListId) -> Option<&LineMap> {
        self.maps.get(list.index()).and_then(Option::as_ref)
    }

    /// The current line of base rule line `line` of `list` (`None`: removed).
    #[inline]
    pub fn current_line(&self, list: ListId, line: u32) -> Option<u32> {
        match self.map(list) {
            Some(m) => m.current(line),
            None => Some(line),
        }
    }

    /// The deciding allow and block rules for `name` in `base` with this
    /// delta over it. Hits on delta rules carry [`DELTA_BIT`].
    ///
    /// Cost: the base walk without its early stop (one probe per label),
    /// one [`LineMap::current`] per base rule that matches a label, the
    /// same walk over the (small) delta index, and a rank comparison when
    /// both have a candidate — about one more hash probe per label than
    /// without a delta (`policy_check_1m/hit_with_delta` in
    /// `benches/hot_path.rs`).
    pub fn check_name(&self, base: &Index, name: NameRef<'_>) -> (Option<Hit>, Option<Hit>) {
        let (ba, bb) = base.check_filtered(name, |list, line| self.current_line(list, line).is_some());
        let (da, db) = if self.added.is_empty() { (None, None) } else { self.added.check_name(name) };
        let tag = |h: Hit| Hit { rule: h.rule | DELTA_BIT, ..h };
        (self.pick(base, ba, da.map(tag)), self.pick(base, bb, db.map(tag)))
    }

/// [`Delta::check_name`] over the rules of the lists for which `keep`
    /// holds (shadow lists apart from enforced ones).
    pub fn check_name_with(&self, base: &Index, name: NameRef<'_>, keep: impl Fn(ListId) -> bool) -> (Option<Hit>, Option<Hit>) {
        let (ba, bb) = base.check_filtered(name, |list, line| keep(list) && self.current_line(list, line).is_some());
        let (da, db) = if self.added.is_empty() { (None, None) } else { self.added.check_filtered(name, |list, _| keep(list)) };
        let tag = |h: Hit| Hit { rule: h.rule | DELTA_BIT, ..h };
        (self.pick(base, ba, da.map(tag)), self.pick(base, bb, db.map(tag)))
    }

        fn pick(&self, base: &Index, b: Option<Hit>, d: Option<Hit>) -> Option<Hit> {
        match (b, d) {
            (Some(b), Some(d)) => Some(if self.rank(base, d) < self.rank(base, b) { d } else { b }),
            (x, None) | (None, x) => x,
        }
    }

    /// The order of a build: list, kind, depth, local data last, line.
    fn rank(&self, base: &Index, h: Hit) -> (ListId, u8, u8, bool, u32) {
        let (index, id) = self.resolve(base, h.rule);
        let (kind, local) = index.order_of(id);
        (h.list, kind, h.depth, local, self.rule_line(base, h.rule))
    }

    /// The index a (possibly tagged) rule id belongs to, and its id there.
    #[inline]
    pub fn resolve<'a>(&'a self, base: &'a Index, id: RuleId) -> (&'a Index, RuleId) {
        if id & DELTA_BIT != 0 {
            (&self.added, id & !DELTA_BIT)
        } else {
            (base, id)
        }
    }

    /// The current line of a (possibly tagged) rule.
    pub fn rule_line(&self, base: &Index, id: RuleId) -> u32 {
        if id & DELTA_BIT != 0 {
            return self.added.rule_line(id & !DELTA_BIT);
        }
        let line = base.rule_line(id);
        // the lists of a rule: read through its hit; a rule of an unchanged list keeps its line
        match base.rule_list(id) {
            Some(list) => self.current_line(list, line).unwrap_or(line),
            None => line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_maps_keep_runs_and_drop_the_rest() {
        // base lines 1..=3 kept at 1..=3, 4..=5 removed, 6..=9 now at 5..=8
        let m = LineMap::new(vec![(1, 1, 3), (6, 5, 4)]);
        let got: Vec<Option<u32>> = (0..=10).map(|b| m.current(b)).collect();
        assert_eq!(got, [Some(0), Some(1), Some(2), Some(3), None, None, Some(5), Some(6), Some(7), Some(8), None]);
    }
}
