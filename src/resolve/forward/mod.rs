//! The upstream forwarder: UDP queries from a pool of sockets per upstream
//! server (each connected to that server from its own random port, replaced
//! after `udp_socket_queries` queries or `udp_socket_lifetime_ms`, whichever
//! comes first) with random IDs, or one fresh socket per query when the pool
//! size is 0; TCP when the answer is truncated; failover across servers
//! within one overall deadline.
//!
//! The pool: a socket per slot, one reader task per socket that hands each
//! reply to the query waiting for that ID (the kernel already dropped any
//! datagram not from the server the socket is connected to); the waiting
//! query then checks the question. Opening a
//! socket per query costs about 7 system calls (socket, bind, connect, epoll
//! add/del, close) and a fresh 64 KiB buffer; the pool costs one `send_to`
//! and one `recv_from` per query, and less in a send batch
//! ([`crate::sys::outbox::batch`]: the
//! UDP fast path's misses of one `recvmmsg`): one `sendmmsg` for all of
//! them on one socket, their replies read with `recvmmsg`. Spoofing
//! resistance per attempt: 16 bits of ID, the socket's random source port
//! (~14.8 bits on Linux's default ephemeral range of 28,232 ports; sockets
//! live seconds, not hours, so a port learnt is soon useless), the source
//! address and port of the server (the socket is connected), and the exact
//! question, letters' case included (0x20: one bit per letter of the name).
//!
//! Why our own forwarder rather than `hickory_resolver::Resolver`: its
//! `lookup` API returns records without the upstream's rcode, authority
//! section or AD bit, keeps a second cache whose key ignores DO/CD, and needs
//! every stub default overridden (STYLE §4.6). Here the upstream answer passes
//! through as sent, which RFC 2308 negative caching and the CNAME-chain check
//! need. hickory-resolver still reads `/etc/resolv.conf` when no servers are
//! configured.
//!
//! Files, each importing only the ones after it: this one (the forwarder:
//! servers, failover, merging identical misses, 0x20, health), [`callback`]
//! (resolutions without a task of their own), [`pool`] (the sockets
//! connected to each server: leasing, sending), [`reader`] (each pooled
//! socket's reader task), [`sock`] (one pooled socket and who waits on it,
//! by query ID), [`tcp`] (TCP and socket-per-query attempts).

mod callback;
mod pool;
mod reader;
mod sock;
mod tcp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{Reply, ResolveError};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::wire::query as upstream;
use pool::{query_pooled, Pool};
use tcp::query_server;

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
    /// Pooled UDP sockets per server, same order as `servers`; empty = a
    /// socket per query.
    pools: Vec<Pool>,
    /// This forwarder, for the tasks it spawns (reader, sweeper, TCP retry).
    me: Weak<Forwarder>,
    /// Whether the sweeper of timed-out callback queries runs.
    sweeper: AtomicBool,
    /// Identical resolutions in flight: the first one asks upstream, the
    /// others wait here for its result (see [`Forwarder::join`]).
    merging: std::sync::Mutex<std::collections::HashMap<Box<[u8]>, Vec<Done>>>,
    /// Most waiters one resolution in flight takes; past it, SERVFAIL.
    max_waiters: usize,
    /// Whether questions go upstream with their name's letters in random
    /// case (0x20, draft-vixie-dnsext-dns0x20): on until an upstream shows it
    /// does not preserve case ([`CASE_STRIKES`]).
    case_random: AtomicBool,
    case_strikes: AtomicU32,
}

/// Upstream UDP socket settings (`[upstream] udp_sockets`, `udp_socket_queries`,
/// `max_waiters`, `case_randomization`).
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Sockets per upstream server; 0 = a fresh socket per query.
    pub sockets: usize,
    /// Queries per socket before it is replaced by one on a new random port.
    pub queries_per_socket: u32,
    /// Age at which a socket is replaced by one on a new random port (at
    /// its next use), however few queries it sent: a quiet node's ports
    /// change as often as a busy one's.
    pub socket_lifetime: Duration,
    /// Clients one upstream query in flight answers at most (`[upstream] max_waiters`).
    pub max_waiters: usize,
    /// Randomise the case of the question sent upstream (0x20).
    pub case_randomization: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            sockets: 64,
            queries_per_socket: 2_000,
            socket_lifetime: Duration::from_secs(5),
            max_waiters: 1_000,
            case_randomization: true,
        }
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

/// Case-insensitive match of a reply's question, or exact (0x20: the case
/// we randomised must come back as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaseCheck {
    Loose,
    Exact,
}

/// How a reply's question compared with ours (see [`matching_reply`]).
enum Matched {
    Yes(Reply),
    /// ID, source and question right but for the case of the name: a spoof
    /// that guessed the ID (the real reply follows), or an upstream that does
    /// not preserve case (nothing else follows). Ignored either way; see
    /// [`Forwarder::case_strike`].
    WrongCase,
    No,
}

