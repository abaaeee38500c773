//! The real binary: `qalqan check`, `qalqan run` (ready line, dig interop,
//! SIGTERM → exit 0) and `qalqan explain`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_qalqan");

fn repo() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

#[test]
fn check_passes_on_the_shipped_config() {
    let out = Command::new(BIN).args(["check"]).current_dir(repo()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("regulator: 301 rules"), "{stdout}");
    assert!(stdout.contains("allow: 1 rules"), "{stdout}");
}

#[test]
fn check_names_file_and_line_of_bad_config_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("q.toml");
    std::fs::write(&cfg, "[server]\nlisten = [\"127.0.0.1:5353\"]\nbogus = 1\n").unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("q.toml: line 3") && err.contains("bogus"), "{err}");

    let list = write_list(dir.path(), "l.txt", "ok.test\nbad name here\n");
    std::fs::write(&cfg, format!("[[lists]]\nname = \"l\"\nsource = \"{list}\"\n")).unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "1 bad line of 2 is over the 1% budget");
    assert!(stdout.contains(&format!("{list}:2:1")), "{stdout}");
}

#[test]
fn explain_names_list_rule_and_line() {
    let out = Command::new(BIN).args(["explain", "x.blocked.qalqan.test", "A"]).current_dir(repo()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("blocked"), "{stdout}");
    assert!(stdout.contains("list:     regulator"), "{stdout}");
    assert!(stdout.contains("rule:     blocked.qalqan.test"), "{stdout}");
    assert!(stdout.contains("blocklists/regulator.txt:307"), "{stdout}");
    assert!(stdout.contains("ede:      16"), "{stdout}");
    let out = Command::new(BIN).args(["explain", "allowed.blocked.qalqan.test"]).current_dir(repo()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("allowed"));
    let out = Command::new(BIN).args(["explain", "example.org"]).current_dir(repo()).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pass");
}

/// Kills the child when dropped, so a failed assertion never leaves a server behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on 127.0.0.1:0 and returns it with the bound port read from the ready line.
fn spawn_server(cfg: &std::path::Path) -> (KillOnDrop, u16) {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = tx.send(line.clone());
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("no ready line");
    let port = line.split("127.0.0.1:").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()).unwrap();
    (child, port.parse().unwrap())
}

#[tokio::test]
async fn binary_serves_dig_and_exits_zero_on_sigterm() {
    let up = Upstream::start().await;
    up.set("www.example.", hickory_proto::rr::RecordType::A, Canned::Answer(vec![a("www.example.", 60, "198.51.100.10")]));
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), "l.txt", "blocked.test\n");
    let cfg = dir.path().join("q.toml");
    std::fs::write(&cfg, config(up.addr, &format!("[[lists]]\nname = \"reg\"\nsource = \"{list}\"\nede = 16\n"), "")).unwrap();
    let (mut child, port) = spawn_server(&cfg);

    // interop: the real dig binary
    let dig = move |args: &[&str]| {
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &port.to_string(), "+tries=1", "+time=2"])
            .args(args)
            .output()
            .expect("dig not installed: run the README test command (it installs dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (d1, d2, d3) = tokio::task::spawn_blocking(move || {
        (dig(&["blocked.test", "A"]), dig(&["www.example", "A"]), dig(&["+tcp", "+noedns", "sub.blocked.test", "AAAA"]))
    })
    .await
    .unwrap();
    assert!(d1.contains("status: NXDOMAIN"), "{d1}");
    assert!(d1.contains("EDE: 16 (Censored)"), "{d1}");
    assert!(d1.contains("blocked by list reg"), "{d1}");
    assert!(d2.contains("status: NOERROR") && d2.contains("198.51.100.10"), "{d2}");
    assert!(d2.contains(" ra"), "RA flag: {d2}");
    assert!(d3.contains("status: NXDOMAIN") && !d3.contains("OPT PSEUDOSECTION"), "{d3}");

    // SIGTERM: exit 0, promptly
    let t = Instant::now();
    Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn missing_list_fails_start_naming_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("q.toml");
    std::fs::write(&cfg, "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"127.0.0.1:9\"]\n[[lists]]\nname = \"reg\"\nsource = \"/nonexistent/list.txt\"\n").unwrap();
    let out = Command::new(BIN).args(["run", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reg: reading /nonexistent/list.txt"), "{err}");
    assert!(!err.contains("ready"), "{err}");
}

/// Sockets bound to 127.0.0.1:`port` in /proc/net/udp (local address column).
fn udp_sockets_on(port: u16) -> usize {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        .count()
}

/// The binary with `threads = 2`, `up` as its upstream and `blocked.test`
/// listed: the child (killed on drop), its port and the directory of its
/// config and list (keep it while the server runs).
fn spawn_two_workers(up: &Upstream) -> (KillOnDrop, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), "l.txt", "blocked.test\n");
    let cfg = dir.path().join("q.toml");
    let text = config(up.addr, &format!("[[lists]]\nname = \"reg\"\nsource = \"{list}\"\n"), "")
        .replace("allow_clients = [\"127.0.0.0/8\"]", "allow_clients = [\"127.0.0.0/8\"]\nthreads = 2");
    std::fs::write(&cfg, text).unwrap();
    let (child, port) = spawn_server(&cfg);
    (child, port, dir)
}

