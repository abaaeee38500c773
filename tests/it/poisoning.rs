//! The forwarder under a spoofing attack (issue "Trustworthy under attack"):
//! a burst of identical client queries makes one upstream query, and
//! replies with a wrong ID, the question in another case (0x20) or from
//! another source port never reach a client or the cache.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::*;

const HONEST: [u8; 4] = [198, 51, 100, 77];
const SPOOFED: [u8; 4] = [203, 0, 113, 66];

/// A reply to `query` (raw bytes) with ID `id`, the question as `question`
/// (raw, any case) and one A record `ip`.
fn reply(id: u16, question: &[u8], ip: [u8; 4]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + question.len() + 16);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    m.extend_from_slice(question);
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
    m.extend_from_slice(&ip);
    m
}

/// The question section of a query (uncompressed name, type, class).
fn question_of(query: &[u8]) -> Option<&[u8]> {
    let mut i = 12usize;
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    query.get(12..i + 4)
}

/// An upstream that holds every query for `delay`, meanwhile floods the
/// querier with spoofs (`wrong_ids` replies with other IDs, one with the
/// right ID but the name's case flipped, one with the right ID and case
/// from another port), then answers honestly, preserving the case asked.
/// Counts the queries it gets.
async fn attacked_upstream(delay: Duration, wrong_ids: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let other = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = sock.recv_from(&mut buf).await else { return };
            let q = buf[..n].to_vec();
            let Some(question) = question_of(&q).map(<[u8]>::to_vec) else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let id = u16::from_be_bytes([q[0], q[1]]);
            let (sock, other) = (sock.clone(), other.clone());
            tokio::spawn(async move {
                let flipped: Vec<u8> = question
                    .iter()
                    .enumerate()
                    .map(|(i, b)| if i + 4 < question.len() && b.is_ascii_alphabetic() { b ^ 0x20 } else { *b })
                    .collect();
                for k in 1..=wrong_ids {
                    let _ = sock.send_to(&reply(id.wrapping_add(k), &question, SPOOFED), src).await;
                }
                let _ = sock.send_to(&reply(id, &flipped, SPOOFED), src).await;
                let _ = other.send_to(&reply(id, &question, SPOOFED), src).await;
                tokio::time::sleep(delay).await;
                let _ = sock.send_to(&reply(id, &question, HONEST), src).await;
            });
        }
    });
    (addr, count)
}

/// `n` clients asking `name` at once; their replies' rcodes and first A records.
async fn burst(server: SocketAddr, name: &'static str, n: usize) -> Vec<(ResponseCode, Option<RData>)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let m = udp(server, name, RecordType::A, EDNS).await.expect("every client gets a reply");
                (m.metadata.response_code, m.answers.first().map(|r| r.data.clone()))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_burst_of_identical_misses_makes_one_upstream_query_and_spoofs_never_land() {
    let (up, count) = attacked_upstream(Duration::from_millis(300), 300).await;
    let srv = TestServer::start(&config(up, "", "")).await;
    let honest = RData::A(std::net::Ipv4Addr::from(HONEST).into());
    for (round, name) in ["burst.example.", "Second.Burst.Example."].into_iter().enumerate() {
        let got = burst(srv.addr, name, 40).await;
        assert!(got.iter().all(|(rc, a)| *rc == ResponseCode::NoError && a.as_ref() == Some(&honest)), "{name}: {got:?}");
        assert_eq!(count.load(Ordering::SeqCst), round + 1, "one upstream query per burst");
        // and the honest answer is what the cache holds
        let m = udp(srv.addr, name, RecordType::A, EDNS).await.unwrap();
        assert_eq!(m.answers.first().map(|r| r.data.clone()), Some(honest.clone()));
        assert_eq!(count.load(Ordering::SeqCst), round + 1, "answered from the cache");
    }
    // over TCP (the hickory path) too
    let got = {
        let addr = srv.addr;
        let tasks: Vec<_> = (0..10)
            .map(|_| tokio::spawn(async move { tcp(addr, "tcp.burst.example.", RecordType::A, EDNS).await }))
            .collect();
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap());
        }
        v
    };
    assert!(got.iter().all(|m| m.answers.first().map(|r| &r.data) == Some(&honest)), "{got:?}");
    assert_eq!(count.load(Ordering::SeqCst), 3, "one upstream query for the TCP burst");
    srv.shutdown().await;
}

