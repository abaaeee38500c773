//! Encrypted DNS for subscribers: DNS over TLS (RFC 7858, here), DNS over
//! HTTPS (RFC 8484, [`super::doh`]) and DNS over QUIC (RFC 9250,
//! [`super::doq`]). Every query takes the same steps as over UDP and TCP
//! ([`answer`]: blocked names and cache hits answered from the bytes by the
//! fast path, the rest by the handler; ACL, policy, cache, forwarder, EDE),
//! counted under its own `protocol` label, its reply padded (RFC 8467).
//!
//! Our own accept loops rather than hickory-server's TLS/HTTPS/QUIC
//! listeners: those admit every connection (no per-prefix or total cap, the
//! ACL only after the first query is parsed), and hickory 0.26's DoH serves
//! neither GET nor HTTP/1.1. Here, as on TCP ([`super::tcp`]), a client
//! outside `allow_clients` is closed at accept, before any handshake; one
//! [`Gate`] caps the connections of all encrypted listeners together and per
//! client prefix; a handshake has `tls_handshake_timeout_ms`; up to
//! `tls_max_streams` queries of one connection are answered at once (DoT
//! pipelining, HTTP/2 and QUIC streams); a connection
//! with no query for `tls_idle_timeout_ms` is closed (a query, or an HTTP
//! request, must also arrive whole within it: slowloris); a connection
//! lives at most `tls_max_lifetime_ms`. One [`CertStore`] serves every
//! listener and is swapped on reload without touching open connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fast::Stream;
use super::gate::{Gate, Refusal, Slot};
use super::handler::Handler;
use super::tls::{CertStore, TlsError};
use crate::config::EncryptedLimits;
use crate::metrics::Transport;

/// ALPN of DoT (RFC 7858 §3.2 via the IANA registry).
pub const ALPN_DOT: &[u8] = b"dot";
/// ALPN of DoQ (RFC 9250 §4.1.1).
pub const ALPN_DOQ: &[u8] = b"doq";

/// Why the encrypted listeners could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EncryptedError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("QUIC: TLS 1.3 configuration without an initial cipher suite")]
    Quic,
}

/// The bound encrypted listeners with what they serve.
pub struct Encrypted {
    pub dot: Vec<TcpListener>,
    pub doh: Vec<TcpListener>,
    pub doq: Vec<std::net::UdpSocket>,
    pub ctx: Arc<Context>,
}

/// What every encrypted connection shares.
pub struct Context {
    pub limits: EncryptedLimits,
    pub gate: Arc<Gate>,
    pub dot: TlsAcceptor,
    pub doh: TlsAcceptor,
    pub doq: Arc<quinn::crypto::rustls::QuicServerConfig>,
}

impl Context {
    /// TLS configurations over `certs` for each protocol.
    pub fn new(certs: &Arc<CertStore>, limits: EncryptedLimits) -> Result<Arc<Self>, EncryptedError> {
        let dot = super::tls::server_config(certs, &[ALPN_DOT], false)?;
        let doh = super::tls::server_config(certs, &[b"h2", b"http/1.1"], false)?;
        let doq = super::tls::server_config(certs, &[ALPN_DOQ], true)?;
        let doq = quinn::crypto::rustls::QuicServerConfig::try_from(doq).map_err(|_| EncryptedError::Quic)?;
        Ok(Arc::new(Self {
            limits,
            gate: Gate::new(limits.max_connections, limits.max_per_client),
            dot: TlsAcceptor::from(Arc::new(dot)),
            doh: TlsAcceptor::from(Arc::new(doh)),
            doq: Arc::new(doq),
        }))
    }

    /// The accept-time checks: the ACL, then a place in the gate. `None`:
    /// close the connection now (counted, logged at debug).
    pub fn admit(&self, handler: &Handler, peer: SocketAddr, t: Transport) -> Option<Slot> {
        let m = &handler.shared.metrics;
        if !handler.shared.acl.allows(peer.ip()) {
            m.encrypted_refused(t, "acl");
            tracing::debug!(%peer, protocol = t.label(), "encrypted connection refused: client not in allow_clients");
            return None;
        }
        match self.gate.admit(peer.ip()) {
            Ok(s) => Some(s),
            Err(r) => {
                m.encrypted_refused(t, "limit");
                let why = match r {
                    Refusal::Total => "max_tls_connections reached",
                    Refusal::PerClient => "max_tls_per_client reached for its prefix",
                };
                tracing::debug!(%peer, protocol = t.label(), why, "encrypted connection refused");
                None
            }
        }
    }

    /// The TCP framing limits of a DoT connection.
    fn dot_limits(&self) -> super::tcp::TcpLimits {
        super::tcp::TcpLimits {
            idle: self.limits.idle_timeout,
            max_total: self.limits.max_connections,
            max_per_client: self.limits.max_per_client,
            lifetime: self.limits.max_lifetime,
            // the lifetime bounds a connection; no cap on its query count
            max_queries: u32::MAX,
            // RFC 7858 §3.3: queries pipelined, answered out of order
            pipeline: usize::try_from(self.limits.max_streams).unwrap_or(usize::MAX),
        }
    }
}

