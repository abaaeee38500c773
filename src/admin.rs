//! The push API (`[admin] listen`, `token_file`):
//!
//! - `PUT /v1/lists/{name}`: the body replaces a `source = "push"` list;
//! - `PATCH /v1/lists/{name}`: body lines `+LINE` add, `-LINE` remove a line
//!   of the last pushed version;
//! - `POST /v1/lists/{name}/reload[?force=1]`: re-read / re-fetch any list;
//!   `force=1` lets its next version skip the shrink gate (intended shrinks);
//! - `POST /v1/lists/{name}/confirm`: releases the update the guard
//!   (`[guard]`) holds for the list: published as if the guard had passed
//!   it (200 with the list's state); 409 when nothing is held;
//! - `GET /v1/lists`: every list's version, rules and source, and the
//!   update the guard holds for it (`held`: version, names, rules left
//!   out, since);
//! - `GET /v1/status`: the server's version, start time and uptime, and a
//!   summary of its lists;
//! - `GET /v1/explain?name=NAME`: the decision for NAME and the rule behind it
//!   (what `qalqan explain` prints, from the policy in force).
//!
//! A push the guard holds is answered 202 with the held update (`held`):
//! the version in force stays (`hold_all`), or the rest of it is in force
//! (`apply_rest`, then 200 with `held` naming the lines left out).
//!
//! `qalqan ctl` ([`crate::ctl`]) is the command-line client of these.
//!
//! Every request needs `Authorization: Bearer TOKEN` (missing or wrong: 401,
//! nothing changes). Pushed bodies carry `X-Qalqan-Version: N` (N ≥ 1, must
//! grow: an older or equal version is a replay, 409; checked under the
//! update lock, see [`Lists::offer_push`]); a PATCH may name the version it
//! applies to in `X-Qalqan-Base-Version` (409 if another is in force).
//!
//! Signed requests carry `X-Qalqan-Signature: BASE64` (Ed25519 by one of
//! `regulator_keys`) and `X-Qalqan-Timestamp: UNIX_SECONDS` (within
//! `signature_max_age_s` of our clock, default 300) over the
//! `qalqan-list-v2` message defined in [`crate::lists::push`]:
//!
//! ```text
//! qalqan-list-v2\n{METHOD}\n{name}\n{version}\n{base or -}\n{timestamp}\n{body}
//! ```
//!
//! With `require_signature` (the default when keys are configured) an
//! unsigned or badly signed push is refused (403 with the reason; the old
//! `qalqan-list-v1` format is named as such), and with keys `?force=1` needs
//! a POST signature whose `{version}` is the list's content version in force.
//! A body the gate rejects is 422, every time it is sent; never 200.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming as Body};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminConfig, SourceKind};
use crate::lists::publish::{ConfirmError, Held, Lists, PushRefused};
use crate::lists::push::{self, PushEntry, PushMethod};
use crate::rules::ListId;

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin token file {path}: cannot read")]
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
    /// Asks a source task (http, axfr) to refresh now.
    pub refresh: Box<dyn Fn(ListId) -> bool + Send + Sync>,
    /// When the API was set up (the server's start), for `/v1/status`.
    started: std::time::SystemTime,
}

impl Admin {
    pub fn new(lists: Arc<Lists>, config: AdminConfig, token: String, refresh: Box<dyn Fn(ListId) -> bool + Send + Sync>) -> Self {
        Self { lists, config, token, refresh, started: std::time::SystemTime::now() }
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
        (Method::GET, ["v1", "status"]) => status(admin),
        (Method::GET, ["v1", "explain"]) => explain(admin, req.uri().query().unwrap_or("")).await,
        (m @ (Method::PUT | Method::PATCH), ["v1", "lists", name]) => push(admin, m, name, req, peer).await,
        (Method::POST, ["v1", "lists", name, "reload"]) => reload(admin, name, req, peer).await,
        (Method::POST, ["v1", "lists", name, "confirm"]) => confirm(admin, name, peer).await,
        _ => err(StatusCode::NOT_FOUND, "try GET /v1/status, GET /v1/lists, GET /v1/explain?name=, PUT|PATCH /v1/lists/{name}, POST /v1/lists/{name}/reload, POST /v1/lists/{name}/confirm"),
    }
}

fn state_json(admin: &Admin, i: ListId) -> Response<Full<Bytes>> {
    let name = admin.lists.config(i).map(|c| c.name.clone()).unwrap_or_default();
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
                "held": admin.lists.held(i).as_ref().map(held_json),
            }),
        ),
        None => json(StatusCode::OK, serde_json::json!({ "list": name, "version": null })),
    }
}

