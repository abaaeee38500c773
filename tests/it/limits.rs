//! Abuse limits over the wire: per-client rate limiting.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

#[tokio::test]
async fn per_client_rate_limit_refuses_past_the_burst() {
    let up = Upstream::start().await;
    let extra = "[limits]\nper_client_qps = 1\nburst = 5\n";
    let srv = TestServer::start(&config(up.addr, "", extra)).await;
    let mut codes = Vec::new();
    for i in 0..8 {
        let m = udp(srv.addr, &format!("n{i}.example."), RecordType::A, EDNS).await.unwrap();
        codes.push(m.metadata.response_code);
    }
    assert_eq!(codes.iter().filter(|c| **c == ResponseCode::NoError).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == ResponseCode::Refused).count(), 3, "{codes:?}");
    let m = udp(srv.addr, "again.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(ede(&m).first().map(|e| (e.0, e.1.as_str())), Some((18, "rate limited")));
    let metrics = http_get(srv.http, "/metrics").await.1;
    assert_eq!(sample(&metrics, "qalqan_rate_limited_total"), 4.0);
    srv.shutdown().await;
}

#[tokio::test]
async fn rate_limit_can_drop() {
    let up = Upstream::start().await;
    let extra = "[limits]\nper_client_qps = 1\nburst = 1\naction = \"drop\"\n";
    let srv = TestServer::start(&config(up.addr, "", extra)).await;
    assert!(udp(srv.addr, "a.example.", RecordType::A, EDNS).await.is_some());
    let (_, q) = query_bytes("b.example.", RecordType::A, EDNS);
    assert!(udp_raw(srv.addr, &q, std::time::Duration::from_millis(400)).await.is_none(), "dropped");
    srv.shutdown().await;
}

#[tokio::test]
async fn tcp_connections_per_client_are_capped() {
    use tokio::io::AsyncReadExt;
    let up = Upstream::start().await;
    let cfg = config(up.addr, "", "").replace("[server]\n", "[server]\nmax_tcp_per_client = 2\n");
    let srv = TestServer::start(&cfg).await;
    let a = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut c = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), c.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed at once");
    drop((a, b));
    let m = &srv.metrics;
    assert!(eventually(std::time::Duration::from_secs(2), || async { m.tcp_open.get() == 0 }).await, "the two closed");
    // slots free again: a query over TCP works
    let m = tcp(srv.addr, "x.example.", RecordType::A, EDNS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let metrics = http_get(srv.http, "/metrics").await.1;
    assert_eq!(sample(&metrics, "qalqan_tcp_connections_refused_total"), 1.0);
    srv.shutdown().await;
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    use tokio::io::AsyncReadExt;
    let up = Upstream::start().await;
    let cfg = config(up.addr, "", "").replace("[server]\n", "[server]\ntcp_idle_timeout_ms = 300\n");
    let srv = TestServer::start(&cfg).await;
    let mut c = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), c.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() < std::time::Duration::from_millis(1500), "{:?}", t.elapsed());
    srv.shutdown().await;
}

/// A connection from `src` (any 127.0.0.0/8 address) to `server`.
async fn connect_from(src: &str, server: std::net::SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{src}:0").parse().unwrap()).unwrap();
    s.connect(server).await.unwrap()
}

