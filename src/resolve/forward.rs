//! The upstream forwarder: UDP queries from a pool of sockets (each on its
//! own random port, replaced after `udp_socket_queries` queries) with random
//! IDs, or one fresh socket per query when the pool size is 0; TCP when the
//! answer is truncated; failover across servers within one overall deadline.
//!
//! The pool: a socket per slot, one reader task per socket that hands each
//! reply to the query waiting for that ID (if it came from the server that
//! query was sent to); the waiting query then checks the question. Opening a
//! socket per query costs about 7 system calls (socket, bind, connect, epoll
//! add/del, close) and a fresh 64 KiB buffer; the pool costs one `send_to`
//! and one `recv_from` per query. Spoofing resistance: 16 bits of ID, the
//! port of a random one of `udp_sockets` sockets, sockets moving to new random
//! ports as they are used, and the exact question must match.
//!
//! Why our own forwarder rather than `hickory_resolver::Resolver`: its
//! `lookup` API returns records without the upstream's rcode, authority
//! section or AD bit, keeps a second cache whose key ignores DO/CD, and needs
//! every stub default overridden (STYLE §4.6). Here the upstream answer passes
//! through as sent, which RFC 2308 negative caching and the CNAME-chain check
//! need. hickory-resolver still reads `/etc/resolv.conf` when no servers are
//! configured.

use std::net::SocketAddr;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify, Semaphore};

use super::{wire, Reply, ResolveError};
use crate::metrics::{Metrics, UpstreamMetrics};
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
    /// Pooled UDP sockets per address family; `None` = a socket per query.
    pool4: Option<Pool>,
    pool6: Option<Pool>,
}

/// Upstream UDP socket pool settings (`[upstream] udp_sockets`, `udp_socket_queries`).
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Sockets per address family; 0 = a fresh socket per query.
    pub sockets: usize,
    /// Queries per socket before it is replaced by one on a new random port.
    pub queries_per_socket: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { sockets: 64, queries_per_socket: 2_000 }
    }
}

/// Failed resolutions in a row after which `/readyz` reports the upstreams down.
const UNHEALTHY_AFTER: u32 = 3;

/// One question to forward.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    /// The question as the client sent it (its 0x20 case kept): the name as
    /// uncompressed labels, then type and class.
    pub wire: &'a [u8],
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
}

