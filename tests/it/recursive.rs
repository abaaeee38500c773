//! Recursive mode (issue #21) over the wire against the loopback hierarchy
//! (`hierarchy.rs`): the fixture itself, checked with ldns' own tools, then
//! qalqan resolving from its root.

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
    for (zone, ok) in [
        ("root.zone", true),
        ("test.zone", true),
        ("signed.test.zone", true),
        ("bogus.test.zone", false),
        ("expired.test.zone", false),
        ("mismatch.test.zone", true),
    ] {
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
    for (name, mark) in [
        ("www.signed.test.", "[T] www.signed.test."),
        ("x.w.signed.test.", "[T] x.w.signed.test."),
        ("www.bogus.test.", "[B] www.bogus.test."),
        ("www.expired.test.", "[B] www.expired.test."),
        // signatures fine, no chain from the DS: drill's [S], which a validator treats as bogus
        ("www.mismatch.test.", "[S] www.mismatch.test."),
    ] {
        let out = drill(name);
        assert!(out.lines().any(|l| l.starts_with(mark)), "drill {name}: want a line starting `{mark}`:\n{out}");
    }
}

/// `[upstream] mode = "recursive"` through qalqan, over the wire, against
/// the hierarchy: names resolved from the root (UDP, which the fast path
/// hands to the hickory path on a miss, and TCP), NXDOMAIN with the zone's
/// SOA, a blocked name that no authority is ever asked (NSD's counters), and
/// a CNAME chain that crosses into a blocked name.
#[tokio::test]
async fn qalqan_recursive_mode_resolves_from_the_root() {
    let Some(h) = Hierarchy::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let list = support::write_list(dir.path(), "block.txt", "hop.insecure.test\n");
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
allow_clients = ["127.0.0.0/8"]
[upstream]
mode = "recursive"
root_hints = "{hints}"
timeout_ms = 3000
[dnssec]
trust_anchor = "{anchor}"
[[lists]]
name = "block"
source = "{list}"
"#,
        hints = h.root_hints().display(),
        anchor = h.trust_anchor().display()
    );
    let server = support::TestServer::start(&toml).await;

    // Blocked: answered from the list; not one query reaches any authority.
    let before: Vec<u64> = ["root", "tld", "leaf", "other"].iter().map(|s| h.queries(s)).collect();
    let m = support::udp(server.addr, "hop.insecure.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(!support::ede(&m).is_empty(), "blocked answer without EDE");
    let after: Vec<u64> = ["root", "tld", "leaf", "other"].iter().map(|s| h.queries(s)).collect();
    assert_eq!(before, after, "a blocked name was asked of an authority (root, tld, leaf, other)");

    // Resolved from the root, over UDP and over TCP.
    let m = support::udp(server.addr, "www.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert!(m.metadata.recursion_available);
    assert!(m.answers.iter().any(|r| matches!(&r.data, RData::A(a) if a.0 == std::net::Ipv4Addr::new(192, 0, 2, 1))), "{m:?}");
    let m = support::tcp(server.addr, "www.insecure.test.", RecordType::A, support::EDNS).await;
    assert!(m.answers.iter().any(|r| matches!(&r.data, RData::A(a) if a.0 == std::net::Ipv4Addr::new(192, 0, 2, 3))), "{m:?}");
    assert!(h.queries("root") > after[0], "the root was never asked");

    // A cache hit is answered without asking anyone.
    let before_leaf = h.queries("leaf");
    let m = support::udp(server.addr, "www.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(m.answers.len(), 1);
    assert_eq!(h.queries("leaf"), before_leaf, "a cached name was asked again");

    // NXDOMAIN carries the zone's SOA.
    let m = support::udp(server.addr, "nx.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.authorities.iter().any(|r| r.record_type() == RecordType::SOA && r.name.to_ascii() == "signed.test."), "{m:?}");

    // chain.signed.test. → hop.insecure.test. (blocked) → www.signed.test.: blocked.
    let m = support::udp(server.addr, "chain.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
    assert!(m.answers.is_empty(), "the blocked chain leaked: {m:?}");

    // Counted as resolved from the root.
    let text = server.metrics.encode();
    assert!(support::sample(&text, "qalqan_queries_total{outcome=\"recursed\",protocol=\"udp\"}") >= 1.0, "{text}");

    // A lame-everywhere delegation: SERVFAIL, promptly.
    let started = std::time::Instant::now();
    let m = support::udp(server.addr, "www.dead.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    server.shutdown().await;
}

/// Identical misses at once reach the authority as one resolution
/// (`Recurser` merges questions in flight): 20 clients, at most the
/// minimised query and the question at the leaf.
#[tokio::test]
async fn qalqan_recursive_identical_misses() {
    let Some(h) = Hierarchy::start().await else { return };
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n[upstream]\nmode = \"recursive\"\nroot_hints = \"{}\"\n[dnssec]\ntrust_anchor = \"{}\"\n",
        h.root_hints().display(),
        h.trust_anchor().display()
    );
    let server = support::TestServer::start(&toml).await;
    // warm the delegations
    support::udp(server.addr, "n0.many.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    let before = h.queries("leaf");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move { support::udp(addr, "n7.many.signed.test.", RecordType::A, support::EDNS).await }));
    }
    for t in tasks {
        let m = t.await.unwrap().unwrap();
        assert_eq!(m.answers.len(), 1);
    }
    let sent = h.queries("leaf") - before;
    eprintln!("20 identical misses at once: {sent} queries to the leaf");
    assert!(sent <= 4, "20 identical misses sent {sent} queries to the leaf");
    server.shutdown().await;
}

/// A qalqan in recursive mode on `h`, validating with the hierarchy's
/// trust anchor; `extra` is appended inside the `[dnssec]` table (its own
/// keys first, then any other tables).
async fn recursive_server(h: &Hierarchy, extra: &str) -> support::TestServer {
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n[upstream]\nmode = \"recursive\"\nroot_hints = \"{}\"\ntimeout_ms = 3000\n[dnssec]\ntrust_anchor = \"{}\"\n{extra}",
        h.root_hints().display(),
        h.trust_anchor().display()
    );
    support::TestServer::start(&toml).await
}

fn addrs_of(m: &hickory_proto::op::Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// The iterator where hickory's recursor failed (docs/recursion.md "What
/// fails"): a lame server (REFUSED) is skipped for the zone's other one, a
/// dead server costs one server timeout and then the other one answers,
/// signed and unsigned wildcards resolve, a 2.4 KB answer comes over TCP,
/// and a CNAME chain comes back in order.
#[tokio::test]
async fn iterator_gets_past_lame_dead_and_big() {
    let Some(h) = Hierarchy::start().await else { return };
    let server = recursive_server(&h, "[recursion]\nserver_timeout_ms = 400\n").await;
    for _ in 0..3 {
        // every round: ns1.lame.test. refuses; whichever is asked first, the answer comes
        let m = support::udp(server.addr, &format!("www{}.lame.test.", ""), RecordType::A, support::EDNS).await.unwrap();
        assert_eq!(addrs_of(&m), ["192.0.2.4"], "{m:?}");
    }
    let started = std::time::Instant::now();
    let m = support::udp(server.addr, "www.halfdead.test.", RecordType::A, support::EDNS).await.unwrap();
    let took = started.elapsed();
    assert_eq!(addrs_of(&m), ["192.0.2.7"], "{m:?}");
    assert!(took < std::time::Duration::from_millis(2500), "one dead server cost {took:?}");
    for (name, want) in [("x.w.signed.test.", "192.0.2.5"), ("deep.x.w.signed.test.", "192.0.2.5"), ("y.w.insecure.test.", "192.0.2.6")] {
        let m = support::udp(server.addr, name, RecordType::A, support::EDNS).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}: {m:?}");
        assert_eq!(addrs_of(&m), [want], "{name}: {m:?}");
    }
    let tcp_before = h.tcp_queries("leaf");
    let m = support::tcp(server.addr, "big.signed.test.", RecordType::TXT, support::EDNS).await;
    assert_eq!(m.answers.len(), 12, "{m:?}");
    assert!(h.tcp_queries("leaf") > tcp_before, "the truncated answer was not asked again over TCP");
    // hop.insecure.test. → www.signed.test.: two zones, two servers, in order
    let m = support::udp(server.addr, "hop.insecure.test.", RecordType::A, support::EDNS).await.unwrap();
    let owners: Vec<String> = m.answers.iter().map(|r| r.name.to_ascii()).collect();
    assert_eq!(owners, ["hop.insecure.test.", "www.signed.test."], "{m:?}");
    // NODATA keeps the zone's SOA; the SOA of the right zone
    let m = support::udp(server.addr, "www.signed.test.", RecordType::TXT, support::EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(m.authorities.iter().any(|r| r.record_type() == RecordType::SOA && r.name.to_ascii() == "signed.test."), "{m:?}");
    server.shutdown().await;
}

/// RFC 9156 on the wire: for an AAAA question the root and the TLD are asked
/// the minimised name with QTYPE A, never the AAAA question itself (NSD's
/// per-type counters); with `qname_minimisation = false` they see the AAAA.
#[tokio::test]
async fn qname_minimisation_is_visible_at_the_authorities() {
    let Some(h) = Hierarchy::start().await else { return };
    let server = recursive_server(&h, "").await;
    let m = support::udp(server.addr, "www.signed.test.", RecordType::AAAA, support::EDNS).await.unwrap();
    assert_eq!(addrs_of(&m), ["2001:db8::1"], "{m:?}");
    for s in ["root", "tld"] {
        assert_eq!(h.stat_or_zero(s, "num.type.AAAA"), 0, "{s} was asked the full AAAA question");
        assert!(h.stat_or_zero(s, "num.type.A") >= 1, "{s} was not asked at all");
    }
    assert_eq!(h.stat_or_zero("leaf", "num.type.AAAA"), 1, "the leaf gets the real question once");
    // many.signed.test. is an empty non-terminal: asked once (minimised),
    // then remembered, so the next name under it is one query
    let before = h.queries("leaf");
    support::udp(server.addr, "n1.many.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    let first = h.queries("leaf") - before;
    support::udp(server.addr, "n2.many.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    let second = h.queries("leaf") - before - first;
    assert_eq!((first, second), (2, 1), "leaf queries for the first and second name under the empty non-terminal");
    server.shutdown().await;

    let server = recursive_server(&h, "[recursion]\nqname_minimisation = false\n").await;
    support::udp(server.addr, "www.signed.test.", RecordType::AAAA, support::EDNS).await.unwrap();
    assert!(h.stat_or_zero("root", "num.type.AAAA") >= 1, "without minimisation the root sees the question");
    server.shutdown().await;
}

/// Bounded work: a question that needs more authority queries than
/// `max_queries` is SERVFAIL at once; a CNAME whose target the policy
/// blocks is never asked of that target's servers.
#[tokio::test]
async fn bounded_work_and_blocked_targets_never_asked() {
    let Some(h) = Hierarchy::start().await else { return };
    let server = recursive_server(&h, "[recursion]\nmax_queries = 2\n").await;
    // root, test., signed.test.: three queries from cold
    let m = support::udp(server.addr, "www.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    server.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let list = support::write_list(dir.path(), "block.txt", "insecure.test\n");
    let server = recursive_server(&h, &format!("[[lists]]\nname = \"block\"\nsource = \"{}\"\n", list)).await;
    let other_before = h.queries("other");
    // chain.signed.test. CNAME hop.insecure.test.: insecure.test. is blocked
    let m = support::udp(server.addr, "chain.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
    assert!(!support::ede(&m).is_empty(), "{m:?}");
    assert_eq!(h.queries("other"), other_before, "the blocked CNAME target's server was asked");
    server.shutdown().await;
}

/// Serve-stale in recursive mode: every authority of `signed.test.` stops,
/// the entry has expired (`max_ttl = 1`), and the client gets the old
/// answer with TTL 30 and EDE 3 within `server_timeout_ms`-ish, not
/// SERVFAIL; authorities' replies are counted under
/// `qalqan_upstream_requests_total{server="authorities"}`.
#[tokio::test]
async fn serve_stale_when_every_authority_of_a_zone_is_down() {
    let Some(mut h) = Hierarchy::start().await else { return };
    let server =
        recursive_server(&h, "[cache]\nmax_ttl = 1\nserve_stale = true\n[recursion]\nserver_timeout_ms = 300\n").await;
    let m = support::udp(server.addr, "www.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(addrs_of(&m), ["192.0.2.1"]);
    h.stop("leaf");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let m = support::udp(server.addr, "www.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    assert_eq!(addrs_of(&m), ["192.0.2.1"], "{m:?}");
    assert_eq!(m.answers[0].ttl, 30);
    assert!(support::ede(&m).iter().any(|(c, _)| *c == 3), "{m:?}");
    let text = server.metrics.encode();
    assert!(support::sample(&text, "qalqan_upstream_requests_total{result=\"ok\",server=\"authorities\"}") >= 3.0, "{text}");
    // a stopped server on loopback: ICMP port unreachable (error), elsewhere a timeout
    let failed = support::sample(&text, "qalqan_upstream_requests_total{result=\"timeout\",server=\"authorities\"}")
        + support::sample(&text, "qalqan_upstream_requests_total{result=\"error\",server=\"authorities\"}");
    assert!(failed >= 1.0, "{text}");
    server.shutdown().await;
}

/// A query with the given header bits set in byte 3 (0x20 AD, 0x10 CD).
async fn udp_flags(server: SocketAddr, qname: &str, qtype: RecordType, opts: support::Q, bits: u8) -> hickory_proto::op::Message {
    let (_, mut bytes) = support::query_bytes(qname, qtype, opts);
    bytes[3] |= bits;
    let raw = support::udp_raw(server, &bytes, std::time::Duration::from_secs(4)).await.expect("no reply");
    hickory_proto::op::Message::from_vec(&raw).unwrap()
}

fn rrsigs(m: &hickory_proto::op::Message) -> usize {
    m.answers.iter().chain(m.authorities.iter()).filter(|r| r.record_type() == RecordType::RRSIG).count()
}

/// DNSSEC over the wire, from the hierarchy's own trust anchor: AD on
/// secure answers (positive, wildcard, NXDOMAIN, NODATA) when the client
/// sets DO or AD, RRSIGs only with DO; no AD under the unsigned delegation
/// or across a chain that passes through it; the broken signature, the
/// expired signatures and the DS of another key SERVFAIL with EDE 6, 7 and
/// 9; CD gets the unvalidated answer; a negative trust anchor turns one
/// zone's validation off; `qalqan_dnssec_total` counts the results.
#[tokio::test]
async fn dnssec_validation_over_the_wire() {
    let Some(h) = Hierarchy::start().await else { return };
    let server = recursive_server(&h, "").await;
    let ad = |m: &hickory_proto::op::Message| m.metadata.authentic_data;

    let m = support::udp(server.addr, "www.signed.test.", RecordType::A, DO).await.unwrap();
    assert_eq!(addrs_of(&m), ["192.0.2.1"], "{m:?}");
    assert!(ad(&m), "secure answer without AD: {m:?}");
    assert!(rrsigs(&m) >= 1, "DO but no RRSIG: {m:?}");
    let m = udp_flags(server.addr, "www.signed.test.", RecordType::A, support::EDNS, 0x20).await;
    assert!(ad(&m) && rrsigs(&m) == 0, "AD asked, no DO: AD without RRSIGs expected: {m:?}");
    let m = support::udp(server.addr, "www.signed.test.", RecordType::A, support::EDNS).await.unwrap();
    assert!(!ad(&m), "neither DO nor AD asked, AD set: {m:?}");

    for (name, qtype, rcode) in [
        ("x.w.signed.test.", RecordType::A, ResponseCode::NoError),
        ("nx.signed.test.", RecordType::A, ResponseCode::NXDomain),
        ("www.signed.test.", RecordType::TXT, ResponseCode::NoError),
        ("nx.test.", RecordType::A, ResponseCode::NXDomain),
    ] {
        let m = support::udp(server.addr, name, qtype, DO).await.unwrap();
        assert_eq!(m.metadata.response_code, rcode, "{name} {qtype}: {m:?}");
        assert!(ad(&m), "{name} {qtype}: not secure: {m:?}");
    }

    for name in ["www.insecure.test.", "www.lame.test.", "chain.signed.test."] {
        let m = support::udp(server.addr, name, RecordType::A, DO).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}: {m:?}");
        assert!(!m.answers.is_empty(), "{name}: {m:?}");
        assert!(!ad(&m), "{name} is under an unsigned delegation, AD set: {m:?}");
    }

    for (name, code) in [("www.bogus.test.", 6), ("www.expired.test.", 7), ("www.mismatch.test.", 9)] {
        for round in 0..2 {
            let m = support::udp(server.addr, name, RecordType::A, DO).await.unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{name} round {round}: {m:?}");
            let edes = support::ede(&m);
            assert!(edes.iter().any(|(c, _)| *c == code), "{name}: EDE {code} expected, got {edes:?}");
        }
        // checking disabled: the data as the zone has it
        let m = udp_flags(server.addr, name, RecordType::A, DO, 0x10).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name} with CD: {m:?}");
        assert!(!m.answers.is_empty() && !ad(&m), "{name} with CD: {m:?}");
    }
    // over TCP (the hickory path) too
    let m = support::tcp(server.addr, "www.bogus.test.", RecordType::A, DO).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let m = support::tcp(server.addr, "www.signed.test.", RecordType::AAAA, DO).await;
    assert!(ad(&m) && addrs_of(&m) == ["2001:db8::1"], "{m:?}");

    let text = server.metrics.encode();
    assert!(support::sample(&text, "qalqan_dnssec_total{result=\"secure\"}") >= 5.0, "{text}");
    assert!(support::sample(&text, "qalqan_dnssec_total{result=\"insecure\"}") >= 3.0, "{text}");
    assert!(support::sample(&text, "qalqan_dnssec_total{result=\"bogus\"}") >= 3.0, "{text}");
    server.shutdown().await;

    // RFC 7646: bogus.test. under a negative trust anchor is answered, unvalidated
    let server = recursive_server(&h, "negative_trust_anchors = [\"bogus.test\"]\n").await;
    let m = support::udp(server.addr, "www.bogus.test.", RecordType::A, DO).await.unwrap();
    assert_eq!(addrs_of(&m), ["192.0.2.67"], "{m:?}");
    assert!(!ad(&m));
    let m = support::udp(server.addr, "www.expired.test.", RecordType::A, DO).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "the anchor covers bogus.test. only: {m:?}");
    server.shutdown().await;
}

/// The shipped `config/recursive.toml` as an operator runs it, pointed at
/// the loopback hierarchy instead of the Internet's root (its two commented
/// lines, `root_hints` and `trust_anchor`, filled in): blocked names from
/// the shipped list, secure answers with AD, bogus ones SERVFAIL.
#[tokio::test]
async fn shipped_recursive_config_resolves_and_validates() {
    let Some(h) = Hierarchy::start().await else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/recursive.toml")).unwrap();
    let toml = shipped
        .replace(
            "# root_hints = \"/usr/share/dns/root.hints\"",
            &format!("root_hints = \"{}\"", h.root_hints().display()),
        )
        .replace(
            "# trust_anchor = \"/usr/share/dns/root.key\"",
            &format!("trust_anchor = \"{}\"", h.trust_anchor().display()),
        )
        .replace("ipv6 = true ", "ipv6 = false")
        .replace("blocklists/", &format!("{}/blocklists/", root.display()));
    assert!(toml.contains(&h.root_hints().display().to_string()) && toml.contains("trust_anchor = \""), "the shipped config changed shape");
    let server = support::TestServer::start(&toml).await;
    let m = support::udp(server.addr, "blocked.qalqan.test.", RecordType::A, DO).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
    let m = support::udp(server.addr, "www.signed.test.", RecordType::A, DO).await.unwrap();
    assert!(m.metadata.authentic_data && addrs_of(&m) == ["192.0.2.1"], "{m:?}");
    let m = support::udp(server.addr, "www.bogus.test.", RecordType::A, DO).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m:?}");
    server.shutdown().await;
}

/// The reference: Unbound (iterator + validator, QNAME minimisation, the
/// same root hints and trust anchor) on the same hierarchy, asked the same
/// questions as qalqan; rcode, AD and the answer records (owner, type,
/// data; TTLs aside) must agree. Unbound is what ISPs run today.
#[tokio::test]
async fn unbound_on_the_same_hierarchy_agrees() {
    let Some(h) = Hierarchy::start().await else { return };
    let Some((mut child, unbound, _dir)) = start_unbound(&h, true).await else { return };
    let server = recursive_server(&h, "").await;

    let summary = |m: &hickory_proto::op::Message| {
        let mut answers: Vec<String> = m
            .answers
            .iter()
            .filter(|r| r.record_type() != RecordType::RRSIG)
            .map(|r| format!("{} {} {}", r.name.to_ascii().to_ascii_lowercase(), r.record_type(), r.data))
            .collect();
        answers.sort();
        format!("{} ad={} {answers:?}", m.metadata.response_code, m.metadata.authentic_data)
    };
    let cases = [
        ("www.signed.test.", RecordType::A),
        ("www.signed.test.", RecordType::AAAA),
        ("www.signed.test.", RecordType::TXT),
        ("nx.signed.test.", RecordType::A),
        ("x.w.signed.test.", RecordType::A),
        ("deep.x.w.signed.test.", RecordType::A),
        ("n42.many.signed.test.", RecordType::A),
        ("many.signed.test.", RecordType::A),
        ("nx.test.", RecordType::A),
        ("www.insecure.test.", RecordType::A),
        ("y.w.insecure.test.", RecordType::A),
        ("hop.insecure.test.", RecordType::A),
        ("chain.signed.test.", RecordType::A),
        ("www.lame.test.", RecordType::A),
        ("www.halfdead.test.", RecordType::A),
        ("www.bogus.test.", RecordType::A),
        ("www.expired.test.", RecordType::A),
        ("www.mismatch.test.", RecordType::A),
        ("www.dead.test.", RecordType::A),
    ];
    let mut differ = Vec::new();
    for (name, qtype) in cases {
        let ours = support::udp(server.addr, name, qtype, DO).await.map(|m| summary(&m));
        // Unbound may take longer than one client timeout to give up on the
        // dead server (its first timeout is 376 ms, then it probes): ask again
        let mut theirs = None;
        for _ in 0..6 {
            theirs = support::udp(unbound, name, qtype, DO).await.map(|m| summary(&m));
            if theirs.is_some() {
                break;
            }
        }
        if ours != theirs {
            differ.push(format!("{name} {qtype}:\n  qalqan  {ours:?}\n  unbound {theirs:?}"));
        }
    }
    server.shutdown().await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(differ.is_empty(), "qalqan and Unbound disagree:\n{}", differ.join("\n"));
}

/// Unbound on the hierarchy (same hints and trust anchor; validating or
/// not), on a free loopback port, answering. `None`: not installed (a
/// failure under CI).
async fn start_unbound(h: &Hierarchy, validate: bool) -> Option<(std::process::Child, SocketAddr, tempfile::TempDir)> {
    let bin = ["/usr/sbin/unbound", "/usr/bin/unbound"].into_iter().find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        assert!(!support::in_ci(), "CI=true: unbound is missing (tests/run.sh installs it)");
        eprintln!("SKIPPING: unbound is not installed (apt-get install unbound)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.path().join("unbound.conf");
    let modules = if validate { "validator iterator" } else { "iterator" };
    std::fs::write(
        &conf,
        format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  num-threads: 1\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  \
             pidfile: \"{d}/unbound.pid\"\n  logfile: \"\"\n  use-syslog: no\n  verbosity: 0\n  do-ip6: no\n  do-not-query-localhost: no\n  \
             access-control: 127.0.0.0/8 allow\n  root-hints: \"{hints}\"\n  trust-anchor-file: \"{anchor}\"\n  \
             module-config: \"{modules}\"\n  qname-minimisation: yes\n  ede: yes\n  ratelimit: 0\n  \
             local-zone: \"test.\" nodefault\n\
             remote-control:\n  control-enable: no\n",
            d = dir.path().display(),
            hints = h.root_hints().display(),
            anchor = h.trust_anchor().display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(bin)
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = support::eventually(std::time::Duration::from_secs(10), || async {
        support::udp(addr, "www.insecure.test.", RecordType::A, DO).await.is_some_and(|m| !m.answers.is_empty())
    })
    .await;
    if !up {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("unbound did not come up: {}", String::from_utf8_lossy(&out.stderr));
    }
    Some((child, addr, dir))
}

/// Forward mode with `[dnssec] validate` (the default): questions of
/// clients that set DO are validated by qalqan itself, from its trust
/// anchor, through a non-validating upstream (Unbound, iterator only, on the
/// hierarchy): AD on secure answers (positive, wildcard, NXDOMAIN), none
/// under the unsigned delegation, SERVFAIL + EDE 6/7/9 for the broken
/// zones; CD and non-DO questions get what the upstream returned.
#[tokio::test]
async fn forward_mode_validates_what_the_upstream_returns() {
    let Some(h) = Hierarchy::start().await else { return };
    let Some((mut child, upstream, _dir)) = start_unbound(&h, false).await else { return };
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n[upstream]\nservers = [\"{upstream}\"]\ntimeout_ms = 3000\n\
         [dnssec]\ntrust_anchor = \"{}\"\n",
        h.trust_anchor().display()
    );
    let server = support::TestServer::start(&toml).await;
    let ad = |m: &hickory_proto::op::Message| m.metadata.authentic_data;
    for (name, rcode) in [
        ("www.signed.test.", ResponseCode::NoError),
        ("x.w.signed.test.", ResponseCode::NoError),
        ("nx.signed.test.", ResponseCode::NXDomain),
    ] {
        let m = support::udp(server.addr, name, RecordType::A, DO).await.unwrap();
        assert_eq!(m.metadata.response_code, rcode, "{name}: {m:?}");
        assert!(ad(&m), "{name}: not validated secure: {m:?}");
    }
    let m = support::tcp(server.addr, "www.signed.test.", RecordType::AAAA, DO).await;
    assert!(ad(&m) && addrs_of(&m) == ["2001:db8::1"], "over TCP: {m:?}");
    for name in ["www.insecure.test.", "hop.insecure.test."] {
        let m = support::udp(server.addr, name, RecordType::A, DO).await.unwrap();
        assert!(!m.answers.is_empty() && !ad(&m), "{name}: {m:?}");
    }
    for (name, code) in [("www.bogus.test.", 6), ("www.expired.test.", 7), ("www.mismatch.test.", 9)] {
        let m = support::udp(server.addr, name, RecordType::A, DO).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{name}: {m:?}");
        assert!(support::ede(&m).iter().any(|(c, _)| *c == code), "{name}: EDE {code} expected: {m:?}");
        let m = udp_flags(server.addr, name, RecordType::A, DO, 0x10).await;
        assert!(!m.answers.is_empty() && !ad(&m), "{name} with CD: {m:?}");
        let m = support::udp(server.addr, name, RecordType::A, support::EDNS).await.unwrap();
        assert!(!m.answers.is_empty(), "{name} without DO is not validated (the forwarder's path): {m:?}");
    }
    let text = server.metrics.encode();
    assert!(support::sample(&text, "qalqan_dnssec_total{result=\"bogus\"}") >= 3.0, "{text}");
    assert!(support::sample(&text, "qalqan_queries_total{outcome=\"forwarded\",protocol=\"udp\"}") >= 1.0, "{text}");
    server.shutdown().await;
    let _ = child.kill();
    let _ = child.wait();
}
