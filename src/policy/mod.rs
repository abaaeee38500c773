//! The compiled policy: which names are blocked, by which list and rule, and
//! what the answer is. Immutable once built; the serving path holds an
//! `Arc<Policy>` for the whole of one query.

pub mod explain;
pub mod delta;
pub mod hit;
pub mod index;
pub mod iptable;
pub mod sde;
pub mod views;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::name::QName;
use crate::rules::{Action, Format, ListId, ListKind, LocalData};
pub use delta::Delta;
pub use hit::{Hit, RuleId};
pub use index::{Index, RuleOverride};

/// What the policy knows about one configured list.
#[derive(Debug, Clone)]
pub struct ListInfo {
    pub name: String,
    /// The source as configured (path or URL), used in `FILE:LINE`.
    pub source: String,
    pub format: Format,
    pub kind: ListKind,
    pub action: Action,
    /// `mode = "shadow"`: its hits are counted and logged, never enforced.
    pub shadow: bool,
    /// RFC 8914 INFO-CODE for blocked answers.
    pub ede: u16,
    /// The structured EXTRA-TEXT of its blocks, prepared (`None`: `[sde]
    /// mode = "off"`, or an INFO-CODE the draft does not structure).
    pub sde: Option<Arc<sde::ListSde>>,
}

/// The sinkhole answer settings (`[sinkhole]`).
#[derive(Debug, Clone)]
pub struct Sinkhole {
    pub a: Ipv4Addr,
    pub aaaa: Ipv6Addr,
    pub ttl: u32,
}

/// What to do with a blocked query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<'p> {
    Nxdomain,
    Nodata,
    Sinkhole,
    Refused,
    Drop,
    /// RPZ local data.
    Local(&'p [LocalData]),
}

impl Answer<'_> {
    /// The action's name as configured (`local-data` for RPZ local data).
    pub fn as_str(&self) -> &'static str {
        match self {
            Answer::Nxdomain => "nxdomain",
            Answer::Nodata => "nodata",
            Answer::Sinkhole => "sinkhole",
            Answer::Refused => "refused",
            Answer::Drop => "drop",
            Answer::Local(_) => "local-data",
        }
    }
}

/// The decision for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No rule matched: resolve normally.
    Pass,
    /// An allow rule matched (it beats every block rule but `$important`).
    Allowed(Hit),
    /// A block rule matched.
    Blocked(Hit),
}

/// One compiled generation of every list: a base index, shared by the
/// generations that only add a delta to it, and the delta.
pub struct Policy {
    pub index: Arc<Index>,
    /// Changes since `index` was compiled (`None`: none; the check is then
    /// the base's alone, behind one predictable branch).
    pub delta: Option<Arc<Delta>>,
    /// Indexed by [`ListId::index`].
    pub lists: Vec<ListInfo>,
    /// Increments with every publish.
    pub generation: u64,
    /// Whether any list is a shadow list ([`any_shadow`] of `lists`).
    /// Without one, deciding a name costs one branch more than before.
    pub has_shadow: bool,
}

/// Whether any of `lists` is a shadow list (for [`Policy::has_shadow`]).
pub fn any_shadow(lists: &[ListInfo]) -> bool {
    lists.iter().any(|l| l.shadow)
}

impl Policy {
    /// Decides `name`.
    ///
    /// Cost: see [`Index::check`] (one hash probe per label, plus keyword and
    /// regex scans when such rules exist); no allocation on the name path.
    pub fn check(&self, name: &QName) -> Verdict {
        self.check_name(name.as_name())
    }

    /// [`Policy::check`] for a borrowed name (no allocation).
    ///
    /// With a delta (see [`Delta::check_name`]) the base walk visits every
    /// label and the delta index is walked too: about one more hash probe
    /// per label; without one, a single branch on `delta`.
    ///
    /// Shadow lists never decide: with any (`has_shadow`), the walk skips
    /// their rules (and so visits every label).
    #[inline]
    pub fn check_name(&self, name: crate::name::NameRef<'_>) -> Verdict {
        if self.has_shadow {
            return self.check_lists(name, false);
        }
        let (allow, block) = match &self.delta {
            None => self.index.check_name(name),
            Some(d) => d.check_name(&self.index, name),
        };
        resolve(self, allow, block)
    }