impl Matched {
    /// The reply, if it matched; notes a wrong-case one in `wrong_case`.
    fn take(self, wrong_case: &mut bool) -> Option<Reply> {
        match self {
            Matched::Yes(r) => Some(r),
            Matched::WrongCase => {
                *wrong_case = true;
                None
            }
            Matched::No => None,
        }
    }
}

/// Attempts that got a case-mismatched reply (right ID, source and question
/// otherwise) and no exact one before their deadline, after which the
/// forwarder stops randomising case: an upstream that does not preserve it.
/// A spoofer would have to guess this many IDs and also keep the real
/// replies from arriving.
const CASE_STRIKES: u32 = 3;

impl Forwarder {
    /// `timeout` bounds the whole resolution (all servers, all retries).
    pub fn new(
        servers: Vec<SocketAddr>,
        timeout: Duration,
        max_inflight: usize,
        pool: PoolConfig,
        metrics: &Arc<Metrics>,
    ) -> Arc<Self> {
        let handles = servers.iter().map(|s| metrics.upstream(&s.to_string())).collect();
        let pools =
            if pool.sockets > 0 { servers.iter().map(|&s| Pool::new(s, pool, timeout)).collect() } else { Vec::new() };
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            sweeper: AtomicBool::new(false),
            pools,
            servers,
            timeout,
            inflight: Semaphore::new(max_inflight),
            preferred: AtomicUsize::new(0),
            metrics: handles,
            failures_in_a_row: AtomicU32::new(0),
            last_ok_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            merging: std::sync::Mutex::new(std::collections::HashMap::new()),
            max_waiters: pool.max_waiters,
            case_random: AtomicBool::new(pool.case_randomization),
            case_strikes: AtomicU32::new(0),
        })
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

    /// Resolves `q` upstream and keeps the health record. An identical
    /// resolution already in flight (same name ignoring case, type, class,
    /// DO and CD) is joined instead of asked again (see [`Forwarder::join`]).
    pub async fn resolve(&self, q: &Question<'_>) -> Result<Reply, ResolveError> {
        let key = merge_key(q.wire, q.dnssec_ok, q.checking_disabled);
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.join(&key, Box::new(move |r| drop(tx.send(r)))).is_none() {
            return rx.await.unwrap_or(Err(ResolveError::Busy));
        }
        // released on drop too: a leader whose future is dropped (its TCP
        // connection reached its lifetime, shutdown) must not leave its
        // waiters, and every later identical miss, waiting forever
        let lead = Lead { fwd: self, key: Some(key) };
        let r = self.resolve_unmerged(q).await;
        lead.finish(&r);
        r
    }

    /// [`Forwarder::resolve`] without joining: always asks upstream.
    async fn resolve_unmerged(&self, q: &Question<'_>) -> Result<Reply, ResolveError> {
        let sent = self.sent_question(q.wire);
        let r = match &sent {
            Some(sent) => self.resolve_inner(&Question { wire: sent, ..q.clone() }, CaseCheck::Exact, q.wire).await,
            None => self.resolve_inner(q, CaseCheck::Loose, q.wire).await,
        };
        self.note_health(r.is_ok());
        r.map(|reply| restore_question(reply, q.wire))
    }

    /// The question to send for `question`: its name's letters in random
    /// case while case randomisation is on (`None`: send it as it is).
    /// Cost: one copy and one random bit per letter.
    fn sent_question(&self, question: &[u8]) -> Option<Box<[u8]>> {
        if !self.case_random.load(Ordering::Relaxed) {
            return None;
        }
        let name_end = question.len().saturating_sub(4);
        let mut out: Box<[u8]> = question.into();
        let mut bits = 0u64;
        for (i, b) in out.iter_mut().enumerate().take(name_end) {
            if i % 64 == 0 {
                bits = rand::random();
            }
            // label length bytes are below 64, never letters
            if b.is_ascii_alphabetic() {
                *b = if bits & 1 == 1 { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() };
            }
            bits >>= 1;
        }
        Some(out)
    }

    /// An attempt to `server` ran out with a reply that matched but for the
    /// case of its question and no exact one: what an upstream that does not
    /// preserve case does (a spoofer's wrong-case reply is followed by the
    /// real one). The resolution asks again with the name as asked; after
    /// [`CASE_STRIKES`] such attempts no question is randomised any more.
    fn attempt_ran_out(&self, server: SocketAddr, wrong_case: bool) -> AttemptError {
        if wrong_case {
            self.case_strike(server);
            return AttemptError::WrongCase;
        }
        AttemptError::Timeout
    }

    fn case_strike(&self, server: SocketAddr) {
        let n = self.case_strikes.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        tracing::debug!(%server, strikes = n, "only a reply with the question in another case: asking again without 0x20");
        if n >= CASE_STRIKES && self.case_random.swap(false, Ordering::Relaxed) {
            tracing::warn!(%server, "an upstream does not preserve the case of questions: 0x20 case randomisation turned off");
        }
    }

    /// Joins an identical resolution in flight, or leads a new one.
    ///
    /// `None`: `done` waits for the resolution in flight under `key` (or, past
    /// `max_waiters` waiters, has had its SERVFAIL already: never a second
    /// upstream query). `Some(done)`: no such resolution; the caller leads
    /// one and must call [`Forwarder::release`] with its result.
    ///
    /// Merging closes the birthday attack on the forwarder (N identical client
    /// queries made N upstream queries, each a chance for a spoofed reply to
    /// match) and saves the upstream work of a burst. Cost: one lock and one
    /// hash of the question per miss.
    fn join(&self, key: &[u8], done: Done) -> Option<Done> {
        let Ok(mut m) = self.merging.lock() else { return Some(done) };
        match m.get_mut(key) {
            Some(waiters) if waiters.len() < self.max_waiters => {
                waiters.push(done);
                None
            }
            Some(_) => {
                drop(m);
                tracing::debug!("waiters per upstream query at the limit");
                done(Err(ResolveError::Busy));
                None
            }
            None => {
                m.insert(key.into(), Vec::new());
                Some(done)
            }
        }
    }

    /// Ends the resolution led under `key`: every waiter gets `r`.
    fn release(&self, key: &[u8], r: &Result<Reply, ResolveError>) {
        let waiters = self.merging.lock().ok().and_then(|mut m| m.remove(key)).unwrap_or_default();
        for w in waiters {
            w(r.clone());
        }
    }

    fn note_health(&self, ok: bool) {
        if ok {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            // +1: 0 means "never answered"
            let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            self.last_ok_ms.store(now_ms + 1, Ordering::Relaxed);
        } else {
            self.failures_in_a_row.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The servers of /etc/resolv.conf (port 53 unless it says otherwise).
    pub fn system_servers() -> Result<Vec<SocketAddr>, hickory_resolver::net::NetError> {
        let (config, _opts) = hickory_resolver::system_conf::read_system_conf()?;
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
    /// Servers are tried in the order [`Attempts`] gives. A SERVFAIL or
    /// REFUSED from one server moves on to the next; it is returned only if
    /// no server does better. Replies whose ID, source or question do not
    /// match are ignored (anti-spoofing) and the wait goes on.
    ///
    /// `case`: how replies' questions must match `q`'s; after a reply that
    /// matched but for the case, the next attempts send `original` instead
    /// and match it loosely (an upstream that does not preserve case).
    async fn resolve_inner(&self, q: &Question<'_>, case: CaseCheck, original: &[u8]) -> Result<Reply, ResolveError> {
        let mut q = q.clone();
        let mut case = case;
        if self.servers.is_empty() {
            return Err(ResolveError::NoServers);
        }
        let start = Instant::now();
        let _permit = match tokio::time::timeout(self.timeout, self.inflight.acquire()).await {
            Ok(Ok(p)) => p,
            _ => return Err(ResolveError::Busy),
        };
        let mut attempts = Attempts::new(self, start);
        let mut fallback: Option<Reply> = None;
        loop {
            let now = Instant::now();
            let Some((i, until)) = attempts.next(now, fallback.is_some()) else {
                return fallback.ok_or(ResolveError::Timeout(self.timeout));
            };
            let Some(&server) = self.servers.get(i) else { continue };
            let result = match self.pools.get(i) {
                Some(p) => query_pooled(p, self, server, &q, case, until).await,
                None => query_server(self, server, &q, case, until).await,
            };
            if matches!(result, Err(AttemptError::WrongCase)) {
                q.wire = original;
                case = CaseCheck::Loose;
            }
            match self.judge(i, result, now) {
                Judged::Answer(r) => return Ok(r),
                Judged::Fallback(r) => {
                    fallback.get_or_insert(r);
                }
                Judged::Failed => {}
            }
        }
    }

    /// Records one attempt's result against server `i` (metrics, preferred
    /// server) and says what it means for the resolution.
    fn judge(&self, i: usize, result: Result<Reply, AttemptError>, started: Instant) -> Judged {
        if let Some(m) = self.metrics.get(i) {
            m.record(&result.as_ref().map(Reply::rcode).map_err(|e| matches!(e, AttemptError::Timeout)), started.elapsed());
        }
        let server = self.servers.get(i).copied();
        match result {
            Ok(answer) => {
                use hickory_proto::op::ResponseCode as R;
                if matches!(answer.rcode(), R::ServFail | R::Refused) {
                    tracing::debug!(?server, rcode = %answer.rcode(), "upstream failed, trying next");
                    return Judged::Fallback(answer);
                }
                self.preferred.store(i, Ordering::Relaxed);
                Judged::Answer(answer)
            }
            Err(e) => {
                tracing::debug!(?server, error = %e, "upstream attempt failed");
                Judged::Failed
            }
        }
    }

}



/// A resolution led by an awaiting [`Forwarder::resolve`]: its waiters are
/// released with the result, or with SERVFAIL (`Busy`) if the leader's
/// future is dropped first.
struct Lead<'f> {
    fwd: &'f Forwarder,
    key: Option<Box<[u8]>>,
}

impl Lead<'_> {
    fn finish(mut self, r: &Result<Reply, ResolveError>) {
        if let Some(key) = self.key.take() {
            self.fwd.release(&key, r);
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.fwd.release(&key, &Err(ResolveError::Busy));
        }
    }
}

