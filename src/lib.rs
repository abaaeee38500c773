//! qalqan: a DNS filtering resolver.
//!
//! `serve(App, Sockets, CancellationToken)` is the whole server; `main.rs`
//! and the integration tests both call it with sockets they bound. The
//! module map and the path of a query and of a list update are in
//! `docs/architecture.md`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod blockpage;
pub mod config;
pub mod ctl;
pub mod diag;
pub mod dnstap;
pub mod dnssec;
pub mod keys;
pub mod lists;
pub mod metrics;
pub mod name;
pub mod policy;
pub mod querylog;
pub mod resolve;
pub mod rules;
pub mod serve;
pub mod server;
pub mod sys;
pub mod wire;

pub use serve::serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use config::Config;
use lists::publish::Lists;
use metrics::Metrics;
use resolve::cache::{Cache, TtlPolicy};
use resolve::forward::Forwarder;
use server::acl::Acl;
use server::handler::{Handler, Shared};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    List(#[from] lists::LoadError),
    #[error("{} lists failed to load; first: {}", .0.len(), .0.first().map(|e| e.chain().to_string()).unwrap_or_default())]
    Lists(Vec<lists::LoadError>),
    #[error("metrics registry")]
    Metrics(#[from] prometheus::Error),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no upstream servers configured and /etc/resolv.conf unreadable")]
    SystemResolvers(#[source] hickory_resolver::net::NetError),
    #[error("no upstream servers: /etc/resolv.conf lists no nameservers")]
    NoUpstreams,
    #[error(transparent)]
    Recursor(#[from] resolve::recurse::RecurseError),
    #[error("opening the blocked-query log")]
    BlockedLog(#[source] std::io::Error),
    #[error("starting the dnstap writer")]
    Dnstap(#[source] std::io::Error),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Audit(#[from] audit::OpenError),
    #[error(transparent)]
    Guard(#[from] lists::guard::GuardError),
    #[error("HTTP client")]
    Http(#[from] reqwest::Error),
    #[error("file watcher")]
    Watch(#[from] notify::Error),
    #[error("[tls]: {0}")]
    Tls(#[from] server::tls::TlsError),
    #[error("encrypted listeners: {0}")]
    Encrypted(#[from] server::encrypted::EncryptedError),
    #[error("encrypted listeners were handed in, but the config has no [tls] cert and key")]
    NoCertificate,
    #[error("DDR: {0}")]
    Ddr(String),
    #[error("[blockpage]")]
    Blockpage(#[source] blockpage::TemplateError),
    #[error("block page listeners were handed in, but the config has no [blockpage]")]
    NoBlockpage,
}

/// A configured server with its lists loaded.
pub struct App {
    pub config: Config,
    pub lists: Arc<Lists>,
    pub metrics: Arc<Metrics>,
}

impl App {
    /// Loads every list of `config`. Blocking (reads and compiles lists).
    pub fn new(config: Config) -> Result<Self, StartError> {
        Self::load(config, None)
    }

    /// [`App::new`], running `after_build` after every list build, the
    /// first load included (see [`Lists::with_after_build`]).
    pub fn with_after_build(config: Config, after_build: fn()) -> Result<Self, StartError> {
        Self::load(config, Some(after_build))
    }

    fn load(config: Config, after_build: Option<fn()>) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new()?);
        let mut specs = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect::<Vec<(_, Option<PathBuf>)>>();
        specs.extend(lists::catalog::slot_specs(&config));
        let signatures = config.admin.as_ref().map_or_else(Default::default, |a| lists::push::SignaturePolicy {
            keys: a.regulator_keys.clone(),
            required: a.require_signature,
        });
        let mut lists = Lists::new(specs, Arc::clone(&metrics), config.state_dir.clone())
            .with_reload_nice(config.reload_nice)
            .with_delta(config.delta_merge_share, config.delta_diff_max_lines)
            .with_signatures(signatures);
        if let Some(f) = after_build {
            lists = lists.with_after_build(f);
        }
        if let Some(g) = &config.guard {
            let guard = lists::guard::Guard::load(&g.protected, g.on_hit)?;
            tracing::info!(path = %g.protected.display(), names = guard.names.len(), on_hit = g.on_hit.as_str(), "guard: protected names loaded");
            metrics.guard_protected.set(i64::try_from(guard.names.len()).unwrap_or(i64::MAX));
            lists = lists.with_guard(guard);
        }
        let lists = Arc::new(lists);
        lists.load_initial().map_err(StartError::Lists)?;
        Ok(Self { config, lists, metrics })
    }

    /// Parses `toml` and loads its lists (tests use this).
    pub fn from_toml_str(toml: &str) -> Result<Self, StartError> {
        Self::new(Config::from_toml_str(toml, "<inline>")?)
    }
}

/// Sockets bound by the caller: one UDP socket and one TCP listener per address.
pub struct Sockets {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    /// The operator HTTP endpoint; when `None`, `serve` binds `metrics.listen` itself.
    pub metrics: Option<TcpListener>,
    /// The push API listener; when `None`, `serve` binds `admin.listen` itself.
    pub admin: Option<TcpListener>,
    /// SIGHUPs received by the process (main owns the signal; a new value
    /// per SIGHUP): every list reloads and the blocked-query log reopens.
    pub hangup: Option<tokio::sync::watch::Receiver<u64>>,
    /// DoT, DoH and DoQ listeners; when all are empty, `serve` binds
    /// `[server] dot_listen`, `doh_listen` and `doq_listen` itself.
    pub dot: Vec<TcpListener>,
    pub doh: Vec<TcpListener>,
    pub doq: Vec<std::net::UdpSocket>,
    /// The block page's listeners; when empty, `serve` binds `[blockpage] listen`.
    pub blockpage: Vec<TcpListener>,
}

impl Sockets {
    pub fn new(udp: Vec<UdpSocket>, tcp: Vec<TcpListener>) -> Self {
        Self { udp, tcp, metrics: None, admin: None, hangup: None, dot: Vec::new(), doh: Vec::new(), doq: Vec::new(), blockpage: Vec::new() }
    }

    /// With already bound block page listeners (`[blockpage] listen` is then not bound).
    pub fn with_blockpage(mut self, listeners: Vec<TcpListener>) -> Self {
        self.blockpage = listeners;
        self
    }

    /// With already bound DoT, DoH and DoQ listeners (the config's
    /// `dot_listen`, `doh_listen`, `doq_listen` are then not bound).
    pub fn with_encrypted(mut self, dot: Vec<TcpListener>, doh: Vec<TcpListener>, doq: Vec<std::net::UdpSocket>) -> Self {
        self.dot = dot;
        self.doh = doh;
        self.doq = doq;
        self
    }

    /// With an already bound listener for the push API.
    pub fn with_admin(mut self, l: TcpListener) -> Self {
        self.admin = Some(l);
        self
    }

    /// With the process's SIGHUPs (see [`Sockets::hangup`]).
    pub fn with_hangup(mut self, h: tokio::sync::watch::Receiver<u64>) -> Self {
        self.hangup = Some(h);
        self
    }

    /// With an already bound HTTP listener for /metrics etc.
    pub fn with_metrics(mut self, l: TcpListener) -> Self {
        self.metrics = Some(l);
        self
    }

    /// Binds UDP and TCP on every address, one UDP socket per address.
    pub async fn bind(addrs: &[SocketAddr]) -> Result<Self, StartError> {
        Self::bind_workers(addrs, 1).await
    }

    /// Binds TCP and `workers` UDP sockets on every address; with more than
    /// one they share the address with `SO_REUSEPORT`, and the kernel spreads
    /// clients (by address and port) across them, so each UDP worker reads
    /// its own socket and no two contend for one receive queue.
    pub async fn bind_workers(addrs: &[SocketAddr], workers: usize) -> Result<Self, StartError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let workers = workers.max(1);
        for &addr in addrs {
            // port 0: TCP takes the port the kernel gave UDP, so both serve one
            // address; retried a few times, as that port may be taken for TCP
            let mut tries = if addr.port() == 0 { 20 } else { 1 };
            loop {
                tries -= 1;
                // port 0 with SO_REUSEPORT may be given a port that another
                // SO_REUSEPORT socket of the same user already has (the kernel
                // lets them share it): pick the port without it first
                let want = if addr.port() == 0 && workers > 1 {
                    let probe = sys::udp::bind(addr, false).map_err(|source| StartError::Bind { addr, source })?;
                    probe.local_addr().map_err(|source| StartError::Bind { addr, source })?
                } else {
                    addr
                };
                let u = match sys::udp::bind(want, workers > 1) {
                    Ok(u) => u,
                    Err(_) if want != addr && tries > 0 => continue,
                    Err(source) => return Err(StartError::Bind { addr, source }),
                };
                let bound = u.local_addr().map_err(|source| StartError::Bind { addr, source })?;
                match TcpListener::bind(bound).await {
                    Ok(t) => {
                        tcp.push(t);
                        udp.push(u);
                        for _ in 1..workers {
                            udp.push(sys::udp::bind(bound, true).map_err(|source| StartError::Bind { addr: bound, source })?);
                        }
                        break;
                    }
                    Err(source) if tries == 0 => return Err(StartError::Bind { addr: bound, source }),
                    Err(_) => continue,
                }
            }
        }
        Ok(Self::new(udp, tcp))
    }

    /// Local addresses of the UDP sockets.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|s| s.local_addr().ok()).collect()
    }
}

/// The `[[views]]` table (`None` without views).
pub fn views_of(views: &[config::ViewConfig]) -> Option<Arc<policy::views::Views>> {
    if views.is_empty() {
        return None;
    }
    let prefixes: Vec<(ipnet::IpNet, usize)> = views.iter().enumerate().flat_map(|(i, v)| v.clients.iter().map(move |c| (*c, i))).collect();
    let all = views
        .iter()
        .map(|v| policy::views::View { name: v.name.clone(), lists: policy::views::ListMask::of(v.lists.iter().copied()) })
        .collect();
    Some(Arc::new(policy::views::Views::new(all, &prefixes)))
}

/// The query handler for `app`, forwarding to `upstreams`, or resolving
/// with `recurser` when it is given (no sockets: the server, the fuzz
/// targets and `server::slow` use it).
pub fn build_handler(
    app: &App,
    upstreams: Vec<SocketAddr>,
    recurser: Option<Arc<resolve::recurse::Recurser>>,
    blocked_log: Option<Arc<querylog::BlockedLog>>,
    dnstap: Option<Arc<dnstap::Dnstap>>,
) -> Handler {
    let cfg = &app.config;
    let forwarder = Forwarder::new(
        upstreams,
        cfg.upstream_timeout,
        cfg.upstream_max_inflight,
        resolve::forward::PoolConfig {
            sockets: cfg.upstream_udp_sockets,
            queries_per_socket: cfg.upstream_udp_socket_queries,
            socket_lifetime: cfg.upstream_udp_socket_lifetime,
            max_waiters: cfg.upstream_max_waiters,
            case_randomization: cfg.upstream_case_randomization,
        },
        &app.metrics,
    );
    // forward mode with [dnssec] validate: DO questions go through the validator
    let validating = match (&recurser, &cfg.recursion.dnssec) {
        (None, Some(_)) => resolve::recurse::Recurser::forwarding(
            Arc::clone(&forwarder),
            cfg.upstream_timeout,
            cfg.recursion.clone(),
            &app.metrics,
        )
        .map_err(|e| tracing::warn!(error = %e, "forward-mode validation off"))
        .ok()
        .map(Arc::new),
        _ => None,
    };
    let shared = Arc::new(Shared {
        validating,
        policy: Arc::clone(&app.lists.policy),
        cache: Cache::with_limits(
            resolve::cache::Limits {
                max_entries: cfg.cache_max_entries,
                max_bytes: cfg.cache_max_bytes,
                max_reply_bytes: cfg.cache_max_reply_bytes,
            },
            TtlPolicy {
                min_ttl: cfg.cache_min_ttl,
                max_ttl: cfg.cache_max_ttl,
                max_negative_ttl: cfg.cache_max_negative_ttl,
                stale_max: cfg.cache_stale_max,
            },
        ),
        forwarder,
        recurser,
        acl: Acl::new(cfg.allow_clients.clone()),
        sinkhole: cfg.sinkhole.clone(),
        max_udp_payload: cfg.max_udp_payload,
        inflight: Semaphore::new(cfg.max_inflight),
        metrics: Arc::clone(&app.metrics),
        blocked_log,
        dnstap,
        notify_targets: std::sync::OnceLock::new(),
        blocked_counters: app.metrics.blocked_handles(&counter_names(cfg)),
        shadow_counters: app.metrics.shadow_handles(&counter_names(cfg)),
        rate_limit: cfg.rate_limit.as_ref().map(|r| {
            (server::ratelimit::RateLimiter::new(r.qps, r.burst, r.ipv4_prefix, r.ipv6_prefix, r.max_tracked), r.drop)
        }),
        prefetch: cfg.cache_prefetch,
        outsiders: server::handler::Outsiders {
            drop: cfg.outside_acl_drop,
            refused: server::ratelimit::Budget::new(cfg.outside_acl_refused_qps),
        },
        discovery: std::sync::OnceLock::new(),
        sde: cfg.sde,
        views: views_of(&cfg.views),
    });
    Handler { shared }
}

/// The `list` label of `qalqan_blocked_total` and `qalqan_shadow_hits_total`
/// for each list id: its name, and for a catalog's member slots the
/// catalog's (`catz:ZONE`: members come and go, the counter handles are
/// made once at start).
fn counter_names(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = cfg.lists.iter().map(|l| l.name.clone()).collect();
    for c in &cfg.catalogs {
        names.extend(std::iter::repeat_n(config::CatalogConfig::member_name(&c.zone), c.max_members));
    }
    names
}
