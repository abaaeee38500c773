//! The server as a composition of named parts, started in order and
//! stopped in reverse: upstreams, the blocked-query log, the query handler,
//! the operator HTTP endpoint, the list sources (pulls, zone transfers),
//! the push API, the file watcher, the block page, then DNS itself until `stop`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceKind, UpstreamMode};
use crate::lists::publish::Lists;
use crate::resolve::forward::Forwarder;
use crate::resolve::recurse::Recurser;
use crate::rules::ListId;
use crate::server::notify::{NotifyTarget, NotifyZone};
use crate::{admin, blockpage, build_handler, diag, lists, name, querylog, server, sys, App, Sockets, StartError};

/// Serves until `stop` is cancelled; logs one line containing `ready` once
/// every listener is registered.
pub async fn serve(app: App, sockets: Sockets, stop: CancellationToken) -> Result<(), StartError> {
    let cfg = &app.config;
    let (upstreams, recurser) = match cfg.upstream_mode {
        UpstreamMode::Forward => (upstreams(cfg)?, None),
        UpstreamMode::Recursive => (Vec::new(), Some(Arc::new(Recurser::new(&cfg.root_hints, cfg.upstream_timeout, cfg.recursion.clone(), &app.metrics)?))),
    };
    let blocked_log = blocked_log(&app, sockets.hangup.clone(), &stop)?;
    if let Some(path) = &cfg.audit_log {
        app.lists.set_audit(Arc::new(crate::audit::AuditLog::open(path)?));
    }
    let page_log = blocked_log.clone();
    let dnstap = match &cfg.dnstap {
        Some(settings) => {
            let counters = crate::dnstap::Counters { frames: app.metrics.dnstap_frames.clone(), dropped: app.metrics.dnstap_dropped.clone() };
            tracing::info!(reader = %settings.endpoint, "dnstap on");
            Some(Arc::new(crate::dnstap::Dnstap::start(settings.clone(), counters).map_err(StartError::Dnstap)?))
        }
        None => None,
    };
    let handler = build_handler(&app, upstreams.clone(), recurser, blocked_log, dnstap);
    let shared = Arc::clone(&handler.shared);
    let listen: Vec<String> = sockets.udp_addrs().iter().map(ToString::to_string).collect();
    for s in &sockets.udp {
        if let Err(e) = sys::udp::set_recv_buffer(s, cfg.udp_recv_buffer_bytes) {
            tracing::warn!(error = %e, "could not set the UDP receive buffer size");
        }
    }
    let http_stop = CancellationToken::new();
    let (diag_state, http_task) = http_endpoint(&app, &shared, sockets.metrics, &http_stop).await?;
    let sources_stop = stop.child_token();
    let mut sources = Sources::spawn(&app.lists, &app.config, &sources_stop).await?;
    let _ = shared.notify_targets.set(std::mem::take(&mut sources.notify_targets));
    let admin_task = push_api(&app, sockets.admin, sources.refreshers.clone(), &http_stop).await?;
    let watch_stop = stop.child_token();
    let (encrypted, cert_reloader) = encrypted(&app, &shared, (sockets.dot, sockets.doh, sockets.doq), sockets.hangup.clone(), &watch_stop).await?;
    let watcher = lists::watch::spawn(Arc::clone(&app.lists), sockets.hangup, watch_stop.clone())?;
    let page_tasks = block_page(&app, page_log, sockets.blockpage, &watch_stop).await?;

    let rules = app.lists.policy.load().index.len();
    let nlists = cfg.lists.len();
    let tcp_limits = server::tcp::TcpLimits {
        idle: cfg.tcp_idle_timeout,
        max_total: cfg.max_tcp_connections,
        max_per_client: cfg.max_tcp_per_client,
        lifetime: cfg.tcp_max_lifetime,
        max_queries: cfg.tcp_max_queries,
        // one query at a time, as before DoT shared this loop
        pipeline: 1,
    };
    let listeners = server::Listeners { udp: sockets.udp, tcp: sockets.tcp, encrypted };
    let ready_state = Arc::clone(&diag_state);
    server::run(handler, listeners, tcp_limits, cfg.drain_timeout, stop.clone(), move || {
        ready_state.serving.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(listen = ?listen, upstreams = ?upstreams, lists = nlists, rules, "ready");
    })
    .await;

    watch_stop.cancel();
    let _ = watcher.await;
    for t in page_tasks {
        let _ = t.await;
    }
    if let Some(t) = cert_reloader {
        let _ = t.await;
    }
    sources_stop.cancel();
    sources.join().await;
    // HTTP last, so a final scrape sees the drain
    http_stop.cancel();
    for t in [admin_task, http_task].into_iter().flatten() {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}

type EncryptedSockets = (Vec<TcpListener>, Vec<TcpListener>, Vec<std::net::UdpSocket>);

/// The encrypted listeners (handed in, or bound from `[server] dot_listen`,
/// `doh_listen`, `doq_listen`) with the certificate and its reloader, and the
/// names answered locally (DDR with those listeners, the canary domain).
async fn encrypted(
    app: &App,
    shared: &Arc<server::handler::Shared>,
    (mut dot, mut doh, mut doq): EncryptedSockets,
    hangup: Option<watch::Receiver<u64>>,
    stop: &CancellationToken,
) -> Result<(Option<server::encrypted::Encrypted>, Option<JoinHandle<()>>), StartError> {
    let cfg = &app.config;
    if dot.is_empty() && doh.is_empty() && doq.is_empty() {
        let bind = |addr: SocketAddr| async move { TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source }) };
        for &a in &cfg.dot_listen {
            dot.push(bind(a).await?);
        }
        for &a in &cfg.doh_listen {
            doh.push(bind(a).await?);
        }
        for &a in &cfg.doq_listen {
            doq.push(std::net::UdpSocket::bind(a).map_err(|source| StartError::Bind { addr: a, source })?);
        }
    }
    if dot.is_empty() && doh.is_empty() && doq.is_empty() {
        let _ = shared.discovery.set(server::ddr::Discovery::new(None, cfg.canary_nxdomain).map_err(StartError::Ddr)?);
        return Ok((None, None));
    }
    let Some(tls) = &cfg.tls else { return Err(StartError::NoCertificate) };
    let certs = server::tls::CertStore::open(&tls.cert, &tls.key, Arc::clone(&app.metrics))?;
    let info = certs.info();
    let name = tls.name.clone().or_else(|| info.first_name().map(ToOwned::to_owned));
    if let Some(n) = &name {
        if !info.covers(n) {
            tracing::warn!(name = %n, cert = %tls.cert.display(), "the certificate does not cover [tls] name: clients will refuse it");
        }
    }
    let left_days = info.seconds_left(unix_now()) / 86_400;
    if left_days < 14 {
        tracing::warn!(cert = %tls.cert.display(), days = left_days, "the TLS certificate expires soon (or has expired)");
    }
    let addrs = |l: &[TcpListener]| l.iter().filter_map(|l| l.local_addr().ok()).collect::<Vec<_>>();
    let endpoints = server::ddr::Endpoints { dot: addrs(&dot), doh: addrs(&doh), doq: doq.iter().filter_map(|s| s.local_addr().ok()).collect() };
    let ddr = if cfg.ddr {
        let Some(n) = name.as_deref() else {
            return Err(StartError::Ddr("the certificate has no DNS name to announce: set [tls] name".into()));
        };
        Some((n, &endpoints))
    } else {
        None
    };
    let _ = shared.discovery.set(server::ddr::Discovery::new(ddr, cfg.canary_nxdomain).map_err(StartError::Ddr)?);
    let ctx = server::encrypted::Context::new(&certs, cfg.encrypted)?;
    let reloader = server::tls::spawn_reloader(certs, hangup, stop.clone())?;
    tracing::info!(dot = ?endpoints.dot, doh = ?endpoints.doh, doq = ?endpoints.doq, name = ?name, "encrypted DNS listening");
    Ok((Some(server::encrypted::Encrypted { dot, doh, doq, ctx }), Some(reloader)))
}

