//! Names qalqan answers itself so that clients find, and keep, its
//! encrypted service:
//!
//! - DDR (RFC 9462, `[server] ddr = true`): `_dns.resolver.arpa` SVCB lists
//!   the configured encrypted endpoints (RFC 9461 keys: `alpn` dot / h2 /
//!   doq, `port`, address hints, `dohpath` "/dns-query{?dns}"), with the
//!   name the certificate covers as target; any other type, and any other
//!   name under `resolver.arpa`, gets NODATA.
//! - The canary domain (`[server] canary = "nxdomain"`):
//!   `use-application-dns.net` gets NXDOMAIN, which tells browsers not to
//!   switch on their own DoH by themselves.
//!
//! Both are answered on the hickory path ([`super::handler`]) after the
//! policy; the UDP fast path hands these names there on a cache miss
//! ([`Discovery::takes`]).

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::rdata::svcb::{Alpn, IpHint, SvcParamKey, SvcParamValue, Unknown, SVCB};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// TTL of the DDR records.
const DDR_TTL: u32 = 300;
const DDR_NAME: &str = "_dns.resolver.arpa";
const RESOLVER_ARPA: &str = "resolver.arpa";
const CANARY: &str = "use-application-dns.net";
/// RFC 9461 §5: the `dohpath` SvcParamKey.
const DOHPATH_KEY: u16 = 7;
/// The URI template of our DoH endpoint.
pub const DOHPATH: &str = "/dns-query{?dns}";

/// The encrypted endpoints to announce.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub dot: Vec<SocketAddr>,
    pub doh: Vec<SocketAddr>,
    pub doq: Vec<SocketAddr>,
}

/// What [`Discovery::answer`] says for a name.
pub enum Local {
    /// NOERROR with these records (maybe none: NODATA).
    Records(Vec<Record>),
    Nxdomain,
}

/// The DDR records and the canary switch.
#[derive(Debug, Default)]
pub struct Discovery {
    /// `Some` when DDR is on: the SVCB records of `_dns.resolver.arpa`.
    ddr: Option<Vec<Record>>,
    canary: bool,
}

impl Discovery {
    /// `target`: the name clients verify (in the certificate).
    pub fn new(ddr: Option<(&str, &Endpoints)>, canary: bool) -> Result<Self, String> {
        let ddr = match ddr {
            None => None,
            Some((target, eps)) => Some(svcb_records(target, eps)?),
        };
        Ok(Self { ddr, canary })
    }

    /// Whether `name` (lowercase, no trailing dot) is one this answers.
    /// Cost: at most two string comparisons.
    pub fn takes(&self, name: &str) -> bool {
        (self.canary && name == CANARY) || (self.ddr.is_some() && under_resolver_arpa(name))
    }

    /// The answer for `name`/`qtype`, or `None` (resolve it as usual).
    pub fn answer(&self, name: &str, qtype: RecordType) -> Option<Local> {
        if self.canary && name == CANARY {
            return Some(Local::Nxdomain);
        }
        let records = self.ddr.as_ref()?;
        if !under_resolver_arpa(name) {
            return None;
        }
        if name == DDR_NAME && qtype == RecordType::SVCB {
            return Some(Local::Records(records.clone()));
        }
        Some(Local::Records(Vec::new()))
    }
}

fn under_resolver_arpa(name: &str) -> bool {
    name == RESOLVER_ARPA || name.strip_suffix(RESOLVER_ARPA).is_some_and(|s| s.ends_with('.'))
}

/// One SVCB record per (protocol, port), priority in order dot, h2, doq.
fn svcb_records(target: &str, eps: &Endpoints) -> Result<Vec<Record>, String> {
    let owner = Name::from_ascii(format!("{DDR_NAME}.")).map_err(|e| e.to_string())?;
    let target = Name::from_ascii(format!("{}.", target.trim_end_matches('.'))).map_err(|e| format!("`{target}`: {e}"))?;
    let mut out = Vec::new();
    let mut priority = 1u16;
    for (alpn, addrs, dohpath) in [("dot", &eps.dot, false), ("h2", &eps.doh, true), ("doq", &eps.doq, false)] {
        let mut ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            let here = || addrs.iter().filter(|a| a.port() == port).map(SocketAddr::ip).filter(|ip| !ip.is_unspecified());
            let v4: Vec<A> = here().filter_map(|ip| if let IpAddr::V4(a) = ip { Some(A(a)) } else { None }).collect();
            let v6: Vec<AAAA> = here().filter_map(|ip| if let IpAddr::V6(a) = ip { Some(AAAA(a)) } else { None }).collect();
            // keys in ascending order (RFC 9460 §2.2)
            let mut params = vec![(SvcParamKey::Alpn, SvcParamValue::Alpn(Alpn(vec![alpn.to_owned()]))), (SvcParamKey::Port, SvcParamValue::Port(port))];
            if !v4.is_empty() {
                params.push((SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(v4))));
            }
            if !v6.is_empty() {
                params.push((SvcParamKey::Ipv6Hint, SvcParamValue::Ipv6Hint(IpHint(v6))));
            }
            if dohpath {
                params.push((SvcParamKey::from(DOHPATH_KEY), SvcParamValue::Unknown(Unknown(DOHPATH.as_bytes().to_vec()))));
            }
            out.push(Record::from_rdata(owner.clone(), DDR_TTL, RData::SVCB(SVCB::new(priority, target.clone(), params))));
            priority = priority.saturating_add(1);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let eps = Endpoints { dot: vec!["0.0.0.0:853".parse().unwrap()], doh: vec!["192.0.2.1:443".parse().unwrap()], doq: vec![] };
        let d = Discovery::new(Some(("dns.example.net", &eps)), true).unwrap();
        let cases: &[(&str, RecordType, Option<usize>, bool)] = &[
            // (name, type, Some(records) for NOERROR, nxdomain)
            ("_dns.resolver.arpa", RecordType::SVCB, Some(2), false),
            ("_dns.resolver.arpa", RecordType::A, Some(0), false),
            ("resolver.arpa", RecordType::SOA, Some(0), false),
            ("x._dns.resolver.arpa", RecordType::SVCB, Some(0), false),
            ("use-application-dns.net", RecordType::A, None, true),
            ("noresolver.arpa", RecordType::A, None, false),
            ("example.net", RecordType::A, None, false),
        ];
        for (name, qtype, records, nx) in cases {
            let got = d.answer(name, *qtype);
            match got {
                Some(Local::Records(r)) => assert_eq!(Some(r.len()), *records, "case `{name}`"),
                Some(Local::Nxdomain) => assert!(*nx, "case `{name}`"),
                None => assert!(records.is_none() && !nx, "case `{name}`"),
            }
            assert_eq!(d.takes(name), records.is_some() || *nx, "case `{name}`");
        }
        let off = Discovery::new(None, false).unwrap();
        assert!(off.answer("_dns.resolver.arpa", RecordType::SVCB).is_none());
        assert!(!off.takes("use-application-dns.net"));
    }
}
