//! The UDP fast path: one task per UDP socket (one socket per runtime
//! worker) reads datagrams in batches (`recvmmsg`) and answers the common
//! cases right there: blocked names (nxdomain, nodata, refused) from a
//! template, cache hits by copying the cached answer, all of them sent in
//! one `sendmmsg`. Cache misses are forwarded from here too, the batch's
//! queries together (the send batch, [`crate::sys::outbox::batch`]); the
//! upstream socket's reader completes them. Clients outside the ACL are
//! answered here too, before any parsing beyond the header: dropped, or
//! REFUSED within a global budget (`[server] outside_acl`); so is the
//! per-client rate limit, and blocked queries are logged from here.
//! Everything else (unusual packets, other actions, EDNS options we do not
//! handle, CNAME-blocked answers) is handed to the hickory path unchanged,
//! which answers it on the same socket.
//!
//! One source of truth: the fast path reads the same `Policy` snapshot, the
//! same cache and the same metrics as the hickory path; the differential
//! integration test compares both paths' answers over many names.
//!
//! Files, each importing only the ones after it: [`run`] (the socket
//! loop), [`stream`] (one query of an encrypted stream transport: DoT, DoH,
//! DoQ), this file (deciding one query: cache, policy), [`miss`]
//! (forwarding a cache miss from here), [`gate`] (the gate every datagram
//! passes: ACL, rate limit), [`reply`] (reply bytes), [`parse`] (the query
//! parser).

mod gate;
mod miss;
mod parse;
mod reply;
mod run;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{Outcome, Transport};
use crate::name::NameRef;
use crate::policy::{Answer as PolicyAnswer, Policy, Verdict};
use crate::resolve::cache::Entry;

use super::handler::{chain_block, Shared};
#[cfg(any(test, feature = "testing"))]
pub use miss::miss;
pub use miss::{start_miss, Deliver, MissQuery};
use parse::Simple;
use reply::{blocked_reply, from_wire};
pub use run::run_async;
pub use stream::{answer_stream, Stream};

/// What the fast path decided for one datagram.
pub enum Fast {
    /// A reply, and the outcome to record for it.
    Reply(Vec<u8>, Outcome),
    /// Hand to the hickory path.
    Slow,
    /// No reply (a client outside the ACL, or rate limited with `drop`).
    Drop,
    /// Not cached: forward it from the fast path ([`start_miss`]).
    Miss(MissQuery),
}

/// Decides one datagram. Never blocks; never panics on input.
///
/// `now` is when the datagram's batch was read; the caller records the
/// reply's latency (`Fast::Reply`'s outcome) once the batch is sent, so the
/// fast path reads the clock once per batch, not twice per query.
#[cfg(any(test, feature = "testing"))]
pub fn answer(s: &Shared, packet: &[u8], src: SocketAddr, now: Instant) -> Fast {
    answer_with(s, &s.policy.load(), packet, src, now)
}

/// [`answer`] under a policy snapshot the caller holds (the batch loop
/// takes one per batch: a reload applies from the next batch on).
///
/// The cache is asked first: an entry that already passed this policy
/// generation ([`Entry::passed`](crate::resolve::cache::Entry::passed)) is
/// answered without touching the policy index, so a cache hit costs the same
/// with 100k or 1M rules. Everything else is decided by the policy: a
/// blocked name is answered from the template; a cached answer is checked
/// (name, then CNAME chain and addresses) and stamped with the generation.
#[cfg(any(test, feature = "testing"))]
fn answer_with(s: &Shared, policy: &Arc<Policy>, packet: &[u8], src: SocketAddr, now: Instant) -> Fast {
    use gate::{take, Taken};
    let mut qname = crate::name::NameBuf::new();
    match take(s, packet, src, now, &mut qname) {
        Taken::Query(q) => answer_parsed(s, policy, &q, qname.as_name(), packet, src, now),
        Taken::Slow => Fast::Slow,
        Taken::Reply(r, o) => Fast::Reply(r, o),
        Taken::Drop => Fast::Drop,
    }
}

