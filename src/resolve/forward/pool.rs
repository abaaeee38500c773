//! The UDP sockets of one upstream server: each connected to it from its
//! own random port, replaced by count and by age, its reader started with
//! it; sending a query on one (registered under a fresh ID first), and an
//! attempt that awaits its reply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::reader::read_replies;
use super::sock::{free_id, poisoned, CallbackQuery, PoolSock, Registration, Waiter};
use super::tcp::query_tcp;
use super::{matching_reply, AttemptError, CaseCheck, Forwarder, PoolConfig, Question};
use crate::resolve::Reply;
use crate::sys::outbox;
use crate::wire::query as upstream;

/// Sockets connected to one server.
pub(super) struct Pool {
    pub(super) server: SocketAddr,
    pub(super) slots: Vec<arc_swap::ArcSwapOption<PoolSock>>,
    /// Replaced sockets whose readers still linger (the sweeper reads them too).
    pub(super) retired: Mutex<Vec<Weak<PoolSock>>>,
    pub(super) queries_per_socket: u32,
    pub(super) lifetime: Duration,
    pub(super) linger: Duration,
}

impl Pool {
    pub(super) fn new(server: SocketAddr, cfg: PoolConfig, linger: Duration) -> Self {
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
    pub(super) fn usable(&self, s: &PoolSock, now: Instant) -> bool {
        s.uses.fetch_add(1, Ordering::Relaxed) < self.queries_per_socket
            && now.saturating_duration_since(s.born) < self.lifetime
    }

    /// A socket of a random slot, opened (or replaced, once used up) on
    /// demand. Inside a send batch ([`outbox::batch`]) the batch keeps the
    /// socket, and its later queries to this server from this forwarder
    /// take the same one while it is usable: they leave in one `sendmmsg`
    /// run, and their replies come back to one reader, read in one
    /// `recvmmsg`. Must run inside the tokio runtime (spawns the reader).
    pub(super) fn lease(&self, fwd: &Weak<Forwarder>) -> std::io::Result<Arc<PoolSock>> {
        let now = Instant::now();
        let ours = |s: &PoolSock| s.server == self.server && Weak::ptr_eq(&s.fwd, fwd);
        if let Some(s) = outbox::kept(ours) {
            if self.usable(&s, now) {
                return Ok(s);
            }
        }
        let s = self.lease_slot(fwd, now)?;
        outbox::keep(&s, ours);
        Ok(s)
    }

    /// [`Pool::lease`] of a random slot.
    pub(super) fn lease_slot(&self, fwd: &Weak<Forwarder>, now: Instant) -> std::io::Result<Arc<PoolSock>> {
        let n = self.slots.len().max(1);
        let slot = self.slots.get(rand::random_range(0..n)).ok_or_else(|| std::io::Error::other("empty pool"))?;
        if let Some(s) = slot.load_full() {
            if self.usable(&s, now) {
                return Ok(s);
            }
        }
        let sock = crate::sys::udp::connected(self.server)?;
        crate::sys::udp::dont_fragment(&sock); // queries are small
        let fresh = Arc::new(PoolSock {
            sock,
            server: self.server,
            born: now,
            pending: Mutex::new(HashMap::with_hasher(foldhash::fast::RandomState::default())),
            uses: AtomicU32::new(1),
            retired: Notify::new(),
            fwd: fwd.clone(),
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
    pub(super) fn send_callback(
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
            let bytes = upstream::query(&cq.question, id, cq.checking_disabled, cq.dnssec_ok);
            let bytes = match outbox::queue(&ps, server, id, bytes) {
                // registered now, sent when the batch ends (a failed send
                // then fails this attempt: `PoolSock`'s `Sink::unsent`)
                Ok(()) => {
                    p.insert(id, (server, Waiter::Callback(cq)));
                    return Ok(());
                }
                Err(bytes) => bytes,
            };
            // sent under the lock: the reply cannot overtake the registration.
            // A plain non-blocking send, not tokio's `try_send_to`: that one
            // refuses (WouldBlock) until the reactor has seen the fresh
            // socket writable
            if let Err(e) = crate::sys::udp::try_send_to(&ps.sock, server, &bytes) {
                return Err((cq, AttemptError::Io(e)));
            }
            p.insert(id, (server, Waiter::Callback(cq)));
        }
        Ok(())
    }
}

pub(super) async fn query_pooled(
    pool: &Pool,
    fwd: &Forwarder,
    server: SocketAddr,
    q: &Question<'_>,
    case: CaseCheck,
    deadline: Instant,
) -> Result<Reply, AttemptError> {
    let ps = pool.lease(&fwd.me)?;
    let (reg, mut rx) = Registration::new(&ps, server)?;
    let packet = upstream::query(q.wire, reg.id, q.checking_disabled, q.dnssec_ok);
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