#[tokio::test]
async fn waiters_past_the_cap_get_servfail_never_a_second_upstream_query() {
    let (up, count) = attacked_upstream(Duration::from_millis(400), 0).await;
    let cfg = config(up, "", "").replace("timeout_ms = 1000", "timeout_ms = 1000\nmax_waiters = 5");
    let srv = TestServer::start(&cfg).await;
    let got = burst(srv.addr, "capped.example.", 20).await;
    let ok = got.iter().filter(|(rc, _)| *rc == ResponseCode::NoError).count();
    let servfail = got.iter().filter(|(rc, _)| *rc == ResponseCode::ServFail).count();
    assert_eq!((ok, servfail), (6, 14), "the leader and 5 waiters answered: {got:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    srv.shutdown().await;
}

/// An upstream that answers every A query with `HONEST`, the name in its
/// own (lower) case whatever case was asked, as some middleboxes do.
async fn lowercasing_upstream() -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = sock.recv_from(&mut buf).await else { return };
            let Some(question) = question_of(&buf[..n]).map(<[u8]>::to_ascii_lowercase) else { continue };
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let _ = sock.send_to(&reply(id, &question, HONEST), src).await;
        }
    });
    addr
}

/// 0x20 falls back for an upstream that does not preserve case: each attempt
/// that gets only a wrong-case reply is asked again with the name as asked,
/// and after 3 such attempts questions are no longer randomised, so at most
/// the first 3 resolutions fail and every later one is answered at once.
#[tokio::test]
async fn case_randomisation_falls_back_for_an_upstream_that_does_not_preserve_case() {
    let up = lowercasing_upstream().await;
    let cfg = config(up, "", "").replace("timeout_ms = 1000", "timeout_ms = 300");
    let srv = TestServer::start(&cfg).await;
    let names = ["a.nocase.example.", "b.nocase.example.", "c.nocase.example.", "d.nocase.example.", "e.nocase.example."];
    let mut answered = Vec::new();
    for n in names {
        let m = udp(srv.addr, n, RecordType::A, EDNS).await.unwrap();
        answered.push(m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty());
    }
    assert!(answered.iter().filter(|a| !**a).count() <= 3, "{answered:?}");
    assert!(answered[3..].iter().all(|a| *a), "after 3 strikes every name resolves: {answered:?}");
    let t = std::time::Instant::now();
    let m = udp(srv.addr, "f.nocase.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.answers.first().map(|r| r.data.clone()), Some(RData::A(std::net::Ipv4Addr::from(HONEST).into())));
    assert!(t.elapsed() < Duration::from_millis(200), "answered without waiting for a timeout: {:?}", t.elapsed());
    srv.shutdown().await;
}

/// With case randomisation on (the default), what the upstream sees is the
/// name in mixed case; clients still get their own case back.
#[tokio::test]
async fn questions_go_upstream_in_random_case_and_come_back_as_asked() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let up = sock.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = sock.recv_from(&mut buf).await else { return };
            let Some(question) = question_of(&buf[..n]).map(<[u8]>::to_vec) else { continue };
            s2.lock().unwrap().push(question.clone());
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let _ = sock.send_to(&reply(id, &question, HONEST), src).await;
        }
    });
    let srv = TestServer::start(&config(up, "", "")).await;
    let name = "abcdefghijklmnopqrstuvwxyz.casetest.example.";
    let (id, bytes) = query_bytes(name, RecordType::A, EDNS);
    let raw = udp_raw(srv.addr, &bytes, Duration::from_secs(3)).await.unwrap();
    assert_eq!(u16::from_be_bytes([raw[0], raw[1]]), id);
    assert_eq!(question_of(&raw), question_of(&bytes), "the client's question, in the client's case");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0];
    assert!(sent.eq_ignore_ascii_case(question_of(&bytes).unwrap()));
    let upper = sent.iter().filter(|b| b.is_ascii_uppercase()).count();
    // 45 letters: all lowercase or all uppercase by chance once in 2^44
    assert!(upper > 0 && upper < 45, "sent in random case: {}", String::from_utf8_lossy(sent));
    srv.shutdown().await;
}