    fn is_shadow(&self, list: ListId) -> bool {
        self.lists.get(list.index()).is_some_and(|l| l.shadow)
    }

    /// The verdict of the enforced lists (`shadow = false`) or of the shadow
    /// lists alone (`shadow = true`).
    fn check_lists(&self, name: crate::name::NameRef<'_>, shadow: bool) -> Verdict {
        let keep = |list: ListId| self.is_shadow(list) == shadow;
        let (allow, block) = match &self.delta {
            None => self.index.check_filtered(name, |list, _| keep(list)),
            Some(d) => d.check_name_with(&self.index, name, keep),
        };
        resolve(self, allow, block)
    }

    /// The block hit of the shadow lists for `name`: what would block it if
    /// they were enforced (`None` without shadow lists: one branch).
    /// Cost: a second suffix walk, only when shadow lists exist.
    #[inline]
    pub fn shadow_hit(&self, name: crate::name::NameRef<'_>) -> Option<Hit> {
        if !self.has_shadow {
            return None;
        }
        match self.check_lists(name, true) {
            Verdict::Blocked(h) => Some(h),
            _ => None,
        }
    }

    /// The index a rule of a hit belongs to (base or delta) and its id there.
    #[inline]
    fn rule_index(&self, id: RuleId) -> (&Index, RuleId) {
        match &self.delta {
            Some(d) => d.resolve(&self.index, id),
            None => (&self.index, id),
        }
    }

    /// The pattern text of a rule (the normalised name for name rules).
    pub fn rule_text(&self, id: RuleId) -> &str {
        let (index, id) = self.rule_index(id);
        index.rule_text(id)
    }

    /// The line of a rule in the current version of its list.
    pub fn rule_line(&self, id: RuleId) -> u32 {
        match &self.delta {
            Some(d) => d.rule_line(&self.index, id),
            None => self.index.rule_line(id),
        }
    }

    /// The rule's registry decision, if any.
    pub fn decision(&self, id: RuleId) -> Option<&str> {
        let (index, id) = self.rule_index(id);
        index.decision(id)
    }

    /// The date of the rule's registry decision, when its row had one.
    pub fn decision_date(&self, id: RuleId) -> Option<&str> {
        let (index, id) = self.rule_index(id);
        index.decision_date(id)
    }


    /// Decides an answer address against IP rules (URL and registry IPs).
    pub fn check_ip(&self, ip: std::net::IpAddr) -> Verdict {
        if !self.index.has_ip_rules() {
            return Verdict::Pass;
        }
        let (allow, block) = self.index.check_ip(ip);
        // a list turned shadow at run time ([`ListInfo::shadow`]) keeps its
        // address rules in the index: they never block
        let block = if self.has_shadow { block.filter(|b| !self.is_shadow(b.list)) } else { block };
        resolve(self, allow, block)
    }

    /// The list a hit came from.
    pub fn list(&self, hit: &Hit) -> Option<&ListInfo> {
        self.list_info(hit.list)
    }

    /// What this policy knows of `list`.
    pub fn list_info(&self, list: ListId) -> Option<&ListInfo> {
        self.lists.get(list.index())
    }

