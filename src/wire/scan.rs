//! One pass over an upstream reply that finds everything the forwarder,
//! the cache and the CNAME check need (rcode, flags, TTL offsets, negative
//! TTL, CNAME targets, addresses) without decoding records into hickory
//! types.

use std::net::IpAddr;

use super::header::{self, LEN as HEADER};
use super::name::{name_labels, skip_name};
use super::rtype::{A as TYPE_A, AAAA as TYPE_AAAA, CNAME as TYPE_CNAME, OPT as TYPE_OPT, SOA as TYPE_SOA};
use super::{u16_at, u32_at};
use crate::name::QName;

/// What one pass over a reply found. Offsets are into the scanned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Header rcode (4 bits; an extended rcode makes the scan fail).
    pub rcode: u8,
    pub truncated: bool,
    pub authentic_data: bool,
    /// Length of header plus question.
    pub question_end: u16,
    /// Records in the answer section.
    pub answers: u16,
    /// Offset of the TTL field of every record but the OPT.
    pub ttl_offsets: Vec<u16>,
    /// Smallest TTL in the answer section.
    pub answer_min_ttl: Option<u32>,
    /// RFC 2308 §5 for the first SOA in the authority section: min(its TTL, its MINIMUM).
    pub negative_ttl: Option<u32>,
    /// Whether the answer section has a CNAME (the chain check then reads it).
    pub has_cname: bool,
    /// Whether the answer section has an A or AAAA record.
    pub has_addr: bool,
    /// Start of the OPT record, which must be the last record.
    pub opt_at: Option<usize>,
}

/// One pass over a reply with exactly one question. `None` for anything
/// malformed, and for the rare shapes the cache's byte form cannot hold
/// as they are (an OPT that is not the last record, two OPTs, an extended
/// rcode, a message over 65535 bytes): the forwarder re-encodes those.
/// Cost: O(message length), one allocation (the TTL offsets).
pub fn scan(p: &[u8]) -> Option<Scan> {
    if p.len() > usize::from(u16::MAX) {
        return None;
    }
    let flags = u16_at(p, 2)?;
    if u16_at(p, 4)? != 1 {
        return None;
    }
    let (an, ns, ar) = (u16_at(p, 6)?, u16_at(p, 8)?, u16_at(p, 10)?);
    let mut i = skip_name(p, HEADER)? + 4;
    if i > p.len() {
        return None;
    }
    let question_end = u16::try_from(i).ok()?;
    let records = usize::from(an) + usize::from(ns) + usize::from(ar);
    let mut s = Scan {
        rcode: header::rcode(flags),
        truncated: flags & header::TC != 0,
        authentic_data: flags & header::AD != 0,
        question_end,
        answers: an,
        ttl_offsets: Vec::with_capacity(records),
        answer_min_ttl: None,
        negative_ttl: None,
        has_cname: false,
        has_addr: false,
        opt_at: None,
    };
    for k in 0..records {
        let start = i;
        i = skip_name(p, i)?;
        let rtype = u16_at(p, i)?;
        let ttl = u32_at(p, i + 4)?;
        let rdlen = usize::from(u16_at(p, i + 8)?);
        let rdata = i + 10;
        let end = rdata + rdlen;
        if end > p.len() {
            return None;
        }
        if s.opt_at.is_some() {
            return None; // a record after the OPT
        }
        if rtype == TYPE_OPT {
            // only in the additional section, owner root, no extended rcode
            if k < usize::from(an) + usize::from(ns) || start + 1 != i || ttl >> 24 != 0 {
                return None;
            }
            s.opt_at = Some(start);
            i = end;
            continue;
        }
        s.ttl_offsets.push(u16::try_from(i + 4).ok()?);
        if k < usize::from(an) {
            s.answer_min_ttl = Some(s.answer_min_ttl.map_or(ttl, |m| m.min(ttl)));
            match rtype {
                TYPE_CNAME => {
                    if skip_name(p, rdata)? != end {
                        return None;
                    }
                    s.has_cname = true;
                }
                TYPE_A if rdlen != 4 => return None,
                TYPE_AAAA if rdlen != 16 => return None,
                TYPE_A | TYPE_AAAA => s.has_addr = true,
                _ => {}
            }
        } else if k < usize::from(an) + usize::from(ns) && rtype == TYPE_SOA && s.negative_ttl.is_none() {
            let fixed = skip_name(p, skip_name(p, rdata)?)?;
            if fixed + 20 != end {
                return None;
            }
            s.negative_ttl = Some(ttl.min(u32_at(p, fixed + 16)?));
        }
        i = end;
    }
    (i == p.len()).then_some(s)
}

