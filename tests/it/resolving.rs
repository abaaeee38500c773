//! Forwarding and caching: TTLs, negative caching, TCP fallback, dead upstream.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::*;

#[tokio::test]
async fn answers_are_cached_with_decreasing_ttl() {
    let up = Upstream::start().await;
    up.set("c.example.", RecordType::A, Canned::Answer(vec![a("c.example.", 100, "198.51.100.3")]));
    let srv = TestServer::start(&config(up.addr, "", "")).await;
    let m = udp(srv.addr, "c.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.answers[0].ttl, 100);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let m = udp(srv.addr, "C.EXAMPLE.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(up.count(), 1, "second query served from the cache");
    assert!(m.answers[0].ttl < 100 && m.answers[0].ttl >= 98, "ttl {}", m.answers[0].ttl);
    assert_eq!(m.answers[0].data, RData::A("198.51.100.3".parse().unwrap()));
    // another type is another cache entry
    udp(srv.addr, "c.example.", RecordType::AAAA, EDNS).await.unwrap();
    assert_eq!(up.count(), 2);
    srv.shutdown().await;
}

#[tokio::test]
async fn nxdomain_is_cached_per_rfc2308() {
    let up = Upstream::start().await;
    up.set("gone.example.", RecordType::A, Canned::NxDomain(soa("example.", 300, 5)));
    let srv = TestServer::start(&config(up.addr, "", "")).await;
    let m = udp(srv.addr, "gone.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(m.authorities.first().map(|r| &r.data), Some(RData::SOA(_))));
    let m = udp(srv.addr, "gone.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(up.count(), 1, "negative answer cached");
    srv.shutdown().await;
}

#[tokio::test]
async fn zero_ttl_answers_are_not_cached() {
    let up = Upstream::start().await;
    up.set("z.example.", RecordType::A, Canned::Answer(vec![a("z.example.", 0, "198.51.100.4")]));
    let srv = TestServer::start(&config(up.addr, "", "")).await;
    udp(srv.addr, "z.example.", RecordType::A, EDNS).await.unwrap();
    udp(srv.addr, "z.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(up.count(), 2);
    srv.shutdown().await;
}

#[tokio::test]
async fn truncated_upstream_reply_is_retried_over_tcp() {
    let up = Upstream::start().await;
    up.set("big.example.", RecordType::A, Canned::TruncatedUdp(vec![a("big.example.", 60, "198.51.100.5")]));
    let srv = TestServer::start(&config(up.addr, "", "")).await;
    let m = udp(srv.addr, "big.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.answers.len(), 1);
    assert!(!m.metadata.truncation);
    assert_eq!(up.tcp_queries.load(std::sync::atomic::Ordering::SeqCst), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn dead_upstream_gives_servfail_within_timeout() {
    // a bound socket that never answers
    let dead = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(dead.local_addr().unwrap(), "", "").replace("timeout_ms = 1000", "timeout_ms = 400");
    let srv = TestServer::start(&cfg).await;
    let t = Instant::now();
    let m = udp(srv.addr, "any.example.", RecordType::A, EDNS).await.unwrap();
    let took = t.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(took >= Duration::from_millis(350), "answered before the timeout: {took:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn failover_to_second_upstream() {
    let dead = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let up = Upstream::start().await;
    up.set("f.example.", RecordType::A, Canned::Answer(vec![a("f.example.", 60, "198.51.100.6")]));
    let cfg = config(up.addr, "", "").replace(
        &format!("servers = [\"{}\"]", up.addr),
        &format!("servers = [\"{}\", \"{}\"]", dead.local_addr().unwrap(), up.addr),
    );
    let srv = TestServer::start(&cfg).await;
    let m = udp(srv.addr, "f.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn list_change_applies_to_cached_names() {
    let up = Upstream::start().await;
    up.set("later.example.", RecordType::A, Canned::Answer(vec![a("later.example.", 3600, "198.51.100.8")]));
    let dir = tempfile::tempdir().unwrap();
    let block = write_list(dir.path(), "block.txt", "other.test\n");
    let lists = format!("[[lists]]\nname = \"reg\"\nsource = \"{block}\"\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let m = udp(srv.addr, "later.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.answers.len(), 1, "cached now");
    std::fs::write(dir.path().join("block.txt.tmp"), "other.test\nlater.example\n").unwrap();
    std::fs::rename(dir.path().join("block.txt.tmp"), dir.path().join("block.txt")).unwrap();
    let addr = srv.addr;
    let blocked = eventually(Duration::from_secs(3), || async move {
        let m = udp(addr, "later.example.", RecordType::A, EDNS).await.unwrap();
        m.metadata.response_code == ResponseCode::NXDomain
    })
    .await;
    assert!(blocked, "a cached name newly listed must be blocked within 3 s");
    srv.shutdown().await;
}

/// A UDP upstream that answers every query first with garbage, then with a
/// reply carrying the wrong ID, then one for another question, and (when
/// `honest`) finally with the right answer, the name in the case asked.
async fn spoofing_upstream(honest: bool) -> std::net::SocketAddr {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = sock.recv_from(&mut buf).await else { return };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let reply = |id: u16, name: &str, ip: &str| {
                let mut m = Message::new(id, MessageType::Response, OpCode::Query);
                m.metadata.recursion_available = true;
                let qn = hickory_proto::rr::Name::from_ascii(name).unwrap();
                m.add_query(Query::query(qn.clone(), RecordType::A));
                m.add_answer(hickory_proto::rr::Record::from_rdata(qn, 300, RData::A(ip.parse().unwrap())));
                m.to_vec().unwrap()
            };
            let qname = q.queries[0].name().to_string();
            let id = q.metadata.id;
            let _ = sock.send_to(b"\xde\xad\xbe\xef garbage", src).await;
            let _ = sock.send_to(&reply(id.wrapping_add(1), &qname, "203.0.113.66"), src).await;
            let _ = sock.send_to(&reply(id, "other.example.", "203.0.113.67"), src).await;
            if honest {
                let _ = sock.send_to(&reply(id, &qname, "198.51.100.77"), src).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn spoofed_and_garbage_upstream_replies_are_ignored() {
    let up = spoofing_upstream(true).await;
    let srv = TestServer::start(&config(up, "", "")).await;
    let m = udp(srv.addr, "victim.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data, RData::A("198.51.100.77".parse().unwrap()), "only the matching reply is used");
    // and that is what got cached
    let m = udp(srv.addr, "victim.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.answers[0].data, RData::A("198.51.100.77".parse().unwrap()));
    srv.shutdown().await;
}

#[tokio::test]
async fn upstream_sending_only_spoofs_gives_servfail_in_time_and_poisons_nothing() {
    let up = spoofing_upstream(false).await;
    let cfg = config(up, "", "").replace("timeout_ms = 1000", "timeout_ms = 400");
    let srv = TestServer::start(&cfg).await;
    for _ in 0..2 {
        let t = Instant::now();
        let m = udp(srv.addr, "victim.example.", RecordType::A, EDNS).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.answers.is_empty());
        assert!(t.elapsed() < Duration::from_millis(1500), "took {:?}", t.elapsed());
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_answered_within_the_timeout() {
    let up = Upstream::start().await;
    up.set("slow.example.", RecordType::A, Canned::Silent);
    let cfg = config(up.addr, "", "").replace("timeout_ms = 1000", "timeout_ms = 300");
    let srv = TestServer::start(&cfg).await;
    let t = Instant::now();
    let m = udp(srv.addr, "slow.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(t.elapsed() < Duration::from_millis(1200), "took {:?}", t.elapsed());
    srv.shutdown().await;
}

/// A UDP upstream answering every A query with 198.51.100.9 and recording
/// the source port of each query.
async fn port_recording_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<u16>>>) {
    use hickory_proto::op::{Message, MessageType, OpCode};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let ports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&ports);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = sock.recv_from(&mut buf).await else { return };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            seen.lock().unwrap().push(src.port());
            let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            m.metadata.recursion_available = true;
            let qn = q.queries[0].name().clone();
            m.add_query(q.queries[0].clone());
            m.add_answer(hickory_proto::rr::Record::from_rdata(qn, 300, RData::A("198.51.100.9".parse().unwrap())));
            let _ = sock.send_to(&m.to_vec().unwrap(), src).await;
        }
    });
    (addr, ports)
}

fn pool_config(up: std::net::SocketAddr, sockets: usize, per_socket: u32) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{up}\"]\ntimeout_ms = 1000\n\
         udp_sockets = {sockets}\nudp_socket_queries = {per_socket}\n"
    )
}

#[tokio::test]
async fn pooled_upstream_sockets_move_to_new_ports_as_they_are_used() {
    let (up, ports) = port_recording_upstream().await;
    let srv = TestServer::start(&pool_config(up, 2, 3)).await;
    for i in 0..12 {
        let m = udp(srv.addr, &format!("n{i}.pool.example."), RecordType::A, EDNS).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers[0].data, RData::A("198.51.100.9".parse().unwrap()));
    }
    let mut distinct = ports.lock().unwrap().clone();
    assert_eq!(distinct.len(), 12, "one upstream query per name");
    distinct.sort_unstable();
    distinct.dedup();
    // 12 queries, 3 per socket: at least 4 sockets (ports), at most 12
    assert!(distinct.len() >= 4, "ports used: {distinct:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn without_a_pool_every_upstream_query_gets_a_fresh_port() {
    let (up, ports) = port_recording_upstream().await;
    let srv = TestServer::start(&pool_config(up, 0, 1)).await;
    for i in 0..6 {
        let m = udp(srv.addr, &format!("f{i}.pool.example."), RecordType::A, EDNS).await.unwrap();
        assert_eq!(m.answers.len(), 1);
    }
    let mut distinct = ports.lock().unwrap().clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "ports used: {distinct:?}");
    srv.shutdown().await;
}

/// An upstream that breaks the 1232-byte payload we advertise: over UDP it
/// sends a 300-record reply (about 5 KB, TC clear); over TCP, one record.
async fn oversized_udp_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use hickory_proto::op::{Message, MessageType, OpCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn reply(q: &Message, records: u16) -> Vec<u8> {
        let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_available = true;
        m.add_query(q.queries[0].clone());
        for i in 0..records {
            let ip = std::net::Ipv4Addr::new(198, 51, 101 + (i / 250) as u8, (i % 250) as u8 + 1);
            m.add_answer(hickory_proto::rr::Record::from_rdata(q.queries[0].name().clone(), 300, RData::A(ip.into())));
        }
        m.to_vec().unwrap()
    }
    let (udp, tcp) = bind_pair().await;
    let addr = udp.local_addr().unwrap();
    let tcp_queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = udp.recv_from(&mut buf).await else { return };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let big = reply(&q, 300);
            assert!(big.len() > 4096, "{}", big.len());
            let _ = udp.send_to(&big, src).await;
        }
    });
    let counter = tcp_queries.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else { return };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.ok()?;
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                s.read_exact(&mut q).await.ok()?;
                let r = reply(&Message::from_vec(&q).ok()?, 1);
                s.write_all(&(r.len() as u16).to_be_bytes()).await.ok()?;
                s.write_all(&r).await.ok()
            });
        }
    });
    (addr, tcp_queries)
}

