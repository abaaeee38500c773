//! Per-subscriber policy (`[[views]]`): which lists apply to the queries
//! of which client prefixes. A client is matched once per query to the
//! view of its longest matching prefix (the sorted address ranges of
//! [`IpTable`], built once at start); the policy check then keeps the
//! rules of that view's lists only ([`ListMask`], a bit per list tested
//! when a rule matches), so a view needs no index of its own.
//!
//! Cost: without views, none (the caller holds `None`: one branch). With
//! views, one binary search over the prefixes' ranges per query (≈ log2 of
//! twice the prefix count comparisons, no allocation) and a walk of every
//! label of the name (no early stop) with a bit test per matching rule
//! (`views/*` in `benches/hot_path.rs`).

use std::net::IpAddr;

use super::iptable::{IpRule, IpTable};
use crate::rules::ListId;

/// The lists a view applies: one bit per [`ListId`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListMask {
    bits: Box<[u64]>,
}

impl ListMask {
    /// The mask with the lists of `ids`.
    pub fn of(ids: impl IntoIterator<Item = ListId>) -> Self {
        let mut bits: Vec<u64> = Vec::new();
        for id in ids {
            let (word, bit) = (id.index() / 64, id.index() % 64);
            if bits.len() <= word {
                bits.resize(word + 1, 0);
            }
            if let Some(w) = bits.get_mut(word) {
                *w |= 1 << bit;
            }
        }
        Self { bits: bits.into_boxed_slice() }
    }

    /// Whether the view applies `list`. Cost: one word load and a bit test.
    #[inline]
    pub fn contains(&self, list: ListId) -> bool {
        self.bits.get(list.index() / 64).is_some_and(|w| w & (1 << (list.index() % 64)) != 0)
    }
}

/// One view.
#[derive(Debug, Clone)]
pub struct View {
    pub name: String,
    pub lists: ListMask,
}

/// The views and the client prefixes that select them.
#[derive(Debug)]
pub struct Views {
    views: Vec<View>,
    table: IpTable,
}

impl Views {
    /// `views` with their prefixes (`(prefix, index into views)`): the
    /// longest prefix containing a client decides; between equal prefixes,
    /// the earlier view.
    pub fn new(views: Vec<View>, prefixes: &[(ipnet::IpNet, usize)]) -> Self {
        let rules: Vec<IpRule> = prefixes
            .iter()
            .filter_map(|(net, v)| {
                // one "list" for every prefix: the table then ranks by
                // prefix length, then by rule (the view's index)
                Some(IpRule { net: *net, rule: u32::try_from(*v).ok()?, list: ListId::from_raw(0), allow: false })
            })
            .collect();
        Self { views, table: IpTable::build(&rules) }
    }

    /// The view of `client`, `None` when no prefix contains it (the default:
    /// every list). IPv4-mapped IPv6 clients are matched as IPv4.
    /// Cost: one binary search over the ranges of the address family.
    #[inline]
    pub fn of(&self, client: IpAddr) -> Option<&View> {
        let ip = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        let hit = self.table.lookup(ip).block?;
        self.views.get(usize::try_from(hit.rule).ok()?)
    }

    /// The views, in config order.
    pub fn all(&self) -> &[View] {
        &self.views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u16) -> ListId {
        ListId::from_raw(i)
    }

    #[test]
    fn masks_hold_their_lists() {
        let m = ListMask::of([id(0), id(3), id(64), id(200)]);
        let got: Vec<u16> = (0..256).filter(|&i| m.contains(id(i))).collect();
        assert_eq!(got, [0, 3, 64, 200]);
        assert!(!ListMask::default().contains(id(0)));
    }

    #[test]
    fn longest_prefix_picks_the_view() {
        let view = |n: &str| View { name: n.to_owned(), lists: ListMask::default() };
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        let v = Views::new(
            vec![view("wide"), view("narrow"), view("v6"), view("same")],
            &[(net("10.0.0.0/8"), 0), (net("10.1.0.0/16"), 1), (net("2001:db8::/32"), 2), (net("10.0.0.0/8"), 3)],
        );
        let cases: &[(&str, Option<&str>)] = &[
            ("10.2.3.4", Some("wide")),
            ("10.1.2.3", Some("narrow")),
            ("::ffff:10.1.0.1", Some("narrow")),
            ("2001:db8::1", Some("v6")),
            ("11.0.0.1", None),
            ("2001:db9::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(v.of(ip.parse().unwrap()).map(|v| v.name.as_str()), *want, "{ip}");
        }
    }
}
