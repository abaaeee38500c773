//! The blocked-query log: one JSON object per line for every blocked query
//! (`[log] blocked = "PATH"` or `"stderr"`), with the client address
//! anonymised as configured. The query path hands over an [`Event`]: the
//! time, the client, the name's bytes and the policy snapshot and hit that
//! decided, with no formatting (cost: a clock read, a reference count,
//! a copy of the name, a `try_send` into a bounded queue). A dedicated
//! thread turns events into JSON lines: it wakes every few milliseconds and
//! drains the queue, so no query ever pays for waking it. When the writer
//! lags, events are dropped and counted (`qalqan_blocked_log_dropped_total`),
//! never waited for. SIGHUP reopens the file (logrotate).

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_proto::rr::RecordType;
use prometheus::IntCounter;
use smallvec::SmallVec;

use crate::policy::{Hit, Policy};

/// How long the writer sleeps when it found the queue empty.
const WRITER_NAP: Duration = Duration::from_millis(5);

/// How client addresses appear in the log (`[log] anonymize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymize {
    /// As seen.
    None,
    /// IPv4 to its /24, IPv6 to its /48 (host bits zeroed).
    Truncate,
    /// A keyed BLAKE3 hash of the address (16 hex digits): stable for one key.
    Hash,
}

/// One blocked query as the query path hands it over (see the module doc).
pub struct Event {
    pub at: SystemTime,
    pub client: IpAddr,
    /// What the query came over (`protocol` in the log line): a
    /// [`crate::metrics::Transport`] label, or `http` for a block page view.
    pub protocol: &'static str,
    /// The normalised query name's text.
    pub qname: SmallVec<[u8; 64]>,
    /// `None` for a block page view (`"qtype":null`).
    pub qtype: Option<RecordType>,
    /// The policy that decided, and its hit (rule, list).
    pub policy: Arc<Policy>,
    pub hit: Hit,
    /// A shadow list's hit: logged with `"shadow":true`, the query was answered.
    pub shadow: bool,
}

/// One line of the log, as written.
#[derive(Debug, serde::Serialize)]
struct Line<'a> {
    /// RFC 3339 UTC, millisecond precision.
    time: &'a str,
    client: &'a str,
    protocol: &'static str,
    qname: &'a str,
    qtype: Option<&'a str>,
    list: &'a str,
    /// `FILE:LINE` of the deciding rule.
    rule: &'a str,
    decision: Option<&'a str>,
    action: &'static str,
    ede: u16,
    /// Only on shadow-list hits (`"shadow":true`: not enforced).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shadow: bool,
}

/// Where records go.
#[derive(Debug, Clone)]
pub enum Target {
    Stderr,
    File(std::path::PathBuf),
}

/// The handle the query path holds.
pub struct BlockedLog {
    tx: SyncSender<Event>,
    dropped: IntCounter,
    reopen: Arc<AtomicBool>,
}