#[tokio::test]
async fn oversized_udp_reply_is_asked_again_over_tcp() {
    let (up, tcp_queries) = oversized_udp_upstream().await;
    let srv = TestServer::start(&config(up, "", "")).await;
    let m = udp(srv.addr, "huge.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "the TCP answer, not the cut UDP one");
    assert_eq!(m.answers[0].data, RData::A("198.51.101.1".parse().unwrap()));
    assert_eq!(tcp_queries.load(std::sync::atomic::Ordering::SeqCst), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn upstream_that_cannot_be_sent_to_fails_over_at_once() {
    // a send to the limited broadcast address fails (no SO_BROADCAST): the
    // query must move on to the next server right away, not after its
    // attempt's share of the timeout (here 500 ms)
    let up = Upstream::start().await;
    up.set("now.example.", RecordType::A, Canned::Answer(vec![a("now.example.", 60, "198.51.100.8")]));
    let cfg = config(up.addr, "", "").replace(
        &format!("servers = [\"{}\"]", up.addr),
        &format!("servers = [\"255.255.255.255:53\", \"{}\"]", up.addr),
    );
    let srv = TestServer::start(&cfg).await;
    let t = Instant::now();
    let m = udp(srv.addr, "now.example.", RecordType::A, EDNS).await.unwrap();
    let took = t.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert!(took < Duration::from_millis(400), "failed over after {took:?}");
    srv.shutdown().await;
}

/// RFC 8482: ANY gets one synthesized HINFO ("RFC8482"), never the records
/// upstream would list (the amplifier's question); a blocked name stays
/// blocked for ANY too.
#[tokio::test]
async fn any_gets_the_rfc_8482_minimal_answer() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), "block.txt", "bad.example\n");
    let up = Upstream::start().await;
    up.set("many.example.", RecordType::A, Canned::Answer(vec![a("many.example.", 300, "198.51.100.1")]));
    let srv = TestServer::start(&config(up.addr, &format!("[[lists]]\nname = \"b\"\nsource = \"{list}\"\n"), "")).await;
    for m in [udp(srv.addr, "many.example.", RecordType::ANY, EDNS).await.unwrap(), tcp(srv.addr, "many.example.", RecordType::ANY, EDNS).await] {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1, "{m:?}");
        match &m.answers[0].data {
            RData::HINFO(h) => assert_eq!((&h.cpu[..], &h.os[..]), (&b"RFC8482"[..], &b""[..])),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(up.count(), 0, "ANY is not asked upstream");
    let m = udp(srv.addr, "bad.example.", RecordType::ANY, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    srv.shutdown().await;
}
