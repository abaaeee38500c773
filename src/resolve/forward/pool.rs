//! The UDP sockets of one upstream server: each connected to it from its
//! own random port, replaced by count and by age; query IDs registered per
//! socket; an attempt that waits for its reply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};

use super::callback::{CallbackQuery, QueuedQuery, SEND_BATCH};
use super::reader::read_replies;
use super::tcp::query_tcp;
use super::{matching_reply, AttemptError, CaseCheck, Forwarder, PoolConfig, Question};
use crate::resolve::Reply;
use crate::wire::query as upstream;

/// Who waits for the reply to a pooled query.
pub(super) enum Waiter {
    /// An awaiting [`Forwarder::resolve`]: replies are queued to it.
    Task(mpsc::Sender<Vec<u8>>),
    /// A [`Forwarder::resolve_then`] query: the reader takes the next step.
    Callback(Box<CallbackQuery>),
}

/// Query ID → (server asked, who waits).
pub(super) type Pending = HashMap<u16, (SocketAddr, Waiter), foldhash::fast::RandomState>;

/// One pooled socket, connected to its server: its reader task delivers
/// replies by ID.
pub(super) struct PoolSock {
    pub(super) sock: UdpSocket,
    /// The server the socket is connected to.
    pub(super) server: SocketAddr,
    /// When it was opened (replaced once `Pool::lifetime` old).
    pub(super) born: Instant,
    /// Queries waiting for a reply: ID → (server asked, where to deliver).
    /// A few replies per ID are queued: a spoofed reply with the right ID
    /// must not crowd out the real one that follows it.
    pub(super) pending: Mutex<Pending>,
    pub(super) uses: AtomicU32,
    /// Signalled when the slot replaced this socket: the reader lingers one
    /// timeout (for queries already sent) and ends, closing the socket.
    pub(super) retired: Notify,
}

/// Replies queued per waiting query (the rest are dropped).
pub(super) const REPLIES_PER_QUERY: usize = 4;

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
    /// demand. Must run inside the tokio runtime (spawns the reader).
    pub(super) fn lease(&self, fwd: &Weak<Forwarder>) -> std::io::Result<Arc<PoolSock>> {
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
            if let Err(e) = crate::sys::udp::try_send_to(&ps.sock, server, &bytes) {
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
    pub(super) fn take_callbacks(&self, expired: impl Fn(&CallbackQuery) -> bool) -> Vec<Box<CallbackQuery>> {
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

/// A query's place in a pooled socket's pending table; removed on drop (when
/// the query times out or its future is dropped).
pub(super) struct Registration<'a> {
    pub(super) ps: &'a PoolSock,
    pub(super) id: u16,
}

impl Registration<'_> {
    /// Registers a fresh random ID for a reply from `server`.
    pub(super) fn new(ps: &PoolSock, server: SocketAddr) -> Result<(Registration<'_>, mpsc::Receiver<Vec<u8>>), AttemptError> {
        let mut p = ps.pending.lock().map_err(|_| poisoned())?;
        let id = free_id(&p)?;
        let (tx, rx) = mpsc::channel(REPLIES_PER_QUERY);
        p.insert(id, (server, Waiter::Task(tx)));
        Ok((Registration { ps, id }, rx))
    }
}

/// A random query ID not in use on the socket (64 tries).
pub(super) fn free_id(p: &Pending) -> Result<u16, AttemptError> {
    (0..64)
        .map(|_| rand::random::<u16>())
        .find(|id| !p.contains_key(id))
        .ok_or_else(|| AttemptError::Io(std::io::Error::other("no free query ID on the socket")))
}

pub(super) fn poisoned() -> AttemptError {
    AttemptError::Io(std::io::Error::other("pool lock poisoned"))
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.ps.pending.lock() {
            p.remove(&self.id);
        }
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
