//! DNS over TCP (RFC 7766) with connection caps: at most
//! `max_tcp_connections` at once and `max_tcp_per_client` per client
//! address; a connection over either cap is closed at once (and counted).
//! Each connection reads length-prefixed messages with an idle timeout and
//! answers them in order through the same handler as UDP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::Handler;

/// TCP limits (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub idle: Duration,
    pub max_total: usize,
    pub max_per_client: usize,
}

/// Serves `listener` until `stop`; then waits for open connections to finish
/// the message they are on (they stop reading at once).
pub async fn serve(listener: TcpListener, handler: Handler, limits: TcpLimits, stop: CancellationToken) {
    let total = Arc::new(Semaphore::new(limits.max_total.max(1)));
    let per_client: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::new(Mutex::new(HashMap::new()));
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
        let Ok(permit) = Arc::clone(&total).try_acquire_owned() else {
            handler.shared.metrics.tcp_refused.inc();
            tracing::debug!(%peer, "TCP connection refused: max_tcp_connections reached");
            continue; // dropping `stream` closes it
        };
        {
            let mut m = per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = m.entry(peer.ip()).or_insert(0);
            if *n >= limits.max_per_client {
                handler.shared.metrics.tcp_refused.inc();
                tracing::debug!(%peer, "TCP connection refused: max_tcp_per_client reached");
                continue;
            }
            *n += 1;
        }
        let (handler, per_client, stop) = (handler.clone(), Arc::clone(&per_client), stop.clone());
        tracker.spawn(async move {
            let _permit = permit;
            connection(stream, peer, &handler, limits.idle, stop).await;
            let mut m = per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = m.get_mut(&peer.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&peer.ip());
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, handler: &Handler, idle: Duration, stop: CancellationToken) {
    let _ = stream.set_nodelay(true);
    loop {
        let mut len = [0u8; 2];
        let read = tokio::select! {
            _ = stop.cancelled() => return,
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
        let Some(reply) = super::wire::handle_bytes_on(handler, &msg, peer, false).await else { continue };
        let Ok(rlen) = u16::try_from(reply.len()) else { return };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&rlen.to_be_bytes());
        out.extend_from_slice(&reply);
        if tokio::time::timeout(idle, stream.write_all(&out)).await.map_or(true, |r| r.is_err()) {
            return;
        }
    }
}
