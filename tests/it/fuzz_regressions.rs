//! Replays the fuzz findings under `tests/data/fuzz-regressions/` (and a
//! built-in set of tricky requests) through the fuzz targets' own code
//! (`fuzz/src/lib.rs`, compiled into this test: one set of invariants):
//! the hickory path (`server::slow::handle_bytes` on the real handler with
//! lists of every kind), the UDP fast path (`server::fast::answer` with a
//! seeded cache, and `fast::miss` on a miss), the upstream-reply path (the
//! byte scan, `Reply::accept`, a cache entry, the CNAME/address walk, the
//! lazy decode), all seven list parsers and the index compiler. See
//! `fuzz/README.md`.
//!
//! File names are `<target>-<n>.bin`. Every file is run through every path,
//! whatever its target: as a raw request from an allowed client (v4 and
//! v6) and from one outside the ACL, as the `packet` target reads it (byte
//! 0 picks the client, the rest is the request), as an upstream reply, as a
//! list in each format, and as the `compile` target's input.

use std::path::{Path, PathBuf};

#[allow(dead_code)] // the fuzz targets' helpers this replay does not call
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_lib;

use fuzz_lib::{check_parse, fuzz_compile, fuzz_packet, fuzz_upstream_reply, hex, run_packet, source_for, FORMATS};

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar].iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn qname(name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        b.push(l.len() as u8);
        b.extend_from_slice(l.as_bytes());
    }
    b.push(0);
    b
}

