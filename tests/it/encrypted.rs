//! Encrypted DNS (issue #22) over the wire with real clients: `kdig +tls`,
//! `kdig +https`, `kdig +quic`, `curl` against /dns-query, and small rustls
//! and quinn clients for what those cannot show (which certificate a
//! handshake got, a half-sent query, a connection from outside the ACL).
//! The certificate comes from `contrib/make-test-cert.sh` (openssl), which
//! makes a new CA every run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::svcb::{SvcParamKey, SvcParamValue};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const NAME: &str = "dns.qalqan.test";

/// Whether every tool is installed; under CI a missing one fails the test.
fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!in_ci(), "CI=true: {missing:?} not installed (tests/run.sh installs them)");
    eprintln!("SKIPPING: {missing:?} not installed");
    false
}

/// A new CA and server certificate for NAME in `dir`.
fn make_cert(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/make-test-cert.sh");
    let out = Command::new("sh").arg(script).arg(dir).arg(NAME).arg("30").output().unwrap();
    assert!(out.status.success(), "make-test-cert.sh: {}", String::from_utf8_lossy(&out.stderr));
}

/// A server with DoT, DoH and DoQ on 127.0.0.1 port 0, its endpoints read
/// from its own DDR answer.
struct Enc {
    server: TestServer,
    dir: tempfile::TempDir,
    dot: SocketAddr,
    doh: SocketAddr,
    doq: SocketAddr,
    _upstream: Upstream,
}

impl Enc {
    /// `slow`: the 1 s handshake and 1.5 s idle timeouts of the slowloris
    /// test; otherwise timeouts a loaded test machine never reaches.
    async fn start(allow: &str, slow: bool) -> Option<Enc> {
        Self::start_with(allow, slow, "").await
    }

