//! The send batch: datagrams queued while one batch of work runs on a
//! thread, and sent when it ends, one `sendmmsg` per run of datagrams on
//! the same socket instead of one `sendto` each. The one queue-then-flush
//! mechanism of qalqan, used both ways:
//!
//! - the fast path decides a `recvmmsg` batch of client queries inside
//!   [`batch`]: the upstream queries of its cache misses leave together;
//! - the forwarder's reader handles the upstream replies of one `recvmmsg`
//!   inside [`batch`]: the client replies they complete leave together
//!   (and so do the retries to a next server).
//!
//! A socket is a [`Sink`]: it says what happens to a datagram that could
//! not be sent (a client reply waits in a task for the socket to drain; an
//! upstream query fails its attempt). A batch can also [`keep`] a socket
//! for the rest of the batch, so that its datagrams to one destination
//! share one socket (one `sendmmsg` run out, one `recvmmsg` of replies
//! back). It knows sockets, not DNS; the system calls are [`super::udp`]'s.
//!
//! Cost: a [`send`] inside a batch is a push onto a thread-local vector
//! (kept between batches: no allocation once warm); the flush is one system
//! call per run of up to [`super::udp::CHUNK`] datagrams on one socket.

use std::any::Any;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, RawFd};
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::udp::{send_runs, try_send_to, SendHeaders};

/// A socket the send batch sends on, and what to do with a datagram that
/// could not be sent.
pub trait Sink: Any + Send + Sync {
    /// The socket the datagrams go out on.
    fn socket(&self) -> &UdpSocket;

    /// `bytes` for `dst` could not be sent: a plain non-blocking send
    /// failed with `e` (a full send buffer is `WouldBlock`). `tag` is what
    /// [`queue`] was given (0 from [`send`]). Called outside any batch.
    fn unsent(self: Arc<Self>, dst: SocketAddr, bytes: Vec<u8>, tag: u16, e: std::io::Error);
}

/// A listening socket's client replies: one that does not fit the send
/// buffer waits, in a task, until the socket is writable.
impl Sink for UdpSocket {
    fn socket(&self) -> &UdpSocket {
        self
    }

    fn unsent(self: Arc<Self>, dst: SocketAddr, bytes: Vec<u8>, _tag: u16, e: std::io::Error) {
        if e.kind() != std::io::ErrorKind::WouldBlock {
            tracing::debug!(error = %e, %dst, "UDP send failed");
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = self.send_to(&bytes, dst).await {
                tracing::debug!(error = %e, %dst, "UDP send failed");
            }
        });
    }
}

