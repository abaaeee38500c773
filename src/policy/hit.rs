//! What a match is: the rule that matched ([`RuleId`]), its list
//! ([`ListId`]) and how deep below the rule's name the query was. Shared by
//! the name index (`index.rs`) and the answer-address table (`iptable.rs`).

use crate::rules::ListId;

/// A rule of an [`crate::policy::Index`] (the offset of its record in the
/// store); stable for the life of one compiled policy.
pub type RuleId = u32;

/// A matching rule and how it matched. Eight bytes, `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: RuleId,
    pub list: ListId,
    /// Labels between the query name and the rule's name (0 = the name itself).
    pub depth: u8,
}
