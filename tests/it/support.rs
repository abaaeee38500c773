//! Test support: a real in-process upstream (hickory-server with a table of
//! answers) and the real qalqan server, both on 127.0.0.1 port 0, plus raw
//! UDP/TCP query helpers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

pub fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

pub fn a(owner: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(ip.parse().unwrap())))
}

pub fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip.parse().unwrap())))
}

pub fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

pub fn soa(owner: &str, ttl: u32, minimum: u32) -> Record {
    let s = SOA::new(name("ns.test."), name("hostmaster.test."), 1, 3600, 600, 86400, minimum);
    Record::from_rdata(name(owner), ttl, RData::SOA(s))
}

/// What the upstream answers for one (name, type).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // a test table of a few entries
pub enum Canned {
    Answer(Vec<Record>),
    NxDomain(Record),
    /// Never answers.
    Silent,
    /// UDP: header-only reply with TC set; TCP: these records.
    TruncatedUdp(Vec<Record>),
}

/// A table-driven authoritative upstream on 127.0.0.1:0 (UDP and TCP).
pub struct Upstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
    pub table: Arc<Mutex<HashMap<(String, RecordType), Canned>>>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct UpstreamHandler {
    table: Arc<Mutex<HashMap<(String, RecordType), Canned>>>,
    queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl RequestHandler for UpstreamHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let tcp = request.protocol() != hickory_server::net::xfer::Protocol::Udp;
        if tcp {
            self.tcp_queries.fetch_add(1, Ordering::SeqCst);
        }
        let q = request.queries.queries().first().cloned();
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        let key = q.as_ref().map(|q| (q.name().to_string().to_ascii_lowercase(), q.query_type()));
        let canned = key.and_then(|k| self.table.lock().unwrap().get(&k).cloned());
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        let edns_ref = request.edns.as_ref().map(|_| &edns);
        let (answers, auth) = match canned {
            Some(Canned::Answer(rs)) => (rs, vec![]),
            Some(Canned::NxDomain(s)) => {
                meta.response_code = ResponseCode::NXDomain;
                (vec![], vec![s])
            }
            Some(Canned::Silent) => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return ResponseInfo::from(hickory_proto::op::Header { metadata: meta, counts: Default::default() });
            }
            Some(Canned::TruncatedUdp(rs)) => {
                if tcp {
                    (rs, vec![])
                } else {
                    meta.truncation = true;
                    (vec![], vec![])
                }
            }
            None => {
                // everything else: NOERROR / NODATA with a SOA
                (vec![], vec![soa("test.", 60, 30)])
            }
        };
        let builder = MessageResponseBuilder::new(&request.queries, edns_ref);
        let msg = builder.build(meta, answers.iter(), auth.iter(), std::iter::empty(), std::iter::empty());
        response.send_response(msg).await.unwrap_or_else(|_| {
            ResponseInfo::from(hickory_proto::op::Header { metadata: meta, counts: Default::default() })
        })
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        let table = Arc::new(Mutex::new(HashMap::new()));
        let queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let handler = UpstreamHandler { table: table.clone(), queries: queries.clone(), tcp_queries: tcp_queries.clone() };
        let stop = CancellationToken::new();
        let s2 = stop.clone();
        tokio::spawn(async move {
            let mut server = Server::new(handler);
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 65535);
            s2.cancelled().await;
            let _ = server.shutdown_gracefully().await;
        });
        Upstream { addr, queries, tcp_queries, table, stop }
    }

    pub fn set(&self, owner: &str, qtype: RecordType, c: Canned) {
        let mut key = owner.to_ascii_lowercase();
        if !key.ends_with('.') {
            key.push('.');
        }
        self.table.lock().unwrap().insert((key, qtype), c);
    }

    pub fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// UDP and TCP on the same free 127.0.0.1 port (retried: the kernel's free
/// UDP port may be taken for TCP).
pub async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no free UDP+TCP port pair on 127.0.0.1");
}

/// A running qalqan on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The operator HTTP endpoint (/metrics, /readyz …).
    pub http: SocketAddr,
    /// The push API listener (used when the config has [admin]).
    pub admin: SocketAddr,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), qalqan::StartError>>,
    pub lists: Arc<qalqan::lists::publish::Lists>,
    pub metrics: Arc<qalqan::metrics::Metrics>,
}

impl TestServer {
    pub async fn start(config_toml: &str) -> TestServer {
        Self::start_with(config_toml, |s| s).await
    }

    /// [`TestServer::start`], with `more` adding to the sockets handed in
    /// (the encrypted listeners, a SIGHUP channel).
    pub async fn start_with(config_toml: &str, more: impl FnOnce(qalqan::Sockets) -> qalqan::Sockets) -> TestServer {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let toml = config_toml.to_owned();
        let app = tokio::task::spawn_blocking(move || qalqan::App::from_toml_str(&toml)).await.unwrap().unwrap();
        let lists = app.lists.clone();
        let metrics = app.metrics.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(qalqan::serve(app, more(qalqan::Sockets::new(vec![udp], vec![tcp]).with_metrics(http_listener).with_admin(admin_listener)),
            stop.clone(),
        ));
        TestServer { addr, http, admin, stop, task, lists, metrics }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        assert!(r.is_ok(), "server did not stop within 5 s");
    }
}