/// Whether the server closes `c` within `within` (EOF or reset).
async fn closed_within(c: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(within, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a reply: keep reading
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn tcp_per_client_cap_counts_the_whole_prefix() {
    let up = Upstream::start().await;
    let cfg = config(up.addr, "", "").replace("[server]\n", "[server]\nmax_tcp_per_client = 2\n");
    let srv = TestServer::start(&cfg).await;
    let _a = connect_from("127.0.0.1", srv.addr).await;
    let _b = connect_from("127.0.0.2", srv.addr).await;
    let mut c = connect_from("127.0.0.3", srv.addr).await;
    assert!(closed_within(&mut c, std::time::Duration::from_secs(2)).await, "same /24: the third is closed");
    let mut d = connect_from("127.0.1.1", srv.addr).await;
    assert!(!closed_within(&mut d, std::time::Duration::from_millis(300)).await, "another /24 has its own budget");
    srv.shutdown().await;
}

#[tokio::test]
async fn tcp_connections_end_after_max_queries_and_lifetime() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start().await;
    let cfg = config(up.addr, "", "").replace("[server]\n", "[server]\ntcp_max_queries = 3\n");
    let srv = TestServer::start(&cfg).await;
    // three queries answered, then the connection is closed
    let mut c = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    for i in 0..4 {
        let (_, q) = query_bytes(&format!("q{i}.example."), RecordType::A, EDNS);
        let mut f = (q.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&q);
        let _ = c.write_all(&f).await;
        let mut len = [0u8; 2];
        let read = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::io::AsyncReadExt::read_exact(&mut c, &mut len)).await;
        match i {
            0..=2 => {
                assert!(matches!(read, Ok(Ok(_))), "query {i} answered");
                let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
                tokio::io::AsyncReadExt::read_exact(&mut c, &mut body).await.unwrap();
            }
            _ => assert!(matches!(read, Ok(Err(_))), "the fourth query is not answered: {read:?}"),
        }
    }
    srv.shutdown().await;
    // a busy connection (a query every 100 ms, never idle for 400 ms) still ends at its lifetime
    let cfg = config(up.addr, "", "").replace("[server]\n", "[server]\ntcp_idle_timeout_ms = 400\ntcp_max_lifetime_ms = 600\n");
    let srv = TestServer::start(&cfg).await;
    let mut c = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let t = std::time::Instant::now();
    let mut closed = false;
    while t.elapsed() < std::time::Duration::from_secs(3) {
        let (_, q) = query_bytes("busy.example.", RecordType::A, EDNS);
        let mut f = (q.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&q);
        if c.write_all(&f).await.is_err() || closed_within(&mut c, std::time::Duration::from_millis(100)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "closed at its lifetime");
    let took = t.elapsed();
    assert!(took >= std::time::Duration::from_millis(400) && took < std::time::Duration::from_millis(2000), "{took:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn idle_tcp_connections_make_room_when_slots_run_low() {
    let up = Upstream::start().await;
    let cfg = config(up.addr, "", "").replace("[server]\n", "[server]\nmax_tcp_connections = 4\nmax_tcp_per_client = 10\n");
    let srv = TestServer::start(&cfg).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(srv.addr).await.unwrap());
    }
    let m = &srv.metrics;
    assert!(eventually(std::time::Duration::from_secs(2), || async { m.tcp_open.get() == 3 }).await, "three open");
    // the fourth takes the last slot: the idle ones are told to go
    let _fourth = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    for c in &mut idle {
        assert!(closed_within(c, std::time::Duration::from_secs(2)).await, "an idle connection is closed to make room");
    }
    // and a query over a new connection is answered
    let m = tcp(srv.addr, "room.example.", RecordType::A, EDNS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    srv.shutdown().await;
}

/// Replies to `packets` sent at once from one socket, collected for `wait`.
async fn replies_to(server: std::net::SocketAddr, packets: &[Vec<u8>], wait: std::time::Duration) -> Vec<Vec<u8>> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for p in packets {
        s.send_to(p, server).await.unwrap();
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, s.recv_from(&mut buf)).await {
        got.push(buf[..n].to_vec());
    }
    got
}

