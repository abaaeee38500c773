//! What an authority's reply to one iterative query amounts to (answer,
//! referral, NXDOMAIN, NODATA or lame), keeping only what the server may
//! speak for: records at or below the zone we asked it about (bailiwick).

use std::net::IpAddr;

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// One authority's reply, sorted out.
#[derive(Debug)]
pub(super) enum Response {
    /// The server holds the name: `records` are the answer section's chain
    /// from the asked name (CNAMEs in order, then the asked type, each with
    /// its RRSIGs), all inside the zone. `next` is set when the chain goes on
    /// to a name this reply did not answer (out of the zone, or left out):
    /// the caller resolves it. `rcode` is NXDOMAIN when the chain ends in a
    /// name that does not exist.
    Answer { records: Vec<Record>, next: Option<Name>, rcode: ResponseCode, authority: Vec<Record> },
    /// The zone is cut below: ask the child's servers.
    Referral(Delegation),
    /// The name does not exist (authority: SOA, NSEC/NSEC3 and RRSIGs in the zone).
    NxDomain { authority: Vec<Record> },
    /// The name exists without the asked type.
    NoData { authority: Vec<Record> },
    /// Nothing usable from this server for this zone (REFUSED, SERVFAIL, an
    /// upward or sideways referral, a non-authoritative non-referral, a
    /// reply out of bailiwick): ask another server.
    Lame(&'static str),
}

/// A zone cut learnt from a referral.
#[derive(Debug, Clone)]
pub(super) struct Delegation {
    /// The child zone: strictly below the zone asked, at or above the name.
    pub zone: Name,
    pub ns: Vec<Name>,
    /// Addresses of NS names found in the additional section, only for
    /// names inside the zone that referred (the parent is authoritative there).
    pub glue: Vec<(Name, IpAddr)>,
    /// TTL of the NS set (the cut is forgotten after it).
    pub ttl: u32,
    /// DS records and their RRSIGs, and the NSEC/NSEC3 records proving there
    /// is no DS (for the validator).
    pub security: Vec<Record>,
}

/// Sorts `reply` (already matched to our question `qname`/`qtype`) as the
/// answer of a server for `zone`.
///
/// Cost: one pass over each section, clones only the records kept.
pub(super) fn classify(reply: Message, qname: &Name, qtype: RecordType, zone: &Name) -> Response {
    let rcode = reply.metadata.response_code;
    if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
        return Response::Lame("error rcode");
    }
    let in_zone = |r: &&Record| zone.zone_of(&r.name);
    let answers: Vec<&Record> = reply.answers.iter().filter(in_zone).collect();
    if !answers.is_empty() {
        if !reply.metadata.authoritative {
            return Response::Lame("answer without AA");
        }
        if let Some((records, mut next, found_end)) = chain(&answers, qname, qtype) {
            let authority: Vec<Record> = reply.authorities.iter().filter(in_zone).cloned().collect();
            // NXDOMAIN speaks of the chain's last name: one this server
            // holds (in the zone) does not exist
            let mut end_rcode = ResponseCode::NoError;
            if rcode == ResponseCode::NXDomain && !found_end {
                match &next {
                    None => end_rcode = ResponseCode::NXDomain,
                    Some(t) if zone.zone_of(t) => {
                        next = None;
                        end_rcode = ResponseCode::NXDomain;
                    }
                    Some(_) => {}
                }
            }
            return Response::Answer { records, next, rcode: end_rcode, authority };
        }
    }
    if rcode == ResponseCode::NXDomain {
        if !reply.metadata.authoritative {
            return Response::Lame("NXDOMAIN without AA");
        }
        return Response::NxDomain { authority: reply.authorities.iter().filter(in_zone).cloned().collect() };
    }
    // referral: NS records for one child strictly below the zone, at or above the name
    let mut child: Option<&Name> = None;
    for r in &reply.authorities {
        if r.record_type() == RecordType::NS && r.name != *zone && zone.zone_of(&r.name) && r.name.zone_of(qname) {
            match child {
                None => child = Some(&r.name),
                Some(c) if *c == r.name => {}
                Some(_) => return Response::Lame("referral to two zones"),
            }
        }
    }
    if let Some(child) = child {
        let child = child.clone();
        let mut ns = Vec::new();
        let mut ttl = u32::MAX;
        let mut security = Vec::new();
        for r in &reply.authorities {
            if r.name != child {
                if matches!(r.record_type(), RecordType::NSEC3 | RecordType::RRSIG) && zone.zone_of(&r.name) {
                    // NSEC3 owners are hashes under the parent zone
                    security.push(r.clone());
                }
                continue;
            }
            match &r.data {
                RData::NS(n) => {
                    ttl = ttl.min(r.ttl);
                    if !ns.contains(&n.0) {
                        ns.push(n.0.clone());
                    }
                }
                _ if matches!(r.record_type(), RecordType::DS | RecordType::NSEC | RecordType::RRSIG) => {
                    security.push(r.clone())
                }
                _ => {}
            }
        }
        let glue = reply
            .additionals
            .iter()
            .filter(|r| zone.zone_of(&r.name) && ns.contains(&r.name))
            .filter_map(|r| r.data.ip_addr().map(|ip| (r.name.clone(), ip)))
            .collect();
        return Response::Referral(Delegation { zone: child, ns, glue, ttl, security });
    }
    if !reply.metadata.authoritative {
        // no answer, no referral below us, not authoritative: an upward
        // referral or a server that does not serve the zone
        return Response::Lame("not authoritative");
    }
    Response::NoData { authority: reply.authorities.iter().filter(in_zone).cloned().collect() }
}