    /// `extra`: more `[server]` keys.
    async fn start_with(allow: &str, slow: bool, extra: &str) -> Option<Enc> {
        if !have(&["openssl"]) {
            return None;
        }
        let upstream = Upstream::start().await;
        upstream.set("allowed.test.", RecordType::A, Canned::Answer(vec![a("allowed.test.", 300, "192.0.2.10")]));
        upstream.set("slow.test.", RecordType::A, Canned::Silent);
        let dir = tempfile::tempdir().unwrap();
        make_cert(dir.path());
        let list = write_list(dir.path(), "block.txt", "blocked.test\n");
        let d = dir.path().display();
        let toml = format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
allow_clients = ["{allow}"]
dot_listen = ["127.0.0.1:0"]
doh_listen = ["127.0.0.1:0"]
doq_listen = ["127.0.0.1:0"]
ddr = true
canary = "nxdomain"
tls_handshake_timeout_ms = {handshake}
tls_idle_timeout_ms = {idle}
{extra}
[tls]
cert = "{d}/fullchain.pem"
key = "{d}/key.pem"
[upstream]
servers = ["{up}"]
timeout_ms = 1000
[log]
blocked = "{d}/blocked.jsonl"
[[lists]]
name = "block"
source = "{list}"
format = "domains"
kind = "block"
action = "nxdomain"
"#,
            up = upstream.addr,
            handshake = if slow { 1000 } else { 10_000 },
            idle = if slow { 1500 } else { 20_000 },
        );
        let server = TestServer::start(&toml).await;
        // DDR says where the encrypted listeners are
        let m = eventually_udp(server.addr, "_dns.resolver.arpa.", RecordType::SVCB).await;
        let eps = ddr_endpoints(&m);
        let port = |alpn: &str| {
            let (_, port, _) = eps.iter().find(|(a, _, _)| a == alpn).unwrap_or_else(|| panic!("no {alpn} in DDR answer {eps:?}"));
            SocketAddr::from(([127, 0, 0, 1], *port))
        };
        Some(Enc { dot: port("dot"), doh: port("h2"), doq: port("doq"), server, dir, _upstream: upstream })
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

async fn eventually_udp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    for _ in 0..50 {
        if let Some(m) = udp(addr, name, qtype, EDNS).await {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no UDP answer from {addr}");
}

/// (alpn, port, dohpath) of each SVCB record of a DDR answer.
fn ddr_endpoints(m: &Message) -> Vec<(String, u16, Option<String>)> {
    let mut out = Vec::new();
    for r in &m.answers {
        let RData::SVCB(svcb) = &r.data else { panic!("not SVCB: {r:?}") };
        assert_eq!(svcb.target_name.to_ascii(), format!("{NAME}."));
        let (mut alpn, mut port, mut path) = (None, None, None);
        for (k, v) in &svcb.svc_params {
            match (k, v) {
                (SvcParamKey::Alpn, SvcParamValue::Alpn(a)) => alpn = a.0.first().cloned(),
                (SvcParamKey::Port, SvcParamValue::Port(p)) => port = Some(*p),
                (_, SvcParamValue::Unknown(u)) if u16::from(*k) == 7 => path = Some(String::from_utf8(u.0.clone()).unwrap()),
                _ => {}
            }
        }
        out.push((alpn.unwrap(), port.unwrap(), path));
    }
    out
}

/// What a kdig run showed: status, EDE lines, answer records without TTL,
/// whether the reply was padded and its size.
#[derive(Debug, PartialEq)]
struct Seen {
    status: String,
    ede: Vec<String>,
    answers: Vec<String>,
}

async fn kdig(args: Vec<String>) -> (Seen, bool, usize) {
    let out = tokio::task::spawn_blocking(move || Command::new("kdig").args(&args).output().unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && text.contains("status:"), "kdig failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    let header = text.lines().find(|l| l.contains("->>HEADER<<-")).unwrap_or("");
    let status = header.split("status: ").nth(1).and_then(|s| s.split(';').next()).unwrap_or("").trim().to_owned();
    let ede = text.lines().filter(|l| l.starts_with(";; EDE:")).map(str::to_owned).collect();
    let mut answers = Vec::new();
    let mut in_answer = false;
    for l in text.lines() {
        if l.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
        } else if l.trim().is_empty() || l.starts_with(";;") {
            in_answer = false;
        } else if in_answer {
            let f: Vec<&str> = l.split_whitespace().collect();
            answers.push(format!("{} {}", f[0], f[2..].join(" ")));
        }
    }
    let padded = text.contains(";; PADDING:");
    let size = text.split(";; Received ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    (Seen { status, ede, answers }, padded, size)
}

/// kdig arguments for `name`/`qtype` over `proto`.
fn kdig_args(e: &Enc, proto: &str, name: &str, qtype: &str) -> Vec<String> {
    let ca = format!("+tls-ca={}", e.ca().display());
    let host = format!("+tls-hostname={NAME}");
    let (addr, mode): (SocketAddr, Vec<String>) = match proto {
        "udp" => (e.server.addr, vec!["+notcp".into()]),
        "tcp" => (e.server.addr, vec!["+tcp".into()]),
        "dot" => (e.dot, vec!["+tls".into(), ca, host]),
        "doh" => (e.doh, vec!["+https".into(), ca, host]),
        // kdig 3.2.6 (Debian 12) crashes on +quic with +tls-ca: DoQ is checked
        // unauthenticated here and with verification by `doq_query` below
        "doq" => (e.doq, vec!["+quic".into()]),
        _ => unreachable!(),
    };
    let mut args = vec![format!("@{}", addr.ip()), "-p".into(), addr.port().to_string(), "+timeout=3".into(), "+retry=0".into(), "+edns".into()];
    args.extend(mode);
    args.push(name.into());
    args.push(qtype.into());
    args
}

const PROTOCOLS: [&str; 5] = ["udp", "tcp", "dot", "doh", "doq"];

#[tokio::test(flavor = "multi_thread")]
async fn same_answers_over_every_transport_and_counted_by_protocol() {
    if !have(&["kdig"]) {
        return;
    }
    let Some(e) = Enc::start("127.0.0.0/8", false).await else { return };
    // (name, qtype, expected status, expected answer)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("blocked.test", "A", "NXDOMAIN", None),
        ("allowed.test", "A", "NOERROR", Some("allowed.test. IN A 192.0.2.10")),
        // the second time from the cache
        ("allowed.test", "A", "NOERROR", Some("allowed.test. IN A 192.0.2.10")),
        ("use-application-dns.net", "A", "NXDOMAIN", None),
    ];
    for (name, qtype, status, answer) in cases {
        let mut first: Option<Seen> = None;
        for proto in PROTOCOLS {
            let (seen, padded, size) = kdig(kdig_args(&e, proto, name, qtype)).await;
            assert_eq!(&seen.status, status, "{proto} {name}");
            assert_eq!(seen.answers.first().map(String::as_str), *answer, "{proto} {name}");
            let encrypted = !matches!(proto, "udp" | "tcp");
            assert_eq!(padded, encrypted, "{proto} {name}: padded only when encrypted");
            if encrypted {
                assert_eq!(size % 468, 0, "{proto} {name}: padded to 468-byte blocks, got {size}");
            }
            match &first {
                None => first = Some(seen),
                Some(f) => assert_eq!(&seen, f, "{proto} {name}: differs from udp"),
            }
        }
        if *name == "blocked.test" {
            let f = first.unwrap();
            assert!(f.ede.iter().any(|l| l.contains("15") && l.contains("block")), "EDE names the list: {:?}", f.ede);
        }
    }
    // the blocked-query log names the transport
    let log = e.dir.path().join("blocked.jsonl");
    let logged = eventually(Duration::from_secs(3), || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            PROTOCOLS.iter().all(|p| text.lines().any(|l| l.contains(&format!("\"protocol\":\"{p}\"")) && l.contains("blocked.test")))
        }
    })
    .await;
    assert!(logged, "blocked-query log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let (_, metrics) = http_get(e.server.http, "/metrics").await;
    for proto in PROTOCOLS {
        let n: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("qalqan_queries_total{") && l.contains(&format!("protocol=\"{proto}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(n >= cases.len() as f64, "protocol {proto} counted {n} queries:\n{metrics}");
    }
    e.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ddr_answer_and_curl_get_post() {
    if !have(&["curl"]) {
        return;
    }
    let Some(e) = Enc::start("127.0.0.0/8", false).await else { return };
    let m = udp(e.server.addr, "_dns.resolver.arpa.", RecordType::SVCB, EDNS).await.unwrap();
    let eps = ddr_endpoints(&m);
    assert_eq!(
        eps,
        vec![
            ("dot".to_owned(), e.dot.port(), None),
            ("h2".to_owned(), e.doh.port(), Some("/dns-query{?dns}".to_owned())),
            ("doq".to_owned(), e.doq.port(), None),
        ]
    );
    // other types of the name: NODATA
    let m = udp(e.server.addr, "_dns.resolver.arpa.", RecordType::A, EDNS).await.unwrap();
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));

    let curl = |args: Vec<String>| async move {
        let a2 = args.clone();
        let out = tokio::task::spawn_blocking(move || Command::new("curl").args(&a2).output().unwrap()).await.unwrap();
        assert!(out.status.success(), "curl {args:?}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let base = |e: &Enc| {
        vec![
            "-sS".to_owned(),
            "--cacert".into(),
            e.ca().display().to_string(),
            "--resolve".into(),
            format!("{NAME}:{}:127.0.0.1", e.doh.port()),
            "-w".into(),
            "\n%{http_code} %{content_type}".into(),
        ]
    };
    let url = format!("https://{NAME}:{}/dns-query", e.doh.port());
    for (name, rcode) in [("blocked.test.", ResponseCode::NXDomain), ("allowed.test.", ResponseCode::NoError)] {
        let (_, q) = query_bytes(name, RecordType::A, EDNS);
        // GET ?dns= (base64url, no padding), HTTP/2 and HTTP/1.1
        let b64 = data_encoding::BASE64URL_NOPAD.encode(&q);
        for version in ["--http2", "--http1.1"] {
            let mut a = base(&e);
            a.extend([version.to_owned(), format!("{url}?dns={b64}")]);
            let out = curl(a).await;
            let (body, tail) = out.split_at(out.iter().rposition(|&b| b == b'\n').unwrap());
            assert_eq!(String::from_utf8_lossy(tail).trim(), "200 application/dns-message", "GET {version} {name}");
            let m = Message::from_vec(body).unwrap();
            assert_eq!(m.metadata.response_code, rcode, "GET {version} {name}");
            assert_eq!(body.len() % 468, 0, "padded");
        }
        // POST application/dns-message
        let qfile = e.dir.path().join("q.bin");
        std::fs::write(&qfile, &q).unwrap();
        let mut a = base(&e);
        a.extend(["-H".to_owned(), "content-type: application/dns-message".into(), "--data-binary".into(), format!("@{}", qfile.display()), url.clone()]);
        let out = curl(a).await;
        let (body, tail) = out.split_at(out.iter().rposition(|&b| b == b'\n').unwrap());
        assert_eq!(String::from_utf8_lossy(tail).trim(), "200 application/dns-message", "POST {name}");
        assert_eq!(Message::from_vec(body).unwrap().metadata.response_code, rcode, "POST {name}");
    }
    // a client without EDNS gets no padding (RFC 8467 pads EDNS replies)
    let (_, q) = query_bytes("blocked.test.", RecordType::A, PLAIN);
    let qfile = e.dir.path().join("plain.bin");
    std::fs::write(&qfile, &q).unwrap();
    let mut a = base(&e);
    a.extend(["-H".to_owned(), "content-type: application/dns-message".into(), "--data-binary".into(), format!("@{}", qfile.display()), url.clone()]);
    let out = curl(a).await;
    let body = &out[..out.iter().rposition(|&b| b == b'\n').unwrap()];
    let m = Message::from_vec(body).unwrap();
    assert!(m.edns.is_none() && body.len() < 468, "plain query: {} bytes, {:?}", body.len(), m.edns);
    // errors: another path, another media type, a body over doh_max_body_bytes (4096)
    let status_of = |extra: Vec<String>, target: String| {
        let mut a = base(&e);
        a.extend(["-o".to_owned(), "/dev/null".into()]);
        a.extend(extra);
        a.push(target);
        a
    };
    let big = e.dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 5000]).unwrap();
    let cases: Vec<(&str, Vec<String>, String, &str)> = vec![
        ("other path", vec![], format!("https://{NAME}:{}/other", e.doh.port()), "404"),
        ("text body", vec!["--data-binary".into(), "x".into()], url.clone(), "415"),
        (
            "too large",
            vec!["-H".into(), "content-type: application/dns-message".into(), "--data-binary".into(), format!("@{}", big.display())],
            url.clone(),
            "413",
        ),
        ("PUT", vec!["-X".into(), "PUT".into()], url.clone(), "405"),
    ];
    for (what, extra, target, want) in cases {
        let out = curl(status_of(extra, target)).await;
        let s = String::from_utf8_lossy(&out);
        assert!(s.trim().starts_with(want), "{what}: got {s}");
    }
    e.server.shutdown().await;
}

// ---- small rustls / quinn clients ------------------------------------------

fn roots(ca: &Path) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject as _;
    let mut r = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        r.add(c.unwrap()).unwrap();
    }
    r
}

