//! The writer thread: connects to the dnstap reader (a unix socket or
//! TCP), does the Frame Streams handshake (READY → ACCEPT → START), then
//! drains the queue in batches, encodes them and writes each batch with one
//! system call. A failed connect, handshake or write closes the connection
//! and retries after a back-off that doubles from `reconnect_min` to
//! `reconnect_max`; events that arrive meanwhile are dropped and counted
//! (there is no reader to give them to). While connected, a reader slower
//! than the queries fills the queue, and the query path drops (and counts)
//! what does not fit: it never waits. When the
//! last handle is dropped the writer sends STOP, waits for FINISH and ends.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus::IntCounter;

use super::encode::{self, Kind, Message, Protocol};
use crate::metrics::Transport;
use crate::policy::{Answer, Hit, Policy};

/// How long the writer sleeps when it found the queue empty (it is never
/// woken by the query path: no futex per event).
const NAP: Duration = Duration::from_millis(5);
/// A batch is written once it holds this many bytes (or the queue is empty).
const BATCH_BYTES: usize = 64 * 1024;

/// Where the reader listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// `[dnstap]` as the writer uses it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: Endpoint,
    /// `identity` field of every message (empty: left out).
    pub identity: String,
    /// `version` field of every message (empty: left out).
    pub version: String,
    /// Send CLIENT_QUERY messages.
    pub log_queries: bool,
    /// Send CLIENT_RESPONSE messages.
    pub log_responses: bool,
    /// Events waiting for the writer; past it they are dropped and counted.
    pub queue: usize,
    /// First and longest wait between connection attempts.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Limit of one handshake step or one batch write; past it the
    /// connection is closed (a stuck reader never stalls the writer for long).
    pub io_timeout: Duration,
}

/// One answered (or dropped) query, as the query path hands it over: bytes
/// copied, nothing formatted.
pub struct Event {
    pub query_time: SystemTime,
    pub response_time: SystemTime,
    pub client: SocketAddr,
    pub transport: Transport,
    /// The query as received (`None` when `log_queries` is off).
    pub query: Option<Box<[u8]>>,
    /// The reply as sent (`None`: none was sent, or `log_responses` is off).
    pub response: Option<Box<[u8]>>,
    /// The policy snapshot and hit that blocked the query.
    pub blocked: Option<(Arc<Policy>, Hit)>,
}

/// The two counters the writer keeps.
pub struct Counters {
    /// `qalqan_dnstap_frames_total`: frames written to a reader.
    pub frames: IntCounter,
    /// `qalqan_dnstap_dropped_total`: events dropped (queue full, or lost
    /// with a connection that failed mid-batch).
    pub dropped: IntCounter,
}

/// The writer's loop (runs on its own thread until every sender is gone).
pub fn run(settings: Settings, rx: Receiver<Event>, counters: Counters) {
    let mut backoff = settings.reconnect_min;
    let mut batch = Vec::with_capacity(BATCH_BYTES * 2);
    loop {
        let mut conn = match connect(&settings) {
            Ok(c) => {
                tracing::info!(reader = %settings.endpoint, "dnstap: connected");
                backoff = settings.reconnect_min;
                c
            }
            Err(e) => {
                tracing::debug!(reader = %settings.endpoint, error = %e, "dnstap: cannot connect; retrying");
                // wait out the back-off; what arrives meanwhile has no
                // reader and is dropped (counted), so the queue holds no
                // stale events and a stopped server ends this thread
                let until = Instant::now() + backoff;
                while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                    match rx.recv_timeout(left) {
                        Ok(_) => counters.dropped.inc(),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                backoff = (backoff * 2).min(settings.reconnect_max);
                continue;
            }
        };
        match serve(&settings, &rx, &counters, &mut conn, &mut batch) {
            Served::Closed => {
                let _ = conn.write_all(&encode::control(encode::CONTROL_STOP, false));
                let _ = read_control(&mut conn);
                return;
            }
            Served::Failed(e) => {
                tracing::warn!(reader = %settings.endpoint, error = %e, "dnstap: write failed; reconnecting");
            }
        }
    }
}

enum Served {
    /// Every sender is gone: the server stopped.
    Closed,
    Failed(std::io::Error),
}

/// Writes batches until the connection fails or the server stops.
fn serve(settings: &Settings, rx: &Receiver<Event>, counters: &Counters, conn: &mut Conn, batch: &mut Vec<u8>) -> Served {
    let identity = settings.identity.as_bytes();
    let version = settings.version.as_bytes();
    loop {
        batch.clear();
        let mut frames = 0u64;
        let mut closed = false;
        while batch.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(e) => frames += encode_event(batch, identity, version, &e),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            if let Err(e) = conn.write_all(batch).and_then(|()| conn.flush()) {
                counters.dropped.inc_by(frames);
                return Served::Failed(e);
            }
            counters.frames.inc_by(frames);
        }
        if closed {
            return Served::Closed;
        }
        if batch.len() < BATCH_BYTES {
            std::thread::sleep(NAP);
        }
    }
}

