//! UDP sockets: options, batched receive and send, non-blocking send.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders};
pub use nix::sys::socket::SockaddrStorage as RawAddr;
use tokio::net::UdpSocket;

use nix::sys::socket::SockaddrStorage;

/// Datagrams one batched call handles at most.
pub const BATCH: usize = 32;
/// Datagrams per `sendmmsg` of [`send_runs`].
pub const CHUNK: usize = BATCH;

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
/// IP ID 0, RFC 6864), which showed in a profile of the blocked workload
/// (`benches/e2e/profile.sh`). Best effort: a failure is logged and changes
/// nothing else.
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

/// A non-blocking UDP socket on `addr`, with `SO_REUSEPORT` if `reuse_port`.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A non-blocking UDP socket on a random port of the wildcard address of
/// `server`'s family, connected to `server`: the kernel drops every
/// datagram that is not from the server's address and port before it is read.
pub fn connected(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr =
        if server.is_ipv6() { SocketAddr::from(([0u16; 8], 0)) } else { SocketAddr::from(([0, 0, 0, 0], 0)) };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(server)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// `SO_RCVBUF` (the kernel caps it at `net.core.rmem_max`).
pub fn set_recv_buffer(sock: &UdpSocket, bytes: usize) -> std::io::Result<()> {
    socket2::SockRef::from(sock).set_recv_buffer_size(bytes)
}

/// One plain non-blocking `sendto` (tokio's `try_send_to` also refuses
/// while the reactor has not yet reported a fresh socket writable).
pub fn try_send_to(sock: &UdpSocket, dst: SocketAddr, bytes: &[u8]) -> std::io::Result<usize> {
    socket2::SockRef::from(sock).send_to(bytes, &socket2::SockAddr::from(dst))
}

/// A socket address as the kernel filled it in, as a std address (`None`
/// for a family other than IPv4/IPv6).
pub fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(std::net::SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6(std::net::SocketAddrV6::from(*v6)))
}

/// One received datagram of [`recv_batch`]: its length in its buffer, its
/// source, and whether it was longer than the buffer (cut).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: Option<SocketAddr>,
    pub truncated: bool,
}

/// `recvmmsg` headers of this thread, per address family, and the
/// `sendmmsg` headers of [`send_batch`]. Kept: built per call, the header
/// arrays were pages the allocator retired and re-fetched on every batch, a
/// large share of the fast path's user-space instructions on the blocked
/// workload (`benches/e2e/callgrind-self.py`). `MultiHeaders` holds raw pointers, so it cannot
/// live in a (`Send`) future; a thread-local is borrowed only inside one
/// synchronous system call. Receive headers are kept per address family:
/// the kernel writes the source address's length into a header, and a
/// later receive into that header is limited to it. A socket's source
/// addresses all have its own family's length (an IPv6 socket sees IPv4
/// clients as mapped addresses), so headers shared by the sockets of one
/// family stay right.
struct Headers {
    v4: Option<MultiHeaders<SockaddrStorage>>,
    v6: Option<MultiHeaders<SockaddrStorage>>,
    tx: Option<MultiHeaders<SockaddrStorage>>,
}

thread_local! {
    static HEADERS: RefCell<Headers> = const { RefCell::new(Headers { v4: None, v6: None, tx: None }) };
}

/// Reads the datagrams waiting on `fd` (an IPv6 socket if `v6`), one into
/// each of `bufs` (at most [`BATCH`]), without blocking; appends what it
/// read to `got` and returns how many. `WouldBlock` when none was waiting.
/// Cost: one system call, and one pass over the buffers to point the I/O
/// vectors at them (built inside the call: `recvmmsg` ties their lifetime
/// to the headers' borrow; a second array of slices built first doubled
/// the user-space instructions of a small batch, callgrind).
pub fn recv_batch<B: AsMut<[u8]>>(fd: RawFd, v6: bool, bufs: &mut [B], got: &mut Vec<Received>) -> std::io::Result<usize> {
    let n = bufs.len().min(BATCH);
    HEADERS.with_borrow_mut(|h| {
        let mut it = bufs.iter_mut();
        let mut iovs: [[std::io::IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [std::io::IoSliceMut::new(it.next().map_or(&mut [][..], |b| b.as_mut()))]);
        let slot = if v6 { &mut h.v6 } else { &mut h.v4 };
        let headers = slot.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
        // a plain slice iterator, not `take(n)`: nix zips it with its headers,
        // and a `Take` there cost hundreds of instructions per call (callgrind)
        let iovs = iovs.get_mut(..n).unwrap_or_default();
        let res = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None).map_err(std::io::Error::from)?;
        let before = got.len();
        for m in res {
            got.push(Received {
                len: m.bytes,
                from: m.address.as_ref().and_then(to_std),
                truncated: m.flags.contains(MsgFlags::MSG_TRUNC),
            });
        }
        Ok(got.len() - before)
    })
}

/// Sends `slices[i]` to `to[i]` on `fd` in one `sendmmsg` (as many as
/// both hold, at most [`BATCH`]), without blocking; returns how many left.
pub fn send_batch(fd: RawFd, slices: &[[std::io::IoSlice<'_>; 1]], to: &[Option<RawAddr>]) -> std::io::Result<usize> {
    HEADERS.with_borrow_mut(|h| {
        let headers = h.tx.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None));
        // a plain slice iterator (see `recv_batch`)
        let slices = slices.get(..slices.len().min(BATCH)).unwrap_or_default();
        sendmmsg(fd, headers, slices.iter(), to, [], MsgFlags::MSG_DONTWAIT)
            .map(|r| r.count())
            .map_err(std::io::Error::from)
    })
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
    async fn batched_receive_and_send_round_trip() {
        use std::os::fd::AsRawFd as _;
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let slices: Vec<[std::io::IoSlice<'_>; 1]> = payloads.iter().map(|p| [std::io::IoSlice::new(p)]).collect();
        let to: Vec<Option<RawAddr>> = (0..5).map(|_| Some(RawAddr::from(to_b))).collect();
        assert_eq!(send_batch(a.as_raw_fd(), &slices, &to).unwrap(), 5);
        b.readable().await.unwrap();
        let mut store = [[0u8; 12]; 4];
        let mut got = Vec::new();
        // four buffers of 12 bytes: the fifth datagram waits, the fourth (13 bytes) is cut
        let n = recv_batch(b.as_raw_fd(), false, &mut store, &mut got).unwrap();
        assert_eq!(n, 4);
        assert!(got.iter().all(|r| r.from == Some(to_a)));
        assert_eq!(got.iter().map(|r| (r.len, r.truncated)).collect::<Vec<_>>(), vec![(10, false), (11, false), (12, false), (12, true)]);
        assert_eq!(&store[0][..10], &[0u8; 10]);
    }
}
