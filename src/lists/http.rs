//! `http(s)://` list sources: pulled every `refresh_s` with conditional
//! requests (ETag / If-Modified-Since), gzip accepted, a size cap enforced
//! while streaming, rustls for TLS. An error status, an HTML page where a
//! list was expected, an empty body, a refused redirect or a bad or missing
//! required signature never replaces the list.
//!
//! Redirects are followed here, not by reqwest (whose default follows ten
//! hops to any scheme and host): at most [`MAX_REDIRECTS`], each checked
//! against the list's `redirects` policy.
//!
//! With `signature = "required"`, every new version needs a detached
//! Ed25519 signature at `signature_url` (default: the list URL + `.sig`):
//! 64 raw bytes or their base64, by one of `regulator_keys`, over
//! `qalqan-pull-v1\n` followed by the list bytes exactly as served
//! (after any `Content-Encoding` is undone).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::publish::{Incoming, Lists};
use super::{LoadError, SourceMeta};
use crate::config::{ListConfig, Redirects, SourceKind};
use crate::rules::ListId;

/// Redirect hops a pull follows at most.
pub const MAX_REDIRECTS: usize = 5;

/// Largest signature file read (a signature is 64 bytes, 88 in base64).
const MAX_SIGNATURE_BYTES: u64 = 1024;

/// The tag that opens the message a pulled list's signature covers.
pub const PULL_SIGNED_TAG: &str = "qalqan-pull-v1";

/// The message a pulled list's detached signature covers.
pub fn pull_signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = format!("{PULL_SIGNED_TAG}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

/// One HTTP client for every list (connection reuse, one TLS config).
/// It follows no redirect itself (see [`get`]).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("qalqan/", env!("CARGO_PKG_VERSION")))
        .gzip(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
}

/// Whether list `cfg` may follow a redirect from `from` to `to`.
fn redirect_allowed(cfg: &ListConfig, insecure_ok: bool, from: &reqwest::Url, to: &reqwest::Url) -> Result<(), String> {
    if to.scheme() != "https" && !(to.scheme() == "http" && insecure_ok) {
        return Err(format!("redirect to `{}`: only https:// (http:// with allow_insecure)", redact_url(to.as_str())));
    }
    match cfg.redirects {
        Redirects::None => Err("redirect refused (redirects = \"none\")".into()),
        Redirects::SameOrigin
            if to.scheme() != from.scheme() || to.host_str() != from.host_str() || to.port_or_known_default() != from.port_or_known_default() =>
        {
            Err(format!(
                "redirect to another origin `{}` refused (redirects = \"same-origin\")",
                redact_url(to.as_str())
            ))
        }
        Redirects::AnyHost if from.scheme() == "https" && to.scheme() != "https" => {
            Err("redirect from https to http refused".into())
        }
        _ => Ok(()),
    }
}

/// GET `url` for list `cfg`, following allowed redirects by hand.
async fn get(
    client: &reqwest::Client,
    cfg: &ListConfig,
    url: &str,
    headers: &[(reqwest::header::HeaderName, String)],
) -> Result<reqwest::Response, LoadError> {
    let fail = |reason: String| LoadError::Fetch { list: cfg.name.clone(), reason };
    let insecure_ok = url.starts_with("http://");
    let mut at = reqwest::Url::parse(url).map_err(|e| LoadError::Config {
        list: cfg.name.clone(),
        what: format!("URL `{}`", redact_url(url)),
        source: e.into(),
    })?;
    for _ in 0..=MAX_REDIRECTS {
        let mut req = client.get(at.clone()).timeout(cfg.timeout);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let shown = redact_url(at.as_str());
        let resp = req.send().await.map_err(|source| LoadError::Http { list: cfg.name.clone(), url: shown.clone(), source })?;
        if !resp.status().is_redirection() || resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| fail(format!("GET {shown}: HTTP {} without a Location", resp.status())))?;
        let next = at.join(location).map_err(|_| fail(format!("GET {shown}: Location `{location}` is not a URL")))?;
        redirect_allowed(cfg, insecure_ok, &at, &next).map_err(|e| fail(format!("GET {shown}: {e}")))?;
        at = next;
    }
    Err(fail(format!("GET {}: more than {MAX_REDIRECTS} redirects", redact_url(url))))
}

