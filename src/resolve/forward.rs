//! The upstream forwarder: one fresh UDP socket per query (random source port
//! and random ID), TCP when the answer is truncated, failover across servers
//! within one overall deadline.
//!
//! Why our own forwarder rather than `hickory_resolver::Resolver`: its
//! `lookup` API returns records without the upstream's rcode, authority
//! section or AD bit, keeps a second cache whose key ignores DO/CD, and needs
//! every stub default overridden (STYLE §4.6). Here the upstream answer passes
//! through as sent, which RFC 2308 negative caching and the CNAME-chain check
//! need. hickory-resolver still reads `/etc/resolv.conf` when no servers are
//! configured.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::{Answer, ResolveError};
use crate::metrics::{Metrics, UpstreamMetrics};

/// Payload size we advertise upstream (DNS flag day 2020).
const UPSTREAM_PAYLOAD: u16 = 1232;
/// Shortest time one server gets before we fail over to the next.
const MIN_ATTEMPT: Duration = Duration::from_millis(250);

/// Forwards queries to a fixed set of upstream servers.
pub struct Forwarder {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    inflight: Semaphore,
    preferred: AtomicUsize,
    /// Per-server metric handles, same order as `servers`.
    metrics: Vec<UpstreamMetrics>,
    /// Resolutions in a row that got no answer from any server.
    failures_in_a_row: AtomicU32,
    /// Milliseconds since `epoch` of the last answer from any server.
    last_ok_ms: AtomicU64,
    epoch: Instant,
}

/// Failed resolutions in a row after which `/readyz` reports the upstreams down.
const UNHEALTHY_AFTER: u32 = 3;

/// One question to forward.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    pub name: &'a Name,
    pub qtype: RecordType,
    pub qclass: DNSClass,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
}

