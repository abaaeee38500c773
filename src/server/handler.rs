//! The query path. One `handle_request` runs these steps in order:
//!
//! 1. ACL: clients outside `allow_clients` → REFUSED + EDE 18 before any
//!    other reply (a NOTIFY from a configured primary excepted); on UDP the
//!    fast path already dropped or refused them (`[server] outside_acl`)
//! 2. opcode ≠ QUERY → NOTIMP; EDNS version > 0 → BADVERS; qdcount ≠ 1 →
//!    FORMERR; then the per-client rate limit (`[limits]`)
//! 3. in-flight cap: past `max_inflight` → SERVFAIL at once (no queueing)
//! 4. name normalised once into a `QName`
//! 5. policy (one `Arc<Policy>` snapshot for the whole query) — before the
//!    cache, so a list change applies to cached names too; then the names
//!    we answer ourselves: DDR's `_dns.resolver.arpa`, the canary domain
//!    ([`super::ddr`])
//! 6. cache, else upstream: the forwarder, or in recursive mode the
//!    recursor (then the answer is cached)
//!    (qtype ANY: the RFC 8482 minimal answer, one synthesized HINFO, instead)
//! 7. CNAME targets and answer addresses of the answer checked against the
//!    same policy snapshot (CNAME cloaking), unless the name was allowlisted
//! 8. reply with a fresh OPT record and RA set

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::Semaphore;

use super::acl::Acl;
use super::notify::{NotifyTarget, ReplyTsig};
use super::respond;
use crate::metrics::{Metrics, Outcome, Transport};
use crate::name::QName;
use crate::policy::{Answer as PolicyAnswer, Hit, Policy, Sinkhole, Verdict};
use crate::resolve::cache::{Cache, Key, Wire, STALE_TTL};

/// The `age` a stale answer is given (its TTLs are set to [`STALE_TTL`] instead).
const STALE_AGE: u32 = 0;
use crate::resolve::forward::{Forwarder, Question};
use crate::resolve::recurse::Recurser;
use crate::wire::scan::{each_chain_item, ChainItem};
use crate::resolve::ResolveError;

/// Everything the query path reads.
pub struct Shared {
    pub policy: Arc<ArcSwap<Policy>>,
    pub cache: Cache,
    pub forwarder: Arc<Forwarder>,
    /// Recursive mode (`[upstream] mode = "recursive"`): misses are resolved
    /// here instead of by the forwarder (which then has no servers).
    pub recurser: Option<Arc<Recurser>>,
    /// Forward mode with `[dnssec] validate`: the validator that resolves
    /// (through the forwarder) the questions of clients that set DO.
    pub validating: Option<Arc<Recurser>>,
    pub acl: Acl,
    pub sinkhole: Sinkhole,
    pub max_udp_payload: u16,
    pub inflight: Semaphore,
    pub metrics: Arc<Metrics>,
    pub blocked_log: Option<Arc<crate::querylog::BlockedLog>>,
    /// `[dnstap]`: every answered query goes to it (`None`: one branch).
    pub dnstap: Option<Arc<crate::dnstap::Dnstap>>,
    /// Per-client limiter and whether limited queries are dropped.
    pub rate_limit: Option<(super::ratelimit::RateLimiter, bool)>,
    /// `qalqan_blocked_total{list}`, indexed by [`crate::rules::ListId::index`].
    pub blocked_counters: Vec<prometheus::IntCounter>,
    /// `qalqan_shadow_hits_total{list}`, indexed like `blocked_counters`.
    pub shadow_counters: Vec<prometheus::IntCounter>,
    /// Zones whose primaries may NOTIFY us (axfr:// lists), set once at start.
    pub notify_targets: std::sync::OnceLock<Vec<NotifyTarget>>,
    /// What UDP clients outside the ACL get.
    pub outsiders: Outsiders,
    /// `[cache] prefetch`: hits in an entry's last tenth refresh it.
    pub prefetch: bool,
    /// DDR and the canary domain (set once at start; unset = neither).
    pub discovery: std::sync::OnceLock<super::ddr::Discovery>,
    /// `[sde]`: when blocked answers carry the structured EXTRA-TEXT.
    pub sde: crate::policy::sde::SdeSignal,
    /// `[[views]]` (`None` without views: the one branch they cost then).
    pub views: Option<Arc<crate::policy::views::Views>>,
}