fn client_config(ca: &Path, alpn: &[u8], tls13: bool) -> rustls::ClientConfig {
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()));
    let b = if tls13 { b.with_protocol_versions(&[&rustls::version::TLS13]) } else { b.with_safe_default_protocol_versions() };
    let mut c = b.unwrap().with_root_certificates(roots(ca)).with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    c
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection (ALPN `alpn`) from `from` (an address on loopback).
async fn tls_connect(addr: SocketAddr, ca: &Path, alpn: &[u8], from: &str) -> std::io::Result<Tls> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(format!("{from}:0").parse().unwrap())?;
    let tcp = sock.connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, alpn, false)));
    let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// The leaf certificate the server showed.
fn peer_leaf(s: &Tls) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn leaf_on_disk(dir: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_file_iter(dir.join("fullchain.pem")).unwrap().next().unwrap().unwrap().to_vec()
}

/// One query over an open DoT connection.
async fn dot_query(s: &mut Tls, name: &str) -> Message {
    let (id, q) = query_bytes(name, RecordType::A, EDNS);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await.unwrap();
    s.flush().await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut len)).await.unwrap().unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.metadata.id, id);
    m
}

/// One query over DoQ from `from`, with the certificate verified against `ca`.
async fn doq_query(addr: SocketAddr, ca: &Path, from: &str, name: &str) -> Result<Message, String> {
    let (_, q) = query_bytes(name, RecordType::A, EDNS);
    let reply = doq_raw(addr, ca, from, &q).await?;
    Message::from_vec(&reply).map_err(|e| e.to_string())
}

