//! DNS over QUIC (RFC 9250) with quinn: ALPN `doq`, one query per
//! client-initiated bidirectional stream, each message with a 2-byte length
//! prefix; the client ends its side after the query, we end ours after the
//! reply. A client outside `allow_clients`, or over the connection caps, is
//! refused at its first packet (before the handshake). At most
//! `tls_max_streams` streams at once per connection (QUIC flow control, no
//! unidirectional streams); a query must arrive whole within the idle
//! timeout, and a connection with no query for that long is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Endpoint, EndpointConfig, ServerConfig, TokioRuntime, TransportConfig, VarInt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::encrypted::{Activity, Context};
use super::handler::Handler;
use crate::metrics::Transport;

/// RFC 9250 §4.3: DOQ_NO_ERROR, DOQ_PROTOCOL_ERROR.
const DOQ_NO_ERROR: u32 = 0;
const DOQ_PROTOCOL_ERROR: u32 = 2;

/// The quinn server config for `ctx`.
fn server_config(ctx: &Context) -> ServerConfig {
    let mut transport = TransportConfig::default();
    transport.max_concurrent_bidi_streams(VarInt::from_u32(ctx.limits.max_streams));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    // quinn's idle timeout (no packets at all) backs ours (no query)
    transport.max_idle_timeout(ctx.limits.idle_timeout.try_into().ok());
    let mut c = ServerConfig::with_crypto(Arc::clone(&ctx.doq) as Arc<dyn quinn::crypto::ServerConfig>);
    c.transport_config(Arc::new(transport));
    c
}

/// Serves DoQ on `socket` until `stop`; then closes the connections and
/// waits up to `drain` for the endpoint to go quiet.
pub async fn serve(socket: std::net::UdpSocket, handler: Handler, ctx: Arc<Context>, drain: Duration, stop: CancellationToken) {
    let endpoint = match socket
        .set_nonblocking(true)
        .and_then(|()| Endpoint::new(EndpointConfig::default(), Some(server_config(&ctx)), socket, Arc::new(TokioRuntime)))
    {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "DoQ listener not started");
            return;
        }
    };
    let tracker = TaskTracker::new();
    let open = handler.shared.metrics.encrypted_open(Transport::Doq);
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let peer = incoming.remote_address();
        let Some(slot) = ctx.admit(&handler, peer, Transport::Doq) else {
            incoming.refuse();
            continue;
        };
        let (handler, ctx, stop, open) = (handler.clone(), Arc::clone(&ctx), stop.clone(), open.clone());
        tracker.spawn(async move {
            let _slot = slot;
            open.inc();
            let deadline = tokio::time::Instant::now() + ctx.limits.max_lifetime;
            tokio::select! {
                _ = connection(incoming, peer, &handler, &ctx, stop) => {}
                _ = tokio::time::sleep_until(deadline) => tracing::debug!(%peer, "DoQ connection closed: tls_max_lifetime_ms"),
            }
            open.dec();
        });
    }
    endpoint.close(VarInt::from_u32(DOQ_NO_ERROR), b"");
    tracker.close();
    let _ = tokio::time::timeout(drain, async {
        tracker.wait().await;
        endpoint.wait_idle().await;
    })
    .await;
}

async fn connection(incoming: quinn::Incoming, peer: SocketAddr, handler: &Handler, ctx: &Context, stop: CancellationToken) {
    let m = &handler.shared.metrics;
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            m.encrypted_refused(Transport::Doq, "handshake");
            tracing::debug!(%peer, error = %e, "DoQ connection not accepted");
            return;
        }
    };
    let conn = match tokio::time::timeout(ctx.limits.handshake_timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            m.encrypted_refused(Transport::Doq, "handshake");
            tracing::debug!(%peer, error = %e, "DoQ handshake failed");
            return;
        }
        Err(_) => {
            m.encrypted_refused(Transport::Doq, "handshake");
            tracing::debug!(%peer, "DoQ handshake timed out");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let streams = TaskTracker::new();
    loop {
        let (send, recv) = tokio::select! {
            _ = stop.cancelled() => break,
            _ = activity.idle(ctx.limits.idle_timeout) => {
                tracing::debug!(%peer, "DoQ connection closed: idle");
                break;
            }
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => break, // closed by the peer, or timed out
            },
        };
        let busy = activity.begin();
        let (handler, conn2) = (handler.clone(), conn.clone());
        let (idle, max) = (ctx.limits.idle_timeout, ctx.limits.doh_max_body);
        streams.spawn(async move {
            let _busy = busy;
            if let Err(why) = stream(send, recv, peer, &handler, idle, max).await {
                tracing::debug!(%peer, why, "DoQ stream failed: closing the connection");
                conn2.close(VarInt::from_u32(DOQ_PROTOCOL_ERROR), why.as_bytes());
            }
        });
    }
    streams.close();
    let _ = tokio::time::timeout(ctx.limits.idle_timeout, streams.wait()).await;
    conn.close(VarInt::from_u32(DOQ_NO_ERROR), b"");
}

/// One query and its reply. `Err` = a protocol error (RFC 9250 §4.3.3:
/// the connection is closed with DOQ_PROTOCOL_ERROR).
async fn stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: SocketAddr,
    handler: &Handler,
    idle: Duration,
    max: usize,
) -> Result<(), &'static str> {
    // the query and its prefix, up to the client's FIN, within the idle timeout
    let data = match tokio::time::timeout(idle, recv.read_to_end(max.saturating_add(2))).await {
        Ok(Ok(d)) => d,
        Ok(Err(quinn::ReadToEndError::TooLong)) => return Err("query too long"),
        Ok(Err(_)) => return Ok(()), // reset by the client
        Err(_) => {
            let _ = recv.stop(VarInt::from_u32(DOQ_NO_ERROR));
            let _ = send.reset(VarInt::from_u32(DOQ_NO_ERROR));
            return Ok(()); // slow: this stream only
        }
    };
    let Some(len) = crate::wire::u16_at(&data, 0) else { return Err("no length prefix") };
    let Some(msg) = data.get(2..).filter(|m| m.len() == usize::from(len)) else { return Err("length prefix does not match the stream") };
    let Some(reply) = super::encrypted::answer(handler, msg, peer, Transport::Doq).await else {
        let _ = send.reset(VarInt::from_u32(DOQ_NO_ERROR));
        return Ok(());
    };
    let Ok(rlen) = u16::try_from(reply.len()) else { return Ok(()) };
    let mut out = Vec::with_capacity(reply.len() + 2);
    out.extend_from_slice(&rlen.to_be_bytes());
    out.extend_from_slice(&reply);
    if tokio::time::timeout(idle, send.write_all(&out)).await.is_ok() {
        let _ = send.finish();
    }
    Ok(())
}