/// Bytes of a blocked reply besides the question and the EDE text, at most:
/// header 12, SOA with a compressed owner ≤ 80, OPT with the EDE option
/// header 17 (room left for a sinkhole record on the hickory path).
pub const BLOCKED_OVERHEAD: usize = 12 + 80 + 17;

/// `[server] outside_acl`, `outside_acl_refused_qps`.
pub struct Outsiders {
    /// No reply at all.
    pub drop: bool,
    /// Otherwise REFUSED, within this budget (then dropped).
    pub refused: super::ratelimit::Budget,
}

impl Shared {
    /// The lists that apply to `client`: its view's (`None`: every list,
    /// also when no views are configured). Cost: one branch without views,
    /// else one longest-prefix lookup ([`crate::policy::views::Views::of`]).
    #[inline]
    pub fn view_of(&self, client: std::net::IpAddr) -> Option<&crate::policy::views::ListMask> {
        self.views.as_deref()?.of(client).map(|v| &v.lists)
    }

    /// The EDE text of a blocked hit: the structured (JSON) form when
    /// `[sde] mode = "always"` or the client `signalled` it and the list
    /// has one that fits in `max` bytes, else `None` (the plain text).
    #[inline]
    pub fn sde_text(&self, policy: &Policy, hit: &Hit, signalled: bool, max: usize) -> Option<String> {
        use crate::policy::sde::SdeMode;
        match self.sde.mode {
            SdeMode::Off => None,
            SdeMode::Signalled if !signalled => None,
            _ => policy.sde_text(hit, max),
        }
    }

    /// Whether `edns` of a query signals structured-error support: the
    /// draft's SDE option (`[sde] option_code`, any length), or an EDE
    /// option in the query (how revisions up to -09 had clients ask).
    pub fn sde_signalled(&self, edns: Option<&Edns>) -> bool {
        use hickory_proto::rr::rdata::opt::EdnsCode;
        edns.is_some_and(|e| {
            let o = e.options();
            o.get(EdnsCode::from(self.sde.option_code)).is_some() || o.get(EdnsCode::from(respond::EDE_OPTION)).is_some()
        })
    }

    /// Whether `ip` is the primary of a list's zone (its NOTIFY may come
    /// from outside `allow_clients`). Cost: a scan of the axfr lists.
    pub fn is_notify_primary(&self, ip: std::net::IpAddr) -> bool {
        self.notify_targets.get().is_some_and(|ts| ts.iter().any(|t| t.primary == ip))
    }

    /// Hands a blocked query to the blocked-query log, if one is
    /// configured. Cost: a clock read, a reference count, the name's bytes
    /// copied and a `try_send` (formatting happens on the log's thread).
    pub fn log_blocked(&self, policy: &Arc<Policy>, hit: &Hit, qname: &str, qtype: RecordType, udp: bool, client: std::net::IpAddr) {
        let protocol = if udp { Transport::Udp } else { Transport::Tcp };
        self.log_blocked_via(policy, hit, qname, qtype, protocol, client);
    }

