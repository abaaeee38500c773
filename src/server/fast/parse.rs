//! The parser of the simple queries the fast path answers: header,
//! one question, at most one OPT without options ([`Simple`]).

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
        if ext != 0 || version != 0 || rdlen != 0 {
            return None; // options (cookies, ECS, …) and BADVERS go to hickory
        }
        i += 11;
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
