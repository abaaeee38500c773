//! Binds nothing itself: takes bound sockets, registers them with
//! `hickory_server::Server`, serves until cancelled, then drains.

pub mod acl;
pub mod fast;
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
#[allow(clippy::too_many_arguments)]
pub async fn run(
    handler: Handler,
    fast_path: bool,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    tcp_idle_timeout: Duration,
    drain: Duration,
    stop: CancellationToken,
    ready: impl FnOnce(),
) {
    let shared = std::sync::Arc::clone(&handler.shared);
    let fast_handler = handler.clone();
    let mut server = Server::new(handler);
    let stop_fast = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut fast_threads = Vec::new();
    if fast_path {
        for s in udp {
            match start_fast(s, &shared, &fast_handler, &stop_fast) {
                Ok(t) => fast_threads.push(t),
                Err(e) => tracing::error!(error = %e, "UDP fast path could not start on a socket"),
            }
        }
    } else {
        for s in udp {
            server.register_socket(s);
        }
    }
    for l in tcp {
        server.register_listener(l, tcp_idle_timeout, 65_535);
    }
    ready();
    stop.cancelled().await;
    tracing::info!("shutting down: draining in-flight queries");
    stop_fast.store(true, std::sync::atomic::Ordering::Relaxed);
    match tokio::time::timeout(drain, server.shutdown_gracefully()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "server stopped with an error"),
        Err(_) => tracing::warn!(?drain, "drain timed out; abandoning in-flight queries"),
    }
    for t in fast_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
}

/// Starts the fast-path thread on `sock`, and the task that answers the
/// datagrams it hands over through the hickory handler on the same socket.
fn start_fast(
    sock: UdpSocket,
    shared: &std::sync::Arc<handler::Shared>,
    handler: &Handler,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let std_sock = sock.into_std()?;
    std_sock.set_nonblocking(false)?;
    std_sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let reply_sock = std_sock.try_clone()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, std::net::SocketAddr)>(8192);
    let handler = handler.clone();
    let reply_sock = std::sync::Arc::new(reply_sock);
    tokio::spawn(async move {
        while let Some((bytes, src)) = rx.recv().await {
            let handler = handler.clone();
            let sock = std::sync::Arc::clone(&reply_sock);
            tokio::spawn(async move {
                if let Some(reply) = wire::handle_bytes(&handler, &bytes, src).await {
                    if let Err(e) = sock.send_to(&reply, src) {
                        tracing::debug!(error = %e, %src, "UDP send failed");
                    }
                }
            });
        }
    });
    let shared = std::sync::Arc::clone(shared);
    let stop = std::sync::Arc::clone(stop);
    std::thread::Builder::new().name("qalqan-udp".into()).spawn(move || fast::run(std_sock, shared, tx, stop))
}