/// `url` with its credentials hidden: the userinfo (`user:pass@`) and the
/// values of query parameters that carry secrets (token, key, password,
/// secret, sig, signature, auth, and names containing them) become `REDACTED`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        // not a URL (a path): nothing of this shape to hide
        return url.to_owned();
    };
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("REDACTED");
        let _ = u.set_password(None);
    }
    if u.query().is_some() {
        let secret = |k: &str| {
            let k = k.to_ascii_lowercase();
            ["token", "key", "pass", "secret", "sig", "auth", "credential", "session"].iter().any(|s| k.contains(s))
        };
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) { "REDACTED".to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Why [`read_capped`] has no body.
enum Capped {
    /// Over the limit at this many bytes.
    TooLarge(u64),
    Body(reqwest::Error),
}

/// Reads at most `limit` bytes of a body; more is an error.
async fn read_capped(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, Capped> {
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Body)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(Capped::TooLarge((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetches the detached signature of list `cfg` and checks it over `body`.
async fn check_signature(client: &reqwest::Client, cfg: &ListConfig, keys: &[[u8; 32]], sig_url: &str, body: &[u8]) -> Result<(), LoadError> {
    let shown = redact_url(sig_url);
    let fail = |reason: String| LoadError::Fetch { list: cfg.name.clone(), reason };
    let resp = get(client, cfg, sig_url, &[]).await?;
    if !resp.status().is_success() {
        return Err(fail(format!("signature: GET {shown}: HTTP {}", resp.status())));
    }
    let sig = read_capped(resp, MAX_SIGNATURE_BYTES).await.map_err(|e| match e {
        Capped::TooLarge(size) => fail(format!("signature: GET {shown}: over {MAX_SIGNATURE_BYTES} bytes ({size})")),
        Capped::Body(source) => LoadError::Http { list: cfg.name.clone(), url: shown.clone(), source },
    })?;
    if super::push::verify(keys, &pull_signed_message(body), &sig) {
        Ok(())
    } else {
        Err(fail(format!("signature from {shown} does not verify against any regulator key (signed message: {PULL_SIGNED_TAG}\\nBODY)")))
    }
}

/// Fetches list `i` once. `Ok(None)` = not modified (304). `keys`: the
/// regulator keys a required signature is checked against.
pub async fn fetch(
    client: &reqwest::Client,
    cfg: &ListConfig,
    prev: Option<&SourceMeta>,
    keys: &[[u8; 32]],
) -> Result<Option<(Vec<u8>, SourceMeta)>, LoadError> {
    let SourceKind::Http(url) = &cfg.origin else {
        return Err(LoadError::Fetch { list: cfg.name.clone(), reason: "not an http source".into() });
    };
    let shown = redact_url(url);
    let fail = |reason: String| LoadError::Fetch { list: cfg.name.clone(), reason };
    let mut headers = Vec::new();
    if let Some(p) = prev {
        if let Some(etag) = &p.etag {
            headers.push((reqwest::header::IF_NONE_MATCH, etag.clone()));
        }
        if let Some(lm) = &p.last_modified {
            headers.push((reqwest::header::IF_MODIFIED_SINCE, lm.clone()));
        }
    }
    let resp = get(client, cfg, url, &headers).await?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(fail(format!("GET {shown}: HTTP {status}")));
    }
    let header = |name: reqwest::header::HeaderName| {
        resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    if content_type.to_ascii_lowercase().starts_with("text/html") {
        return Err(fail(format!("GET {shown}: an HTML page ({content_type}) where a list was expected")));
    }
    let meta = SourceMeta {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
        who: format!("http {shown}"),
        ..Default::default()
    };
    let body = read_capped(resp, cfg.max_bytes).await.map_err(|e| match e {
        Capped::TooLarge(size) => LoadError::TooLarge { list: cfg.name.clone(), what: "HTTP body bytes", size, limit: cfg.max_bytes },
        Capped::Body(source) => LoadError::Http { list: cfg.name.clone(), url: shown.clone(), source },
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(fail(format!("GET {shown}: empty body")));
    }
    let head: Vec<u8> = body.iter().skip_while(|b| b.is_ascii_whitespace()).take(15).map(u8::to_ascii_lowercase).collect();
    if head.starts_with(b"<!doctype html") || head.starts_with(b"<html") {
        return Err(fail(format!("GET {shown}: an HTML page where a list was expected")));
    }
    if let Some(sig_url) = &cfg.signature_url {
        check_signature(client, cfg, keys, sig_url, &body).await?;
    }
    Ok(Some((body, meta)))
}

/// Fetches list `i` and offers the result; returns whether the list is in
/// force after it (fetched now, or already had a version).
pub async fn refresh(lists: &Arc<Lists>, client: &reqwest::Client, i: ListId) -> Result<(), LoadError> {
    let Some(cfg) = lists.config(i) else { return Ok(()) };
    let prev = lists.state(i).map(|s| s.meta);
    match fetch(client, &cfg, prev.as_ref(), &lists.signature_keys()).await {
        Ok(None) => {
            tracing::debug!(list = %cfg.name, "not modified");
            lists.touch(i);
            Ok(())
        }
        Ok(Some((bytes, meta))) => lists.offer_async(Incoming::new(i, bytes, meta)).await.map(|_| ()),
        Err(e) => {
            lists.source_failed(&e);
            Err(e)
        }
    }
}

/// Pulls list `i` every `refresh` (and whenever `now` is notified) until
/// `stop`; with `immediately`, the first pull is at once.
pub fn spawn(
    lists: Arc<Lists>,
    client: reqwest::Client,
    i: ListId,
    now: Arc<tokio::sync::Notify>,
    immediately: bool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = lists.config(i).map(|c| c.refresh).unwrap_or(Duration::from_secs(300));
        let mut first = immediately;
        loop {
            if !first {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                    _ = now.notified() => {}
                }
            }
            first = false;
            let _ = refresh(&lists, &client, i).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_rules() {
        let cfg = |toml: &str| crate::config::Config::from_toml_str(toml, "q.toml").unwrap().lists.remove(0);
        let same = cfg("[[lists]]\nname = \"a\"\nsource = \"https://lists.test/l\"\n");
        let any = cfg("[[lists]]\nname = \"a\"\nsource = \"https://lists.test/l\"\nredirects = \"any-host\"\n");
        let none = cfg("[[lists]]\nname = \"a\"\nsource = \"https://lists.test/l\"\nredirects = \"none\"\n");
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        let from = u("https://lists.test/l");
        let cases: &[(&str, &ListConfig, &str, bool)] = &[
            ("same origin", &same, "https://lists.test/other", true),
            ("other host", &same, "https://mirror.test/l", false),
            ("other port", &same, "https://lists.test:8443/l", false),
            ("downgrade", &same, "http://lists.test/l", false),
            ("any host", &any, "https://mirror.test/l", true),
            ("any host, downgrade", &any, "http://mirror.test/l", false),
            ("other scheme", &any, "ftp://mirror.test/l", false),
            ("none", &none, "https://lists.test/other", false),
        ];
        for (name, c, to, ok) in cases {
            assert_eq!(redirect_allowed(c, false, &from, &u(to)).is_ok(), *ok, "case `{name}`");
        }
    }

    #[test]
    fn urls_are_redacted() {
        let cases = [
            ("https://user:pa55@lists.test/l.txt", "https://REDACTED@lists.test/l.txt"),
            ("https://lists.test/l?token=abc&format=hosts", "https://lists.test/l?token=REDACTED&format=hosts"),
            ("https://lists.test/l?api_key=1&Password=2&sig=3&secret=4", "https://lists.test/l?api_key=REDACTED&Password=REDACTED&sig=REDACTED&secret=REDACTED"),
            ("https://lists.test/l.txt", "https://lists.test/l.txt"),
            ("/etc/qalqan/l.txt", "/etc/qalqan/l.txt"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
