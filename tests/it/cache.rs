//! The reply cache's limits over the wire: TTLs never above the time an
//! entry has left, a byte budget, and replies too big to keep.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{RData, Record, RecordType};

use crate::support::*;

/// An upstream TTL of a day with `max_ttl = 60`: the client is told 60 (and
/// less as the entry ages), never the day the entry will not live.
#[tokio::test]
async fn served_ttl_is_at_most_what_the_cache_entry_has_left() {
    let up = Upstream::start().await;
    up.set("long.ttl.example.", RecordType::A, Canned::Answer(vec![a("long.ttl.example.", 86_400, "198.51.100.9")]));
    up.set("long.ttl.example.", RecordType::AAAA, Canned::Answer(vec![aaaa("long.ttl.example.", 86_400, "2001:db8::9")]));
    let srv = TestServer::start(&config(up.addr, "", "[cache]\nmax_ttl = 60")).await;
    for qtype in [RecordType::A, RecordType::AAAA] {
        // the forwarded reply (UDP fast path), the cached one, and over TCP (hickory path)
        let first = udp(srv.addr, "long.ttl.example.", qtype, EDNS).await.unwrap();
        let cached = udp(srv.addr, "long.ttl.example.", qtype, EDNS).await.unwrap();
        let over_tcp = tcp(srv.addr, "long.ttl.example.", qtype, EDNS).await;
        for (what, m) in [("forwarded", &first), ("cached", &cached), ("tcp", &over_tcp)] {
            let ttl = m.answers.first().map(|r| r.ttl);
            assert!(matches!(ttl, Some(t) if (58..=60).contains(&t)), "{qtype} {what}: ttl {ttl:?}");
        }
    }
    assert_eq!(up.count(), 2, "one upstream query per type");
    srv.shutdown().await;
}

fn txt(owner: &str, chunks: usize) -> Record {
    let strings: Vec<String> = (0..chunks).map(|i| format!("{i:03}{}", "x".repeat(200))).collect();
    Record::from_rdata(name(owner), 300, RData::TXT(TXT::new(strings)))
}

/// `[cache] max_reply_bytes`: a reply bigger than it is answered every time
/// but asked upstream every time; `max_bytes` bounds what the cache holds
/// (`qalqan_cache_bytes`) however many replies arrive.
#[tokio::test]
async fn byte_budget_and_reply_size_cap_hold_over_the_wire() {
    let up = Upstream::start().await;
    up.set("big.cache.example.", RecordType::TXT, Canned::Answer(vec![txt("big.cache.example.", 10)]));
    for i in 0..200 {
        let n = format!("n{i}.fill.example.");
        up.set(&n, RecordType::TXT, Canned::Answer(vec![txt(&n, 2)]));
    }
    let srv = TestServer::start(&config(up.addr, "", "[cache]\nmax_bytes = 32768\nmax_reply_bytes = 1500")).await;
    for round in 1..=2 {
        let m = tcp(srv.addr, "big.cache.example.", RecordType::TXT, EDNS).await;
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 1));
        // (asked over UDP, truncated, asked again over TCP)
        let tcp_asked = up.tcp_queries.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(tcp_asked, round, "a 2 KB reply over max_reply_bytes is not cached");
    }
    for i in 0..200 {
        let m = tcp(srv.addr, &format!("n{i}.fill.example."), RecordType::TXT, EDNS).await;
        assert_eq!(m.answers.len(), 1, "n{i}");
    }
    let (_, metrics) = http_get(srv.http, "/metrics").await;
    let bytes = sample(&metrics, "qalqan_cache_bytes");
    let entries = sample(&metrics, "qalqan_cache_entries");
    assert!(bytes > 0.0 && bytes <= 32768.0, "cache bytes {bytes}");
    assert!((5.0..200.0).contains(&entries), "the budget holds some, not all 200: {entries}");
    // the newest entry is held: answered without asking upstream
    let before = up.count();
    let m = tcp(srv.addr, "n199.fill.example.", RecordType::TXT, EDNS).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(up.count(), before);
    srv.shutdown().await;
}