/// The chain in `answers` from `qname`: CNAMEs in order, then the records
/// of `qtype` at the chain's end, each RRset with its RRSIGs. Also the name
/// the chain goes on to when this reply does not hold it, and whether the
/// chain ended in records of `qtype`. `None` when nothing is at `qname`.
fn chain(answers: &[&Record], qname: &Name, qtype: RecordType) -> Option<(Vec<Record>, Option<Name>, bool)> {
    let mut out = Vec::new();
    let mut name = qname.clone();
    // a CNAME chain inside one reply is bounded by the reply itself; the
    // bound stops a loop (a → b → a)
    for _ in 0..=answers.len() {
        let at = &name;
        let here = |t: RecordType| answers.iter().copied().filter(move |r| r.name == *at && r.record_type() == t);
        let wanted: Vec<&Record> = here(qtype).collect();
        if !wanted.is_empty() || qtype == RecordType::CNAME {
            out.extend(wanted.into_iter().cloned());
            out.extend(sigs(answers, &name, qtype));
            return if out.is_empty() { None } else { Some((out, None, true)) };
        }
        let Some(target) = here(RecordType::CNAME).find_map(|r| match &r.data {
            RData::CNAME(c) => Some(c.0.clone()),
            _ => None,
        }) else {
            // the chain ends at a name without data here
            return if out.is_empty() { None } else { Some((out, None, false)) };
        };
        out.extend(here(RecordType::CNAME).take(1).cloned());
        out.extend(sigs(answers, &name, RecordType::CNAME));
        if !answers.iter().any(|r| r.name == target) {
            return Some((out, Some(target), false));
        }
        name = target;
    }
    None
}

/// The RRSIGs at `name` covering `covered`.
fn sigs<'a>(answers: &'a [&'a Record], name: &'a Name, covered: RecordType) -> impl Iterator<Item = Record> + 'a {
    answers.iter().filter(move |r| signs(r, name, covered)).map(|r| (*r).clone())
}

/// Whether `r` is an RRSIG at `owner` over the RRset of type `covered`.
pub(super) fn signs(r: &Record, owner: &Name, covered: RecordType) -> bool {
    r.name == *owner && matches!(&r.data, RData::DNSSEC(DNSSECRData::RRSIG(s)) if s.input().type_covered == covered)
}

