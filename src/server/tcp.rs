//! DNS over TCP (RFC 7766) with connection caps, checked at accept: a
//! client outside `allow_clients` is closed at once (it never holds a
//! slot); at most `max_tcp_connections` at once and `max_tcp_per_client`
//! per client prefix (/24 for IPv4, /56 for IPv6: one subscriber's
//! addresses share a budget); a connection over either cap is closed at once
//! (and counted). When fewer than a tenth of the slots are free, connections
//! waiting idle for their next query are closed first (RFC 7766 §6.2.3).
//! Each connection reads length-prefixed messages with an idle timeout,
//! answers them in order through the same handler as UDP, and is closed
//! after `tcp_max_queries` queries or `tcp_max_lifetime_ms`. The same
//! framing loop serves DoT ([`super::encrypted`]), pipelined, with blocked
//! names and cache hits answered in the loop by the fast path
//! ([`super::fast::answer_stream`]); replies ready together are written
//! together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use super::fast::Stream;
use super::gate::{Gate, Refusal};
use super::handler::Handler;
use crate::metrics::Transport;

pub use super::gate::client_prefix;

/// TCP limits (`[server]`); the encrypted listeners have their own values.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub idle: Duration,
    pub max_total: usize,
    /// Per client prefix ([`client_prefix`]).
    pub max_per_client: usize,
    /// A connection is closed this long after it opened.
    pub lifetime: Duration,
    /// A connection is closed after this many queries.
    pub max_queries: u32,
    /// Queries of one connection answered at once (1: one after the other).
    pub pipeline: usize,
}

/// Serves `listener` until `stop`; then waits for open connections to finish
/// the message they are on (they stop reading at once).
pub async fn serve(listener: TcpListener, handler: Handler, limits: TcpLimits, stop: CancellationToken) {
    let gate = Gate::new(limits.max_total, limits.max_per_client);
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if !handler.shared.acl.allows(peer.ip()) {
            handler.shared.metrics.tcp_refused.inc();
            tracing::debug!(%peer, "TCP connection refused: client not in allow_clients");
            continue; // dropping `stream` closes it
        }
        let slot = match gate.admit(peer.ip()) {
            Ok(s) => s,
            Err(r) => {
                handler.shared.metrics.tcp_refused.inc();
                let why = match r {
                    Refusal::Total => "max_tcp_connections reached",
                    Refusal::PerClient => "max_tcp_per_client reached for its prefix",
                };
                tracing::debug!(%peer, why, "TCP connection refused");
                continue;
            }
        };
        let (handler, stop, gate) = (handler.clone(), stop.clone(), Arc::clone(&gate));
        tracker.spawn(async move {
            let _slot = slot;
            let open = &handler.shared.metrics.tcp_open;
            open.inc();
            let _ = stream.set_nodelay(true);
            let deadline = tokio::time::Instant::now() + limits.lifetime;
            tokio::select! {
                _ = connection(stream, peer, &handler, Transport::Tcp, limits, &gate.pressure, stop) => {}
                _ = tokio::time::sleep_until(deadline) => tracing::debug!(%peer, "TCP connection closed: tcp_max_lifetime_ms"),
            }
            open.dec();
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Serves length-prefixed DNS messages (RFC 7766 framing) on `stream`: TCP,
/// and DoT over the TLS stream. Up to `limits.pipeline` queries are answered
/// at once, replies written as they are ready (RFC 7766 §6.2.1.1 allows any
/// order; with 1, in order). A query must arrive whole within `limits.idle`
/// of the previous query or reply (a slowloris is cut); a connection with
/// nothing in flight closes after `limits.idle`, or at once when slots run
/// low. On `stop` it reads no more and writes the replies in flight.
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    handler: &Handler,
    transport: Transport,
    limits: TcpLimits,
    pressure: &Notify,
    stop: CancellationToken,
) {
    let idle = limits.idle;
    let pipeline = limits.pipeline.max(1);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    // replies ready to write, each with its length prefix: written (and,
    // on TLS, sealed) together, one flush for all of them
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut inflight: JoinSet<Option<Vec<u8>>> = JoinSet::new();
    let mut queries = 0u32;
    let mut done_reading = false;
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        // every whole message in the buffer: over an encrypted transport
        // blocked names and cache hits answered here from the bytes (the
        // fast path), the rest to the handler, up to the pipeline
        let mut pos = 0;
        while inflight.len() < pipeline && queries < limits.max_queries {
            let Some(len) = crate::wire::u16_at(&buf, pos).map(usize::from) else { break };
            let Some(msg) = buf.get(pos + 2..pos + 2 + len) else { break };
            pos += 2 + len;
            queries += 1;
            deadline = tokio::time::Instant::now() + idle;
            let rate_checked = if transport.encrypted() {
                match super::fast::answer_stream(&handler.shared, msg, peer, transport) {
                    Stream::Reply(reply) => {
                        frame(&mut out, &reply);
                        continue;
                    }
                    Stream::Drop => continue,
                    Stream::Slow { rate_checked } => rate_checked,
                }
            } else {
                false
            };
            let (h, msg) = (handler.clone(), msg.to_vec());
            inflight.spawn(async move { super::slow::handle_bytes_checked(&h, &msg, peer, transport, super::handler::Prechecked { rate: rate_checked, shadow: false }).await });
        }
        buf.drain(..pos);
        if !out.is_empty() {
            if !write_out(&mut stream, &mut out, idle).await {
                return;
            }
            deadline = tokio::time::Instant::now() + idle;
        }
        if queries >= limits.max_queries {
            done_reading = true;
        }
        if inflight.is_empty() && done_reading {
            return;
        }
        let reading = !done_reading && inflight.len() < pipeline;
        tokio::select! {
            _ = stop.cancelled(), if !done_reading => done_reading = true,
            // idle between queries while slots run low: make room
            _ = pressure.notified(), if inflight.is_empty() && buf.is_empty() => {
                tracing::debug!(%peer, protocol = transport.label(), "idle connection closed: slots running low");
                return;
            }
            // idle, or a query not whole in time
            _ = tokio::time::sleep_until(deadline), if inflight.is_empty() => return,
            r = stream.read_buf(&mut buf), if reading => {
                if !matches!(r, Ok(n) if n > 0) {
                    done_reading = true; // EOF or error: answer what is in flight
                }
            }
            Some(joined) = inflight.join_next() => {
                // this reply and any others already done (no reply: a drop decision)
                if let Ok(Some(reply)) = joined {
                    frame(&mut out, &reply);
                }
                while let Some(joined) = inflight.try_join_next() {
                    if let Ok(Some(reply)) = joined {
                        frame(&mut out, &reply);
                    }
                }
                if !out.is_empty() {
                    if !write_out(&mut stream, &mut out, idle).await {
                        return;
                    }
                    deadline = tokio::time::Instant::now() + idle;
                }
            }
        }
    }
}

/// Appends `reply` with its 2-byte length prefix to `out` (a reply over
/// 65535 bytes cannot be framed and is left out).
fn frame(out: &mut Vec<u8>, reply: &[u8]) {
    let Ok(len) = u16::try_from(reply.len()) else { return };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(reply);
}

/// Writes and flushes `out` within `idle` (a TLS stream holds what it was
/// given until flushed; a no-op on TCP), then empties it. `false`: the
/// connection is done (an error, or the client does not read).
async fn write_out<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>, idle: Duration) -> bool {
    let sent = tokio::time::timeout(idle, async {
        stream.write_all(out).await?;
        stream.flush().await
    });
    let ok = sent.await.is_ok_and(|r| r.is_ok());
    out.clear();
    ok
}
