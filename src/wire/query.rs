//! The query we send upstream, the rule a reply must meet to answer it,
//! and the reply a cut datagram amounts to.

use super::header::{self, LEN as HEADER};
use super::name::skip_name;
use super::u16_at;

/// Payload size we advertise upstream (DNS flag day 2020).
pub const UPSTREAM_PAYLOAD: u16 = 1232;

/// The upstream query for `question` (name as uncompressed labels, type,
/// class): RD, CD as asked, one OPT advertising [`UPSTREAM_PAYLOAD`] with DO
/// as asked, no options. Cost: one allocation of `question.len() + 23` bytes.
pub fn query(question: &[u8], id: u16, checking_disabled: bool, dnssec_ok: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + question.len() + 11);
    let flags = header::RD | if checking_disabled { header::CD } else { 0 };
    header::write(&mut out, id, flags, [1, 0, 0, 1]);
    out.extend_from_slice(question);
    super::opt::write(&mut out, UPSTREAM_PAYLOAD, dnssec_ok, None);
    out
}

/// The query we send an authority in recursive mode (RFC 1034 §5.3.3):
/// RD and CD clear, one OPT advertising [`UPSTREAM_PAYLOAD`] with DO as
/// asked. Cost: one allocation of `question.len() + 23` bytes.
pub fn iterative(question: &[u8], id: u16, dnssec_ok: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + question.len() + 11);
    header::write(&mut out, id, 0, [1, 0, 0, 1]);
    out.extend_from_slice(question);
    super::opt::write(&mut out, UPSTREAM_PAYLOAD, dnssec_ok, None);
    out
}

/// A question section from a name's labels (uncompressed, case kept), type
/// and class. Labels longer than 63 bytes cannot come from a parsed name;
/// they would be cut to 0 rather than panic. Cost: one allocation.
pub fn question<'a>(labels: impl Iterator<Item = &'a [u8]>, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for label in labels {
        out.push(u8::try_from(label.len()).unwrap_or(0));
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    out
}

/// Whether `reply` is a response to our query `id` for `question`: same ID,
/// QR set, opcode QUERY, exactly one question equal to ours (the name
/// case-insensitively, as RFC 4343 wants; type and class exactly).
/// Cost: O(question length), no allocation.
pub fn answers(reply: &[u8], id: u16, question: &[u8]) -> bool {
    let (Some(rid), Some(flags), Some(qd)) = (u16_at(reply, 0), u16_at(reply, 2), u16_at(reply, 4)) else {
        return false;
    };
    if rid != id || flags & header::QR == 0 || header::opcode(flags) != header::OPCODE_QUERY || qd != 1 || question.len() < 5 {
        return false;
    }
    let Some(got) = reply.get(HEADER..HEADER + question.len()) else { return false };
    let split = question.len() - 4;
    got[..split].eq_ignore_ascii_case(&question[..split]) && got[split..] == question[split..]
}

/// A datagram that did not fit our receive buffer, cut to its header and
/// first question with TC set and no records: the reply "too big, ask over
/// TCP" it amounts to (RFC 1035 §4.2.1; we advertise
/// [`UPSTREAM_PAYLOAD`], so an upstream that sends more broke the limit).
/// `None` when not even the question is there. Cost: O(question).
pub fn cut_to_question(p: &[u8]) -> Option<Vec<u8>> {
    if u16_at(p, 4)? == 0 {
        return None;
    }
    let end = skip_name(p, HEADER)? + 4;
    let mut out = p.get(..end)?.to_vec();
    *out.get_mut(2)? |= (header::TC >> 8) as u8;
    out.get_mut(4..12)?.copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    Some(out)
}

