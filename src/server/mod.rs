//! Binds nothing itself: takes bound sockets, registers them with
//! `hickory_server::Server`, serves until cancelled, then drains.

pub mod acl;
pub mod handler;
pub mod ratelimit;
pub mod respond;
pub mod wire;

use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use handler::Handler;

/// Serves DNS on the given sockets until `stop` is cancelled, then stops
/// accepting and waits up to `drain` for in-flight queries.
pub async fn run(
    handler: Handler,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    tcp_idle_timeout: Duration,
    drain: Duration,
    stop: CancellationToken,
    ready: impl FnOnce(),
) {
    let mut server = Server::new(handler);
    for s in udp {
        server.register_socket(s);
    }
    for l in tcp {
        server.register_listener(l, tcp_idle_timeout, 65_535);
    }
    ready();
    stop.cancelled().await;
    tracing::info!("shutting down: draining in-flight queries");
    match tokio::time::timeout(drain, server.shutdown_gracefully()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "server stopped with an error"),
        Err(_) => tracing::warn!(?drain, "drain timed out; abandoning in-flight queries"),
    }
}
