//! Recursive mode groundwork (issue #21): the loopback hierarchy itself
//! (`hierarchy.rs`), checked over the wire and with ldns' own validators.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::hierarchy::{Hierarchy, DO, NO_EDNS};
use crate::support;

fn at(ip: std::net::Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), 53)
}

/// Each server answers its own zones and refers the rest downwards, with
/// glue and (for the signed children) DS; the lame server refuses; the
/// signed zones verify with `ldns-verify-zone` except the broken one; and
/// `drill -T` walks the chain from the root hints to a secure answer with
/// the generated trust anchor.
#[tokio::test]
async fn hierarchy_fixture_serves_and_validates() {
    let Some(h) = Hierarchy::start().await else { return };
    let a = h.addrs;

    // The root refers test. with glue and a DS.
    let m = support::udp(at(a.root), "www.signed.test.", RecordType::A, DO).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.metadata.authoritative && m.answers.is_empty(), "root answered instead of referring: {m:?}");
    let types: Vec<RecordType> = m.authorities.iter().map(|r| r.record_type()).collect();
    assert!(types.contains(&RecordType::NS) && types.contains(&RecordType::DS), "referral without NS/DS: {types:?}");
    assert!(m.additionals.iter().any(|r| matches!(&r.data, RData::A(ip) if ip.0 == a.tld)), "no glue for ns.test.");

    // The TLD refers signed.test. with a DS and insecure.test. without.
    let m = support::udp(at(a.tld), "www.signed.test.", RecordType::A, DO).await.unwrap();
    assert!(m.authorities.iter().any(|r| r.record_type() == RecordType::DS), "signed.test. referral without DS");
    let m = support::udp(at(a.tld), "www.insecure.test.", RecordType::A, DO).await.unwrap();
    assert!(m.authorities.iter().all(|r| r.record_type() != RecordType::DS), "insecure.test. referral has a DS");
    assert!(m.authorities.iter().any(|r| r.record_type() == RecordType::NSEC), "insecure.test. referral without the NSEC that proves no DS");

    // The leaf answers with signatures; the other server answers unsigned.
    let m = support::udp(at(a.leaf), "www.signed.test.", RecordType::A, DO).await.unwrap();
    assert!(m.metadata.authoritative);
    assert!(m.answers.iter().any(|r| r.record_type() == RecordType::RRSIG), "no RRSIG: {m:?}");
    let m = support::udp(at(a.other), "hop.insecure.test.", RecordType::A, NO_EDNS).await.unwrap();
    assert!(m.answers.iter().any(|r| matches!(&r.data, RData::CNAME(c) if c.0.to_ascii() == "www.signed.test.")), "{m:?}");

    // Lame: ns1.lame.test. does not serve lame.test.; ns2 does.
    let m = support::udp(at(a.other), "www.lame.test.", RecordType::A, NO_EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = support::udp(at(a.leaf), "www.lame.test.", RecordType::A, NO_EDNS).await.unwrap();
    assert!(m.metadata.authoritative && !m.answers.is_empty());

    // Offline: the signatures verify, except bogus.test.'s.
    for (zone, ok) in [("root.zone", true), ("test.zone", true), ("signed.test.zone", true), ("bogus.test.zone", false)] {
        let out = Command::new("ldns-verify-zone").arg(h.dir().join(format!("{zone}.signed"))).output().unwrap();
        assert_eq!(out.status.success(), ok, "ldns-verify-zone {zone}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    // Online: drill traces from the root hints and validates with our anchor.
    let drill = |name: &str| {
        let out = Command::new("drill")
            .args(["-T", "-D", "-r"])
            .arg(h.root_hints())
            .arg("-k")
            .arg(h.trust_anchor())
            .arg(name)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    // drill marks the answer line [T] (trusted chain) or [B] (bogus).
    for (name, mark) in [("www.signed.test.", "[T] www.signed.test."), ("x.w.signed.test.", "[T] x.w.signed.test."), ("www.bogus.test.", "[B] www.bogus.test.")] {
        let out = drill(name);
        assert!(out.lines().any(|l| l.starts_with(mark)), "drill {name}: want a line starting `{mark}`:\n{out}");
    }
}

