//! `qalqan ctl`: the operator's client of the admin API ([`crate::admin`]),
//! as `unbound-control` is Unbound's: `status`, `lists`, `reload NAME`,
//! `explain NAME`, `push NAME FILE --version N [--sign KEY]`.
//!
//! Exit codes (see [`CtlError::exit_code`]): 0 done; 1 the server answered
//! with an error (unknown list, stale version, bad signature: its message is
//! printed); 2 nothing was asked (the admin API unreachable, no `[admin]`
//! in the config, an unreadable token, list or key file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use crate::lists::push::{self, PushMethod};

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://ip:port`, no trailing slash.
    pub base: String,
    pub token: String,
    /// Whole request, connect to last byte.
    pub timeout: Duration,
}

/// One `qalqan ctl` verb.
#[derive(Debug, Clone)]
pub enum Verb {
    Status,
    Lists,
    Reload { name: String, force: bool },
    Explain { name: String },
    Push { name: String, file: PathBuf, version: u64, sign: Option<PathBuf> },
}

/// Why a `qalqan ctl` command did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the admin API at {url} (is qalqan running, with [admin] listen at that address?)")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the admin API refused: {message} (HTTP {status})")]
    Refused { status: u16, message: String },
    #[error("the admin API at {url} answered something that is not its JSON (HTTP {status})")]
    BadReply { url: String, status: u16 },
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signing key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("{0}")]
    Usage(String),
}

impl CtlError {
    /// 1 when the server said no, 2 when nothing reached it.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused { .. } => 1,
            _ => 2,
        }
    }
}

