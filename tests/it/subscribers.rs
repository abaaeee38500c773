//! What a subscriber is told and which lists apply to it, over the wire:
//! structured DNS errors (`[sde]`: JSON EXTRA-TEXT for clients that send
//! the SDE option or an EDE option, or for all with `mode = "always"`;
//! plain text for the rest) and views (`[[views]]`: clients bound to
//! 127.0.0.2 / 127.0.0.3 get different answers for the same name; a
//! regulator list applies in every view unless `except` says otherwise).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

const REGISTRY: &str = "Updated: 2026-11-30 10:00:00 +0000\n\
IP;domain;URL;authority;decision;date\n\
;blocked.example;;Генпрокуратура;27-31-2015/Ид831-15;2015-03-12\n";

/// A query for `qname` A with EDNS and, if given, one option `(code, data)`.
fn query_with(qname: &str, option: Option<(u16, Vec<u8>)>) -> (u16, Vec<u8>) {
    let id: u16 = rand::random();
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), RecordType::A));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some((code, data)) = option {
        e.options_mut().insert(EdnsOption::Unknown(code, data));
    }
    m.set_edns(e);
    (id, m.to_vec().unwrap())
}

/// Sends `bytes` from a UDP socket bound to `from` and decodes the reply.
async fn udp_from(from: IpAddr, server: SocketAddr, bytes: &[u8]) -> Message {
    let s = tokio::net::UdpSocket::bind(SocketAddr::new(from, 0)).await.unwrap();
    s.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf)).await.expect("a reply").unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// The same over TCP from `from`.
