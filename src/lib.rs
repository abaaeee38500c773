//! qalqan: a DNS filtering resolver.
//!
//! `serve(App, Sockets, CancellationToken)` is the whole server; `main.rs`
//! and the integration tests both call it with sockets they bound.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod diag;
pub mod lists;
pub mod metrics;
pub mod name;
pub mod outbox;
pub mod policy;
pub mod querylog;
pub mod resolve;
pub mod rules;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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
    #[error("list {0}")]
    List(#[from] lists::LoadError),
    #[error("{} lists failed to load; first: {}", .0.len(), .0.first().map(|e| e.to_string()).unwrap_or_default())]
    Lists(Vec<lists::LoadError>),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no upstream servers: {0}")]
    Upstream(String),
    #[error("blocked-query log: {0}")]
    BlockedLog(#[source] std::io::Error),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("file watcher: {0}")]
    Watch(#[from] notify::Error),
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
        let specs = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect::<Vec<(_, Option<PathBuf>)>>();
        let signatures = config.admin.as_ref().map_or_else(Default::default, |a| lists::push::SignaturePolicy {
            keys: a.regulator_keys.clone(),
            required: a.require_signature,
        });
        let mut lists = Lists::new(specs, Arc::clone(&metrics), config.state_dir.clone())
            .with_reload_nice(config.reload_nice)
            .with_signatures(signatures);
        if let Some(f) = after_build {
            lists = lists.with_after_build(f);
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
}

impl Sockets {
    pub fn new(udp: Vec<UdpSocket>, tcp: Vec<TcpListener>) -> Self {
        Self { udp, tcp, metrics: None, admin: None }
    }

    /// With an already bound listener for the push API.
    pub fn with_admin(mut self, l: TcpListener) -> Self {
        self.admin = Some(l);
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
                    let probe = bind_udp(addr, false).map_err(|source| StartError::Bind { addr, source })?;
                    probe.local_addr().map_err(|source| StartError::Bind { addr, source })?
                } else {
                    addr
                };
                let u = match bind_udp(want, workers > 1) {
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
                            udp.push(bind_udp(bound, true).map_err(|source| StartError::Bind { addr: bound, source })?);
                        }
                        break;
                    }
                    Err(source) if tries == 0 => return Err(StartError::Bind { addr: bound, source }),
                    Err(_) => continue,
                }
            }
        }
        Ok(Self { udp, tcp, metrics: None, admin: None })
    }

    /// Local addresses of the UDP sockets.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|s| s.local_addr().ok()).collect()
    }
}

/// A non-blocking UDP socket on `addr`, with `SO_REUSEPORT` if `reuse_port`.
fn bind_udp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// The query handler for `app`, forwarding to `upstreams` (no sockets: the
/// server, the fuzz targets and `server::wire` use it).
pub fn build_handler(app: &App, upstreams: Vec<SocketAddr>, blocked_log: Option<Arc<querylog::BlockedLog>>) -> Handler {
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
    let shared = Arc::new(Shared {
        policy: Arc::clone(&app.lists.policy),
        cache: Cache::with_limits(
            resolve::cache::Limits {
                max_entries: cfg.cache_max_entries,
                max_bytes: cfg.cache_max_bytes,
                max_reply_bytes: cfg.cache_max_reply_bytes,
            },
            TtlPolicy { min_ttl: cfg.cache_min_ttl, max_ttl: cfg.cache_max_ttl, max_negative_ttl: cfg.cache_max_negative_ttl },
        ),
        forwarder,
        acl: Acl::new(cfg.allow_clients.clone()),
        sinkhole: cfg.sinkhole.clone(),
        max_udp_payload: cfg.max_udp_payload,
        inflight: Semaphore::new(cfg.max_inflight),
        metrics: Arc::clone(&app.metrics),
        blocked_log,
        notify_targets: std::sync::OnceLock::new(),
        blocked_counters: app.metrics.blocked_handles(&cfg.lists.iter().map(|l| l.name.clone()).collect::<Vec<_>>()),
        rate_limit: cfg.rate_limit.as_ref().map(|r| {
            (server::ratelimit::RateLimiter::new(r.qps, r.burst, r.ipv4_prefix, r.ipv6_prefix, r.max_tracked), r.drop)
        }),
        outsiders: server::handler::Outsiders {
            drop: cfg.outside_acl_drop,
            refused: server::ratelimit::Budget::new(cfg.outside_acl_refused_qps),
        },
    });
    Handler { shared }
}

