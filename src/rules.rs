//! The rule vocabulary: which list (`ListId`), list formats, what a list
//! does (`kind`, `action`) and the rules a parsed list is made of. Pure data, shared by the layers
//! that read lists (`lists`), compile and query them (`policy`), configure
//! them (`config`) and answer with them (`server`).
//!
//! A leaf: imports nothing from the crate, so none of those layers has to
//! import another to agree on what a rule is.

use std::net::IpAddr;

/// One configured list: its position in `[[lists]]`. Config order is also
/// precedence (the earliest list decides), so ids compare in that order.
/// The one way a list is named inside qalqan; its name (`ListConfig::name`)
/// is the operator's key, turned into an id once where a request names it.
///
/// Two bytes, `Copy`, no indirection: a compiled rule stores it and every
/// policy hit carries it. At most [`ListId::MAX_LISTS`] lists.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListId(u16);

impl ListId {
    /// How many lists a configuration may have (`u16::MAX` itself is kept
    /// free as a "no list" value for the matcher).
    pub const MAX_LISTS: usize = u16::MAX as usize;

    /// The list at `[[lists]]` position `i`; `None` past [`ListId::MAX_LISTS`].
    #[inline]
    pub fn from_index(i: usize) -> Option<Self> {
        u16::try_from(i).ok().filter(|&n| n != u16::MAX).map(ListId)
    }

    /// The id as stored in a rule record.
    #[inline]
    pub const fn from_raw(n: u16) -> Self {
        ListId(n)
    }

    /// The `[[lists]]` position, for indexing per-list tables.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The two bytes a rule record stores.
    #[inline]
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// The ids of `n` lists, in config order (at most [`ListId::MAX_LISTS`]).
    pub fn all(n: usize) -> impl Iterator<Item = ListId> {
        (0..n.min(Self::MAX_LISTS)).filter_map(Self::from_index)
    }
}

impl std::fmt::Display for ListId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "list #{}", self.0)
    }
}

/// The list formats qalqan reads (`format =` in `[[lists]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Domains,
    Hosts,
    Adblock,
    Rpz,
    Urls,
    RegistryCsv,
    /// The registry's `dump.xml` (see `lists/parse/registry_xml.rs`).
    RegistryXml,
    Keywords,
}

/// Whether a list blocks or allows (`kind =`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Block,
    Allow,
}

/// Whether a list is enforced or only watched (`mode =` in `[[lists]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListMode {
    /// The list decides answers (default).
    #[default]
    Enforce,
    /// The list is evaluated on every query, its hits counted
    /// (`qalqan_shadow_hits_total{list}`) and logged, never enforced.
    Shadow,
}

/// How a blocked name is answered (`action =` in `[[lists]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// NXDOMAIN with a synthesized SOA.
    Nxdomain,
    /// NOERROR with no answer (NODATA) and a synthesized SOA.
    Nodata,
    /// A/AAAA answered with the `[sinkhole]` addresses; NODATA for other types.
    Sinkhole,
    /// REFUSED.
    Refused,
    /// No answer at all.
    Drop,
}

/// What the guard does with a remote update that would newly block a
/// protected name (`[guard] on_hit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardOnHit {
    /// Hold the whole update: the version in force stays until confirmed.
    #[default]
    HoldAll,
    /// Apply the update without the lines whose rules would block a
    /// protected name; hold those until confirmed.
    ApplyRest,
}

impl GuardOnHit {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardOnHit::HoldAll => "hold_all",
            GuardOnHit::ApplyRest => "apply_rest",
        }
    }
}

/// Which names a name rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The name itself and every name below it (`domains`, `hosts`, `||name^`).
    Subtree,
    /// Only the name itself (`|name^`, RPZ `name CNAME .`, URL hosts with a path).
    Exact,
    /// Only names strictly below it (RPZ `*.name CNAME .`, `*.name` wildcards).
    Below,
}

/// A record of RPZ local data (`name A 192.0.2.1`, `name TXT "..."`, `name CNAME target.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalData {
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    /// Target name, normalised, no trailing dot.
    Cname(String),
    Txt(String),
}

/// What a rule asks for. `List` defers to the list's configured `kind`/`action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// Use the list's configured kind and action (most formats).
    List,
    /// An exception: never block this name (adblock `@@`, RPZ `rpz-passthru.`).
    Allow,
    /// RPZ `CNAME .`
    Nxdomain,
    /// RPZ `CNAME *.`
    Nodata,
    /// RPZ `CNAME rpz-drop.`
    Drop,
    /// RPZ local data: answer with these records.
    Local(Vec<LocalData>),
}

/// One rule parsed from one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number in the source.
    pub line: u32,
    pub rule: Rule,
}

/// Separates a registry decision's text from its date inside
/// [`Rule::Name`]'s `decision` (a control character no registry field
/// holds: the parsers trim and split on it never appearing).
pub const DECISION_DATE: char = '\u{1f}';

/// A rule's decision text split into `ID (AUTHORITY)` and its date.
pub fn decision_parts(raw: &str) -> (&str, Option<&str>) {
    match raw.split_once(DECISION_DATE) {
        Some((text, date)) => (text, Some(date)),
        None => (raw, None),
    }
}

/// The rule itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Name {
        /// Normalised: lowercase A-labels, no trailing dot (see [`crate::name::normalize`]).
        name: String,
        scope: Scope,
        action: RuleAction,
        /// adblock `$important`: beats `@@` exceptions.
        important: bool,
        /// Registry decision id / authority, when the source carries one
        /// (`ID (AUTHORITY)`, then [`DECISION_DATE`] and the date when the
        /// row has one: read it with [`decision_parts`]).
        decision: Option<String>,
    },
    /// A listed address: a registry IP column, an IP-literal URL host, an
    /// adblock `1.2.3.4^`. It records where a resource lived, not a decision
    /// to block every name that resolves there: an answer-IP rule only when
    /// the list says `ip_rules = "answer"`; otherwise counted and exported
    /// (`qalqan export --ips`) for a firewall.
    Ip { net: ipnet::IpNet, decision: Option<String> },
    /// An explicit answer-address trigger (RPZ `rpz-ip`): a response any of
    /// whose A/AAAA records lies in `net` gets `action` (most specific
    /// prefix wins). Enforced unless the list says `ip_rules = "ignore"`.
    AnswerIp { net: ipnet::IpNet, action: RuleAction },
    /// A substring matched against the whole query name.
    Keyword(String),
    /// A whole-name regular expression (adblock `/re/`).
    Regex(String),
}

/// Parses an IP address or CIDR prefix (`192.0.2.1`, `2001:db8::/32`): the
/// address syntax of [`Rule::Ip`] rules, also used for `allow_clients`.
pub fn parse_ip_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Some(net);
    }
    s.parse::<IpAddr>().ok().map(ipnet::IpNet::from)
}