async fn tcp_from(from: IpAddr, server: SocketAddr, bytes: &[u8]) -> Message {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock.connect(server).await.unwrap();
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut len)).await.unwrap().unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn json_of(m: &Message) -> serde_json::Value {
    let e = ede(m);
    assert_eq!(e.len(), 1, "{e:?}");
    serde_json::from_str(&e[0].1).unwrap_or_else(|err| panic!("EXTRA-TEXT `{}` is not JSON: {err}", e[0].1))
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

async fn sde_server(mode: &str) -> (Upstream, TestServer, tempfile::TempDir) {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let reg = write_list(dir.path(), "registry.csv", REGISTRY);
    let ads = write_list(dir.path(), "ads.txt", "ads.test\n");
    let lists = format!(
        r#"
[sde]
mode = "{mode}"
contact = ["mailto:abuse@isp.example", "tel:+7-727-000-0000"]
organization = "ISP \"Qalqan\" Filtering"
language = "ru"
[[lists]]
name = "regulator"
source = "{reg}"
format = "registry-csv"
ede = 16
sde_justification = "{{list}}: решение {{decision}} ({{authority}}) от {{date}}"
[[lists]]
name = "ads"
source = "{ads}"
sde_sub_error = 6
"#
    );
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    (up, srv, dir)
}

#[tokio::test]
async fn structured_errors_go_to_clients_that_ask_and_plain_text_to_the_rest() {
    let (_up, srv, _d) = sde_server("signalled").await;
    let want = serde_json::json!({
        "c": ["mailto:abuse@isp.example", "tel:+7-727-000-0000"],
        "j": "regulator: решение 27-31-2015/Ид831-15 (Генпрокуратура) от 2015-03-12",
        "o": "ISP \"Qalqan\" Filtering",
        "l": "ru",
    });
    // the draft's SDE option (no data), over UDP and TCP
    let (_, q) = query_with("blocked.example.", Some((65001, vec![])));
    let m = udp_from(LOCAL, srv.addr, &q).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ede(&m)[0].0, 16);
    assert_eq!(json_of(&m), want);
    assert_eq!(json_of(&tcp_from(LOCAL, srv.addr, &q).await), want);
    // revision -09's signal: an EDE option (INFO-CODE 0) in the query
    let (_, q) = query_with("sub.blocked.example.", Some((15, vec![0, 0])));
    assert_eq!(json_of(&udp_from(LOCAL, srv.addr, &q).await), want);
    // a list without a template: j is the plain text, s its sub-error
    let (_, q) = query_with("ads.test.", Some((65001, vec![])));
    let got = json_of(&udp_from(LOCAL, srv.addr, &q).await);
    assert_eq!((got["j"].as_str(), got["s"].as_u64()), (Some("blocked by list ads"), Some(6)), "{got}");
    // no signal (the fast path): plain text; another option is no signal either
    for option in [None, Some((10, vec![1, 2, 3, 4, 5, 6, 7, 8]))] {
        let (_, q) = query_with("blocked.example.", option.clone());
        let m = udp_from(LOCAL, srv.addr, &q).await;
        assert_eq!(ede(&m), vec![(16, "blocked by list regulator; decision 27-31-2015/Ид831-15 (Генпрокуратура)".to_owned())], "{option:?}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn always_mode_gives_every_edns_client_the_structured_error() {
    let (_up, srv, _d) = sde_server("always").await;
    // a plain EDNS query: the fast path writes the JSON
    let m = udp(srv.addr, "blocked.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(json_of(&m)["j"], "regulator: решение 27-31-2015/Ид831-15 (Генпрокуратура) от 2015-03-12");
    let m = udp(srv.addr, "ads.test.", RecordType::AAAA, EDNS).await.unwrap();
    assert_eq!(json_of(&m)["s"], 6);
    // a small client size: the reply still fits; no EDNS: no EDE at all
    let m = udp(srv.addr, "blocked.example.", RecordType::A, Q { payload: 512, ..EDNS }).await.unwrap();
    assert!(json_of(&m).get("c").is_some());
    let m = udp(srv.addr, "blocked.example.", RecordType::A, PLAIN).await.unwrap();
    assert!(ede(&m).is_empty() && m.edns.is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn off_mode_and_prohibited_code_keep_the_plain_text() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ads = write_list(dir.path(), "ads.txt", "ads.test\n");
    let lists = format!("[sde]\nmode = \"off\"\n[[lists]]\nname = \"ads\"\nsource = \"{ads}\"\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let (_, q) = query_with("ads.test.", Some((65001, vec![])));
    assert_eq!(ede(&udp_from(LOCAL, srv.addr, &q).await), vec![(15, "blocked by list ads".to_owned())]);
    srv.shutdown().await;
    // EDE 18 (Prohibited) is not one the draft structures
    let lists = format!("[sde]\nmode = \"always\"\n[[lists]]\nname = \"ads\"\nsource = \"{ads}\"\nede = 18\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let m = udp(srv.addr, "ads.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(ede(&m), vec![(18, "blocked by list ads".to_owned())]);
    srv.shutdown().await;
}

async fn views_server() -> (Upstream, TestServer, tempfile::TempDir) {
    let up = Upstream::start().await;
    for n in ["adult.test.", "shared.test.", "reg.test.", "malware.test.", "cloak.test."] {
        up.set(n, RecordType::A, Canned::Answer(vec![a(n, 300, "198.51.100.1")]));
    }
    // a CNAME into a name only the adult list blocks
    up.set("cloak.test.", RecordType::A, Canned::Answer(vec![cname("cloak.test.", 300, "x.adult.test."), a("x.adult.test.", 300, "198.51.100.2")]));
    let dir = tempfile::tempdir().unwrap();
    let reg = write_list(dir.path(), "reg.txt", "reg.test\n");
    let adult = write_list(dir.path(), "adult.txt", "adult.test\nshared.test\n");
    let malware = write_list(dir.path(), "malware.txt", "malware.test\nshared.test\n");
    let lists = format!(
        r#"
[[lists]]
name = "regulator"
source = "{reg}"
regulator = true
ede = 16
[[lists]]
name = "adult"
source = "{adult}"
[[lists]]
name = "malware"
source = "{malware}"
ede = 17
[[views]]
name = "kids"
clients = ["127.0.0.2"]
lists = ["adult", "malware"]
[[views]]
name = "business"
clients = ["127.0.0.3/32"]
lists = ["malware"]
[[views]]
name = "lab"
clients = ["127.0.0.4/32"]
except = ["regulator"]
"#
    );
    let toml = config(up.addr, &lists, "");
    std::fs::write(dir.path().join("qalqan.toml"), &toml).unwrap();
    let srv = TestServer::start(&toml).await;
    (up, srv, dir)
}

/// (rcode, the EDE text's list) of `qname` asked from `from` over UDP.
async fn outcome(srv: &TestServer, from: &str, qname: &str) -> (ResponseCode, String) {
    let (_, q) = query_with(qname, None);
    let m = udp_from(from.parse().unwrap(), srv.addr, &q).await;
    (m.metadata.response_code, ede(&m).first().map(|e| e.1.clone()).unwrap_or_default())
}

#[tokio::test]
async fn views_give_two_client_prefixes_different_answers() {
    let (_up, srv, _d) = views_server().await;
    let blocked = |list: &str| (ResponseCode::NXDomain, format!("blocked by list {list}"));
    let pass = (ResponseCode::NoError, String::new());
    // asked first by the view that lets it through, so a cached answer is
    // there when the other view asks
    assert_eq!(outcome(&srv, "127.0.0.3", "adult.test.").await, pass);
    assert_eq!(outcome(&srv, "127.0.0.2", "adult.test.").await, blocked("adult"));
    assert_eq!(outcome(&srv, "127.0.0.3", "adult.test.").await, pass, "a cached answer, still the view's");
    // a client in no view: every list
    assert_eq!(outcome(&srv, "127.0.0.1", "adult.test.").await, blocked("adult"));
    // the first matching list is left out of the view: the later one still blocks
    assert_eq!(outcome(&srv, "127.0.0.2", "shared.test.").await, blocked("adult"));
    assert_eq!(outcome(&srv, "127.0.0.3", "shared.test.").await, blocked("malware"));
    // the regulator list applies in every view but the one that excepts it
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        assert_eq!(outcome(&srv, from, "reg.test.").await, blocked("regulator"), "{from}");
    }
    assert_eq!(outcome(&srv, "127.0.0.4", "reg.test.").await, pass);
    assert_eq!(outcome(&srv, "127.0.0.4", "malware.test.").await, pass, "the lab view has no lists");
    // a CNAME target is checked against the view's lists too
    assert_eq!(outcome(&srv, "127.0.0.3", "cloak.test.").await, pass);
    assert_eq!(outcome(&srv, "127.0.0.2", "cloak.test.").await, blocked("adult"));
    // the hickory path (TCP) decides the same
    let (_, q) = query_with("adult.test.", None);
    assert_eq!(tcp_from("127.0.0.2".parse().unwrap(), srv.addr, &q).await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(tcp_from("127.0.0.3".parse().unwrap(), srv.addr, &q).await.metadata.response_code, ResponseCode::NoError);
    srv.shutdown().await;
}

#[tokio::test]
async fn explain_and_lists_show_the_view() {
    let (_up, srv, dir) = views_server().await;
    let (status, body) = http_get(srv.http, "/explain?name=adult.test&client=127.0.0.3").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("pass\n  view:     business"), "{body}");
    let (_, body) = http_get(srv.http, "/explain?name=shared.test&client=127.0.0.3").await;
    assert!(body.contains("blocked") && body.contains("list:     malware"), "{body}");
    let (_, body) = http_get(srv.http, "/explain?name=shared.test").await;
    assert!(body.contains("list:     adult") && !body.contains("view:"), "{body}");
    assert_eq!(http_get(srv.http, "/explain?name=a.test&client=nope").await.0, 400);
    let (_, body) = http_get(srv.http, "/lists").await;
    for want in ["view kids\tlists=regulator,adult,malware", "view business\tlists=regulator,malware", "view lab\tlists=\n"] {
        assert!(body.contains(want), "{want:?} in {body}");
    }
    srv.shutdown().await;
    // the command line
    let config = dir.path().join("qalqan.toml");
    let run = |client: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qalqan"))
            .args(["explain", "--config"])
            .arg(&config)
            .args(["adult.test", "--client", client])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run("127.0.0.2").starts_with("blocked\n  view:     kids\n  list:     adult"), "{}", run("127.0.0.2"));
    assert!(run("127.0.0.3").starts_with("pass\n  view:     business"), "{}", run("127.0.0.3"));
    assert!(run("127.0.0.9").starts_with("blocked\n  list:     adult"), "no view: every list");
}
