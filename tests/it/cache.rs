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

/// RFC 8767 over the wire: once an entry has expired and the upstream stops
/// answering, a UDP miss (fast path) and a TCP miss (hickory path) get the
/// expired answer with TTL 30 and EDE 3 instead of SERVFAIL, counted as
/// `outcome="stale"`; with serve-stale off (the default) the same is SERVFAIL;
/// and past `stale_max_s` nothing stale is served.
#[tokio::test]
async fn serve_stale_answers_expired_data_when_the_upstream_fails() {
    for serve_stale in [true, false] {
        let up = Upstream::start().await;
        up.set("stale.example.", RecordType::A, Canned::Answer(vec![a("stale.example.", 1, "198.51.100.30")]));
        up.set("gone.example.", RecordType::A, Canned::Answer(vec![a("gone.example.", 1, "198.51.100.31")]));
        let extra = format!("[cache]\nserve_stale = {serve_stale}\nstale_max_s = 3\n");
        let srv = TestServer::start(&config(up.addr, "", &extra)).await;
        let fresh = udp(srv.addr, "stale.example.", RecordType::A, EDNS).await.unwrap();
        assert_eq!(fresh.answers.len(), 1);
        udp(srv.addr, "gone.example.", RecordType::A, EDNS).await.unwrap();
        up.set("stale.example.", RecordType::A, Canned::Silent);
        up.set("gone.example.", RecordType::A, Canned::Silent);
        tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
        for over_tcp in [false, true] {
            let m = if over_tcp {
                tcp(srv.addr, "stale.example.", RecordType::A, EDNS).await
            } else {
                udp(srv.addr, "stale.example.", RecordType::A, EDNS).await.unwrap()
            };
            if serve_stale {
                assert_eq!(m.metadata.response_code, ResponseCode::NoError, "tcp {over_tcp}: {m:?}");
                assert_eq!(m.answers.len(), 1, "tcp {over_tcp}: {m:?}");
                assert_eq!(m.answers[0].ttl, 30, "tcp {over_tcp}: {m:?}");
                assert!(ede(&m).iter().any(|(code, _)| *code == 3), "tcp {over_tcp}: no EDE 3 in {m:?}");
            } else {
                assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "tcp {over_tcp}: {m:?}");
            }
        }
        let text = srv.metrics.encode();
        let stale = sample(&text, "qalqan_stale_answers_total");
        assert_eq!(stale, if serve_stale { 2.0 } else { 0.0 }, "{text}");
        if serve_stale {
            assert_eq!(sample(&text, "qalqan_queries_total{outcome=\"stale\",protocol=\"udp\"}"), 1.0, "{text}");
            // 1 s TTL + 3 s stale_max_s: gone after ~4 s
            tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
            let m = udp(srv.addr, "gone.example.", RecordType::A, EDNS).await.unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "served past stale_max_s: {m:?}");
        }
        srv.shutdown().await;
    }
}

/// `[cache] prefetch`: a hit in the last tenth of an entry's TTL is answered
/// from the cache and refreshes the entry in the background (one upstream
/// query, `qalqan_prefetches_total`), so the name never expires for clients;
/// hits before that ask nobody.
#[tokio::test]
async fn prefetch_refreshes_popular_entries_before_they_expire() {
    let up = Upstream::start().await;
    up.set("hot.example.", RecordType::A, Canned::Answer(vec![a("hot.example.", 10, "198.51.100.40")]));
    let srv = TestServer::start(&config(up.addr, "", "[cache]\nprefetch = true\n")).await;
    udp(srv.addr, "hot.example.", RecordType::A, EDNS).await.unwrap();
    udp(srv.addr, "hot.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(up.count(), 1, "a hit early in the TTL asked upstream");
    tokio::time::sleep(std::time::Duration::from_millis(9200)).await;
    let m = udp(srv.addr, "hot.example.", RecordType::A, EDNS).await.unwrap();
    assert!(m.answers[0].ttl <= 1, "not the old entry: {m:?}");
    assert!(eventually(std::time::Duration::from_secs(3), || async { up.count() == 2 }).await, "no prefetch: {}", up.count());
    // the refreshed entry: a fresh TTL, no further upstream query
    let m = tcp(srv.addr, "hot.example.", RecordType::A, EDNS).await;
    assert!(m.answers[0].ttl >= 8, "the prefetched entry is not in the cache: {m:?}");
    let m = udp(srv.addr, "hot.example.", RecordType::A, EDNS).await.unwrap();
    assert!(m.answers[0].ttl >= 8, "{m:?}");
    assert_eq!(up.count(), 2);
    assert_eq!(sample(&srv.metrics.encode(), "qalqan_prefetches_total"), 1.0);
    srv.shutdown().await;
}