/// The reply to the message `q` over DoQ (sent with ID 0) from `from`.
async fn doq_raw(addr: SocketAddr, ca: &Path, from: &str, q: &[u8]) -> Result<Vec<u8>, String> {
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(client_config(ca, b"doq", true)).unwrap();
    let mut ep = quinn::Endpoint::client(format!("{from}:0").parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qc)));
    let run = async {
        let conn = ep.connect(addr, NAME).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut q = q.to_vec();
        q[0] = 0; // RFC 9250 §4.2.1: message ID 0
        q[1] = 0;
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        send.write_all(&framed).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let data = recv.read_to_end(65537).await.map_err(|e| e.to_string())?;
        Ok(data[2..].to_vec())
    };
    let r = tokio::time::timeout(Duration::from_secs(5), run).await.map_err(|_| "timed out".to_owned())?;
    ep.close(0u32.into(), b"");
    r
}

/// The reply to the message `q` over an open DoT (or TCP) connection.
async fn framed_raw<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, q: &[u8]) -> Vec<u8> {
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    s.write_all(&framed).await.unwrap();
    s.flush().await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut len)).await.unwrap().unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.unwrap();
    buf
}

/// The reply to the message `q` POSTed to the DoH endpoint (curl, HTTP/2).
async fn doh_raw(e: &Enc, q: &[u8]) -> Vec<u8> {
    let qfile = e.dir.path().join(format!("q-{}.bin", rand::random::<u32>()));
    std::fs::write(&qfile, q).unwrap();
    let args = vec![
        "-sS".to_owned(),
        "--cacert".into(),
        e.ca().display().to_string(),
        "--resolve".into(),
        format!("{NAME}:{}:127.0.0.1", e.doh.port()),
        "-H".into(),
        "content-type: application/dns-message".into(),
        "--data-binary".into(),
        format!("@{}", qfile.display()),
        format!("https://{NAME}:{}/dns-query", e.doh.port()),
    ];
    let out = tokio::task::spawn_blocking(move || Command::new("curl").args(&args).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Whether `r` is `udp` but for the ID and a Padding option (RFC 7830)
/// that ends it: the OPT record's RDLENGTH grown by the option's size,
/// `r`'s length a multiple of 468 (RFC 8467).
fn same_but_id_and_padding(r: &[u8], udp: &[u8]) -> bool {
    let n = udp.len();
    let grown = r.len().saturating_sub(n);
    let be = |b: &[u8], i: usize| usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
    if !r.len().is_multiple_of(468) || grown < 4 || r[n..n + 2] != [0, 12] || be(r, n + 2) != grown - 4 || r[n + 4..].iter().any(|&b| b != 0) {
        return false;
    }
    let diffs: Vec<usize> = (2..n).filter(|&i| r[i] != udp[i]).collect();
    let Some(&first) = diffs.first() else { return false };
    // the differing bytes are the RDLENGTH (one or both of its bytes)
    [first.saturating_sub(1), first]
        .into_iter()
        .any(|k| k >= 2 && k + 1 < n && diffs.iter().all(|&d| d == k || d == k + 1) && be(r, k) == be(udp, k) + grown)
}

/// Whether the server closes `s` within `within` (EOF or error on read).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_swapped_on_disk_new_handshakes_see_it_open_connections_keep_working() {
    let Some(e) = Enc::start("127.0.0.0/8", false).await else { return };
    let old_ca = e.dir.path().join("old-ca.pem");
    std::fs::copy(e.ca(), &old_ca).unwrap();
    let mut open = tls_connect(e.dot, &old_ca, b"dot", "127.0.0.1").await.unwrap();
    assert_eq!(peer_leaf(&open), leaf_on_disk(e.dir.path()));
    assert_eq!(dot_query(&mut open, "allowed.test.").await.metadata.response_code, ResponseCode::NoError);
    let doq_before = doq_query(e.doq, &old_ca, "127.0.0.1", "allowed.test.").await.unwrap();
    assert_eq!(doq_before.metadata.response_code, ResponseCode::NoError);

    make_cert(e.dir.path()); // a new CA and certificate, files replaced by rename
    let new_leaf = leaf_on_disk(e.dir.path());
    let new_ca = e.ca();
    let seen = eventually(Duration::from_secs(5), || async {
        match tls_connect(e.dot, &new_ca, b"dot", "127.0.0.1").await {
            Ok(s) => peer_leaf(&s) == new_leaf,
            Err(_) => false,
        }
    })
    .await;
    assert!(seen, "a new DoT handshake did not get the new certificate");
    // the other listeners serve the same store
    let doq = doq_query(e.doq, &new_ca, "127.0.0.1", "allowed.test.").await.unwrap();
    assert_eq!(doq.metadata.response_code, ResponseCode::NoError);
    let mut doh = tls_connect(e.doh, &new_ca, b"http/1.1", "127.0.0.1").await.unwrap();
    assert_eq!(peer_leaf(&doh), new_leaf);
    doh.shutdown().await.ok();
    // ... and the old CA no longer verifies new handshakes
    assert!(tls_connect(e.dot, &old_ca, b"dot", "127.0.0.1").await.is_err());
    // the connection opened before the swap keeps working
    assert_eq!(dot_query(&mut open, "blocked.test.").await.metadata.response_code, ResponseCode::NXDomain);
    let (_, metrics) = http_get(e.server.http, "/metrics").await;
    assert!(metrics.contains("qalqan_tls_certificate_reloads_total{result=\"success\"} 2"), "{metrics}");
    // a broken file is counted and the certificate in use stays
    let broken = e.dir.path().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::rename(&broken, e.dir.path().join("fullchain.pem")).unwrap();
    let http = e.server.http;
    let counted = eventually(Duration::from_secs(5), || async move {
        http_get(http, "/metrics").await.1.lines().any(|l| l.starts_with("qalqan_tls_certificate_reloads_total{result=\"error\"}") && !l.ends_with(" 0"))
    })
    .await;
    assert!(counted, "a broken certificate file was not counted");
    let still = tls_connect(e.dot, &new_ca, b"dot", "127.0.0.1").await.unwrap();
    assert_eq!(peer_leaf(&still), new_leaf, "the certificate in use changed");
    let expiry = metrics.lines().find(|l| l.starts_with("qalqan_tls_certificate_expiry_timestamp_seconds ")).unwrap();
    let expiry: i64 = expiry.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((expiry - now - 30 * 86_400).abs() < 3_600, "expiry {expiry} is not ~30 days from now");
    e.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_cut_by_handshake_and_idle_timeouts() {
    let Some(e) = Enc::start("127.0.0.0/8", true).await else { return };
    // no ClientHello at all: cut by tls_handshake_timeout_ms (1 s)
    let started = Instant::now();
    let mut raw = TcpStream::connect(e.dot).await.unwrap();
    assert!(closed_within(&mut raw, Duration::from_secs(4)).await, "silent TLS client not cut");
    assert!(started.elapsed() >= Duration::from_millis(800), "cut before the handshake timeout");
    // DoT: half a length prefix, then nothing: cut by tls_idle_timeout_ms (1.5 s)
    let mut dot = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.unwrap();
    dot.write_all(&[0]).await.unwrap();
    dot.flush().await.unwrap();
    assert!(closed_within(&mut dot, Duration::from_secs(5)).await, "DoT slowloris not cut");
    // DoT: a whole length prefix, part of the message, trickled
    let mut dot = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.unwrap();
    dot.write_all(&[0, 40, 0, 1]).await.unwrap();
    dot.flush().await.unwrap();
    let trickle = async {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if dot.write_all(&[0]).await.is_err() || dot.flush().await.is_err() {
                return true;
            }
        }
        false
    };
    let cut = trickle.await || closed_within(&mut dot, Duration::from_millis(100)).await;
    assert!(cut, "trickled DoT query not cut");
    // DoH over HTTP/1.1: headers never finished
    let mut doh = tls_connect(e.doh, &e.ca(), b"http/1.1", "127.0.0.1").await.unwrap();
    doh.write_all(b"POST /dns-query HTTP/1.1\r\nHost: dns.qalqan.test\r\n").await.unwrap();
    doh.flush().await.unwrap();
    assert!(closed_within(&mut doh, Duration::from_secs(5)).await, "DoH header slowloris not cut");
    // DoH: headers done, the body never comes
    let mut doh = tls_connect(e.doh, &e.ca(), b"http/1.1", "127.0.0.1").await.unwrap();
    doh.write_all(b"POST /dns-query HTTP/1.1\r\nHost: dns.qalqan.test\r\nContent-Type: application/dns-message\r\nContent-Length: 40\r\n\r\nab")
        .await
        .unwrap();
    doh.flush().await.unwrap();
    assert!(closed_within(&mut doh, Duration::from_secs(5)).await, "DoH body slowloris not cut");
    // an idle connection that asked nothing is closed too; the server still serves
    let mut idle = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await, "idle DoT connection kept");
    let mut fresh = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.unwrap();
    assert_eq!(dot_query(&mut fresh, "allowed.test.").await.metadata.response_code, ResponseCode::NoError);
    e.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_outside_the_acl_refused_at_accept() {
    let Some(e) = Enc::start_with("127.0.0.1/32", false, "max_tls_per_client = 3").await else { return };
    // 127.0.0.2 is loopback too, but outside allow_clients
    for (addr, alpn) in [(e.dot, &b"dot"[..]), (e.doh, &b"h2"[..])] {
        let r = tls_connect(addr, &e.ca(), alpn, "127.0.0.2").await;
        assert!(r.is_err(), "a TLS session from outside the ACL was opened on {addr}");
        // a raw TCP connection is closed before anything is read
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = sock.connect(addr).await.unwrap();
        assert!(closed_within(&mut s, Duration::from_millis(500)).await, "not closed at accept: {addr}");
    }
    assert!(doq_query(e.doq, &e.ca(), "127.0.0.2", "allowed.test.").await.is_err(), "DoQ from outside the ACL answered");
    // from inside: served
    let mut ok = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.unwrap();
    assert_eq!(dot_query(&mut ok, "allowed.test.").await.metadata.response_code, ResponseCode::NoError);
    assert!(doq_query(e.doq, &e.ca(), "127.0.0.1", "allowed.test.").await.is_ok());
    // three connections from 127.0.0.1's /24 at most (one DoT is open): the fourth is closed at accept
    let http = e.server.http;
    let doq_closed = eventually(Duration::from_secs(5), || async move {
        http_get(http, "/metrics").await.1.contains("qalqan_encrypted_connections_open{protocol=\"doq\"} 0")
    })
    .await;
    assert!(doq_closed, "the DoQ connection still counts");
    let _b = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.unwrap();
    let mut c = tls_connect(e.doh, &e.ca(), b"h2", "127.0.0.1").await.unwrap();
    assert!(tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.is_err(), "over max_tls_per_client");
    drop(ok);
    let again = eventually(Duration::from_secs(3), || async { tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.is_ok() }).await;
    assert!(again, "a closed connection did not free its place");
    c.shutdown().await.ok();
    let (_, metrics) = http_get(e.server.http, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("qalqan_encrypted_connections_refused_total{protocol=\"dot\",reason=\"limit\"}") && !l.ends_with(" 0")),
        "limit refusal not counted:\n{metrics}"
    );
    for proto in ["dot", "doh", "doq"] {
        let line = format!("qalqan_encrypted_connections_refused_total{{protocol=\"{proto}\",reason=\"acl\"}}");
        assert!(metrics.lines().any(|l| l.starts_with(&line) && !l.ends_with(" 0")), "{line} not counted:\n{metrics}");
    }
    e.server.shutdown().await;
}