/// Query options.
#[derive(Clone, Copy)]
pub struct Q {
    pub edns: bool,
    pub dnssec_ok: bool,
    pub payload: u16,
}

pub const EDNS: Q = Q { edns: true, dnssec_ok: false, payload: 1232 };
pub const PLAIN: Q = Q { edns: false, dnssec_ok: false, payload: 512 };

pub fn query_bytes(qname: &str, qtype: RecordType, opts: Q) -> (u16, Vec<u8>) {
    let id: u16 = rand::random();
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    if opts.edns {
        let mut e = Edns::new();
        e.set_max_payload(opts.payload);
        e.set_dnssec_ok(opts.dnssec_ok);
        m.set_edns(e);
    }
    (id, m.to_vec().unwrap())
}

/// Sends raw bytes over UDP and waits up to `wait` for one reply.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

pub async fn udp(server: SocketAddr, qname: &str, qtype: RecordType, opts: Q) -> Option<Message> {
    let (id, bytes) = query_bytes(qname, qtype, opts);
    let raw = udp_raw(server, &bytes, Duration::from_secs(3)).await?;
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.id, id);
    Some(m)
}

pub async fn tcp(server: SocketAddr, qname: &str, qtype: RecordType, opts: Q) -> Message {
    let (id, bytes) = query_bytes(qname, qtype, opts);
    let mut s = TcpStream::connect(server).await.unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut len)).await.unwrap().unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.metadata.id, id);
    m
}

/// The EDE options (code, text) of a reply.
pub fn ede(m: &Message) -> Vec<(u16, String)> {
    let Some(e) = m.edns.as_ref() else { return vec![] };
    e.options()
        .as_ref()
        .iter()
        .filter_map(|(code, opt)| match (u16::from(*code), opt) {
            (15, hickory_proto::rr::rdata::opt::EdnsOption::Unknown(_, data)) if data.len() >= 2 => {
                Some((u16::from_be_bytes([data[0], data[1]]), String::from_utf8_lossy(&data[2..]).into_owned()))
            }
            _ => None,
        })
        .collect()
}

/// Writes `text` to a new file in `dir` and returns its path as a string.
pub fn write_list(dir: &std::path::Path, file: &str, text: &str) -> String {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A config with one block list, one allow list and the given upstream.
pub fn config(upstream: SocketAddr, lists: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
allow_clients = ["127.0.0.0/8"]
[upstream]
servers = ["{upstream}"]
timeout_ms = 1000
[sinkhole]
a = "192.0.2.66"
aaaa = "2001:db8::66"
ttl = 120
{extra}
{lists}
"#
    )
}

/// Polls `f` every 50 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_req(addr, "GET", path, None, &[], b"").await
}

/// The value of one sample line `name{labels}` in Prometheus text, 0 if absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What the test HTTP server answers.
#[derive(Clone)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub etag: Option<String>,
    /// A `Location:` header (for 3xx replies).
    pub location: Option<String>,
}

impl HttpReply {
    pub fn ok(body: &[u8]) -> HttpReply {
        HttpReply { status: 200, content_type: "text/plain", body: body.to_vec(), etag: None, location: None }
    }

    pub fn redirect(location: &str) -> HttpReply {
        HttpReply { status: 302, content_type: "text/plain", body: vec![], etag: None, location: Some(location.to_owned()) }
    }
}