impl Forwarder {
    /// `timeout` bounds the whole resolution (all servers, all retries).
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration, max_inflight: usize, metrics: &Arc<Metrics>) -> Self {
        let handles = servers.iter().map(|s| metrics.upstream(&s.to_string())).collect();
        Self {
            servers,
            timeout,
            inflight: Semaphore::new(max_inflight),
            preferred: AtomicUsize::new(0),
            metrics: handles,
            failures_in_a_row: AtomicU32::new(0),
            last_ok_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// False once several resolutions in a row got no answer from any
    /// upstream and none answered in the last 10 s (`/readyz`).
    pub fn healthy(&self) -> bool {
        if self.failures_in_a_row.load(Ordering::Relaxed) < UNHEALTHY_AFTER {
            return true;
        }
        let last_ok = self.last_ok_ms.load(Ordering::Relaxed);
        if last_ok == 0 {
            return false; // never answered
        }
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(last_ok) < 10_000
    }

    /// Resolves `q` upstream and keeps the health record.
    pub async fn resolve(&self, q: &Question<'_>) -> Result<Answer, ResolveError> {
        let r = self.resolve_inner(q).await;
        match &r {
            Ok(_) => {
                self.failures_in_a_row.store(0, Ordering::Relaxed);
                // +1: 0 means "never answered"
                let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
                self.last_ok_ms.store(now_ms + 1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failures_in_a_row.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// The servers of /etc/resolv.conf (port 53 unless it says otherwise).
    pub fn system_servers() -> Result<Vec<SocketAddr>, String> {
        let (config, _opts) = hickory_resolver::system_conf::read_system_conf().map_err(|e| e.to_string())?;
        let mut out: Vec<SocketAddr> = Vec::new();
        for ns in config.name_servers() {
            let addr = SocketAddr::new(ns.ip, 53);
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        Ok(out)
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Resolves `q` upstream. Never takes longer than the configured timeout.
    ///
    /// Tries the server that last answered first, then the others in order;
    /// each attempt gets an equal share of the timeout (at least 250 ms). A
    /// SERVFAIL or REFUSED from one server moves on to the next; it is
    /// returned only if no server does better. Replies whose ID, source or
    /// question do not match are ignored (anti-spoofing) and the wait goes on.
    async fn resolve_inner(&self, q: &Question<'_>) -> Result<Answer, ResolveError> {
        if self.servers.is_empty() {
            return Err(ResolveError::NoServers);
        }
        let start = Instant::now();
        let deadline = start + self.timeout;
        let _permit = match tokio::time::timeout(self.timeout, self.inflight.acquire()).await {
            Ok(Ok(p)) => p,
            _ => return Err(ResolveError::Busy),
        };
        let n = self.servers.len();
        let share = (self.timeout / u32::try_from(n).unwrap_or(1)).max(MIN_ATTEMPT);
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut fallback: Option<Answer> = None;
        let mut round = 0usize;
        loop {
            for k in 0..n {
                let i = (first + k) % n;
                let now = Instant::now();
                if now >= deadline {
                    return fallback.ok_or(ResolveError::Timeout(self.timeout));
                }
                let Some(server) = self.servers.get(i) else { continue };
                let attempt_deadline = (now + share).min(deadline);
                let m = self.metrics.get(i);
                let result = query_server(*server, q, attempt_deadline).await;
                if let Some(m) = m {
                    m.record(&result.as_ref().map(|a| a.rcode).map_err(|e| matches!(e, AttemptError::Timeout)), now.elapsed());
                }
                match result {
                    Ok(answer) => {
                        use hickory_proto::op::ResponseCode as R;
                        if matches!(answer.rcode, R::ServFail | R::Refused) {
                            tracing::debug!(%server, rcode = %answer.rcode, "upstream failed, trying next");
                            fallback.get_or_insert(answer);
                            continue;
                        }
                        self.preferred.store(i, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    Err(e) => {
                        tracing::debug!(%server, error = %e, "upstream attempt failed");
                    }
                }
            }
            round += 1;
            if fallback.is_some() || round > 8 {
                return fallback.ok_or(ResolveError::Timeout(self.timeout));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("encoding query: {0}")]
    Encode(String),
    #[error("malformed reply: {0}")]
    Malformed(String),
}

fn build_query(q: &Question<'_>, id: u16) -> Result<Vec<u8>, AttemptError> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.metadata.checking_disabled = q.checking_disabled;
    let mut query = Query::query(q.name.clone(), q.qtype);
    query.set_query_class(q.qclass);
    msg.add_query(query);
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    edns.set_dnssec_ok(q.dnssec_ok);
    msg.set_edns(edns);
    msg.to_vec().map_err(|e| AttemptError::Encode(e.to_string()))
}

/// Whether `reply` answers our query `id` for `q`.
fn matches_question(reply: &Message, id: u16, q: &Question<'_>) -> bool {
    if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response {
        return false;
    }
    match reply.queries.as_slice() {
        // `Name` equality is case-insensitive, as RFC 4343 wants
        [rq] => rq.query_type() == q.qtype && rq.query_class() == q.qclass && rq.name() == q.name,
        _ => false,
    }
}

async fn query_server(server: SocketAddr, q: &Question<'_>, deadline: Instant) -> Result<Answer, AttemptError> {
    let id: u16 = rand::random();
    let packet = build_query(q, id)?;
    let bind: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(&packet).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = match tokio::time::timeout_at(deadline.into(), sock.recv(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Err(AttemptError::Timeout),
        };
        let Some(bytes) = buf.get(..n) else { continue };
        let Ok(reply) = Message::from_vec(bytes) else {
            // garbage (or a spoof attempt): keep waiting for the real reply
            tracing::debug!(%server, "undecodable reply ignored");
            continue;
        };
        if !matches_question(&reply, id, q) {
            tracing::debug!(%server, "mismatched reply ignored");
            continue;
        }
        if reply.metadata.truncation {
            return query_tcp(server, q, deadline).await;
        }
        return Ok(into_answer(reply));
    }
}

async fn query_tcp(server: SocketAddr, q: &Question<'_>, deadline: Instant) -> Result<Answer, AttemptError> {
    let fut = async {
        let id: u16 = rand::random();
        let packet = build_query(q, id)?;
        let len = u16::try_from(packet.len()).map_err(|_| AttemptError::Encode("query too long".into()))?;
        let mut stream = TcpStream::connect(server).await?;
        let mut framed = Vec::with_capacity(packet.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&packet);
        stream.write_all(&framed).await?;
        loop {
            let mut lenb = [0u8; 2];
            stream.read_exact(&mut lenb).await?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lenb))];
            stream.read_exact(&mut buf).await?;
            let reply = Message::from_vec(&buf).map_err(|e| AttemptError::Malformed(e.to_string()))?;
            if matches_question(&reply, id, q) {
                return Ok(into_answer(reply));
            }
        }
    };
    match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(AttemptError::Timeout),
    }
}

fn into_answer(mut reply: Message) -> Answer {
    let additionals = std::mem::take(&mut reply.additionals)
        .into_iter()
        .filter(|r| r.record_type() != RecordType::OPT)
        .collect();
    Answer {
        rcode: reply.metadata.response_code,
        answers: std::mem::take(&mut reply.answers),
        authorities: std::mem::take(&mut reply.authorities),
        additionals,
        authentic_data: reply.metadata.authentic_data,
    }
}