/// The base URL of the admin API from `--admin` (`ip:port`, `http://ip:port`)
/// or from `[admin] listen`; an unspecified address (`0.0.0.0`, `::`) is
/// reached on loopback.
pub fn base_url(admin: Option<&str>, listen: Option<std::net::SocketAddr>) -> Result<String, CtlError> {
    if let Some(a) = admin {
        let a = a.trim().trim_end_matches('/');
        if a.starts_with("https://") {
            return Err(CtlError::Usage("the admin API speaks plain HTTP: use http://ip:port (or tunnel it)".into()));
        }
        return Ok(if a.starts_with("http://") { a.to_owned() } else { format!("http://{a}") });
    }
    let Some(mut l) = listen else {
        return Err(CtlError::Usage("the config has no [admin] table: give --admin URL and --token-file FILE".into()));
    };
    if l.ip().is_unspecified() {
        l.set_ip(if l.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    Ok(format!("http://{l}"))
}

/// The Ed25519 signing key in a PEM file as `openssl genpkey -algorithm
/// ed25519` writes it (PKCS#8 v1 or v2 `PRIVATE KEY`).
pub fn read_signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, CtlError> {
    let shown = path.display().to_string();
    let bad = |reason: &str| CtlError::Key { path: shown.clone(), reason: reason.to_owned() };
    let text = std::fs::read_to_string(path).map_err(|source| CtlError::Read { path: shown.clone(), source })?;
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect();
    if b64.is_empty() {
        return Err(bad("no `-----BEGIN PRIVATE KEY-----` block (make one with `openssl genpkey -algorithm ed25519`)"));
    }
    let der = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).map_err(|_| bad("the PEM block is not base64"))?;
    // AlgorithmIdentifier id-Ed25519 (1.3.101.112), then the OCTET STRING
    // privateKey holding the OCTET STRING of the 32-byte seed (RFC 8410 §7)
    const OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
    const SEED: [u8; 4] = [0x04, 0x22, 0x04, 0x20];
    let at = der.windows(OID.len()).position(|w| w == OID).ok_or_else(|| bad("not an Ed25519 key"))?;
    let rest = der.get(at + OID.len()..).unwrap_or_default();
    let seed = rest
        .strip_prefix(&SEED[..])
        .and_then(|r| r.get(..32))
        .and_then(|s| <[u8; 32]>::try_from(s).ok())
        .ok_or_else(|| bad("malformed PKCS#8 Ed25519 key"))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// Runs `verb` against `target`; returns what to print (the API's JSON
/// as it came with `json`, else a few lines for a person).
pub async fn run(target: &Target, verb: &Verb, json: bool) -> Result<String, CtlError> {
    let client = reqwest::Client::builder()
        // a local admin API is never reached through an HTTP proxy from the environment
        .no_proxy()
        .timeout(target.timeout)
        .build()
        .map_err(|source| CtlError::Unreachable { url: target.base.clone(), source })?;
    let auth = format!("Bearer {}", target.token);
    let request = match verb {
        Verb::Status => client.get(format!("{}/v1/status", target.base)),
        Verb::Lists => client.get(format!("{}/v1/lists", target.base)),
        Verb::Reload { name, force } => {
            client.post(format!("{}/v1/lists/{}/reload{}", target.base, path_segment(name)?, if *force { "?force=1" } else { "" }))
        }
        Verb::Explain { name } => {
            let n = crate::name::normalize(name).map_err(|e| CtlError::Usage(format!("`{name}` is not a valid name: {e}")))?;
            client.get(format!("{}/v1/explain?name={n}", target.base))
        }
        Verb::Push { name, file, version, sign } => {
            if *version == 0 {
                return Err(CtlError::Usage("--version must be at least 1 and grow with every push".into()));
            }
            let body = std::fs::read(file).map_err(|source| CtlError::Read { path: file.display().to_string(), source })?;
            let mut r = client
                .put(format!("{}/v1/lists/{}", target.base, path_segment(name)?))
                .header("X-Qalqan-Version", version.to_string());
            if let Some(key) = sign {
                let key = read_signing_key(key)?;
                let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let message = push::signed_message(PushMethod::Put, name, &version.to_string(), None, ts, &body);
                let sig = ed25519_dalek::Signer::sign(&key, &message);
                r = r
                    .header("X-Qalqan-Timestamp", ts.to_string())
                    .header("X-Qalqan-Signature", base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()));
            }
            r.body(body)
        }
    };
    let reply = request
        .header(reqwest::header::AUTHORIZATION, auth)
        .send()
        .await
        .map_err(|source| CtlError::Unreachable { url: target.base.clone(), source })?;
    let status = reply.status().as_u16();
    let body = reply.bytes().await.map_err(|source| CtlError::Unreachable { url: target.base.clone(), source })?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| CtlError::BadReply { url: target.base.clone(), status })?;
    if status >= 400 {
        let message = value.get("error").and_then(|e| e.as_str()).unwrap_or("(no message)").to_owned();
        return Err(CtlError::Refused { status, message });
    }
    if json {
        return Ok(value.to_string());
    }
    Ok(match verb {
        Verb::Status => show_status(&value),
        Verb::Lists => show_lists(&value),
        Verb::Reload { name, .. } => match value.get("refresh").and_then(|v| v.as_str()) {
            Some(_) => format!("{name}: refresh started (remote source; see `qalqan ctl lists` for the version it brings)"),
            None => format!("{name}: {}", show_state(&value)),
        },
        Verb::Explain { .. } => text(&value, "text"),
        Verb::Push { name, .. } => format!("{name}: {}", show_state(&value)),
    })
}

/// A list name as one URL path segment: names are plain words; anything
/// that would need escaping is refused here rather than sent mangled.
fn path_segment(name: &str) -> Result<&str, CtlError> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) && name != "." && name != ".." {
        Ok(name)
    } else {
        Err(CtlError::Usage(format!("`{name}` is not a list name (letters, digits, `-`, `_`, `.`)")))
    }
}

fn text(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// `1d 2h 3m 4s`, largest unit first, zero units left out.
fn duration(mut s: u64) -> String {
    let mut out = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= size {
            out.push(format!("{}{unit}", s / size));
            s %= size;
        }
    }
    if s > 0 || out.is_empty() {
        out.push(format!("{s}s"));
    }
    out.join(" ")
}