impl BlockedLog {
    /// Opens the target and starts the writer thread. `queue` bounds the
    /// records waiting to be written. `hash_key` (any text) makes hashes
    /// stable across restarts; without it a random key is used per start.
    pub fn start(
        target: Target,
        anonymize: Anonymize,
        hash_key: Option<&str>,
        queue: usize,
        dropped: IntCounter,
    ) -> std::io::Result<Self> {
        let mut out = open(&target)?;
        let (tx, rx) = sync_channel::<Event>(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let reopen_w = Arc::clone(&reopen);
        let key = match hash_key {
            Some(k) => blake3::derive_key("qalqan blocked-log client hash v1", k.as_bytes()),
            None => rand::random(),
        };
        std::thread::Builder::new().name("qalqan-blocked-log".into()).spawn(move || {
            let mut fmt = Formatter { anonymize, key, second: u64::MAX, prefix: String::new(), buf: String::new() };
            loop {
                if reopen_w.swap(false, Ordering::AcqRel) {
                    let _ = out.flush();
                    match open(&target) {
                        Ok(o) => out = o,
                        Err(e) => tracing::warn!(error = %e, "reopening the blocked-query log failed; keeping the old handle"),
                    }
                }
                // drain what is queued, flush once, then nap: a sleeping
                // writer is never woken by the query path (no futex per event)
                let mut wrote = false;
                loop {
                    match rx.try_recv() {
                        Ok(e) => {
                            fmt.write(&mut out, &e);
                            wrote = true;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            let _ = out.flush();
                            return;
                        }
                    }
                }
                if wrote {
                    let _ = out.flush();
                }
                std::thread::sleep(WRITER_NAP);
            }
        })?;
        Ok(Self { tx, dropped, reopen })
    }

    /// Asks the writer to reopen its file (SIGHUP).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Queues an event; never blocks. Cost: a bounded-channel `try_send`
    /// (no wake-up: the writer polls).
    pub fn log(&self, e: Event) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// The writer's formatting state: the current second's time text, reused buffers.
struct Formatter {
    anonymize: Anonymize,
    key: [u8; 32],
    /// The second `prefix` is for (`YYYY-MM-DDTHH:MM:SS`).
    second: u64,
    prefix: String,
    buf: String,
}

impl Formatter {
    fn write(&mut self, out: &mut Out, e: &Event) {
        use std::fmt::Write as _;
        let d = e.at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        if d.as_secs() != self.second {
            self.second = d.as_secs();
            self.prefix = rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()));
            self.prefix.truncate(19);
        }
        self.buf.clear();
        let _ = write!(self.buf, "{}.{:03}Z", self.prefix, d.subsec_millis());
        let time_end = self.buf.len();
        self.buf.push_str(&anonymize(e.client, self.anonymize, &self.key));
        let client_end = self.buf.len();
        if let Some(t) = e.qtype {
            let _ = write!(self.buf, "{t}");
        }
        let qtype_end = self.buf.len();
        let (policy, hit) = (&e.policy, &e.hit);
        let list = policy.list(hit);
        let _ = write!(self.buf, "{}:{}", list.map(|l| l.source.as_str()).unwrap_or("?"), policy.rule_line(hit.rule));
        let b = &self.buf;
        let line = Line {
            time: b.get(..time_end).unwrap_or(""),
            client: b.get(time_end..client_end).unwrap_or(""),
            protocol: e.protocol,
            qname: std::str::from_utf8(&e.qname).unwrap_or("?"),
            qtype: e.qtype.map(|_| b.get(client_end..qtype_end).unwrap_or("")),
            list: list.map(|l| l.name.as_str()).unwrap_or(""),
            rule: b.get(qtype_end..).unwrap_or(""),
            decision: policy.decision(hit.rule),
            action: policy.answer(hit).as_str(),
            ede: policy.ede_parts(hit).0,
            shadow: e.shadow,
        };
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            let _ = out.write_all(b"\n");
        }
    }
}

type Out = Box<dyn std::io::Write + Send>;

fn open(target: &Target) -> std::io::Result<Out> {
    Ok(match target {
        Target::Stderr => Box::new(std::io::stderr()),
        Target::File(p) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new().create(true).append(true).open(p)?,
        )),
    })
}

/// The client address as logged.
pub fn anonymize(ip: IpAddr, how: Anonymize, key: &[u8; 32]) -> String {
    match how {
        Anonymize::None => ip.to_string(),
        Anonymize::Truncate => match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                std::net::Ipv4Addr::new(a, b, c, 0).to_string()
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
            }
        },
        Anonymize::Hash => {
            let bytes: Vec<u8> = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            let h = blake3::keyed_hash(key, &bytes);
            let hex = h.to_hex();
            format!("h:{}", hex.as_str().get(..16).unwrap_or(""))
        }
    }
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-11-23T21:50:01.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymize_table() {
        let key = [7u8; 32];
        let cases: &[(&str, Anonymize, &str)] = &[
            ("192.0.2.77", Anonymize::None, "192.0.2.77"),
            ("192.0.2.77", Anonymize::Truncate, "192.0.2.0"),
            ("2001:db8:aaaa:bbbb::1", Anonymize::Truncate, "2001:db8:aaaa::"),
        ];
        for (ip, how, want) in cases {
            assert_eq!(anonymize(ip.parse().unwrap(), *how, &key), *want, "{ip} {how:?}");
        }
        let h1 = anonymize("192.0.2.77".parse().unwrap(), Anonymize::Hash, &key);
        let h2 = anonymize("192.0.2.78".parse().unwrap(), Anonymize::Hash, &key);
        assert!(h1.starts_with("h:") && h1.len() == 18, "{h1}");
        assert_ne!(h1, h2);
        assert_eq!(h1, anonymize("192.0.2.77".parse().unwrap(), Anonymize::Hash, &key), "stable for one key");
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_468_287_123);
        assert_eq!(rfc3339(t), "2026-11-23T21:11:27.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
