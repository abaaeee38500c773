//! The block page's HTTP/1.1 side (hyper): the accept loop (the client ACL
//! of `[server]` and the per-client connection caps of `server/gate.rs` at
//! accept), one request per connection under the idle, request and header
//! size limits, and the request → response step: `GET`/`HEAD` with `Host:
//! NAME` → 451 with the page when the published policy blocks NAME, else 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT_LANGUAGE, ALLOW, CACHE_CONTROL, CONTENT_LANGUAGE, CONTENT_TYPE, HOST, LINK, VARY};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::source::Decision;
use super::template::{not_found, Lang, Values};
use super::BlockPage;
use crate::name::QName;
use crate::policy::Verdict;

/// Accepts block page connections on `listener` until `stop`.
pub async fn serve(listener: TcpListener, page: Arc<BlockPage>, stop: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "block page accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if !page.acl.allows(peer.ip()) {
            page.metrics.blockpage_closed("acl");
            tracing::debug!(%peer, "block page connection refused: client not in allow_clients");
            continue;
        }
        let slot = match page.gate.admit(peer.ip()) {
            Ok(s) => s,
            Err(r) => {
                page.metrics.blockpage_closed("limit");
                tracing::debug!(%peer, why = ?r, "block page connection refused: connection cap");
                continue;
            }
        };
        let (page, stop) = (Arc::clone(&page), stop.clone());
        tracker.spawn(async move {
            let _slot = slot;
            connection(stream, peer, page, stop).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// One connection, one request: nothing sent within `idle_timeout` closes
/// it; the request and the answer must be through within `request_timeout`
/// of accept; headers past `max_header_bytes` get 431.
async fn connection(stream: TcpStream, peer: SocketAddr, page: Arc<BlockPage>, stop: CancellationToken) {
    let limits = page.limits;
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let mut first = [0u8; 1];
    tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout(limits.idle_timeout.min(limits.request_timeout), stream.peek(&mut first)) => match r {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return,
            Err(_) => {
                page.metrics.blockpage_closed("idle");
                return;
            }
        },
    }
    let _ = stream.set_nodelay(true);
    let svc_page = Arc::clone(&page);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let page = Arc::clone(&svc_page);
        async move { Ok::<_, Infallible>(respond(&page, &req, peer).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .keep_alive(false)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        r = conn => if let Err(e) = r {
            if e.is_parse_too_large() {
                // hyper answered 431 itself
                page.metrics.blockpage_request("", 431);
            } else if e.is_timeout() {
                page.metrics.blockpage_closed("timeout");
            } else {
                tracing::debug!(%peer, error = %e, "block page connection error");
            }
        },
        _ = tokio::time::sleep_until(deadline) => {
            page.metrics.blockpage_closed("timeout");
            tracing::debug!(%peer, "block page connection cut: request_timeout_ms");
        }
        _ = stop.cancelled() => {}
    }
}

/// One request → one response (see the module doc).
async fn respond(page: &BlockPage, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let lang = Lang::from_accept_language(req.headers().get(ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()));
    if req.method() != Method::GET && req.method() != Method::HEAD {
        page.metrics.blockpage_request("", 405);
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(host) = host_of(req) else {
        page.metrics.blockpage_request("", 400);
        return plain(StatusCode::BAD_REQUEST, "no Host\n");
    };
    let name = crate::name::normalize(host).ok().and_then(|n| QName::parse(&n).ok());
    // the one look-up: the policy DNS answers from now
    let policy = page.lists.policy.load_full();
    let hit = name.as_ref().and_then(|q| match policy.check(q) {
        Verdict::Blocked(h) => Some(h),
        Verdict::Allowed(_) | Verdict::Pass => None,
    });
    let (Some(name), Some(hit)) = (name, hit) else {
        page.metrics.blockpage_request("", 404);
        return html(StatusCode::NOT_FOUND, lang, Bytes::from_static(not_found(lang).as_bytes()));
    };
    let list = policy.list(&hit).map_or("", |l| l.name.as_str());
    let decision = match policy.index.decision(hit.rule) {
        Some(text) => {
            let line = policy.index.rule_line(hit.rule);
            page.rows.decision(policy.generation, hit.rule, hit.list.index(), line, text, page.limits.request_timeout).await
        }
        None => Decision::default(),
    };
    let reason = policy.ede(&hit).1;
    let values = Values {
        name: name.as_str(),
        list,
        decision: &decision.id,
        authority: &decision.authority,
        date: &decision.date,
        contact: &page.contact,
        reason: &reason,
    };
    let body = page.templates.page(lang).render(&values);
    let mut r = html(StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, lang, Bytes::from(body));
    if let Some(Some(link)) = page.links.get(hit.list.index()) {
        r.headers_mut().insert(LINK, link.clone());
    }
    page.metrics.blockpage_request(list, 451);
    if let Some(log) = &page.log {
        log.log(crate::querylog::Event {
            at: std::time::SystemTime::now(),
            client: peer.ip(),
            protocol: "http",
            qname: smallvec::SmallVec::from_slice(name.as_str().as_bytes()),
            qtype: None,
            policy: Arc::clone(&policy),
            hit,
            shadow: false,
        });
    }
    r
}

/// The host a request names: the authority of an absolute-form target, else
/// the `Host` header without its port. `None` without either.
fn host_of(req: &Request<Incoming>) -> Option<&str> {
    if let Some(h) = req.uri().host() {
        return Some(h);
    }
    let v = req.headers().get(HOST)?.to_str().ok()?;
    Some(strip_port(v))
}

/// `name:80` → `name`; an IPv6 literal (`[::1]:80`) is left whole (it is
/// no host name: the page answers 404).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// An HTML page that no cache keeps.
fn html(status: StatusCode, lang: Lang, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONTENT_LANGUAGE, HeaderValue::from_static(lang.tag()));
    h.insert(VARY, HeaderValue::from_static("Accept-Language"));
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn host_ports() {
        let cases: &[(&str, &str)] = &[
            ("a.example", "a.example"),
            ("a.example:8080", "a.example"),
            ("A.Example.:80", "A.Example."),
            ("[2001:db8::1]:80", "[2001:db8::1]:80"),
            ("a.example:x", "a.example:x"),
        ];
        for (h, want) in cases {
            assert_eq!(strip_port(h), *want, "case `{h}`");
        }
    }
}
