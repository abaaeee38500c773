//! One iterative query to one authority: over UDP from a fresh socket on a
//! random port, connected to the server (the kernel drops datagrams from
//! anyone else), with a random ID; over TCP when the reply is truncated.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Asks `server` for `name`/`qtype` (class IN), DO set when `dnssec_ok`;
/// gives up after `timeout` (a TCP retry gets a timeout of its own).
///
/// Replies that do not match our ID and question are ignored, as are
/// datagrams from any other address (connected socket). Cost: a socket,
/// a send and a receive; the reply decoded once by hickory.
pub(super) async fn ask(
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
    let sock = crate::sys::udp::connected(server)?;
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
        return Ok(Exchanged { reply, rtt: started.elapsed() });
    }
}

/// The same question over TCP (RFC 7766), one query on a new connection.
async fn ask_tcp(server: SocketAddr, question: &[u8], dnssec_ok: bool, timeout: Duration) -> Result<Message, ExchangeError> {
    let fut = async {
        let id: u16 = rand::random();
        let packet = wq::iterative(question, id, dnssec_ok);
        let len = u16::try_from(packet.len()).map_err(|_| ExchangeError::TooLong)?;
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
            if wq::answers(&buf, id, question) {
                return Message::from_vec(&buf).map_err(|_| ExchangeError::Malformed);
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ExchangeError::Timeout),
    }
}
