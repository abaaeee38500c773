//! Recursive mode (`[upstream] mode = "recursive"`, issue #21): cache
//! misses resolved from the root servers by qalqan's own iterator, built on
//! hickory-proto (docs/recursion.md says why not hickory's recursor).
//!
//! The files, in the order a miss goes through them: `iterate.rs` walks
//! from the closest known zone cut down to the name (QNAME minimisation,
//! referrals, CNAME chains, glueless name servers), asking the servers
//! `servers.rs` ranks, through `exchange.rs` (one query to one authority),
//! sorting each reply with `classify.rs` (bailiwick), remembering cuts in
//! `zones.rs`. This file holds the limits and the entry point, and hands
//! the query path the same [`Reply`] the forwarder does, so the cache, the
//! policy and the CNAME checks around it do not change with the mode.
//! No DNSSEC validation yet: AD is never set.

mod classify;
mod exchange;
mod iterate;
mod servers;
mod validate;
mod zones;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RecordType};

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

/// Bounds on the work, the waiting and the memory of recursion
/// (`[recursion]` in the config; docs/configuration.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest wait for one authority before the next is asked; servers
    /// with a known RTT get less (four times it, plus 50 ms).
    pub server_timeout: Duration,
    /// Referrals followed for one name.
    pub max_referrals: u8,
    /// CNAMEs followed for one question.
    pub max_cname_chain: u8,
    /// Queries sent to authorities for one client question, every nested
    /// lookup (name server addresses) included.
    pub max_queries: u16,
    /// Nesting of lookups for the addresses of glueless name servers.
    pub max_depth: u8,
    /// RFC 9156: ask each server only for the next label below its zone.
    pub qname_minimisation: bool,
    /// Ask authorities over IPv6 too.
    pub ipv6: bool,
    /// Zone cuts remembered.
    pub zone_cache_entries: usize,
    /// Authority addresses whose RTT is remembered.
    pub server_cache_entries: usize,
    /// A UDP socket to an authority is used for at most this many queries
    /// (`[upstream] udp_socket_queries`)...
    pub socket_queries: u32,
    /// ... and at most this long (`[upstream] udp_socket_lifetime_ms`).
    pub socket_lifetime: Duration,
    /// Longest time a zone cut is remembered (its NS TTL, at most this).
    pub max_delegation_ttl: Duration,
    /// `[dnssec]`: validate answers (`None`: never; AD never set).
    pub dnssec: Option<DnssecConfig>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            server_timeout: Duration::from_millis(800),
            max_referrals: 30,
            max_cname_chain: 12,
            max_queries: 64,
            max_depth: 4,
            qname_minimisation: true,
            ipv6: true,
            zone_cache_entries: 100_000,
            server_cache_entries: 100_000,
            socket_queries: 2000,
            socket_lifetime: Duration::from_secs(5),
            dnssec: None,
            max_delegation_ttl: Duration::from_secs(86_400),
        }
    }
}

/// How far an answer was proven (`qalqan_dnssec_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Every RRset and denial verified up to a trust anchor.
    Secure,
    /// Some part lies under a zone proven unsigned (no DS), or under a
    /// negative trust anchor.
    Insecure,
    /// No trust anchor covers it (no validation possible).
    Indeterminate,
}

impl Security {
    /// The weaker of two (a chain is as secure as its weakest link).
    pub fn and(self, other: Security) -> Security {
        match (self, other) {
            (Security::Secure, o) | (o, Security::Secure) => o,
            (Security::Indeterminate, _) | (_, Security::Indeterminate) => Security::Indeterminate,
            _ => Security::Insecure,
        }
    }
}

/// `[dnssec]` for recursive mode.
#[derive(Debug, Clone)]
pub struct DnssecConfig {
    /// The trust anchors (`trust_anchor`, else the root KSKs compiled in).
    pub anchors: crate::dnssec::TrustAnchors,
    /// RFC 7646 negative trust anchors: names at and below are not validated.
    pub negative: Vec<Name>,
    /// NSEC3 iterations above this make a denial insecure (RFC 9276).
    pub max_nsec3_iterations: u16,
    /// NSEC/NSEC3 RRsets one denial proof may check.
    pub max_denial_rrsets: usize,
}

/// Why a name could not be resolved from the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("no authority of {0} answered")]
    NoServer(String),
    #[error("more than {0} referrals")]
    TooManyReferrals(u8),
    #[error("CNAME chain longer than {0}")]
    ChainTooLong(u8),
    #[error("CNAME loop at {0}")]
    ChainLoop(String),
    #[error("more than {0} queries to authorities")]
    TooManyQueries(u16),
    #[error("name server lookups nested deeper than {0}")]
    TooDeep(u8),
    #[error("only class IN is resolved")]
    Class,
    #[error("the answer could not be encoded")]
    Encode,
    /// DNSSEC validation failed: SERVFAIL with this EDE (RFC 8914).
    #[error("DNSSEC bogus: {0}")]
    Bogus(crate::dnssec::Bogus),
}

