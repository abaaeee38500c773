//! Binds nothing itself: takes bound sockets, registers them with
//! `hickory_server::Server`, serves until cancelled, then drains.

pub mod acl;
pub mod fast;
pub mod handler;
pub mod notify;
pub mod ratelimit;
pub mod respond;
pub mod tcp;
pub mod wire;

use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use handler::Handler;

/// Serves DNS on the given sockets until `stop` is cancelled, then stops
/// accepting and waits up to `drain` for in-flight queries.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    handler: Handler,
    fast_path: bool,
    tcp_limits: tcp::TcpLimits,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    drain: Duration,
    stop: CancellationToken,
    ready: impl FnOnce(),
) {
    let shared = std::sync::Arc::clone(&handler.shared);
    let fast_handler = handler.clone();
    let mut server = Server::new(handler);
    let stop_fast = tokio_util::sync::CancellationToken::new();
    let mut fast_tasks = Vec::new();
    if shared.max_udp_payload <= crate::outbox::DONT_FRAGMENT_MAX {
        for s in &udp {
            crate::outbox::dont_fragment(s);
        }
    }
    if fast_path {
        for s in udp {
            let sock = std::sync::Arc::new(s);
            fast_tasks.push(tokio::spawn(fast::run_async(
                sock,
                std::sync::Arc::clone(&shared),
                fast_handler.clone(),
                stop_fast.clone(),
            )));
        }
    } else {
        for s in udp {
            server.register_socket(s);
        }
    }
    let mut tcp_tasks = Vec::new();
    for l in tcp {
        tcp_tasks.push(tokio::spawn(tcp::serve(l, fast_handler.clone(), tcp_limits, stop_fast.clone())));
    }
    ready();
    stop.cancelled().await;
    tracing::info!("shutting down: draining in-flight queries");
    stop_fast.cancel();
    if !fast_path {
        match tokio::time::timeout(drain, server.shutdown_gracefully()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "server stopped with an error"),
            Err(_) => tracing::warn!(?drain, "drain timed out; abandoning in-flight queries"),
        }
    }
    for t in fast_tasks {
        let _ = t.await;
    }
    let _ = tokio::time::timeout(drain, async {
        for t in tcp_tasks {
            let _ = t.await;
        }
    })
    .await;
}
