//! The push API (`[admin] listen`, `token_file`):
//!
//! - `PUT /v1/lists/{name}`: the body replaces a `source = "push"` list;
//! - `PATCH /v1/lists/{name}`: body lines `+LINE` add, `-LINE` remove a line
//!   of the last pushed version;
//! - `POST /v1/lists/{name}/reload[?force=1]`: re-read / re-fetch any list;
//!   `force=1` lets its next version skip the shrink gate (intended shrinks);
//! - `GET /v1/lists`: every list's version, rules and source.
//!
//! Every request needs `Authorization: Bearer TOKEN` (missing or wrong: 401,
//! nothing changes). Pushed bodies may carry `X-Qalqan-Version: N` (must grow:
//! an older or equal version is a replay, 409) and
//! `X-Qalqan-Signature: BASE64` — an Ed25519 signature by one of
//! `regulator_keys` over `qalqan-list-v1\n{name}\n{version}\n{body}`;
//! with `require_signature` (the default when keys are configured) an
//! unsigned or badly signed push is refused (403).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming as Body};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminConfig, SourceKind};
use crate::lists::publish::{Incoming, Lists};
use crate::lists::SourceMeta;

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin token file {path}: {source}")]
    TokenRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin token file {path} is readable by group or others (mode {mode:o}); run chmod 600")]
    TokenMode { path: String, mode: u32 },
    #[error("admin token file {path}: the token must be at least 16 characters")]
    TokenShort { path: String },
}

/// Reads the bearer token, refusing files other users can read.
pub fn read_token(path: &Path) -> Result<String, AdminError> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| AdminError::TokenRead { path: shown.clone(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AdminError::TokenMode { path: shown, mode });
    }
    let token = std::fs::read_to_string(path).map_err(|source| AdminError::TokenRead { path: shown.clone(), source })?;
    let token = token.trim().to_owned();
    if token.len() < 16 {
        return Err(AdminError::TokenShort { path: shown });
    }
    Ok(token)
}

/// State of the push API.
pub struct Admin {
    pub lists: Arc<Lists>,
    pub config: AdminConfig,
    token: String,
    /// Last accepted body of each push list (the base of PATCH).
    bodies: Mutex<HashMap<usize, Arc<Vec<u8>>>>,
    /// Asks a source task (http, axfr) to refresh now.
    pub refresh: Box<dyn Fn(usize) -> bool + Send + Sync>,
}

impl Admin {
    pub fn new(lists: Arc<Lists>, config: AdminConfig, token: String, refresh: Box<dyn Fn(usize) -> bool + Send + Sync>) -> Self {
        Self { lists, config, token, bodies: Mutex::new(HashMap::new()), refresh }
    }
}

/// Serves the admin API until `stop`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, stop: CancellationToken) {
    let handler = move |req, peer| {
        let admin = Arc::clone(&admin);
        async move { handle(&admin, req, peer).await }
    };
    crate::diag::serve_http("admin", listener, None, Duration::from_secs(10), handler, stop).await;
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": msg.into() }))
}

