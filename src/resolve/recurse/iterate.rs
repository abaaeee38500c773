//! The walk (RFC 1034 §5.3.3): from the closest known zone cut down to the
//! name, one referral at a time, asking each zone's servers only for the
//! next label (RFC 9156), then following the answer's CNAME chain; glueless
//! name servers are looked up on the way, within one budget per question.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::classify::{classify, signer, Response};
use super::exchange::{self, ExchangeError};
use super::zones::Zone;
use super::{Failure, Limits, Recurser, Security};

/// RFC 9156 §2.3 MAX_MINIMISE_COUNT: minimised queries per name at most;
/// past it the rest of the name is asked at once.
const MAX_MINIMISE_COUNT: u8 = 10;

/// How long a name a minimised query found without a cut is trusted to
/// stay so (Unbound keeps such answers for their negative TTL; a fixed
/// bound keeps this simple, and a cut made meanwhile only costs a referral).
const NO_CUT_TTL: u32 = 300;

/// The work one client question may cause.
pub(super) struct Budget {
    left: u16,
    max: u16,
    depth: u8,
    max_depth: u8,
    /// Name server names being looked up (a loop guard).
    stack: Vec<Name>,
    /// Set DO on queries to authorities (their RRSIGs and NSEC records).
    pub dnssec_ok: bool,
    /// Validate what the walk finds (off for the lookups the validator
    /// and the name server addresses make themselves).
    pub validate: bool,
}

impl Budget {
    pub fn new(limits: &Limits, dnssec_ok: bool, validate: bool) -> Self {
        Budget {
            left: limits.max_queries,
            max: limits.max_queries,
            depth: 0,
            max_depth: limits.max_depth,
            stack: Vec::new(),
            dnssec_ok,
            validate,
        }
    }

    fn spend(&mut self) -> Result<(), Failure> {
        self.left = self.left.checked_sub(1).ok_or(Failure::TooManyQueries(self.max))?;
        Ok(())
    }
}

/// What the walk found for a question.
pub(super) struct Found {
    pub rcode: ResponseCode,
    /// The CNAME chain in order, then the records asked for.
    pub answers: Vec<Record>,
    /// The last zone's authority records (its SOA for negative answers).
    pub authority: Vec<Record>,
    /// The chain stopped at a target the policy blocks (never asked).
    pub cut_by_policy: bool,
    /// The zone whose servers gave the last answer.
    pub zone: Name,
    /// What validation proved ([`Security::Indeterminate`] when it was off).
    pub security: Security,
}

/// What one name's walk ended in, and the zone whose servers said it.
pub(super) enum One {
    Answer { records: Vec<Record>, next: Option<Name>, rcode: ResponseCode, authority: Vec<Record>, zone: Name },
    NxDomain { authority: Vec<Record>, zone: Name },
    NoData { authority: Vec<Record>, zone: Name },
}

impl One {
    pub fn zone(&self) -> &Name {
        match self {
            One::Answer { zone, .. } | One::NxDomain { zone, .. } | One::NoData { zone, .. } => zone,
        }
    }
}