/// [`answer_with`] for a query [`take`] parsed.
/// `name` is the query name `take` read ([`crate::name::NameBuf::as_name`] checks the
/// text is UTF-8: once per query).
#[cfg(any(test, feature = "testing"))]
fn answer_parsed(s: &Shared, policy: &Arc<Policy>, q: &Simple<'_>, name: NameRef<'_>, packet: &[u8], src: SocketAddr, now: Instant) -> Fast {
    let (dnssec_ok, _) = q.payload(s.max_udp_payload);
    let cached = s.cache.get_ref(&q.key_ref(name, dnssec_ok), now);
    let f = match cached.as_deref().and_then(|entry| passed_reply(s, policy, q, entry, now)) {
        Some(f) => f,
        None => decide(s, policy, q, name, packet, src, now, cached),
    };
    // the batch loop counts its hits once per batch instead
    if matches!(f, Fast::Reply(_, Outcome::Cached)) {
        s.metrics.cache_hits.inc();
    }
    f
}

/// The reply to a query whose cache entry already passed this policy
/// generation ([`Entry::passed`]): the cached answer, policy untouched.
/// `None` when the entry has not passed it (the policy decides: [`decide`]).
/// Counts nothing and does no atomic read-modify-write (it runs under the
/// cache's locks in [`Cache::get_batch`](crate::resolve::cache::Cache::get_batch)).
fn passed_reply(s: &Shared, policy: &Policy, q: &Simple<'_>, entry: &Entry, now: Instant) -> Option<Fast> {
    skips_policy(s, policy, entry).then(|| {
        let (dnssec_ok, payload) = q.payload(s.max_udp_payload);
        cached_reply(q, entry, now, dnssec_ok, payload)
    })
}

/// Whether a cache hit may be answered without the policy, on every
/// transport: it passed this policy generation ([`Entry::passed`]), no
/// shadow list has to count it (then every query goes through [`decide`]),
/// and there are no views (an entry passed for one client's view may be
/// blocked in another's). Cost: one relaxed load and two branches.
fn skips_policy(s: &Shared, policy: &Policy, entry: &Entry) -> bool {
    entry.passed(policy.generation) && !policy.has_shadow && s.views.is_none()
}

/// [`answer_parsed`] once the cache was asked (`cached`: its live entry, if
/// any, that has not passed this policy generation): the policy decides.
#[allow(clippy::too_many_arguments)]
#[inline]
fn decide(
    s: &Shared,
    policy: &Arc<Policy>,
    q: &Simple<'_>,
    name: NameRef<'_>,
    packet: &[u8],
    src: SocketAddr,
    now: Instant,
    cached: Option<Arc<Entry>>,
) -> Fast {
    decide_via(s, policy, q, name, packet, src, now, cached, Transport::Udp)
}

/// [`decide`] for a query that came over `transport`: the blocked-query log
/// names it; over a stream transport ([`stream`]) a cached reply is not
/// limited to the client's UDP payload size, and a miss is
/// [`Fast::Slow`] (the hickory path forwards it).
/// Shadow lists are counted here only for what this path answers (or
/// forwards) itself: a query handed to the hickory path ([`Fast::Slow`]) is
/// counted there, once.
#[allow(clippy::too_many_arguments)]
fn decide_via(
    s: &Shared,
    policy: &Arc<Policy>,
    q: &Simple<'_>,
    name: NameRef<'_>,
    packet: &[u8],
    src: SocketAddr,
    now: Instant,
    cached: Option<Arc<Entry>>,
    transport: Transport,
) -> Fast {
    let decided = decide_policy(s, policy, q, name, packet, src, now, cached, transport);
    if policy.has_shadow && !matches!(decided, Fast::Slow) {
        s.count_shadow(policy, name, src.ip(), transport, q.qtype);
    }
    decided
}

