//! Forwarding a cache miss from the fast path: no task of its own; the
//! forwarder's reader task finishes it when the upstream reply arrives.

use std::time::Instant;

use hickory_proto::rr::RecordType;
use hickory_server::net::xfer::Protocol;

use super::parse::Simple;
use super::reply::{blocked_reply, from_wire, stale_from_wire};
use crate::metrics::Outcome;
use crate::policy::Verdict;
use crate::resolve::cache::Key;
use crate::resolve::Reply;
use crate::server::handler::{chain_block, Shared};

/// A query the fast path forwards: a copy of its packet, what `parse` found
/// in it and its cache key, kept until the upstream reply arrives.
pub struct MissQuery {
    pub(super) packet: Box<[u8]>,
    pub(super) id: u16,
    pub(super) rd: bool,
    pub(super) cd: bool,
    pub(super) ad: bool,
    pub(super) qtype: RecordType,
    pub(super) edns: Option<(u16, bool)>,
    pub(super) question_len: usize,
    pub(super) key: Key,
    /// The policy generation under which the fast path found the name not
    /// blocked, and whether an allow rule matched: the reply is checked
    /// again only if a reload came in between (at 1M rules each check is a
    /// few cold cache lines).
    pub(super) checked: Option<(u64, bool)>,
    /// The client (its view decides which lists apply).
    pub(super) client: std::net::IpAddr,
}

impl MissQuery {
    pub(super) fn new(q: &Simple<'_>, packet: &[u8], key: Key, checked: Option<(u64, bool)>, client: std::net::IpAddr) -> Self {
        Self {
            packet: packet.into(),
            id: q.id,
            rd: q.rd,
            cd: q.cd,
            ad: q.ad,
            qtype: q.qtype,
            edns: q.edns,
            question_len: q.question.len(),
            key,
            checked,
            client,
        }
    }

