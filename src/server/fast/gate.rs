//! The gate every datagram passes first: the ACL (clients outside it
//! answered or dropped here), then the per-client rate limit, then the
//! query parser ([`super::parse`]).

use std::net::SocketAddr;
use std::time::Instant;

use super::parse::{parse, Simple};
use super::reply::blocked_reply;
use crate::metrics::Outcome;
use crate::name::NameBuf;
use crate::server::handler::Shared;
use crate::wire::{header, opt};

/// What [`take`] made of a datagram.
pub(super) enum Taken<'p> {
    /// A simple query from a client the fast path serves.
    Query(Simple<'p>),
    /// For the hickory path.
    Slow,
    /// Answered already (a client outside the ACL, or rate limited).
    Reply(Vec<u8>, Outcome),
    /// No reply (counted as [`Outcome::Dropped`]).
    Drop,
}

/// The gate every datagram passes first. A client outside the ACL never
/// reaches the hickory path (no task, no decode; a NOTIFY from a list's
/// primary excepted): dropped, or REFUSED within the global
/// `outside_acl_refused_qps` budget. A client inside it: the per-client
/// rate limit, checked once per query that [`parse`] takes (the rest go
/// to the hickory path, which checks it for them), then the query.
/// Cost for an allowed client: the ACL lookup, [`parse`], and one token
/// bucket when `[limits]` is on.
pub(super) fn take<'p>(s: &Shared, packet: &'p [u8], src: SocketAddr, now: Instant, qname: &mut NameBuf) -> Taken<'p> {
    if !s.acl.allows(src.ip()) {
        return outsider(s, packet, src, now, qname);
    }
    let Some(q) = parse(packet, qname) else { return Taken::Slow };
    if let Some((rl, drop)) = &s.rate_limit {
        if rl.check(src.ip(), now) == crate::server::ratelimit::Decision::Limit {
            s.metrics.rate_limited.inc();
            if *drop {
                return Taken::Drop;
            }
            let ede = (opt::EDE_PROHIBITED, &["rate limited"][..]);
            return Taken::Reply(blocked_reply(&q, 5, None, Some(ede), s.max_udp_payload), Outcome::Refused);
        }
    }
    Taken::Query(q)
}

/// [`take`] for a client outside the ACL. Never answers a response (QR
/// set) or anything shorter than a header; REFUSED echoes the question of
/// a simple query, else it is the header alone.
pub(super) fn outsider<'p>(s: &Shared, packet: &'p [u8], src: SocketAddr, now: Instant, qname: &mut NameBuf) -> Taken<'p> {
    let Some(flags) = header::flags(packet) else { return Taken::Drop };
    if flags & header::QR != 0 {
        return Taken::Drop;
    }
    if header::opcode(flags) == header::OPCODE_NOTIFY && s.is_notify_primary(src.ip()) {
        return Taken::Slow; // the handler checks zone and source (and TSIG)
    }
    if s.outsiders.drop || !s.outsiders.refused.take(now) {
        return Taken::Drop;
    }
    let reply = match parse(packet, qname) {
        Some(q) => blocked_reply(&q, 5, None, Some((opt::EDE_PROHIBITED, &["client not in allow_clients"])), s.max_udp_payload),
        None => {
            // ID, opcode and RD kept; QR, RA, REFUSED; no sections
            let mut h = packet.get(..12).map(<[u8]>::to_vec).unwrap_or_default();
            if h.len() < 12 {
                return Taken::Drop;
            }
            // opcode and RD kept
            let f = (flags & (0x7800 | header::RD)) | header::QR | header::RA | 5;
            h[2..4].copy_from_slice(&f.to_be_bytes());
            h[4..12].fill(0);
            h
        }
    };
    Taken::Reply(reply, Outcome::Refused)
}
