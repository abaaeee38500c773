//! The `qalqan` command: `run`, `check`, `explain`, `export`, `diff`, `audit verify`,
//! `ctl` (the admin API's client) and the hidden `man` (the man pages).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
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
        /// The config file.
        #[arg(long, default_value = DEFAULT_CONFIG, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the config and load every list; print a summary per list.
    Check {
        /// The config file.
        #[arg(long, default_value = DEFAULT_CONFIG, value_name = "FILE")]
        config: PathBuf,
    },
    /// Say whether NAME is blocked, allowed or passed, and by which rule.
    Explain {
        /// The config file.
        #[arg(long, default_value = DEFAULT_CONFIG, value_name = "FILE")]
        config: PathBuf,
        name: String,
        qtype: Option<String>,
        /// Explain for a client at this address: its `[[views]]` view's lists.
        #[arg(long)]
        client: Option<std::net::IpAddr>,
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
        /// The config file.
        #[arg(long, default_value = DEFAULT_CONFIG, value_name = "FILE")]
        config: PathBuf,
        /// Only this list (by `name`); default: every block list.
        list: Option<String>,
    },
    /// Compare two versions of a list: the rules added and removed, then
    /// the names of `--popular` that NEW would newly block (OLD did not).
    ///
    /// Exit code: 0 no popular name newly blocked (or no `--popular`),
    /// 1 some are, 2 an error (a file unreadable, a bad format).
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Names to check, one a line (`#` comments; `rank,name` lines of a
        /// ranking such as Tranco or Umbrella are taken too; bad lines skipped).
        #[arg(long)]
        popular: Option<PathBuf>,
        /// The list format as in `[[lists]] format` (`domains`, `hosts`,
        /// `adblock`, `rpz`, `urls`, `keywords`, `registry-csv`,
        /// `registry-xml`), or `auto`: guessed from NEW's first lines.
        #[arg(long, default_value = "auto")]
        format: String,
    },
    /// The tamper-evident audit log (`[log] audit`).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Control a running server over its admin API (`[admin]`), like unbound-control.
    ///
    /// The address and token come from `[admin] listen` and `token_file` of
    /// the config (`--config`; default `config/qalqan.toml`, else
    /// `/etc/qalqan/qalqan.toml`), or from `--admin` and `--token-file`.
    /// Exit status: 0 done, 1 the server refused (its reason is printed),
    /// 2 the admin API could not be asked (unreachable, no `[admin]`, an
    /// unreadable token or file).
    Ctl {
        /// The admin API, `ip:port` or `http://ip:port` (default: `[admin] listen`).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// The bearer token's file, mode 0600 (default: `[admin] token_file`).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The config whose `[admin]` table says where the API is (default:
        /// `config/qalqan.toml`, else `/etc/qalqan/qalqan.toml`).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the API's JSON answer as it came.
        #[arg(long)]
        json: bool,
        /// Give up on a request after this many seconds.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        timeout: u64,
        #[command(subcommand)]
        verb: CtlVerb,
    },
    /// Write the man pages qalqan.8 and qalqan.toml.5 into DIR (packaging).
    #[command(hide = true)]
    Man { dir: PathBuf },
}