fn question(name: &str, qtype: u16) -> Vec<u8> {
    let mut b = qname(name);
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b
}
/// Requests that have broken DNS servers before, independent of any finding.
fn tricky_requests() -> Vec<(&'static str, Vec<u8>)> {
    let cat = |parts: &[&[u8]]| parts.concat();
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![0x12]),
        ("eleven bytes", header(0x1234, 0x0100, 1, 0, 0, 0)[..11].to_vec()),
        ("header only", header(0x1234, 0x0100, 0, 0, 0, 0)),
        ("qdcount 0, question follows", cat(&[&header(0x1235, 0x0100, 0, 0, 0, 0), &question("example.com", 1)])),
        ("qdcount 1", cat(&[&header(0x1236, 0x0100, 1, 0, 0, 0), &question("example.com", 1)])),
        ("qdcount 1, blocked", cat(&[&header(0x1237, 0x0100, 1, 0, 0, 0), &question("blocked.example", 1)])),
        ("qdcount 1, rpz local", cat(&[&header(0x1238, 0x0100, 1, 0, 0, 0), &question("local.example", 16)])),
        (
            "qdcount 2",
            cat(&[&header(0x1239, 0x0100, 2, 0, 0, 0), &question("example.com", 1), &question("blocked.example", 28)]),
        ),
        ("qdcount 2, one present", cat(&[&header(0x123a, 0x0100, 2, 0, 0, 0), &question("example.com", 1)])),
        ("qdcount 65535", cat(&[&header(0x123b, 0x0100, 0xffff, 0, 0, 0), &question("example.com", 1)])),
        ("pointer to itself", cat(&[&header(0x123c, 0x0100, 1, 0, 0, 0), &[0xc0, 0x0c, 0, 1, 0, 1]])),
        (
            "pointer loop of two",
            cat(&[&header(0x123d, 0x0100, 1, 0, 0, 0), &[0x01, b'a', 0xc0, 0x0c, 0, 1, 0, 1]]),
        ),
        ("forward pointer", cat(&[&header(0x123e, 0x0100, 1, 0, 0, 0), &[0xc0, 0x20, 0, 1, 0, 1], &[0u8; 24]])),
        ("pointer past the end", cat(&[&header(0x123f, 0x0100, 1, 0, 0, 0), &[0xff, 0xff, 0, 1, 0, 1]])),
        ("label length 63, 3 bytes given", cat(&[&header(0x1240, 0x0100, 1, 0, 0, 0), &[0x3f, b'a', b'b', b'c']])),
        ("extended label type 0x40", cat(&[&header(0x1241, 0x0100, 1, 0, 0, 0), &[0x41, b'a', 0, 0, 1, 0, 1]])),
        ("reserved label type 0x80", cat(&[&header(0x1242, 0x0100, 1, 0, 0, 0), &[0x81, b'a', 0, 0, 1, 0, 1]])),
        ("name over 255 bytes", {
            let mut b = header(0x1243, 0x0100, 1, 0, 0, 0);
            for _ in 0..5 {
                b.push(63);
                b.extend_from_slice(&[b'a'; 63]);
            }
            b.extend_from_slice(&[0, 0, 1, 0, 1]);
            b
        }),
        ("truncated question: no type", cat(&[&header(0x1244, 0x0100, 1, 0, 0, 0), &qname("example.com")])),
        (
            "truncated question: half a class",
            cat(&[&header(0x1245, 0x0100, 1, 0, 0, 0), &qname("example.com"), &[0, 1, 0]]),
        ),
        ("truncated question: in a label", cat(&[&header(0x1246, 0x0100, 1, 0, 0, 0), &[7, b'e', b'x', b'a']])),
        (
            "OPT with rdlen past the end",
            cat(&[&header(0x1247, 0x0100, 1, 0, 0, 1), &question("example.com", 1), &[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0xff, 0xff]]),
        ),
        (
            "OPT with rdlen shorter than its option",
            cat(&[
                &header(0x1248, 0x0100, 1, 0, 0, 1),
                &question("example.com", 1),
                &[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 2, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
            ]),
        ),
        (
            "OPT with an option longer than rdlen",
            cat(&[
                &header(0x1249, 0x0100, 1, 0, 0, 1),
                &question("local.example", 1),
                &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 4, 0, 8, 0, 7],
            ]),
        ),
        (
            "two OPT records",
            cat(&[
                &header(0x124a, 0x0100, 1, 0, 0, 2),
                &question("example.com", 1),
                &[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0],
                &[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        ("OPT not at the root", {
            let mut b = cat(&[&header(0x124b, 0x0100, 1, 0, 0, 1), &question("example.com", 1)]);
            b.extend(qname("x"));
            b.extend_from_slice(&[0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
            b
        }),
        ("EDNS version 1", cat(&[&header(0x124c, 0x0100, 1, 0, 0, 1), &question("example.com", 1), &[0, 0, 41, 0x10, 0, 0, 1, 0, 0, 0, 0]])),
        ("a response", cat(&[&header(0x124d, 0x8180, 1, 0, 0, 0), &question("example.com", 1)])),
        ("opcode UPDATE", cat(&[&header(0x124e, 0x2800, 1, 0, 0, 0), &question("example.com", 6)])),
        ("opcode 15", cat(&[&header(0x124f, 0x7900, 1, 0, 0, 0), &question("example.com", 1)])),
        ("ancount 1 in a query, no record", cat(&[&header(0x1250, 0x0100, 1, 1, 0, 0), &question("example.com", 1)])),
        ("AXFR over UDP", cat(&[&header(0x1251, 0x0100, 1, 0, 0, 0), &question("example.com", 252)])),
        ("ANY for a blocked name", cat(&[&header(0x1252, 0x0100, 1, 0, 0, 0), &question("blocked.example", 255)])),
        ("trailing garbage", cat(&[&header(0x1253, 0x0100, 1, 0, 0, 0), &question("example.com", 1), &[0xde, 0xad]])),
    ];
    // a label with a NUL, a dot and bytes over 0x7f
    v.push(("odd label bytes", cat(&[&header(0x1254, 0x0100, 1, 0, 0, 0), &[4, 0, b'.', 0xff, b'A', 0, 0, 1, 0, 1]])));
    v
}

fn regression_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs `f`, turning a panic (a broken invariant) into a failure line.
fn run(failures: &mut Vec<String>, what: &str, data: &[u8], f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let why = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned())).unwrap_or_default();
        failures.push(format!("{what}: {why}\n  input {}", hex(data)));
    }
}

#[test]
fn fuzz_regressions_replay() {
    let mut failures: Vec<String> = Vec::new();
    let mut inputs: Vec<(String, Vec<u8>)> =
        tricky_requests().into_iter().map(|(what, b)| (what.to_owned(), b)).collect();
    let files = regression_files();
    assert!(!files.is_empty(), "tests/data/fuzz-regressions/ holds the recorded findings");
    for path in files {
        let data = std::fs::read(&path).unwrap();
        inputs.push((path.file_name().unwrap().to_string_lossy().into_owned(), data));
    }
    for (what, data) in &inputs {
        // control bytes 0 (127.0.0.1), 2 (::1), 3 (10.0.0.1: outside the ACL)
        for control in [0u8, 2, 3] {
            let src = source_for(control);
            run(&mut failures, &format!("{what} (request from {src})"), data, || {
                run_packet(data, src);
            });
        }
        run(&mut failures, &format!("{what} (as the packet target)"), data, || fuzz_packet(data));
        run(&mut failures, &format!("{what} (as an upstream reply)"), data, || fuzz_upstream_reply(data));
        for format in FORMATS {
            run(&mut failures, &format!("{what} (as a {format:?} list)"), data, || {
                check_parse(format, data);
            });
        }
        run(&mut failures, &format!("{what} (as the compile target)"), data, || fuzz_compile(data));
    }
    // the replay reached the handler: a plain query is answered, a blocked one blocked
    let q = [header(0x4242, 0x0100, 1, 0, 0, 0), question("blocked.example", 1)].concat();
    let r = run_packet(&q, source_for(0)).expect("a reply to a plain query");
    assert_eq!((r[0], r[1], r[3] & 0x0f), (0x42, 0x42, 3), "blocked.example is NXDOMAIN: {}", hex(&r));
    assert!(inputs.len() > 30, "{} inputs", inputs.len());
    assert!(failures.is_empty(), "{} fuzz regression(s):\n{}", failures.len(), failures.join("\n"));
}
