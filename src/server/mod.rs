//! Serving DNS: binds nothing itself; takes bound sockets, runs the UDP
//! fast path on each UDP socket ([`fast`], which hands what it does not
//! answer to [`slow`]), the TCP server on each listener ([`tcp`]) and the
//! encrypted listeners ([`encrypted`]: DoT, [`doh`], [`doq`]), until
//! cancelled, then drains. The query steps are [`handler`]'s.

pub mod acl;
pub mod ddr;
pub mod doh;
pub mod doq;
pub mod encrypted;
pub mod fast;
pub mod gate;
pub mod handler;
pub mod notify;
pub mod ratelimit;
pub mod respond;
pub mod tcp;
pub mod slow;
pub mod tls;

use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use handler::Handler;

/// The bound sockets to serve.
pub struct Listeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    /// DoT, DoH and DoQ, when configured.
    pub encrypted: Option<encrypted::Encrypted>,
}

/// Serves DNS on `listeners` until `stop` is cancelled, then stops
/// accepting and waits up to `drain` for open TCP connections. `ready`
/// runs once everything is listening.
pub async fn run(handler: Handler, listeners: Listeners, tcp_limits: tcp::TcpLimits, drain: Duration, stop: CancellationToken, ready: impl FnOnce()) {
    let shared = std::sync::Arc::clone(&handler.shared);
    let stop_serving = CancellationToken::new();
    if shared.max_udp_payload <= crate::sys::udp::DONT_FRAGMENT_MAX {
        for s in &listeners.udp {
            crate::sys::udp::dont_fragment(s);
        }
    }
    let mut fast_tasks = Vec::new();
    for s in listeners.udp {
        let sock = std::sync::Arc::new(s);
        fast_tasks.push(tokio::spawn(fast::run_async(sock, std::sync::Arc::clone(&shared), handler.clone(), stop_serving.clone())));
    }
    let mut tcp_tasks = Vec::new();
    for l in listeners.tcp {
        tcp_tasks.push(tokio::spawn(tcp::serve(l, handler.clone(), tcp_limits, stop_serving.clone())));
    }
    let encrypted_task = listeners.encrypted.map(|e| tokio::spawn(serve_encrypted(e, handler.clone(), drain, stop_serving.clone())));
    ready();
    stop.cancelled().await;
    tracing::info!("shutting down: draining in-flight queries");
    stop_serving.cancel();
    for t in fast_tasks {
        let _ = t.await;
    }
    let _ = tokio::time::timeout(drain, async {
        for t in tcp_tasks.into_iter().chain(encrypted_task) {
            let _ = t.await;
        }
    })
    .await;
}

/// Serves every encrypted listener until `stop`; returns once they have
/// stopped accepting and their connections are done (or `drain` passed).
async fn serve_encrypted(enc: encrypted::Encrypted, handler: Handler, drain: Duration, stop: CancellationToken) {
    let mut tasks = Vec::new();
    for l in enc.dot {
        tasks.push(tokio::spawn(encrypted::serve_dot(l, handler.clone(), std::sync::Arc::clone(&enc.ctx), stop.clone())));
    }
    for l in enc.doh {
        tasks.push(tokio::spawn(doh::serve(l, handler.clone(), std::sync::Arc::clone(&enc.ctx), stop.clone())));
    }
    for s in enc.doq {
        tasks.push(tokio::spawn(doq::serve(s, handler.clone(), std::sync::Arc::clone(&enc.ctx), drain, stop.clone())));
    }
    for t in tasks {
        let _ = t.await;
    }
}