/// Appends the frames of one event (a CLIENT_QUERY and/or a
/// CLIENT_RESPONSE); returns how many.
pub fn encode_event(out: &mut Vec<u8>, identity: &[u8], version: &[u8], e: &Event) -> u64 {
    let v4;
    let v6;
    let address: &[u8] = match e.client.ip() {
        IpAddr::V4(a) => {
            v4 = a.octets();
            &v4
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => {
                v4 = a.octets();
                &v4
            }
            None => {
                v6 = a.octets();
                &v6
            }
        },
    };
    let protocol = match e.transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
        Transport::Dot => Protocol::Dot,
        Transport::Doh => Protocol::Doh,
        Transport::Doq => Protocol::Doq,
    };
    let policy = e.blocked.as_ref().map(|(p, hit)| policy_of(p, hit, &e.query));
    let mut m = Message {
        kind: Kind::ClientQuery,
        query_address: address,
        query_port: e.client.port(),
        protocol,
        query_time: unix(e.query_time),
        response_time: None,
        query_message: e.query.as_deref(),
        response_message: None,
        policy,
    };
    let mut n = 0;
    if e.query.is_some() {
        encode::frame(out, identity, version, &m);
        n += 1;
    }
    if let Some(r) = &e.response {
        m.kind = Kind::ClientResponse;
        m.query_message = None;
        m.response_time = Some(unix(e.response_time));
        m.response_message = Some(r);
        encode::frame(out, identity, version, &m);
        n += 1;
    }
    n
}

/// The dnstap `Policy` of a blocked query: `type` the list's name, `rule`
/// the rule's text, `action` the answer given, `match` QNAME (RESPONSE_IP
/// for an address rule), `value` the query name.
fn policy_of<'a>(p: &'a Policy, hit: &Hit, query: &'a Option<Box<[u8]>>) -> encode::Policy<'a> {
    let rule = p.rule_text(hit.rule);
    let action = match p.answer(hit) {
        Answer::Nxdomain => Some(encode::Action::Nxdomain),
        Answer::Nodata => Some(encode::Action::Nodata),
        Answer::Drop => Some(encode::Action::Drop),
        Answer::Sinkhole | Answer::Local(_) => Some(encode::Action::LocalData),
        Answer::Refused => None,
    };
    let ip_rule = rule.parse::<IpAddr>().is_ok() || rule.parse::<ipnet::IpNet>().is_ok();
    encode::Policy {
        kind: p.list(hit).map_or("?", |l| l.name.as_str()),
        rule: rule.as_bytes(),
        action,
        matched: Some(if ip_rule { encode::Match::ResponseIp } else { encode::Match::Qname }),
        value: if ip_rule { &[] } else { query.as_deref().and_then(question_name).unwrap_or(&[]) },
    }
}

/// The question name of a query in wire form (RPZ's `value` is wire form
/// too): the bytes after the header up to the root label, when they hold
/// no compression pointer.
fn question_name(q: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    loop {
        let len = usize::from(*q.get(at)?);
        if len == 0 {
            return q.get(12..=at);
        }
        if len & 0xc0 != 0 {
            return None;
        }
        at += 1 + len;
    }
}

fn unix(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// A connection to the reader.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// Connects and does the bidirectional handshake: READY with our content
/// type, the reader's ACCEPT naming it, START.
fn connect(s: &Settings) -> std::io::Result<Conn> {
    let t = Some(s.io_timeout);
    let mut conn = match &s.endpoint {
        Endpoint::Unix(p) => {
            let c = UnixStream::connect(p)?;
            c.set_read_timeout(t)?;
            c.set_write_timeout(t)?;
            Conn::Unix(c)
        }
        Endpoint::Tcp(a) => {
            let c = TcpStream::connect_timeout(a, s.io_timeout)?;
            c.set_read_timeout(t)?;
            c.set_write_timeout(t)?;
            c.set_nodelay(true)?;
            Conn::Tcp(c)
        }
    };
    conn.write_all(&encode::control(encode::CONTROL_READY, true))?;
    let started = Instant::now();
    match read_control(&mut conn)? {
        (encode::CONTROL_ACCEPT, true) => {}
        (kind, _) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the reader answered READY with control frame {kind} (not an ACCEPT of {})", String::from_utf8_lossy(encode::CONTENT_TYPE)),
            ))
        }
    }
    tracing::trace!(took = ?started.elapsed(), "dnstap: accepted");
    conn.write_all(&encode::control(encode::CONTROL_START, true))?;
    Ok(conn)
}

/// Reads one control frame (escape, length, body).
fn read_control(conn: &mut Conn) -> std::io::Result<(u32, bool)> {
    let mut head = [0u8; 8];
    conn.read_exact(&mut head)?;
    let escape = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("dnstap reader sent {what}"));
    if escape != 0 {
        return Err(bad("a data frame where a control frame belongs"));
    }
    if len > encode::MAX_CONTROL {
        return Err(bad("an oversized control frame"));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    encode::parse_control(&body).ok_or_else(|| bad("a malformed control frame"))
}
