//! Policy over the wire: blocked, subtree, allowed, each action, EDE, CNAME cloaking.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::*;

async fn setup(action: &str) -> (Upstream, TestServer, tempfile::TempDir) {
    let up = Upstream::start().await;
    up.set("ok.example.", RecordType::A, Canned::Answer(vec![a("ok.example.", 300, "198.51.100.1")]));
    up.set("cloak.example.", RecordType::A, Canned::Answer(vec![
        cname("cloak.example.", 300, "tracker.bad.test."),
        a("tracker.bad.test.", 300, "198.51.100.9"),
    ]));
    up.set("good.bad.test.", RecordType::A, Canned::Answer(vec![a("good.bad.test.", 300, "198.51.100.7")]));
    let dir = tempfile::tempdir().unwrap();
    let block = write_list(dir.path(), "block.txt", "# test list\nbad.test\nEvil.Example.\n");
    let allow = write_list(dir.path(), "allow.txt", "good.bad.test\n");
    let lists = format!(
        r#"
[[lists]]
name = "allow"
source = "{allow}"
kind = "allow"
[[lists]]
name = "regulator"
source = "{block}"
action = "{action}"
ede = 16
"#
    );
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    (up, srv, dir)
}

#[tokio::test]
async fn blocked_name_gets_nxdomain_with_soa_and_ede() {
    let (up, srv, _d) = setup("nxdomain").await;
    let m = udp(srv.addr, "bad.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.recursion_available, "RA must be set");
    assert!(m.answers.is_empty());
    assert!(matches!(m.authorities.first().map(|r| &r.data), Some(RData::SOA(_))), "{:?}", m.authorities);
    assert_eq!(m.authorities[0].name.to_string(), "bad.test.");
    assert_eq!(ede(&m), vec![(16, "blocked by list regulator".to_owned())]);
    assert_eq!(up.count(), 0, "blocked names never reach the upstream");
    srv.shutdown().await;
}

#[tokio::test]
async fn subdomains_case_and_trailing_dot_are_blocked() {
    let (_up, srv, _d) = setup("nxdomain").await;
    for n in ["deep.sub.bad.test.", "BAD.TEST.", "www.evil.example.", "evil.example."] {
        let m = udp(srv.addr, n, RecordType::AAAA, EDNS).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{n}");
    }
    // a name that only shares a suffix string, not a label boundary, passes
    let m = udp(srv.addr, "notbad.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    srv.shutdown().await;
}

#[tokio::test]
async fn allowed_name_returns_upstream_records() {
    let (up, srv, _d) = setup("nxdomain").await;
    let m = udp(srv.addr, "ok.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data, RData::A("198.51.100.1".parse().unwrap()));
    assert!(ede(&m).is_empty());
    assert_eq!(up.count(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn allowlist_beats_blocklist() {
    let (_up, srv, _d) = setup("nxdomain").await;
    let m = udp(srv.addr, "good.bad.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers[0].data, RData::A("198.51.100.7".parse().unwrap()));
    srv.shutdown().await;
}

#[tokio::test]
async fn cname_to_blocked_name_is_blocked() {
    let (up, srv, _d) = setup("nxdomain").await;
    let m = udp(srv.addr, "cloak.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty(), "the cloaked answer must not leak: {:?}", m.answers);
    assert_eq!(ede(&m).first().map(|e| e.0), Some(16));
    assert_eq!(up.count(), 1);
    // second time from the cache: still blocked
    let m = udp(srv.addr, "cloak.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(up.count(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn action_nodata() {
    let (_up, srv, _d) = setup("nodata").await;
    let m = udp(srv.addr, "bad.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(matches!(m.authorities.first().map(|r| &r.data), Some(RData::SOA(_))));
    assert_eq!(ede(&m).len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn action_sinkhole() {
    let (_up, srv, _d) = setup("sinkhole").await;
    let m = udp(srv.addr, "x.bad.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data, RData::A("192.0.2.66".parse().unwrap()));
    assert_eq!(m.answers[0].ttl, 120);
    assert_eq!(m.answers[0].name.to_string(), "x.bad.test.");
    let m = udp(srv.addr, "x.bad.test.", RecordType::AAAA, EDNS).await.unwrap();
    assert_eq!(m.answers[0].data, RData::AAAA("2001:db8::66".parse().unwrap()));
    let m = udp(srv.addr, "x.bad.test.", RecordType::MX, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "other types get NODATA");
    assert_eq!(ede(&m).len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn action_refused() {
    let (_up, srv, _d) = setup("refused").await;
    let m = udp(srv.addr, "bad.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(ede(&m), vec![(16, "blocked by list regulator".to_owned())]);
    srv.shutdown().await;
}

#[tokio::test]
async fn action_drop_sends_nothing() {
    let (_up, srv, _d) = setup("drop").await;
    let (_, bytes) = query_bytes("bad.test.", RecordType::A, EDNS);
    assert!(udp_raw(srv.addr, &bytes, std::time::Duration::from_millis(700)).await.is_none());
    // the server still answers other names
    let m = udp(srv.addr, "ok.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    srv.shutdown().await;
}

#[tokio::test]
async fn no_edns_query_gets_no_opt_and_no_ede() {
    let (_up, srv, _d) = setup("nxdomain").await;
    let m = udp(srv.addr, "bad.test.", RecordType::A, PLAIN).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.edns.is_none(), "no OPT in the reply to a query without one");
    let m = udp(srv.addr, "ok.example.", RecordType::A, PLAIN).await.unwrap();
    assert!(m.edns.is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn edns_is_echoed_with_do_and_payload() {
    let (_up, srv, _d) = setup("nxdomain").await;
    let q = Q { edns: true, dnssec_ok: true, payload: 4096 };
    let m = udp(srv.addr, "ok.example.", RecordType::A, q).await.unwrap();
    let e = m.edns.as_ref().expect("OPT expected");
    assert!(e.flags().dnssec_ok, "DO mirrored");
    assert_eq!(e.max_payload(), 1232, "payload capped at server.max_udp_payload");
    assert_eq!(e.version(), 0);
    let q = Q { edns: true, dnssec_ok: false, payload: 600 };
    let m = udp(srv.addr, "bad.test.", RecordType::A, q).await.unwrap();
    let e = m.edns.as_ref().unwrap();
    assert!(!e.flags().dnssec_ok);
    assert_eq!(e.max_payload(), 600);
    srv.shutdown().await;
}

#[tokio::test]
async fn tcp_and_udp_agree() {
    let (_up, srv, _d) = setup("nxdomain").await;
    let m = tcp(srv.addr, "bad.test.", RecordType::A, EDNS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ede(&m).len(), 1);
    let m = tcp(srv.addr, "ok.example.", RecordType::A, PLAIN).await;
    assert_eq!(m.answers.len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn clients_outside_acl_are_refused_with_ede_18() {
    let up = Upstream::start().await;
    let cfg = config(up.addr, "", "").replace(r#"allow_clients = ["127.0.0.0/8"]"#, r#"allow_clients = ["10.0.0.0/8"]"#);
    let srv = TestServer::start(&cfg).await;
    let m = udp(srv.addr, "ok.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(ede(&m).first().map(|e| e.0), Some(18));
    // TCP: refused at accept, before any query: an outsider never holds a slot
    let mut c = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::io::AsyncReadExt::read(&mut c, &mut buf))
        .await
        .expect("closed at once, not after the idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    assert_eq!(up.count(), 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn serves_ipv6_listeners() {
    let Ok(udp6) = tokio::net::UdpSocket::bind("[::1]:0").await else {
        assert!(!in_ci(), "CI=true: no IPv6 loopback (::1) on this machine");
        eprintln!("SKIPPING: no IPv6 loopback on this machine");
        return;
    };
    let addr6 = udp6.local_addr().unwrap();
    let tcp6 = tokio::net::TcpListener::bind(addr6).await.unwrap();
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let block = write_list(dir.path(), "b.txt", "bad.test\n");
    let cfg = config(up.addr, &format!("[[lists]]\nname = \"reg\"\nsource = \"{block}\"\n"), "")
        .replace(r#"allow_clients = ["127.0.0.0/8"]"#, r#"allow_clients = ["127.0.0.0/8", "::1/128"]"#);
    let app = qalqan::App::from_toml_str(&cfg).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(qalqan::serve(app, qalqan::Sockets::new(vec![udp6], vec![tcp6]), stop.clone()));
    let m = udp6_query(addr6, "bad.test.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = tcp(addr6, "bad.test.", RecordType::A, EDNS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    stop.cancel();
    task.await.unwrap().unwrap();
}

async fn udp6_query(server: std::net::SocketAddr, n: &str) -> hickory_proto::op::Message {
    let s = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    let (_, q) = query_bytes(n, RecordType::A, EDNS);
    s.send_to(&q, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(std::time::Duration::from_secs(3), s.recv_from(&mut buf)).await.unwrap().unwrap();
    hickory_proto::op::Message::from_vec(&buf[..len]).unwrap()
}