fn token_ok(expected: &str, req: &Request<Body>) -> bool {
    let Some(got) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (got.trim().as_bytes(), expected.as_bytes());
    // constant time over the expected length
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(admin: &Admin, req: Request<Body>, peer: std::net::SocketAddr) -> Response<Full<Bytes>> {
    if !token_ok(&admin.token, &req) {
        tracing::warn!(%peer, path = %req.uri().path(), "admin request without a valid token");
        let mut r = err(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
        return r;
    }
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["v1", "lists"]) => list_all(admin),
        (m @ (Method::PUT | Method::PATCH), ["v1", "lists", name]) => push(admin, m, name, req, peer).await,
        (Method::POST, ["v1", "lists", name, "reload"]) => {
            let Some(i) = admin.lists.position(name) else { return err(StatusCode::NOT_FOUND, format!("no list `{name}`")) };
            if req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "force=1" || kv == "force=true")) {
                admin.lists.force_next(i);
                tracing::info!(target: "qalqan::audit", list = %name, %peer, "shrink gate skipped for the next version (force)");
            }
            let origin = admin.lists.configs().get(i).map(|c| c.0.origin.clone());
            match origin {
                Some(SourceKind::File(_)) => {
                    let lists = Arc::clone(&admin.lists);
                    let report = lists.reload(Some(vec![i])).await;
                    if let Some(e) = report.failed.first() {
                        return err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
                    }
                    state_json(admin, i)
                }
                Some(SourceKind::Push) => state_json(admin, i),
                _ => {
                    if (admin.refresh)(i) {
                        json(StatusCode::ACCEPTED, serde_json::json!({ "list": name, "refresh": "started" }))
                    } else {
                        err(StatusCode::SERVICE_UNAVAILABLE, "source task not running")
                    }
                }
            }
        }
        _ => err(StatusCode::NOT_FOUND, "try GET /v1/lists, PUT|PATCH /v1/lists/{name}, POST /v1/lists/{name}/reload"),
    }
}

fn state_json(admin: &Admin, i: usize) -> Response<Full<Bytes>> {
    let name = admin.lists.configs().get(i).map(|c| c.0.name.clone()).unwrap_or_default();
    match admin.lists.state(i) {
        Some(s) => json(
            StatusCode::OK,
            serde_json::json!({
                "list": name,
                "version": s.version,
                "push_version": s.meta.push_version,
                "rules": s.rules,
                "skipped_lines": s.bad_lines,
                "generation": admin.lists.policy.load().generation,
            }),
        ),
        None => json(StatusCode::OK, serde_json::json!({ "list": name, "version": null })),
    }
}

fn list_all(admin: &Admin) -> Response<Full<Bytes>> {
    let snapshot = admin.lists.snapshot();
    let items: Vec<serde_json::Value> = admin
        .lists
        .configs()
        .iter()
        .enumerate()
        .map(|(i, (c, _))| {
            let s = snapshot.get(i).cloned().flatten();
            serde_json::json!({
                "list": c.name,
                "source": c.source,
                "version": s.as_ref().map(|s| s.version.clone()),
                "rules": s.as_ref().map(|s| s.rules),
                "who": s.as_ref().map(|s| s.meta.who.clone()),
            })
        })
        .collect();
    json(StatusCode::OK, serde_json::json!({ "generation": admin.lists.policy.load().generation, "lists": items }))
}

