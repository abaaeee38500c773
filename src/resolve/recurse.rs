//! Recursive mode (`[upstream] mode = "recursive"`, issue #21): cache misses
//! resolved from the root servers by hickory-resolver's recursor.
//!
//! A stop-gap, not the product: docs/recursion.md records what this
//! recursor gets wrong (valid signed wildcards called bogus, a lame server
//! or one dead server failing the whole resolution) and why recursion will be
//! rebuilt on hickory-proto. Until then this file is the only one that touches
//! `hickory_resolver::recursor`, and it hands the query path the same
//! [`Reply`] the forwarder does, so the cache, the policy and the CNAME checks
//! around it do not change when the engine does. No DNSSEC validation yet
//! (`DnssecPolicy::SecurityUnaware`): AD is never set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::recursor::{DnssecPolicy, Recursor, RecursorOptions};

use super::{Answer, Reply, ResolveError};

/// The IANA root servers (a–m, IPv4 then IPv6), as in
/// https://www.internic.net/domain/named.root of 2024-07 (Debian
/// `dns-root-data` 2024071801).
pub const IANA_ROOTS: [IpAddr; 26] = [
    IpAddr::V4(Ipv4Addr::new(198, 41, 0, 4)),
    IpAddr::V4(Ipv4Addr::new(170, 247, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(192, 33, 4, 12)),
    IpAddr::V4(Ipv4Addr::new(199, 7, 91, 13)),
    IpAddr::V4(Ipv4Addr::new(192, 203, 230, 10)),
    IpAddr::V4(Ipv4Addr::new(192, 5, 5, 241)),
    IpAddr::V4(Ipv4Addr::new(192, 112, 36, 4)),
    IpAddr::V4(Ipv4Addr::new(198, 97, 190, 53)),
    IpAddr::V4(Ipv4Addr::new(192, 36, 148, 17)),
    IpAddr::V4(Ipv4Addr::new(192, 58, 128, 30)),
    IpAddr::V4(Ipv4Addr::new(193, 0, 14, 129)),
    IpAddr::V4(Ipv4Addr::new(199, 7, 83, 42)),
    IpAddr::V4(Ipv4Addr::new(202, 12, 27, 33)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x503, 0xba3e, 0, 0, 0, 2, 0x30)),
    IpAddr::V6(Ipv6Addr::new(0x2801, 0x1b8, 0x10, 0, 0, 0, 0, 0xb)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x2, 0, 0, 0, 0, 0xc)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x2d, 0, 0, 0, 0, 0xd)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0xa8, 0, 0, 0, 0, 0xe)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x2f, 0, 0, 0, 0, 0xf)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x12, 0, 0, 0, 0, 0xd0d)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x1, 0, 0, 0, 0, 0x53)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x7fe, 0, 0, 0, 0, 0, 0x53)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x503, 0xc27, 0, 0, 0, 2, 0x30)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x7fd, 0, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x500, 0x9f, 0, 0, 0, 0, 0x42)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdc3, 0, 0, 0, 0, 0, 0x35)),
];

/// Why the recursor could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the recursor: {0}")]
pub struct RecurseError(String);

/// Resolves cache misses from the root. One per server; shared by every
/// query (`&self`), with the recursor's own NS and response caches inside.
pub struct Recurser {
    recursor: Recursor<TokioRuntimeProvider>,
    timeout: Duration,
}

impl Recurser {
    /// A recursor starting at `roots` (empty = [`IANA_ROOTS`]) that gives up
    /// on a question after `timeout`.
    ///
    /// Authorities on loopback, private and reserved addresses (hickory's
    /// recommended deny list: 127/8, RFC 1918, CG-NAT, documentation
    /// prefixes…) are never asked, except inside a denied prefix that holds
    /// one of `roots`: a test or lab hierarchy on 127.x or 10.x works,
    /// and a delegation on the Internet still cannot point us at loopback.
    pub fn new(roots: &[IpAddr], timeout: Duration) -> Result<Self, RecurseError> {
        let roots = if roots.is_empty() { &IANA_ROOTS[..] } else { roots };
        let mut deny_server = RecursorOptions::default().deny_server;
        deny_server.retain(|net| !roots.iter().any(|ip| net.contains(ip)));
        let opts = RecursorOptions { deny_server, ..RecursorOptions::default() };
        let recursor = Recursor::new(roots, DnssecPolicy::SecurityUnaware, None, opts, TokioRuntimeProvider::default())
            .map_err(|e| RecurseError(e.to_string()))?;
        Ok(Recurser { recursor, timeout })
    }

    /// Resolves `name`/`qtype` from the root: an answer, a referral-free
    /// NXDOMAIN or NODATA (with the zone's SOA, so the cache can apply
    /// RFC 2308), or an error (the caller answers SERVFAIL).
    ///
    /// Cost: one recursor lookup (its caches first), at most `timeout`;
    /// then the answer encoded once into cache form. Classes other than IN
    /// are refused as [`ResolveError::Recursion`].
    pub async fn resolve(&self, name: &Name, qtype: RecordType, qclass: DNSClass) -> Result<Reply, ResolveError> {
        if qclass != DNSClass::IN {
            return Err(ResolveError::Recursion("only class IN is resolved".into()));
        }
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        let query = Query::query(fqdn, qtype);
        let lookup = self.recursor.resolve(query, Instant::now(), false);
        let answer = match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => return Err(ResolveError::Timeout(self.timeout)),
            Ok(Ok(message)) => Answer::from_message(message),
            Ok(Err(e)) if e.is_nx_domain() || e.is_no_records_found() => {
                let rcode = if e.is_nx_domain() { ResponseCode::NXDomain } else { ResponseCode::NoError };
                let authorities = e.into_soa().map(|soa| soa.into_record_of_rdata()).into_iter().collect();
                Answer { rcode, answers: Vec::new(), authorities, additionals: Vec::new(), authentic_data: false }
            }
            Ok(Err(e)) => return Err(ResolveError::Recursion(e.to_string())),
        };
        // Never claim more than we checked: no validation here yet.
        let answer = Answer { authentic_data: false, ..answer };
        Reply::from_answer(name, qtype, qclass, &answer)
            .ok_or_else(|| ResolveError::Recursion("the answer could not be encoded".into()))
    }
}