    /// Counts and logs what the shadow lists say of `name` (never enforced).
    /// Callers check [`Policy::has_shadow`] first: without shadow lists the
    /// query path pays that one branch.
    /// The log line goes to the blocked-query log (`"shadow":true`) when
    /// one is configured, and to the `qalqan::shadow` target at debug level.
    #[cold]
    pub fn count_shadow(&self, policy: &Arc<Policy>, name: crate::name::NameRef<'_>, client: std::net::IpAddr, protocol: Transport, qtype: RecordType) {
        let Some(hit) = policy.shadow_hit(name) else { return };
        if let Some(c) = self.shadow_counters.get(hit.list.index()) {
            c.inc();
        }
        if let Some(log) = &self.blocked_log {
            log.log(crate::querylog::Event {
                at: std::time::SystemTime::now(),
                client,
                protocol: protocol.label(),
                qname: smallvec::SmallVec::from_slice(name.as_str().as_bytes()),
                qtype: Some(qtype),
                policy: Arc::clone(policy),
                hit,
                shadow: true,
            });
        }
        let list = policy.list(&hit).map_or("?", |l| l.name.as_str());
        tracing::debug!(target: "qalqan::shadow", %list, rule = policy.rule_text(hit.rule), qname = name.as_str(), %client, "shadow hit (not enforced)");
    }

    /// [`Shared::log_blocked`] for a query that came over `protocol`.
    pub fn log_blocked_via(&self, policy: &Arc<Policy>, hit: &Hit, qname: &str, qtype: RecordType, protocol: Transport, client: std::net::IpAddr) {
        let Some(log) = &self.blocked_log else { return };
        log.log(crate::querylog::Event {
            at: std::time::SystemTime::now(),
            client,
            protocol: protocol.label(),
            qname: smallvec::SmallVec::from_slice(qname.as_bytes()),
            qtype: Some(qtype),
            policy: Arc::clone(policy),
            hit: *hit,
            shadow: false,
        });
    }
}

/// The hickory `RequestHandler` for qalqan.
/// What the fast path already did for a query it hands to the hickory
/// path, so that nothing counts twice: the per-client rate limit took its
/// token (`rate`: one token per query, whichever path answers), the shadow
/// lists counted their hit (`shadow`: a forwarded miss whose upstream
/// reply the fast path could not use).
#[derive(Debug, Clone, Copy, Default)]
pub struct Prechecked {
    pub rate: bool,
    pub shadow: bool,
}

#[derive(Clone)]
pub struct Handler {
    pub shared: Arc<Shared>,
}

/// Refreshes the cache entry of `key` in the background (`[cache]
/// prefetch`): asks the upstreams (or the root) again and stores what
/// comes back, unless it is a failure. `question` is the question
/// section as the client sent it. The policy is not asked here: it
/// checks the new entry when it is served, like any other.
pub fn prefetch(shared: &Arc<Shared>, key: Key, question: Box<[u8]>) {
    let shared = Arc::clone(shared);
    let (name, qtype, qclass) = (respond::fqdn(key.name.as_str()), key.qtype, key.qclass);
    let (dnssec_ok, cd) = (key.dnssec_ok, key.checking_disabled);
    let store = move |s: &Shared, reply: crate::resolve::Reply| {
        if reply.scan.rcode != 2 {
            s.metrics.prefetches.inc();
            s.cache.insert(&key, reply, Instant::now());
        }
    };
    match &shared.recurser {
        None => {
            let s = Arc::clone(&shared);
            shared.forwarder.resolve_then(
                question,
                dnssec_ok,
                cd,
                Box::new(move |r| {
                    if let Ok(reply) = r {
                        store(&s, reply);
                    }
                }),
            );
        }
        Some(r) => {
            let r = Arc::clone(r);
            let Some(name) = name else { return };
            tokio::spawn(async move {
                if let Ok(done) = r.resolve(&name, qtype, qclass, dnssec_ok, cd, &|_| false).await {
                    if done.cacheable {
                        store(&shared, done.reply);
                    }
                }
            });
        }
    }
}

/// TTL of the RFC 8482 HINFO that answers ANY.
const RFC8482_TTL: u32 = 3600;

