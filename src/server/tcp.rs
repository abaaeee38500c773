//! DNS over TCP (RFC 7766) with connection caps, checked at accept: a
//! client outside `allow_clients` is closed at once (it never holds a
//! slot); at most `max_tcp_connections` at once and `max_tcp_per_client`
//! per client prefix (/24 for IPv4, /56 for IPv6: one subscriber's
//! addresses share a budget); a connection over either cap is closed at once
//! (and counted). When fewer than a tenth of the slots are free, connections
//! waiting idle for their next query are closed first (RFC 7766 §6.2.3).
//! Each connection reads length-prefixed messages with an idle timeout,
//! answers them in order through the same handler as UDP, and is closed
//! after `tcp_max_queries` queries or `tcp_max_lifetime_ms`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::Handler;

/// TCP limits (`[server]`).
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
}

/// The budget a client address counts against: its /24 (IPv4, or an
/// IPv4-mapped IPv6 address) or its /56 (IPv6, a subscriber's delegation).
pub fn client_prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => client_prefix(IpAddr::V4(v4)),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & !((1u128 << 72) - 1))),
        },
    }
}

/// Serves `listener` until `stop`; then waits for open connections to finish
/// the message they are on (they stop reading at once).
pub async fn serve(listener: TcpListener, handler: Handler, limits: TcpLimits, stop: CancellationToken) {
    let max_total = limits.max_total.max(1);
    let total = Arc::new(Semaphore::new(max_total));
    let per_client: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    // signalled when slots run low: idle connections close
    let pressure = Arc::new(Notify::new());
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
        let permit = Arc::clone(&total).try_acquire_owned();
        if total.available_permits() < max_total.div_ceil(10) {
            pressure.notify_waiters();
        }
        let Ok(permit) = permit else {
            handler.shared.metrics.tcp_refused.inc();
            tracing::debug!(%peer, "TCP connection refused: max_tcp_connections reached");
            continue;
        };
        let prefix = client_prefix(peer.ip());
        {
            let mut m = per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = m.entry(prefix).or_insert(0);
            if *n >= limits.max_per_client {
                handler.shared.metrics.tcp_refused.inc();
                tracing::debug!(%peer, "TCP connection refused: max_tcp_per_client reached for its prefix");
                continue;
            }
            *n += 1;
        }
        let (handler, per_client, stop, pressure) = (handler.clone(), Arc::clone(&per_client), stop.clone(), Arc::clone(&pressure));
        tracker.spawn(async move {
            let _permit = permit;
            let open = &handler.shared.metrics.tcp_open;
            open.inc();
            let deadline = tokio::time::Instant::now() + limits.lifetime;
            tokio::select! {
                _ = connection(stream, peer, &handler, limits, &pressure, stop) => {}
                _ = tokio::time::sleep_until(deadline) => tracing::debug!(%peer, "TCP connection closed: tcp_max_lifetime_ms"),
            }
            open.dec();
            let mut m = per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = m.get_mut(&prefix) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&prefix);
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    limits: TcpLimits,
    pressure: &Notify,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let idle = limits.idle;
    for _ in 0..limits.max_queries {
        let mut len = [0u8; 2];
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            // idle between queries while slots run low: make room
            _ = pressure.notified() => {
                tracing::debug!(%peer, "idle TCP connection closed: slots running low");
                return;
            }
            r = tokio::time::timeout(idle, stream.read_exact(&mut len)) => r,
        };
        match read {
            Ok(Ok(_)) => {}
            _ => return, // idle timeout, EOF or error
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(idle, stream.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = super::slow::handle_bytes_on(handler, &msg, peer, false).await else { continue };
        let Ok(rlen) = u16::try_from(reply.len()) else { return };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&rlen.to_be_bytes());
        out.extend_from_slice(&reply);
        if tokio::time::timeout(idle, stream.write_all(&out)).await.map_or(true, |r| r.is_err()) {
            return;
        }
    }
}