#[tokio::test]
async fn threads_two_gives_two_reuseport_udp_workers_that_both_answer() {
    let up = Upstream::start().await;
    up.set("www.example.", hickory_proto::rr::RecordType::A, Canned::Answer(vec![a("www.example.", 60, "198.51.100.10")]));
    let (_child, port, _dir) = spawn_two_workers(&up);
    assert_eq!(udp_sockets_on(port), 2, "one SO_REUSEPORT socket per worker");
    let server: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    // many client sockets: the kernel spreads them over both workers' sockets
    for i in 0..32 {
        let (name, want) = if i % 2 == 0 { ("blocked.test.", ResponseCode::NXDomain) } else { ("www.example.", ResponseCode::NoError) };
        let m = udp(server, name, hickory_proto::rr::RecordType::A, EDNS).await.expect("reply");
        assert_eq!(m.metadata.response_code, want, "{name}");
    }
}

/// Two workers answer bursts of cache hits spread over every cache shard,
/// from many clients at once: every reply is the right one and none is
/// lost. (A fast-path batch holds the locks of all the shards its names
/// fall in at once, `Cache::get_batch`; two workers doing so must neither
/// deadlock nor mix up answers.)
#[tokio::test]
async fn two_workers_answer_bursts_of_cache_hits_from_many_clients() {
    use hickory_proto::rr::{RData, RecordType};
    let up = Upstream::start().await;
    let names: Vec<String> = (0..64).map(|i| format!("h{i}.example.")).collect();
    for (i, n) in names.iter().enumerate() {
        up.set(n, RecordType::A, Canned::Answer(vec![a(n, 300, &format!("198.51.100.{}", i + 1))]));
    }
    let (_child, port, _dir) = spawn_two_workers(&up);
    let server: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    for n in &names {
        let m = udp(server, n, RecordType::A, EDNS).await.expect("warm-up reply");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{n}");
    }
    let mut clients = Vec::new();
    for c in 0..8usize {
        let names = names.clone();
        clients.push(tokio::spawn(async move {
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut buf = vec![0u8; 4096];
            for burst in 0..10usize {
                // 32 queries back to back (one recvmmsg batch, many shards), then their replies
                let mut want = std::collections::HashMap::new();
                for k in 0..32 {
                    let i = (c * 7 + burst * 13 + k) % names.len();
                    let (id, q) = loop {
                        let (id, q) = query_bytes(&names[i], RecordType::A, EDNS);
                        if !want.contains_key(&id) {
                            break (id, q);
                        }
                    };
                    want.insert(id, i);
                    s.send_to(&q, server).await.unwrap();
                }
                for _ in 0..want.len() {
                    let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
                        .await
                        .unwrap_or_else(|_| panic!("client {c} burst {burst}: a reply missing after 5 s"))
                        .unwrap();
                    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
                    let i = *want.get(&m.metadata.id).expect("a reply to a query of this burst");
                    let got: Vec<String> = m
                        .answers
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::A(x) => Some(x.to_string()),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(got, vec![format!("198.51.100.{}", i + 1)], "answer to {}", names[i]);
                    assert_eq!(m.queries.first().map(|q| q.name().to_ascii()), Some(names[i].clone()));
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
}

/// SIGHUP, which `main` owns and broadcasts: the blocked-query log is
/// reopened (logrotate moved it away: later lines go to a new file at the
/// configured path).
#[tokio::test]
async fn sighup_reopens_the_blocked_log() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), "l.txt", "first.test\n");
    let log = dir.path().join("blocked.jsonl");
    let cfg = dir.path().join("q.toml");
    let extra = format!("[log]\nblocked = \"{}\"\n", log.display());
    std::fs::write(&cfg, config(up.addr, &format!("[[lists]]\nname = \"reg\"\nsource = \"{list}\"\n"), &extra)).unwrap();
    let (child, port) = spawn_server(&cfg);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rcode = |n: &'static str| async move { udp(addr, n, hickory_proto::rr::RecordType::A, EDNS).await.unwrap().metadata.response_code };
    assert_eq!(rcode("first.test.").await, ResponseCode::NXDomain);
    let lines_in = |p: std::path::PathBuf| std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0);
    let (l1, l2) = (log.clone(), log.clone());
    assert!(eventually(Duration::from_secs(3), || { let l = l1.clone(); async move { lines_in(l) == 1 } }).await, "first line logged");
    // logrotate: move the file away, then SIGHUP
    let rotated = dir.path().join("blocked.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap();
    // the reopen happens on the writer's next pass; keep asking until the new file has the line
    assert!(
        eventually(Duration::from_secs(5), || {
            let l = l2.clone();
            async move {
                let _ = udp(addr, "again.first.test.", hickory_proto::rr::RecordType::A, EDNS).await;
                lines_in(l) >= 1
            }
        })
        .await,
        "after SIGHUP the log is written at its configured path again"
    );
    assert!(lines_in(rotated.clone()) >= 1, "the rotated file keeps its line");
    drop(child);
}

/// SIGHUP re-reads the config for list modes: a shadow list whose config
/// now says `mode = "enforce"` blocks, with no restart.
#[tokio::test]
async fn sighup_promotes_a_shadow_list_from_the_reread_config() {
    let up = Upstream::start().await;
    up.set("trial.test.", hickory_proto::rr::RecordType::A, Canned::Answer(vec![a("trial.test.", 300, "198.51.100.5")]));
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), "cand.txt", "trial.test\n");
    let cfg = dir.path().join("q.toml");
    let write_cfg = |mode: &str| std::fs::write(&cfg, config(up.addr, &format!("[[lists]]\nname = \"cand\"\nsource = \"{list}\"\nmode = \"{mode}\"\n"), "")).unwrap();
    write_cfg("shadow");
    let (child, port) = spawn_server(&cfg);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rcode = || async move { udp(addr, "trial.test.", hickory_proto::rr::RecordType::A, EDNS).await.map(|m| m.metadata.response_code) };
    assert_eq!(rcode().await, Some(ResponseCode::NoError), "a shadow list never blocks");
    write_cfg("enforce");
    Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap();
    assert!(eventually(Duration::from_secs(5), || async move { rcode().await == Some(ResponseCode::NXDomain) }).await, "promoted by SIGHUP");
    drop(child);
}

/// SIGHUP re-reads the guard's protected names (`[guard] protected`):
/// `qalqan_guard_protected_names` follows the file without a restart.
#[tokio::test]
async fn sighup_rereads_the_protected_names() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let protected = write_list(dir.path(), "protected.txt", "one.test\n");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.path().join("q.toml");
    let extra = format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[guard]\nprotected = \"{protected}\"\n");
    std::fs::write(&cfg, config(up.addr, "", &extra)).unwrap();
    let (child, _) = spawn_server(&cfg);
    let http: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let names = || async move { sample(&http_get(http, "/metrics").await.1, "qalqan_guard_protected_names") };
    assert_eq!(names().await, 1.0);
    std::fs::write(&protected, "one.test\ntwo.test\nthree.test\n").unwrap();
    Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap();
    assert!(eventually(Duration::from_secs(5), || async move { names().await == 3.0 }).await, "re-read on SIGHUP");
    // a bad file keeps the names in force
    std::fs::write(&protected, "bad name\n").unwrap();
    Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names().await, 3.0);
    drop(child);
}