/// What makes two resolutions identical: the question with the name's
/// ASCII letters lowercased (type and class bytes as they are), DO and CD;
/// the same as the cache key. Cost: one copy of the question.
fn merge_key(question: &[u8], dnssec_ok: bool, checking_disabled: bool) -> Box<[u8]> {
    let name_end = question.len().saturating_sub(4);
    let mut key = Vec::with_capacity(question.len() + 1);
    key.extend(question.iter().enumerate().map(|(i, b)| if i < name_end { b.to_ascii_lowercase() } else { *b }));
    key.push(u8::from(dnssec_ok) | u8::from(checking_disabled) << 1);
    key.into_boxed_slice()
}

/// The result callback of [`Forwarder::resolve_then`].
pub type Done = Box<dyn FnOnce(Result<Reply, ResolveError>) + Send>;

/// What one attempt's result means for the resolution.
enum Judged {
    Answer(Reply),
    /// SERVFAIL or REFUSED: kept in case no server does better.
    Fallback(Reply),
    Failed,
}

/// The plan of one resolution's attempts, for both the awaiting and the
/// callback path: the server that last answered first, then the others in
/// order, round after round; each attempt gets an equal share of the
/// timeout (at least 250 ms). It ends at the deadline, after a full round
/// once a server answered SERVFAIL/REFUSED (the fallback), or after 9 rounds.
struct Attempts {
    first: usize,
    n: usize,
    made: usize,
    deadline: Instant,
    share: Duration,
}