/// The signed message: `qalqan-list-v1\n{name}\n{version}\n{body}`.
pub fn signed_message(name: &str, version: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("qalqan-list-v1\n{name}\n{version}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

async fn push(admin: &Admin, method: Method, name: &str, req: Request<Body>, peer: std::net::SocketAddr) -> Response<Full<Bytes>> {
    let Some(i) = admin.lists.position(name) else { return err(StatusCode::NOT_FOUND, format!("no list `{name}`")) };
    if admin.lists.configs().get(i).map(|c| &c.0.origin) != Some(&SourceKind::Push) {
        return err(StatusCode::CONFLICT, format!("list `{name}` is not a push list (source = \"push\")"));
    }
    let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let version_hdr = header("x-qalqan-version");
    let signature = header("x-qalqan-signature");
    let body = match Limited::new(req.into_body(), usize::try_from(admin.config.max_body_bytes).unwrap_or(usize::MAX)).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return err(StatusCode::PAYLOAD_TOO_LARGE, format!("body: {e}")),
    };
    let prev_state = admin.lists.state(i);
    let prev_version = prev_state.as_ref().and_then(|s| s.meta.push_version).unwrap_or(0);
    let version = match version_hdr {
        Some(v) => match v.trim().parse::<u64>() {
            Ok(v) => v,
            Err(_) => return err(StatusCode::BAD_REQUEST, "X-Qalqan-Version must be a whole number"),
        },
        None if admin.config.require_signature => {
            return err(StatusCode::BAD_REQUEST, "X-Qalqan-Version is required with signatures")
        }
        None => prev_version + 1,
    };
    if version <= prev_version {
        tracing::warn!(target: "qalqan::audit", list = %name, %peer, version, prev_version, "push refused: replayed or old version");
        return err(StatusCode::CONFLICT, format!("version {version} is not newer than {prev_version} (replay?)"));
    }
    match (&signature, admin.config.require_signature) {
        (Some(sig), _) => {
            if !verify(&admin.config.regulator_keys, &signed_message(name, version, &body), sig) {
                tracing::warn!(target: "qalqan::audit", list = %name, %peer, version, "push refused: bad signature");
                return err(StatusCode::FORBIDDEN, "signature does not verify against any regulator key");
            }
        }
        (None, true) => return err(StatusCode::FORBIDDEN, "X-Qalqan-Signature is required"),
        (None, false) => {}
    }
    let full: Vec<u8> = if method == Method::PATCH {
        let base = admin.bodies.lock().ok().and_then(|b| b.get(&i).cloned());
        let base = match base {
            Some(b) => b,
            None => match admin.lists.configs().get(i).and_then(|c| c.1.clone()).and_then(|p| std::fs::read(p).ok()) {
                Some(b) => Arc::new(b),
                None if prev_state.is_none() => Arc::new(Vec::new()),
                None => return err(StatusCode::CONFLICT, "no base version to patch (set [state] dir); PUT the full list"),
            },
        };
        match apply_patch(&base, &body) {
            Ok(b) => b,
            Err(e) => return err(StatusCode::BAD_REQUEST, e),
        }
    } else {
        body.to_vec()
    };
    let meta = SourceMeta {
        push_version: Some(version),
        who: format!("push {} from {peer}{}", method, if signature.is_some() { " (signed)" } else { "" }),
        ..Default::default()
    };
    let lists = Arc::clone(&admin.lists);
    let kept = Arc::new(full.clone());
    match lists.offer_async(Incoming { list: i, bytes: full, meta, force: false }).await {
        Ok(_) => {
            if let Ok(mut b) = admin.bodies.lock() {
                b.insert(i, kept);
            }
            state_json(admin, i)
        }
        Err(e) => err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

fn verify(keys: &[[u8; 32]], message: &[u8], sig_b64: &str) -> bool {
    let Ok(sig_bytes) = base64::engine::general_purpose::STANDARD.decode(sig_b64.trim()) else { return false };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig_bytes) else { return false };
    keys.iter().any(|k| {
        ed25519_dalek::VerifyingKey::from_bytes(k).is_ok_and(|vk| vk.verify_strict(message, &sig).is_ok())
    })
}

/// Applies `+LINE` / `-LINE` lines to `base` (other lines: error).
pub fn apply_patch(base: &[u8], patch: &[u8]) -> Result<Vec<u8>, String> {
    let base = std::str::from_utf8(base).map_err(|_| "the base version is not UTF-8; PUT the full list".to_owned())?;
    let patch = std::str::from_utf8(patch).map_err(|_| "the patch is not UTF-8".to_owned())?;
    let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
    for (n, l) in patch.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        if let Some(add) = l.strip_prefix('+') {
            lines.push(add.to_owned());
        } else if let Some(del) = l.strip_prefix('-') {
            let before = lines.len();
            lines.retain(|x| x.trim() != del.trim());
            if lines.len() == before {
                tracing::debug!(line = n + 1, "patch removes a line that is not there");
            }
        } else {
            return Err(format!("patch line {}: must start with + or -", n + 1));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_adds_and_removes() {
        let got = apply_patch(b"a.test\nb.test\n", b"+c.test\n-a.test\n").unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), "b.test\nc.test\n");
        assert!(apply_patch(b"", b"x.test\n").is_err());
    }
}
