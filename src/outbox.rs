//! Datagrams queued while one batch of work runs on a thread and sent when
//! it ends, with one `sendmmsg` per socket instead of one `sendto` each.
//!
//! The forwarder's reader task handles the upstream replies of one
//! `recvmmsg` inside [`batch`]; the client replies those replies complete
//! are [`send`]-ed from inside it and leave together. Outside a batch,
//! [`send`] sends at once. It knows sockets, not DNS; the system calls are
//! [`crate::sys::udp`]'s.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;

use tokio::net::UdpSocket;

use crate::sys::udp::{send_runs, try_send_to, SendHeaders};

struct Queued {
    sock: Arc<UdpSocket>,
    dst: SocketAddr,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Outbox {
    /// Inside a [`batch`] on this thread.
    active: bool,
    items: Vec<Queued>,
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
        let (items, headers) = OUTBOX.with_borrow_mut(|o| {
            o.active = false;
            (std::mem::take(&mut o.items), o.headers.take())
        });
        let mut headers = headers.unwrap_or_default();
        let items = flush(items, &mut headers);
        OUTBOX.with_borrow_mut(|o| {
            o.headers = Some(headers);
            if o.items.is_empty() {
                o.items = items; // keep the allocation
            }
        });
    }
}

/// Runs `f`; every [`send`] it makes on this thread goes out when it
/// returns. A nested call is part of the outer batch.
pub fn batch<R>(f: impl FnOnce() -> R) -> R {
    let outer = OUTBOX.with_borrow_mut(|o| !std::mem::replace(&mut o.active, true));
    let _flush = outer.then(|| Flush); // not `then_some`: a dropped guard flushes
    f()
}

/// Sends `bytes` to `dst` on `sock`: queued inside a [`batch`], else now.
/// Never blocks: a full send buffer hands the datagram to a task that
/// waits until the socket is writable.
pub fn send(sock: &Arc<UdpSocket>, dst: SocketAddr, bytes: Vec<u8>) {
    let queued = OUTBOX.with_borrow_mut(|o| {
        if o.active {
            o.items.push(Queued { sock: Arc::clone(sock), dst, bytes });
            None
        } else {
            Some(bytes)
        }
    });
    if let Some(bytes) = queued {
        send_now(sock, dst, &bytes);
    }
}

/// One plain non-blocking send ([`try_send_to`]); a full send buffer hands
/// it to a task that waits until the socket is writable.
fn send_now(sock: &Arc<UdpSocket>, dst: SocketAddr, bytes: &[u8]) {
    match try_send_to(sock, dst, bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let (sock, bytes) = (Arc::clone(sock), bytes.to_vec());
            tokio::spawn(async move {
                if let Err(e) = sock.send_to(&bytes, dst).await {
                    tracing::debug!(error = %e, %dst, "UDP send failed");
                }
            });
        }
        Err(e) => tracing::debug!(error = %e, %dst, "UDP send failed"),
    }
}

/// Sends `items`, runs of the same socket in one `sendmmsg` (up to
/// [`crate::sys::udp::CHUNK`] each); what a call leaves unsent goes one by one. Returns the
/// emptied vector (its allocation is kept for the next batch). Cost: one system call per run of up to 32 datagrams.
fn flush(mut items: Vec<Queued>, headers: &mut SendHeaders) -> Vec<Queued> {
    send_runs(
        &items,
        headers,
        |a, b| Arc::ptr_eq(&a.sock, &b.sock),
        |q| (q.sock.as_raw_fd(), q.dst, &q.bytes[..]),
        |i| {
            if let Some(q) = items.get(i) {
                send_now(&q.sock, q.dst, &q.bytes);
            }
        },
    );
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
            send(&a, to, vec![41]);
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
        send(&a, to, vec![7]);
        assert!(OUTBOX.with_borrow(|o| o.items.is_empty() && !o.active));
        rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(buf[0], 7);
    }
}
