//! The certificate and key of the encrypted listeners (`[tls]`): read from
//! PEM files, checked (the key matches the certificate; validity and names
//! read with `x509-parser`), served through one [`CertStore`] that every
//! DoT, DoH and DoQ listener asks at each handshake, and swapped in place
//! when the files change (`notify` on their directories, debounced) or on
//! SIGHUP. Open connections keep the session they have; only new
//! handshakes see the new certificate. A file that does not load keeps the
//! certificate in use (and is counted, `qalqan_tls_certificate_reloads_total`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Why a certificate or key did not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in the file")]
    NoCertificate { path: String },
    #[error("{path}: no PEM private key in the file")]
    NoKey { path: String },
    #[error("{path}: private key not usable")]
    Key {
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error("the private key does not belong to the certificate")]
    Mismatch(#[source] rustls::Error),
    #[error("{path}: certificate does not parse: {reason}")]
    Parse { path: String, reason: String },
    #[error("TLS setup")]
    Rustls(#[from] rustls::Error),
}

/// What `qalqan check` and the expiry metric need from the leaf certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// notAfter as the certificate's text form (for people).
    pub not_after_text: String,
    /// DNS names of the subjectAltName extension, lowercase, as written (`*.` kept).
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl CertInfo {
    /// Whether a client verifying `name` accepts this certificate: an exact
    /// DNS name, or a `*.` wildcard covering one leftmost label (RFC 6125 §6.4.3).
    pub fn covers(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|d| match d.strip_prefix("*.") {
            Some(base) => name.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == base),
            None => *d == name,
        })
    }

    /// The first DNS name that is not a wildcard (what DDR announces when `[tls] name` is unset).
    pub fn first_name(&self) -> Option<&str> {
        self.dns_names.iter().find(|d| !d.starts_with('*')).map(String::as_str)
    }

    /// Seconds left before expiry at `now` (negative once expired).
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after.saturating_sub(now)
    }
}

/// A loaded certificate chain with its key.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Reads `cert` (PEM chain, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or
/// SEC1) and checks they belong together. Blocking (reads two files).
pub fn load(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::Read { path: shown(cert), source })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::Read { path: shown(key), source })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    let Some(leaf) = chain.first() else { return Err(TlsError::NoCertificate { path: shown(cert) }) };
    let info = inspect(leaf).map_err(|reason| TlsError::Parse { path: shown(cert), reason })?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey { path: shown(key) })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(private).map_err(|source| TlsError::Key { path: shown(key), source })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(TlsError::Mismatch(e)),
    }
    Ok(Loaded { key: Arc::new(certified), info })
}

/// Validity and names of a DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => dns_names.push(d.trim_end_matches('.').to_ascii_lowercase()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        ips.push(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        ips.push(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        not_after_text: validity.not_after.to_string(),
        dns_names,
        ips,
    })
}

/// The certificate every encrypted listener serves; swapped on reload.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    info: ArcSwap<CertInfo>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the files once (an error here stops the start).
    pub fn open(cert: &Path, key: &Path, metrics: Arc<Metrics>) -> Result<Arc<Self>, TlsError> {
        let loaded = load(cert, key).inspect_err(|_| metrics.tls_cert_reloads.with_label_values(&["error"]).inc())?;
        metrics.tls_cert_reloads.with_label_values(&["success"]).inc();
        metrics.tls_cert_expiry.set(loaded.info.not_after);
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::new(loaded.key),
            info: ArcSwap::from_pointee(loaded.info),
            metrics,
        }))
    }

    /// The certificate's validity and names.
    pub fn info(&self) -> Arc<CertInfo> {
        self.info.load_full()
    }

    /// Reads the files again; on success new handshakes use them, on
    /// failure the certificate in use stays. Blocking (reads two files).
    pub fn reload(&self, why: &str) {
        match load(&self.cert, &self.key) {
            Ok(loaded) => {
                if loaded.key.cert == self.current.load().cert {
                    return; // unchanged (an event for another file, a SIGHUP)
                }
                self.metrics.tls_cert_reloads.with_label_values(&["success"]).inc();
                self.metrics.tls_cert_expiry.set(loaded.info.not_after);
                tracing::info!(cert = %self.cert.display(), subject = %loaded.info.subject, not_after = loaded.info.not_after, why, "TLS certificate reloaded");
                self.info.store(Arc::new(loaded.info));
                self.current.store(loaded.key);
            }
            Err(e) => {
                self.metrics.tls_cert_reloads.with_label_values(&["error"]).inc();
                tracing::warn!(error = %format!("{e:#}"), why, "TLS certificate not reloaded; keeping the one in use");
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A rustls server config over `store` offering `alpn`; `tls13_only` for QUIC.
pub fn server_config(store: &Arc<CertStore>, alpn: &[&[u8]], tls13_only: bool) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider);
    let builder = if tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])?
    } else {
        builder.with_safe_default_protocol_versions()?
    };
    let mut c = builder.with_no_client_auth().with_cert_resolver(Arc::clone(store) as Arc<dyn ResolvesServerCert>);
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    // TLS 1.3 session tickets (keys rotated by rustls every 6 h): a returning
    // client resumes without the certificate exchange and signature
    c.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(c)
}

/// Quiet time after the last file event before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Reloads `store` when its files change (a watch on their directories:
/// `mv`-based deploys and certbot's symlink swaps replace the inode) and on
/// every SIGHUP. Ends on `stop`.
pub fn spawn_reloader(
    store: Arc<CertStore>,
    hangup: Option<tokio::sync::watch::Receiver<u64>>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    use notify::{RecursiveMode, Watcher as _};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let names: Vec<std::ffi::OsString> = [&store.cert, &store.key].iter().filter_map(|p| p.file_name().map(ToOwned::to_owned)).collect();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if !matches!(ev.kind, notify::EventKind::Create(_) | notify::EventKind::Modify(_) | notify::EventKind::Remove(_)) {
            return;
        }
        // certbot's live/ names are symlinks into archive/: any change in the
        // watched directories counts when it touches one of our names
        if ev.paths.iter().any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n))) {
            let _ = tx.send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in [&store.cert, &store.key] {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(d) = parent.canonicalize() {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    let mut hup = hangup;
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            let why = tokio::select! {
                _ = stop.cancelled() => return,
                r = changed(&mut hup) => match r {
                    true => "SIGHUP",
                    false => { hup = None; continue }
                },
                ev = rx.recv() => {
                    if ev.is_none() {
                        return;
                    }
                    // debounce: the cert and the key are often written one after the other
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(DEBOUNCE) => break,
                            more = rx.recv() => if more.is_none() { return },
                        }
                    }
                    "file changed"
                }
            };
            let s = Arc::clone(&store);
            let _ = tokio::task::spawn_blocking(move || s.reload(why)).await;
        }
    }))
}

/// Waits for the next SIGHUP; `false` when there will be none.
async fn changed(hup: &mut Option<tokio::sync::watch::Receiver<u64>>) -> bool {
    match hup {
        Some(h) => h.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