/// The signer name of `r` when it is an RRSIG.
pub(super) fn signer(r: &Record) -> Option<&Name> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(&s.input().signer_name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, CNAME, NS, SOA};
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    fn n(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }
    fn reply(aa: bool, rcode: ResponseCode) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.authoritative = aa;
        m.metadata.response_code = rcode;
        m
    }
    fn a(name: &str, ip: [u8; 4]) -> Record {
        Record::from_rdata(n(name), 300, RData::A(A(Ipv4Addr::from(ip))))
    }
    fn ns(owner: &str, target: &str) -> Record {
        Record::from_rdata(n(owner), 3600, RData::NS(NS(n(target))))
    }
    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(n(owner), 300, RData::CNAME(CNAME(n(target))))
    }
    fn soa(zone: &str) -> Record {
        Record::from_rdata(n(zone), 300, RData::SOA(SOA::new(n("ns.x."), n("h.x."), 1, 2, 3, 4, 60)))
    }

    #[test]
    fn referral_keeps_only_glue_the_parent_may_speak_for() {
        let mut m = reply(false, ResponseCode::NoError);
        m.authorities.push(ns("example.com.", "ns1.example.com."));
        m.authorities.push(ns("example.com.", "ns.other.net."));
        m.additionals.push(a("ns1.example.com.", [192, 0, 2, 1]));
        // out of bailiwick of the com. servers: a poisoning attempt
        m.additionals.push(a("ns.other.net.", [6, 6, 6, 6]));
        match classify(m, &n("www.example.com."), RecordType::A, &n("com.")) {
            Response::Referral(d) => {
                assert_eq!(d.zone, n("example.com."));
                assert_eq!(d.ns.len(), 2);
                assert_eq!(d.glue, vec![(n("ns1.example.com."), IpAddr::from([192, 0, 2, 1]))]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn upward_and_sideways_referrals_are_lame() {
        let mut m = reply(false, ResponseCode::NoError);
        m.authorities.push(ns(".", "a.root-servers.net."));
        assert!(matches!(classify(m, &n("www.example.com."), RecordType::A, &n("com.")), Response::Lame(_)));
        let mut m = reply(false, ResponseCode::NoError);
        m.authorities.push(ns("example.org.", "ns.example.org."));
        assert!(matches!(classify(m, &n("www.example.com."), RecordType::A, &n("com.")), Response::Lame(_)));
        let m = reply(false, ResponseCode::Refused);
        assert!(matches!(classify(m, &n("www.example.com."), RecordType::A, &n("com.")), Response::Lame(_)));
    }

    #[test]
    fn answers_out_of_the_zone_are_dropped() {
        let mut m = reply(true, ResponseCode::NoError);
        m.answers.push(cname("www.example.com.", "www.victim.org."));
        // the example.com servers may not speak for victim.org
        m.answers.push(a("www.victim.org.", [6, 6, 6, 6]));
        match classify(m, &n("www.example.com."), RecordType::A, &n("example.com.")) {
            Response::Answer { records, next, .. } => {
                assert_eq!(records.len(), 1);
                assert_eq!(next, Some(n("www.victim.org.")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chain_in_zone_is_followed_in_order() {
        let mut m = reply(true, ResponseCode::NoError);
        m.answers.push(a("c.example.com.", [192, 0, 2, 9]));
        m.answers.push(cname("b.example.com.", "c.example.com."));
        m.answers.push(cname("a.example.com.", "b.example.com."));
        match classify(m, &n("a.example.com."), RecordType::A, &n("example.com.")) {
            Response::Answer { records, next, rcode, .. } => {
                let owners: Vec<String> = records.iter().map(|r| r.name.to_ascii()).collect();
                assert_eq!(owners, ["a.example.com.", "b.example.com.", "c.example.com."]);
                assert_eq!(next, None);
                assert_eq!(rcode, ResponseCode::NoError);
            }
            other => panic!("{other:?}"),
        }
        // a loop ends
        let mut m = reply(true, ResponseCode::NoError);
        m.answers.push(cname("a.example.com.", "b.example.com."));
        m.answers.push(cname("b.example.com.", "a.example.com."));
        let _ = classify(m, &n("a.example.com."), RecordType::A, &n("example.com."));
    }

    #[test]
    fn negative_answers() {
        let mut m = reply(true, ResponseCode::NXDomain);
        m.authorities.push(soa("example.com."));
        assert!(matches!(
            classify(m, &n("nx.example.com."), RecordType::A, &n("example.com.")),
            Response::NxDomain { authority } if authority.len() == 1
        ));
        let mut m = reply(true, ResponseCode::NoError);
        m.authorities.push(soa("example.com."));
        assert!(matches!(classify(m, &n("www.example.com."), RecordType::AAAA, &n("example.com.")), Response::NoData { .. }));
        // NXDOMAIN after a CNAME: the chain's end does not exist
        let mut m = reply(true, ResponseCode::NXDomain);
        m.answers.push(cname("a.example.com.", "gone.example.com."));
        m.authorities.push(soa("example.com."));
        match classify(m, &n("a.example.com."), RecordType::A, &n("example.com.")) {
            Response::Answer { rcode, next, records, .. } => {
                assert_eq!(records.len(), 1);
                assert_eq!(rcode, ResponseCode::NXDomain);
                assert_eq!(next, None);
            }
            other => panic!("{other:?}"),
        }
    }
}