pub(super) type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Recurser {
    /// `name`/`qtype` with its CNAME chain followed (across zones, each
    /// target walked from its own closest cut), each target checked with
    /// `blocked` before it is asked of anyone.
    pub(super) fn lookup<'a>(
        &'a self,
        name: &'a Name,
        qtype: RecordType,
        b: &'a mut Budget,
        blocked: &'a (dyn Fn(&Name) -> bool + Sync),
    ) -> Boxed<'a, Result<Found, Failure>> {
        Box::pin(async move {
            let mut answers: Vec<Record> = Vec::new();
            let mut cur = name.clone();
            let mut seen = vec![name.clone()];
            let validate = b.validate && self.validator.is_some();
            let mut security = if validate { Security::Secure } else { Security::Indeterminate };
            for _ in 0..=self.limits.max_cname_chain {
                let one = match &self.upstream {
                    Some(f) => self.forward_one(f, &cur, qtype, b).await?,
                    None => self.lookup_one(&cur, qtype, b).await?,
                };
                if validate {
                    security = security.and(self.validate_one(&one, &cur, qtype, b).await?);
                }
                match one {
                    One::Answer { records, next: None, rcode, authority, zone } => {
                        answers.extend(records);
                        return Ok(Found { rcode, answers, authority, cut_by_policy: false, zone, security });
                    }
                    One::Answer { records, next: Some(target), zone, .. } => {
                        answers.extend(records);
                        if seen.contains(&target) {
                            return Err(Failure::ChainLoop(target.to_string()));
                        }
                        if blocked(&target) {
                            let rcode = ResponseCode::NoError;
                            return Ok(Found { rcode, answers, authority: Vec::new(), cut_by_policy: true, zone, security });
                        }
                        seen.push(target.clone());
                        cur = target;
                    }
                    One::NxDomain { authority, zone } => {
                        let rcode = ResponseCode::NXDomain;
                        return Ok(Found { rcode, answers, authority, cut_by_policy: false, zone, security });
                    }
                    One::NoData { authority, zone } => {
                        let rcode = ResponseCode::NoError;
                        return Ok(Found { rcode, answers, authority, cut_by_policy: false, zone, security });
                    }
                }
            }
            Err(Failure::ChainTooLong(self.limits.max_cname_chain))
        })
    }

    /// [`Recurser::lookup`] without validation and without a policy: the
    /// lookups validation itself needs (DS, DNSKEY), whose answers it checks
    /// on its own.
    pub(super) async fn lookup_unvalidated(&self, name: &Name, qtype: RecordType, b: &mut Budget) -> Result<Found, Failure> {
        let was = std::mem::replace(&mut b.validate, false);
        let r = self.lookup(name, qtype, b, &|_| false).await;
        b.validate = was;
        r
    }

    /// Forward mode: one question to the upstreams, which follow the chain
    /// themselves. The "zone" of the reply is what signed it (the answer's
    /// first RRSIG signer, or the SOA owner of a negative answer), else the
    /// root; [`Recurser::zone_containing`] finds it for unsigned data.
    async fn forward_one(
        &self,
        f: &super::super::forward::Forwarder,
        name: &Name,
        qtype: RecordType,
        b: &mut Budget,
    ) -> Result<One, Failure> {
        use hickory_proto::rr::DNSClass;
        b.spend()?;
        let question = crate::wire::query::question(name.iter(), u16::from(qtype), u16::from(DNSClass::IN));
        let q = super::super::forward::Question { wire: &question, dnssec_ok: true, checking_disabled: true };
        let reply = f.resolve(&q).await.map_err(|_| Failure::NoServer("the upstreams".into()))?;
        let m = hickory_proto::op::Message::from_vec(&reply.bytes).map_err(|_| Failure::NoServer("the upstreams".into()))?;
        let rcode = m.metadata.response_code;
        let soa_owner = m.authorities.iter().find(|r| r.record_type() == RecordType::SOA).map(|r| r.name.clone());
        let signer = m.answers.iter().find_map(signer).cloned();
        let zone = signer.or(soa_owner).unwrap_or_else(Name::root);
        let (answers, authority) = (m.answers, m.authorities);
        match rcode {
            ResponseCode::NoError if !answers.is_empty() => Ok(One::Answer { records: answers, next: None, rcode, authority, zone }),
            ResponseCode::NoError => Ok(One::NoData { authority, zone }),
            ResponseCode::NXDomain if !answers.is_empty() => Ok(One::Answer { records: answers, next: None, rcode, authority, zone }),
            ResponseCode::NXDomain => Ok(One::NxDomain { authority, zone }),
            _ => Err(Failure::NoServer("the upstreams".into())),
        }
    }

    /// Forward mode: the zone `name` lies in, from the SOA the upstreams
    /// return for it (at `name` itself, or in the authority section).
    pub(super) async fn zone_containing(&self, name: &Name, b: &mut Budget) -> Result<Name, Failure> {
        let Some(f) = &self.upstream else { return Ok(Name::root()) };
        // an alias has no SOA of its own to ask about (the upstream would
        // follow it): its parent name lies in the same zone or is the apex
        let mut at = name.clone();
        for _ in 0..name.num_labels() {
            let one = self.forward_one(f, &at, RecordType::SOA, b).await?;
            let soa = match &one {
                One::Answer { records, .. } => {
                    if records.iter().any(|r| r.record_type() == RecordType::CNAME && r.name == at) {
                        at = at.base_name();
                        continue;
                    }
                    records.iter().find(|r| r.record_type() == RecordType::SOA).map(|r| r.name.clone())
                }
                One::NxDomain { authority, .. } | One::NoData { authority, .. } => {
                    authority.iter().find(|r| r.record_type() == RecordType::SOA).map(|r| r.name.clone())
                }
            };
            return Ok(soa.filter(|z| z.zone_of(name)).unwrap_or_else(Name::root));
        }
        Ok(Name::root())
    }

    /// One name, from its closest known cut down to the servers that hold it.
    async fn lookup_one(&self, name: &Name, qtype: RecordType, b: &mut Budget) -> Result<One, Failure> {
        // a DS RRset lives on the parent side of the cut (RFC 4035 §3.1.4.1)
        let start = if qtype == RecordType::DS && !name.is_root() { name.base_name() } else { name.clone() };
        let mut zone = self.zones.closest(&start, Instant::now());
        let total = name.num_labels();
        let mut minimise = self.limits.qname_minimisation;
        let mut labels = zone.name.num_labels().saturating_add(1);
        let mut minimised_asked = 0u8;
        for _ in 0..self.limits.max_referrals {
            if minimised_asked >= MAX_MINIMISE_COUNT {
                minimise = false;
            }
            // names already found to exist below this cut need no minimised query again
            while minimise && labels < total && self.zones.is_no_cut(&name.trim_to(usize::from(labels)), Instant::now()) {
                labels = labels.saturating_add(1);
            }
            let minimised = minimise && labels < total;
            let (ask, atype) = if minimised {
                minimised_asked += 1;
                // RFC 9156 §2.1: QTYPE A for the minimised names
                (name.trim_to(usize::from(labels)), RecordType::A)
            } else {
                (name.clone(), qtype)
            };
            match self.ask_zone(&zone, &ask, atype, b).await? {
                Response::Referral(d) if qtype == RecordType::DS && d.zone == *name => {
                    // the parent side sent us to the child for its own DS
                    tracing::debug!(zone = %zone.name, child = %d.zone, "referral instead of the DS RRset");
                    return Err(Failure::NoServer(zone.name.to_string()));
                }
                Response::Referral(d) => {
                    zone = self.zones.learn(d, Instant::now());
                    labels = zone.name.num_labels().saturating_add(1);
                }
                // the name so far exists below this cut (data or an empty
                // non-terminal): one label more
                Response::Answer { .. } | Response::NoData { .. } if minimised => {
                    self.zones.note_no_cut(&ask, NO_CUT_TTL, Instant::now());
                    labels = labels.saturating_add(1);
                }
                // RFC 8020 would end here; like Unbound's relaxed mode, ask
                // the whole name once more (servers that answer NXDOMAIN for
                // empty non-terminals exist)
                Response::NxDomain { .. } if minimised => minimise = false,
                Response::Answer { records, next, rcode, authority } => {
                    return Ok(One::Answer { records, next, rcode, authority, zone: zone.name.clone() })
                }
                Response::NxDomain { authority } => return Ok(One::NxDomain { authority, zone: zone.name.clone() }),
                Response::NoData { authority } => return Ok(One::NoData { authority, zone: zone.name.clone() }),
                Response::Lame(_) => return Err(Failure::NoServer(zone.name.to_string())),
            }
        }
        Err(Failure::TooManyReferrals(self.limits.max_referrals))
    }

    /// Asks `zone`'s servers, best first, until one gives a usable reply
    /// (never [`Response::Lame`]). Glueless servers' addresses are looked up
    /// when the known ones are used up.
    async fn ask_zone(&self, zone: &Arc<Zone>, ask: &Name, atype: RecordType, b: &mut Budget) -> Result<Response, Failure> {
        let mut tried: Vec<IpAddr> = Vec::new();
        let mut tried_ns: Vec<Name> = Vec::new();
        loop {
            let now = Instant::now();
            let mut addrs: Vec<IpAddr> =
                zone.addresses(now).into_iter().filter(|ip| !tried.contains(ip) && self.may_ask(*ip)).collect();
            if addrs.is_empty() {
                if self.resolve_ns(zone, &mut tried_ns, b).await? {
                    continue;
                }
                return Err(Failure::NoServer(zone.name.to_string()));
            }
            self.servers.order(&mut addrs, now);
            for ip in addrs {
                tried.push(ip);
                b.spend()?;
                let timeout = self.servers.timeout(ip);
                let sent = Instant::now();
                let got = exchange::ask(&self.sockets, SocketAddr::new(ip, 53), ask, atype, b.dnssec_ok, timeout).await;
                let outcome = match &got {
                    Ok(x) => Ok(x.reply.metadata.response_code),
                    Err(e) => Err(matches!(e, ExchangeError::Timeout)),
                };
                self.metrics.record(&outcome, sent.elapsed());
                match got {
                    Ok(x) => {
                        self.servers.answered(ip, x.rtt);
                        match classify(x.reply, ask, atype, &zone.name) {
                            Response::Lame(why) => {
                                tracing::debug!(server = %ip, zone = %zone.name, why, "lame server");
                                zone.mark_lame(ip, Instant::now());
                            }
                            r => return Ok(r),
                        }
                    }
                    Err(ExchangeError::Timeout) => {
                        tracing::debug!(server = %ip, zone = %zone.name, "authority timed out");
                        self.servers.timed_out(ip, Instant::now());
                    }
                    Err(e) => {
                        tracing::debug!(server = %ip, zone = %zone.name, error = %e, "authority failed");
                        self.servers.timed_out(ip, Instant::now());
                    }
                }
            }
        }
    }

    /// Looks up the address of one more of `zone`'s name servers that has
    /// none yet (glueless delegation). `false`: none left to try.
    async fn resolve_ns(&self, zone: &Arc<Zone>, tried_ns: &mut Vec<Name>, b: &mut Budget) -> Result<bool, Failure> {
        for ns in zone.unresolved() {
            if tried_ns.contains(&ns) {
                continue;
            }
            tried_ns.push(ns.clone());
            // inside the zone without glue: only the zone itself could say,
            // and we cannot reach it (a loop otherwise)
            if zone.name.zone_of(&ns) || b.stack.contains(&ns) {
                continue;
            }
            if b.depth >= b.max_depth {
                return Err(Failure::TooDeep(b.max_depth));
            }
            b.depth += 1;
            b.stack.push(ns.clone());
            let mut ips = Vec::new();
            let mut qtypes = vec![RecordType::A];
            if self.limits.ipv6 {
                qtypes.push(RecordType::AAAA);
            }
            let mut failure = None;
            for qtype in qtypes {
                match self.lookup_unvalidated(&ns, qtype, b).await {
                    Ok(found) => ips.extend(found.answers.iter().filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })),
                    Err(e @ (Failure::TooManyQueries(_) | Failure::TooDeep(_))) => failure = Some(e),
                    Err(e) => tracing::debug!(ns = %ns, error = %e, "name server address lookup failed"),
                }
                if !ips.is_empty() || failure.is_some() {
                    break;
                }
            }
            b.stack.pop();
            b.depth -= 1;
            if let Some(e) = failure {
                return Err(e);
            }
            zone.add_addresses(&ns, &ips);
            if ips.iter().any(|ip| self.may_ask(*ip)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether an authority at `ip` may be asked: not in a denied prefix
    /// (loopback, private, reserved), IPv6 only when enabled.
    fn may_ask(&self, ip: IpAddr) -> bool {
        (self.limits.ipv6 || ip.is_ipv4()) && !self.deny.iter().any(|net| net.contains(&ip))
    }
}