/// [`decide_via`] without the shadow lists.
#[allow(clippy::too_many_arguments)]
#[inline]
fn decide_policy(
    s: &Shared,
    policy: &Arc<Policy>,
    q: &Simple<'_>,
    name: NameRef<'_>,
    packet: &[u8],
    src: SocketAddr,
    now: Instant,
    cached: Option<Arc<Entry>>,
    transport: Transport,
) -> Fast {
    let (dnssec_ok, payload) = q.payload(s.max_udp_payload);
    let view = s.view_of(src.ip());
    let verdict = policy.check_in(name, view);
    if let Verdict::Blocked(hit) = verdict {
        let (rcode, soa) = match policy.answer(&hit) {
            PolicyAnswer::Nxdomain => (3u8, true),
            PolicyAnswer::Nodata => (0, true),
            PolicyAnswer::Refused => (5, false),
            _ => return Fast::Slow,
        };
        let soa = if soa {
            let idx = usize::from(hit.depth);
            // a label's wire offset is its text offset plus the header
            let Some(off) = name.label_start(idx) else { return Fast::Slow };
            Some((12 + u16::from(off), s.sinkhole.ttl))
        } else {
            None
        };
        let (code, text) = policy.ede_parts(&hit);
        // a fast-path query has no options: no signal, JSON only with
        // `[sde] mode = "always"` (one branch otherwise)
        let json = q.edns.and_then(|_| {
            let max = if transport == Transport::Udp { usize::from(payload) } else { usize::from(u16::MAX) };
            s.sde_text(policy, &hit, false, max.saturating_sub(super::handler::BLOCKED_OVERHEAD + q.question.len()))
        });
        let reply = match &json {
            Some(j) => blocked_reply(q, rcode, soa, Some((code, &[j.as_str()])), s.max_udp_payload),
            None => blocked_reply(q, rcode, soa, Some((code, &text)), s.max_udp_payload),
        };
        s.log_blocked_via(policy, &hit, name.as_str(), q.qtype, transport, src.ip());
        if let Some(tap) = &s.dnstap {
            tap.log(packet, Some(&reply), src, transport, None, Some((policy, &hit)));
        }
        if let Some(c) = s.blocked_counters.get(hit.list.index()) {
            c.inc();
        }
        return Fast::Reply(reply, Outcome::Blocked);
    }
    let Some(entry) = cached else {
        // DDR and the canary are answered on the hickory path (never cached)
        if transport != Transport::Udp || s.discovery.get().is_some_and(|d| d.takes(name.as_str())) {
            return Fast::Slow;
        }
        let checked = Some((policy.generation, matches!(verdict, Verdict::Allowed(_))));
        return Fast::Miss(MissQuery::new(q, packet, q.key(name, dnssec_ok), checked, src.ip()));
    };
    if !matches!(verdict, Verdict::Allowed(_)) && chain_block(policy, &entry.wire, view).is_some() {
        return Fast::Slow;
    }
    entry.set_passed(policy.generation);
    if transport != Transport::Udp {
        return cached_reply_within(q, &entry, now, dnssec_ok, payload, u16::MAX);
    }
    cached_reply(q, &entry, now, dnssec_ok, payload)
}

/// A cache hit's reply (the policy let it through). The caller counts it.
fn cached_reply(q: &Simple<'_>, entry: &Entry, now: Instant, dnssec_ok: bool, payload: u16) -> Fast {
    let ad = entry.wire.authentic_data && (dnssec_ok || q.ad);
    let Some(reply) = from_wire(q, &entry.wire, entry.age(now), ad, payload) else { return Fast::Slow };
    Fast::Reply(reply, Outcome::Cached)
}

/// [`cached_reply`] of up to `limit` bytes (a stream transport's).
fn cached_reply_within(q: &Simple<'_>, entry: &Entry, now: Instant, dnssec_ok: bool, payload: u16, limit: u16) -> Fast {
    let ad = entry.wire.authentic_data && (dnssec_ok || q.ad);
    let Some(reply) = reply::from_wire_within(q, &entry.wire, entry.age(now), ad, payload, limit) else { return Fast::Slow };
    Fast::Reply(reply, Outcome::Cached)
}