/// What the chain check looks at in a reply's answer section.
pub enum ChainItem {
    /// A CNAME target, normalised (names no rule can match are skipped).
    Target(QName),
    /// An A or AAAA address.
    Addr(IpAddr),
}

/// Calls `f` for every CNAME target and address in the answer section of a
/// reply `scan` accepted, until it returns `Some`. Cost: O(answer section);
/// one `QName` allocation per CNAME.
pub fn each_chain_item<T>(p: &[u8], question_end: u16, answers: u16, mut f: impl FnMut(ChainItem) -> Option<T>) -> Option<T> {
    let mut i = usize::from(question_end);
    for _ in 0..answers {
        i = skip_name(p, i)?;
        let rtype = u16_at(p, i)?;
        let rdlen = usize::from(u16_at(p, i + 8)?);
        let rdata = i + 10;
        let item = match rtype {
            TYPE_CNAME => name_labels(p, rdata)
                .and_then(|l| QName::from_labels(l.into_iter()).ok())
                .map(ChainItem::Target),
            TYPE_A => {
                let b = p.get(rdata..rdata + 4)?;
                Some(ChainItem::Addr(IpAddr::from([b[0], b[1], b[2], b[3]])))
            }
            TYPE_AAAA => {
                let b: [u8; 16] = p.get(rdata..rdata + 16)?.try_into().ok()?;
                Some(ChainItem::Addr(IpAddr::from(b)))
            }
            _ => None,
        };
        if let Some(r) = item.and_then(&mut f) {
            return Some(r);
        }
        i = rdata + rdlen;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::query::{answers, query, UPSTREAM_PAYLOAD};
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn reply(rcode: ResponseCode, answers: Vec<Record>, authorities: Vec<Record>, edns: bool) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m.add_query(Query::query(name("www.example."), RecordType::A));
        m.insert_answers(answers);
        m.insert_authorities(authorities);
        if edns {
            m.set_edns(hickory_proto::op::Edns::new());
        }
        m.to_vec().unwrap()
    }

    fn question(n: &str) -> Vec<u8> {
        let mut q = Vec::new();
        for l in n.trim_end_matches('.').split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn scan_shapes() {
        let a = |ttl| Record::from_rdata(name("www.example."), ttl, RData::A(A::new(192, 0, 2, 1)));
        let cname = Record::from_rdata(name("www.example."), 60, RData::CNAME(CNAME(name("cdn.example."))));
        let soa = Record::from_rdata(
            name("example."),
            900,
            RData::SOA(SOA::new(name("ns.example."), name("h.example."), 1, 3600, 600, 86400, 300)),
        );
        type Want = (u8, u16, usize, Option<u32>, Option<u32>, bool, bool, bool);
        let cases: &[(&str, Vec<u8>, Want)] = &[
            ("one address", reply(ResponseCode::NoError, vec![a(300)], vec![], false), (0, 1, 1, Some(300), None, false, true, false)),
            (
                "cname chain, OPT last",
                reply(ResponseCode::NoError, vec![cname.clone(), a(200)], vec![], true),
                (0, 2, 2, Some(60), None, true, true, true),
            ),
            ("nxdomain with SOA", reply(ResponseCode::NXDomain, vec![], vec![soa.clone()], true), (3, 0, 1, None, Some(300), false, false, true)),
        ];
        for (label, bytes, want) in cases {
            let s = scan(bytes).unwrap_or_else(|| panic!("case `{label}` scans"));
            let got = (s.rcode, s.answers, s.ttl_offsets.len(), s.answer_min_ttl, s.negative_ttl, s.has_cname, s.has_addr, s.opt_at.is_some());
            assert_eq!(&got, want, "case `{label}`");
            for &off in &s.ttl_offsets {
                assert!(u32_at(bytes, usize::from(off)).is_some(), "case `{label}`: offset in bounds");
            }
        }
    }

    #[test]
    fn scan_rejects_malformed() {
        let good = reply(ResponseCode::NoError, vec![Record::from_rdata(name("www.example."), 5, RData::A(A::new(1, 2, 3, 4)))], vec![], true);
        for cut in 0..good.len() {
            assert!(scan(&good[..cut]).is_none(), "truncated at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(scan(&trailing).is_none(), "trailing byte");
        let mut ext = good.clone();
        let opt_ttl = ext.len() - 6; // OPT: ext-rcode is the first TTL byte
        ext[opt_ttl] = 1;
        assert!(scan(&ext).is_none(), "extended rcode");
    }

    #[test]
    fn answers_matches_id_and_question_case_insensitively() {
        let bytes = reply(ResponseCode::NoError, vec![], vec![], false);
        assert!(answers(&bytes, 7, &question("WWW.Example.")));
        assert!(!answers(&bytes, 8, &question("www.example.")), "wrong ID");
        assert!(!answers(&bytes, 7, &question("www.example2.")), "other name");
        let mut other_type = question("www.example.");
        let n = other_type.len();
        other_type[n - 3] = 28;
        assert!(!answers(&bytes, 7, &other_type), "other type");
    }

    #[test]
    fn chain_items_follow_compression() {
        let cname = Record::from_rdata(name("www.example."), 60, RData::CNAME(CNAME(name("x.www.example."))));
        let bytes = reply(ResponseCode::NoError, vec![cname], vec![], false);
        let s = scan(&bytes).unwrap();
        let got = each_chain_item(&bytes, s.question_end, s.answers, |item| match item {
            ChainItem::Target(q) => Some(q.as_str().to_owned()),
            _ => None,
        });
        assert_eq!(got.as_deref(), Some("x.www.example"));
    }

    /// Seeded mutations of real replies (byte flips, cuts, insertions)
    /// through everything that reads an upstream reply: no panic, and what
    /// is accepted has every TTL offset inside the bytes. (The
    /// `upstream_reply` fuzz target does the same coverage-guided.)
    #[test]
    fn mutated_replies_never_panic() {
        let a = Record::from_rdata(name("www.example."), 300, RData::A(A::new(192, 0, 2, 1)));
        let cname = Record::from_rdata(name("www.example."), 60, RData::CNAME(CNAME(name("cdn.www.example."))));
        let soa = Record::from_rdata(
            name("example."),
            900,
            RData::SOA(SOA::new(name("ns.example."), name("h.example."), 1, 3600, 600, 86400, 300)),
        );
        let seeds = [
            reply(ResponseCode::NoError, vec![cname, a.clone()], vec![], true),
            reply(ResponseCode::NXDomain, vec![], vec![soa], true),
            reply(ResponseCode::NoError, vec![a], vec![], false),
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut accepted = 0;
        for round in 0..20_000 {
            let mut m = seeds[round % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % m.len().max(1);
                match next() % 4 {
                    0 | 1 => {
                        if let Some(b) = m.get_mut(at) {
                            *b = next() as u8;
                        }
                    }
                    2 => m.truncate(at),
                    _ => m.insert(at.min(m.len()), next() as u8),
                }
            }
            let _ = answers(&m, 7, &question("www.example."));
            // (`resolve::Reply::accept` on top of this: the upstream_reply fuzz target)
            if let Some(sc) = scan(&m) {
                accepted += 1;
                for &off in &sc.ttl_offsets {
                    assert!(usize::from(off) + 4 <= m.len(), "offset {off} in {:02x?}", m);
                }
                let _ = each_chain_item(&m, sc.question_end, sc.answers, |_| None::<()>);
            }
        }
        assert!(accepted > 100, "the mutations should leave some replies intact ({accepted})");
    }

    #[test]
    fn query_is_a_valid_message() {
        let q = query(&question("www.example."), 99, true, true);
        let m = Message::from_vec(&q).unwrap();
        assert_eq!(m.metadata.id, 99);
        assert!(m.metadata.recursion_desired && m.metadata.checking_disabled);
        let edns = m.edns.unwrap();
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), UPSTREAM_PAYLOAD);
    }
}
