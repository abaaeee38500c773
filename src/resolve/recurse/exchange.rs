//! One iterative query to one authority: over UDP from a socket on a
//! random port connected to that server (the kernel drops datagrams from
//! anyone else), with a random ID; over TCP when the reply is truncated.
//! Sockets are kept for the same server after a clean exchange and used
//! again, a bounded number of times for a bounded time ([`Sockets`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::wire::query as wq;

/// Why an authority gave nothing usable.
#[derive(Debug, thiserror::Error)]
pub(super) enum ExchangeError {
    #[error("timed out")]
    Timeout,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("reply does not parse")]
    Malformed,
    #[error("query too long")]
    TooLong,
}

/// What one exchange gave: the reply, and the round trip (for the
/// server's RTT estimate; over TCP it includes the connection set-up).
pub(super) struct Exchanged {
    pub reply: Message,
    pub rtt: Duration,
}

/// Idle connected sockets per authority address. A socket goes back only
/// after an exchange that ended in a matching reply (no late datagram
/// expected), and is used for at most `max_uses` queries and `lifetime`,
/// the forwarder's rules (`[upstream] udp_socket_queries` and
/// `udp_socket_lifetime_ms`): an off-path attacker still has to guess port
/// and ID, as with a fresh socket, since the port of a socket connected to
/// one server is never seen by any other.
///
/// Why: a socket per query cost five system calls besides the send and the
/// receive (socket, bind, connect, two epoll_ctl, close), a third of a cold
/// miss's CPU in `perf` (benches/e2e/recursive.sh).
pub(super) struct Sockets {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    max_uses: u32,
    lifetime: Duration,
    /// Idle sockets kept in all; past it a returned socket is closed.
    max_idle: usize,
}

struct Idle {
    sock: UdpSocket,
    born: Instant,
    uses: u32,
}

/// Idle sockets kept per server.
const IDLE_PER_SERVER: usize = 8;

impl Sockets {
    pub fn new(max_uses: u32, lifetime: Duration, max_idle: usize) -> Self {
        Sockets { idle: Mutex::new(HashMap::new()), max_uses: max_uses.max(1), lifetime, max_idle }
    }

    /// A socket connected to `server`: an idle one still within its limits,
    /// else a new one on a random port.
    fn take(&self, server: SocketAddr, now: Instant) -> std::io::Result<Idle> {
        if let Ok(mut idle) = self.idle.lock() {
            if let Some(list) = idle.get_mut(&server) {
                while let Some(s) = list.pop() {
                    if now.saturating_duration_since(s.born) < self.lifetime {
                        return Ok(s);
                    }
                }
            }
        }
        Ok(Idle { sock: crate::sys::udp::connected(server)?, born: now, uses: 0 })
    }

    /// Gives a socket back after a clean exchange (closed instead when it
    /// is used up, too old, or the pool is full).
    fn give(&self, server: SocketAddr, s: Idle, now: Instant) {
        if s.uses >= self.max_uses || now.saturating_duration_since(s.born) >= self.lifetime {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        if idle.len() >= self.max_idle {
            // full of servers: forget the ones with no idle socket, then any
            idle.retain(|_, l| !l.is_empty());
            if idle.len() >= self.max_idle {
                return;
            }
        }
        let list = idle.entry(server).or_default();
        if list.len() < IDLE_PER_SERVER {
            list.push(s);
        }
    }
}

/// Asks `server` for `name`/`qtype` (class IN), DO set when `dnssec_ok`;
/// gives up after `timeout` (a TCP retry gets a timeout of its own).
///
/// Replies that do not match our ID and question are ignored, as are
/// datagrams from any other address (connected socket). Cost: a send and a
/// receive on a kept socket (a new socket when none is idle); the reply
/// decoded once by hickory.
pub(super) async fn ask(
    sockets: &Sockets,
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    dnssec_ok: bool,
    timeout: Duration,
) -> Result<Exchanged, ExchangeError> {
    let question = wq::question(name.iter(), u16::from(qtype), u16::from(DNSClass::IN));
    let id: u16 = rand::random();
    let packet = wq::iterative(&question, id, dnssec_ok);
    let started = Instant::now();
    let mut pooled = sockets.take(server, started)?;
    pooled.uses += 1;
    let sock = &pooled.sock;
    sock.send(&packet).await?;
    let mut buf = vec![0u8; usize::from(wq::UPSTREAM_PAYLOAD) + 1];
    let deadline = tokio::time::Instant::from(started + timeout);
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Err(ExchangeError::Timeout),
        };
        let Some(bytes) = buf.get(..n) else { continue };
        if !wq::answers(bytes, id, &question) {
            continue;
        }
        let truncated = bytes.get(2).is_some_and(|b| b & 0x02 != 0) || n > usize::from(wq::UPSTREAM_PAYLOAD);
        if truncated {
            let tcp_started = Instant::now();
            let reply = ask_tcp(server, &question, dnssec_ok, timeout).await?;
            return Ok(Exchanged { reply, rtt: tcp_started.elapsed() });
        }
        let reply = Message::from_vec(bytes).map_err(|_| ExchangeError::Malformed)?;
        let rtt = started.elapsed();
        sockets.give(server, pooled, started + rtt);
        return Ok(Exchanged { reply, rtt });
    }
}

/// The same question over TCP (RFC 7766), one query on a new connection.
async fn ask_tcp(server: SocketAddr, question: &[u8], dnssec_ok: bool, timeout: Duration) -> Result<Message, ExchangeError> {
    let id: u16 = rand::random();
    let packet = wq::iterative(question, id, dnssec_ok);
    let fut = async {
        let bytes = crate::resolve::tcp::exchange(server, &packet, |b| wq::answers(b, id, question)).await.map_err(|e| match e {
            crate::resolve::tcp::TcpError::TooLong => ExchangeError::TooLong,
            crate::resolve::tcp::TcpError::Io(e) => ExchangeError::Io(e),
        })?;
        Message::from_vec(&bytes).map_err(|_| ExchangeError::Malformed)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ExchangeError::Timeout),
    }
}