/// A leader that goes away (its TCP connection reaches its lifetime while the
/// upstream is still thinking) releases its waiters, and the next identical
/// miss asks upstream again instead of waiting for it forever.
#[tokio::test]
async fn a_dropped_leader_releases_its_waiters() {
    let (up, count) = attacked_upstream(Duration::from_millis(600), 0).await;
    let cfg = config(up, "", "").replace("[server]\n", "[server]\ntcp_max_lifetime_ms = 200\n");
    let srv = TestServer::start(&cfg).await;
    let addr = srv.addr;
    // the leader: a TCP query (the awaiting path), cut off at 200 ms
    let leader = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, q) = query_bytes("gone.example.", RecordType::A, EDNS);
        let mut f = (q.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&q);
        c.write_all(&f).await.unwrap();
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncReadExt::read(&mut c, &mut buf)).await;
    });
    let c = count.clone();
    assert!(eventually(Duration::from_secs(2), || async { c.load(Ordering::SeqCst) == 1 }).await, "the leader asked upstream");
    // a waiter on the fast path: answered (SERVFAIL) when the leader goes
    let m = udp(addr, "gone.example.", RecordType::A, EDNS).await.expect("the waiter is answered");
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    leader.await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // the next identical miss leads a new resolution and gets the answer
    let m = udp(addr, "gone.example.", RecordType::A, EDNS).await.expect("not stuck behind the dropped leader");
    assert_eq!(m.answers.first().map(|r| r.data.clone()), Some(RData::A(std::net::Ipv4Addr::from(HONEST).into())));
    srv.shutdown().await;
}

/// An upstream that answers every A query with `HONEST` (case preserved)
/// and records the source port of each query.
async fn port_recording_upstream() -> (SocketAddr, Arc<std::sync::Mutex<Vec<u16>>>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let up = sock.local_addr().unwrap();
    let ports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let p2 = ports.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, src)) = sock.recv_from(&mut buf).await else { return };
            let Some(question) = question_of(&buf[..n]).map(<[u8]>::to_vec) else { continue };
            p2.lock().unwrap().push(src.port());
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let _ = sock.send_to(&reply(id, &question, HONEST), src).await;
        }
    });
    (up, ports)
}

/// The remote address of the local UDP socket on 127.0.0.1:`port`, from
/// /proc/net/udp (`None`: no such socket). 0.0.0.0:0 means unconnected.
fn udp_peer(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace().skip(1);
        let local = f.next()?;
        let remote = f.next()?;
        let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        (p == port).then(|| remote.to_owned())
    })
}

/// Pooled upstream sockets are connected to their server (the kernel drops
/// replies from any other address or port before qalqan reads them) and
/// move to a new random port once `udp_socket_lifetime_ms` old, even on a
/// node that sent a single query meanwhile: a port learnt is soon useless.
#[tokio::test]
async fn upstream_sockets_are_connected_and_replaced_on_a_timer() {
    let (up, ports) = port_recording_upstream().await;
    let cfg = config(up, "", "")
        .replace("timeout_ms = 1000", "timeout_ms = 1000\nudp_sockets = 1\nudp_socket_lifetime_ms = 300\ncase_randomization = false");
    let srv = TestServer::start(&cfg).await;
    for name in ["p1.ports.example.", "p2.ports.example."] {
        let m = udp(srv.addr, name, RecordType::A, EDNS).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }
    let first = ports.lock().unwrap().clone();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0], first[1], "one socket (udp_sockets = 1), younger than its lifetime: the same port");
    // the socket is connected to the upstream: its peer in the kernel's table
    let peer = udp_peer(first[0]).expect("the pooled socket is open");
    let want = format!("0100007F:{:04X}", up.port());
    assert_eq!(peer, want, "connected to {up}, not open to anyone (0.0.0.0:0)");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m = udp(srv.addr, "p3.ports.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let all = ports.lock().unwrap().clone();
    assert_ne!(all[2], all[0], "older than udp_socket_lifetime_ms: a new socket, a new port");
    srv.shutdown().await;
}
