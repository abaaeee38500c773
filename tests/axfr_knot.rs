//! Zone transfers against a real primary: Debian's Knot DNS (`knotd`), run
//! on 127.0.0.1 with a random port and everything in a temp dir. Skipped
//! (with a message) when knotd is not installed, unless `CI` is set.
//!
//! Covers: AXFR with TSIG over several messages (MAC chaining), AXFR with
//! no key or a wrong key, SOA serial checks, IXFR after a zone change and
//! reload, IXFR when up to date.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::rdata::{CNAME, TSIG};
use hickory_proto::rr::{Name, RData, Record};
use qalqan::lists::source::{soa_serial, to_zone_text, transfer, AxfrError, Limits, Transfer, TsigKey};

const SECRET: &str = "cWFscWFuLXRlc3Qtc2VjcmV0LTMyLWJ5dGVzLWxvbmchIQ==";
const OTHER_SECRET: &str = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZyEhIQ==";
/// Enough records that Knot splits the AXFR over several messages.
const BULK: usize = 4000;

/// A running knotd; killed (and reaped) on drop, even when an assertion fails.
struct Knot {
    child: Child,
    dir: tempfile::TempDir,
    conf: PathBuf,
    addr: SocketAddr,
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Knot {
    /// Rewrites knot.conf with `edit` and has knotd reload it.
    fn reconfigure(&self, edit: impl FnOnce(String) -> String) {
        let conf = std::fs::read_to_string(&self.conf).unwrap();
        let new = edit(conf.clone());
        assert_ne!(conf, new, "the edit changed nothing");
        std::fs::write(&self.conf, new).unwrap();
        self.knotc(&["reload"]);
    }

    /// Stops knotd and starts it again on the same config and storage;
    /// with `skew`, under libfaketime's clock offset (e.g. `+400s`).
    fn restart(&mut self, skew: Option<&str>) {
        self.stop();
        let log = std::fs::OpenOptions::new().append(true).open(self.dir.path().join("knotd.log")).unwrap();
        let mut cmd = match skew {
            Some(s) => {
                let mut c = Command::new("faketime");
                c.args(["-f", s]).arg(tool("knotd"));
                c
            }
            None => Command::new(tool("knotd")),
        };
        self.child = cmd.arg("-c").arg(&self.conf).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    }

    /// `knotc stop`, then reap: under `faketime` the child is the wrapper,
    /// and killing it would leave knotd running.
    fn stop(&mut self) {
        let _ = Command::new(tool("knotc")).arg("-c").arg(&self.conf).arg("stop").output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn zone_path(&self) -> PathBuf {
        self.dir.path().join("rpz.test.zone")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knotd.log")).unwrap_or_default()
    }

    fn knotc(&self, args: &[&str]) {
        let out = Command::new(tool("knotc"))
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "knotc {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `knotd`/`knotc` on PATH or in /usr/sbin (not always on a user's PATH).
fn tool(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

/// Whether this is a CI run (`CI` set and not `false`/`0`, as in
/// tests/it/support.rs): then a missing tool fails the test.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether `name` runs; when not, a loud skip, or a failure under CI.
fn have(name: &str, package: &str) -> bool {
    let ok = Command::new(tool(name))
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!in_ci(), "CI=true: `{name}` is not installed (tests/run.sh installs {package})");
        eprintln!("SKIPPING: `{name}` not installed (apt-get install {package})");
    }
    ok
}

/// A port free for both TCP and UDP on 127.0.0.1.
fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

fn zone_file(serial: u32, extra: &str) -> String {
    let mut z = format!(
        "$ORIGIN rpz.test.\n$TTL 300\n@ SOA ns.rpz.test. admin.rpz.test. {serial} 3600 600 86400 60\n@ NS ns.rpz.test.\n\
         ns A 127.0.0.1\nbad.example CNAME .\n*.bad.example CNAME .\nnodata.example CNAME *.\nok.example CNAME rpz-passthru.\n"
    );
    for i in 0..BULK {
        z.push_str(&format!("host{i}.blocked-domain-number-{i}.example CNAME .\n"));
    }
    z.push_str(extra);
    z
}

fn start_knot() -> Knot {
    start_knot_with("127.0.0.1", free_port(), None)
}

/// Knot listening on `ip@port` serving `rpz.test`; with `notify_port`, it
/// NOTIFYs qalqan at 127.0.0.1:`notify_port` from `ip` on every zone change.
fn start_knot_with(ip: &str, port: u16, notify_port: Option<u16>) -> Knot {
    start_knot_serving(ip, port, notify_port, &[("rpz.test", zone_file(1, ""))])
}

/// Knot listening on `ip@port` serving `zones` (name, file text), each
/// transferable with the test key; with `notify_port`, it NOTIFYs qalqan at
/// 127.0.0.1:`notify_port` from `ip` (signed) on every change of any of them.
fn start_knot_serving(ip: &str, port: u16, notify_port: Option<u16>, zones: &[(&str, String)]) -> Knot {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = dir.path().join("knot.conf");
    let (remote, notify) = match notify_port {
        // Knot signs its NOTIFY with the key, and checks qalqan's signed reply
        Some(q) => (
            format!("remote:\n  - id: qalqan\n    address: 127.0.0.1@{q}\n    via: {ip}\n    key: qalqan-key\n"),
            "    notify: qalqan\n",
        ),
        None => (String::new(), ""),
    };
    let mut zone_conf = String::new();
    for (name, text) in zones {
        std::fs::write(dir.path().join(format!("{name}.zone")), text).unwrap();
        zone_conf.push_str(&format!("  - domain: {name}\n    file: {name}.zone\n    acl: xfr\n{notify}"));
    }
    let config = format!(
        r#"server:
    rundir: "{d}"
    listen: {ip}@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{d}"
key:
  - id: qalqan-key
    algorithm: hmac-sha256
    secret: {SECRET}
{remote}acl:
  - id: xfr
    address: 127.0.0.1
    key: qalqan-key
    action: transfer
template:
  - id: default
    storage: "{d}"
    zonefile-sync: -1
    zonefile-load: difference
    journal-content: changes
    semantic-checks: off
zone:
{zone_conf}"#
    );
    std::fs::write(&conf, config).unwrap();
    let log = std::fs::File::create(dir.path().join("knotd.log")).unwrap();
    let child = Command::new(tool("knotd"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Knot { child, dir, conf, addr: SocketAddr::new(ip.parse().unwrap(), port) }
}

/// Polls the SOA serial until it is `want` (knotd loads zones in the background).
async fn wait_for_serial(knot: &Knot, zone: &Name, want: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = soa_serial(knot.addr, zone, None, Duration::from_millis(500)).await;
        if matches!(got, Ok(s) if s == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "serial {want} not served: last {got:?}\nknotd log:\n{}",
            knot.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(
        Name::from_ascii(owner).unwrap(),
        300,
        RData::CNAME(CNAME(Name::from_ascii(target).unwrap())),
    )
}

#[tokio::test]
async fn transfers_from_knot() {
    if !have("knotd", "knot") {
        return;
    }
    let knot = start_knot();
    let zone = Name::from_ascii("rpz.test.").unwrap();
    let key = TsigKey::parse(&format!("hmac-sha256:qalqan-key:{SECRET}")).unwrap();
    let wrong = TsigKey::parse(&format!("hmac-sha256:qalqan-key:{OTHER_SECRET}")).unwrap();
    let unknown = TsigKey::parse(&format!("hmac-sha256:other-key:{SECRET}")).unwrap();
    let limits = Limits {
        timeout: Duration::from_secs(20),
        max_records: 100_000,
        max_bytes: 64 << 20,
    };
    wait_for_serial(&knot, &zone, 1).await;

    // AXFR with TSIG: every record, the SOA once, over several messages.
    let full = transfer(knot.addr, &zone, None, Some(&key), &limits).await.unwrap();
    let Transfer::Full { serial, records } = &full else {
        panic!("expected a full transfer, got {full:?}")
    };
    assert_eq!(*serial, 1);
    assert_eq!(records.len(), 7 + BULK, "SOA, NS, A, 4 rules, {BULK} bulk");
    assert!(matches!(records[0].data, RData::SOA(_)));
    assert_eq!(records.iter().filter(|r| matches!(r.data, RData::SOA(_))).count(), 1);
    for r in [
        cname("bad.example.rpz.test.", "."),
        cname("nodata.example.rpz.test.", "*."),
        cname("ok.example.rpz.test.", "rpz-passthru."),
    ] {
        assert!(records.contains(&r), "missing {r}");
    }
    // The text goes through qalqan's own RPZ parser without a bad line.
    let text = to_zone_text(&zone, records);
    let mut parsed = qalqan::lists::parse::ParseOutput::default();
    qalqan::lists::parse::rpz::parse("rpz.test", text.as_bytes(), &mut parsed);
    assert_eq!(parsed.bad_lines, 0, "{:?}", parsed.errors);
    assert_eq!(
        parsed.entries.len(),
        5 + BULK,
        "4 rules, `ns A` as local data, {BULK} bulk"
    );
    // qalqan itself hands the records to the parser as records: the same
    // rules (a record's line is its index; the text's line 1 is `$ORIGIN`)
    let mut direct = qalqan::lists::parse::ParseOutput::default();
    qalqan::lists::parse::rpz::parse_records("rpz.test", &zone, records, &mut direct);
    assert_eq!(direct.bad_lines, 0, "{:?}", direct.errors);
    let shifted: Vec<_> = parsed.entries.iter().map(|e| (e.line - 1, e.rule.clone())).collect();
    let direct: Vec<_> = direct.entries.iter().map(|e| (e.line, e.rule.clone())).collect();
    assert_eq!(direct, shifted);

    // Tighter limits are enforced on a real transfer too.
    let small = Limits {
        max_records: 100,
        ..limits.clone()
    };
    let err = transfer(knot.addr, &zone, None, Some(&key), &small).await.unwrap_err();
    assert!(matches!(err, AxfrError::TooLarge), "{err:?}");

    // No key, wrong secret, unknown key name: refused, and said so.
    let err = transfer(knot.addr, &zone, None, None, &limits).await.unwrap_err();
    eprintln!("no key: {err}");
    assert!(matches!(err, AxfrError::Refused(_)), "{err:?}");
    let err = transfer(knot.addr, &zone, None, Some(&wrong), &limits)
        .await
        .unwrap_err();
    eprintln!("wrong secret: {err}");
    assert!(matches!(&err, AxfrError::Tsig(m) if m.contains("BADSIG")), "{err:?}");
    let err = transfer(knot.addr, &zone, None, Some(&unknown), &limits)
        .await
        .unwrap_err();
    eprintln!("unknown key: {err}");
    assert!(matches!(&err, AxfrError::Tsig(m) if m.contains("BADKEY")), "{err:?}");

    // Change the zone: one record more, serial 2; reload.
    std::fs::write(knot.zone_path(), zone_file(2, "added.example CNAME .\n")).unwrap();
    knot.knotc(&["zone-reload", "rpz.test"]);
    wait_for_serial(&knot, &zone, 2).await;
    assert_eq!(
        soa_serial(knot.addr, &zone, Some(&key), Duration::from_secs(5))
            .await
            .unwrap(),
        2
    );

    // IXFR from 1: exactly the added record.
    let ixfr = transfer(knot.addr, &zone, Some(1), Some(&key), &limits).await.unwrap();
    let want = Transfer::Incremental {
        from_serial: 1,
        serial: 2,
        diffs: vec![(vec![], vec![cname("added.example.rpz.test.", ".")])],
    };
    assert_eq!(ixfr, want);

    // IXFR from 2: nothing new.
    let current = transfer(knot.addr, &zone, Some(2), Some(&key), &limits).await.unwrap();
    assert_eq!(current, Transfer::UpToDate { serial: 2 });

    // AXFR after the change has the new record.
    let full = transfer(knot.addr, &zone, None, Some(&key), &limits).await.unwrap();
    let Transfer::Full { serial: 2, records } = full else {
        panic!("expected serial 2, got {full:?}")
    };
    assert!(records.contains(&cname("added.example.rpz.test.", ".")));
}

/// Knot on 127.0.0.2 (so a NOTIFY's source tells the primary apart from the
/// test client on 127.0.0.1), notifying qalqan at 127.0.0.1:`qalqan_port`
/// when given.
fn start_knot_on_2(qalqan_port: Option<u16>) -> Knot {
    start_knot_with("127.0.0.2", free_port_on_2(), qalqan_port)
}

/// A port free for both TCP and UDP on 127.0.0.2.
fn free_port_on_2() -> u16 {
    loop {
        let p = free_port();
        if TcpListener::bind(("127.0.0.2", p)).is_ok() && UdpSocket::bind(("127.0.0.2", p)).is_ok() {
            return p;
        }
    }
}

fn start_knot_notifying(qalqan_port: u16) -> Knot {
    start_knot_on_2(Some(qalqan_port))
}

async fn rcode(server: SocketAddr, name: &str) -> Option<hickory_proto::op::ResponseCode> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), hickory_proto::rr::RecordType::A));
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf)).await.ok()?.ok()?;
    Message::from_vec(&buf[..n]).ok().map(|m| m.metadata.response_code)
}

