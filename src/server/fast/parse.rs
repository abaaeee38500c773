//! The parser of the simple queries the fast path answers: header,
//! one question, at most one OPT without options ([`Simple`]; over an
//! encrypted transport, Padding options allowed: [`parse_padded`]).

use hickory_proto::rr::{DNSClass, RecordType};

use crate::name::{NameBuf, NameRef};
use crate::resolve::cache::{Key, KeyRef};
use crate::wire::{header, u16_at};

/// A parsed simple query: one question, optionally one OPT without options.
pub(super) struct Simple<'p> {
    pub(super) id: u16,
    pub(super) rd: bool,
    pub(super) cd: bool,
    /// The client's AD bit (RFC 6840 §5.7: it asks for AD in the reply).
    pub(super) ad: bool,
    /// The question as sent (name + type + class), for echoing.
    pub(super) question: &'p [u8],
    pub(super) qtype: RecordType,
    pub(super) edns: Option<(u16, bool)>, // (payload, DO)
}

/// Parses the header and question, and normalises the name (on the
/// stack); `None` for anything the fast path leaves to hickory.
/// Cost: O(name length), no allocation.
pub(super) fn parse<'p>(p: &'p [u8], qname: &mut NameBuf) -> Option<Simple<'p>> {
    parse_with(p, qname, false)
}

/// [`parse`] for a query of an encrypted stream transport: its OPT record
/// may also carry Padding options (RFC 7830; RFC 8467 has clients pad
/// their queries), which say nothing about the answer.
pub(super) fn parse_padded<'p>(p: &'p [u8], qname: &mut NameBuf) -> Option<Simple<'p>> {
    parse_with(p, qname, true)
}

#[inline(always)]
fn parse_with<'p>(p: &'p [u8], qname: &mut NameBuf, padding: bool) -> Option<Simple<'p>> {
    let id = u16_at(p, 0)?;
    let flags = u16_at(p, 2)?;
    if flags & (header::QR | header::TC) != 0 || header::opcode(flags) != header::OPCODE_QUERY {
        return None;
    }
    if u16_at(p, 4)? != 1 || u16_at(p, 6)? != 0 || u16_at(p, 8)? != 0 {
        return None;
    }
    let arcount = u16_at(p, 10)?;
    if arcount > 1 {
        return None;
    }
    let mut i = 12 + qname.read_wire(p.get(12..)?)?;
    let qtype = RecordType::from(u16_at(p, i)?);
    let qclass = u16_at(p, i + 2)?;
    if qclass != 1 || matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::ANY | RecordType::OPT) {
        return None;
    }
    let question = p.get(12..i + 4)?;
    i += 4;
    let edns = if arcount == 1 {
        // OPT: root owner, type 41, class = payload, ttl = ext-rcode, version, flags; rdlen 0
        if *p.get(i)? != 0 || u16_at(p, i + 1)? != 41 {
            return None;
        }
        let payload = u16_at(p, i + 3)?;
        let (ext, version) = (*p.get(i + 5)?, *p.get(i + 6)?);
        let eflags = u16_at(p, i + 7)?;
        let rdlen = u16_at(p, i + 9)?;
        if ext != 0 || version != 0 || (rdlen != 0 && !(padding && only_padding(p.get(i + 11..i + 11 + usize::from(rdlen))?))) {
            return None; // options (cookies, ECS, …) and BADVERS go to hickory
        }
        i += 11 + usize::from(rdlen);
        Some((payload, eflags & 0x8000 != 0))
    } else {
        None
    };
    if i != p.len() {
        return None; // trailing bytes
    }
    Some(Simple {
        id,
        rd: flags & header::RD != 0,
        cd: flags & header::CD != 0,
        ad: flags & header::AD != 0,
        question,
        qtype,
        edns,
    })
}

/// Whether an OPT record's RDATA is Padding options (code 12) only.
fn only_padding(mut rdata: &[u8]) -> bool {
    while !rdata.is_empty() {
        let (Some(12), Some(len)) = (u16_at(rdata, 0), u16_at(rdata, 2)) else { return false };
        let Some(rest) = rdata.get(4 + usize::from(len)..) else { return false };
        rdata = rest;
    }
    true
}

impl Simple<'_> {
    /// The cache key of this query (its name owned: one allocation).
    pub(super) fn key(&self, name: NameRef<'_>, dnssec_ok: bool) -> Key {
        Key { name: name.to_qname(), qtype: self.qtype, qclass: DNSClass::IN, dnssec_ok, checking_disabled: self.cd }
    }

    /// [`Simple::key`] borrowing the name (no allocation).
    pub(super) fn key_ref<'n>(&self, name: NameRef<'n>, dnssec_ok: bool) -> KeyRef<'n> {
        KeyRef { name: name.as_str(), qtype: self.qtype, qclass: DNSClass::IN, dnssec_ok, checking_disabled: self.cd }
    }

    /// (DO, the payload size our reply may use: 512 without EDNS).
    pub(super) fn payload(&self, max_udp_payload: u16) -> (bool, u16) {
        match self.edns {
            Some((p, d)) => (d, p.max(512).min(max_udp_payload.max(512))),
            None => (false, 512),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `a.test A` with an OPT record whose RDATA is `rdata`.
    fn query(rdata: &[u8]) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0]);
        p.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
        p.extend_from_slice(rdata);
        p
    }

    #[test]
    fn padding_options_only_over_encrypted_transports() {
        let mut n = NameBuf::new();
        let padding = [0, 12, 0, 3, 0, 0, 0];
        let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let both: Vec<u8> = padding.iter().chain(cookie.iter()).copied().collect();
        let cases: &[(&[u8], bool, bool)] = &[
            // (OPT RDATA, parse, parse_padded)
            (&[], true, true),
            (&padding, false, true),
            (&[0, 12, 0, 0], false, true),
            (&[0, 12, 0, 0, 0, 12, 0, 1, 0], false, true),
            (&cookie, false, false),
            (&both, false, false),
            (&[0, 12, 0, 9, 0], false, false), // longer than the RDATA
            (&[0, 12, 0], false, false),       // a cut option header
        ];
        for (rdata, plain, padded) in cases {
            let p = query(rdata);
            assert_eq!(parse(&p, &mut n).is_some(), *plain, "parse {rdata:?}");
            let q = parse_padded(&p, &mut n);
            assert_eq!(q.is_some(), *padded, "parse_padded {rdata:?}");
            if let Some(q) = q {
                assert_eq!((q.id, q.edns, q.question), (0x1234, Some((1232, true)), &p[12..24]));
            }
        }
    }
}