#[test]
fn key_readable_by_others_is_a_config_error_and_check_reports_the_certificate() {
    if !have(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path());
    let d = dir.path().display();
    let cfg = |name: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ndot_listen = [\"127.0.0.1:0\"]\nddr = true\n[upstream]\nservers = [\"127.0.0.1:53\"]\n[tls]\ncert = \"{d}/fullchain.pem\"\nkey = \"{d}/key.pem\"\nname = \"{name}\"\n"
        )
    };
    assert!(qalqan::config::Config::from_toml_str(&cfg(NAME), "t").is_ok());
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path().join("key.pem"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = qalqan::config::Config::from_toml_str(&cfg(NAME), "t").unwrap_err().to_string();
    assert!(err.contains("tls.key") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(dir.path().join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // no [tls]: encrypted listeners are a config error
    let err = qalqan::config::Config::from_toml_str("[server]\ndot_listen = [\"127.0.0.1:853\"]\n", "t").unwrap_err().to_string();
    assert!(err.contains("server.dot_listen") && err.contains("[tls]"), "{err}");

    // `qalqan check`: certificate, key, expiry and the DDR name
    let bin = env!("CARGO_BIN_EXE_qalqan");
    let run = |name: &str| {
        let p = dir.path().join("q.toml");
        std::fs::write(&p, cfg(name)).unwrap();
        let out = Command::new(bin).args(["check", "--config"]).arg(&p).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = run(NAME);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("key matches") && text.contains("days left") && text.contains("DDR announces dns.qalqan.test"), "{text}");
    let (code, text) = run("other.example");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not cover `other.example`"), "{text}");
    // a key from another pair
    let other = tempfile::tempdir().unwrap();
    make_cert(other.path());
    std::fs::copy(other.path().join("key.pem"), dir.path().join("key.pem")).unwrap();
    let (code, text) = run(NAME);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not belong to the certificate"), "{text}");
}

/// The README's way to switch encrypted DNS on in the shipped config
/// (uncomment the lines) gives a config `qalqan check` accepts, with the
/// certificate `contrib/make-test-cert.sh` makes; the shipped config itself
/// needs no certificate. The example list of public DoH endpoints loads.
#[test]
fn shipped_config_with_encrypted_dns_uncommented_checks() {
    if !have(&["openssl"]) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/qalqan.toml")).unwrap();
    let plain = qalqan::config::Config::from_toml_str(&shipped, "shipped").unwrap();
    assert!(plain.tls.is_none() && plain.dot_listen.is_empty() && plain.doh_listen.is_empty() && plain.doq_listen.is_empty());
    let dir = tempfile::tempdir().unwrap();
    make_cert(&dir.path().join("tls"));
    // what README's sed does
    let on: String = shipped
        .lines()
        .map(|l| {
            for key in ["dot_listen", "doh_listen", "doq_listen", "ddr", "canary", "[tls]", "cert = \"config", "key = \"config"] {
                if let Some(rest) = l.strip_prefix("# ") {
                    if rest.starts_with(key) {
                        return rest.replace("config/tls/", &format!("{}/tls/", dir.path().display()));
                    }
                }
            }
            l.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = qalqan::config::Config::from_toml_str(&on, "uncommented").unwrap();
    assert_eq!((cfg.dot_listen.len(), cfg.doh_listen.len(), cfg.doq_listen.len(), cfg.ddr, cfg.canary_nxdomain), (1, 1, 1, true, true));
    let p = dir.path().join("q.toml");
    std::fs::write(&p, &on).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qalqan")).args(["check", "--config"]).arg(&p).current_dir(root).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("DDR announces dns.qalqan.test"), "{text}");

    let list = qalqan::config::Config::from_toml_str(
        "[[lists]]\nname = \"doh-endpoints\"\nsource = \"blocklists/examples/doh-endpoints.txt\"\nformat = \"domains\"\nkind = \"block\"\n",
        "t",
    )
    .unwrap();
    let l = &list.lists[0];
    let loaded = qalqan::lists::load(l, &root.join("blocklists/examples/doh-endpoints.txt")).unwrap();
    assert!(loaded.parsed.entries.len() >= 20 && loaded.parsed.bad_lines == 0);
}

/// SIGHUP reloads the certificate even when no file event is seen: here the
/// certificate's directory is reached through a symlink that is swapped to
/// another directory (the watch follows the old target). Listeners handed
/// in through `Sockets::with_encrypted`.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate() {
    if !have(&["openssl"]) {
        return;
    }
    let upstream = Upstream::start().await;
    upstream.set("allowed.test.", RecordType::A, Canned::Answer(vec![a("allowed.test.", 300, "192.0.2.10")]));
    let dir = tempfile::tempdir().unwrap();
    make_cert(&dir.path().join("a"));
    make_cert(&dir.path().join("b"));
    let current = dir.path().join("current");
    std::os::unix::fs::symlink(dir.path().join("a"), &current).unwrap();
    let c = current.display();
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[tls]\ncert = \"{c}/fullchain.pem\"\nkey = \"{c}/key.pem\"\n[upstream]\nservers = [\"{}\"]\n",
        upstream.addr
    );
    let dot = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dot_addr = dot.local_addr().unwrap();
    let (hup, hup_rx) = tokio::sync::watch::channel(0u64);
    let server = TestServer::start_with(&toml, move |s| s.with_encrypted(vec![dot], vec![], vec![]).with_hangup(hup_rx)).await;
    let ca_a = dir.path().join("a/ca.pem");
    let ca_b = dir.path().join("b/ca.pem");
    let up = eventually(Duration::from_secs(5), || async { tls_connect(dot_addr, &ca_a, b"dot", "127.0.0.1").await.is_ok() }).await;
    assert!(up, "DoT not served");
    let mut open = tls_connect(dot_addr, &ca_a, b"dot", "127.0.0.1").await.unwrap();

    // swap the directory behind the symlink: no event in the watched directory
    let tmp = dir.path().join("current.new");
    std::os::unix::fs::symlink(dir.path().join("b"), &tmp).unwrap();
    std::fs::rename(&tmp, &current).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(tls_connect(dot_addr, &ca_a, b"dot", "127.0.0.1").await.is_ok(), "reloaded without a SIGHUP");

    hup.send_modify(|n| *n += 1);
    let swapped = eventually(Duration::from_secs(5), || async { tls_connect(dot_addr, &ca_b, b"dot", "127.0.0.1").await.is_ok() }).await;
    assert!(swapped, "SIGHUP did not reload the certificate");
    assert_eq!(peer_leaf(&tls_connect(dot_addr, &ca_b, b"dot", "127.0.0.1").await.unwrap()), leaf_on_disk(&dir.path().join("b")));
    assert_eq!(dot_query(&mut open, "allowed.test.").await.metadata.response_code, ResponseCode::NoError, "open connection dropped");
    server.shutdown().await;
}

/// DoT queries are pipelined (RFC 7858 §3.3): a query stuck upstream does
/// not hold up the ones sent after it on the same connection.
#[tokio::test(flavor = "multi_thread")]
async fn dot_answers_pipelined_queries_out_of_order() {
    let Some(e) = Enc::start("127.0.0.0/8", false).await else { return };
    let mut s = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.unwrap();
    let (slow_id, slow) = query_bytes("slow.test.", RecordType::A, EDNS);
    let (fast_id, fast) = query_bytes("blocked.test.", RecordType::A, EDNS);
    let mut out = Vec::new();
    for q in [&slow, &fast] {
        out.extend_from_slice(&(q.len() as u16).to_be_bytes());
        out.extend_from_slice(q);
    }
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len)).await.unwrap().unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).unwrap();
        ids.push((m.metadata.id, m.metadata.response_code));
    }
    assert_eq!(ids, vec![(fast_id, ResponseCode::NXDomain), (slow_id, ResponseCode::ServFail)]);
    e.server.shutdown().await;
}

