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
//! and one `recv_from` per query, and less in a [`Forwarder::batch`] (the
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

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::sync::{mpsc, Notify, Semaphore};

use super::wire::{self, u16_at};
use super::{Reply, ResolveError};
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

    /// Resolves `question` and calls `done` with the result, without a task
    /// of its own: the pooled socket's reader task (or the timeout sweeper)
    /// runs each next step and finally `done`, so a forwarded query costs no
    /// task spawn, channel or timer. Same servers, order, timeouts, fallback,
    /// metrics and health record as [`Forwarder::resolve`]. `done` must not
    /// block: it runs on a reader task. Without a socket pool
    /// (`udp_sockets = 0`) this spawns a task that awaits `resolve`.
    pub fn resolve_then(&self, question: Box<[u8]>, dnssec_ok: bool, checking_disabled: bool, done: Done) {
        let key = merge_key(&question, dnssec_ok, checking_disabled);
        let Some(done) = self.join(&key, done) else { return };
        let me = self.me.clone();
        let done: Done = Box::new(move |r| {
            if let Some(f) = me.upgrade() {
                f.release(&key, &r);
            }
            done(r);
        });
        self.resolve_then_unmerged(question, dnssec_ok, checking_disabled, done);
    }

    /// [`Forwarder::resolve_then`] without joining.
    fn resolve_then_unmerged(&self, question: Box<[u8]>, dnssec_ok: bool, checking_disabled: bool, done: Done) {
        if self.servers.is_empty() {
            self.note_health(false);
            return done(Err(ResolveError::NoServers));
        }
        if self.pools.len() != self.servers.len() {
            let Some(me) = self.me.upgrade() else { return done(Err(ResolveError::NoServers)) };
            tokio::spawn(async move {
                let q = Question { wire: &question, dnssec_ok, checking_disabled };
                done(me.resolve_unmerged(&q).await);
            });
            return;
        }
        let Ok(permit) = self.inflight.try_acquire() else {
            self.note_health(false);
            return done(Err(ResolveError::Busy));
        };
        permit.forget(); // given back in `finish`
        self.start_sweeper();
        let now = Instant::now();
        let (question, original, case) = match self.sent_question(&question) {
            Some(sent) => (sent, Some(question), CaseCheck::Exact),
            None => (question, None, CaseCheck::Loose),
        };
        let cq = Box::new(CallbackQuery {
            question,
            original,
            case,
            wrong_case: false,
            dnssec_ok,
            checking_disabled,
            attempts: Attempts::new(self, now),
            server: 0,
            started: now,
            until: now,
            fallback: None,
            done,
        });
        self.try_next(cq, now);
    }

    /// Runs `f`; the upstream queries that [`Forwarder::resolve_then`] sends
    /// from inside it on this thread share one pooled socket (per address
    /// family) and leave together at the end, one `sendmmsg` per run of 32.
    /// Their replies then arrive on one socket, whose reader takes them in
    /// one `recvmmsg` and sends the client replies in one `sendmmsg`: on
    /// the fast path's miss workload, 0.34–0.49 system calls per query against
    /// 3.4 with one socket per query. A query whose send fails goes on to its
    /// next server as before. Nested calls join the outer batch.
    pub fn batch<R>(&self, f: impl FnOnce() -> R) -> R {
        let owner: *const Forwarder = self;
        let outer = SEND_BATCH.with_borrow_mut(|b| {
            if b.active {
                return false;
            }
            b.active = true;
            b.owner = owner;
            true
        });
        let _end = outer.then(|| EndBatch { fwd: self }); // not `then_some`: a dropped guard flushes
        f()
    }

    /// Sends the queries queued by the batch that just ended.
    fn flush_batch(&self) {
        let (mut queued, headers) = SEND_BATCH.with_borrow_mut(|b| {
            b.active = false;
            b.leases.clear();
            (std::mem::take(&mut b.queued), b.headers.take())
        });
        let mut headers = headers.unwrap_or_default();
        // what sendmmsg did not send goes one by one; a query whose send
        // fails moves on to its next server at once
        let send_one = |q: &QueuedQuery| {
            let Err(e) = socket2::SockRef::from(&q.ps.sock).send_to(&q.bytes, &socket2::SockAddr::from(q.server)) else {
                return;
            };
            let cq = match q.ps.pending.lock() {
                Ok(mut p) => match p.remove(&q.id) {
                    Some((_, Waiter::Callback(cq))) => Some(cq),
                    _ => None,
                },
                Err(_) => None,
            };
            if let Some(cq) = cq {
                self.on_attempt(cq, Err(AttemptError::Io(e)));
            }
        };
        crate::outbox::send_runs(
            &queued,
            &mut headers,
            |a, b| Arc::ptr_eq(&a.ps, &b.ps),
            |q| (q.ps.sock.as_raw_fd(), q.server, &q.bytes[..]),
            |i| queued.get(i).into_iter().for_each(send_one),
        );
        queued.clear();
        SEND_BATCH.with_borrow_mut(|b| {
            b.headers = Some(headers);
            if b.queued.is_empty() {
                b.queued = queued; // keep the allocation
            }
        });
    }

    /// Sends `cq` to the next server its plan allows, or finishes it.
    fn try_next(&self, mut cq: Box<CallbackQuery>, now: Instant) {
        while let Some((i, until)) = cq.attempts.next(now, cq.fallback.is_some()) {
            let Some(pool) = self.pools.get(i) else { continue };
            cq.server = i;
            cq.started = now;
            cq.until = until;
            match pool.send_callback(cq, self.me.clone()) {
                Ok(()) => return,
                Err((back, e)) => {
                    cq = back;
                    let _ = self.judge(i, Err(e), now);
                }
            }
        }
        self.finish(cq, None);
    }

    /// One attempt of `cq` ended with `result`: done, or on to the next server.
    fn on_attempt(&self, mut cq: Box<CallbackQuery>, result: Result<Reply, AttemptError>) {
        let result = match result {
            Err(AttemptError::Timeout) if std::mem::take(&mut cq.wrong_case) => {
                let server = self.servers.get(cq.server).copied();
                if let Some(server) = server {
                    self.case_strike(server);
                }
                if let Some(o) = cq.original.take() {
                    cq.question = o;
                }
                cq.case = CaseCheck::Loose;
                Err(AttemptError::WrongCase)
            }
            other => {
                cq.wrong_case = false;
                other
            }
        };
        match self.judge(cq.server, result, cq.started) {
            Judged::Answer(r) => self.finish(cq, Some(r)),
            Judged::Fallback(r) => {
                cq.fallback.get_or_insert(r);
                self.try_next(cq, Instant::now());
            }
            Judged::Failed => self.try_next(cq, Instant::now()),
        }
    }

    /// A matching UDP reply for `cq`; a truncated one is asked again over
    /// TCP in a task of its own.
    fn on_reply(&self, cq: Box<CallbackQuery>, reply: Reply) {
        if !reply.scan.truncated {
            return self.on_attempt(cq, Ok(reply));
        }
        let (Some(me), Some(&server)) = (self.me.upgrade(), self.servers.get(cq.server)) else { return self.finish(cq, None) };
        tokio::spawn(async move {
            let q = Question { wire: &cq.question, dnssec_ok: cq.dnssec_ok, checking_disabled: cq.checking_disabled };
            let r = query_tcp(server, &q, cq.until).await;
            me.on_attempt(cq, r);
        });
    }

    fn finish(&self, cq: Box<CallbackQuery>, answer: Option<Reply>) {
        self.inflight.add_permits(1);
        let CallbackQuery { fallback, done, original, .. } = *cq;
        let r = answer.or(fallback).ok_or(ResolveError::Timeout(self.timeout));
        let r = match original {
            Some(o) => r.map(|reply| restore_question(reply, &o)),
            None => r,
        };
        self.note_health(r.is_ok());
        done(r);
    }

    /// Starts (once) the task that ends timed-out callback attempts: every
    /// tick (a twentieth of the timeout, 5–50 ms) it takes those whose
    /// attempt deadline passed out of every pooled socket's table.
    fn start_sweeper(&self) {
        if self.sweeper.swap(true, Ordering::Relaxed) {
            return;
        }
        let me = self.me.clone();
        let tick = (self.timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(50));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let Some(f) = me.upgrade() else { return };
                let now = Instant::now();
                for pool in &f.pools {
                    let retired: Vec<Arc<PoolSock>> =
                        pool.retired.lock().map(|r| r.iter().filter_map(Weak::upgrade).collect()).unwrap_or_default();
                    for ps in pool.slots.iter().filter_map(|s| s.load_full()).chain(retired) {
                        for cq in ps.take_callbacks(|cq| cq.until <= now) {
                            f.on_attempt(cq, Err(AttemptError::Timeout));
                        }
                    }
                }
            }
        });
    }
}

