//! Reply bytes: blocked answers from a template, cache hits from the
//! cached answer with the client's ID, flags, question and OPT.

use super::parse::Simple;
use crate::resolve::cache::{Wire, STALE_TTL};
use crate::wire::{self, header, opt};

/// A blocked answer (NXDOMAIN / NODATA with SOA, or REFUSED) built from a
/// template; the EDE EXTRA-TEXT is the concatenation of its pieces.
/// Cost: one allocation of ~100 bytes plus the EDE text; the header, SOA
/// and OPT are each written as one fixed-size block.
pub(super) fn blocked_reply(q: &Simple<'_>, rcode: u8, soa: Option<(u16, u32)>, ede: Option<(u16, &[&str])>, cap: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + q.question.len());
    let flags = header::reply_flags(rcode, q.rd, q.cd, false);
    header::write(&mut out, q.id, flags, [1, 0, u16::from(soa.is_some()), u16::from(q.edns.is_some())]);
    out.extend_from_slice(q.question);
    if let Some((owner_offset, ttl)) = soa {
        wire::soa::write(&mut out, owner_offset, ttl);
    }
    if let Some((payload, dnssec_ok)) = q.edns {
        opt::write(&mut out, payload.max(512).min(cap.max(512)), dnssec_ok, ede);
    }
    out
}

/// The reply to `q` from a pre-encoded answer: a copy of it with the
/// client's ID, flags and question bytes written in, every TTL lowered by
/// `age` and an OPT record appended if the client sent one. `None` (hand to
/// the hickory path) when it would not fit `payload` (truncation) or the
/// question lengths differ. Cost: one allocation and copy of the reply, a
/// 4-byte write per record; no parsing, no name compression.
pub(super) fn from_wire(q: &Simple<'_>, w: &Wire, age: u32, ad: bool, payload: u16) -> Option<Vec<u8>> {
    encode(q, w, Ttl::Age(age), ad, payload, payload, None)
}

/// [`from_wire`] for a stream transport: `payload` goes into the OPT
/// record as on UDP, but the reply may be up to `limit` bytes (a stream
/// reply is never truncated).
pub(super) fn from_wire_within(q: &Simple<'_>, w: &Wire, age: u32, ad: bool, payload: u16, limit: u16) -> Option<Vec<u8>> {
    encode(q, w, Ttl::Age(age), ad, payload, limit, None)
}

/// A stale answer (RFC 8767) from an expired entry: as [`from_wire`] with
/// every TTL set to [`STALE_TTL`] and EDE 3 (Stale Answer) in the OPT when
/// the client sent one. Cost: as [`from_wire`].
pub(super) fn stale_from_wire(q: &Simple<'_>, w: &Wire, payload: u16) -> Option<Vec<u8>> {
    encode(q, w, Ttl::Fixed(STALE_TTL), false, payload, payload, Some((opt::EDE_STALE, &["stale answer: the upstream did not answer"])))
}

/// What the TTLs of a reply from the cache become.
enum Ttl {
    /// Lowered by the entry's age in seconds.
    Age(u32),
    /// Set to this.
    Fixed(u32),
}

/// `payload`: the size the reply's OPT record advertises; `limit`: the
/// largest reply (`None` above it).
fn encode(q: &Simple<'_>, w: &Wire, ttl: Ttl, ad: bool, payload: u16, limit: u16, ede: Option<(u16, &[&str])>) -> Option<Vec<u8>> {
    let qe = usize::from(w.question_end);
    if qe != header::LEN + q.question.len() {
        return None;
    }
    let ede_len = ede.map_or(0, |(_, t)| 6 + t.iter().map(|p| p.len()).sum::<usize>());
    let total = w.bytes.len() + if q.edns.is_some() { 11 + ede_len } else { 0 };
    if total > usize::from(limit) {
        return None;
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&w.bytes);
    let rcode = *w.bytes.get(3)? & 0x0f;
    let flags = header::reply_flags(rcode, q.rd, q.cd, ad);
    out.get_mut(0..2)?.copy_from_slice(&q.id.to_be_bytes());
    out.get_mut(2..4)?.copy_from_slice(&flags.to_be_bytes());
    out.get_mut(12..qe)?.copy_from_slice(q.question);
    match ttl {
        Ttl::Age(0) => {}
        Ttl::Age(age) => {
            for &off in w.ttl_offsets.iter() {
                let f = out.get_mut(usize::from(off)..usize::from(off) + 4)?;
                let ttl = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
                f.copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
            }
        }
        Ttl::Fixed(t) => {
            for &off in w.ttl_offsets.iter() {
                out.get_mut(usize::from(off)..usize::from(off) + 4)?.copy_from_slice(&t.to_be_bytes());
            }
        }
    }
    if let Some((client_payload, dnssec_ok)) = q.edns {
        let ar = out.get_mut(10..12)?;
        let n = u16::from_be_bytes([ar[0], ar[1]]).checked_add(1)?;
        ar.copy_from_slice(&n.to_be_bytes());
        opt::write(&mut out, client_payload.max(512).min(payload.max(512)), dnssec_ok, ede);
    }
    Some(out)
}