/// The block page (`[blockpage]`), when configured: on the listeners handed
/// in, or bound from `listen`; a view of a blocked name is logged to `log`.
async fn block_page(
    app: &App,
    log: Option<Arc<querylog::BlockedLog>>,
    mut listeners: Vec<TcpListener>,
    stop: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let cfg = &app.config;
    let Some(bp) = &cfg.blockpage else {
        return if listeners.is_empty() { Ok(Vec::new()) } else { Err(StartError::NoBlockpage) };
    };
    let acl = server::acl::Acl::new(cfg.allow_clients.clone());
    // reads the operator's template files (a few KB), once, before serving
    let page = blockpage::BlockPage::new(bp, acl, Arc::clone(&app.lists), Arc::clone(&app.metrics), log).map_err(StartError::Blockpage)?;
    if listeners.is_empty() {
        listeners = blockpage::bind(bp).await.map_err(|(addr, source)| StartError::Bind { addr, source })?;
    }
    let page = Arc::new(page);
    let addrs: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    tracing::info!(listen = ?addrs, template = %page_files(bp), "block page listening");
    Ok(listeners.into_iter().map(|l| tokio::spawn(blockpage::http::serve(l, Arc::clone(&page), stop.clone()))).collect())
}

fn page_files(bp: &crate::config::BlockpageConfig) -> String {
    bp.template.as_ref().map_or_else(|| "shipped".to_owned(), |p| p.display().to_string())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The configured upstreams, or the nameservers of /etc/resolv.conf.
fn upstreams(cfg: &Config) -> Result<Vec<SocketAddr>, StartError> {
    if !cfg.upstreams.is_empty() {
        return Ok(cfg.upstreams.clone());
    }
    let s = Forwarder::system_servers().map_err(StartError::SystemResolvers)?;
    if s.is_empty() {
        return Err(StartError::NoUpstreams);
    }
    Ok(s)
}

/// The blocked-query log if configured, reopened on every SIGHUP.
fn blocked_log(app: &App, hangup: Option<watch::Receiver<u64>>, stop: &CancellationToken) -> Result<Option<Arc<querylog::BlockedLog>>, StartError> {
    let cfg = &app.config;
    let Some(target) = &cfg.blocked_log else { return Ok(None) };
    let log = Arc::new(
        querylog::BlockedLog::start(
            target.clone(),
            cfg.log_anonymize,
            cfg.log_hash_key.as_deref(),
            cfg.log_queue,
            app.metrics.blocked_log_dropped.clone(),
        )
        .map_err(StartError::BlockedLog)?,
    );
    if let Some(mut hup) = hangup {
        let (log, stop) = (Arc::clone(&log), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = hup.changed() => match r {
                        Ok(()) => log.reopen(),
                        Err(_) => return,
                    },
                }
            }
        });
    }
    Ok(Some(log))
}

