//! The operator HTTP endpoint (`[metrics] listen`): `/metrics` (Prometheus
//! text), `/healthz` (process up), `/readyz` (serving, lists loaded, an
//! upstream answered recently), `/explain?name=` and `/lists`.
//!
//! HTTP/1.1 only, one small task per connection, bounded by `MAX_CONNS`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{ListConfig, SourceKind};
use crate::lists::http::redact_url;
use crate::lists::publish::Lists;
use crate::metrics::Metrics;
use crate::name::QName;
use crate::resolve::forward::Forwarder;

/// Connections served at once; more wait in the accept queue.
const MAX_CONNS: usize = 64;

/// What the endpoint reads.
pub struct DiagState {
    pub metrics: Arc<Metrics>,
    pub lists: Arc<Lists>,
    pub forwarder: Option<Arc<Forwarder>>,
    /// The reply cache's (entries, bytes).
    pub cache_size: Box<dyn Fn() -> (u64, u64) + Send + Sync>,
    /// Set once every DNS listener is registered.
    pub serving: AtomicBool,
    /// `[[views]]`, for `/explain?client=` and `/lists`.
    pub views: Option<Arc<crate::policy::views::Views>>,
}

/// Serves until `stop`.
pub async fn serve(listener: TcpListener, state: Arc<DiagState>, stop: CancellationToken) {
    let handler = move |req, _peer| {
        let state = Arc::clone(&state);
        async move { route(&state, req).await }
    };
    serve_http("metrics", listener, Some(MAX_CONNS), Duration::from_secs(5), handler, stop).await;
}

/// The HTTP/1.1 accept loop shared by the operator endpoint and the push
/// API: at most `max_conns` connections at once (when set), a header read
/// timeout, every connection closed on `stop`.
pub(crate) async fn serve_http<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    max_conns: Option<usize>,
    header_timeout: Duration,
    handler: F,
    stop: CancellationToken,
) where
    F: Fn(Request<Incoming>, std::net::SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let conns = max_conns.map(|n| Arc::new(Semaphore::new(n)));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, what, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match &conns {
            Some(c) => match Arc::clone(c).acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => return,
            },
            None => None,
        };
        let handler = handler.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| {
                let fut = handler(req, peer);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(io, svc);
            tokio::select! {
                _ = stop.cancelled() => {}
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, what, "HTTP connection error") },
            }
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn route(state: &DiagState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let (entries, bytes) = (state.cache_size)();
            state.metrics.cache_entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
            state.metrics.cache_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            let mut r = text(StatusCode::OK, state.metrics.encode());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let (ready, why) = readiness(state);
            text(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, why)
        }
        "/lists" => {
            let mut out = String::new();
            let policy = state.lists.policy.load();
            let _ = writeln!(out, "generation {}", policy.generation);
            for ((_, cfg), l) in state.lists.each().zip(state.lists.snapshot()) {
                if cfg.origin == SourceKind::Vacant {
                    continue; // a catalog's unused member slot
                }
                let name = &cfg.name;
                match l {
                    Some(l) => {
                        let at = l.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                        let age = state.lists.metrics().list_age(name).map_or_else(|| "-".to_owned(), |a| format!("{a:.0}"));
                        // registry-xml: entries by blockType and by how DNS enforces them
                        let kinds: Vec<String> = l.entry_kinds.iter().map(|(k, n)| format!("{k}: {n}")).collect();
                        let mut kinds = if kinds.is_empty() { String::new() } else { format!("\tentries: {}", kinds.join(", ")) };
                        if state.lists.id_of(name).and_then(|id| policy.list_info(id)).is_some_and(|i| i.shadow) {
                            kinds.push_str("\tmode=shadow");
                        }
                        if let Some(h) = state.lists.id_of(name).and_then(|id| state.lists.held(id)) {
                            // the guard holds an update (see docs/lists.md)
                            kinds.push_str(&format!("\theld={}\theld_names={}\theld_on_hit={}", h.version, h.names.join(","), h.on_hit.as_str()));
                        }
                        if let Some(serial) = l.meta.serial {
                            kinds.push_str(&format!("\tserial={serial}"));
                        }
                        let _ = writeln!(
                            out,
                            "{name}\trules={}\tskipped={}\tversion={}\tloaded_at={at}\tactivated_at={}\tage_s={age}\tsource={}\t{}{kinds}",
                            l.rules,
                            l.bad_lines,
                            l.version,
                            crate::querylog::rfc3339(l.loaded_at),
                            redact_url(&cfg.source),
                            l.addresses
                        );

                    }
                    None => {
                        let _ = writeln!(out, "{name}\tnot loaded");
                    }
                }
            }
            for v in state.views.as_deref().map_or(&[][..], |v| v.all()) {
                let lists: Vec<&str> = policy.lists.iter().enumerate().filter(|(i, _)| crate::rules::ListId::from_index(*i).is_some_and(|id| v.lists.contains(id))).map(|(_, l)| l.name.as_str()).collect();
                let _ = writeln!(out, "view {}\tlists={}", v.name, lists.join(","));
            }
            text(StatusCode::OK, out)
        }
        "/explain" => {
            let query = req.uri().query().unwrap_or("");
            let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('='))).unwrap_or("");
            let name = param("name");
            let client = match param("client") {
                "" => Ok(None),
                c => c.parse::<std::net::IpAddr>().map(Some),
            };
            let parsed = crate::name::normalize(name).ok().and_then(|n| QName::parse(&n).ok());
            match (parsed, client) {
                (None, _) | (_, Err(_)) => text(StatusCode::BAD_REQUEST, "usage: /explain?name=NAME[&client=IP] (a valid host name, an address)\n".into()),
                (Some(q), Ok(client)) => {
                    let view = client.and_then(|c| state.views.as_deref()?.of(c).cloned());
                    match explain_in_force(&state.lists, q, view).await {
                        Ok(ex) => text(StatusCode::OK, format!("{ex}\n")),
                        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("explain failed: {e}\n")),
                    }
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found; try /metrics /healthz /readyz /lists /explain?name=\n".into()),
    }
}