/// A reply ready to encode.
struct Reply {
    meta: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    edns: Option<Edns>,
    /// Leave the question out (it could not be echoed safely).
    no_question: bool,
    /// TSIG for a NOTIFY reply (`notify.rs`); `None` everywhere else.
    tsig: Option<ReplyTsig>,
    /// The policy and hit that blocked the query (for dnstap).
    blocked: Option<(Arc<Policy>, Hit)>,
    /// Send nothing (a blocked query whose action is `drop`).
    drop: bool,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response: R) -> ResponseInfo {
        self.handle_via(request, response, Transport::from(request.protocol())).await
    }
}

impl Handler {
    /// [`RequestHandler::handle_request`] for a request that came over
    /// `transport` (DoT, DoH and DoQ reach hickory's types as TCP; the
    /// `protocol` label of the metrics says which it was).
    pub async fn handle_via<R: ResponseHandler>(&self, request: &Request, response: R, transport: Transport) -> ResponseInfo {
        self.handle_checked(request, response, transport, Prechecked::default()).await
    }

    /// [`Handler::handle_via`] for a request the fast path has looked at
    /// already ([`Prechecked`]).
    pub async fn handle_checked<R: ResponseHandler>(&self, request: &Request, response: R, transport: Transport, pre: Prechecked) -> ResponseInfo {
        self.handle_tapped(request, response, transport, pre).await.0
    }