/// The operator HTTP endpoint (/metrics, /readyz, /lists, /explain), if
/// configured or handed in; its state is returned either way (`serving`
/// flips when DNS is up).
async fn http_endpoint(
    app: &App,
    shared: &Arc<server::handler::Shared>,
    listener: Option<TcpListener>,
    stop: &CancellationToken,
) -> Result<(Arc<diag::DiagState>, Option<JoinHandle<()>>), StartError> {
    let listener = match (listener, app.config.metrics_listen) {
        (Some(l), _) => Some(l),
        (None, Some(addr)) => Some(diag::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
        (None, None) => None,
    };
    let for_size = Arc::clone(shared);
    let state = Arc::new(diag::DiagState {
        metrics: Arc::clone(&app.metrics),
        lists: Arc::clone(&app.lists),
        forwarder: Some(Arc::clone(&shared.forwarder)),
        cache_size: Box::new(move || (for_size.cache.len(), for_size.cache.bytes())),
        serving: std::sync::atomic::AtomicBool::new(false),
        views: shared.views.clone(),
    });
    let task = listener.map(|l| {
        if let Ok(a) = l.local_addr() {
            tracing::info!(addr = %a, "metrics endpoint listening");
        }
        tokio::spawn(diag::serve(l, Arc::clone(&state), stop.clone()))
    });
    Ok((state, task))
}

/// The remote list sources' tasks: `http(s)://` pulls and `axfr://` zone
/// transfers. A list with no version yet is fetched before this returns
/// (so before `ready`); one served from its persisted copy is refreshed in
/// the background.
struct Sources {
    tasks: Vec<JoinHandle<()>>,
    /// Per list: wakes its source to refresh now (push API `reload`, NOTIFY).
    refreshers: HashMap<ListId, Arc<Notify>>,
    /// The zones whose primaries may NOTIFY us.
    notify_targets: Vec<NotifyTarget>,
}

impl Sources {
    async fn spawn(all: &Arc<Lists>, cfg: &crate::config::Config, stop: &CancellationToken) -> Result<Sources, StartError> {
        let mut s = Sources { tasks: Vec::new(), refreshers: HashMap::new(), notify_targets: Vec::new() };
        let http_client = lists::http::client()?;
        for (i, lc) in all.each() {
            match &lc.origin {
                SourceKind::Http(_) => {
                    let pending = all.state(i).is_none();
                    if pending {
                        lists::http::refresh(all, &http_client, i).await?;
                    }
                    let now = s.refresher(i);
                    s.tasks.push(lists::http::spawn(Arc::clone(all), http_client.clone(), i, now, !pending, stop.clone()));
                }
                SourceKind::Axfr { .. } if lc.catalog.is_some() => {} // its catalog's follower syncs it
                SourceKind::Axfr { primary, zone } => {
                    let mut state = lists::zone_sync::from_persisted(all, i);
                    let from_copy = state.is_some();
                    if all.state(i).is_none() {
                        lists::zone_sync::sync(all, i, &mut state).await?;
                    }
                    let now = s.refresher(i);
                    if from_copy {
                        now.notify_one(); // catch up with the primary at once
                    }
                    if let Ok(zone) = name::QName::parse(zone) {
                        // config checked the key; were it unparsable here, no target
                        // (every NOTIFY refused) rather than one accepting unsigned ones
                        match lc.tsig.as_deref().map(crate::keys::TsigKey::parse).transpose() {
                            Ok(tsig) => s.notify_targets.push(NotifyTarget { zone: zone.into(), primary: primary.ip(), tsig, refresh: Arc::clone(&now) }),
                            Err(e) => tracing::warn!(list = %lc.name, error = %e, "NOTIFY disabled for this list"),
                        }
                    }
                    s.tasks.push(lists::zone_sync::spawn(Arc::clone(all), i, state, now, stop.clone()));
                }
                SourceKind::Push if all.state(i).is_none() => {
                    tracing::warn!(list = %lc.name, "push list has no version yet: not enforced until the first push (/readyz stays 503)");
                }
                _ => {}
            }
        }
        for k in 0..cfg.catalogs.len() {
            let Some(follower) = lists::catalog::Follower::new(all, cfg, k) else {
                // config checked the zone and the key: not expected
                tracing::error!(catalog = k, "catalog not followed: its zone or key does not parse");
                continue;
            };
            if let Some(t) = follower.targets() {
                let tsig = follower.tsig().cloned();
                let primary = follower.primary().ip();
                s.notify_targets.push(NotifyTarget { zone: t.catalog.0.into(), primary, tsig: tsig.clone(), refresh: t.catalog.1 });
                for (id, zone, refresh) in t.slots {
                    // `reload catz:ZONE` through the push API wakes the member's sync too
                    s.refreshers.insert(id, Arc::clone(&refresh));
                    s.notify_targets.push(NotifyTarget { zone: NotifyZone::Slot(zone), primary, tsig: tsig.clone(), refresh });
                }
            }
            s.tasks.push(follower.spawn(stop.clone()));
        }
        Ok(s)
    }

    fn refresher(&mut self, i: ListId) -> Arc<Notify> {
        Arc::clone(self.refreshers.entry(i).or_insert_with(|| Arc::new(Notify::new())))
    }

    async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The push API, if `[admin]` is configured.
async fn push_api(
    app: &App,
    listener: Option<TcpListener>,
    refreshers: HashMap<ListId, Arc<Notify>>,
    stop: &CancellationToken,
) -> Result<Option<JoinHandle<()>>, StartError> {
    let Some(acfg) = &app.config.admin else { return Ok(None) };
    let token = admin::read_token(&acfg.token_file)?;
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(acfg.listen).await.map_err(|source| StartError::Bind { addr: acfg.listen, source })?,
    };
    if let Ok(a) = listener.local_addr() {
        tracing::info!(addr = %a, signatures = acfg.require_signature, "push API listening");
    }
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
    Ok(Some(tokio::spawn(admin::serve(listener, adm, stop.clone()))))
}