/// A tiny HTTP/1.1 list server on 127.0.0.1:0 (answers 304 to a matching If-None-Match).
pub struct ListServer {
    pub addr: SocketAddr,
    pub reply: Arc<Mutex<HttpReply>>,
    /// Replies for particular paths (the default `reply` for the rest).
    pub routes: Arc<Mutex<HashMap<String, HttpReply>>>,
    pub requests: Arc<AtomicUsize>,
    pub not_modified: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl ListServer {
    pub async fn start(body: &str) -> ListServer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let reply = Arc::new(Mutex::new(HttpReply { status: 200, content_type: "text/plain", body: body.as_bytes().to_vec(), etag: Some("\"v1\"".into()), location: None }));
        let routes: Arc<Mutex<HashMap<String, HttpReply>>> = Arc::new(Mutex::new(HashMap::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let not_modified = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (r, q, nm, s, rt) = (reply.clone(), requests.clone(), not_modified.clone(), stop.clone(), routes.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    a = l.accept() => match a { Ok(x) => x, Err(_) => continue },
                };
                let (r, q, nm, rt) = (r.clone(), q.clone(), nm.clone(), rt.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    q.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let routed = rt.lock().unwrap().get(&path).cloned();
                    let rep = routed.unwrap_or_else(|| r.lock().unwrap().clone());
                    let inm = head.lines().find_map(|l| l.strip_prefix("if-none-match:").map(|v| v.trim().to_owned()));
                    let out = if rep.status == 200 && rep.etag.as_ref().map(|e| e.to_ascii_lowercase()) == inm && inm.is_some() {
                        nm.fetch_add(1, Ordering::SeqCst);
                        "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".as_bytes().to_vec()
                    } else {
                        let mut o = format!(
                            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}{}\r\n",
                            rep.status,
                            rep.content_type,
                            rep.body.len(),
                            rep.etag.as_ref().map(|e| format!("ETag: {e}\r\n")).unwrap_or_default(),
                            rep.location.as_ref().map(|l| format!("Location: {l}\r\n")).unwrap_or_default()
                        )
                        .into_bytes();
                        o.extend_from_slice(&rep.body);
                        o
                    };
                    let _ = sock.write_all(&out).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        ListServer { addr, reply, routes, requests, not_modified, stop }
    }

    pub fn set(&self, status: u16, content_type: &'static str, body: &str, etag: Option<&str>) {
        *self.reply.lock().unwrap() = HttpReply { status, content_type, body: body.as_bytes().to_vec(), etag: etag.map(str::to_owned), location: None };
    }

    /// Answers `path` with `reply` from now on.
    pub fn route(&self, path: &str, reply: HttpReply) {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// HTTP request with a method, optional bearer token, headers and body; returns (status, body).
pub async fn http_req(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: qalqan\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Whether this is a CI run (`CI` set, as `.ci/run` does, and not `false`/`0`):
/// then a test that lacks a tool or data fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `../shared/data/REL` (the real lists beside this checkout), or `None`
/// when that folder is absent: the test then skips, loudly. Under `CI=true`
/// a missing folder or file fails the test instead: CI must never pass by
/// skipping.
pub fn shared_data(rel: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let path = dir.join(rel);
    if path.is_file() {
        return Some(path);
    }
    assert!(!in_ci(), "CI=true: {} not found; the real-data tests must run in CI", path.display());
    eprintln!("SKIPPING: {} not found (a clone outside the workspace has no ../shared/data)", path.display());
    None
}

/// An Ed25519 key made and used by the `openssl` command-line tool: an
/// implementation independent of the ed25519-dalek that verifies.
pub struct OpensslKey {
    dir: tempfile::TempDir,
    pem: std::path::PathBuf,
}

impl OpensslKey {
    /// A new key, or `None` (after a loud SKIPPING line) when `openssl` is
    /// not installed; under `CI=true` a missing `openssl` fails the test.
    pub fn generate() -> Option<OpensslKey> {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("k.pem");
        match std::process::Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&pem).output() {
            Ok(o) => assert!(o.status.success(), "openssl genpkey: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => {
                assert!(!in_ci(), "CI=true: openssl is needed for the Ed25519 interop tests ({e}); tests/run.sh installs it");
                eprintln!("SKIPPING: openssl not found ({e}); the Ed25519 interop test did not run");
                return None;
            }
        }
        Some(OpensslKey { dir, pem })
    }

    /// The private key's PEM file (PKCS#8, as `openssl genpkey` wrote it).
    pub fn pem(&self) -> &std::path::Path {
        &self.pem
    }

    /// The raw 32-byte public key, base64 (the `regulator_keys` form).
    pub fn public_b64(&self) -> String {
        use base64::Engine as _;
        let o = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&self.pem)
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl pkey: {}", String::from_utf8_lossy(&o.stderr));
        base64::engine::general_purpose::STANDARD.encode(&o.stdout[o.stdout.len() - 32..])
    }

    /// The 64-byte Ed25519 signature of `msg` (`openssl pkeyutl -sign -rawin`).
    pub fn sign_raw(&self, msg: &[u8]) -> Vec<u8> {
        let m = self.dir.path().join("msg");
        std::fs::write(&m, msg).unwrap();
        let o = std::process::Command::new("openssl")
            .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
            .arg(&self.pem)
            .arg("-in")
            .arg(&m)
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl pkeyutl: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout.len(), 64);
        o.stdout
    }

    /// [`OpensslKey::sign_raw`], base64.
    pub fn sign(&self, msg: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.sign_raw(msg))
    }
}

/// Seconds since the UNIX epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The v2 signed message of a push (README "Push API").
pub fn v2_message(method: &str, name: &str, version: &str, base: Option<u64>, ts: u64, body: &[u8]) -> Vec<u8> {
    let base = base.map_or_else(|| "-".to_owned(), |b| b.to_string());
    let mut m = format!("qalqan-list-v2\n{method}\n{name}\n{version}\n{base}\n{ts}\n").into_bytes();
    m.extend_from_slice(body);
    m
}
