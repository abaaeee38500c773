//! The SOA serial check of a refresh: one SOA query to the primary over
//! UDP, retried over TCP when the answer is truncated or does not come,
//! signed and verified like a transfer when the list has a TSIG key.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::{TcpStream, UdpSocket};

use super::message::{check_reply, decode, fqdn, new_query, read_framed, write_framed, Reply};
use super::tsig::{encode_request, now_secs, TsigKey, TsigVerifier};
use super::{malformed, AxfrError};

/// SOA serial of `zone` at `primary` (UDP query with TCP fallback; TSIG if given), for refresh checks.
///
/// Falls back to TCP when the UDP answer is truncated, or when no UDP
/// answer came within half of `timeout` or the UDP exchange failed.
pub async fn soa_serial(
    primary: SocketAddr,
    zone: &Name,
    tsig: Option<&TsigKey>,
    timeout: Duration,
) -> Result<u32, AxfrError> {
    match tokio::time::timeout(timeout, soa_inner(primary, zone, tsig, timeout)).await {
        Ok(result) => result,
        Err(_) => Err(AxfrError::Timeout),
    }
}

async fn soa_inner(
    primary: SocketAddr,
    zone: &Name,
    tsig: Option<&TsigKey>,
    timeout: Duration,
) -> Result<u32, AxfrError> {
    let zone = fqdn(zone);
    let request = new_query(&zone, RecordType::SOA);
    let id = request.metadata.id;
    let (wire, verifier) = encode_request(request, tsig)?;

    if let Ok(Ok(buf)) = tokio::time::timeout(timeout / 2, udp_exchange(primary, &wire, id)).await {
        let reply = decode(&buf)?;
        if !reply.header.metadata.truncation {
            return soa_from_reply(&buf, reply, id, &zone, verifier);
        }
        tracing::debug!(%zone, %primary, "SOA answer truncated over UDP, retrying over TCP");
    }
    let mut stream = TcpStream::connect(primary).await?;
    stream.set_nodelay(true)?;
    write_framed(&mut stream, &wire).await?;
    let mut bytes = 0;
    let buf = read_framed(&mut stream, &mut bytes, usize::from(u16::MAX) + 2).await?;
    let reply = decode(&buf)?;
    soa_from_reply(&buf, reply, id, &zone, verifier)
}

fn soa_from_reply(
    buf: &[u8],
    reply: Reply,
    id: u16,
    zone: &Name,
    mut verifier: Option<TsigVerifier<'_>>,
) -> Result<u32, AxfrError> {
    check_reply(&reply, id, zone, RecordType::SOA)?;
    if reply.header.metadata.truncation {
        return Err(malformed("truncated answer over TCP"));
    }
    if let Some(v) = verifier.as_mut() {
        v.check(buf, &reply, now_secs())?;
        v.finish()?;
    }
    reply
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) if r.name == *zone => Some(soa.serial),
            _ => None,
        })
        .ok_or_else(|| AxfrError::Malformed(format!("no SOA for {zone} in the answer")))
}

async fn udp_exchange(primary: SocketAddr, wire: &[u8], id: u16) -> Result<Vec<u8>, AxfrError> {
    let local: SocketAddr = if primary.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(primary).await?;
    socket.send(wire).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let n = socket.recv(&mut buf).await?;
        let Some(datagram) = buf.get(..n) else { continue };
        // A datagram with another ID is a late answer to something else: ignore it.
        if datagram.get(..2) == Some(&id.to_be_bytes()[..]) {
            return Ok(datagram.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use hickory_proto::op::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn soa_serial_over_udp_and_tcp_fallback() {
        // UDP answers with TC; the TCP fallback gives the serial.
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            let req = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(req.queries[0].query_type(), RecordType::SOA);
            let mut m = response(&req, vec![]);
            m.metadata.truncation = true;
            udp.send_to(&wire(&m), peer).await.unwrap();
            let (mut s, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.unwrap();
            let req = Message::from_vec(&buf).unwrap();
            let w = wire(&response(&req, vec![soa(42)]));
            let mut framed = u16::try_from(w.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&w);
            s.write_all(&framed).await.unwrap();
        });
        assert_eq!(
            soa_serial(addr, &zone(), None, Duration::from_secs(5)).await.unwrap(),
            42
        );
    }
}
