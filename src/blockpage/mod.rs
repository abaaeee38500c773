//! The HTTP block page on the sinkhole address (`[blockpage]`, RFC 7725): a
//! browser sent there for a blocked name gets `451 Unavailable For Legal
//! Reasons` with a page naming the name, the list, the decision, its
//! authority and date and the operator's contact (`Link: <URL>;
//! rel="blocked-by"` when the list has an `authority_url`); any other name
//! gets a short generic 404. One policy look-up per request, in the policy
//! now published (the one DNS answers from and `explain` reads), so a
//! reload that drops a name turns its page into a 404 at once.
//!
//! Files: `http` (accept, limits, request → response) uses `source` (the
//! decision's fields, a registry row's date) and `template` (pages,
//! languages, escaping).

pub mod http;
pub mod source;
pub mod template;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;

use crate::config::BlockpageConfig;
use crate::lists::publish::Lists;
use crate::metrics::Metrics;
use crate::querylog::BlockedLog;
use crate::rules::Format;
use crate::server::acl::Acl;
use crate::server::gate::Gate;
pub use template::{Lang, TemplateError, Templates};

/// The run-time limits of the block page (`[blockpage]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
}

/// What the block page serves from; shared by its connections.
pub struct BlockPage {
    lists: Arc<Lists>,
    templates: Templates,
    contact: String,
    metrics: Arc<Metrics>,
    log: Option<Arc<BlockedLog>>,
    acl: Acl,
    gate: Arc<Gate>,
    limits: Limits,
    rows: source::SourceRows,
    /// Per list (by `ListId` index): its `Link: <authority_url>; rel="blocked-by"`.
    links: Vec<Option<HeaderValue>>,
}

/// The pages `cfg` names: its `template` (and the language variants beside
/// it), or the shipped ones. Blocking (reads the files); `qalqan check`
/// calls it too.
pub fn load_templates(cfg: &BlockpageConfig) -> Result<Templates, TemplateError> {
    match &cfg.template {
        Some(file) => Templates::load(file, &cfg.template_key_at),
        None => Templates::shipped(),
    }
}

impl BlockPage {
    /// The block page over `lists`, admitting clients in `acl`; blocked
    /// views go to `log` as blocked queries do. Reads the templates (blocking).
    pub fn new(cfg: &BlockpageConfig, acl: Acl, lists: Arc<Lists>, metrics: Arc<Metrics>, log: Option<Arc<BlockedLog>>) -> Result<Self, TemplateError> {
        let templates = load_templates(cfg)?;
        let files = lists
            .configs()
            .iter()
            .map(|c| c.path.clone().filter(|_| c.format == Format::RegistryCsv).map(|p| (p, c.origin.is_remote())))
            .collect();
        let links = lists
            .configs()
            .iter()
            .map(|c| c.authority_url.as_deref().and_then(|u| HeaderValue::from_str(&format!("<{u}>; rel=\"blocked-by\"")).ok()))
            .collect();
        Ok(Self {
            lists,
            templates,
            contact: cfg.contact.clone(),
            metrics,
            log,
            acl,
            gate: Gate::new(cfg.max_connections, cfg.max_per_client),
            limits: Limits {
                max_header_bytes: cfg.max_header_bytes,
                request_timeout: cfg.request_timeout,
                idle_timeout: cfg.idle_timeout,
            },
            rows: source::SourceRows::new(files),
            links,
        })
    }
}

/// Binds the listeners of `cfg`.
pub async fn bind(cfg: &BlockpageConfig) -> Result<Vec<tokio::net::TcpListener>, (SocketAddr, std::io::Error)> {
    let mut out = Vec::new();
    for &addr in &cfg.listen {
        out.push(tokio::net::TcpListener::bind(addr).await.map_err(|e| (addr, e))?);
    }
    Ok(out)
}