    /// From a packet the fast path would forward (`None`: it would not).
    #[cfg(any(test, feature = "testing"))]
    pub fn parse(packet: &[u8], max_udp_payload: u16) -> Option<Self> {
        let mut qname = crate::name::NameBuf::new();
        let q = super::parse::parse(packet, &mut qname)?;
        let key = q.key(qname.as_name(), q.payload(max_udp_payload).0);
        Some(Self::new(&q, packet, key, None, std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
    }

    /// The parsed query again, borrowing the packet copy.
    pub(super) fn view(&self) -> Simple<'_> {
        Simple {
            id: self.id,
            rd: self.rd,
            cd: self.cd,
            ad: self.ad,
            question: self.packet.get(12..12 + self.question_len).unwrap_or(&[]),
            qtype: self.qtype,
            edns: self.edns,
        }
    }
}

/// Answers a cache miss from the fast path: the same forwarder, cache and
/// policy as the hickory path, without decoding the query into a hickory
/// `Request`, and without a task of its own: the forwarder's reader task
/// runs the rest (`finish_miss`) when the upstream reply arrives, and hands
/// the reply to `deliver`. `deliver(Err(packet))` means "give it to the
/// hickory path": a name the policy blocks by now, a CNAME/address in the answer
/// that a list blocks (the answer is cached first, so the hickory path
/// answers it from the cache), a reply that needs truncation, a packet that
/// does not parse. `start` is when the query was read (for the latency
/// histogram). Cost: two small copies (packet, question) and one boxed
/// callback; no task, channel or timer.
pub fn start_miss(h: &crate::server::handler::Handler, mq: MissQuery, start: Instant, deliver: Deliver) {
    let s = &*h.shared;
    let Ok(permit) = s.inflight.try_acquire() else {
        tracing::debug!("in-flight limit reached");
        s.metrics.observe(Protocol::Udp, Outcome::Servfail, start.elapsed());
        return deliver(Ok(blocked_reply(&mq.view(), 2, None, None, s.max_udp_payload)));
    };
    permit.forget(); // given back when the forwarder is done
    s.metrics.cache_misses.inc();
    if let Some(r) = &s.recurser {
        return start_recursion(h, r, mq, start, deliver);
    }
    if let Some(v) = s.validating.as_ref().filter(|_| mq.key.dnssec_ok && !mq.cd) {
        return start_recursion(h, v, mq, start, deliver);
    }
    let question = Box::<[u8]>::from(mq.view().question);
    let (dnssec_ok, cd) = (mq.key.dnssec_ok, mq.cd);
    let handler = h.clone();
    s.forwarder.resolve_then(
        question,
        dnssec_ok,
        cd,
        Box::new(move |r| {
            handler.shared.inflight.add_permits(1);
            finish_miss(&handler.shared, mq, start, r, deliver);
        }),
    );
}

/// [`start_miss`] in recursive mode: the iterator runs as a task (it
/// awaits many authorities), then the reply goes the forwarded reply's way.
/// A chain the iterator cut at a blocked target is not cacheable: the
/// hickory path answers it (it blocks it).
fn start_recursion(
    h: &crate::server::handler::Handler,
    r: &std::sync::Arc<crate::resolve::recurse::Recurser>,
    mq: MissQuery,
    start: Instant,
    deliver: Deliver,
) {
    let (handler, r) = (h.clone(), std::sync::Arc::clone(r));
    tokio::spawn(async move {
        let s = &*handler.shared;
        // the name as the client wrote it (case kept: the reply echoes it)
        let labels = crate::wire::name::name_labels(&mq.packet, 12);
        let name = labels.and_then(|l| hickory_proto::rr::Name::from_labels(l).ok()).map(|mut n| {
            n.set_fqdn(true);
            n
        });
        let Some(name) = name else {
            s.inflight.add_permits(1);
            return deliver(Err(mq.packet));
        };
        let policy = s.policy.load_full();
        let allowed = matches!(mq.checked, Some((g, true)) if g == policy.generation);
        // answered meanwhile by an identical miss that ran before this task
        // (one that never had to wait for the network holds no in-flight entry)
        if let Some(entry) = s.cache.get(&mq.key, Instant::now()) {
            s.inflight.add_permits(1);
            let q = mq.view();
            let ad = entry.wire.authentic_data && (mq.key.dnssec_ok || q.ad);
            let reply = (allowed || chain_block(&policy, &entry.wire, s.view_of(mq.client)).is_none())
                .then(|| from_wire(&q, &entry.wire, entry.age(Instant::now()), ad, q.payload(s.max_udp_payload).1))
                .flatten();
            return match reply {
                Some(r) => {
                    s.metrics.cache_hits.inc();
                    s.metrics.observe(Protocol::Udp, Outcome::Cached, start.elapsed());
                    deliver(Ok(r))
                }
                None => deliver(Err(mq.packet)),
            };
        }
        let blocked = |n: &hickory_proto::rr::Name| {
            !allowed
                && crate::name::QName::from_labels(n.iter()).is_ok_and(|q| matches!(policy.check_in(q.as_name(), s.view_of(mq.client)), Verdict::Blocked(_)))
        };
        let result = r.resolve(&name, mq.key.qtype, mq.key.qclass, mq.key.dnssec_ok, mq.cd, &blocked).await;
        s.inflight.add_permits(1);
        match result {
            Ok(done) if !done.cacheable => deliver(Err(mq.packet)),
            other => finish_miss(s, mq, start, other.map(|d| d.reply), deliver),
        }
    });
}

/// Where a forwarded miss's reply goes; `Err(packet)`: the query, for the hickory path.
pub type Deliver = Box<dyn FnOnce(Result<Vec<u8>, Box<[u8]>>) + Send>;

/// The reply to a forwarded miss once the forwarder is done (see [`start_miss`]).
fn finish_miss(s: &Shared, mq: MissQuery, start: Instant, r: Result<Reply, crate::resolve::ResolveError>, deliver: Deliver) {
    let q = mq.view();
    let reply = match r {
        // an upstream's SERVFAIL is a failure too (RFC 8767 §4)
        Ok(r) if r.scan.rcode == 2 && s.cache.serves_stale() => match stale(s, &mq, &q) {
            Some(reply) => {
                s.metrics.stale_answers.inc();
                s.metrics.observe(Protocol::Udp, Outcome::Stale, start.elapsed());
                return deliver(Ok(reply));
            }
            None => r,
        },
        Ok(r) => r,
        Err(crate::resolve::ResolveError::Recursion(crate::resolve::recurse::Failure::Bogus(b))) => {
            // DNSSEC bogus: SERVFAIL saying why (RFC 8914), never a stale answer
            s.metrics.observe(Protocol::Udp, Outcome::Servfail, start.elapsed());
            let text = b.to_string();
            return deliver(Ok(blocked_reply(&q, 2, None, Some((b.ede_code(), &[text.as_str()])), s.max_udp_payload)));
        }
        Err(e) => {
            tracing::debug!(name = %mq.key.name, error = %e, "upstream failed");
            if let Some(reply) = stale(s, &mq, &q) {
                s.metrics.stale_answers.inc();
                s.metrics.observe(Protocol::Udp, Outcome::Stale, start.elapsed());
                return deliver(Ok(reply));
            }
            s.metrics.observe(Protocol::Udp, Outcome::Servfail, start.elapsed());
            return deliver(Ok(blocked_reply(&q, 2, None, None, s.max_udp_payload)));
        }
    };
    let payload = q.payload(s.max_udp_payload).1;
    let now = Instant::now();
    let policy = s.policy.load();
    // (blocked, allowed) under the policy now in force
    let (blocked, allowed) = match mq.checked {
        Some((generation, allowed)) if generation == policy.generation => (false, allowed),
        _ => match policy.check_in(mq.key.name.as_name(), s.view_of(mq.client)) {
            Verdict::Blocked(_) => (true, false),
            Verdict::Allowed(_) => (false, true),
            Verdict::Pass => (false, false),
        },
    };
    let (entry, _cached) = s.cache.insert(&mq.key, reply, now);
    let chain_blocked = blocked || (!allowed && chain_block(&policy, &entry.wire, s.view_of(mq.client)).is_some());
    if !chain_blocked {
        entry.set_passed(policy.generation);
    }
    // chain-blocked: the hickory path builds the blocked answer from the
    // cache entry (an uncacheable cloaked answer, TTL 0, is asked for again:
    // rare); not cacheable (TTL 0, SERVFAIL or REFUSED from every server, …):
    // answered as it came, like the hickory path does
    let ad = entry.wire.authentic_data && (mq.key.dnssec_ok || q.ad);
    match (!chain_blocked).then(|| from_wire(&q, &entry.wire, 0, ad, payload)).flatten() {
        Some(reply) => {
            let outcome = if s.recurser.is_some() { Outcome::Recursed } else { Outcome::Forwarded };
            s.metrics.observe(Protocol::Udp, outcome, now.saturating_duration_since(start));
            deliver(Ok(reply));
        }
        None => {
            tracing::debug!(name = %mq.key.name, qtype = %mq.qtype, chain_blocked, "forwarded answer left to the hickory path");
            deliver(Err(mq.packet));
        }
    }
}

/// RFC 8767: a stale answer for a miss whose resolution failed, when
/// serve-stale is on, an expired entry is within `stale_max_s` and the
/// policy in force lets it through (name and chain, as for a hit).
fn stale(s: &Shared, mq: &MissQuery, q: &Simple<'_>) -> Option<Vec<u8>> {
    let entry = s.cache.get_stale(&mq.key, Instant::now())?;
    let policy = s.policy.load();
    let view = s.view_of(mq.client);
    let allowed = match policy.check_in(mq.key.name.as_name(), view) {
        Verdict::Blocked(_) => return None,
        Verdict::Allowed(_) => true,
        Verdict::Pass => false,
    };
    if !allowed && chain_block(&policy, &entry.wire, view).is_some() {
        return None;
    }
    stale_from_wire(q, &entry.wire, q.payload(s.max_udp_payload).1)
}

/// [`start_miss`] awaited: the reply to send, or the hickory path's.
#[cfg(any(test, feature = "testing"))]
pub async fn miss(s: &Shared, handler: &crate::server::handler::Handler, packet: &[u8], src: std::net::SocketAddr) -> Option<Vec<u8>> {
    let Some(mq) = MissQuery::parse(packet, s.max_udp_payload) else {
        return crate::server::slow::handle_bytes(handler, packet, src).await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    start_miss(handler, mq, Instant::now(), Box::new(move |r| {
        let _ = tx.send(r);
    }));
    match rx.await {
        Ok(Ok(reply)) => Some(reply),
        _ => crate::server::slow::handle_bytes(handler, packet, src).await,
    }
}