/// The upstream queries of the [`Forwarder::batch`] running on this thread.
struct SendBatch {
    active: bool,
    /// The forwarder whose batch it is (compared by address, never read
    /// through): another forwarder's queries (tests run several servers on
    /// one runtime) are not queued.
    owner: *const Forwarder,
    /// The socket the batch's queries to each server use.
    leases: Vec<Arc<PoolSock>>,
    queued: Vec<QueuedQuery>,
    headers: Option<crate::outbox::SendHeaders>,
}

impl SendBatch {
    /// Whether a batch of the forwarder at `fwd` is running on this thread.
    fn open_for(&self, fwd: *const Forwarder) -> bool {
        self.active && std::ptr::eq(self.owner, fwd)
    }
}

/// A query registered on `ps` under `id`, not yet sent.
struct QueuedQuery {
    ps: Arc<PoolSock>,
    server: SocketAddr,
    id: u16,
    bytes: Vec<u8>,
}

thread_local! {
    static SEND_BATCH: RefCell<SendBatch> = const {
        RefCell::new(SendBatch { active: false, owner: std::ptr::null(), leases: Vec::new(), queued: Vec::new(), headers: None })
    };
}

/// Ends a [`Forwarder::batch`], also when its closure unwinds.
struct EndBatch<'f> {
    fwd: &'f Forwarder,
}