impl Attempts {
    fn new(f: &Forwarder, now: Instant) -> Self {
        let n = f.servers.len();
        Self {
            first: f.preferred.load(Ordering::Relaxed) % n.max(1),
            n,
            made: 0,
            deadline: now + f.timeout,
            share: (f.timeout / u32::try_from(n.max(1)).unwrap_or(1)).max(MIN_ATTEMPT),
        }
    }

    /// The next server to ask and the attempt's deadline, or `None`: stop.
    fn next(&mut self, now: Instant, have_fallback: bool) -> Option<(usize, Instant)> {
        if self.n == 0 || now >= self.deadline {
            return None;
        }
        if self.made > 0 && self.made.is_multiple_of(self.n) && (have_fallback || self.made / self.n > 8) {
            return None;
        }
        let i = (self.first + self.made) % self.n;
        self.made += 1;
        Some((i, (now + self.share).min(self.deadline)))
    }
}

#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("query longer than a TCP message")]
    QueryTooLong,
    #[error("malformed reply")]
    Malformed,
    /// A reply that matched but for the case of the name we randomised:
    /// the resolution asks again with the name as asked (0x20 fallback).
    #[error("reply with the question in another case")]
    WrongCase,
}

/// `bytes` in cache form, if they are a well-formed reply to our query
/// `id` for `q`; garbage and mismatched replies (spoof attempts) are
/// `None`: the caller keeps waiting for the real one.
fn matching_reply(bytes: Vec<u8>, id: u16, question: &[u8], case: CaseCheck, server: SocketAddr) -> Matched {
    if !upstream::answers(&bytes, id, question) {
        tracing::debug!(%server, "mismatched reply ignored");
        return Matched::No;
    }
    if case == CaseCheck::Exact && bytes.get(12..12 + question.len()) != Some(question) {
        return Matched::WrongCase;
    }
    match Reply::accept(bytes) {
        Some(r) => Matched::Yes(r),
        None => {
            tracing::debug!(%server, "undecodable reply ignored");
            Matched::No
        }
    }
}

/// `reply` with its question bytes replaced by `original` (same name in
/// another case: lengths and compression offsets stay as they are), so that
/// what is cached and served carries the case that was asked, not our 0x20
/// randomisation. Cost: one copy of the question.
fn restore_question(mut reply: Reply, original: &[u8]) -> Reply {
    if let Some(q) = reply.bytes.get_mut(12..12 + original.len()) {
        if q.eq_ignore_ascii_case(original) {
            q.copy_from_slice(original);
        }
    }
    reply
}
