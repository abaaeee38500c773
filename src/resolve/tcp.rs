//! One DNS exchange over a new TCP connection (RFC 7766): the query framed
//! with its two-byte length, then framed messages read until one answers it.
//! Used by the forwarder and the iterator when a UDP reply came truncated.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a TCP exchange gave no reply.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("query longer than a TCP message")]
    TooLong,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Sends `packet` to `server` on a new connection and returns the first
/// message `answers` accepts (others are read past: a server may send
/// stale ones). No timeout of its own: the caller wraps it in one.
/// Cost: a connection set-up, one write, one read and allocation per message.
pub async fn exchange(server: SocketAddr, packet: &[u8], answers: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, TcpError> {
    let len = u16::try_from(packet.len()).map_err(|_| TcpError::TooLong)?;
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    loop {
        let mut lenb = [0u8; 2];
        stream.read_exact(&mut lenb).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lenb))];
        stream.read_exact(&mut buf).await?;
        if answers(&buf) {
            return Ok(buf);
        }
    }
}