impl Forwarder {
    /// `timeout` bounds the whole resolution (all servers, all retries).
    pub fn new(
        servers: Vec<SocketAddr>,
        timeout: Duration,
        max_inflight: usize,
        pool: PoolConfig,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let handles = servers.iter().map(|s| metrics.upstream(&s.to_string())).collect();
        let make_pool = |v6: bool| {
            (pool.sockets > 0 && servers.iter().any(|s| s.is_ipv6() == v6)).then(|| Pool::new(v6, pool, timeout))
        };
        Self {
            pool4: make_pool(false),
            pool6: make_pool(true),
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
    pub async fn resolve(&self, q: &Question<'_>) -> Result<Reply, ResolveError> {
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
    async fn resolve_inner(&self, q: &Question<'_>) -> Result<Reply, ResolveError> {
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
        let mut fallback: Option<Reply> = None;
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
                let pool = if server.is_ipv6() { self.pool6.as_ref() } else { self.pool4.as_ref() };
                let result = match pool {
                    Some(p) => query_pooled(p, *server, q, attempt_deadline).await,
                    None => query_server(*server, q, attempt_deadline).await,
                };
                if let Some(m) = m {
                    m.record(&result.as_ref().map(Reply::rcode).map_err(|e| matches!(e, AttemptError::Timeout)), now.elapsed());
                }
                match result {
                    Ok(answer) => {
                        use hickory_proto::op::ResponseCode as R;
                        if matches!(answer.rcode(), R::ServFail | R::Refused) {
                            tracing::debug!(%server, rcode = %answer.rcode(), "upstream failed, trying next");
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
    #[error("malformed reply")]
    Malformed,
}

/// `bytes` in cache form, if they are a well-formed reply to our query
/// `id` for `q`; garbage and mismatched replies (spoof attempts) are
/// `None`: the caller keeps waiting for the real one.
fn matching_reply(bytes: Vec<u8>, id: u16, q: &Question<'_>, server: SocketAddr) -> Option<Reply> {
    if !wire::answers(&bytes, id, q.wire) {
        tracing::debug!(%server, "mismatched reply ignored");
        return None;
    }
    let r = Reply::accept(bytes);
    if r.is_none() {
        tracing::debug!(%server, "undecodable reply ignored");
    }
    r
}

async fn query_server(server: SocketAddr, q: &Question<'_>, deadline: Instant) -> Result<Reply, AttemptError> {
    let id: u16 = rand::random();
    let packet = wire::query(q.wire, id, q.checking_disabled, q.dnssec_ok);
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
        let Some(reply) = buf.get(..n).and_then(|b| matching_reply(b.to_vec(), id, q, server)) else { continue };
        if reply.scan.truncated {
            return query_tcp(server, q, deadline).await;
        }
        return Ok(reply);
    }
}

/// Query ID → (server asked, where to deliver its replies).
type Pending = HashMap<u16, (SocketAddr, mpsc::Sender<Vec<u8>>), foldhash::fast::RandomState>;

/// One pooled socket: its reader task delivers replies by ID.
struct PoolSock {
    sock: UdpSocket,
    /// Queries waiting for a reply: ID → (server asked, where to deliver).
    /// A few replies per ID are queued: a spoofed reply with the right ID
    /// must not crowd out the real one that follows it.
    pending: Mutex<Pending>,
    uses: AtomicU32,
    /// Signalled when the slot replaced this socket: the reader lingers one
    /// timeout (for queries already sent) and ends, closing the socket.
    retired: Notify,
}

/// Replies queued per waiting query (the rest are dropped).
const REPLIES_PER_QUERY: usize = 4;

/// Sockets of one address family.
struct Pool {
    v6: bool,
    slots: Vec<arc_swap::ArcSwapOption<PoolSock>>,
    queries_per_socket: u32,
    linger: Duration,
}

impl Pool {
    fn new(v6: bool, cfg: PoolConfig, linger: Duration) -> Self {
        Self {
            v6,
            slots: (0..cfg.sockets).map(|_| arc_swap::ArcSwapOption::empty()).collect(),
            queries_per_socket: cfg.queries_per_socket,
            linger,
        }
    }

    /// A socket of a random slot, opened (or replaced, once used up) on
    /// demand. Must run inside the tokio runtime (spawns the reader).
    fn lease(&self) -> std::io::Result<Arc<PoolSock>> {
        let n = self.slots.len().max(1);
        let slot = self.slots.get(rand::random_range(0..n)).ok_or_else(|| std::io::Error::other("empty pool"))?;
        if let Some(s) = slot.load_full() {
            if s.uses.fetch_add(1, Ordering::Relaxed) < self.queries_per_socket {
                return Ok(s);
            }
        }
        let bind: SocketAddr =
            if self.v6 { SocketAddr::from(([0u16; 8], 0)) } else { SocketAddr::from(([0, 0, 0, 0], 0)) };
        let std_sock = std::net::UdpSocket::bind(bind)?;
        std_sock.set_nonblocking(true)?;
        let fresh = Arc::new(PoolSock {
            sock: UdpSocket::from_std(std_sock)?,
            pending: Mutex::new(HashMap::with_hasher(foldhash::fast::RandomState::default())),
            uses: AtomicU32::new(1),
            retired: Notify::new(),
        });
        tokio::spawn(read_replies(Arc::clone(&fresh), self.linger));
        if let Some(old) = slot.swap(Some(Arc::clone(&fresh))) {
            old.retired.notify_one();
        }
        Ok(fresh)
    }
}

/// Reads replies on a pooled socket and hands each to the query waiting for
/// its ID, if it came from the server that query asked. Ends one `linger`
/// after the socket is retired.
async fn read_replies(ps: Arc<PoolSock>, linger: Duration) {
    let mut buf = vec![0u8; 65535];
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        let r = tokio::select! {
            r = ps.sock.recv_from(&mut buf) => r,
            _ = ps.retired.notified(), if until.is_none() => {
                until = Some(tokio::time::Instant::now() + linger);
                continue;
            }
            _ = async { if let Some(u) = until { tokio::time::sleep_until(u).await } }, if until.is_some() => return,
        };
        let Ok((n, from)) = r else { continue };
        let (Some(bytes), Some(id)) = (buf.get(..n), u16_at(&buf, 0)) else { continue };
        let delivered = match ps.pending.lock() {
            Ok(p) => match p.get(&id) {
                Some((server, tx)) if *server == from => tx.try_send(bytes.to_vec()).is_ok(),
                _ => false,
            },
            Err(_) => false,
        };
        if !delivered {
            tracing::debug!(%from, id, "unexpected upstream reply ignored");
        }
    }
}

fn u16_at(p: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]))
}

/// A query's place in a pooled socket's pending table; removed on drop (when
/// the query times out or its future is dropped).
struct Registration<'a> {
    ps: &'a PoolSock,
    id: u16,
}

impl Registration<'_> {
    /// Registers a fresh random ID for a reply from `server`.
    fn new(ps: &PoolSock, server: SocketAddr) -> Result<(Registration<'_>, mpsc::Receiver<Vec<u8>>), AttemptError> {
        let mut p = ps.pending.lock().map_err(|_| AttemptError::Io(std::io::Error::other("pool lock poisoned")))?;
        for _ in 0..64 {
            let id: u16 = rand::random();
            if let std::collections::hash_map::Entry::Vacant(v) = p.entry(id) {
                let (tx, rx) = mpsc::channel(REPLIES_PER_QUERY);
                v.insert((server, tx));
                return Ok((Registration { ps, id }, rx));
            }
        }
        Err(AttemptError::Io(std::io::Error::other("no free query ID on the socket")))
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.ps.pending.lock() {
            p.remove(&self.id);
        }
    }
}

async fn query_pooled(pool: &Pool, server: SocketAddr, q: &Question<'_>, deadline: Instant) -> Result<Reply, AttemptError> {
    let ps = pool.lease()?;
    let (reg, mut rx) = Registration::new(&ps, server)?;
    let packet = wire::query(q.wire, reg.id, q.checking_disabled, q.dnssec_ok);
    ps.sock.send_to(&packet, server).await?;
    loop {
        let bytes = match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(b)) => b,
            Ok(None) | Err(_) => return Err(AttemptError::Timeout),
        };
        let Some(reply) = matching_reply(bytes, reg.id, q, server) else { continue };
        if reply.scan.truncated {
            return query_tcp(server, q, deadline).await;
        }
        return Ok(reply);
    }
}

async fn query_tcp(server: SocketAddr, q: &Question<'_>, deadline: Instant) -> Result<Reply, AttemptError> {
    let fut = async {
        let id: u16 = rand::random();
        let packet = wire::query(q.wire, id, q.checking_disabled, q.dnssec_ok);
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
            if wire::answers(&buf, id, q.wire) {
                return Reply::accept(buf).ok_or(AttemptError::Malformed);
            }
        }
    };
    match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(AttemptError::Timeout),
    }
}