#[derive(Subcommand)]
enum CtlVerb {
    /// Version, uptime, policy generation and a summary of the lists.
    Status,
    /// Every list: version in force, rules, age, source.
    Lists,
    /// Re-read a file list, or re-fetch a remote one, now.
    Reload {
        name: String,
        /// Let the next version skip the shrink gate (an intended shrink).
        #[arg(long)]
        force: bool,
    },
    /// Why NAME is blocked, allowed or passed, by the policy in force: list, rule, FILE:LINE.
    Explain { name: String },
    /// Replace the push list NAME (`source = "push"`) with FILE.
    Push {
        name: String,
        file: PathBuf,
        /// The version of FILE: a whole number that grows with every push.
        #[arg(long)]
        version: u64,
        /// Sign with this Ed25519 private key (PEM, `openssl genpkey -algorithm ed25519`),
        /// as `[admin] regulator_keys` verify.
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
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
        Command::Explain { config, name, qtype, client } => explain(&config, &name, qtype.as_deref(), client),
        Command::Export { ips, config, list } => export(ips, &config, list.as_deref()),
        Command::Diff { old, new, popular, format } => diff(&old, &new, popular.as_deref(), &format),
        Command::Audit { command: AuditCommand::Verify { file } } => audit_verify(&file),
        Command::Ctl { admin, token_file, config, json, timeout, verb } => {
            ctl(admin.as_deref(), token_file.as_deref(), config.as_deref(), json, timeout, verb)
        }
        Command::Man { dir } => man(&dir),
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
        // SIGHUP re-reads the config for list modes (shadow ↔ enforce) and
        // the guard's protected names; every other change needs a restart
        let (lists, config_path) = (std::sync::Arc::clone(&app.lists), path.to_owned());
        tokio::spawn(async move {
            while modes_rx.changed().await.is_ok() {
                match Config::from_file(&config_path) {
                    Ok(c) => {
                        let modes: Vec<_> = c.lists.iter().map(|l| (l.name.clone(), l.mode)).collect();
                        let lists = std::sync::Arc::clone(&lists);
                        let guard = c.guard.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            lists.set_modes(&modes);
                            if let (Some(g), true) = (guard, lists.guard().is_some()) {
                                match qalqan::lists::guard::Guard::load(&g.protected, g.on_hit) {
                                    Ok(guard) => {
                                        tracing::info!(path = %g.protected.display(), names = guard.names.len(), "SIGHUP: guard's protected names re-read");
                                        lists.set_guard(guard);
                                    }
                                    Err(e) => tracing::warn!(error = %qalqan::lists::ErrorChain(&e), "SIGHUP: protected names not re-read; the guard keeps the ones it has"),
                                }
                            }
                        })
                        .await;
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
    if let Some(g) = &config.guard {
        match qalqan::lists::guard::Guard::load(&g.protected, g.on_hit) {
            Ok(guard) => println!(
                "guard: {} protected names from {}; remote updates that would newly block one: {}",
                guard.names.len(),
                g.protected.display(),
                g.on_hit.as_str()
            ),
            Err(e) => {
                ok = false;
                println!("{}", qalqan::lists::ErrorChain(&e));
            }
        }
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
            Some(d) => writeln!(out, "{addr}\t{}", qalqan::rules::decision_parts(d).0.replace(['\t', '\r', '\n'], " ")),
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

fn explain(path: &Path, name: &str, qtype: Option<&str>, client: Option<std::net::IpAddr>) -> anyhow::Result<ExitCode> {
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
    let views = qalqan::views_of(&app.config.views);
    let view = client.and_then(|c| views.as_deref()?.of(c));
    let ex = qalqan::policy::explain::explain_in(&policy, &qname, view, &reader);
    println!("{ex}");
    Ok(ExitCode::SUCCESS)
}

/// The config `qalqan ctl` reads when `--config` is not given: the
/// checkout's, else the package's.
const CTL_CONFIGS: [&str; 2] = [DEFAULT_CONFIG, "/etc/qalqan/qalqan.toml"];

fn ctl(admin: Option<&str>, token_file: Option<&Path>, config: Option<&Path>, json: bool, timeout: u64, verb: CtlVerb) -> anyhow::Result<ExitCode> {
    // the config is read only for what the options leave out
    let admin_cfg = if admin.is_none() || token_file.is_none() {
        let path = match config {
            Some(p) => p.to_owned(),
            None => CTL_CONFIGS.iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        };
        let c = Config::from_file(&path)?;
        Some(c.admin.ok_or_else(|| anyhow::anyhow!("{} has no [admin] table: the admin API is off (or give --admin and --token-file)", path.display()))?)
    } else {
        None
    };
    let base = qalqan::ctl::base_url(admin, admin_cfg.as_ref().map(|a| a.listen))?;
    let token_path = token_file.map(Path::to_owned).or_else(|| admin_cfg.as_ref().map(|a| a.token_file.clone()));
    let token_path = token_path.ok_or_else(|| anyhow::anyhow!("no token file: give --token-file"))?;
    let token = qalqan::admin::read_token(&token_path)?;
    let target = qalqan::ctl::Target { base, token, timeout: std::time::Duration::from_secs(timeout.max(1)) };
    let verb = match verb {
        CtlVerb::Status => qalqan::ctl::Verb::Status,
        CtlVerb::Lists => qalqan::ctl::Verb::Lists,
        CtlVerb::Reload { name, force } => qalqan::ctl::Verb::Reload { name, force },
        CtlVerb::Explain { name } => qalqan::ctl::Verb::Explain { name },
        CtlVerb::Push { name, file, version, sign } => qalqan::ctl::Verb::Push { name, file, version, sign },
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    match rt.block_on(qalqan::ctl::run(&target, &verb, json)) {
        Ok(text) => {
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let code = e.exit_code();
            eprintln!("qalqan ctl: {:#}", anyhow::Error::from(e));
            Ok(ExitCode::from(code))
        }
    }
}

/// qalqan(8): clap_mangen's page of the top-level command, then every
/// subcommand with its options (from the same clap definitions), exit
/// status, signals and files.
fn man_page_8() -> anyhow::Result<String> {
    let cmd = Cli::command();
    let mut buf = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone()).section("8").manual("System Manager's Manual");
    // every section of clap_mangen's page but SUBCOMMANDS, which names one
    // page per subcommand: here they are all in COMMANDS below
    man.render_title(&mut buf).context("rendering qalqan(8)")?;
    man.render_name_section(&mut buf).context("rendering qalqan(8)")?;
    man.render_synopsis_section(&mut buf).context("rendering qalqan(8)")?;
    man.render_description_section(&mut buf).context("rendering qalqan(8)")?;
    man.render_options_section(&mut buf).context("rendering qalqan(8)")?;
    man.render_version_section(&mut buf).context("rendering qalqan(8)")?;
    let mut page = String::from_utf8(buf).context("qalqan(8) is not UTF-8")?;
    page.push_str(".SH COMMANDS\n");
    fn walk(cmd: &clap::Command, path: &str, out: &mut String) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let here = format!("{path} {}", sub.get_name());
            let has_options = sub.get_arguments().any(|a| !a.is_hide_set() && !a.is_positional() && a.get_id() != "help");
            if sub.has_subcommands() && !has_options {
                walk(sub, &here, out);
                continue;
            }
            let mut synopsis = vec![format!("\\fB{}\\fR", roff_text(&here))];
            for a in sub.get_arguments().filter(|a| !a.is_hide_set() && a.get_id() != "help") {
                if a.is_positional() {
                    let v = a.get_value_names().and_then(|v| v.first()).map_or_else(|| a.get_id().as_str().to_uppercase(), ToString::to_string);
                    synopsis.push(if a.is_required_set() { format!("\\fI{v}\\fR") } else { format!("[\\fI{v}\\fR]") });
                }
            }
            if has_options {
                synopsis.insert(1, "[\\fIoptions\\fR]".to_owned());
            }
            if sub.has_subcommands() {
                synopsis.push("\\fIverb\\fR".to_owned());
            }
            out.push_str(&format!(".SS \"{}\"\n{}\n", roff_text(&here), synopsis.join(" ")));
            let about = sub.get_long_about().or_else(|| sub.get_about()).map(ToString::to_string).unwrap_or_default();
            for p in about.split("\n\n") {
                out.push_str(&format!(".PP\n{}\n", roff_text(p.trim())));
            }
            for a in sub.get_arguments().filter(|a| !a.is_hide_set() && !a.is_positional() && a.get_id() != "help") {
                let Some(long) = a.get_long() else { continue };
                let takes = a.get_num_args().is_none_or(|n| n.takes_values()) && !matches!(a.get_action(), clap::ArgAction::SetTrue);
                let value = if takes {
                    let v = a.get_value_names().and_then(|v| v.first()).map_or_else(|| a.get_id().as_str().to_uppercase(), ToString::to_string);
                    format!(" \\fI{v}\\fR")
                } else {
                    String::new()
                };
                let defaults: Vec<String> = a.get_default_values().iter().map(|d| d.to_string_lossy().into_owned()).collect();
                let help = a.get_long_help().or_else(|| a.get_help()).map(ToString::to_string).unwrap_or_default();
                let default = if defaults.is_empty() || !takes { String::new() } else { format!(" (default: {})", defaults.join(", ")) };
                out.push_str(&format!(".TP\n\\fB\\-\\-{}\\fR{value}\n{}{}\n", long.replace('-', "\\-"), roff_text(&help), roff_text(&default)));
            }
            if sub.has_subcommands() {
                walk(sub, &here, out);
            }
        }
    }
    walk(&cmd, "qalqan", &mut page);
    page.push_str(concat!(
        ".SH \"EXIT STATUS\"\n",
        "0 success; 1 a check failed (\\fBcheck\\fR, \\fBaudit verify\\fR) or the server refused a \\fBctl\\fR request; ",
        "2 an error (unreadable or invalid config, a port already bound, the admin API unreachable).\n",
        ".SH SIGNALS\n",
        ".TP\nSIGHUP\nre-read every list, reopen the blocked-query log and apply list modes from the config (\\fBsystemctl reload qalqan\\fR)\n",
        ".TP\nSIGTERM, SIGINT\nstop accepting, drain in-flight queries, exit\n",
        ".SH FILES\n",
        ".TP\n/etc/qalqan/qalqan.toml\nthe configuration of the Debian package (see \\fBqalqan.toml\\fR(5))\n",
        ".TP\n/usr/share/qalqan/blocklists\nthe lists shipped with the package\n",
        ".TP\n/var/lib/qalqan\nstate: last good copies of remote and pushed lists\n",
        ".SH \"SEE ALSO\"\n\\fBqalqan.toml\\fR(5), \\fBunbound\\-control\\fR(8)\n",
    ));
    Ok(page)
}

/// Running text for roff: backslashes escaped, `-` as a hyphen, no line
/// starting with a request character.
fn roff_text(s: &str) -> String {
    let mut t = s.replace('\\', "\\e").replace('-', "\\-").replace('`', "");
    t = t.lines().map(|l| if l.starts_with('.') || l.starts_with('\'') { format!("\\&{l}") } else { l.to_owned() }).collect::<Vec<_>>().join("\n");
    t
}

/// `qalqan man DIR`: writes qalqan.8 and qalqan.toml.5.
fn man(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pages = [("qalqan.8", man_page_8()?), ("qalqan.toml.5", qalqan::config::manpage::render(env!("CARGO_PKG_VERSION")))];
    for (file, text) in pages {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
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

/// One version of a list for `qalqan diff`: its rules (canonical text →
/// first line) and its policy.
struct Version {
    rules: std::collections::HashMap<String, u32>,
    order: Vec<(u32, String)>,
    policy: qalqan::policy::Policy,
}

fn load_version(path: &Path, format: &str) -> anyhow::Result<Version> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let source = toml::Value::String(path.display().to_string()).to_string();
    let toml = format!("[[lists]]\nname = \"diff\"\nsource = {source}\nformat = \"{format}\"\n");
    let config = Config::from_toml_str(&toml, "<qalqan diff>").map_err(|e| anyhow::anyhow!("--format {format}: {e}"))?;
    let cfg = config.lists.first().ok_or_else(|| anyhow::anyhow!("no list"))?;
    let parsed = qalqan::lists::parse::parse(cfg.format, &cfg.source, &bytes);
    let mut rules = std::collections::HashMap::new();
    let mut order = Vec::new();
    for e in &parsed.entries {
        let text = rule_text(&e.rule);
        if !rules.contains_key(&text) {
            rules.insert(text.clone(), e.line);
            order.push((e.line, text));
        }
    }
    let input = qalqan::policy::index::ListInput { allow: cfg.kind == ListKind::Allow, entries: &parsed.entries };
    let index = qalqan::policy::Index::build(&[input]).with_context(|| format!("compiling {}", path.display()))?;
    let policy = qalqan::lists::policy_of(&config.lists, index, 0);
    Ok(Version { rules, order, policy })
}

/// A rule as `qalqan diff` prints it: `name` (the name and below),
/// `=name` (the name only), `*.name` (below only), `@@` for exceptions,
/// the RPZ answer in brackets; `keyword K`, `/regex/`, `ip NET`, `answer-ip NET`.
fn rule_text(rule: &Rule) -> String {
    match rule {
        Rule::Name { name, scope, action, important, .. } => {
            let pattern = match scope {
                Scope::Subtree => name.clone(),
                Scope::Exact => format!("={name}"),
                Scope::Below => format!("*.{name}"),
            };
            let pattern = match action {
                RuleAction::Allow => format!("@@{pattern}"),
                RuleAction::List => pattern,
                RuleAction::Nxdomain => format!("{pattern} [nxdomain]"),
                RuleAction::Nodata => format!("{pattern} [nodata]"),
                RuleAction::Drop => format!("{pattern} [drop]"),
                RuleAction::Local(data) => format!("{pattern} [local-data {data:?}]"),
            };
            if *important {
                format!("{pattern} $important")
            } else {
                pattern
            }
        }
        Rule::Ip { net, .. } => format!("ip {net}"),
        Rule::AnswerIp { net, .. } => format!("answer-ip {net}"),
        Rule::Keyword(k) => format!("keyword {k}"),
        Rule::Regex(r) => format!("/{r}/"),
    }
}

/// The format of a list by its first meaningful lines (for `--format auto`).
fn sniff_format(bytes: &[u8]) -> &'static str {
    let head = String::from_utf8_lossy(bytes.get(..bytes.len().min(256 * 1024)).unwrap_or(bytes));
    let start = head.trim_start();
    if start.starts_with("<?xml") || start.starts_with("<reg:register") || start.starts_with("<register") {
        return "registry-xml";
    }
    let mut votes = [0usize; 5]; // domains, hosts, adblock, rpz, urls
    for line in head.lines().map(str::trim).filter(|l| !l.is_empty()).take(400) {
        if line.starts_with("[Adblock") || line.starts_with('!') {
            votes[2] += 1;
            continue;
        }
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let upper = line.to_ascii_uppercase();
        let first = line.split_whitespace().next().unwrap_or("");
        if line.starts_with("||") || line.starts_with("@@") || line.ends_with('^') || line.contains("^$") {
            votes[2] += 1;
        } else if line.starts_with('$') || upper.contains(" CNAME ") || upper.contains(" SOA ") || upper.contains(" IN NS ") {
            votes[3] += 1;
        } else if line.contains("://") || (line.contains('/') && !line.contains(' ')) {
            votes[4] += 1;
        } else if first.parse::<std::net::IpAddr>().is_ok() && line.split_whitespace().nth(1).is_some() {
            votes[1] += 1;
        } else {
            votes[0] += 1;
        }
    }
    let names = ["domains", "hosts", "adblock", "rpz", "urls"];
    let best = (0..names.len()).max_by_key(|&i| (votes[i], usize::from(i == 0))).unwrap_or(0);
    names[best]
}

fn diff(old: &Path, new: &Path, popular: Option<&Path>, format: &str) -> anyhow::Result<ExitCode> {
    let format = if format == "auto" {
        let head = std::fs::read(new).with_context(|| format!("reading {}", new.display()))?;
        let f = sniff_format(&head);
        eprintln!("qalqan diff: format {f} (guessed from {}; --format to say)", new.display());
        f
    } else {
        format
    };
    let started = std::time::Instant::now();
    let a = load_version(old, format)?;
    let b = load_version(new, format)?;
    use std::io::Write as _;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let removed: Vec<&(u32, String)> = a.order.iter().filter(|(_, r)| !b.rules.contains_key(r)).collect();
    let added: Vec<&(u32, String)> = b.order.iter().filter(|(_, r)| !a.rules.contains_key(r)).collect();
    writeln!(out, "--- {} ({} rules)", old.display(), a.order.len())?;
    writeln!(out, "+++ {} ({} rules)", new.display(), b.order.len())?;
    for (line, r) in &removed {
        writeln!(out, "-{r}\t{}:{line}", old.display())?;
    }
    for (line, r) in &added {
        writeln!(out, "+{r}\t{}:{line}", new.display())?;
    }
    writeln!(out, "rules added: {}, removed: {}", added.len(), removed.len())?;
    let mut code = ExitCode::SUCCESS;
    if let Some(p) = popular {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let (names, skipped) = qalqan::lists::guard::parse_names_lenient(&text);
        let checked = std::time::Instant::now();
        let hits = qalqan::lists::guard::newly_blocked(&names, &a.policy, &b.policy);
        eprintln!("qalqan diff: {} names checked against both versions in {} ms", names.len(), checked.elapsed().as_millis());
        writeln!(
            out,
            "newly blocked popular names: {} of {} in {}{}",
            hits.len(),
            names.len(),
            p.display(),
            if skipped > 0 { format!(" ({skipped} lines not names, skipped)") } else { String::new() }
        )?;
        for h in &hits {
            let line = b.policy.rule_line(h.hit.rule);
            writeln!(out, "!{}\tby {} at {}:{line}", h.name, b.policy.rule_text(h.hit.rule), new.display())?;
        }
        if !hits.is_empty() {
            code = ExitCode::from(1);
        }
    }
    out.flush()?;
    eprintln!("qalqan diff: took {} ms", started.elapsed().as_millis());
    Ok(code)
}
#[cfg(test)]
mod tests {
    /// qalqan(8) is made from the clap definitions: every visible command
    /// and option is on it, the hidden `man` is not.
    #[test]
    fn qalqan_8_has_every_command_and_option() {
        let page = super::man_page_8().expect("renders");
        assert!(page.starts_with(".ie") && page.contains(".TH qalqan 8"), "{}", &page[..200.min(page.len())]);
        for c in ["run", "check", "explain", "export", "diff", "audit verify", "ctl", "ctl status", "ctl lists", "ctl reload", "ctl explain", "ctl push"] {
            assert!(page.contains(&format!(".SS \"qalqan {c}\"")), "no section for `qalqan {c}`");
        }
        for o in ["\\-\\-config", "\\-\\-ips", "\\-\\-admin", "\\-\\-token\\-file", "\\-\\-json", "\\-\\-timeout", "\\-\\-force", "\\-\\-version", "\\-\\-sign"] {
            assert!(page.contains(&format!(".TP\n\\fB{o}\\fR")), "no entry for {o}");
        }
        assert!(!page.contains("qalqan man"), "the hidden command is not documented");
        assert!(!page.contains("SUBCOMMANDS"), "no references to per-command pages that do not exist");
    }
}