fn list_all(admin: &Admin) -> Response<Full<Bytes>> {
    let snapshot = admin.lists.snapshot();
    let items: Vec<serde_json::Value> = admin
        .lists
        .each()
        .filter(|(_, c)| c.origin != SourceKind::Vacant)
        .map(|(i, c)| {
            let s = snapshot.get(i.index()).cloned().flatten();
            serde_json::json!({
                "list": c.name,
                "source": crate::lists::http::redact_url(&c.source),
                "version": s.as_ref().map(|s| s.version.clone()),
                "activated_at": s.as_ref().map(|s| crate::querylog::rfc3339(s.loaded_at)),
                "age_s": admin.lists.metrics().list_age(&c.name).map(|a| a.round()),
                "rules": s.as_ref().map(|s| s.rules),
                "who": s.as_ref().map(|s| s.meta.who.clone()),
                "held": admin.lists.held(i).as_ref().map(held_json),
            })
        })
        .collect();
    json(StatusCode::OK, serde_json::json!({ "generation": admin.lists.policy.load().generation, "lists": items }))
}

/// An update the guard holds, as `/v1/lists` and push answers show it.
pub fn held_json(h: &Held) -> serde_json::Value {
    serde_json::json!({
        "version": h.version,
        "names": h.names,
        "on_hit": h.on_hit.as_str(),
        "in_force": h.on_hit == crate::rules::GuardOnHit::ApplyRest,
        "rules_left_out": h.rules.iter().map(|(line, rule)| serde_json::json!({"line": line, "rule": rule})).collect::<Vec<_>>(),
        "since": crate::querylog::rfc3339(h.since),
    })
}

/// `POST /v1/lists/{name}/confirm`: releases the held update.
async fn confirm(admin: &Admin, name: &str, peer: std::net::SocketAddr) -> Response<Full<Bytes>> {
    let Some(i) = admin.lists.id_of(name) else { return err(StatusCode::NOT_FOUND, format!("no list `{name}`")) };
    if admin.lists.guard().is_none() {
        return err(StatusCode::CONFLICT, "no [guard] is configured, so nothing is ever held");
    }
    match Arc::clone(&admin.lists).confirm_async(i, format!("admin API from {peer}")).await {
        Ok(_) => state_json(admin, i),
        Err(e) => {
            let status = match &e {
                ConfirmError::NoList(_) => StatusCode::NOT_FOUND,
                ConfirmError::NothingHeld(_) => StatusCode::CONFLICT,
                ConfirmError::Load(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            err(status, crate::lists::ErrorChain(&e).to_string())
        }
    }
}

/// `GET /v1/status`: version, start time, uptime and a summary of the lists.
fn status(admin: &Admin) -> Response<Full<Bytes>> {
    let snapshot = admin.lists.snapshot();
    let configured = admin.lists.each().count();
    let loaded = snapshot.iter().filter(|s| s.is_some()).count();
    let rules: usize = snapshot.iter().flatten().map(|s| s.rules).sum();
    let uptime = std::time::SystemTime::now().duration_since(admin.started).map_or(0, |d| d.as_secs());
    json(
        StatusCode::OK,
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": crate::querylog::rfc3339(admin.started),
            "uptime_s": uptime,
            "generation": admin.lists.policy.load().generation,
            "lists": { "configured": configured, "loaded": loaded, "rules": rules },
        }),
    )
}

/// `GET /v1/explain?name=NAME`: [`crate::diag::explain_in_force`], as fields
/// and as the text `qalqan explain` prints.
async fn explain(admin: &Admin, query: &str) -> Response<Full<Bytes>> {
    let raw = query.split('&').find_map(|kv| kv.strip_prefix("name=")).unwrap_or("");
    let Some(name) = crate::name::normalize(raw).ok().and_then(|n| crate::name::QName::parse(&n).ok()) else {
        return err(StatusCode::BAD_REQUEST, "usage: GET /v1/explain?name=NAME (a valid host name)");
    };
    let shown = name.to_string();
    match crate::diag::explain_in_force(&admin.lists, name, None).await {
        Ok(ex) => json(
            StatusCode::OK,
            serde_json::json!({
                "name": shown,
                "outcome": ex.outcome,
                "list": ex.list,
                "source": ex.file_line,
                "rule": ex.rule_text,
                "action": ex.action,
                "ede": ex.ede,
                "decision": ex.decision,
                "text": ex.to_string(),
            }),
        ),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, format!("explain failed: {e}")),
    }
}

/// Seconds since the UNIX epoch by our clock.
fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What a signed request says about itself (see [`push::signed_message`]).
struct Claim<'a> {
    method: PushMethod,
    name: &'a str,
    version: &'a str,
    base: Option<u64>,
    timestamp: Option<&'a str>,
}

