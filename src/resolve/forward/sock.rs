//! One pooled socket, connected to its upstream server, and who waits on
//! it: the table of query IDs (an awaiting task, or a callback resolution
//! whose next step the socket's reader runs), and what a datagram the send
//! batch could not send does to the query it carried.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};

use super::{AttemptError, Attempts, CaseCheck, Done, Forwarder};
use crate::resolve::{Reply, ResolveError};
use crate::sys::outbox::Sink;

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
    /// The forwarder whose queries it carries (for a query the send batch
    /// could not send: [`Sink::unsent`]).
    pub(super) fwd: Weak<Forwarder>,
}

/// Replies queued per waiting query (the rest are dropped).
pub(super) const REPLIES_PER_QUERY: usize = 4;

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

/// A query the send batch could not send fails its attempt (and goes on
/// to its next server), as a failed plain send would have.
impl Sink for PoolSock {
    fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    fn unsent(self: Arc<Self>, _dst: SocketAddr, _bytes: Vec<u8>, id: u16, e: std::io::Error) {
        let cq = match self.pending.lock() {
            Ok(mut p) => match p.remove(&id) {
                Some((_, Waiter::Callback(cq))) => Some(cq),
                _ => None,
            },
            Err(_) => None,
        };
        let Some(cq) = cq else { return };
        match self.fwd.upgrade() {
            Some(f) => f.on_attempt(cq, Err(AttemptError::Io(e))),
            None => (cq.done)(Err(ResolveError::NoServers)),
        }
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

/// A resolution driven by reader tasks ([`Forwarder::resolve_then`]).
pub(super) struct CallbackQuery {
    /// The question as sent (random case under 0x20).
    pub(super) question: Box<[u8]>,
    /// The question as asked, when `question` differs in case: put back
    /// into the reply before anyone sees it.
    pub(super) original: Option<Box<[u8]>>,
    pub(super) case: CaseCheck,
    /// The current attempt got a reply that matched but for the case.
    pub(super) wrong_case: bool,
    pub(super) dnssec_ok: bool,
    pub(super) checking_disabled: bool,
    pub(super) attempts: Attempts,
    /// The current attempt: server index, start and deadline.
    pub(super) server: usize,
    pub(super) started: Instant,
    pub(super) until: Instant,
    pub(super) fallback: Option<Reply>,
    pub(super) done: Done,
}
