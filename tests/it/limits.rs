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
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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