/// [`crate::policy::explain::explain_in`] on the policy in force, for `/explain`
/// and the admin API's `/v1/explain`: the verdict comes from the published
/// policy; only the rule's text is re-read, from file lists only, and off the
/// worker threads (a list file can be hundreds of MB).
pub async fn explain_in_force(
    lists: &Lists,
    name: QName,
    view: Option<crate::policy::views::View>,
) -> Result<crate::policy::explain::Explanation, tokio::task::JoinError> {
    let policy = lists.policy.load_full();
    let reader = file_line_reader(lists.configs().iter().map(|c| &c.config));
    tokio::task::spawn_blocking(move || crate::policy::explain::explain_in(&policy, &name, view.as_ref(), &reader)).await
}

/// A `read_line` for [`crate::policy::explain::explain`] that re-reads only
/// lists with a file source (by their source as written): never a remote
/// list's `source` string taken as a path (`push`, a URL). Keyed by the
/// source as [`crate::policy::ListInfo`] shows it (redacted). Blocking.
pub fn file_line_reader<'a>(lists: impl Iterator<Item = &'a ListConfig>) -> impl Fn(&str, u32) -> Option<String> + Send + 'static {
    let files: HashMap<String, PathBuf> = lists
        .filter_map(|c| match &c.origin {
            SourceKind::File(p) => Some((redact_url(&c.source), p.clone())),
            _ => None,
        })
        .collect();
    move |source, line| files.get(source).and_then(|p| read_line(&p.to_string_lossy(), line))
}

/// Re-reads line `line` of a file source (for "the rule as written"), as
/// UTF-8 text: a file that is not UTF-8 throughout is a registry dump in
/// Windows-1251 (the only format that accepts one; see
/// [`crate::lists::parse::registry_csv`]) and its line is decoded as such.
pub fn read_line(source: &str, line: u32) -> Option<String> {
    let bytes = std::fs::read(source).ok()?;
    let idx = usize::try_from(line).ok()?.checked_sub(1)?;
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    let utf8 = std::str::from_utf8(body).is_ok();
    let raw = body.split(|&b| b == b'\n').nth(idx)?;
    let text = if utf8 {
        String::from_utf8_lossy(raw).into_owned()
    } else {
        encoding_rs::WINDOWS_1251.decode_without_bom_handling(raw).0.into_owned()
    };
    Some(text.trim_end().to_owned())
}

fn readiness(state: &DiagState) -> (bool, String) {
    if !state.serving.load(Ordering::Acquire) {
        return (false, "not ready: DNS listeners not serving yet\n".into());
    }
    let snapshot = state.lists.snapshot();
    if let Some((_, cfg)) = state.lists.each().zip(&snapshot).find(|((_, c), s)| s.is_none() && c.catalog.is_none()).map(|(l, _)| l) {
        let name = &cfg.name;
        return (false, format!("not ready: list {name} not loaded\n"));
    }
    if let Some(f) = &state.forwarder {
        if !f.healthy() {
            return (false, "not ready: no upstream answered recently\n".into());
        }
    }
    (true, "ready\n".into())
}

/// Binds the endpoint's listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
