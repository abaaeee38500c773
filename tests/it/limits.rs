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