/// Serves until `stop` is cancelled; logs one line containing `ready` once
/// every listener is registered.
pub async fn serve(app: App, sockets: Sockets, stop: CancellationToken) -> Result<(), StartError> {
    let cfg = &app.config;
    let upstreams = if cfg.upstreams.is_empty() {
        let s = Forwarder::system_servers().map_err(StartError::Upstream)?;
        if s.is_empty() {
            return Err(StartError::Upstream("/etc/resolv.conf lists no nameservers".into()));
        }
        s
    } else {
        cfg.upstreams.clone()
    };
    let blocked_log = match &cfg.blocked_log {
        Some(target) => Some(Arc::new(
            querylog::BlockedLog::start(
                target.clone(),
                cfg.log_anonymize,
                cfg.log_hash_key.as_deref(),
                cfg.log_queue,
                app.metrics.blocked_log_dropped.clone(),
            )
            .map_err(StartError::BlockedLog)?,
        )),
        None => None,
    };
    if let Some(log) = &blocked_log {
        let log = Arc::clone(log);
        let stop = stop.clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = hup.recv() => log.reopen(),
                    }
                }
            });
        }
    }
    let handler = build_handler(&app, upstreams.clone(), blocked_log.clone());
    let shared = Arc::clone(&handler.shared);
    let forwarder = Arc::clone(&shared.forwarder);
    let listen: Vec<String> = sockets.udp_addrs().iter().map(ToString::to_string).collect();
    for s in &sockets.udp {
        if let Err(e) = socket2::SockRef::from(s).set_recv_buffer_size(cfg.udp_recv_buffer_bytes) {
            tracing::warn!(error = %e, "could not set the UDP receive buffer size");
        }
    }
    let metrics_listener = match (sockets.metrics, cfg.metrics_listen) {
        (Some(l), _) => Some(l),
        (None, Some(addr)) => Some(diag::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
        (None, None) => None,
    };
    let shared_for_len = Arc::clone(&shared);
    let diag_state = Arc::new(diag::DiagState {
        metrics: Arc::clone(&app.metrics),
        lists: Arc::clone(&app.lists),
        forwarder: Some(Arc::clone(&forwarder)),
        cache_size: Box::new(move || (shared_for_len.cache.len(), shared_for_len.cache.bytes())),
        serving: std::sync::atomic::AtomicBool::new(false),
    });
    let http_stop = CancellationToken::new();
    let http_task = metrics_listener.map(|l| {
        if let Ok(a) = l.local_addr() {
            tracing::info!(addr = %a, "metrics endpoint listening");
        }
        tokio::spawn(diag::serve(l, Arc::clone(&diag_state), http_stop.clone()))
    });
    // remote sources: a list with no version yet is fetched before `ready`;
    // one served from its persisted copy is refreshed in the background
    let sources_stop = stop.child_token();
    let mut source_tasks = Vec::new();
    let mut refreshers: std::collections::HashMap<usize, Arc<tokio::sync::Notify>> = std::collections::HashMap::new();
    let http_client = lists::http::client()?;
    let mut notify_targets = Vec::new();
    for (i, (lc, _)) in app.lists.configs().iter().enumerate() {
        if let config::SourceKind::Http(_) = &lc.origin {
            let pending = app.lists.state(i).is_none();
            if pending {
                lists::http::refresh(&app.lists, &http_client, i).await?;
            }
            let now = Arc::new(tokio::sync::Notify::new());
            refreshers.insert(i, Arc::clone(&now));
            source_tasks.push(lists::http::spawn(
                Arc::clone(&app.lists),
                http_client.clone(),
                i,
                now,
                !pending,
                sources_stop.clone(),
            ));
        }
        if let config::SourceKind::Axfr { primary, zone } = &lc.origin {
            let mut state = lists::zone_sync::from_persisted(&app.lists, i);
            let from_copy = state.is_some();
            if app.lists.state(i).is_none() {
                lists::zone_sync::sync(&app.lists, i, &mut state).await?;
            }
            let now = Arc::new(tokio::sync::Notify::new());
            if from_copy {
                now.notify_one(); // catch up with the primary at once
            }
            refreshers.insert(i, Arc::clone(&now));
            if let Ok(zone) = name::QName::parse(zone) {
                // config checked the key; were it unparsable here, no target
                // (every NOTIFY refused) rather than one accepting unsigned ones
                match lc.tsig.as_deref().map(lists::source::TsigKey::parse).transpose() {
                    Ok(tsig) => notify_targets.push(server::notify::NotifyTarget {
                        zone,
                        primary: primary.ip(),
                        tsig,
                        refresh: Arc::clone(&now),
                    }),
                    Err(e) => tracing::warn!(list = %lc.name, error = %e, "NOTIFY disabled for this list"),
                }
            }
            source_tasks.push(lists::zone_sync::spawn(Arc::clone(&app.lists), i, state, now, sources_stop.clone()));
        }
        if lc.origin == config::SourceKind::Push && app.lists.state(i).is_none() {
            tracing::warn!(list = %lc.name, "push list has no version yet: not enforced until the first push (/readyz stays 503)");
        }
    }
    let _ = shared.notify_targets.set(notify_targets);
    let admin_task = match (&cfg.admin, sockets.admin) {
        (Some(acfg), listener) => {
            let token = admin::read_token(&acfg.token_file)?;
            let listener = match listener {
                Some(l) => l,
                None => TcpListener::bind(acfg.listen).await.map_err(|source| StartError::Bind { addr: acfg.listen, source })?,
            };
            if let Ok(a) = listener.local_addr() {
                tracing::info!(addr = %a, signatures = acfg.require_signature, "push API listening");
            }
            let refreshers = refreshers.clone();
            let adm = Arc::new(admin::Admin::new(
                Arc::clone(&app.lists),
                acfg.clone(),
                token,
                Box::new(move |i| match refreshers.get(&i) {
                    Some(n) => {
                        n.notify_one();
                        true
                    }
                    None => false,
                }),
            ));
            Some(tokio::spawn(admin::serve(listener, adm, http_stop.clone())))
        }
        (None, _) => None,
    };
    let watch_stop = stop.child_token();
    let watcher = lists::watch::spawn(Arc::clone(&app.lists), watch_stop.clone())?;
    let rules = app.lists.policy.load().index.len();
    let nlists = cfg.lists.len();
    let ready_state = Arc::clone(&diag_state);
    let tcp_limits = server::tcp::TcpLimits {
        idle: cfg.tcp_idle_timeout,
        max_total: cfg.max_tcp_connections,
        max_per_client: cfg.max_tcp_per_client,
        lifetime: cfg.tcp_max_lifetime,
        max_queries: cfg.tcp_max_queries,
    };
    server::run(handler, cfg.fast_path, tcp_limits, sockets.udp, sockets.tcp, cfg.drain_timeout, stop.clone(), move || {
        ready_state.serving.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(listen = ?listen, upstreams = ?upstreams, lists = nlists, rules, "ready");
    })
    .await;
    watch_stop.cancel();
    let _ = watcher.await;
    sources_stop.cancel();
    for t in source_tasks {
        let _ = t.await;
    }
    // HTTP last, so a final scrape sees the drain
    http_stop.cancel();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    if let Some(t) = http_task {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}