    /// [`Handler::handle_checked`], also returning the policy and hit that
    /// blocked the query, if one did (what dnstap reports of it: `slow.rs`).
    pub async fn handle_tapped<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
        transport: Transport,
        pre: Prechecked,
    ) -> (ResponseInfo, Option<(Arc<Policy>, Hit)>) {
        let start = Instant::now();
        let (reply, outcome) = self.decide(request, transport, pre).await;
        let (info, blocked) = match reply {
            Some(mut reply) => {
                let blocked = reply.blocked.take();
                if reply.drop {
                    (header_info(Metadata::response_from_request(&request.metadata)), blocked)
                } else {
                    (send(request, &mut response, reply).await, blocked)
                }
            }
            None => (header_info(Metadata::response_from_request(&request.metadata)), None),
        };
        self.shared.metrics.observe(transport, outcome, start.elapsed());
        (info, blocked)
    }

    /// Runs the steps; `None` = send nothing (drop).
    async fn decide(&self, request: &Request, transport: Transport, pre: Prechecked) -> (Option<Reply>, Outcome) {
        let s = &*self.shared;
        let mut edns = respond::reply_edns(request.edns.as_ref(), s.max_udp_payload);
        let meta_for = |rcode: ResponseCode| {
            let mut m = Metadata::response_from_request(&request.metadata);
            m.recursion_available = true;
            m.response_code = rcode;
            m
        };
        let src_ip = request.src().ip();
        let primary_notify = request.metadata.op_code == OpCode::Notify && s.is_notify_primary(src_ip);
        if !s.acl.allows(src_ip) && !primary_notify {
            if let Some(e) = edns.as_mut() {
                respond::add_ede(e, respond::EDE_PROHIBITED, "client not in allow_clients");
            }
            tracing::debug!(client = %request.src().ip(), "refused by ACL");
            let mut r = simple(meta_for(ResponseCode::Refused), edns);
            r.no_question = crate::wire::name::question_has_pointer(request.as_slice());
            return (Some(r), Outcome::Refused);
        }
        if crate::wire::name::question_has_pointer(request.as_slice()) {
            let mut r = simple(meta_for(ResponseCode::FormErr), edns);
            r.no_question = true;
            return (Some(r), Outcome::Formerr);
        }
        if request.metadata.op_code == OpCode::Notify {
            return self.notify(request, edns);
        }
        if request.metadata.op_code != OpCode::Query {
            return (Some(simple(meta_for(ResponseCode::NotImp), edns)), Outcome::Formerr);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return (Some(simple(meta_for(ResponseCode::BADVERS), edns)), Outcome::Formerr);
        }
        if let (Some((rl, drop)), false) = (&s.rate_limit, pre.rate) {
            if rl.check(request.src().ip(), Instant::now()) == super::ratelimit::Decision::Limit {
                s.metrics.rate_limited.inc();
                if *drop {
                    return (None, Outcome::Dropped);
                }
                if let Some(e) = edns.as_mut() {
                    respond::add_ede(e, respond::EDE_PROHIBITED, "rate limited");
                }
                return (Some(simple(meta_for(ResponseCode::Refused), edns)), Outcome::Refused);
            }
        }
        let query = match request.queries.queries() {
            [q] => q,
            _ => return (Some(simple(meta_for(ResponseCode::FormErr), edns)), Outcome::Formerr),
        };
        let Ok(_permit) = s.inflight.try_acquire() else {
            tracing::debug!("in-flight limit reached");
            return (Some(simple(meta_for(ResponseCode::ServFail), edns)), Outcome::Servfail);
        };
        let qname_wire: Name = query.name().clone().into();
        let Ok(qname) = QName::from_labels(qname_wire.iter()) else {
            return (Some(simple(meta_for(ResponseCode::FormErr), edns)), Outcome::Formerr);
        };
        let qtype = query.query_type();
        let policy = s.policy.load_full();
        let view = s.view_of(request.src().ip());
        let verdict = policy.check_in(qname.as_name(), view);
        if policy.has_shadow && !pre.shadow {
            s.count_shadow(&policy, qname.as_name(), request.src().ip(), transport, qtype);
        }
        if let Verdict::Blocked(hit) = verdict {
            return self.blocked(request, transport, &policy, &hit, &qname, &qname_wire, qtype, meta_for(ResponseCode::NoError), edns);
        }
        if let Some(local) = s.discovery.get().and_then(|d| d.answer(qname.as_str(), qtype)) {
            let r = match local {
                super::ddr::Local::Records(answers) => {
                    let mut r = simple(meta_for(ResponseCode::NoError), edns);
                    r.answers = answers;
                    r
                }
                super::ddr::Local::Nxdomain => {
                    let mut r = simple(meta_for(ResponseCode::NXDomain), edns);
                    r.authorities.push(respond::blocked_soa(&qname_wire, s.sinkhole.ttl));
                    r
                }
            };
            return (Some(r), Outcome::Forwarded);
        }
        if qtype == RecordType::ANY {
            // RFC 8482 §4.2: one synthesized HINFO, not every record we
            // could find (ANY is the amplifier's favourite question)
            let hinfo = Record::from_rdata(
                qname_wire.clone(),
                RFC8482_TTL,
                hickory_proto::rr::RData::HINFO(hickory_proto::rr::rdata::HINFO::new("RFC8482".into(), String::new())),
            );
            let mut r = simple(meta_for(ResponseCode::NoError), edns);
            r.answers.push(hinfo);
            return (Some(r), Outcome::Forwarded);
        }

        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let key = Key {
            name: qname,
            qtype,
            qclass: query.query_class(),
            dnssec_ok,
            checking_disabled: request.metadata.checking_disabled,
        };
        let now = Instant::now();
        let (answer, age, outcome) = match s.cache.get(&key, now) {
            Some(entry) => {
                s.metrics.cache_hits.inc();
                let age = entry.age(now);
                if s.prefetch && entry.claim_prefetch(now) {
                    let question = question_wire(&qname_wire, qtype, key.qclass).into_boxed_slice();
                    prefetch(&self.shared, key.clone(), question);
                }
                (entry, age, Outcome::Cached)
            }
            None => {
                s.metrics.cache_misses.inc();
                let validating = s.validating.as_ref().filter(|_| dnssec_ok && !key.checking_disabled);
                let resolved = match s.recurser.as_ref().or(validating) {
                    Some(r) => {
                        // a CNAME target the policy blocks is never asked of
                        // an authority (unless the name itself is allowed)
                        let allowed = matches!(verdict, Verdict::Allowed(_));
                        let blocked = |n: &Name| {
                            !allowed
                                && QName::from_labels(n.iter())
                                    .is_ok_and(|q| matches!(policy.check_in(q.as_name(), view), Verdict::Blocked(_)))
                        };
                        r.resolve(&qname_wire, qtype, key.qclass, dnssec_ok, key.checking_disabled, &blocked).await.map(|r| (r.reply, r.cacheable))
                    }
                    None => {
                        let question = question_wire(&qname_wire, qtype, key.qclass);
                        let q = Question { wire: &question, dnssec_ok, checking_disabled: key.checking_disabled };
                        s.forwarder.resolve(&q).await.map(|r| (r, true))
                    }
                };
                // an upstream's SERVFAIL is a failure too (RFC 8767 §4): an
                // expired answer replaces it when there is one, as on the fast path
                let stale_for_servfail = match &resolved {
                    Ok((a, _)) if a.rcode() == ResponseCode::ServFail => s.cache.get_stale(&key, now),
                    _ => None,
                };
                if let Some(entry) = stale_for_servfail {
                    s.metrics.stale_answers.inc();
                    (entry, STALE_AGE, Outcome::Stale)
                } else {
                    match resolved {
                        Ok((a, cacheable)) => {
                            // the entry is answered from whether or not it was cacheable
                            let entry = if cacheable { s.cache.insert(&key, a, now).0 } else { crate::resolve::cache::Cache::uncached(a, now) };
                            (entry, 0, if s.recurser.is_some() { Outcome::Recursed } else { Outcome::Forwarded })
                        }
                        Err(e) => {
                            match &e {
                                ResolveError::Timeout(_) => tracing::debug!(name = %key.name, "upstream timeout"),
                                other => tracing::debug!(name = %key.name, error = %other, "upstream failed"),
                            }
                            if let ResolveError::Recursion(crate::resolve::recurse::Failure::Bogus(b)) = &e {
                                // DNSSEC bogus: SERVFAIL saying why (RFC 8914), never a stale answer
                                if let Some(ed) = edns.as_mut() {
                                    respond::add_ede(ed, b.ede_code(), &b.to_string());
                                }
                                return (Some(simple(meta_for(ResponseCode::ServFail), edns)), Outcome::Servfail);
                            }
                            // RFC 8767: an expired answer beats no answer
                            match s.cache.get_stale(&key, now) {
                                Some(entry) => {
                                    s.metrics.stale_answers.inc();
                                    (entry, STALE_AGE, Outcome::Stale)
                                }
                                None => return (Some(simple(meta_for(ResponseCode::ServFail), edns)), Outcome::Servfail),
                            }
                        }
                    }
                }
            }
        };
        if !matches!(verdict, Verdict::Allowed(_)) {
            if let Some(hit) = chain_block(&policy, &answer.wire, view) {
                return self.blocked(request, transport, &policy, &hit, &key.name, &qname_wire, qtype, meta_for(ResponseCode::NoError), edns);
            }
        }
        let a = answer.answer();
        let mut meta = meta_for(a.rcode);
        meta.authentic_data = a.authentic_data && (dnssec_ok || request.metadata.authentic_data);
        let stale = outcome == Outcome::Stale;
        let aged = |rs: &[Record]| -> Vec<Record> {
            rs.iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.ttl = if stale { STALE_TTL } else { r.ttl.saturating_sub(age) };
                    r
                })
                .collect()
        };
        if let (true, Some(e)) = (stale, edns.as_mut()) {
            respond::add_ede(e, respond::EDE_STALE, "stale answer: the authorities did not answer");
        }
        let reply = Reply {
            meta,
            answers: aged(&a.answers),
            authorities: aged(&a.authorities),
            additionals: aged(&a.additionals),
            edns,
            no_question: false,
            tsig: None,
            blocked: None,
            drop: false,
        };
        (Some(reply), outcome)
    }

    /// RFC 1996 NOTIFY: `notify::decide` says whether it counts (zone,
    /// primary address, TSIG) and wakes the list's refresh if it does.
    fn notify(&self, request: &Request, edns: Option<Edns>) -> (Option<Reply>, Outcome) {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let zone = request.queries.queries().first().and_then(|q| {
            let n: Name = q.name().clone().into();
            QName::from_labels(n.iter()).ok()
        });
        let targets = self.shared.notify_targets.get().map(Vec::as_slice).unwrap_or_default();
        let d = super::notify::decide(targets, zone.as_ref(), request.src().ip(), request.as_slice(), unix_now());
        meta.response_code = d.rcode;
        meta.authoritative = d.accepted;
        let mut reply = simple(meta, edns);
        reply.tsig = d.tsig;
        (Some(reply), if d.accepted { Outcome::Forwarded } else { Outcome::Refused })
    }

    #[allow(clippy::too_many_arguments)]
    fn blocked(
        &self,
        request: &Request,
        transport: Transport,
        policy: &Arc<Policy>,
        hit: &Hit,
        qname_text: &QName,
        qname: &Name,
        qtype: RecordType,
        meta: Metadata,
        mut edns: Option<Edns>,
    ) -> (Option<Reply>, Outcome) {
        let s = &*self.shared;
        if let Some(c) = s.blocked_counters.get(hit.list.index()) {
            c.inc();
        }
        let answer = policy.answer(hit);
        let (code, mut text) = policy.ede(hit);
        if edns.is_some() {
            let max = match transport {
                Transport::Udp => usize::from(edns.as_ref().map_or(512, |e| e.max_payload())),
                _ => usize::from(u16::MAX),
            };
            let max = max.saturating_sub(BLOCKED_OVERHEAD + qname_text.as_str().len() + 6);
            if let Some(json) = s.sde_text(policy, hit, s.sde_signalled(request.edns.as_ref()), max) {
                text = json;
            }
        }
        s.log_blocked_via(policy, hit, qname_text.as_str(), qtype, transport, request.src().ip());
        let blocked = s.dnstap.as_ref().map(|_| (Arc::clone(policy), *hit));
        if answer == PolicyAnswer::Drop {
            let mut r = simple(meta, edns);
            (r.blocked, r.drop) = (blocked, true);
            return (Some(r), Outcome::Dropped);
        }
        if let Some(e) = edns.as_mut() {
            respond::add_ede(e, code, &text);
        }
        let soa_owner = soa_owner(policy, hit, qname);
        let ttl = s.sinkhole.ttl;
        let mut reply = Reply { blocked, ..simple(meta, edns) };
        match answer {
            PolicyAnswer::Nxdomain => {
                reply.meta.response_code = ResponseCode::NXDomain;
                reply.authorities.push(respond::blocked_soa(&soa_owner, ttl));
            }
            PolicyAnswer::Nodata => reply.authorities.push(respond::blocked_soa(&soa_owner, ttl)),
            PolicyAnswer::Refused => reply.meta.response_code = ResponseCode::Refused,
            PolicyAnswer::Sinkhole => {
                reply.answers = respond::sinkhole_records(qname, qtype, &s.sinkhole);
                if reply.answers.is_empty() {
                    reply.authorities.push(respond::blocked_soa(&soa_owner, ttl));
                }
            }
            PolicyAnswer::Local(data) => {
                reply.answers = respond::local_records(qname, qtype, data, ttl);
                if reply.answers.is_empty() {
                    reply.authorities.push(respond::blocked_soa(&soa_owner, ttl));
                }
            }
            PolicyAnswer::Drop => {}
        }
        (Some(reply), Outcome::Blocked)
    }
}