struct Queued {
    sink: Arc<dyn Sink>,
    /// `sink`'s socket (the `Arc` keeps it open, so no other socket has it).
    fd: RawFd,
    dst: SocketAddr,
    tag: u16,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Outbox {
    /// Inside a [`batch`] on this thread.
    active: bool,
    items: Vec<Queued>,
    /// Sockets the batch keeps using ([`keep`]); let go when it ends.
    kept: Vec<Arc<dyn Sink>>,
    /// Kept between flushes.
    headers: Option<SendHeaders>,
}

thread_local! {
    static OUTBOX: RefCell<Outbox> = RefCell::new(Outbox::default());
}

/// Ends the batch and sends what it queued, also when `f` unwinds.
struct Flush;

impl Drop for Flush {
    fn drop(&mut self) {
        let (items, kept, headers) = OUTBOX.with_borrow_mut(|o| {
            o.active = false;
            (std::mem::take(&mut o.items), std::mem::take(&mut o.kept), o.headers.take())
        });
        let mut headers = headers.unwrap_or_default();
        let (items, mut kept) = (flush(items, &mut headers), kept);
        kept.clear();
        OUTBOX.with_borrow_mut(|o| {
            o.headers = Some(headers);
            // keep the allocations (unless a sink's `unsent` started a batch of its own)
            if o.items.is_empty() {
                o.items = items;
            }
            if o.kept.is_empty() {
                o.kept = kept;
            }
        });
    }
}

/// Runs `f`; every [`send`] and [`queue`] it makes on this thread goes out
/// when it returns. A nested call is part of the outer batch.
pub fn batch<R>(f: impl FnOnce() -> R) -> R {
    let outer = OUTBOX.with_borrow_mut(|o| !std::mem::replace(&mut o.active, true));
    let _flush = outer.then(|| Flush); // not `then_some`: a dropped guard flushes
    f()
}

/// Inside a [`batch`]: queues `bytes` for `dst` on `sink` (sent when the
/// batch ends; `tag` comes back to [`Sink::unsent`] if it cannot be).
/// Outside one: gives `bytes` back, for the caller to send now.
pub fn queue<S: Sink>(sink: &Arc<S>, dst: SocketAddr, tag: u16, bytes: Vec<u8>) -> Result<(), Vec<u8>> {
    OUTBOX.with_borrow_mut(|o| {
        if !o.active {
            return Err(bytes);
        }
        let fd = sink.socket().as_raw_fd();
        o.items.push(Queued { sink: Arc::clone(sink) as Arc<dyn Sink>, fd, dst, tag, bytes });
        Ok(())
    })
}

/// Sends `bytes` to `dst` on `sink`: queued inside a [`batch`], else now.
/// Never blocks: a datagram that cannot go out goes to [`Sink::unsent`].
pub fn send<S: Sink>(sink: &Arc<S>, dst: SocketAddr, bytes: Vec<u8>) {
    if let Err(bytes) = queue(sink, dst, 0, bytes) {
        if let Err(e) = try_send_to(sink.socket(), dst, &bytes) {
            Arc::clone(sink).unsent(dst, bytes, 0, e);
        }
    }
}

/// Inside a [`batch`]: the socket of type `S` it keeps ([`keep`]) that
/// `pick` selects. `None` outside one. Cost: one type check per kept socket.
pub fn kept<S: Sink>(pick: impl Fn(&S) -> bool) -> Option<Arc<S>> {
    OUTBOX.with_borrow(|o| {
        if !o.active {
            return None;
        }
        let found = o.kept.iter().find(|k| (&***k as &dyn Any).downcast_ref::<S>().is_some_and(&pick))?;
        (Arc::clone(found) as Arc<dyn Any + Send + Sync>).downcast::<S>().ok()
    })
}

/// Inside a [`batch`]: keeps `sink` until the batch ends, in place of the
/// kept sockets of type `S` that `replaces` selects. Outside one: nothing.
pub fn keep<S: Sink>(sink: &Arc<S>, replaces: impl Fn(&S) -> bool) {
    OUTBOX.with_borrow_mut(|o| {
        if !o.active {
            return;
        }
        o.kept.retain(|k| !(&**k as &dyn Any).downcast_ref::<S>().is_some_and(&replaces));
        o.kept.push(Arc::clone(sink) as Arc<dyn Sink>);
    });
}

/// Sends `items`, runs of the same socket in one `sendmmsg` (up to
/// [`super::udp::CHUNK`] each); what a run leaves unsent goes one by one,
/// and what fails then goes to its sink's [`Sink::unsent`]. Returns the
/// emptied vector (its allocation is kept for the next batch).
fn flush(mut items: Vec<Queued>, headers: &mut SendHeaders) -> Vec<Queued> {
    let mut failed: Vec<(usize, std::io::Error)> = Vec::new();
    send_runs(
        &items,
        headers,
        |a, b| a.fd == b.fd,
        |q| (q.fd, q.dst, &q.bytes[..]),
        |i| {
            if let Some(q) = items.get(i) {
                if let Err(e) = try_send_to(q.sink.socket(), q.dst, &q.bytes) {
                    failed.push((i, e));
                }
            }
        },
    );
    for (i, e) in failed {
        if let Some(q) = items.get_mut(i) {
            let bytes = std::mem::take(&mut q.bytes);
            Arc::clone(&q.sink).unsent(q.dst, bytes, q.tag, e);
        }
    }
    items.clear();
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_sends_everything_it_queued_in_order_and_outside_sends_at_once() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (to, to_other) = (rx.local_addr().unwrap(), other.local_addr().unwrap());
        batch(|| {
            for i in 0..40u8 {
                send(&a, to, vec![i]); // more than one chunk
            }
            send(&b, to_other, vec![100]);
            batch(|| send(&a, to, vec![40])); // nested: part of the outer batch
            assert_eq!(queue(&a, to, 7, vec![41]), Ok(()));
            assert_eq!(OUTBOX.with_borrow(|o| o.items.len()), 43, "queued, not sent yet");
        });
        let mut buf = [0u8; 8];
        for want in 0..42u8 {
            let (n, from) = rx.recv_from(&mut buf).await.unwrap();
            assert_eq!((n, buf[0]), (1, want));
            assert_eq!(from, a.local_addr().unwrap());
        }
        let (_, from) = other.recv_from(&mut buf).await.unwrap();
        assert_eq!((buf[0], from), (100, b.local_addr().unwrap()));
        assert_eq!(queue(&a, to, 0, vec![9]), Err(vec![9]), "outside a batch the caller sends");
        send(&a, to, vec![7]);
        assert!(OUTBOX.with_borrow(|o| o.items.is_empty() && !o.active));
        rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(buf[0], 7);
    }

    /// A kept socket is found by type and predicate inside its batch, is
    /// replaced by a later keep for the same key, and is let go at the end.
    #[tokio::test]
    async fn a_batch_keeps_sockets_until_it_ends() {
        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let port = |s: &UdpSocket| s.local_addr().unwrap().port();
        let (pa, pb) = (port(&a), port(&b));
        keep(&a, |_: &UdpSocket| true);
        assert!(kept(|_: &UdpSocket| true).is_none(), "nothing is kept outside a batch");
        batch(|| {
            keep(&a, |s: &UdpSocket| port(s) == pa);
            keep(&b, |s: &UdpSocket| port(s) == pb);
            assert!(kept(|s: &UdpSocket| port(s) == pa).is_some_and(|s| Arc::ptr_eq(&s, &a)));
            keep(&b, |s: &UdpSocket| port(s) == pa); // b in a's place
            assert!(kept(|s: &UdpSocket| port(s) == pa).is_none());
            assert_eq!(OUTBOX.with_borrow(|o| o.kept.len()), 2, "b twice: kept once per keep");
        });
        assert_eq!(Arc::strong_count(&a), 1, "let go when the batch ended");
        assert_eq!(Arc::strong_count(&b), 1);
    }
}