/// A UDP socket and a TCP listener on one free port of 127.0.0.1 (qalqan
/// serves both; Knot must know the port before qalqan starts).
async fn bind_pair() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    loop {
        let u = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(t) = tokio::net::TcpListener::bind(u.local_addr().unwrap()).await {
            return (u, t);
        }
    }
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() & 0xffff) as u16
}

#[tokio::test]
async fn resolver_follows_knot_by_axfr_notify_and_ixfr() {
    if !have("knotd", "knot") {
        return;
    }
    // qalqan's sockets first: knot must know where to send NOTIFY
    let (udp, tcp) = bind_pair().await;
    let qaddr = udp.local_addr().unwrap();
    let knot = start_knot_notifying(qaddr.port());
    let zone = Name::from_ascii("rpz.test.").unwrap();
    wait_for_serial(&knot, &zone, 1).await;
    let state = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
allow_clients = ["127.0.0.0/8"]
[upstream]
servers = ["127.0.0.1:9"]
timeout_ms = 300
[state]
dir = "{}"
[[lists]]
name = "rpz"
source = "axfr://{}/rpz.test"
format = "rpz"
tsig = "hmac-sha256:qalqan-key:{SECRET}"
refresh_s = 3600
"#,
        state.path().display(),
        knot.addr
    );
    let app = qalqan::App::from_toml_str(&toml).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = http.local_addr().unwrap();
    let sockets = qalqan::Sockets::new(vec![udp], vec![tcp]).with_metrics(http);
    let task = tokio::spawn(qalqan::serve(app, sockets, stop.clone()));
    // the initial AXFR happens before the server answers
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if rcode(qaddr, "bad.example.").await == Some(hickory_proto::op::ResponseCode::NXDomain) {
            break;
        }
        assert!(Instant::now() < deadline, "AXFR'd zone not enforced; knot log:\n{}", knot.log());
    }
    assert_eq!(rcode(qaddr, "host17.blocked-domain-number-17.example.").await, Some(hickory_proto::op::ResponseCode::NXDomain));
    assert_eq!(rcode(qaddr, "x.bad.example.").await, Some(hickory_proto::op::ResponseCode::NXDomain));

    // a NOTIFY from anyone but the primary is refused
    {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        let mut n = Message::new(4242, MessageType::Query, OpCode::Notify);
        n.add_query(Query::query(zone.clone(), hickory_proto::rr::RecordType::SOA));
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&n.to_vec().unwrap(), qaddr).await.unwrap();
        let mut buf = vec![0u8; 512];
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf)).await.unwrap().unwrap();
        let r = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(r.metadata.response_code, hickory_proto::op::ResponseCode::Refused);
    }

    // change the zone: one rule DELETED (bad.example; its wildcard stays),
    // one added; knot reloads, NOTIFYs qalqan (signed), qalqan IXFRs
    let v2 = zone_file(2, "added.example CNAME .\n").replace("\nbad.example CNAME .\n", "\n");
    assert!(!v2.contains("\nbad.example CNAME") && v2.contains("*.bad.example CNAME"));
    std::fs::write(knot.zone_path(), &v2).unwrap();
    knot.knotc(&["zone-reload", "rpz.test"]);
    let t0 = Instant::now();
    loop {
        if rcode(qaddr, "added.example.").await == Some(hickory_proto::op::ResponseCode::NXDomain) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "NOTIFY + IXFR not applied within 5 s; knot log:\n{}", knot.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the deleted rule no longer blocks (the name goes upstream, which is
    // down: SERVFAIL), the rules around it still do
    let unblocked = rcode(qaddr, "bad.example.").await;
    assert!(matches!(unblocked, Some(r) if r != hickory_proto::op::ResponseCode::NXDomain), "deleted rule still enforced: {unblocked:?}");
    assert_eq!(rcode(qaddr, "x.bad.example.").await, Some(hickory_proto::op::ResponseCode::NXDomain), "wildcard kept");
    assert_eq!(rcode(qaddr, "host17.blocked-domain-number-17.example.").await, Some(hickory_proto::op::ResponseCode::NXDomain), "old rules kept");
    // the IXFR's records were published as a delta over the AXFR'd base
    // (one full build: the AXFR; one delta: the IXFR), and /explain names the
    // added rule by its record's position, after every record of the AXFR
    let page = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(maddr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await.unwrap().unwrap();
        body
    };
    let metrics = page("/metrics").await;
    let sample = |series: &str| metrics.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(sample(r#"qalqan_list_updates_total{kind="delta",list="rpz"}"#), Some(1.0), "{metrics}");
    assert_eq!(sample(r#"qalqan_list_updates_total{kind="full",list="rpz"}"#), Some(1.0), "{metrics}");
    assert_eq!(sample(r#"qalqan_update_enforce_seconds_count{list="rpz"}"#), Some(2.0), "{metrics}");
    assert!(sample(r#"qalqan_list_age_seconds{list="rpz"}"#).is_some_and(|a| a < 60.0), "{metrics}");
    let explain = page("/explain?name=added.example").await;
    // every record of the AXFR but the SOA came first (positions 1..=records)
    let records = zone_file(1, "").lines().filter(|l| [" CNAME ", " A ", " NS "].iter().any(|t| l.contains(t))).count();
    assert!(explain.contains("blocked") && explain.contains(&format!("rpz.test:{}\n", records + 1)), "{explain}");
    let lists = page("/lists").await;
    assert!(lists.contains("activated_at=") && lists.contains("version="), "{lists}");
    // the IXFR's version is the zone's record sum, moved by its two records
    // (O(changes): no zone text rendered or hashed before the swap)
    let version = lists.split("version=").nth(1).and_then(|v| v.split_whitespace().next()).unwrap_or_default().to_owned();
    assert!(version.len() == 65 && version.starts_with('z'), "not a record-sum version: {lists}");
    // and it came as an IXFR, by Knot's own account: one outgoing IXFR
    // 1 -> 2, no AXFR after the first, no fallback to AXFR
    let log = knot.log();
    let lines = |what: &str| log.lines().filter(|l| l.contains(what) && l.contains("started")).count();
    assert_eq!(lines("IXFR, outgoing"), 1, "expected one outgoing IXFR in knot's log:\n{log}");
    assert!(log.lines().any(|l| l.contains("IXFR, outgoing") && l.contains("serial 1 -> 2")), "{log}");
    assert_eq!(lines("AXFR, outgoing"), 1, "only the initial AXFR:\n{log}");
    assert!(!log.to_ascii_lowercase().contains("fallback"), "{log}");
    // knot sent a signed NOTIFY and accepted qalqan's signed reply
    assert!(log.lines().any(|l| l.contains("notify, outgoing") && l.contains("serial 2")), "{log}");
    assert!(!log.lines().any(|l| l.contains("notify, outgoing") && (l.contains("failed") || l.contains("TSIG"))) , "{log}");
    stop.cancel();
    task.await.unwrap().unwrap();

    // restart with the primary gone: the persisted zone is enforced
    drop(knot);
    assert!(state.path().join("rpz.list").exists());
    assert!(state.path().join("rpz.records").exists());
    // the zone text, rendered behind the swap, names the version it holds
    let text = std::fs::read_to_string(state.path().join("rpz.list")).unwrap();
    assert!(text.ends_with(&format!("; qalqan-zone-version {version}\n")) && text.contains("added.example."), "{text}");
    let app = qalqan::App::from_toml_str(&toml).unwrap();
    let (udp, tcp) = bind_pair().await;
    let qaddr = udp.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(qalqan::serve(app, qalqan::Sockets::new(vec![udp], vec![tcp]), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rcode(qaddr, "added.example.").await, Some(hickory_proto::op::ResponseCode::NXDomain));
    assert_ne!(rcode(qaddr, "bad.example.").await, Some(hickory_proto::op::ResponseCode::NXDomain), "the deletion was persisted");
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// qalqan serving one `axfr://` RPZ list from `primary` with the test key,
/// with its /metrics endpoint; stopped (and joined) by `stop`.
struct Qalqan {
    addr: SocketAddr,
    metrics: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), qalqan::StartError>>,
    _state: tempfile::TempDir,
}

impl Qalqan {
    async fn start(primary: SocketAddr, refresh_s: u32) -> Qalqan {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = http.local_addr().unwrap();
        let state = tempfile::tempdir().unwrap();
        let toml = format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
allow_clients = ["127.0.0.0/8"]
[upstream]
servers = ["127.0.0.1:9"]
timeout_ms = 300
[state]
dir = "{}"
[[lists]]
name = "rpz"
source = "axfr://{primary}/rpz.test"
format = "rpz"
tsig = "hmac-sha256:qalqan-key:{SECRET}"
refresh_s = {refresh_s}
"#,
            state.path().display(),
        );
        let app = qalqan::App::from_toml_str(&toml).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let sockets = qalqan::Sockets::new(vec![udp], vec![tcp]).with_metrics(http);
        let task = tokio::spawn(qalqan::serve(app, sockets, stop.clone()));
        Qalqan { addr, metrics, stop, task, _state: state }
    }

    /// Sum of the samples of `series` (a metric name with a label prefix).
    async fn metric(&self, series: &str) -> f64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await.unwrap().unwrap();
        body.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls `name` over the wire until it answers `want` (an observable
    /// event, no fixed sleep), or fails after `within` with `why`.
    async fn until(&self, name: &str, want: ResponseCode, within: Duration, why: &dyn Fn() -> String) {
        let t0 = Instant::now();
        while rcode(self.addr, name).await != Some(want) {
            assert!(t0.elapsed() < within, "{name} not {want} within {within:?}: {}", why());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

use hickory_proto::op::ResponseCode;

/// `kdig` sends a NOTIFY for rpz.test to qalqan from `from`, signed with
/// `key` (kdig's `-y` form) if given, with its clock shifted by `skew`
/// (libfaketime's `-f` offset, e.g. `-400s`) if given. Returns kdig's
/// output: header status and TSIG pseudosection.
/// Run off the runtime thread: qalqan serves on it meanwhile.
async fn kdig_notify(qalqan: SocketAddr, from: &str, key: Option<&str>, skew: Option<&str>) -> String {
    let mut cmd = match skew {
        Some(s) => {
            let mut c = Command::new("faketime");
            c.args(["-f", s, "kdig"]);
            c
        }
        None => Command::new("kdig"),
    };
    cmd.args(["-b", from, "-p", &qalqan.port().to_string(), "+notcp", "+tsig", "+retry=0", "+time=3"]);
    if let Some(k) = key {
        cmd.args(["-y", k]);
    }
    cmd.arg(format!("@{}", qalqan.ip())).args(["rpz.test", "NOTIFY"]);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A NOTIFY for a list with `tsig` counts only when signed with the list's
/// key, checked against an independent signer: every NOTIFY here is signed
/// (or not) by Knot's `kdig -y`, the clock-skew one by kdig under
/// libfaketime. Refused ones trigger no refresh: the zone changed on Knot,
/// yet qalqan neither asks (no reload counted) nor enforces the new rule,
/// until a correctly signed NOTIFY from the primary's address arrives.
/// Fails on the code before NOTIFY verification: the unsigned NOTIFY from
/// the primary's address was accepted (NOERROR) and triggered the IXFR.
#[tokio::test]
async fn notify_needs_the_lists_tsig_key() {
    if !have("knotd", "knot") || !have("kdig", "knot-dnsutils") || !have("faketime", "faketime") {
        return;
    }
    let knot = start_knot_on_2(None);
    let zone = Name::from_ascii("rpz.test.").unwrap();
    wait_for_serial(&knot, &zone, 1).await;
    let q = Qalqan::start(knot.addr, 3600).await;
    q.until("bad.example.", ResponseCode::NXDomain, Duration::from_secs(10), &|| knot.log()).await;
    // the zone moves on at Knot, which does not NOTIFY (no `notify:` here)
    std::fs::write(knot.zone_path(), zone_file(2, "added.example CNAME .\n")).unwrap();
    knot.knotc(&["zone-reload", "rpz.test"]);
    wait_for_serial(&knot, &zone, 2).await;
    let reloads = q.metric("qalqan_list_reloads_total{list=\"rpz\"").await;

    let good = format!("hmac-sha256:qalqan-key:{SECRET}");
    let wrong_secret = format!("hmac-sha256:qalqan-key:{OTHER_SECRET}");
    let wrong_name = format!("hmac-sha256:other-key:{SECRET}");
    // (case, source address, key, clock skew, status kdig shows: the rcode,
    // or for NOTAUTH the TSIG error, which kdig prints in its place)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a str);
    let refused: &[Case] = &[
        ("unsigned, from the primary", "127.0.0.2", None, None, "REFUSED"),
        ("wrong secret", "127.0.0.2", Some(&wrong_secret), None, "BADSIG"),
        ("wrong key name", "127.0.0.2", Some(&wrong_name), None, "BADKEY"),
        ("signed 400 s in the past", "127.0.0.2", Some(&good), Some("-400s"), "BADTIME"),
        ("signed 400 s in the future", "127.0.0.2", Some(&good), Some("+400s"), "BADTIME"),
        ("good key, not from the primary", "127.0.0.1", Some(&good), None, "REFUSED"),
    ];
    for (case, from, key, skew, status) in refused {
        let out = kdig_notify(q.addr, from, *key, *skew).await;
        assert!(out.contains(&format!("status: {status};")), "case `{case}`: kdig said\n{out}");
    }
    // none of them made qalqan ask Knot: no reload of any result, rule not enforced
    assert_eq!(q.metric("qalqan_list_reloads_total{list=\"rpz\"").await, reloads, "a refused NOTIFY triggered a refresh");
    assert_ne!(rcode(q.addr, "added.example.").await, Some(ResponseCode::NXDomain), "a refused NOTIFY triggered a transfer");

    // signed by kdig with the list's key, from the primary: accepted, and
    // kdig verified our signed reply (it warns when it cannot)
    let out = kdig_notify(q.addr, "127.0.0.2", Some(&good), None).await;
    assert!(out.contains("status: NOERROR"), "kdig said\n{out}");
    assert!(!out.to_ascii_lowercase().contains("warning"), "kdig did not accept the reply's TSIG:\n{out}");
    q.until("added.example.", ResponseCode::NXDomain, Duration::from_secs(10), &|| knot.log()).await;
    assert!(q.metric("qalqan_list_reloads_total{list=\"rpz\"").await > reloads);
    q.shutdown().await;
}

/// What the relay in front of Knot does to a transfer's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mangle {
    Pass,
    /// Cut the MAC of the first message's TSIG to 16 bytes.
    TruncateMac,
    /// Drop the TSIG record of the last message (of several).
    StripLastTsig,
}

/// A TCP relay on 127.0.0.1 in front of Knot: SOA queries pass untouched,
/// AXFR/IXFR answers are collected whole (the transfer ends at the opening
/// SOA's 2nd appearance for AXFR, 3rd for IXFR) and mangled per `mode`.
/// Every MAC it forwards was made by Knot; the relay never signs.
struct Relay {
    addr: SocketAddr,
    mode: std::sync::Arc<std::sync::Mutex<Mangle>>,
    /// (mode, messages in the transfer) of every mangled transfer.
    done: std::sync::Arc<std::sync::Mutex<Vec<(Mangle, usize)>>>,
}

async fn read_msg(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

async fn write_msg(s: &mut tokio::net::TcpStream, m: &[u8]) -> Option<()> {
    use tokio::io::AsyncWriteExt;
    let mut framed = u16::try_from(m.len()).ok()?.to_be_bytes().to_vec();
    framed.extend_from_slice(m);
    s.write_all(&framed).await.ok()
}

/// Decodes `raw`, lets `f` change its TSIG record, encodes it again. With
/// DNSSEC support compiled into hickory-proto (the recursor's `dnssec-ring`),
/// decoding moves the TSIG record out of the additional section into
/// `Message::signature`, and encoding puts it back last.
fn mangle(raw: &[u8], f: impl FnOnce(&mut Option<Box<Record<TSIG>>>)) -> Vec<u8> {
    let mut m = hickory_proto::op::Message::from_vec(raw).unwrap();
    assert!(m.signature.is_some(), "Knot signed this message");
    f(&mut m.signature);
    m.to_vec().unwrap()
}

impl Relay {
    async fn start(knot: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = std::sync::Arc::new(std::sync::Mutex::new(Mangle::Pass));
        let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, d) = (mode.clone(), done.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(Relay::serve(client, knot, m.clone(), d.clone()));
            }
        });
        Relay { addr, mode, done }
    }

    fn set(&self, m: Mangle) {
        *self.mode.lock().unwrap() = m;
    }

    async fn serve(
        mut client: tokio::net::TcpStream,
        knot: SocketAddr,
        mode: std::sync::Arc<std::sync::Mutex<Mangle>>,
        done: std::sync::Arc<std::sync::Mutex<Vec<(Mangle, usize)>>>,
    ) {
        use hickory_proto::rr::RecordType;
        let Some(req) = read_msg(&mut client).await else { return };
        let Ok(mut up) = tokio::net::TcpStream::connect(knot).await else { return };
        write_msg(&mut up, &req).await;
        let qtype = hickory_proto::op::Message::from_vec(&req).unwrap().queries[0].query_type();
        let mut ends_at = match qtype {
            RecordType::AXFR => 2,
            RecordType::IXFR => 3,
            _ => 1, // one message
        };
        let mut msgs = Vec::new();
        let mut soas = 0;
        let mut opening = None;
        while let Some(m) = read_msg(&mut up).await {
            let parsed = hickory_proto::op::Message::from_vec(&m).unwrap();
            let single_soa = parsed.answers.len() == 1 && msgs.is_empty();
            for r in &parsed.answers {
                if let RData::SOA(s) = &r.data {
                    let o = *opening.get_or_insert(s.serial);
                    soas += usize::from(s.serial == o);
                }
            }
            // an IXFR answered AXFR-style (Knot without a journal for the
            // asked serial, e.g. after a restart): opening and closing SOA only
            if qtype == RecordType::IXFR && msgs.is_empty() && parsed.answers.get(1).is_some_and(|r| !matches!(r.data, RData::SOA(_))) {
                ends_at = 2;
            }
            let rcode = parsed.metadata.response_code;
            msgs.push(m);
            // an IXFR answered with the current SOA alone: up to date
            if ends_at == 1 || soas >= ends_at || rcode != ResponseCode::NoError || (single_soa && qtype == RecordType::IXFR) {
                break;
            }
        }
        let mode = *mode.lock().unwrap();
        if ends_at > 1 && mode != Mangle::Pass && msgs.len() > 1 {
            match mode {
                Mangle::TruncateMac => {
                    msgs[0] = mangle(&msgs[0], |sig| {
                        if let Some(t) = sig {
                            t.data.mac.truncate(16);
                        }
                    })
                }
                Mangle::StripLastTsig => {
                    let last = msgs.len() - 1;
                    msgs[last] = mangle(&msgs[last], |sig| {
                        *sig = None;
                    })
                }
                Mangle::Pass => {}
            }
            done.lock().unwrap().push((mode, msgs.len()));
        }
        for m in &msgs {
            if write_msg(&mut client, m).await.is_none() {
                return;
            }
        }
    }
}

/// Log lines qalqan writes at warn and above, captured for assertions.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// TSIG failures at each step of a refresh: every one fails it, and the
/// list qalqan enforces stays the last good one (old rule blocks, the new
/// one does not). Who signed and who judged, per case:
///
/// - truncated MAC: Knot signed the IXFR; a relay cut the first message's
///   MAC to 16 bytes; qalqan's verifier refuses it.
/// - unsigned last message: Knot signed every message of a multi-message
///   IXFR; the relay dropped the last one's TSIG; qalqan refuses it.
/// - wrong secret / wrong key name: Knot reconfigured with another secret /
///   another key name; Knot rejects qalqan's signed request (BADSIG /
///   BADKEY) at the SOA check that starts each refresh, and qalqan reports
///   that. (transfers_from_knot checks the same at the transfer itself.)
/// - clock skew: knotd restarted under libfaketime 400 s ahead, beyond the
///   300 s fudge; Knot answers BADTIME. Our own time check on an answer is
///   tested in-process (axfr.rs `tsig_time_is_checked_against_our_fudge_not_the_primarys`,
///   our signer) and against kdig under faketime (notify_needs_the_lists_tsig_key).
///
/// After all that, Knot fixed and relaying cleanly, the update arrives.
#[tokio::test]
async fn tsig_failures_keep_the_last_list() {
    if !have("knotd", "knot") || !have("faketime", "faketime") {
        return;
    }
    let log = Captured::default();
    let w = log.clone();
    let sub = tracing_subscriber::fmt().with_writer(move || w.clone()).with_ansi(false).with_max_level(tracing::Level::WARN).finish();
    // current-thread runtime: qalqan's tasks log on this thread
    let _guard = tracing::subscriber::set_default(sub);

    let mut knot = start_knot();
    let zone = Name::from_ascii("rpz.test.").unwrap();
    wait_for_serial(&knot, &zone, 1).await;
    let relay = Relay::start(knot.addr).await;
    let q = Qalqan::start(relay.addr, 1).await;
    q.until("bad.example.", ResponseCode::NXDomain, Duration::from_secs(10), &|| knot.log()).await;
    // serial 2 adds a rule and enough records that the IXFR takes several messages
    let mut extra = String::from("added.example CNAME .\n");
    for i in 0..3000 {
        extra.push_str(&format!("more{i}.second-batch-of-blocked-names-{i}.example CNAME .\n"));
    }
    std::fs::write(knot.zone_path(), zone_file(2, &extra)).unwrap();
    knot.knotc(&["zone-reload", "rpz.test"]);
    wait_for_serial(&knot, &zone, 2).await;

    let errors = "qalqan_list_reloads_total{list=\"rpz\",result=\"error\"}";
    // Waits until two more refreshes failed (the first may have started
    // before the change), then checks the reason and the list in force.
    let failed_with = async |knot: &Knot, case: &str, reason: &str| {
        let before = q.metric(errors).await;
        let t0 = Instant::now();
        while q.metric(errors).await < before + 2.0 {
            assert!(t0.elapsed() < Duration::from_secs(20), "case `{case}`: refreshes did not fail; log:\n{}\nknot:\n{}", log.text(), knot.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = log.text();
        let last = text.lines().rev().find(|l| l.contains("list source failed")).unwrap_or_default().to_owned();
        assert!(last.contains(reason), "case `{case}`: last failure is not `{reason}`:\n{last}");
        assert_eq!(rcode(q.addr, "bad.example.").await, Some(ResponseCode::NXDomain), "case `{case}`: last good list dropped");
        assert_ne!(rcode(q.addr, "added.example.").await, Some(ResponseCode::NXDomain), "case `{case}`: bad transfer applied");
    };

    relay.set(Mangle::TruncateMac);
    failed_with(&knot, "truncated MAC", "MAC of 16 bytes").await;
    relay.set(Mangle::StripLastTsig);
    failed_with(&knot, "unsigned last message", "last message of the answer is not signed").await;
    relay.set(Mangle::Pass);
    let done = relay.done.lock().unwrap().clone();
    assert!(done.iter().any(|(m, n)| *m == Mangle::TruncateMac && *n > 1), "{done:?}");
    assert!(done.iter().any(|(m, n)| *m == Mangle::StripLastTsig && *n > 1), "the IXFR was one message: {done:?}");

    knot.reconfigure(|c| c.replace(SECRET, OTHER_SECRET));
    failed_with(&knot, "wrong secret", "BADSIG").await;
    knot.reconfigure(|c| c.replace(OTHER_SECRET, SECRET).replace("qalqan-key", "other-key"));
    failed_with(&knot, "wrong key name", "BADKEY").await;
    knot.reconfigure(|c| c.replace("other-key", "qalqan-key"));
    knot.restart(Some("+400s"));
    failed_with(&knot, "clock 400 s ahead", "BADTIME").await;

    // the same Knot with its clock right: the update arrives
    knot.restart(None);
    q.until("added.example.", ResponseCode::NXDomain, Duration::from_secs(20), &|| format!("{}\n{}", log.text(), knot.log())).await;
    q.shutdown().await;
}

/// Knot on 127.0.0.2 serving `zones` (name, file text) with the test key
/// for transfers, NOTIFYing qalqan at 127.0.0.1:`qalqan_port` (signed) on
/// every change of any of them.
fn start_knot_zones(qalqan_port: u16, zones: &[(&str, String)]) -> Knot {
    start_knot_serving("127.0.0.2", free_port_on_2(), Some(qalqan_port), zones)
}

/// A hand-written RFC 9432 catalog zone `catalog.test` at `serial` with
/// `members` (unique id, member zone, group).
fn catalog_zone(serial: u32, members: &[(&str, &str, Option<&str>)]) -> String {
    let mut z = format!(
        "$ORIGIN catalog.test.\n$TTL 0\n@ SOA invalid. invalid. {serial} 3600 600 86400 0\n@ NS invalid.\nversion TXT \"2\"\n"
    );
    for (id, zone, group) in members {
        z.push_str(&format!("{id}.zones PTR {zone}.\n"));
        if let Some(g) = group {
            z.push_str(&format!("group.{id}.zones TXT \"{g}\"\n"));
        }
    }
    z
}

fn member_zone(zone: &str, serial: u32, blocked: &[&str]) -> String {
    let mut z = format!("$ORIGIN {zone}.\n$TTL 300\n@ SOA ns.{zone}. admin.{zone}. {serial} 3600 600 86400 60\n@ NS ns.{zone}.\n");
    for b in blocked {
        z.push_str(&format!("{b} CNAME .\n"));
    }
    z
}

/// A catalog zone served by Knot: its member RPZ zones become lists
/// (`catz:ZONE`), transferred with the catalog's TSIG key; a member added
/// to the catalog (zone-reload, NOTIFY) is enforced, a member's `group`
/// maps to what `groups` says (here: shadow, so not enforced), a member
/// removed is unenforced; a restart with Knot stopped enforces the
/// persisted members.
#[tokio::test]
async fn catalog_members_follow_knot() {
    if !have("knotd", "knot") {
        return;
    }
    let (udp, tcp) = bind_pair().await;
    let qaddr = udp.local_addr().unwrap();
    let knot = start_knot_zones(
        qaddr.port(),
        &[
            ("catalog.test", catalog_zone(1, &[("m1", "one.rpz", None)])),
            ("one.rpz", member_zone("one.rpz", 1, &["one.blocked"])),
            ("two.rpz", member_zone("two.rpz", 1, &["two.blocked"])),
            ("three.rpz", member_zone("three.rpz", 1, &["three.watched"])),
        ],
    );
    wait_for_serial(&knot, &Name::from_ascii("catalog.test.").unwrap(), 1).await;
    wait_for_serial(&knot, &Name::from_ascii("three.rpz.").unwrap(), 1).await;
    let state = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
allow_clients = ["127.0.0.0/8"]
[upstream]
servers = ["127.0.0.1:9"]
timeout_ms = 300
[state]
dir = "{}"
[[catalogs]]
source = "axfr://{}/catalog.test"
tsig = "hmac-sha256:qalqan-key:{SECRET}"
refresh_s = 3600
max_members = 4
defaults = {{ format = "rpz", kind = "block", action = "nxdomain", ede = 16 }}
groups = {{ watch = {{ mode = "shadow" }} }}
"#,
        state.path().display(),
        knot.addr
    );
    let app = qalqan::App::from_toml_str(&toml).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = http.local_addr().unwrap();
    let task = tokio::spawn(qalqan::serve(app, qalqan::Sockets::new(vec![udp], vec![tcp]).with_metrics(http), stop.clone()));
    let until = |name: &'static str, blocked: bool, why: &'static str| {
        let knot_log = knot.log();
        async move {
            let t0 = Instant::now();
            loop {
                let nx = rcode(qaddr, name).await == Some(ResponseCode::NXDomain);
                if nx == blocked {
                    return;
                }
                assert!(t0.elapsed() < Duration::from_secs(10), "{why}: {name} blocked={nx}\nknot log:\n{knot_log}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    until("one.blocked.", true, "the first member is enforced").await;
    assert_ne!(rcode(qaddr, "two.blocked.").await, Some(ResponseCode::NXDomain), "not a member yet");

    // add two members, one in group "watch" (shadow: counted, not enforced)
    std::fs::write(
        knot.dir.path().join("catalog.test.zone"),
        catalog_zone(2, &[("m1", "one.rpz", None), ("m2", "two.rpz", None), ("m3", "three.rpz", Some("watch"))]),
    )
    .unwrap();
    knot.knotc(&["zone-reload", "catalog.test"]);
    until("two.blocked.", true, "an added member is enforced (NOTIFY of the catalog)").await;
    assert_ne!(rcode(qaddr, "three.watched.").await, Some(ResponseCode::NXDomain), "group watch = shadow");
    assert_eq!(rcode(qaddr, "one.blocked.").await, Some(ResponseCode::NXDomain));

    // a member zone's own change comes by its own NOTIFY + IXFR
    std::fs::write(knot.dir.path().join("two.rpz.zone"), member_zone("two.rpz", 2, &["two.blocked", "two-more.blocked"])).unwrap();
    knot.knotc(&["zone-reload", "two.rpz"]);
    until("two-more.blocked.", true, "a member's change (its NOTIFY)").await;

    let page = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(maddr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await.unwrap().unwrap();
        body
    };
    let metrics = page("/metrics").await;
    assert!(metrics.contains(r#"qalqan_list_serial{list="catz:two.rpz"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"qalqan_shadow_hits_total{list="catz:catalog.test"}"#), "{metrics}");
    let lists = page("/lists").await;
    assert!(lists.contains("catz:one.rpz") && lists.contains("catz:three.rpz") && !lists.contains('#'), "{lists}");

    // remove the first member: unenforced, its files gone
    std::fs::write(
        knot.dir.path().join("catalog.test.zone"),
        catalog_zone(3, &[("m2", "two.rpz", None), ("m3", "three.rpz", Some("watch"))]),
    )
    .unwrap();
    knot.knotc(&["zone-reload", "catalog.test"]);
    until("one.blocked.", false, "a removed member is no longer enforced").await;
    assert_eq!(rcode(qaddr, "two.blocked.").await, Some(ResponseCode::NXDomain));
    let metrics = page("/metrics").await;
    assert!(!metrics.contains(r#"list="catz:one.rpz""#), "a removed member's series are gone:\n{metrics}");
    assert!(!state.path().join("catz:one.rpz.list").exists());
    assert!(state.path().join("catz:two.rpz.list").exists() && state.path().join("catz:catalog.test.catalog").exists());
    // Knot's ACL allows transfers only signed with the key (see
    // `transfers_from_knot`: unsigned is refused): the catalog came by AXFR,
    // then by IXFR at each change, and nothing was denied
    let log = knot.log();
    assert!(log.lines().any(|l| l.contains("[catalog.test.] AXFR, outgoing") && l.contains("finished")), "{log}");
    assert!(log.lines().any(|l| l.contains("[catalog.test.] IXFR, outgoing") && l.contains("2 -> 3")), "{log}");
    assert!(!log.to_ascii_lowercase().contains("denied"), "{log}");
    let metrics = page("/metrics").await;
    assert!(metrics.contains(r#"qalqan_list_reloads_total{list="catz:catalog.test",result="success"} 3"#), "{metrics}");
    stop.cancel();
    task.await.unwrap().unwrap();

    // the catalog transfer is signed: a qalqan with another secret gets no
    // catalog (Knot answers BADSIG), counts the error and enforces nothing
    {
        let other_state = tempfile::tempdir().unwrap();
        let wrong = toml
            .replace(SECRET, OTHER_SECRET)
            .replace(&format!("dir = \"{}\"", state.path().display()), &format!("dir = \"{}\"", other_state.path().display()));
        let app = qalqan::App::from_toml_str(&wrong).unwrap();
        let (udp, tcp) = bind_pair().await;
        let qaddr = udp.local_addr().unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let maddr = http.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(qalqan::serve(app, qalqan::Sockets::new(vec![udp], vec![tcp]).with_metrics(http), stop.clone()));
        let t0 = Instant::now();
        loop {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut body = String::new();
            if let Ok(mut s) = tokio::net::TcpStream::connect(maddr).await {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await;
            }
            if body.contains(r#"qalqan_list_reloads_total{list="catz:catalog.test",result="error"} 1"#) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no catalog error counted with a wrong key:\n{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_ne!(rcode(qaddr, "two.blocked.").await, Some(ResponseCode::NXDomain), "no member without the key");
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    // Knot gone: a restart enforces the persisted members
    drop(knot);
    let app = qalqan::App::from_toml_str(&toml).unwrap();
    let (udp, tcp) = bind_pair().await;
    let qaddr = udp.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(qalqan::serve(app, qalqan::Sockets::new(vec![udp], vec![tcp]), stop.clone()));
    let t0 = Instant::now();
    while rcode(qaddr, "two-more.blocked.").await != Some(ResponseCode::NXDomain) {
        assert!(t0.elapsed() < Duration::from_secs(10), "persisted member not enforced after a restart with the primary down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(rcode(qaddr, "one.blocked.").await, Some(ResponseCode::NXDomain), "the removed member stays removed");
    assert_ne!(rcode(qaddr, "three.watched.").await, Some(ResponseCode::NXDomain), "its group persisted too");
    stop.cancel();
    task.await.unwrap().unwrap();
}