/// The first block hit among the answer's CNAME targets and addresses.
///
/// Cost: nothing for an answer without a CNAME when there are no IP rules
/// (the common case: two flag tests); else one pass over the answer
/// section's bytes, one `Policy::check` per CNAME (one `QName` allocation
/// each) and, when IP rules exist, a scan of them per A/AAAA record.
pub fn chain_block(policy: &Policy, w: &Wire, view: Option<&crate::policy::views::ListMask>) -> Option<Hit> {
    let ips = w.has_addr && policy.index.has_ip_rules();
    if !w.has_cname && !ips {
        return None;
    }
    each_chain_item(&w.bytes, w.question_end, w.answers, |item| {
        let verdict = match item {
            ChainItem::Target(q) => policy.check_in(q.as_name(), view),
            ChainItem::Addr(ip) if ips => policy.check_ip_in(ip, view),
            ChainItem::Addr(_) => return None,
        };
        match verdict {
            Verdict::Blocked(h) => Some(h),
            _ => None,
        }
    })
}

/// The question section for `name`/`qtype`/`qclass`: uncompressed labels,
/// type, class (what the forwarder sends upstream).
fn question_wire(name: &Name, qtype: RecordType, qclass: hickory_proto::rr::DNSClass) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 6);
    for label in name.iter() {
        out.push(u8::try_from(label.len()).unwrap_or(0));
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&u16::from(qtype).to_be_bytes());
    out.extend_from_slice(&u16::from(qclass).to_be_bytes());
    out
}