/// A resolved question: the reply in cache form, and whether it may be
/// cached (not when a CNAME chain was cut at a name the policy blocks).
#[derive(Debug)]
pub struct Resolved {
    pub reply: Reply,
    pub cacheable: bool,
}

/// The key identical misses are merged on: name, type, DO, CD.
type Flight = (Name, RecordType, bool, bool);
type Shared = Arc<tokio::sync::OnceCell<Result<Resolved, ResolveError>>>;

/// Resolves cache misses from the root. One per server, shared by every
/// query (`&self`).
pub struct Recurser {
    limits: Limits,
    /// The client's deadline (`[upstream] timeout_ms`).
    timeout: Duration,
    servers: servers::Servers,
    zones: zones::Zones,
    sockets: exchange::Sockets,
    /// Questions being resolved: identical misses wait for one resolution.
    inflight: Mutex<HashMap<Flight, Shared>>,
    /// Authorities on loopback, private and reserved addresses are never
    /// asked, except inside a prefix that holds a root from the hints.
    deny: Vec<ipnet::IpNet>,
    /// Every query to an authority, aggregated under
    /// `qalqan_upstream_requests_total{server="authorities"}` (one label
    /// value however many authorities there are).
    metrics: crate::metrics::UpstreamMetrics,
    /// `qalqan_dnssec_total{result}`: secure, insecure, bogus, indeterminate.
    dnssec_results: [prometheus::IntCounter; 4],
    /// `None`: validation off.
    validator: Option<validate::Validator>,
    /// Forward mode with validation: every lookup is one question to the
    /// upstreams (RD, DO and CD set) instead of a walk from the root; the
    /// validator checks what they return (`Recurser::forwarding`).
    upstream: Option<Arc<super::forward::Forwarder>>,
}

impl Recurser {
    /// A recursor starting at `roots` (empty = [`IANA_ROOTS`]) that gives up
    /// on a question after `timeout`.
    pub fn new(roots: &[IpAddr], timeout: Duration, limits: Limits, metrics: &crate::metrics::Metrics) -> Result<Self, RecurseError> {
        let roots = if roots.is_empty() { &IANA_ROOTS[..] } else { roots };
        let mut deny: Vec<ipnet::IpNet> = DENY.iter().filter_map(|s| s.parse().ok()).collect();
        deny.retain(|net| !roots.iter().any(|ip| net.contains(ip)));
        let roots: Vec<IpAddr> = roots.iter().copied().filter(|ip| limits.ipv6 || ip.is_ipv4()).collect();
        if roots.is_empty() {
            return Err(RecurseError::NoRoots);
        }
        let validator = limits.dnssec.as_ref().map(|d| {
            let mut v =
                validate::Validator::new(d.anchors.clone(), d.negative.clone(), limits.zone_cache_entries, limits.max_delegation_ttl);
            v.max_nsec3_iterations = d.max_nsec3_iterations;
            v.max_denial_rrsets = d.max_denial_rrsets;
            v
        });
        Ok(Recurser {
            validator,
            dnssec_results: metrics.dnssec_results(),
            servers: servers::Servers::new(limits.server_cache_entries, limits.server_timeout),
            zones: zones::Zones::new(&roots, limits.zone_cache_entries, limits.max_delegation_ttl),
            sockets: exchange::Sockets::new(limits.socket_queries, limits.socket_lifetime, IDLE_SERVERS),
            limits,
            timeout,
            inflight: Mutex::new(HashMap::new()),
            deny,
            metrics: metrics.upstream("authorities"),
            upstream: None,
        })
    }

    /// Forward mode's validator (`[dnssec] validate` with `mode =
    /// "forward"`): resolves through `forwarder` asking with DO and CD, and
    /// validates the answers itself from the trust anchors, fetching DS and
    /// DNSKEY RRsets through the same upstreams. Used for the questions of
    /// clients that set DO (their AD is then qalqan's own); the rest keep
    /// the forwarder's plain path.
    pub fn forwarding(
        forwarder: Arc<super::forward::Forwarder>,
        timeout: Duration,
        limits: Limits,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Self, RecurseError> {
        // the root "servers" are never asked in this mode
        let mut r = Self::new(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], timeout, limits, metrics)?;
        r.upstream = Some(forwarder);
        Ok(r)
    }

