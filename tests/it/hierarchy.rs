//! A loopback DNS hierarchy for the recursive-mode tests (issue #21): a root,
//! a TLD and leaf zones, each server an NSD (`nsd`) on its own 127.x.y.z
//! address, port 53, with its config, zones and log in one temp dir; the
//! signed zones signed by `ldns-signzone` (Debian `ldnsutils`) with ECDSA
//! P-256 keys made for this run by `ldns-keygen`, so the trust anchor is
//! the root KSK of this run (`root.key`, DNSKEY format, as hickory's
//! `TrustAnchors::from_file` and `drill -k` read it). Root hints: `root.hints`.
//!
//! ```text
//! 127.A.B.1  .                 signed; NS ns-root.
//! 127.A.B.2  test.             signed; DS for signed., bogus., expired., mismatch.;
//!                              NSEC proves the other delegations insecure
//! 127.A.B.3  signed.test.      signed: www A/AAAA, chain CNAME hop.insecure.test., *.w A,
//!                              n0..n200.many A, big TXT (2.4 KB: TC over UDP)
//!            bogus.test.       signed, then www's A changed: its RRSIG no longer matches
//!            expired.test.     signed with signatures valid in January 2020 only
//!            mismatch.test.    signed, but test.'s DS is of another key
//!            lame.test.        unsigned; ns1 → .4 (lame: REFUSED), ns2 → .3 (good)
//!            halfdead.test.    unsigned; ns1 → .9 (nothing listens), ns2 → .3 (good)
//! 127.A.B.4  insecure.test.    unsigned, no DS: www A, hop CNAME www.signed.test., *.w A
//!            (answers REFUSED for lame.test. and dead.test.)
//! 127.A.B.9  nothing listens: the address of dead-server delegations
//! ```
//! `dead.test.` is delegated to .4 only: lame everywhere, so SERVFAIL.
//!
//! Port 53 needs root (or CAP_NET_BIND_SERVICE): where neither is at hand,
//! and where nsd or ldnsutils is missing, the tests skip loudly, or fail
//! under `CI=true` (tests/run.sh installs both and runs as root or sudo).

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{self, in_ci, Q};

/// The addresses of one hierarchy.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub root: Ipv4Addr,
    pub tld: Ipv4Addr,
    pub leaf: Ipv4Addr,
    pub other: Ipv4Addr,
    /// Nothing listens here.
    pub dead: Ipv4Addr,
}

/// Which NSD serves what.
pub const SERVERS: [(&str, &[&str]); 4] = [
    ("root", &["."]),
    ("tld", &["test."]),
    ("leaf", &["signed.test.", "bogus.test.", "expired.test.", "mismatch.test.", "lame.test.", "halfdead.test."]),
    ("other", &["insecure.test."]),
];

