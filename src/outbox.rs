//! Datagrams queued while one batch of work runs on a thread and sent when
//! it ends, with one `sendmmsg` per socket instead of one `sendto` each.
//!
//! The forwarder's reader task handles the upstream replies of one
//! `recvmmsg` inside [`batch`]; the client replies those replies complete
//! are [`send`]-ed from inside it and leave together. Outside a batch,
//! [`send`] sends at once. A leaf module: it knows sockets, not DNS.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;

use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::net::UdpSocket;

/// The largest UDP payload a socket sends with DF set (RFC 9715 §3.2, R3:
/// 1400 bytes fit the path MTU of nearly every network).
pub const DONT_FRAGMENT_MAX: u16 = 1400;

/// Sets DF on the socket's datagrams and ignores path MTU discovery
/// (`IP_PMTUDISC_PROBE`; for an IPv6 socket also `IPV6_PMTUDISC_PROBE`), as
/// RFC 9715 asks of DNS over UDP: a datagram is never fragmented (fragments
/// can be spoofed into a resolver's answers), and a forged ICMP
/// "fragmentation needed" cannot shrink it. Only for sockets whose datagrams
/// stay within [`DONT_FRAGMENT_MAX`]: a bigger one than the link's MTU
/// would fail to send instead of going out in fragments. It also spares the
/// kernel the shared IP ID generator per datagram (an atomic datagram has
/// IP ID 0, RFC 6864): 2.6 % of the blocked workload's samples. Best
/// effort: a failure is logged and changes nothing else.
pub fn dont_fragment(sock: &UdpSocket) {
    use rustix::net::sockopt;
    let r = sockopt::set_ip_mtu_discover(sock, sockopt::Ipv4PathMtuDiscovery::PROBE);
    let r6 = match sock.local_addr() {
        Ok(a) if a.is_ipv6() => sockopt::set_ipv6_mtu_discover(sock, sockopt::Ipv6PathMtuDiscovery::PROBE),
        _ => Ok(()),
    };
    if let Err(e) = r.and(r6) {
        tracing::debug!(error = %e, "could not set IP_PMTUDISC_PROBE");
    }
}

/// Datagrams per `sendmmsg`.
pub const CHUNK: usize = 32;

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

/// What [`send_runs`] needs besides the datagrams, kept by its callers
/// between calls: built per call, its header array and address vector cost
/// two allocations each time (see `server::fast`).
pub struct SendHeaders {
    headers: MultiHeaders<SockaddrStorage>,
    to: Vec<Option<SockaddrStorage>>,
}

impl SendHeaders {
    pub fn new() -> Self {
        Self { headers: MultiHeaders::preallocate(CHUNK, None), to: Vec::with_capacity(CHUNK) }
    }
}

impl Default for SendHeaders {
    fn default() -> Self {
        Self::new()
    }
}

/// A socket address as the kernel filled it in, as a std address (`None`
/// for a family other than IPv4/IPv6).
pub fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(std::net::SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6(std::net::SocketAddrV6::from(*v6)))
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

/// One plain non-blocking send (tokio's `try_send_to` also refuses while
/// the reactor has not yet reported the socket writable).
fn send_now(sock: &Arc<UdpSocket>, dst: SocketAddr, bytes: &[u8]) {
    match socket2::SockRef::from(&**sock).send_to(bytes, &socket2::SockAddr::from(dst)) {
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
/// [`CHUNK`] each); what a call leaves unsent goes one by one. Returns the
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

/// Sends `items` in runs of up to [`CHUNK`] consecutive items that go out
/// on the same socket (`same`), one `sendmmsg` per run; `what` gives an
/// item's socket, destination and bytes. Calls `unsent` with the index of
/// every item a run did not send (all of a run of one: a plain send is
/// cheaper there), in order, for the caller to send or fail one by one.
/// Both batch senders use it: this module's client replies and the
/// forwarder's upstream queries.
pub fn send_runs<'a, T>(
    items: &'a [T],
    h: &mut SendHeaders,
    same: impl Fn(&T, &T) -> bool,
    what: impl Fn(&'a T) -> (std::os::fd::RawFd, SocketAddr, &'a [u8]),
    mut unsent: impl FnMut(usize),
) {
    let SendHeaders { headers, to } = h;
    let mut start = 0;
    while let Some(first) = items.get(start) {
        let group = items.get(start..).unwrap_or(&[]);
        let run = group.iter().take(CHUNK).take_while(|q| same(q, first)).count();
        let group = group.get(..run).unwrap_or(&[]);
        let sent = if run == 1 {
            0
        } else {
            to.clear();
            to.extend(group.iter().map(|q| Some(SockaddrStorage::from(what(q).1))));
            let slices: [[std::io::IoSlice<'_>; 1]; CHUNK] =
                std::array::from_fn(|i| [std::io::IoSlice::new(group.get(i).map_or(&[][..], |q| what(q).2))]);
            sendmmsg(what(first).0, headers, slices.iter().take(run), &*to, [], MsgFlags::MSG_DONTWAIT).map_or(0, |r| r.count())
        };
        (start + sent..start + run).for_each(&mut unsent);
        start += run;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dont_fragment_sets_df_and_ignores_path_mtu_and_still_sends() {
        use rustix::net::sockopt;
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_ne!(sockopt::ip_mtu_discover(&tx).unwrap(), sockopt::Ipv4PathMtuDiscovery::PROBE, "not the kernel default");
        dont_fragment(&tx);
        assert_eq!(sockopt::ip_mtu_discover(&tx).unwrap(), sockopt::Ipv4PathMtuDiscovery::PROBE);
        tx.send_to(&[7u8; DONT_FRAGMENT_MAX as usize], rx.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 2048];
        assert_eq!(rx.recv(&mut buf).await.unwrap(), usize::from(DONT_FRAGMENT_MAX));
        if let Ok(v6) = UdpSocket::bind("[::1]:0").await {
            dont_fragment(&v6);
            assert_eq!(sockopt::ipv6_mtu_discover(&v6).unwrap(), sockopt::Ipv6PathMtuDiscovery::PROBE);
            assert_eq!(sockopt::ip_mtu_discover(&v6).unwrap(), sockopt::Ipv4PathMtuDiscovery::PROBE, "v4-mapped clients too");
        }
    }

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