/// One query over an encrypted transport: the fast path's reply when it
/// has one ([`super::fast::answer_stream`]: blocked names and cache hits,
/// from the bytes), else the hickory path's. Padded either way (RFC 8467);
/// `None`: no reply (a `drop` decision, or not a query).
pub async fn answer(handler: &Handler, msg: &[u8], peer: SocketAddr, t: Transport) -> Option<Vec<u8>> {
    match super::fast::answer_stream(&handler.shared, msg, peer, t) {
        Stream::Reply(r) => Some(r),
        Stream::Drop => None,
        Stream::Slow { rate_checked } => {
            super::slow::handle_bytes_checked(handler, msg, peer, t, super::handler::Prechecked { rate: rate_checked, shadow: false }).await
        }
    }
}

/// Accepts TCP connections for DoT until `stop`, then waits for the open
/// ones (which stop reading at once).
pub(super) async fn serve_dot(listener: TcpListener, handler: Handler, ctx: Arc<Context>, stop: CancellationToken) {
    serve_tcp(listener, handler, ctx, stop, Transport::Dot, |stream, peer, handler, ctx, stop| async move {
        let Some(tls) = handshake(&ctx.dot, stream, &ctx, &handler, peer, Transport::Dot).await else { return };
        super::tcp::connection(tls, peer, &handler, Transport::Dot, ctx.dot_limits(), &ctx.gate.pressure, stop).await;
    })
    .await
}

/// The accept loop of a TCP-based encrypted listener (DoT, DoH): each
/// connection admitted by the gate (ACL, caps) runs `serve` as a task of
/// its own, counted in `qalqan_encrypted_connections_open`, and is cut at
/// `tls_max_lifetime_ms`; after `stop`, waits for the open ones.
pub(super) async fn serve_tcp<F, Fut>(
    listener: TcpListener,
    handler: Handler,
    ctx: Arc<Context>,
    stop: CancellationToken,
    t: Transport,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream, SocketAddr, Handler, Arc<Context>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let open = handler.shared.metrics.encrypted_open(t);
    loop {
        let Some((stream, peer)) = accept(&listener, &stop).await else { break };
        let Some(slot) = ctx.admit(&handler, peer, t) else { continue };
        let _ = stream.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + ctx.limits.max_lifetime;
        let conn = serve(stream, peer, handler.clone(), Arc::clone(&ctx), stop.clone());
        let open = open.clone();
        tracker.spawn(async move {
            let _slot = slot;
            open.inc();
            tokio::select! {
                _ = conn => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(%peer, protocol = t.label(), "connection closed: tls_max_lifetime_ms")
                }
            }
            open.dec();
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// The next connection, or `None` once `stop` is cancelled. Accept errors
/// (out of descriptors) back off briefly.
async fn accept(listener: &TcpListener, stop: &CancellationToken) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            a = listener.accept() => match a {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
}

/// The TLS handshake within `tls_handshake_timeout_ms`; `None` (counted)
/// when it failed or took too long.
pub(super) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: tokio::net::TcpStream,
    ctx: &Context,
    handler: &Handler,
    peer: SocketAddr,
    t: Transport,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(ctx.limits.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            handler.shared.metrics.encrypted_refused(t, "handshake");
            tracing::debug!(%peer, protocol = t.label(), error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            handler.shared.metrics.encrypted_refused(t, "handshake");
            tracing::debug!(%peer, protocol = t.label(), "TLS handshake timed out");
            None
        }
    }
}

/// Queries in flight on a connection and when the last one ended: a
/// connection with none in flight for the idle timeout is closed
/// ([`Activity::idle`]). Used by DoH and DoQ, whose requests run
/// concurrently (DoT reads one query at a time under a timeout).
pub struct Activity {
    start: tokio::time::Instant,
    inflight: AtomicUsize,
    /// Milliseconds after `start` at which the last query ended.
    last_ms: AtomicU64,
}

/// Ends a query's [`Activity`] when dropped.
pub struct Busy(Arc<Activity>);

impl Activity {
    pub fn new() -> Self {
        Self { start: tokio::time::Instant::now(), inflight: AtomicUsize::new(0), last_ms: AtomicU64::new(0) }
    }

    pub fn begin(self: &Arc<Self>) -> Busy {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// Returns once no query has been in flight for `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = last + idle;
            if self.inflight.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() >= due {
                return;
            }
            let next = if self.inflight.load(Ordering::Relaxed) == 0 { due } else { tokio::time::Instant::now() + idle };
            tokio::time::sleep_until(next).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.last_ms.fetch_max(ms, Ordering::Relaxed);
        a.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}
