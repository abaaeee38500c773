//! DNS over HTTPS (RFC 8484): `/dns-query`, GET (`?dns=` base64url of the
//! query) and POST (`application/dns-message` body), over HTTP/2 and
//! HTTP/1.1 (ALPN `h2`, `http/1.1`), with hyper on a rustls stream. The
//! accept-time checks, handshake and idle limits are [`super::encrypted`]'s;
//! here: at most `tls_max_streams` concurrent HTTP/2 streams per connection,
//! request bodies and `dns=` values up to `doh_max_body_bytes`, each body
//! read within the idle timeout. Replies carry `Cache-Control: max-age` of
//! their smallest TTL (RFC 8484 §5.1).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::encrypted::{handshake, serve_tcp, Activity, Context};
use super::handler::Handler;
use crate::metrics::Transport;

/// How long an idle connection may take to say goodbye (GOAWAY) before it is cut.
const GOODBYE: std::time::Duration = std::time::Duration::from_secs(1);

/// The path of the DoH endpoint.
pub const PATH: &str = "/dns-query";
const DNS_MESSAGE: &str = "application/dns-message";

/// Accepts DoH connections until `stop`; open connections then finish the
/// requests they are on (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`).
pub async fn serve(listener: TcpListener, handler: Handler, ctx: Arc<Context>, stop: CancellationToken) {
    serve_tcp(listener, handler, ctx, stop, Transport::Doh, |stream, peer, handler, ctx, stop| async move {
        connection(stream, peer, &handler, &ctx, stop).await
    })
    .await
}

async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, handler: &Handler, ctx: &Arc<Context>, stop: CancellationToken) {
    let Some(tls) = handshake(&ctx.doh, stream, ctx, handler, peer, Transport::Doh).await else { return };
    let limits = ctx.limits;
    let activity = Arc::new(Activity::new());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(16 * 1024);
    let svc_handler = handler.clone();
    let svc_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (handler, activity) = (svc_handler.clone(), Arc::clone(&svc_activity));
        async move {
            let _busy = activity.begin();
            Ok::<_, Infallible>(request(req, peer, &handler, limits).await)
        }
    });
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "DoH connection ended");
            }
        }
        _ = activity.idle(limits.idle_timeout) => {
            // HTTP/2 GOAWAY or HTTP/1.1 close, briefly; a client mid-request
            // that long (a slowloris) is then cut
            tracing::debug!(%peer, "DoH connection closed: idle");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GOODBYE, conn).await;
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.idle_timeout, conn).await;
        }
    }
}

/// One HTTP request → one HTTP response.
async fn request(req: Request<Incoming>, peer: SocketAddr, handler: &Handler, limits: crate::config::EncryptedLimits) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH {
        return status(StatusCode::NOT_FOUND, "not found: the DoH endpoint is /dns-query\n");
    }
    let query = match *req.method() {
        Method::GET => {
            let Some(v) = req.uri().query().and_then(dns_param) else {
                return status(StatusCode::BAD_REQUEST, "missing dns= parameter\n");
            };
            // base64url without padding (RFC 8484 §4.1); padding tolerated
            let v = v.trim_end_matches('=');
            if v.len() > limits.doh_max_body.div_ceil(3) * 4 {
                return status(StatusCode::URI_TOO_LONG, "dns= parameter too long\n");
            }
            match data_encoding::BASE64URL_NOPAD.decode(v.as_bytes()) {
                Ok(b) => Bytes::from(b),
                Err(_) => return status(StatusCode::BAD_REQUEST, "dns= is not base64url\n"),
            }
        }
        Method::POST => {
            let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let is_dns = ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(DNS_MESSAGE));
            // the body is read (or drained) before any answer: an early reply
            // while the client still sends resets an HTTP/2 stream, which
            // some clients report as an error instead of the status
            let body = read_body(req.into_body(), limits.doh_max_body, limits.idle_timeout).await;
            if !is_dns {
                return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "use Content-Type: application/dns-message\n");
            }
            match body {
                Ok(b) => b,
                Err(code) => return status(code, "request body not accepted\n"),
            }
        }
        _ => {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n");
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, POST"));
            return r;
        }
    };
    if query.len() < 12 {
        return status(StatusCode::BAD_REQUEST, "not a DNS message\n");
    }
    let Some(reply) = super::encrypted::answer(handler, &query, peer, Transport::Doh).await else {
        // a response sent as a query, an unparsable header, or a `drop` decision
        return status(StatusCode::BAD_REQUEST, "no DNS reply for this message\n");
    };
    let max_age = crate::wire::scan::scan(&reply).and_then(|s| s.answer_min_ttl.or(s.negative_ttl)).unwrap_or(0);
    let mut r = Response::new(Full::new(Bytes::from(reply)));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE));
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        r.headers_mut().insert(CACHE_CONTROL, v);
    }
    r
}

/// Bytes a too large body is still read (and dropped) for, so that the
/// client sees the 413 rather than a reset.
const DRAIN: usize = 64 * 1024;

/// The request body, up to `max` bytes, within `idle`. Past `max` the rest
/// is read and dropped (up to [`DRAIN`] more) and the answer is 413; a body
/// not received in time is 408, a broken one 400.
async fn read_body(mut body: Incoming, max: usize, idle: std::time::Duration) -> Result<Bytes, StatusCode> {
    let deadline = tokio::time::Instant::now() + idle;
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(StatusCode::REQUEST_TIMEOUT),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(StatusCode::BAD_REQUEST),
            Ok(Some(Ok(f))) => f,
        };
        let Some(data) = frame.data_ref() else { continue };
        seen = seen.saturating_add(data.len());
        if seen <= max {
            buf.extend_from_slice(data);
        } else if seen > max.saturating_add(DRAIN) {
            break;
        }
    }
    if seen > max {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    Ok(Bytes::from(buf))
}

/// The value of the `dns` parameter of a query string.
fn dns_param(query: &str) -> Option<&str> {
    query.split('&').find_map(|kv| kv.strip_prefix("dns="))
}

fn status(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

#[cfg(test)]
mod tests {
    use super::dns_param;

    #[test]
    fn dns_parameter() {
        let cases: &[(&str, Option<&str>)] = &[
            ("dns=AAAB", Some("AAAB")),
            ("ct=x&dns=AAAB", Some("AAAB")),
            ("dnsx=1", None),
            ("", None),
        ];
        for (q, want) in cases {
            assert_eq!(dns_param(q), *want, "case `{q}`");
        }
    }
}