/// Owner for the synthesized SOA: the blocking rule's name when it is the
/// query name or an ancestor of it, else the query name.
fn soa_owner(policy: &Policy, hit: &Hit, qname: &Name) -> Name {
    let rule = policy.rule_text(hit.rule);
    if hit.depth > 0 && !rule.is_empty() {
        // the rule name is the query name minus `depth` leading labels
        let labels = usize::from(qname.num_labels()).saturating_sub(usize::from(hit.depth));
        return qname.trim_to(labels);
    }
    qname.clone()
}

fn simple(meta: Metadata, edns: Option<Edns>) -> Reply {
    Reply {
        meta,
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
        edns,
        no_question: false,
        tsig: None,
        blocked: None,
        drop: false,
    }
}

fn header_info(mut meta: Metadata) -> ResponseInfo {
    meta.message_type = MessageType::Response;
    ResponseInfo::from(Header { metadata: meta, counts: HeaderCounts::default() })
}

async fn send<R: ResponseHandler>(request: &Request, response: &mut R, reply: Reply) -> ResponseInfo {
    let meta = reply.meta;
    let empty = hickory_server::zone_handler::Queries::read(&mut hickory_proto::serialize::binary::BinDecoder::new(&[]), 0).ok();
    // the question is echoed only when there is exactly one: hickory echoes
    // the original question bytes, and with several (always a FORMERR or
    // REFUSED here) a compression pointer in a later one can point at bytes
    // our reply changed (fuzz finding tests/data/fuzz-regressions/packet-3.bin)
    let echo = !reply.no_question && request.queries.queries().len() == 1;
    let queries = match (&empty, echo) {
        (Some(e), false) => e,
        _ => &request.queries,
    };
    let build = || {
        MessageResponseBuilder::new(queries, reply.edns.as_ref()).build(
            meta,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        )
    };
    let mut msg = build();
    if let Some(tsig) = reply.tsig {
        // the MAC covers the reply as encoded without its TSIG record,
        // which hickory then emits last (after the OPT record)
        let unsigned = tsig.needs_reply_bytes().then(|| {
            let mut buf = Vec::with_capacity(512);
            build().destructive_emit(&mut hickory_proto::serialize::binary::BinEncoder::new(&mut buf)).ok().map(|_| buf)
        });
        if let Some(record) = tsig.record(unsigned.flatten().as_deref(), unix_now()) {
            msg.set_signature(Box::new(record));
        }
    }
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "sending reply failed");
            let mut m = meta;
            m.response_code = ResponseCode::ServFail;
            header_info(m)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
