//! The fast path for one query of an encrypted stream transport (DoT, DoH,
//! DoQ), called from the connection's task: the datagram's steps for one
//! message (the ACL, the parser, the rate limit, then the cache and the
//! policy through [`decide_via`]) and the same reply bytes, padded to
//! 468-byte blocks (RFC 8467). What differs from UDP: the query may carry
//! Padding options, a cached reply is not cut to the client's UDP payload
//! size, the blocked-query log and the metrics name the transport, and a
//! miss goes to the hickory path (which forwards it and caches the
//! answer), as does everything the datagram fast path leaves to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::parse::parse_padded;
use super::reply::blocked_reply;
use super::{cached_reply_within, decide_via, skips_policy, Fast};
use crate::metrics::{Outcome, Transport};
use crate::name::NameBuf;
use crate::server::handler::Shared;
use crate::wire::{opt, pad};

/// What [`answer_stream`] made of one message.
pub enum Stream {
    /// The reply, padded; counted.
    Reply(Vec<u8>),
    /// No reply (rate limited with `drop`); counted.
    Drop,
    /// For the hickory path. `rate_checked`: the per-client rate limit was
    /// already applied to this query (the hickory path must not take a
    /// second token for it).
    Slow { rate_checked: bool },
}

/// Answers one message that came over `transport` (an encrypted one) from
/// `src` when it is a simple query for a blocked name or a cache hit the
/// policy lets through; records its metrics like the hickory path does
/// (`qalqan_queries_total{protocol}`, cache hits, blocked by list).
/// Never blocks; never panics on input. Cost: as a datagram's
/// ([`super::answer`]) plus the padding (one reallocation) and two clock
/// reads.
pub fn answer_stream(s: &Arc<Shared>, packet: &[u8], src: SocketAddr, transport: Transport) -> Stream {
    let now = Instant::now();
    // connections from outside the ACL are closed at accept; whatever else
    // reaches here is refused by the hickory path (REFUSED with EDE 18)
    if !s.acl.allows(src.ip()) {
        return Stream::Slow { rate_checked: false };
    }
    let mut qname = NameBuf::new();
    let Some(q) = parse_padded(packet, &mut qname) else { return Stream::Slow { rate_checked: false } };
    let done = |mut reply: Vec<u8>, outcome: Outcome| {
        // blocked replies went to dnstap with their policy (`decide_via`)
        if let (Some(tap), false) = (&s.dnstap, outcome == Outcome::Blocked) {
            tap.log(packet, Some(&reply), src, transport, None, None);
        }
        pad::pad(&mut reply, pad::RESPONSE_BLOCK);
        s.metrics.observe(transport, outcome, now.elapsed());
        Stream::Reply(reply)
    };
    if let Some((rl, drop)) = &s.rate_limit {
        if rl.check(src.ip(), now) == crate::server::ratelimit::Decision::Limit {
            s.metrics.rate_limited.inc();
            if *drop {
                s.metrics.observe(transport, Outcome::Dropped, now.elapsed());
                return Stream::Drop;
            }
            let ede = (opt::EDE_PROHIBITED, &["rate limited"][..]);
            return done(blocked_reply(&q, 5, None, Some(ede), s.max_udp_payload), Outcome::Refused);
        }
    }
    let name = qname.as_name();
    let policy = s.policy.load();
    let (dnssec_ok, payload) = q.payload(s.max_udp_payload);
    let cached = s.cache.get_ref(&q.key_ref(name, dnssec_ok), now);
    if let Some(entry) = &cached {
        // hits in their entry's last tenth: refreshed in the background ([cache] prefetch)
        if s.prefetch && entry.claim_prefetch(now) {
            crate::server::handler::prefetch(s, q.key(name, dnssec_ok), Box::from(q.question));
        }
    }
    let passed = cached.as_deref().filter(|e| skips_policy(s, &policy, e));
    let decided = match passed {
        Some(entry) => cached_reply_within(&q, entry, now, dnssec_ok, payload, u16::MAX),
        None => decide_via(s, &policy, &q, name, packet, src, now, cached, transport),
    };
    match decided {
        Fast::Reply(reply, outcome) => {
            if outcome == Outcome::Cached {
                s.metrics.cache_hits.inc();
            }
            done(reply, outcome)
        }
        Fast::Drop => {
            s.metrics.observe(transport, Outcome::Dropped, now.elapsed());
            Stream::Drop
        }
        Fast::Slow | Fast::Miss(_) => Stream::Slow { rate_checked: true },
    }
}
