//! dnstap over the wire, read by real readers: `fstrm_capture` (libfstrm,
//! Debian `fstrm-bin`) does the bidirectional Frame Streams handshake on a
//! unix socket and stores the frames; golang-dnstap's `dnstap` (Debian
//! `golang-github-dnstap-golang-dnstap-cli`) and `dnstap-ldns` decode
//! them. None prints
//! dnstap's `Policy` message, so the policy fields are read from the
//! captured file by the small decoder below. Then: no reader at start →
//! queries answered, events dropped and counted; a reader that appears
//! later → the writer reconnects and delivers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

/// The tool's path, or `None` (skip, loudly; a failure under `CI=true`).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or(None);
    if found.is_none() {
        assert!(!in_ci(), "CI=true: `{name}` not found (tests/run.sh installs it)");
        eprintln!("SKIPPING: `{name}` not found (Debian: fstrm-bin, golang-github-dnstap-golang-dnstap-cli, dnstap-ldns)");
    }
    found
}

/// A child process ended with SIGINT (readers flush and close their
/// output on it), then reaped.
struct Reader(Child);

impl Reader {
    fn stop(mut self) -> std::process::Output {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let child = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `fstrm_capture` reading `sock`, writing `out`; returns once it listens.
async fn capture(fstrm: &Path, sock: &Path, out: &Path) -> Reader {
    let child = Command::new(fstrm)
        .args(["-t", "protobuf:dnstap.Dnstap", "-u"])
        .arg(sock)
        .arg("-w")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let s = sock.to_owned();
    assert!(eventually(Duration::from_secs(5), || { let s = s.clone(); async move { s.exists() } }).await, "fstrm_capture did not listen");
    Reader(child)
}

fn dnstap_config(upstream: std::net::SocketAddr, dir: &Path, sock: &Path) -> String {
    let block = write_list(dir, "b.txt", "# list\nbad.test\n");
    let dropped = write_list(dir, "d.txt", "drop.test\n");
    let lists = format!(
        "[[lists]]\nname = \"reg\"\nsource = \"{block}\"\n[[lists]]\nname = \"quiet\"\nsource = \"{dropped}\"\naction = \"drop\"\n"
    );
    let extra = format!(
        "[dnstap]\nsocket = \"{}\"\nidentity = \"qalqan-test\"\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n",
        sock.display()
    );
    config(upstream, &lists, &extra)
}

/// What the decoder reads of one dnstap frame.
#[derive(Debug, Default)]
struct Frame {
    identity: Vec<u8>,
    kind: u64,
    protocol: u64,
    address: Vec<u8>,
    /// The query or the response message.
    dns: Vec<u8>,
    /// Policy: type, rule, action, match, value.
    policy: Option<(String, String, u64, u64, Vec<u8>)>,
}

/// Protobuf fields of one message: (number, varint value, bytes).
fn fields(mut b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b);
        match tag & 7 {
            0 => out.push((tag >> 3, varint(&mut b), vec![])),
            2 => {
                let n = varint(&mut b) as usize;
                out.push((tag >> 3, 0, b[..n].to_vec()));
                b = &b[n..];
            }
            5 => b = &b[4..],
            1 => b = &b[8..],
            w => panic!("wire type {w}"),
        }
    }
    out
}

