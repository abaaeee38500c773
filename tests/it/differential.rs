//! The UDP fast path and the hickory path must answer identically: every
//! name is asked over UDP (fast path: blocked names and cache hits) and over
//! TCP (always the hickory path), and the decoded answers are compared.

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use crate::support::*;

/// What must agree between the two paths.
fn summary(m: &Message) -> String {
    let recs = |rs: &[hickory_proto::rr::Record]| -> Vec<String> {
        rs.iter().map(|r| format!("{} {} {:?}", r.name.to_ascii().to_ascii_lowercase(), r.record_type(), r.data)).collect()
    };
    format!(
        "rcode={} aa={} ra={} rd={} ad={} cd={} q={:?} an={:?} ns={:?} ar={:?} opt={:?} ede={:?}",
        m.metadata.response_code,
        m.metadata.authoritative,
        m.metadata.recursion_available,
        m.metadata.recursion_desired,
        m.metadata.authentic_data,
        m.metadata.checking_disabled,
        m.queries.iter().map(|q| format!("{} {}", q.name(), q.query_type())).collect::<Vec<_>>(),
        recs(&m.answers),
        recs(&m.authorities),
        recs(&m.additionals.iter().filter(|r| r.record_type() != RecordType::OPT).cloned().collect::<Vec<_>>()),
        m.edns.as_ref().map(|e| (e.max_payload(), e.flags().dnssec_ok, e.version())),
        ede(m),
    )
}

/// `n` names PREFIXi.example. with an A and an AAAA record each, plus
/// cloak.example. (a CNAME into the blocked x.bad.test.); returns the names.
fn sites(up: &Upstream, prefix: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}{i}.example.");
        up.set(&name, RecordType::A, Canned::Answer(vec![a(&name, 300, &format!("198.51.100.{}", i + 1))]));
        up.set(&name, RecordType::AAAA, Canned::Answer(vec![aaaa(&name, 300, &format!("2001:db8::{:x}", i + 1))]));
        names.push(name);
    }
    up.set("cloak.example.", RecordType::A, Canned::Answer(vec![
        cname("cloak.example.", 300, "x.bad.test."),
        a("x.bad.test.", 300, "198.51.100.99"),
    ]));
    names
}

#[tokio::test]
async fn fast_path_and_hickory_path_answer_alike() {
    let up = Upstream::start().await;
    let mut names = sites(&up, "site", 40);
    up.set("gone.example.", RecordType::A, Canned::NxDomain(soa("example.", 300, 60)));
    let dir = tempfile::tempdir().unwrap();
    let block = write_list(dir.path(), "b.txt", "bad.test\nevil.example\n");
    let nodata = write_list(dir.path(), "n.txt", "quiet.test\n");
    let refused = write_list(dir.path(), "r.txt", "no.test\n");
    let allow = write_list(dir.path(), "a.txt", "ok.bad.test\n");
    let lists = format!(
        "[[lists]]\nname = \"allow\"\nsource = \"{allow}\"\nkind = \"allow\"\n\
         [[lists]]\nname = \"reg\"\nsource = \"{block}\"\nede = 16\n\
         [[lists]]\nname = \"nd\"\nsource = \"{nodata}\"\naction = \"nodata\"\n\
         [[lists]]\nname = \"rf\"\nsource = \"{refused}\"\naction = \"refused\"\n"
    );
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    for n in ["bad.test.", "a.b.c.bad.test.", "Evil.Example.", "quiet.test.", "x.quiet.test.", "no.test.", "ok.bad.test.", "cloak.example.", "gone.example."] {
        names.push(n.to_owned());
    }
    let opts = [
        EDNS,
        PLAIN,
        Q { edns: true, dnssec_ok: true, payload: 4096 },
        Q { edns: true, dnssec_ok: false, payload: 512 },
    ];
    let mut compared = 0;
    for n in &names {
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::MX] {
            for o in opts {
                // warm the cache through the hickory path, then compare
                let slow = tcp(srv.addr, n, qtype, o).await;
                let fast = udp(srv.addr, n, qtype, o).await.expect("UDP reply");
                let slow_again = tcp(srv.addr, n, qtype, o).await;
                assert_eq!(summary(&fast), summary(&slow_again), "{n} {qtype} edns={} do={}", o.edns, o.dnssec_ok);
                assert_eq!(slow.metadata.response_code, slow_again.metadata.response_code);
                compared += 1;
            }
        }
    }
    assert_eq!(compared, names.len() * 12);
    let m = http_get(srv.http, "/metrics").await.1;
    assert!(sample(&m, r#"qalqan_queries_total{outcome="cached",protocol="udp"}"#) > 100.0, "fast path served cache hits: {m}");
    srv.shutdown().await;
}

/// Misses asked over UDP first are forwarded from the fast path; the same
/// question over TCP (the hickory path, now from the cache) must agree.
#[tokio::test]
async fn fast_path_misses_and_hickory_path_answer_alike() {
    let up = Upstream::start().await;
    let mut names = sites(&up, "m", 20);
    up.set("chain.example.", RecordType::A, Canned::Answer(vec![
        cname("chain.example.", 300, "m1.example."),
        a("m1.example.", 300, "198.51.100.2"),
    ]));
    up.set("gone.example.", RecordType::A, Canned::NxDomain(soa("example.", 300, 60)));
    names.extend(["cloak.example.", "chain.example.", "gone.example.", "Mixed.M3.Example."].map(str::to_owned));
    let dir = tempfile::tempdir().unwrap();
    let block = write_list(dir.path(), "b.txt", "bad.test\n");
    let lists = format!("[[lists]]\nname = \"reg\"\nsource = \"{block}\"\nede = 16\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let opts = [EDNS, PLAIN, Q { edns: true, dnssec_ok: true, payload: 4096 }];
    // the question is echoed byte for byte (0x20 case randomisation), on a
    // miss and on a hit; hickory's encoder lowercases, so mix the case here
    let (_, mut qb) = query_bytes("case.m3.example.", RecordType::A, EDNS);
    for i in [13, 15, 18, 21] {
        qb[i] = qb[i].to_ascii_uppercase();
    }
    let qlen = "case.m3.example.".len() + 1 + 4;
    for round in ["miss", "hit"] {
        let r = udp_raw(srv.addr, &qb, std::time::Duration::from_secs(2)).await.expect("reply");
        assert_eq!(r[12..12 + qlen], qb[12..12 + qlen], "{round}: question echoed as sent");
    }
    let mut compared = 0;
    for (k, o) in opts.iter().enumerate() {
        for n in &names {
            // a different case per option set: a new cache key only for DO
            let n = if k == 1 { n.to_uppercase() } else { n.clone() };
            for qtype in [RecordType::A, RecordType::AAAA] {
                let fast = udp(srv.addr, &n, qtype, *o).await.expect("UDP reply");
                let slow = tcp(srv.addr, &n, qtype, *o).await;
                assert_eq!(summary(&fast), summary(&slow), "{n} {qtype} edns={} do={}", o.edns, o.dnssec_ok);
                compared += 1;
            }
        }
    }
    assert_eq!(compared, names.len() * 6);
    let m = http_get(srv.http, "/metrics").await.1;
    assert!(sample(&m, r#"qalqan_queries_total{outcome="forwarded",protocol="udp"}"#) >= 40.0, "fast path forwarded misses: {m}");
    let blocked = udp(srv.addr, "cloak.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(blocked.metadata.response_code, hickory_proto::op::ResponseCode::NXDomain, "CNAME cloaking caught");
    srv.shutdown().await;
}