/// Clients outside the ACL are answered in the UDP fast path: REFUSED (with
/// EDE 18) within the global `outside_acl_refused_qps`, silence past it; a
/// packet that is not a simple query gets a bare REFUSED header, never
/// FORMERR or NOTIMP, and a response (QR set) gets nothing; with
/// `outside_acl = "drop"` nothing at all. No upstream query ever.
#[tokio::test]
async fn outsiders_get_budgeted_refused_or_nothing_never_formerr() {
    use std::time::Duration;
    let up = Upstream::start().await;
    let cfg = config(up.addr, "", "")
        .replace(r#"allow_clients = ["127.0.0.0/8"]"#, "allow_clients = [\"10.0.0.0/8\"]\noutside_acl_refused_qps = 5");
    let srv = TestServer::start(&cfg).await;
    // a flood of 40 queries: at most this second's 5 (and the next second's, if the flood straddles one)
    let flood: Vec<Vec<u8>> = (0..40).map(|i| query_bytes(&format!("f{i}.example."), RecordType::A, EDNS).1).collect();
    let got = replies_to(srv.addr, &flood, Duration::from_millis(600)).await;
    assert!((1..=10).contains(&got.len()), "budgeted: {} replies to 40", got.len());
    let m = hickory_proto::op::Message::from_vec(&got[0]).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(ede(&m).first().map(|e| e.0), Some(18));
    // once the budget refilled: odd packets
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, q) = query_bytes("odd.example.", RecordType::A, EDNS);
    let mut bad_opcode = q.clone();
    bad_opcode[2] = (bad_opcode[2] & 0x87) | (2 << 3); // opcode STATUS: NOTIMP for an insider
    let mut trailing = q.clone();
    trailing.extend_from_slice(b"junk"); // FORMERR or hickory's decode for an insider
    let mut response = q.clone();
    response[2] |= 0x80;
    for (what, p) in [("opcode 2", &bad_opcode), ("trailing bytes", &trailing)] {
        let r = udp_raw(srv.addr, p, Duration::from_millis(500)).await.unwrap_or_else(|| panic!("{what}: REFUSED within budget"));
        assert_eq!((r[0], r[1]), (p[0], p[1]), "{what}: the ID");
        assert_eq!(r[3] & 0x0f, 5, "{what}: REFUSED, not FORMERR/NOTIMP");
        assert_eq!(&r[4..12], &[0; 8], "{what}: a bare header");
    }
    assert!(udp_raw(srv.addr, &response, Duration::from_millis(300)).await.is_none(), "a response is never answered");
    assert!(udp_raw(srv.addr, &q[..8], Duration::from_millis(300)).await.is_none(), "nor a short packet");
    assert_eq!(up.count(), 0);
    srv.shutdown().await;
    let cfg = config(up.addr, "", "").replace(r#"allow_clients = ["127.0.0.0/8"]"#, "allow_clients = [\"10.0.0.0/8\"]\noutside_acl = \"drop\"");
    let srv = TestServer::start(&cfg).await;
    assert!(udp_raw(srv.addr, &q, Duration::from_millis(400)).await.is_none(), "outside_acl = drop");
    srv.shutdown().await;
}

/// `[limits]` with the blocked-query log on: limited clients are refused,
/// the others are served (blocked names included, and logged), both in the
/// UDP fast path and over TCP; the limiter counts every query once.
#[tokio::test]
async fn rate_limit_and_blocked_log_work_together() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), "block.txt", "bad.example\n");
    let log = dir.path().join("blocked.jsonl");
    let up = Upstream::start().await;
    let extra = format!("[limits]\nper_client_qps = 1\nburst = 4\n[log]\nblocked = \"{}\"\n", log.display());
    let lists = format!("[[lists]]\nname = \"b\"\nsource = \"{list}\"\n");
    let srv = TestServer::start(&config(up.addr, &lists, &extra)).await;
    let mut codes = Vec::new();
    for name in ["bad.example.", "ok.example.", "bad.example.", "ok.example.", "bad.example.", "ok.example."] {
        codes.push(udp(srv.addr, name, RecordType::A, EDNS).await.unwrap().metadata.response_code);
    }
    use ResponseCode::*;
    assert_eq!(codes, vec![NXDomain, NoError, NXDomain, NoError, Refused, Refused], "4 served, then limited");
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            std::fs::read_to_string(&log).map(|t| t.lines().filter(|l| l.contains("\"qname\":\"bad.example\"")).count() == 2).unwrap_or(false)
        })
        .await,
        "both served blocked queries logged, the limited one not: {:?}",
        std::fs::read_to_string(&log)
    );
    let metrics = http_get(srv.http, "/metrics").await.1;
    assert_eq!(sample(&metrics, "qalqan_rate_limited_total"), 2.0, "each query counted once");
    srv.shutdown().await;
}
