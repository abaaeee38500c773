//! Attempts outside the pool: over TCP (a truncated reply), and over a
//! fresh UDP socket per query (`udp_sockets = 0`).

use std::net::SocketAddr;
use std::time::Instant;

use super::{matching_reply, AttemptError, CaseCheck, Forwarder, Question};
use crate::resolve::Reply;
use crate::wire::query as upstream;

pub(super) async fn query_server(
    fwd: &Forwarder,
    server: SocketAddr,
    q: &Question<'_>,
    case: CaseCheck,
    deadline: Instant,
) -> Result<Reply, AttemptError> {
    let id: u16 = rand::random();
    let packet = upstream::query(q.wire, id, q.checking_disabled, q.dnssec_ok);
    let sock = crate::sys::udp::connected(server)?;
    sock.send(&packet).await?;
    let mut buf = vec![0u8; 65535];
    let mut wrong_case = false;
    loop {
        let n = match tokio::time::timeout_at(deadline.into(), sock.recv(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Err(fwd.attempt_ran_out(server, wrong_case)),
        };
        let Some(bytes) = buf.get(..n) else { continue };
        let Some(reply) = matching_reply(bytes.to_vec(), id, q.wire, case, server).take(&mut wrong_case) else { continue };
        if reply.scan.truncated {
            return query_tcp(server, q, deadline).await;
        }
        return Ok(reply);
    }
}

pub(super) async fn query_tcp(server: SocketAddr, q: &Question<'_>, deadline: Instant) -> Result<Reply, AttemptError> {
    let id: u16 = rand::random();
    let packet = upstream::query(q.wire, id, q.checking_disabled, q.dnssec_ok);
    let fut = async {
        let bytes = crate::resolve::tcp::exchange(server, &packet, |b| upstream::answers(b, id, q.wire)).await.map_err(|e| match e {
            crate::resolve::tcp::TcpError::TooLong => AttemptError::QueryTooLong,
            crate::resolve::tcp::TcpError::Io(e) => AttemptError::Io(e),
        })?;
        Reply::accept(bytes).ok_or(AttemptError::Malformed)
    };
    match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(AttemptError::Timeout),
    }
}
