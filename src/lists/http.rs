//! `http(s)://` list sources: pulled every `refresh_s` with conditional
//! requests (ETag / If-Modified-Since), gzip accepted, a size cap enforced
//! while streaming, rustls for TLS. An error status, an HTML page where a
//! list was expected, or an empty body never replaces the list.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::publish::{Incoming, Lists};
use super::{LoadError, SourceMeta};
use crate::config::{ListConfig, SourceKind};

/// One HTTP client for every list (connection reuse, one TLS config).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("qalqan/", env!("CARGO_PKG_VERSION")))
        .gzip(true)
        .connect_timeout(Duration::from_secs(10))
        .build()
}

/// Fetches list `i` once. `Ok(None)` = not modified (304).
pub async fn fetch(client: &reqwest::Client, cfg: &ListConfig, prev: Option<&SourceMeta>) -> Result<Option<(Vec<u8>, SourceMeta)>, LoadError> {
    let SourceKind::Http(url) = &cfg.origin else {
        return Err(LoadError::Fetch { list: cfg.name.clone(), reason: "not an http source".into() });
    };
    let fail = |reason: String| LoadError::Fetch { list: cfg.name.clone(), reason };
    let mut req = client.get(url).timeout(cfg.timeout);
    if let Some(p) = prev {
        if let Some(etag) = &p.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &p.last_modified {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
        }
    }
    let mut resp = req.send().await.map_err(|e| fail(format!("GET {url}: {}", error_chain(&e))))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(fail(format!("GET {url}: HTTP {status}")));
    }
    let header = |name: reqwest::header::HeaderName| {
        resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    if content_type.to_ascii_lowercase().starts_with("text/html") {
        return Err(fail(format!("GET {url}: an HTML page ({content_type}) where a list was expected")));
    }
    let meta = SourceMeta {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
        who: format!("http {url}"),
        ..Default::default()
    };
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(format!("GET {url}: body: {}", error_chain(&e))))? {
        if (body.len() + chunk.len()) as u64 > cfg.max_bytes {
            return Err(LoadError::TooLarge {
                list: cfg.name.clone(),
                what: "HTTP body bytes",
                size: (body.len() + chunk.len()) as u64,
                limit: cfg.max_bytes,
            });
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(fail(format!("GET {url}: empty body")));
    }
    let head: Vec<u8> = body.iter().skip_while(|b| b.is_ascii_whitespace()).take(15).map(u8::to_ascii_lowercase).collect();
    if head.starts_with(b"<!doctype html") || head.starts_with(b"<html") {
        return Err(fail(format!("GET {url}: an HTML page where a list was expected")));
    }
    Ok(Some((body, meta)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Fetches list `i` and offers the result; returns whether the list is in
/// force after it (fetched now, or already had a version).
pub async fn refresh(lists: &Arc<Lists>, client: &reqwest::Client, i: usize) -> Result<(), LoadError> {
    let Some((cfg, _)) = lists.configs().get(i) else { return Ok(()) };
    let prev = lists.state(i).map(|s| s.meta);
    match fetch(client, cfg, prev.as_ref()).await {
        Ok(None) => {
            tracing::debug!(list = %cfg.name, "not modified");
            lists.touch(i);
            Ok(())
        }
        Ok(Some((bytes, meta))) => lists.offer_async(Incoming { list: i, bytes, meta, force: false }).await.map(|_| ()),
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
    i: usize,
    now: Arc<tokio::sync::Notify>,
    immediately: bool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = lists.configs().get(i).map(|c| c.0.refresh).unwrap_or(Duration::from_secs(300));
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