/// Blocked names and cache hits over DoT, DoH and DoQ are answered by the
/// fast path: with the only in-flight slot (`max_inflight = 1`) held by a
/// query stuck upstream, the hickory path answers SERVFAIL (plain TCP shows
/// it), the fast path still answers, as on UDP. Each reply is the UDP fast
/// path's bytes but for the ID and the padding (the question echoed as
/// sent), also when the client padded its query (RFC 8467), and is counted
/// under the transport's label.
#[tokio::test(flavor = "multi_thread")]
async fn blocked_and_cached_answers_are_the_udp_fast_path_bytes() {
    if !have(&["curl"]) {
        return;
    }
    let Some(e) = Enc::start_with("127.0.0.0/8", false, "max_inflight = 1").await else { return };
    eventually_udp(e.server.addr, "allowed.test.", RecordType::A).await; // cached now
    // hold the slot: slow.test's upstream never answers (1 s timeout), one
    // more every 100 ms over plain TCP (replies left unread)
    let mut holder = TcpStream::connect(e.server.addr).await.unwrap();
    let hold = tokio::spawn(async move {
        loop {
            let (_, q) = query_bytes("slow.test.", RecordType::A, EDNS);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            if holder.write_all(&framed).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut tcp = TcpStream::connect(e.server.addr).await.unwrap();
    let (_, cached_q) = query_bytes("allowed.test.", RecordType::A, EDNS);
    let mut held = false;
    for _ in 0..50 {
        let r = framed_raw(&mut tcp, &cached_q).await;
        if Message::from_vec(&r).unwrap().metadata.response_code == ResponseCode::ServFail {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held, "the hickory path never ran out of in-flight slots");
    let mut dot = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.unwrap();
    for (name, rcode) in [("blocked.test.", ResponseCode::NXDomain), ("allowed.test.", ResponseCode::NoError)] {
        let (_, mut q) = query_bytes(name, RecordType::A, EDNS);
        // mixed case, echoed as sent
        q[13] = q[13].to_ascii_uppercase();
        q[16] = q[16].to_ascii_uppercase();
        // the same query padded to 128 bytes, as RFC 8467 §4.1 has clients do
        let mut padded = q.clone();
        let (l, fill) = (padded.len(), 128 - padded.len() - 4);
        padded[l - 2..].copy_from_slice(&(4 + fill as u16).to_be_bytes());
        padded.extend_from_slice(&[0, 12, 0, fill as u8]);
        padded.resize(128, 0);
        for (what, query) in [("plain", &q), ("padded", &padded)] {
            let before = udp_raw(e.server.addr, &q, Duration::from_secs(3)).await.unwrap();
            let replies = [
                ("dot", framed_raw(&mut dot, query).await),
                ("doh", doh_raw(&e, query).await),
                ("doq", doq_raw(e.doq, &e.ca(), "127.0.0.1", query).await.unwrap()),
            ];
            // a TTL may have dropped by a second meanwhile: either UDP reply will do
            let after = udp_raw(e.server.addr, &q, Duration::from_secs(3)).await.unwrap();
            assert_eq!(Message::from_vec(&before).unwrap().metadata.response_code, rcode, "{name}");
            for (proto, r) in &replies {
                assert_eq!(r[12..12 + name.len() + 5], q[12..12 + name.len() + 5], "{proto} {name} {what}: question echoed as sent");
                assert!(
                    same_but_id_and_padding(r, &before) || same_but_id_and_padding(r, &after),
                    "{proto} {name} {what}: not the UDP reply but for ID and padding\n{r:?}\n{before:?}"
                );
            }
        }
    }
    hold.abort();
    let (_, m) = http_get(e.server.http, "/metrics").await;
    for proto in ["dot", "doh", "doq"] {
        for outcome in ["blocked", "cached"] {
            let n = sample(&m, &format!(r#"qalqan_queries_total{{outcome="{outcome}",protocol="{proto}"}}"#));
            assert!(n >= 2.0, "{proto} {outcome}: {n}\n{m}");
        }
    }
    e.server.shutdown().await;
}

/// `[limits]` over DoT: one token per query whichever path answers it (a
/// miss goes through the fast path's check, then the hickory path, which
/// must not take a second one), and a limited query is REFUSED with EDE 18.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_over_dot_takes_one_token_per_query() {
    let extra = "[limits]\nper_client_qps = 1\nburst = 4\nipv4_prefix = 32\n";
    let Some(e) = Enc::start_with("127.0.0.0/8", false, extra).await else { return };
    // from an address of its own (the setup's queries came from 127.0.0.1)
    let mut dot = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.2").await.unwrap();
    let mut codes = Vec::new();
    // a miss, a hit, a blocked name, another miss; then past the burst
    for name in ["allowed.test.", "allowed.test.", "blocked.test.", "other.test.", "allowed.test.", "blocked.test."] {
        let (_, q) = query_bytes(name, RecordType::A, EDNS);
        let m = Message::from_vec(&framed_raw(&mut dot, &q).await).unwrap();
        if m.metadata.response_code == ResponseCode::Refused {
            assert_eq!(ede(&m).first().map(|e| (e.0, e.1.as_str())), Some((18, "rate limited")), "{name}");
        }
        codes.push(m.metadata.response_code);
    }
    use ResponseCode::*;
    assert_eq!(codes, vec![NoError, NoError, NXDomain, NoError, Refused, Refused], "4 served, then limited");
    let (_, m) = http_get(e.server.http, "/metrics").await;
    assert_eq!(sample(&m, "qalqan_rate_limited_total"), 2.0, "each query counted once\n{m}");
    e.server.shutdown().await;
}

/// With `[[views]]`, an answer cached and passed for one client's view is
/// decided again for a client of another view over DoT too, as over UDP: a
/// name the block list holds, answered to a view without that list, is not
/// served from the cache to a client whose view applies the list.
#[tokio::test]
async fn a_cached_answer_passed_for_one_view_is_decided_again_over_dot() {
    let extra = "[[views]]\nname = \"open\"\nclients = [\"127.0.0.2/32\"]\nlists = []\n";
    let Some(e) = Enc::start_with("127.0.0.0/8", false, extra).await else { return };
    e._upstream.set("blocked.test.", RecordType::A, Canned::Answer(vec![a("blocked.test.", 300, "192.0.2.20")]));
    let mut open = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.2").await.unwrap();
    // a miss (forwarded, cached), then a hit the view's policy lets through
    for _ in 0..2 {
        let m = dot_query(&mut open, "blocked.test.").await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1, "the view without the list gets the answer");
    }
    let mut default = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.1").await.unwrap();
    let m = dot_query(&mut default, "blocked.test.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "a client of no view gets every list: {:?}", m.answers);
    e.server.shutdown().await;
}

/// A shadow list counts every query over DoT, cache hits included, and its
/// log lines name the transport the query came over.
#[tokio::test]
async fn shadow_hits_over_dot_are_counted_and_logged_as_dot() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = write_list(dir.path(), "cand.txt", "allowed.test\n");
    let extra = format!("\n[[lists]]\nname = \"candidate\"\nsource = \"{candidate}\"\nmode = \"shadow\"\n");
    let Some(e) = Enc::start_with("127.0.0.0/8", false, &extra).await else { return };
    let series = r#"qalqan_shadow_hits_total{list="candidate"}"#;
    let before = sample(&e.server.metrics.encode(), series);
    let mut dot = tls_connect(e.dot, &e.ca(), b"dot", "127.0.0.2").await.unwrap();
    // a miss, then cache hits: each one asked of the shadow list
    for _ in 0..3 {
        let m = dot_query(&mut dot, "allowed.test.").await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1, "a shadow list never blocks");
    }
    assert_eq!(sample(&e.server.metrics.encode(), series), before + 3.0, "every query counted, cache hits included");
    let log = e.dir.path().join("blocked.jsonl");
    let dot_lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(r#""shadow":true"#) && l.contains(r#""client":"127.0.0.2""#))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(3), || async { dot_lines().len() == 3 }).await, "{:?}", dot_lines());
    assert!(dot_lines().iter().all(|l| l.contains(r#""protocol":"dot""#)), "{:?}", dot_lines());
    e.server.shutdown().await;
}