    /// How to answer a blocked hit: the rule's own action (RPZ) or its list's.
    pub fn answer(&self, hit: &Hit) -> Answer<'_> {
        let (index, id) = self.rule_index(hit.rule);
        match index.rule_override(id) {
            RuleOverride::Nxdomain => Answer::Nxdomain,
            RuleOverride::Nodata => Answer::Nodata,
            RuleOverride::Drop => Answer::Drop,
            RuleOverride::Local => match index.local_data(id) {
                Some(data) => Answer::Local(data),
                None => Answer::Nxdomain,
            },
            RuleOverride::None => match self.list(hit).map(|l| l.action) {
                Some(Action::Nxdomain) | None => Answer::Nxdomain,
                Some(Action::Nodata) => Answer::Nodata,
                Some(Action::Sinkhole) => Answer::Sinkhole,
                Some(Action::Refused) => Answer::Refused,
                Some(Action::Drop) => Answer::Drop,
            },
        }
    }

    /// The EDE INFO-CODE and EXTRA-TEXT for a blocked hit (RFC 8914).
    pub fn ede(&self, hit: &Hit) -> (u16, String) {
        let (code, parts) = self.ede_parts(hit);
        (code, parts.concat())
    }

    /// [`Policy::ede`] with the EXTRA-TEXT in pieces to write out one after
    /// the other (the fast path writes them into the reply: no allocation).
    pub fn ede_parts(&self, hit: &Hit) -> (u16, [&str; 4]) {
        let list = self.list(hit);
        let code = list.map(|l| l.ede).unwrap_or(15);
        let name = list.map(|l| l.name.as_str()).unwrap_or("?");
        match self.decision(hit.rule) {
            Some(d) => (code, ["blocked by list ", name, "; decision ", d]),
            None => (code, ["blocked by list ", name, "", ""]),
        }
    }

    /// The structured EXTRA-TEXT (draft-ietf-dnsop-structured-dns-error)
    /// for a blocked hit, at most `max` bytes; `None` when its list has
    /// none or nothing fits. Cost: see [`sde::ListSde::render`].
    pub fn sde_text(&self, hit: &Hit, max: usize) -> Option<String> {
        let list = self.list(hit)?;
        let sde = list.sde.as_deref()?;
        let (_, plain) = self.ede_parts(hit);
        let decision = sde::Decision { text: self.decision(hit.rule), date: self.decision_date(hit.rule) };
        sde.render(&list.name, decision, &plain, self.rule_text(hit.rule), max)
    }

    /// [`Policy::check_name`] restricted to the lists of a view (`None`:
    /// every list, exactly [`Policy::check_name`]). With a view the walk
    /// keeps the rules of the view's lists only and visits every label, so
    /// a list the view leaves out never hides a later list's match, and
    /// the earliest of the view's lists still wins.
    /// Cost without a view: one branch; with one: [`Index::check_filtered`]
    /// plus a bit test per matching rule.
    #[inline]
    pub fn check_in(&self, name: crate::name::NameRef<'_>, view: Option<&views::ListMask>) -> Verdict {
        let Some(mask) = view else { return self.check_name(name) };
        let keep = |list: ListId| mask.contains(list) && !self.is_shadow(list);
        let (allow, block) = match &self.delta {
            None => self.index.check_filtered(name, |list, _| keep(list)),
            Some(d) => d.check_name_with(&self.index, name, keep),
        };
        resolve(self, allow, block)
    }

    /// [`Policy::check_ip`] restricted to a view's lists: a block by a list
    /// the view leaves out is dropped (the address table keeps one deciding
    /// hit per range, so such an address passes).
    pub fn check_ip_in(&self, ip: std::net::IpAddr, view: Option<&views::ListMask>) -> Verdict {
        match (self.check_ip(ip), view) {
            (Verdict::Blocked(h) | Verdict::Allowed(h), Some(m)) if !m.contains(h.list) => Verdict::Pass,
            (v, _) => v,
        }
    }

    /// An empty policy (no lists): everything passes.
    pub fn empty() -> Self {
        Self { index: Arc::new(Index::empty()), delta: None, lists: Vec::new(), generation: 0, has_shadow: false }
    }
}

fn resolve(policy: &Policy, allow: Option<Hit>, block: Option<Hit>) -> Verdict {
    match (allow, block) {
        (_, Some(b)) if { let (index, id) = policy.rule_index(b.rule); index::is_important(index, id) } => Verdict::Blocked(b),
        (Some(a), _) => Verdict::Allowed(a),
        (None, Some(b)) => Verdict::Blocked(b),
        (None, None) => Verdict::Pass,
    }
}
