//! The `qalqan` command: `run`, `check`, `explain`, `export`, `audit verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use qalqan::config::Config;

/// mimalloc instead of glibc malloc: the query path allocates small short-lived
/// buffers on tokio worker threads, where glibc's per-thread arenas stood out
/// in a profile of the miss workload (`benches/e2e/profile.sh miss`: malloc/free,
/// heap growth with mprotect, page faults). mimalloc's thread-local free lists
/// avoid that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use qalqan::rules::{ListKind, Rule, RuleAction, Scope};

const DEFAULT_CONFIG: &str = "config/qalqan.toml";

#[derive(Parser)]
#[command(name = "qalqan", version, about = "A DNS filtering resolver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS until SIGTERM/SIGINT.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the config and load every list; print a summary per list.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Say whether NAME is blocked, allowed or passed, and by which rule.
    Explain {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        name: String,
        qtype: Option<String>,
    },
    /// Write what the lists hold in a form other tools take.
    ///
    /// `--ips`: every distinct address or prefix of the block lists (registry
    /// IP column, IP-literal URL hosts, adblock `1.2.3.4^`), one a line with
    /// its decision after a tab, for a firewall: DNS cannot enforce an
    /// address decision, and lists with `ip_rules = "ignore"` (the default)
    /// do not block answers carrying them.
    Export {
        /// Export the lists' addresses and prefixes.
        #[arg(long)]
        ips: bool,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only this list (by `name`); default: every block list.
        list: Option<String>,
    },
    /// The tamper-evident audit log (`[log] audit`).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an audit log: exit 0 and print the line
    /// count and head hash, or exit 1 naming the first broken line.
    Verify { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { config } => check(&config),
        Command::Explain { config, name, qtype } => explain(&config, &name, qtype.as_deref()),
        Command::Export { ips, config, list } => export(ips, &config, list.as_deref()),
        Command::Audit { command: AuditCommand::Verify { file } } => audit_verify(&file),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("qalqan: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // hickory-server logs every request at info: keep that at debug level and below
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn,hickory_proto=warn"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Returns memory freed by a list build to the OS (see `Lists::with_after_build`).
fn release_freed_memory() {
    // SAFETY: mi_collect only walks and purges mimalloc's own free pages and
    // is safe to call from any thread at any time (mimalloc API contract).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

fn run(path: &Path) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = Config::from_file(path)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    // one runtime worker and one SO_REUSEPORT UDP socket (fast-path task) per
    // thread: `threads`, or one per core
    let workers = config.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rt.worker_threads(workers);
    let rt = rt.build().context("starting the runtime")?;
    rt.block_on(async move {
        let listen = config.listen.clone();
        // main owns the signals: SIGTERM/SIGINT stop, SIGHUP is broadcast
        // (every list reloads, the blocked-query log reopens)
        let (hup_tx, hup_rx) = tokio::sync::watch::channel(0u64);
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP");
                        hup_tx.send_modify(|n| *n += 1);
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot listen for SIGHUP"),
        }
        let mut modes_rx = hup_rx.clone();
        let sockets = qalqan::Sockets::bind_workers(&listen, workers).await?.with_hangup(hup_rx);
        let app = tokio::task::spawn_blocking(move || qalqan::App::with_after_build(config, release_freed_memory)).await.context("loading lists")??;
        // SIGHUP re-reads the config for list modes (shadow ↔ enforce);
        // every other change needs a restart
        let (lists, config_path) = (std::sync::Arc::clone(&app.lists), path.to_owned());
        tokio::spawn(async move {
            while modes_rx.changed().await.is_ok() {
                match Config::from_file(&config_path) {
                    Ok(c) => {
                        let modes: Vec<_> = c.lists.iter().map(|l| (l.name.clone(), l.mode)).collect();
                        let lists = std::sync::Arc::clone(&lists);
                        let _ = tokio::task::spawn_blocking(move || lists.set_modes(&modes)).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "SIGHUP: config not re-read; list modes unchanged"),
                }
            }
        });
        let stop = CancellationToken::new();
        let signals = stop.clone();
        tokio::spawn(async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
            signals.cancel();
        });
        qalqan::serve(app, sockets, stop).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::from_file(path)?;
    let mut ok = true;
    let mut active = 0usize;
    // catalog members known from the persisted membership are checked like lists
    let members: Vec<qalqan::config::ListConfig> = qalqan::lists::catalog::slot_specs(&config)
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| c.origin != qalqan::config::SourceKind::Vacant)
        .collect();
    for c in &config.catalogs {
        let n = members.iter().filter(|m| m.catalog.as_deref() == Some(c.zone.as_str())).count();
        println!("catalog {}: {}: {n} member zone(s) persisted, up to {} (max_members)", c.zone, c.source, c.max_members);
    }
    for l in config.lists.iter().chain(&members) {
        let file = match config.list_path(l) {
            Some(f) if !l.origin.is_remote() || f.exists() => f,
            _ => {
                println!("{}: {}: remote source with no persisted copy; fetched when the server starts", l.name, l.source);
                continue;
            }
        };
        match qalqan::lists::load(l, &file) {
            Ok(loaded) => {
                let p = &loaded.parsed;
                let mut kinds: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
                let mut addrs = qalqan::lists::AddressCounter::default();
                for e in &p.entries {
                    addrs.note(&e.rule, l.enforces(&e.rule));
                    let kind = match &e.rule {
                        Rule::Name { action: RuleAction::Allow, .. } => "allow",
                        Rule::Name { scope: Scope::Subtree, .. } => "subtree",
                        Rule::Name { scope: Scope::Exact, .. } => "exact",
                        Rule::Name { scope: Scope::Below, .. } => "below",
                        Rule::Ip { .. } => "address",
                        Rule::AnswerIp { .. } => "rpz-ip",
                        Rule::Keyword(_) => "keyword",
                        Rule::Regex(_) => "regex",
                    };
                    *kinds.entry(kind).or_insert(0) += 1;
                }
                let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
                let unsupported: u32 = p.unsupported.values().sum();
                println!(
                    "{}: {} rules ({}), {} lines, {} skipped, {} unsupported, {} ignored, version {}",
                    l.name,
                    p.entries.len(),
                    if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") },
                    p.lines,
                    p.bad_lines,
                    unsupported,
                    p.ignored,
                    loaded.version
                );
                let addrs = addrs.stats();
                if addrs.listed > 0 {
                    let mode = match l.ip_rules {
                        Some(qalqan::config::IpRules::Answer) => "ip_rules = \"answer\"",
                        Some(qalqan::config::IpRules::Ignore) => "ip_rules = \"ignore\"",
                        None => "ip_rules unset: listed addresses ignored, rpz-ip enforced",
                    };
                    println!("  {addrs} ({mode})");
                }
                active += addrs.enforced;
                for e in p.errors.iter().take(5) {
                    println!("  {e}");
                }
                for (what, n) in &p.unsupported {
                    println!("  unsupported: {what}: {n} lines");
                }
                if !p.entry_kinds.is_empty() {
                    let kinds: Vec<String> = p.entry_kinds.iter().map(|(k, n)| format!("{k}: {n}")).collect();
                    println!("  entries: {}", kinds.join(", "));
                }
            }
            Err(e) => {
                ok = false;
                println!("{}", e.chain());
            }
        }
    }
    println!("answer-IP rules active: {active}");
    if let Some(tls) = &config.tls {
        ok &= check_tls(&config, tls);
    }
    if let Some(bp) = &config.blockpage {
        ok &= check_blockpage(&config, bp);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `qalqan check` for `[tls]`: the key matches the certificate, the
/// certificate is valid now, covers the name DDR announces, and how long
/// it has left. Prints one line per finding; `false` on an error.
fn check_tls(config: &Config, tls: &qalqan::config::TlsConfig) -> bool {
    let loaded = match qalqan::server::tls::load(&tls.cert, &tls.key) {
        Ok(l) => l,
        Err(e) => {
            println!("tls: {:#}", anyhow::Error::from(e));
            return false;
        }
    };
    let info = &loaded.info;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let left = info.seconds_left(now);
    println!(
        "tls: {}: {}, names [{}], key matches, expires {} ({} days left)",
        tls.cert.display(),
        info.subject,
        info.dns_names.iter().cloned().chain(info.ips.iter().map(ToString::to_string)).collect::<Vec<_>>().join(", "),
        info.not_after_text,
        left / 86_400
    );
    let mut ok = true;
    if info.not_before > now {
        println!("tls: error: the certificate is not valid yet");
        ok = false;
    }
    if left <= 0 {
        println!("tls: error: the certificate has expired");
        ok = false;
    } else if left < 14 * 86_400 {
        println!("tls: warning: the certificate expires in less than 14 days");
    }
    let name = tls.name.clone().or_else(|| info.first_name().map(ToOwned::to_owned));
    match name {
        Some(n) if info.covers(&n) => {
            println!("tls: {} {n}, which the certificate covers", if config.ddr { "DDR announces" } else { "clients verify" });
        }
        Some(n) => {
            println!("tls: error: the certificate's subjectAltName does not cover `{n}` (the name DDR announces and clients verify)");
            ok = false;
        }
        None if config.ddr => {
            println!("tls: error: ddr = true, but the certificate has no DNS name and [tls] name is unset");
            ok = false;
        }
        None => {}
    }
    ok
}

/// `qalqan check` for `[blockpage]`: the templates parse (an error names
/// `FILE:LINE`), and whether browsers will reach the page at all.
fn check_blockpage(config: &Config, bp: &qalqan::config::BlockpageConfig) -> bool {
    let templates = match qalqan::blockpage::load_templates(bp) {
        Ok(t) => t,
        Err(e) => {
            println!("blockpage: error: {}", qalqan::lists::ErrorChain(&e));
            return false;
        }
    };
    let listen: Vec<String> = bp.listen.iter().map(ToString::to_string).collect();
    println!("blockpage: listen {}; pages en {}, ru {}, kk {}", listen.join(", "), templates.files[0], templates.files[1], templates.files[2]);
    let sinkholes = [std::net::IpAddr::V4(config.sinkhole.a), std::net::IpAddr::V6(config.sinkhole.aaaa)];
    if !bp.listen.iter().any(|a| sinkholes.contains(&a.ip()) || a.ip().is_unspecified()) {
        println!("blockpage: warning: no listen address is a [sinkhole] address: browsers sent to the sinkhole will not reach the page");
    }
    let on_sinkhole = |a: &std::net::SocketAddr| a.port() == 443 && (sinkholes.contains(&a.ip()) || a.ip().is_unspecified());
    if config.doh_listen.iter().any(on_sinkhole) {
        println!(
            "blockpage: warning: doh_listen serves 443 on a sinkhole address: https:// visits to blocked names get the DoH certificate (a browser error) instead of a refused connection; listen on another address"
        );
    }
    if !config.lists.iter().any(|l| l.action == qalqan::rules::Action::Sinkhole) {
        println!("blockpage: warning: no list has action = \"sinkhole\": no browser is sent to the page");
    }
    true
}

fn export(ips: bool, path: &Path, only: Option<&str>) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    if !ips {
        anyhow::bail!("nothing to export: say what (`--ips`)");
    }
    let config = Config::from_file(path)?;
    if let Some(name) = only {
        if !config.lists.iter().any(|l| l.name == name) {
            anyhow::bail!("no list named `{name}` in {}", path.display());
        }
    }
    // first decision seen for each distinct prefix, lists in config order
    let mut seen: std::collections::BTreeMap<ipnet::IpNet, Option<String>> = std::collections::BTreeMap::new();
    for l in &config.lists {
        if only.is_some_and(|n| n != l.name) || (only.is_none() && l.kind == ListKind::Allow) {
            continue;
        }
        let file = match config.list_path(l) {
            Some(f) if !l.origin.is_remote() || f.exists() => f,
            _ => {
                eprintln!("{}: {}: remote source with no persisted copy; nothing to export", l.name, l.source);
                continue;
            }
        };
        let loaded = qalqan::lists::load(l, &file)?;
        for e in loaded.parsed.entries {
            if let Rule::Ip { net, decision } = e.rule {
                seen.entry(net.trunc()).or_insert(decision);
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (net, decision) in &seen {
        let addr = if net.prefix_len() == net.max_prefix_len() { net.addr().to_string() } else { net.to_string() };
        let written = match decision {
            Some(d) => writeln!(out, "{addr}\t{}", d.replace(['\t', '\r', '\n'], " ")),
            None => writeln!(out, "{addr}"),
        };
        if written.is_err() {
            return Ok(ExitCode::from(1)); // a closed pipe (`| head`)
        }
    }
    if out.flush().is_err() {
        return Ok(ExitCode::from(1));
    }
    eprintln!("{} addresses and prefixes", seen.len());
    Ok(ExitCode::SUCCESS)
}

fn explain(path: &Path, name: &str, qtype: Option<&str>) -> anyhow::Result<ExitCode> {
    let config = Config::from_file(path)?;
    if let Some(t) = qtype {
        t.parse::<hickory_proto::rr::RecordType>().map_err(|_| anyhow::anyhow!("`{t}` is not a record type"))?;
    }
    let app = qalqan::App::new(config)?;
    let policy = app.lists.policy.load_full();
    let qname = qalqan::name::normalize(name)
        .ok()
        .and_then(|n| qalqan::name::QName::parse(&n).ok())
        .ok_or_else(|| anyhow::anyhow!("`{name}` is not a valid name"))?;
    let reader = qalqan::diag::file_line_reader(app.config.lists.iter());
    let ex = qalqan::policy::explain::explain(&policy, &qname, &reader);
    println!("{ex}");
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(path: &Path) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match qalqan::audit::verify(std::io::BufReader::new(f)) {
        Ok(v) => {
            println!("{}: chain intact, {} lines, head {}", path.display(), v.lines, v.head);
            Ok(ExitCode::SUCCESS)
        }
        Err(b) => {
            println!("{}:{}: chain broken: {}", path.display(), b.line, b.reason);
            Ok(ExitCode::from(1))
        }
    }
}