    /// Resolves `name`/`qtype` from the root: an answer, or NXDOMAIN / NODATA
    /// with the zone's SOA (so the cache can apply RFC 2308), or an error
    /// (the caller answers SERVFAIL). `blocked` is asked about every CNAME
    /// target before it is followed: a blocked target ends the chain there,
    /// unasked (the caller's policy check then blocks the answer), and the
    /// reply is not cacheable.
    ///
    /// With validation on, the answer is validated unless the client set
    /// CD (`checking_disabled`): AD in the reply when every part is secure,
    /// [`Failure::Bogus`] when a part is bogus. RRSIGs and NSEC records are
    /// kept in the reply only when the client set DO (`dnssec_ok`).
    ///
    /// Identical questions in flight share one resolution. Cost: what the
    /// walk needs (zero queries for known cuts' servers up to `max_queries`),
    /// bounded by `timeout`; the answer encoded once into cache form.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        dnssec_ok: bool,
        checking_disabled: bool,
        blocked: &(dyn Fn(&Name) -> bool + Sync),
    ) -> Result<Resolved, ResolveError> {
        if qclass != DNSClass::IN {
            return Err(ResolveError::Recursion(Failure::Class));
        }
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        let key: Flight = (fqdn.clone(), qtype, dnssec_ok, checking_disabled);
        let cell = match self.inflight.lock() {
            Ok(mut m) => Arc::clone(m.entry(key.clone()).or_default()),
            Err(_) => Shared::default(),
        };
        let result = cell
            .get_or_init(|| async {
                match tokio::time::timeout(self.timeout, self.resolve_now(&fqdn, qtype, dnssec_ok, checking_disabled, blocked)).await {
                    Err(_) => Err(ResolveError::Timeout(self.timeout)),
                    Ok(r) => r,
                }
            })
            .await;
        let out = match result {
            Ok(r) => Ok(Resolved { reply: r.reply.clone(), cacheable: r.cacheable }),
            Err(e) => Err(e.clone()),
        };
        if let Ok(mut m) = self.inflight.lock() {
            if m.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                m.remove(&key);
            }
        }
        // the reply keeps the client's spelling of the name
        out.map(|mut r| {
            if let Some(at) = r.reply.bytes.get_mut(12..) {
                let mut i = 0;
                for label in name.iter() {
                    let Some(dst) = at.get_mut(i + 1..i + 1 + label.len()) else { break };
                    dst.copy_from_slice(label);
                    i += 1 + label.len();
                }
            }
            r
        })
    }

    async fn resolve_now(
        &self,
        name: &Name,
        qtype: RecordType,
        dnssec_ok: bool,
        checking_disabled: bool,
        blocked: &(dyn Fn(&Name) -> bool + Sync),
    ) -> Result<Resolved, ResolveError> {
        let validate = self.validator.is_some() && !checking_disabled;
        let mut budget = iterate::Budget::new(&self.limits, self.validator.is_some() || dnssec_ok, validate);
        let found = match self.lookup(name, qtype, &mut budget, blocked).await {
            Ok(f) => f,
            Err(e) => {
                if let Failure::Bogus(b) = &e {
                    tracing::debug!(%name, %qtype, reason = %b, "DNSSEC bogus");
                    self.count(None);
                }
                return Err(ResolveError::Recursion(e));
            }
        };
        if validate {
            self.count(Some(found.security));
        }
        let secure = validate && found.security == Security::Secure;
        let dnssec_record = |r: &hickory_proto::rr::Record| {
            matches!(r.record_type(), RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3)
        };
        let mut answers = found.answers;
        if !dnssec_ok {
            answers.retain(|r| !dnssec_record(r) || qtype == r.record_type());
        }
        // negative answers carry the zone's SOA (RFC 2308), and with DO the
        // denial's NSEC records and signatures; positive ones nothing but the answer
        let negative = found.rcode == ResponseCode::NXDomain || !answers.iter().any(|r| r.record_type() == qtype);
        let authorities = if negative {
            found
                .authority
                .into_iter()
                .filter(|r| r.record_type() == RecordType::SOA || (dnssec_ok && dnssec_record(r)))
                .collect()
        } else {
            Vec::new()
        };
        let answer = Answer { rcode: found.rcode, answers, authorities, additionals: Vec::new(), authentic_data: secure };
        let reply = Reply::from_answer(name, qtype, DNSClass::IN, &answer).ok_or(ResolveError::Recursion(Failure::Encode))?;
        Ok(Resolved { reply, cacheable: !found.cut_by_policy })
    }

    /// Counts one validated resolution (`None`: bogus).
    fn count(&self, security: Option<Security>) {
        let i = match security {
            Some(Security::Secure) => 0,
            Some(Security::Insecure) => 1,
            None => 2,
            Some(Security::Indeterminate) => 3,
        };
        if let Some(c) = self.dnssec_results.get(i) {
            c.inc();
        }
    }

    /// Zone cuts remembered (a gauge for the metrics scrape).
    pub fn zones_known(&self) -> usize {
        self.zones.len()
    }
}

/// Authority addresses with idle sockets kept at most (up to 8 sockets each).
const IDLE_SERVERS: usize = 1024;

/// Prefixes authorities are never asked on (unless a root hint is inside).
const DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Why the recursor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RecurseError {
    #[error("no root server address left (all IPv6 and [recursion] ipv6 = false?)")]
    NoRoots,
}