impl Drop for EndBatch<'_> {
    fn drop(&mut self) {
        self.fwd.flush_batch();
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

/// A resolution driven by reader tasks ([`Forwarder::resolve_then`]).
struct CallbackQuery {
    /// The question as sent (random case under 0x20).
    question: Box<[u8]>,
    /// The question as asked, when `question` differs in case: put back
    /// into the reply before anyone sees it.
    original: Option<Box<[u8]>>,
    case: CaseCheck,
    /// The current attempt got a reply that matched but for the case.
    wrong_case: bool,
    dnssec_ok: bool,
    checking_disabled: bool,
    attempts: Attempts,
    /// The current attempt: server index, start and deadline.
    server: usize,
    started: Instant,
    until: Instant,
    fallback: Option<Reply>,
    done: Done,
}

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
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("encoding query: {0}")]
    Encode(String),
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
    if !wire::answers(&bytes, id, question) {
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

async fn query_server(
    fwd: &Forwarder,
    server: SocketAddr,
    q: &Question<'_>,
    case: CaseCheck,
    deadline: Instant,
) -> Result<Reply, AttemptError> {
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
    let mut wrong_case = false;
    loop {
        let n = match tokio::time::timeout_at(deadline.into(), sock.recv(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Err(fwd.attempt_ran_out(server, wrong_case)),
        };
        let Some(bytes) = buf.get(..n) else { continue };
        let Some(reply) = matching_reply(bytes.to_vec(), id, q.wire, case, server).take(&mut wrong_case) else { continue };
        if reply.scan.truncated {
            return query_tcp(server, q, deadline).await;
        }
        return Ok(reply);
    }
}

/// Who waits for the reply to a pooled query.
enum Waiter {
    /// An awaiting [`Forwarder::resolve`]: replies are queued to it.
    Task(mpsc::Sender<Vec<u8>>),
    /// A [`Forwarder::resolve_then`] query: the reader takes the next step.
    Callback(Box<CallbackQuery>),
}

/// Query ID → (server asked, who waits).
type Pending = HashMap<u16, (SocketAddr, Waiter), foldhash::fast::RandomState>;

/// One pooled socket, connected to its server: its reader task delivers
/// replies by ID.
struct PoolSock {
    sock: UdpSocket,
    /// The server the socket is connected to.
    server: SocketAddr,
    /// When it was opened (replaced once `Pool::lifetime` old).
    born: Instant,
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

/// Sockets connected to one server.
struct Pool {
    server: SocketAddr,
    slots: Vec<arc_swap::ArcSwapOption<PoolSock>>,
    /// Replaced sockets whose readers still linger (the sweeper reads them too).
    retired: Mutex<Vec<Weak<PoolSock>>>,
    queries_per_socket: u32,
    lifetime: Duration,
    linger: Duration,
}

impl Pool {
    fn new(server: SocketAddr, cfg: PoolConfig, linger: Duration) -> Self {
        Self {
            server,
            slots: (0..cfg.sockets).map(|_| arc_swap::ArcSwapOption::empty()).collect(),
            retired: Mutex::new(Vec::new()),
            queries_per_socket: cfg.queries_per_socket,
            lifetime: cfg.socket_lifetime,
            linger,
        }
    }

    /// Whether `s` may send one more query (counted): under its query
    /// budget and younger than the pool's socket lifetime.
    fn usable(&self, s: &PoolSock, now: Instant) -> bool {
        s.uses.fetch_add(1, Ordering::Relaxed) < self.queries_per_socket
            && now.saturating_duration_since(s.born) < self.lifetime
    }

    /// A socket of a random slot, opened (or replaced, once used up) on
    /// demand. Must run inside the tokio runtime (spawns the reader).
    fn lease(&self, fwd: &Weak<Forwarder>) -> std::io::Result<Arc<PoolSock>> {
        let owner = Weak::as_ptr(fwd);
        let now = Instant::now();
        let reused = SEND_BATCH.with_borrow(|b| {
            b.leases.iter().find(|s| s.server == self.server).filter(|_| b.open_for(owner)).map(Arc::clone)
        });
        if let Some(s) = reused {
            if self.usable(&s, now) {
                return Ok(s);
            }
        }
        let s = self.lease_slot(fwd, now)?;
        SEND_BATCH.with_borrow_mut(|b| {
            if b.open_for(owner) {
                b.leases.retain(|held| held.server != self.server);
                b.leases.push(Arc::clone(&s));
            }
        });
        Ok(s)
    }

    /// [`Pool::lease`] of a random slot.
    fn lease_slot(&self, fwd: &Weak<Forwarder>, now: Instant) -> std::io::Result<Arc<PoolSock>> {
        let n = self.slots.len().max(1);
        let slot = self.slots.get(rand::random_range(0..n)).ok_or_else(|| std::io::Error::other("empty pool"))?;
        if let Some(s) = slot.load_full() {
            if self.usable(&s, now) {
                return Ok(s);
            }
        }
        let bind: SocketAddr = if self.server.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let std_sock = std::net::UdpSocket::bind(bind)?;
        // connected: the kernel drops every datagram that is not from the
        // server's address and port before we read it
        std_sock.connect(self.server)?;
        std_sock.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(std_sock)?;
        crate::outbox::dont_fragment(&sock); // queries are small
        let fresh = Arc::new(PoolSock {
            sock,
            server: self.server,
            born: now,
            pending: Mutex::new(HashMap::with_hasher(foldhash::fast::RandomState::default())),
            uses: AtomicU32::new(1),
            retired: Notify::new(),
        });
        tokio::spawn(read_replies(Arc::clone(&fresh), self.linger, fwd.clone()));
        if let Some(old) = slot.swap(Some(Arc::clone(&fresh))) {
            old.retired.notify_one();
            if let Ok(mut r) = self.retired.lock() {
                r.retain(|w| w.strong_count() > 0);
                r.push(Arc::downgrade(&old));
            }
        }
        Ok(fresh)
    }

    /// Registers `cq` under a fresh random ID on a leased socket and sends
    /// its query to the pool's server without waiting. On failure `cq` comes back.
    fn send_callback(
        &self,
        cq: Box<CallbackQuery>,
        fwd: Weak<Forwarder>,
    ) -> Result<(), (Box<CallbackQuery>, AttemptError)> {
        let ps = match self.lease(&fwd) {
            Ok(ps) => ps,
            Err(e) => return Err((cq, AttemptError::Io(e))),
        };
        let server = self.server;
        {
            let Ok(mut p) = ps.pending.lock() else { return Err((cq, poisoned())) };
            let id = match free_id(&p) {
                Ok(id) => id,
                Err(e) => return Err((cq, e)),
            };
            let bytes = wire::query(&cq.question, id, cq.checking_disabled, cq.dnssec_ok);
            let owner = Weak::as_ptr(&fwd);
            let bytes = match SEND_BATCH.with_borrow_mut(|b| {
                if b.open_for(owner) {
                    b.queued.push(QueuedQuery { ps: Arc::clone(&ps), server, id, bytes });
                    None
                } else {
                    Some(bytes)
                }
            }) {
                // registered now, sent when the batch ends (`Forwarder::batch`)
                None => {
                    p.insert(id, (server, Waiter::Callback(cq)));
                    return Ok(());
                }
                Some(bytes) => bytes,
            };
            // sent under the lock: the reply cannot overtake the registration.
            // A plain non-blocking send, not tokio's `try_send_to`: that one
            // refuses (WouldBlock) until the reactor has seen the fresh
            // socket writable
            if let Err(e) = socket2::SockRef::from(&ps.sock).send_to(&bytes, &socket2::SockAddr::from(server)) {
                return Err((cq, AttemptError::Io(e)));
            }
            p.insert(id, (server, Waiter::Callback(cq)));
        }
        Ok(())
    }
}

impl PoolSock {
    /// Takes the callback queries that `expired` selects out of the table.
    #[allow(clippy::vec_box)] // each query stays boxed: it moves between tables and tasks
    fn take_callbacks(&self, expired: impl Fn(&CallbackQuery) -> bool) -> Vec<Box<CallbackQuery>> {
        let Ok(mut p) = self.pending.lock() else { return Vec::new() };
        let ids: Vec<u16> = p
            .iter()
            .filter(|(_, (_, w))| matches!(w, Waiter::Callback(cq) if expired(cq)))
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .filter_map(|id| match p.remove(id) {
                Some((_, Waiter::Callback(cq))) => Some(cq),
                _ => None,
            })
            .collect()
    }
}

/// Upstream replies read per `recvmmsg`.
const READ_BATCH: usize = 16;
/// Receive buffer per reply: we advertise [`wire::UPSTREAM_PAYLOAD`]; a
/// bigger reply is read cut and asked again over TCP.
const READ_BUF: usize = 4096;

/// The receive buffers and `recvmmsg` headers of this thread's readers,
/// borrowed only inside one synchronous system call (one reader at a time
/// on a thread). Headers per address family: the kernel writes the source
/// address length into a header (see `server::fast`).
struct ReadBufs {
    bytes: Vec<u8>,
    v4: Option<MultiHeaders<SockaddrStorage>>,
    v6: Option<MultiHeaders<SockaddrStorage>>,
}

thread_local! {
    static READ_BUFS: RefCell<ReadBufs> = const { RefCell::new(ReadBufs { bytes: Vec::new(), v4: None, v6: None }) };
}

/// Reads up to [`READ_BATCH`] datagrams waiting on `sock` into `got`
/// (bytes, source; cut ones already replaced by [`wire::cut_to_question`]).
/// A short read reports `WouldBlock` after filling `got`: the socket was
/// drained, and tokio then clears its readiness without another (empty)
/// system call; a datagram arriving meanwhile raises a fresh readiness
/// event, which the clear does not swallow (tokio compares event ticks).
fn read_batch(sock: &UdpSocket, v6: bool, got: &mut Vec<(Vec<u8>, SocketAddr)>) -> std::io::Result<()> {
    let fd = sock.as_raw_fd();
    sock.try_io(tokio::io::Interest::READABLE, || {
        READ_BUFS.with_borrow_mut(|rb| {
            let ReadBufs { bytes, v4: h4, v6: h6 } = rb;
            if bytes.len() != READ_BATCH * READ_BUF {
                bytes.resize(READ_BATCH * READ_BUF, 0);
            }
            let headers = if v6 { h6 } else { h4 }.get_or_insert_with(|| MultiHeaders::preallocate(READ_BATCH, None));
            let mut meta = [(0usize, None::<SocketAddr>, false); READ_BATCH];
            let mut n = 0;
            {
                // `recvmmsg` ties the slices' borrow to the headers': a block of its own
                let mut chunks = bytes.chunks_mut(READ_BUF);
                let mut iovs: [[std::io::IoSliceMut<'_>; 1]; READ_BATCH] =
                    std::array::from_fn(|_| [std::io::IoSliceMut::new(chunks.next().unwrap_or(&mut []))]);
                let res = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None).map_err(std::io::Error::from)?;
                for (m, slot) in res.zip(meta.iter_mut()) {
                    *slot = (m.bytes, m.address.as_ref().and_then(crate::outbox::to_std), m.flags.contains(MsgFlags::MSG_TRUNC));
                    n += 1;
                }
            }
            for (&(len, from, cut), buf) in meta.iter().take(n).zip(bytes.chunks(READ_BUF)) {
                let (Some(from), Some(data)) = (from, buf.get(..len)) else { continue };
                if cut {
                    if let Some(cut) = wire::cut_to_question(data) {
                        got.push((cut, from));
                    }
                } else {
                    got.push((data.to_vec(), from));
                }
            }
            if n < READ_BATCH {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        })
    })
}

/// Reads replies on a pooled socket, up to [`READ_BATCH`] per system call,
/// and hands each to the query waiting for its ID, if it came from the
/// server that query asked: queued to an awaiting task, or, for a callback
/// query whose question it answers, the next step run right here. The
/// replies of one read are handled inside one [`outbox::batch`], so the
/// client replies they complete leave in one `sendmmsg`. Ends one `linger`
/// after the socket is retired; callback queries still waiting then time out.
async fn read_replies(ps: Arc<PoolSock>, linger: Duration, fwd: Weak<Forwarder>) {
    let v6 = ps.sock.local_addr().is_ok_and(|a| a.is_ipv6());
    let mut got: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(READ_BATCH);
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        let r = tokio::select! {
            r = ps.sock.readable() => r,
            _ = ps.retired.notified(), if until.is_none() => {
                until = Some(tokio::time::Instant::now() + linger);
                continue;
            }
            _ = async { if let Some(u) = until { tokio::time::sleep_until(u).await } }, if until.is_some() => break,
        };
        if r.is_err() {
            break; // the runtime is going away
        }
        match read_batch(&ps.sock, v6, &mut got) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => tracing::debug!(error = %e, "upstream recvmmsg failed"),
        }
        if got.is_empty() {
            continue;
        }
        crate::outbox::batch(|| {
            for (bytes, from) in got.drain(..) {
                deliver_reply(&ps, &fwd, bytes, from);
            }
        });
    }
    if let Some(f) = fwd.upgrade() {
        for cq in ps.take_callbacks(|_| true) {
            f.on_attempt(cq, Err(AttemptError::Timeout));
        }
    }
}

/// One upstream datagram read on `ps`: to the query waiting for its ID (see
/// [`read_replies`]), or dropped.
fn deliver_reply(ps: &PoolSock, fwd: &Weak<Forwarder>, bytes: Vec<u8>, from: SocketAddr) {
    let Some(id) = u16_at(&bytes, 0) else { return };
    let mut ready: Option<(Box<CallbackQuery>, Reply)> = None;
    let delivered = match ps.pending.lock() {
        Ok(mut p) => match p.get_mut(&id) {
            Some((server, Waiter::Task(tx))) if *server == from => tx.try_send(bytes).is_ok(),
            Some((server, Waiter::Callback(cq))) if *server == from => {
                match matching_reply(bytes, id, &cq.question, cq.case, from) {
                    Matched::Yes(reply) => {
                        if let Some((_, Waiter::Callback(cq))) = p.remove(&id) {
                            ready = Some((cq, reply));
                        }
                        true
                    }
                    Matched::WrongCase => {
                        // ignored; remembered for when the attempt runs out
                        cq.wrong_case = true;
                        false
                    }
                    Matched::No => false, // a spoof or garbage: keep waiting for the real one
                }
            }
            _ => false,
        },
        Err(_) => false,
    };
    if let Some((cq, reply)) = ready {
        match fwd.upgrade() {
            Some(f) => f.on_reply(cq, reply),
            None => (cq.done)(Err(ResolveError::NoServers)),
        }
    } else if !delivered {
        tracing::debug!(%from, id, "unexpected upstream reply ignored");
    }
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
        let mut p = ps.pending.lock().map_err(|_| poisoned())?;
        let id = free_id(&p)?;
        let (tx, rx) = mpsc::channel(REPLIES_PER_QUERY);
        p.insert(id, (server, Waiter::Task(tx)));
        Ok((Registration { ps, id }, rx))
    }
}

/// A random query ID not in use on the socket (64 tries).
fn free_id(p: &Pending) -> Result<u16, AttemptError> {
    (0..64)
        .map(|_| rand::random::<u16>())
        .find(|id| !p.contains_key(id))
        .ok_or_else(|| AttemptError::Io(std::io::Error::other("no free query ID on the socket")))
}

fn poisoned() -> AttemptError {
    AttemptError::Io(std::io::Error::other("pool lock poisoned"))
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.ps.pending.lock() {
            p.remove(&self.id);
        }
    }
}

async fn query_pooled(
    pool: &Pool,
    fwd: &Forwarder,
    server: SocketAddr,
    q: &Question<'_>,
    case: CaseCheck,
    deadline: Instant,
) -> Result<Reply, AttemptError> {
    let ps = pool.lease(&fwd.me)?;
    let (reg, mut rx) = Registration::new(&ps, server)?;
    let packet = wire::query(q.wire, reg.id, q.checking_disabled, q.dnssec_ok);
    ps.sock.send(&packet).await?; // connected to `server`
    let mut wrong_case = false;
    loop {
        let bytes = match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(b)) => b,
            Ok(None) | Err(_) => return Err(fwd.attempt_ran_out(server, wrong_case)),
        };
        let Some(reply) = matching_reply(bytes, reg.id, q.wire, case, server).take(&mut wrong_case) else { continue };
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