/// The data frames of a Frame Streams file, decoded (control frames checked).
fn decode_file(bytes: &[u8]) -> Vec<Frame> {
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let mut at = 0;
    let mut out = Vec::new();
    let mut started = false;
    while at < bytes.len() {
        let len = word(at);
        if len == 0 {
            let clen = word(at + 4);
            let kind = word(at + 8);
            if kind == 2 {
                assert!(bytes[at + 12..at + 8 + clen].windows(22).any(|w| w == b"protobuf:dnstap.Dnstap"), "START without the content type");
                started = true;
            }
            at += 8 + clen;
            continue;
        }
        let mut f = Frame::default();
        for (n, _, b) in fields(&bytes[at + 4..at + 4 + len]) {
            match n {
                1 => f.identity = b,
                14 => {
                    for (n, v, b) in fields(&b) {
                        match n {
                            1 => f.kind = v,
                            3 => f.protocol = v,
                            4 => f.address = b,
                            10 | 14 => f.dns = b,
                            15 => {
                                let mut p = (String::new(), String::new(), 0, 0, vec![]);
                                for (n, v, b) in fields(&b) {
                                    match n {
                                        1 => p.0 = String::from_utf8(b).unwrap(),
                                        2 => p.1 = String::from_utf8(b).unwrap(),
                                        3 => p.2 = v,
                                        4 => p.3 = v,
                                        5 => p.4 = b,
                                        _ => {}
                                    }
                                }
                                f.policy = Some(p);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(f);
        at += 4 + len;
    }
    assert!(started, "no START control frame in the capture");
    out
}

fn qname_of(dns: &[u8]) -> String {
    hickory_proto::op::Message::from_vec(dns).unwrap().queries[0].name().to_ascii()
}

#[tokio::test]
async fn a_real_reader_decodes_queries_replies_and_the_blocking_policy() {
    let (Some(fstrm), Some(dnstap), Some(ldns)) = (tool("fstrm_capture"), tool("dnstap"), tool("dnstap-ldns")) else { return };
    let up = Upstream::start().await;
    up.set("ok.example.", RecordType::A, Canned::Answer(vec![a("ok.example.", 300, "198.51.100.1")]));
    up.set("tcp.example.", RecordType::A, Canned::Answer(vec![a("tcp.example.", 300, "198.51.100.2")]));
    let dir = tempfile::tempdir().unwrap();
    let (sock, file) = (dir.path().join("dnstap.sock"), dir.path().join("capture.fstrm"));
    let reader = capture(&fstrm, &sock, &file).await;
    let srv = TestServer::start(&dnstap_config(up.addr, dir.path(), &sock)).await;

    let m = udp(srv.addr, "udp.bad.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = udp(srv.addr, "ok.example.", RecordType::A, EDNS).await.unwrap(); // forwarded (the miss path)
    assert_eq!(m.answers.len(), 1);
    udp(srv.addr, "ok.example.", RecordType::A, EDNS).await.unwrap(); // cached (the fast path)
    let m = tcp(srv.addr, "tcp.bad.test.", RecordType::A, EDNS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = tcp(srv.addr, "tcp.example.", RecordType::A, EDNS).await; // forwarded over TCP (the slow path)
    assert_eq!(m.answers.len(), 1);
    // a list that drops: no reply, but the query is reported with its policy
    let (_, silent) = query_bytes("x.drop.test.", RecordType::A, EDNS);
    assert!(udp_raw(srv.addr, &silent, Duration::from_millis(300)).await.is_none());

    let metrics = srv.metrics.clone();
    let m2 = metrics.clone();
    assert!(
        eventually(Duration::from_secs(5), || { let m = m2.clone(); async move { m.dnstap_frames.get() >= 11 } }).await,
        "frames written: {}",
        metrics.dnstap_frames.get()
    );
    assert_eq!(metrics.dnstap_dropped.get(), 0);
    srv.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = reader.stop();
    assert!(out.status.success() || out.status.code().is_none(), "fstrm_capture: {}", String::from_utf8_lossy(&out.stderr));

    // golang-dnstap reads the capture
    let text = Command::new(&dnstap).arg("-r").arg(&file).arg("-y").output().unwrap();
    let yaml = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "dnstap -r: {}", String::from_utf8_lossy(&text.stderr));
    assert_eq!(yaml.matches("type: CLIENT_QUERY").count(), 6, "{yaml}");
    assert_eq!(yaml.matches("type: CLIENT_RESPONSE").count(), 5, "{yaml}");
    assert!(yaml.contains("query_address: 127.0.0.1"), "{yaml}");
    assert!(yaml.contains("identity: \"qalqan-test\""), "{yaml}");
    for name in ["udp.bad.test.", "ok.example.", "tcp.bad.test.", "tcp.example.", "x.drop.test."] {
        assert!(yaml.contains(name), "{name} not in the decoded messages:\n{yaml}");
    }
    assert!(yaml.contains("socket_protocol: UDP") && yaml.contains("socket_protocol: TCP"), "{yaml}");

    // and so does dnstap-ldns (libfstrm's file reader, ldns's DNS decoder)
    let text = Command::new(&ldns).arg("-r").arg(&file).arg("-q").output().unwrap();
    let quiet = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "dnstap-ldns -r: {}", String::from_utf8_lossy(&text.stderr));
    assert_eq!(quiet.lines().count(), 11, "{quiet}");
    assert_eq!(quiet.lines().filter(|l| l.contains(" CQ ")).count(), 6, "{quiet}");
    assert_eq!(quiet.lines().filter(|l| l.contains(" CR ")).count(), 5, "{quiet}");
    for name in ["udp.bad.test.", "ok.example.", "tcp.bad.test.", "tcp.example."] {
        assert!(quiet.contains(name), "{name} not in dnstap-ldns output:\n{quiet}");
    }

    // the policy fields, from the captured bytes
    let frames = decode_file(&std::fs::read(&file).unwrap());
    assert_eq!(frames.len(), 11);
    for f in &frames {
        assert_eq!(f.identity, b"qalqan-test");
        assert_eq!(f.address, [127, 0, 0, 1]);
        let name = qname_of(&f.dns);
        let want_protocol = if name.starts_with("tcp.") { 2 } else { 1 };
        assert_eq!(f.protocol, want_protocol, "{name}");
        if name == "x.drop.test." {
            assert_eq!(f.kind, 5, "a dropped query has no response message");
            let p = f.policy.clone().unwrap_or_else(|| panic!("no policy on {name}: {f:?}"));
            assert_eq!((p.0.as_str(), p.1.as_str(), p.2), ("quiet", "drop.test", 4), "action DROP");
        } else if name.ends_with("bad.test.") {
            let (kind, rule, action, matched, value) = f.policy.clone().unwrap_or_else(|| panic!("no policy on {name}: {f:?}"));
            assert_eq!((kind.as_str(), rule.as_str(), action, matched), ("reg", "bad.test", 1, 1), "{name}");
            let wire: Vec<u8> = name.trim_end_matches('.').split('.').flat_map(|l| [&[l.len() as u8][..], l.as_bytes()].concat()).chain([0]).collect();
            assert_eq!(value, wire, "{name}: value is the query name in wire form");
        } else {
            assert!(f.policy.is_none(), "{name}: {f:?}");
        }
    }
    let kinds: Vec<u64> = frames.iter().map(|f| f.kind).collect();
    assert_eq!(kinds.iter().filter(|&&k| k == 5).count(), 6);
    assert_eq!(kinds.iter().filter(|&&k| k == 6).count(), 5);
}

#[tokio::test]
async fn without_a_reader_queries_are_answered_and_drops_counted_then_it_reconnects() {
    let Some(fstrm) = tool("fstrm_capture") else { return };
    let up = Upstream::start().await;
    up.set("late.example.", RecordType::A, Canned::Answer(vec![a("late.example.", 300, "198.51.100.3")]));
    let dir = tempfile::tempdir().unwrap();
    let (sock, file) = (dir.path().join("dnstap.sock"), dir.path().join("capture.fstrm"));
    let srv = TestServer::start(&dnstap_config(up.addr, dir.path(), &sock)).await;
    for i in 0..5 {
        let m = udp(srv.addr, &format!("q{i}.bad.test."), RecordType::A, EDNS).await.expect("answered without a reader");
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }
    let metrics = srv.metrics.clone();
    let m2 = metrics.clone();
    assert!(eventually(Duration::from_secs(3), || { let m = m2.clone(); async move { m.dnstap_dropped.get() >= 5 } }).await);
    assert_eq!(metrics.dnstap_frames.get(), 0);

    // the reader appears: the writer reconnects within its back-off
    let reader = capture(&fstrm, &sock, &file).await;
    let addr = srv.addr;
    let m3 = metrics.clone();
    // queries until one is written (the ones sent before the connection are dropped)
    assert!(
        eventually(Duration::from_secs(5), || {
            let m = m3.clone();
            async move {
                udp(addr, "late.example.", RecordType::A, EDNS).await.unwrap();
                m.dnstap_frames.get() >= 2
            }
        })
        .await,
        "no frame written after the reader appeared (dropped: {})",
        metrics.dnstap_dropped.get()
    );
    srv.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    reader.stop();
    let frames = decode_file(&std::fs::read(&file).unwrap());
    assert!(frames.iter().any(|f| qname_of(&f.dns) == "late.example."), "{frames:?}");
}

#[tokio::test]
async fn a_reader_over_tcp_receives_the_same_messages() {
    let Some(fstrm) = tool("fstrm_capture") else { return };
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capture.fstrm");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let reader = Reader(
        Command::new(&fstrm)
            .args(["-t", "protobuf:dnstap.Dnstap", "-a", "127.0.0.1", "-p", &port.to_string(), "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let block = write_list(dir.path(), "b.txt", "bad.test\n");
    let lists = format!("[[lists]]\nname = \"reg\"\nsource = \"{block}\"\n");
    let extra = format!("[dnstap]\ntcp = \"127.0.0.1:{port}\"\nlog_queries = false\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n");
    let srv = TestServer::start(&config(up.addr, &lists, &extra)).await;
    let (addr, metrics) = (srv.addr, srv.metrics.clone());
    // until the writer has connected (it retries while fstrm_capture starts)
    assert!(
        eventually(Duration::from_secs(5), || {
            let m = metrics.clone();
            async move {
                udp(addr, "tcp-reader.bad.test.", RecordType::A, EDNS).await.unwrap();
                m.dnstap_frames.get() >= 1
            }
        })
        .await,
        "nothing written to the TCP reader"
    );
    srv.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    reader.stop();
    let frames = decode_file(&std::fs::read(&file).unwrap());
    assert!(!frames.is_empty());
    for f in &frames {
        assert_eq!(f.kind, 6, "log_queries = false: responses only");
        assert_eq!(qname_of(&f.dns), "tcp-reader.bad.test.");
        assert_eq!(f.policy.as_ref().map(|p| (p.0.as_str(), p.2)), Some(("reg", 1)));
    }
}
