//! Each pooled socket's reader task: reads replies in batches and hands
//! each to the query waiting for its ID.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::sock::{CallbackQuery, PoolSock, Waiter};
use super::{matching_reply, AttemptError, Forwarder, Matched};
use crate::resolve::{Reply, ResolveError};
use crate::wire::query as upstream;
use crate::wire::u16_at;

/// Upstream replies read per `recvmmsg`.
pub(super) const READ_BATCH: usize = 16;

/// Receive buffer per reply: we advertise [`upstream::UPSTREAM_PAYLOAD`]; a
/// bigger reply is read cut and asked again over TCP.
pub(super) const READ_BUF: usize = 4096;

thread_local! {
    /// The receive buffers of this thread's readers, borrowed only inside one
    /// synchronous system call (one reader at a time on a thread).
    static READ_BUFS: RefCell<(Vec<Vec<u8>>, Vec<crate::sys::udp::Received>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Reads up to [`READ_BATCH`] datagrams waiting on `sock` into `got`
/// (bytes, source; cut ones already replaced by [`upstream::cut_to_question`]).
/// A short read reports `WouldBlock` after filling `got`: the socket was
/// drained, and tokio then clears its readiness without another (empty)
/// system call; a datagram arriving meanwhile raises a fresh readiness
/// event, which the clear does not swallow (tokio compares event ticks).
pub(super) fn read_batch(sock: &UdpSocket, v6: bool, got: &mut Vec<(Vec<u8>, SocketAddr)>) -> std::io::Result<()> {
    let fd = sock.as_raw_fd();
    sock.try_io(tokio::io::Interest::READABLE, || {
        READ_BUFS.with_borrow_mut(|(bytes, meta)| {
            if bytes.len() != READ_BATCH {
                bytes.resize_with(READ_BATCH, || vec![0; READ_BUF]);
            }
            meta.clear();
            let n = crate::sys::udp::recv_batch(fd, v6, bytes, meta)?;
            for (r, buf) in meta.iter().zip(bytes.iter()) {
                let (Some(from), Some(data)) = (r.from, buf.get(..r.len)) else { continue };
                if r.truncated {
                    if let Some(cut) = upstream::cut_to_question(data) {
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
/// replies of one read are handled inside one [`crate::sys::outbox::batch`],
/// so the client replies they complete (and any retry to a next server)
/// leave in one `sendmmsg` per socket. Ends one `linger`
/// after the socket is retired; callback queries still waiting then time out.
pub(super) async fn read_replies(ps: Arc<PoolSock>, linger: Duration, fwd: Weak<Forwarder>) {
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
        crate::sys::outbox::batch(|| {
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
pub(super) fn deliver_reply(ps: &PoolSock, fwd: &Weak<Forwarder>, bytes: Vec<u8>, from: SocketAddr) {
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