/// Checks a signed request: the timestamp within `signature_max_age`, the
/// v2 signature over it; returns the timestamp, or why it was refused
/// (answered 403 with this text; a v1 signature is named as such).
fn check_signed(admin: &Admin, claim: &Claim<'_>, signature: &str, body: &[u8]) -> Result<u64, String> {
    let Claim { method, name, version, base, timestamp } = *claim;
    let keys = &admin.config.regulator_keys;
    let old_format = || {
        version.parse::<u64>().is_ok_and(|v| push::verify(keys, &push::signed_message_v1(name, v, body), signature.as_bytes()))
    };
    let Some(ts) = timestamp else {
        if old_format() {
            return Err("the signature is in the old qalqan-list-v1 format, which is no longer accepted: \
                        sign qalqan-list-v2 (method, name, version, base version, timestamp) and send X-Qalqan-Timestamp"
                .into());
        }
        return Err("X-Qalqan-Timestamp (UNIX seconds) is required with X-Qalqan-Signature".into());
    };
    let ts: u64 = ts.trim().parse().map_err(|_| "X-Qalqan-Timestamp must be UNIX seconds (a whole number)".to_owned())?;
    let max = admin.config.signature_max_age.as_secs();
    let now = now_unix();
    if now.abs_diff(ts) > max {
        return Err(format!("X-Qalqan-Timestamp {ts} is more than {max} s from our clock ({now}): expired or replayed"));
    }
    if push::verify(keys, &push::signed_message(method, name, version, base, ts, body), signature.as_bytes()) {
        return Ok(ts);
    }
    if old_format() {
        return Err("the signature is in the old qalqan-list-v1 format, which is no longer accepted: sign qalqan-list-v2".into());
    }
    Err(format!(
        "signature does not verify against any regulator key (signed message: {}\\n{}\\n{name}\\n{version}\\n{}\\n{ts}\\nBODY)",
        push::SIGNED_TAG,
        method.as_str(),
        base.map_or_else(|| "-".to_owned(), |b| b.to_string())
    ))
}