fn show_status(v: &serde_json::Value) -> String {
    let uptime = v.get("uptime_s").and_then(serde_json::Value::as_u64).unwrap_or(0);
    let lists = v.get("lists").cloned().unwrap_or_default();
    format!(
        "qalqan {}\nup {} (since {})\ngeneration {}\nlists: {} configured, {} loaded, {} rules",
        text(v, "version"),
        duration(uptime),
        text(v, "started_at"),
        text(v, "generation"),
        text(&lists, "configured"),
        text(&lists, "loaded"),
        text(&lists, "rules"),
    )
}

fn show_lists(v: &serde_json::Value) -> String {
    let mut rows = vec![["LIST", "VERSION", "RULES", "AGE", "SOURCE"].map(str::to_owned).to_vec()];
    for l in v.get("lists").and_then(|l| l.as_array()).map(Vec::as_slice).unwrap_or_default() {
        let age = l.get("age_s").and_then(serde_json::Value::as_f64).map_or_else(|| "-".to_owned(), |a| duration(a.max(0.0) as u64));
        let version = if l.get("version").is_some_and(serde_json::Value::is_null) { "not loaded".to_owned() } else { text(l, "version") };
        rows.push(vec![text(l, "list"), version, text(l, "rules"), age, text(l, "source")]);
    }
    let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect();
    out.push(format!("generation {}", text(v, "generation")));
    out.join("\n")
}

fn show_state(v: &serde_json::Value) -> String {
    if v.get("version").is_some_and(serde_json::Value::is_null) {
        return "no version loaded yet".to_owned();
    }
    let mut s = format!("version {} in force, {} rules", text(v, "version"), text(v, "rules"));
    if let Some(p) = v.get("push_version").filter(|p| !p.is_null()) {
        s.push_str(&format!(", push version {p}"));
    }
    s.push_str(&format!(", generation {}", text(v, "generation")));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Result<&'a str, ()>);
        let cases: &[Case<'_>] = &[
            ("--admin host:port", Some("127.0.0.1:8053"), None, Ok("http://127.0.0.1:8053")),
            ("--admin URL, slash", Some("http://[::1]:8053/"), None, Ok("http://[::1]:8053")),
            ("--admin https", Some("https://x:1"), None, Err(())),
            ("config, loopback", None, Some("127.0.0.1:8053"), Ok("http://127.0.0.1:8053")),
            ("config, any v4", None, Some("0.0.0.0:8053"), Ok("http://127.0.0.1:8053")),
            ("config, any v6", None, Some("[::]:8053"), Ok("http://[::1]:8053")),
            ("no [admin]", None, None, Err(())),
        ];
        for (case, admin, listen, want) in cases {
            let got = base_url(*admin, listen.map(|l| l.parse().unwrap()));
            assert_eq!(got.as_deref().map_err(|_| ()), *want, "case `{case}`");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3_600), "1h");
        assert_eq!(duration(90_061), "1d 1h 1m 1s");
    }

    #[test]
    fn list_names_as_path_segments() {
        assert!(path_segment("regulator").is_ok());
        assert!(path_segment("rkn-2026.v1").is_ok());
        for bad in ["", "..", "a/b", "a?b", "a b", "a%2f"] {
            assert!(path_segment(bad).is_err(), "`{bad}`");
        }
    }

    #[test]
    fn pkcs8_keys() {
        // RFC 8410 §10.3's example private key
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, pem).unwrap();
        let key = read_signing_key(&p).unwrap();
        assert_eq!(
            key.to_bytes()[..4],
            [0xd4, 0xee, 0x72, 0xdb],
            "the seed of RFC 8410's example (D4EE72DBF913584AD5B6D8F1F769F8AD...)"
        );
        std::fs::write(&p, "not a key").unwrap();
        assert!(matches!(read_signing_key(&p), Err(CtlError::Key { .. })));
        std::fs::write(&p, "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n").unwrap();
        assert!(matches!(read_signing_key(&p), Err(CtlError::Key { .. })));
    }
}
