//! Reply pieces: the reply's OPT record (never the upstream's), EDE options,
//! synthesized SOA for blocked names, sinkhole and RPZ local-data records.

use std::str::FromStr;

use hickory_proto::op::Edns;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::policy::Sinkhole;
use crate::rules::LocalData;

pub use crate::wire::opt::{EDE_OPTION, EDE_PROHIBITED, EDE_STALE};

/// The OPT record for a reply to a request that had `req` (RFC 6891 §6.1.1):
/// version 0, our payload size `min(max(req, 512), cap)`, DO mirrored.
/// `None` when the request had no OPT (then the reply must not have one).
pub fn reply_edns(req: Option<&Edns>, cap: u16) -> Option<Edns> {
    let req = req?;
    let mut e = Edns::new();
    e.set_version(0);
    e.set_max_payload(req.max_payload().max(512).min(cap.max(512)));
    e.set_dnssec_ok(req.flags().dnssec_ok);
    Some(e)
}

/// Adds an Extended DNS Error option (RFC 8914 §2: INFO-CODE, then UTF-8 EXTRA-TEXT).
pub fn add_ede(edns: &mut Edns, code: u16, text: &str) {
    let mut data = Vec::with_capacity(2 + text.len());
    data.extend_from_slice(&code.to_be_bytes());
    data.extend_from_slice(text.as_bytes());
    edns.options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(EDE_OPTION, data));
}

/// A name from normalised text ("" = root).
pub fn fqdn(text: &str) -> Option<Name> {
    if text.is_empty() {
        return Some(Name::root());
    }
    Name::from_str(&format!("{text}.")).ok()
}

/// The SOA put in the authority section of blocked negative answers so that
/// clients cache them for the sinkhole TTL (RFC 2308 §3); the template is
/// [`crate::wire::soa`]'s, as the fast path writes it.
pub fn blocked_soa(owner: &Name, ttl: u32) -> Record {
    use crate::wire::soa::{MNAME, RNAME, TIMERS};
    static NAMES: std::sync::OnceLock<(Name, Name)> = std::sync::OnceLock::new();
    let (mname, rname) = NAMES.get_or_init(|| {
        (
            Name::from_ascii(MNAME).unwrap_or_else(|_| Name::root()),
            Name::from_ascii(RNAME).unwrap_or_else(|_| Name::root()),
        )
    });
    let [serial, refresh, retry, expire] = TIMERS;
    let soa = SOA::new(mname.clone(), rname.clone(), serial, refresh as i32, retry as i32, expire as i32, ttl);
    Record::from_rdata(owner.clone(), ttl, RData::SOA(soa))
}

/// Sinkhole records for `qtype` (empty for types other than A/AAAA = NODATA).
pub fn sinkhole_records(qname: &Name, qtype: RecordType, s: &Sinkhole) -> Vec<Record> {
    match qtype {
        RecordType::A => vec![Record::from_rdata(qname.clone(), s.ttl, RData::A(A(s.a)))],
        RecordType::AAAA => vec![Record::from_rdata(qname.clone(), s.ttl, RData::AAAA(AAAA(s.aaaa)))],
        _ => Vec::new(),
    }
}

/// RPZ local data records that answer `qtype` (a CNAME answers every type).
pub fn local_records(qname: &Name, qtype: RecordType, data: &[LocalData], ttl: u32) -> Vec<Record> {
    let mut out = Vec::new();
    for d in data {
        let rdata = match d {
            LocalData::A(ip) if qtype == RecordType::A => RData::A(A(*ip)),
            LocalData::Aaaa(ip) if qtype == RecordType::AAAA => RData::AAAA(AAAA(*ip)),
            LocalData::Txt(t) if qtype == RecordType::TXT => RData::TXT(TXT::new(vec![t.clone()])),
            LocalData::Cname(target) => match fqdn(target) {
                Some(n) => RData::CNAME(CNAME(n)),
                None => continue,
            },
            _ => continue,
        };
        out.push(Record::from_rdata(qname.clone(), ttl, rdata));
    }
    out
}