/// A running hierarchy; every NSD is stopped (and reaped) on drop.
pub struct Hierarchy {
    pub addrs: Addrs,
    dir: tempfile::TempDir,
    nsd: Vec<(&'static str, Child)>,
}

impl Drop for Hierarchy {
    fn drop(&mut self) {
        for (_, child) in &mut self.nsd {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// Runs `cmd` in `dir`, panics with its stderr when it fails, returns stdout.
fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(tool(cmd)).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Whether nsd and ldnsutils are installed and port 53 can be bound; if
/// not: a loud skip (`false`), or a failure under CI.
fn usable(probe: Ipv4Addr) -> bool {
    let missing: Vec<&str> = [("nsd", "nsd"), ("ldns-signzone", "ldnsutils"), ("ldns-keygen", "ldnsutils"), ("ldns-key2ds", "ldnsutils")]
        .into_iter()
        .filter(|(bin, _)| !tool(bin).is_absolute())
        .map(|(_, pkg)| pkg)
        .collect();
    if !missing.is_empty() {
        assert!(!in_ci(), "CI=true: the DNS hierarchy needs {missing:?} (tests/run.sh installs them)");
        eprintln!("SKIPPING: the DNS hierarchy needs {missing:?} (apt-get install them)");
        return false;
    }
    if let Err(e) = std::net::UdpSocket::bind((probe, 53)) {
        assert!(!in_ci(), "CI=true: cannot bind {probe}:53 for the DNS hierarchy ({e}); run as root or with CAP_NET_BIND_SERVICE");
        eprintln!("SKIPPING: cannot bind {probe}:53 for the DNS hierarchy ({e})");
        return false;
    }
    true
}

/// 127.A.B.0/24 for this hierarchy: A from the process id, B counts the
/// hierarchies this process started, so parallel tests and test processes
/// (other worktrees) rarely share one.
fn subnet() -> (u8, u8) {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let a = 64 + (std::process::id() % 128) as u8;
    let b = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7).wrapping_add((std::process::id() / 128 % 256) as u8);
    (a, b)
}

struct Keys {
    ksk: String,
    zsk: String,
}

fn keygen(dir: &Path, zone: &str) -> Keys {
    let ksk = run(dir, "ldns-keygen", &["-a", "ECDSAP256SHA256", "-k", "-r", "/dev/urandom", zone]).trim().to_string();
    let zsk = run(dir, "ldns-keygen", &["-a", "ECDSAP256SHA256", "-r", "/dev/urandom", zone]).trim().to_string();
    Keys { ksk, zsk }
}

fn ds(dir: &Path, keys: &Keys) -> String {
    run(dir, "ldns-key2ds", &["-n", "-2", &format!("{}.key", keys.ksk)]).trim().to_string()
}

/// Signs `file` into `file.signed`; `validity` = (inception, expiration)
/// as `YYYYMMDD` (default: now to four weeks on).
fn sign(dir: &Path, file: &str, origin: &str, keys: &Keys, validity: Option<(&str, &str)>) -> String {
    let out = format!("{file}.signed");
    let mut args = vec!["-f", &out, "-o", origin];
    if let Some((inception, expiration)) = validity {
        args.extend(["-i", inception, "-e", expiration]);
    }
    args.extend([file, &keys.ksk, &keys.zsk]);
    run(dir, "ldns-signzone", &args);
    out
}

fn soa(zone: &str, ns: &str) -> String {
    format!("$TTL 3600\n{zone} IN SOA {ns} hostmaster.invalid. 1 3600 600 86400 300\n{zone} IN NS {ns}\n")
}

impl Hierarchy {
    /// Generates keys, zones, root hints and trust anchor; starts the four
    /// NSDs and waits until each answers its zones. `None`: skipped.
    pub async fn start() -> Option<Hierarchy> {
        let (a, b) = subnet();
        let ip = |d| Ipv4Addr::new(127, a, b, d);
        let addrs = Addrs { root: ip(1), tld: ip(2), leaf: ip(3), other: ip(4), dead: ip(9) };
        if !usable(addrs.root) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let Addrs { root, tld, leaf, other, dead } = addrs;

        let root_keys = keygen(d, ".");
        let tld_keys = keygen(d, "test.");
        let signed_keys = keygen(d, "signed.test.");
        let bogus_keys = keygen(d, "bogus.test.");
        let expired_keys = keygen(d, "expired.test.");
        let mismatch_keys = keygen(d, "mismatch.test.");
        // the DS in test. is of a key mismatch.test. is not signed with
        let mismatch_ds_keys = keygen(d, "mismatch.test.");

        let zones: [(&str, &str, String, Option<&Keys>); 9] = [
            (
                "root.zone",
                ".",
                format!("{}ns-root. IN A {root}\ntest. IN NS ns.test.\nns.test. IN A {tld}\n{}\n", soa(".", "ns-root."), ds(d, &tld_keys)),
                Some(&root_keys),
            ),
            (
                "test.zone",
                "test.",
                format!(
                    "{}ns.test. IN A {tld}\n\
                     signed.test. IN NS ns.signed.test.\nns.signed.test. IN A {leaf}\n{}\n\
                     bogus.test. IN NS ns.bogus.test.\nns.bogus.test. IN A {leaf}\n{}\n\
                     expired.test. IN NS ns.expired.test.\nns.expired.test. IN A {leaf}\n{}\n\
                     mismatch.test. IN NS ns.mismatch.test.\nns.mismatch.test. IN A {leaf}\n{}\n\
                     insecure.test. IN NS ns.insecure.test.\nns.insecure.test. IN A {other}\n\
                     lame.test. IN NS ns1.lame.test.\nlame.test. IN NS ns2.lame.test.\nns1.lame.test. IN A {other}\nns2.lame.test. IN A {leaf}\n\
                     dead.test. IN NS ns.dead.test.\nns.dead.test. IN A {other}\n\
                     halfdead.test. IN NS ns1.halfdead.test.\nhalfdead.test. IN NS ns2.halfdead.test.\nns1.halfdead.test. IN A {dead}\nns2.halfdead.test. IN A {leaf}\n",
                    soa("test.", "ns.test."),
                    ds(d, &signed_keys),
                    ds(d, &bogus_keys),
                    ds(d, &expired_keys),
                    ds(d, &mismatch_ds_keys)
                ),
                Some(&tld_keys),
            ),
            (
                "signed.test.zone",
                "signed.test.",
                format!(
                    "{}ns.signed.test. IN A {leaf}\nwww.signed.test. IN A 192.0.2.1\nwww.signed.test. IN AAAA 2001:db8::1\n\
                     chain.signed.test. IN CNAME hop.insecure.test.\n*.w.signed.test. IN A 192.0.2.5\n{}",
                    soa("signed.test.", "ns.signed.test."),
                    (0..=200).map(|i| format!("n{i}.many.signed.test. IN A 192.0.2.8\n")).collect::<String>()
                        + &(0..12).map(|i| format!("big.signed.test. IN TXT \"{i:02}{}\"\n", "x".repeat(200))).collect::<String>()
                ),
                Some(&signed_keys),
            ),
            (
                "bogus.test.zone",
                "bogus.test.",
                format!("{}ns.bogus.test. IN A {leaf}\nwww.bogus.test. IN A 192.0.2.66\n", soa("bogus.test.", "ns.bogus.test.")),
                Some(&bogus_keys),
            ),
            (
                "expired.test.zone",
                "expired.test.",
                format!("{}ns.expired.test. IN A {leaf}\nwww.expired.test. IN A 192.0.2.9\n", soa("expired.test.", "ns.expired.test.")),
                Some(&expired_keys),
            ),
            (
                "mismatch.test.zone",
                "mismatch.test.",
                format!("{}ns.mismatch.test. IN A {leaf}\nwww.mismatch.test. IN A 192.0.2.10\n", soa("mismatch.test.", "ns.mismatch.test.")),
                Some(&mismatch_keys),
            ),
            (
                "lame.test.zone",
                "lame.test.",
                format!(
                    "{}lame.test. IN NS ns2.lame.test.\nns1.lame.test. IN A {other}\nns2.lame.test. IN A {leaf}\nwww.lame.test. IN A 192.0.2.4\n",
                    soa("lame.test.", "ns1.lame.test.")
                ),
                None,
            ),
            (
                "halfdead.test.zone",
                "halfdead.test.",
                format!(
                    "{}halfdead.test. IN NS ns2.halfdead.test.\nns1.halfdead.test. IN A {dead}\nns2.halfdead.test. IN A {leaf}\nwww.halfdead.test. IN A 192.0.2.7\n",
                    soa("halfdead.test.", "ns1.halfdead.test.")
                ),
                None,
            ),
            (
                "insecure.test.zone",
                "insecure.test.",
                format!(
                    "{}ns.insecure.test. IN A {other}\nwww.insecure.test. IN A 192.0.2.3\nhop.insecure.test. IN CNAME www.signed.test.\n*.w.insecure.test. IN A 192.0.2.6\n",
                    soa("insecure.test.", "ns.insecure.test.")
                ),
                None,
            ),
        ];
        let mut served = std::collections::HashMap::new();
        for (file, origin, text, keys) in &zones {
            std::fs::write(d.join(file), text).unwrap();
            // expired.test.: signatures valid for January 2020 only
            let validity = (*origin == "expired.test.").then_some(("20200101", "20200201"));
            let file = match keys {
                Some(k) => sign(d, file, origin, k, validity),
                None => file.to_string(),
            };
            served.insert(*origin, file);
        }
        // The broken signature: www.bogus.test.'s address changed after signing.
        let bogus = d.join(&served["bogus.test."]);
        let text = std::fs::read_to_string(&bogus).unwrap();
        assert!(text.contains("192.0.2.66"), "signed bogus.test. zone lost its A record");
        std::fs::write(&bogus, text.replace("192.0.2.66", "192.0.2.67")).unwrap();

        std::fs::write(d.join("root.hints"), format!(". 3600000 NS ns-root.\nns-root. 3600000 A {root}\n")).unwrap();
        std::fs::copy(d.join(format!("{}.key", root_keys.ksk)), d.join("root.key")).unwrap();

        let mut h = Hierarchy { addrs, dir, nsd: Vec::new() };
        for (server, names) in SERVERS {
            let child = h.spawn_nsd(server, names, &served);
            h.nsd.push((server, child));
        }
        for (server, names) in SERVERS {
            let addr = h.addr(server);
            for zone in names {
                h.wait_authoritative(server, addr, zone).await;
            }
        }
        Some(h)
    }

    /// The address of `server` (`root`, `tld`, `leaf`, `other`).
    pub fn addr(&self, server: &str) -> Ipv4Addr {
        match server {
            "root" => self.addrs.root,
            "tld" => self.addrs.tld,
            "leaf" => self.addrs.leaf,
            "other" => self.addrs.other,
            _ => panic!("no server {server}"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The root hints file (NS + A of the one root server).
    pub fn root_hints(&self) -> PathBuf {
        self.dir.path().join("root.hints")
    }

    /// The trust anchor: this run's root KSK as one DNSKEY line.
    pub fn trust_anchor(&self) -> PathBuf {
        self.dir.path().join("root.key")
    }

    fn conf(&self, server: &str) -> PathBuf {
        self.dir.path().join(format!("{server}.nsd.conf"))
    }

    fn spawn_nsd(&self, server: &str, names: &[&str], served: &std::collections::HashMap<&str, String>) -> Child {
        let d = self.dir.path();
        let mut conf = format!(
            "server:\n  ip-address: {ip}\n  port: 53\n  do-ip6: no\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  \
             zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/{server}.pid\"\n  xfrdfile: \"{d}/{server}.xfrd\"\n  \
             zonelistfile: \"{d}/{server}.zonelist\"\n  xfrdir: \"{d}\"\n  logfile: \"{d}/{server}.log\"\n  verbosity: 1\n  \
             tcp-count: 32\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n\
             remote-control:\n  control-enable: yes\n  control-interface: \"{d}/{server}.sock\"\n",
            ip = self.addr(server),
            d = d.display()
        );
        for zone in names {
            conf.push_str(&format!("zone:\n  name: \"{zone}\"\n  zonefile: \"{}\"\n", served[zone]));
        }
        std::fs::write(self.conf(server), conf).unwrap();
        Command::new(tool("nsd"))
            .arg("-d")
            .arg("-c")
            .arg(self.conf(server))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nsd: {e}"))
    }

    async fn wait_authoritative(&self, server: &str, addr: Ipv4Addr, zone: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(m) = support::udp(SocketAddr::new(IpAddr::V4(addr), 53), zone, RecordType::SOA, NO_EDNS).await {
                if m.metadata.response_code == ResponseCode::NoError && m.metadata.authoritative {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{server} ({addr}) does not serve {zone} within 10 s; log:\n{}", self.log(server));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self, server: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{server}.log"))).unwrap_or_default()
    }

    /// Queries `server` has answered so far (`nsd-control stats_noreset`,
    /// `num.queries`): how a test proves a name was never asked.
    pub fn queries(&self, server: &str) -> u64 {
        self.stat(server, "num.queries")
    }

    /// TCP queries `server` has answered so far (`num.tcp`).
    pub fn tcp_queries(&self, server: &str) -> u64 {
        self.stat(server, "num.tcp")
    }

    /// One of `server`'s `nsd-control stats_noreset` counters (e.g.
    /// `num.type.AAAA`); 0 when NSD has not counted any yet.
    pub fn stat_or_zero(&self, server: &str, key: &str) -> u64 {
        let out = Command::new(tool("nsd-control")).arg("-c").arg(self.conf(server)).arg("stats_noreset").output().unwrap();
        assert!(out.status.success(), "nsd-control: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("{key}=");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    fn stat(&self, server: &str, key: &str) -> u64 {
        let out = Command::new(tool("nsd-control")).arg("-c").arg(self.conf(server)).arg("stats_noreset").output().unwrap();
        assert!(out.status.success(), "nsd-control: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("{key}=");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no {key} in {text}"))
    }

    /// Stops the NSD of `server` (a dead authority).
    pub fn stop(&mut self, server: &str) {
        for (name, child) in &mut self.nsd {
            if *name == server {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub const NO_EDNS: Q = Q { edns: false, dnssec_ok: false, payload: 512 };
pub const DO: Q = Q { edns: true, dnssec_ok: true, payload: 1232 };