/// `POST /v1/lists/{name}/reload`.
async fn reload(admin: &Admin, name: &str, req: Request<Body>, peer: std::net::SocketAddr) -> Response<Full<Bytes>> {
    let Some(i) = admin.lists.id_of(name) else { return err(StatusCode::NOT_FOUND, format!("no list `{name}`")) };
    if req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "force=1" || kv == "force=true")) {
        if !admin.config.regulator_keys.is_empty() {
            // skipping the shrink gate lets a near-empty version through:
            // with regulator keys that takes the regulator's signature
            let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let Some(sig) = header("x-qalqan-signature") else {
                tracing::warn!(target: "qalqan::audit", list = %name, %peer, "force refused: unsigned");
                admin.lists.audit_event("force refused", serde_json::json!({"list": name, "peer": peer.to_string(), "reason": "unsigned"}));
                return err(StatusCode::FORBIDDEN, "force=1 needs X-Qalqan-Signature when regulator keys are configured");
            };
            let version = admin.lists.state(i).map_or_else(|| "-".to_owned(), |s| s.version);
            let ts = header("x-qalqan-timestamp");
            if let Err(reason) = check_signed(admin, &Claim { method: PushMethod::Post, name, version: &version, base: None, timestamp: ts.as_deref() }, &sig, b"") {
                tracing::warn!(target: "qalqan::audit", list = %name, %peer, %reason, "force refused");
                admin.lists.audit_event("force refused", serde_json::json!({"list": name, "peer": peer.to_string(), "reason": reason.to_string()}));
                return err(StatusCode::FORBIDDEN, reason);
            }
        }
        admin.lists.force_next(i);
        tracing::info!(target: "qalqan::audit", list = %name, %peer, "shrink gate skipped for the next version (force)");
        admin.lists.audit_event("force", serde_json::json!({"list": name, "peer": peer.to_string()}));
    }
    let origin = admin.lists.config(i).map(|c| c.origin.clone());
    match origin {
        Some(SourceKind::File(_)) => {
            let lists = Arc::clone(&admin.lists);
            let report = lists.reload(Some(vec![i])).await;
            if let Some(e) = report.failed.first() {
                return err(StatusCode::UNPROCESSABLE_ENTITY, e.chain().to_string());
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

async fn push(admin: &Admin, method: Method, name: &str, req: Request<Body>, peer: std::net::SocketAddr) -> Response<Full<Bytes>> {
    let Some(i) = admin.lists.id_of(name) else { return err(StatusCode::NOT_FOUND, format!("no list `{name}`")) };
    if admin.lists.config(i).map(|c| c.origin.clone()) != Some(SourceKind::Push) {
        return err(StatusCode::CONFLICT, format!("list `{name}` is not a push list (source = \"push\")"));
    }
    let pmethod = if method == Method::PATCH { PushMethod::Patch } else { PushMethod::Put };
    let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let version_hdr = header("x-qalqan-version");
    let base_hdr = header("x-qalqan-base-version");
    let signature = header("x-qalqan-signature");
    let timestamp = header("x-qalqan-timestamp");
    let body = match Limited::new(req.into_body(), usize::try_from(admin.config.max_body_bytes).unwrap_or(usize::MAX)).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return err(StatusCode::PAYLOAD_TOO_LARGE, format!("body: {e}")),
    };
    // the update is received: what follows (signature, build thread, lock) counts to its enforcement
    let received = std::time::Instant::now();
    let version = match version_hdr.as_deref().map(|v| v.trim().parse::<u64>()) {
        Some(Ok(v)) if v > 0 => Some(v),
        Some(_) => return err(StatusCode::BAD_REQUEST, "X-Qalqan-Version must be a whole number ≥ 1"),
        None if admin.config.require_signature || signature.is_some() => {
            return err(StatusCode::BAD_REQUEST, "X-Qalqan-Version is required with signatures")
        }
        None => None,
    };
    let base = match base_hdr.as_deref().map(|v| v.trim().parse::<u64>()) {
        Some(Ok(b)) if pmethod == PushMethod::Patch => Some(b),
        Some(Ok(_)) => return err(StatusCode::BAD_REQUEST, "X-Qalqan-Base-Version is for PATCH only"),
        Some(Err(_)) => return err(StatusCode::BAD_REQUEST, "X-Qalqan-Base-Version must be a whole number"),
        None if pmethod == PushMethod::Patch && signature.is_some() => {
            return err(StatusCode::BAD_REQUEST, "a signed PATCH needs X-Qalqan-Base-Version (the version it applies to)")
        }
        None => None,
    };
    let signed_at = match (&signature, version) {
        (Some(sig), Some(v)) => {
            let version = v.to_string();
            let claim = Claim { method: pmethod, name, version: &version, base, timestamp: timestamp.as_deref() };
            match check_signed(admin, &claim, sig, &body) {
                Ok(ts) => Some(ts),
                Err(reason) => {
                    tracing::warn!(target: "qalqan::audit", list = %name, %peer, version = v, %reason, "push refused: signature");
                    admin.lists.audit_event("push refused", serde_json::json!({"list": name, "peer": peer.to_string(), "version": v, "reason": reason.to_string()}));
                    return err(StatusCode::FORBIDDEN, reason);
                }
            }
        }
        (None, _) if admin.config.require_signature => return err(StatusCode::FORBIDDEN, "X-Qalqan-Signature is required"),
        _ => None,
    };
    let who = format!("push {method} from {peer}{}", if signature.is_some() { " (signed)" } else { "" });
    let entry = PushEntry {
        method: pmethod,
        // 0: an unsigned push without a version takes the next one (assigned under the update lock)
        version: version.unwrap_or(0),
        base_version: base,
        timestamp: signed_at,
        signature,
        body: Arc::new(body.to_vec()),
    };
    match Arc::clone(&admin.lists).offer_push_async(i, entry, who, received).await {
        Ok(_) => state_json(admin, i),
        Err(PushRefused::Load(crate::lists::LoadError::Held { .. })) => {
            let held = admin.lists.held(i);
            json(
                StatusCode::ACCEPTED,
                serde_json::json!({
                    "list": name,
                    "error": "held by the guard: the update would newly block protected names; the version in force stays until POST /v1/lists/{name}/confirm",
                    "version": admin.lists.state(i).map(|s| s.version),
                    "held": held.as_ref().map(held_json),
                }),
            )
        }
        Err(e) => {
            let status = match &e {
                PushRefused::Stale { .. } | PushRefused::Base { .. } | PushRefused::NoBase | PushRefused::JournalFull { .. } => {
                    StatusCode::CONFLICT
                }
                PushRefused::Patch(_) => StatusCode::BAD_REQUEST,
                PushRefused::Load(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let e = crate::lists::ErrorChain(&e).to_string();
            tracing::warn!(target: "qalqan::audit", list = %name, %peer, error = %e, "push refused");
            admin.lists.audit_event("push refused", serde_json::json!({"list": name, "peer": peer.to_string(), "error": e}));
            err(status, e)
        }
    }
}
