//! Replays the fuzz findings under `tests/data/fuzz-regressions/` (and a
//! built-in set of tricky requests) through the same paths as the fuzz
//! targets in `fuzz/`: `server::wire::handle_bytes` on the real handler, all
//! seven list parsers, and the index compiler. See `fuzz/README.md`.
//!
//! File names are `<target>-<n>.bin`. Every file is run through every path,
//! whatever its target: as a raw request from an allowed client, as a raw
//! request from a refused one, as the `packet` target reads it (byte 0 picks
//! the client, the rest is the request), as a list in each format, and as
//! the `compile` target's input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use hickory_proto::op::{Message, MessageType};
use qalqan::lists::parse::{parse, Entry, Format, Rule};
use qalqan::name::QName;
use qalqan::policy::index::{Index, ListInput};
use qalqan::server::handler::Handler;

const FORMATS: [Format; 7] = [
    Format::Domains,
    Format::Hosts,
    Format::Adblock,
    Format::Rpz,
    Format::Urls,
    Format::RegistryCsv,
    Format::Keywords,
];

// The same lists as `fuzz/src/lib.rs`.
const LISTS: &[(&str, &str, &str, &str, &str)] = &[
    // (file, name, format, kind, action)
    ("allow.txt", "allow", "domains", "allow", "nxdomain"),
    ("block.txt", "reg", "domains", "block", "nxdomain"),
    ("z.rpz", "rpz", "rpz", "block", "nxdomain"),
    ("kw.txt", "kw", "keywords", "block", "refused"),
    ("ads.txt", "ads", "adblock", "block", "sinkhole"),
    ("hosts.txt", "hosts", "hosts", "block", "nodata"),
];

fn list_text(file: &str) -> &'static str {
    match file {
        "allow.txt" => "allowed.blocked.example\n",
        "block.txt" => "# fuzz fixture\nblocked.example\n*.wildcard-blocked.example\nxn--80ak6aa92e.example\n",
        "z.rpz" => concat!(
            "$TTL 300\n",
            "$ORIGIN rpz.fuzz.test.\n",
            "@       IN SOA  localhost. hostmaster.localhost. ( 1 3600 600 86400 60 )\n",
            "        IN NS   localhost.\n",
            "bad.example             CNAME .\n",
            "*.wild.example          CNAME .\n",
            "nodata.example          CNAME *.\n",
            "pass.bad.example        CNAME rpz-passthru.\n",
            "drop.example            CNAME rpz-drop.\n",
            "local.example           A     192.0.2.1\n",
            "local.example           AAAA  2001:db8::1\n",
            "local.example           TXT   \"blocked by order\"\n",
            "redirect.example 60 IN  CNAME walled.garden.test.\n",
            "32.1.2.0.192.rpz-ip     CNAME .\n",
        ),
        "kw.txt" => "casino\nxn--80akhbyknj4f\n",
        "ads.txt" => "||ads.example^\n||important.example^$important\n@@||important.example^\n|exact.example^\n/^tracker[0-9]+\\./\n",
        "hosts.txt" => "0.0.0.0 hosts-blocked.example other.example\n127.0.0.1 localhost\n",
        _ => unreachable!(),
    }
}

/// The handler the `packet` fuzz target uses: lists of every kind, no
/// upstream (forwarding fails at once with SERVFAIL; nothing is sent).
fn handler(dir: &Path) -> (qalqan::App, Handler) {
    let mut toml = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\", \"::1/128\"]\n\
         [upstream]\nservers = [\"127.0.0.1:9\"]\ntimeout_ms = 1\n",
    );
    for (file, name, format, kind, action) in LISTS {
        let path = dir.join(file);
        std::fs::write(&path, list_text(file)).unwrap();
        toml.push_str(&format!(
            "[[lists]]\nname = \"{name}\"\nsource = \"{}\"\nformat = \"{format}\"\nkind = \"{kind}\"\naction = \"{action}\"\n",
            path.display()
        ));
    }
    let app = qalqan::App::from_toml_str(&toml).expect("fuzz config loads");
    let handler = qalqan::build_handler(&app, Vec::new(), None);
    (app, handler)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `packet` target's client for control byte `c`.
fn source_for(c: u8) -> SocketAddr {
    let ip = match c % 4 {
        0 | 1 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        2 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    };
    SocketAddr::new(ip, 5353)
}

/// Runs one request; returns a description of the broken invariant, if any.
async fn check_packet(h: &Handler, what: &str, request: &[u8], src: SocketAddr) -> Option<String> {
    // printed only when the test fails (the harness captures it)
    eprintln!("packet: {what} from {src}: {}", hex(request));
    let reply = qalqan::server::wire::handle_bytes(h, request, src).await?;
    let fail = |why: String| Some(format!("{what} from {src}: {why}\n  request {}\n  reply   {}", hex(request), hex(&reply)));
    let msg = match Message::from_vec(&reply) {
        Ok(m) => m,
        Err(e) => return fail(format!("reply does not decode: {e}")),
    };
    if request.len() < 2 {
        return fail("a reply to a request shorter than a DNS ID".into());
    }
    let id = u16::from_be_bytes([request[0], request[1]]);
    if msg.metadata.id != id {
        return fail(format!("reply ID {:#06x} != request ID {id:#06x}", msg.metadata.id));
    }
    if msg.metadata.message_type != MessageType::Response {
        return fail("reply is not marked as a response".into());
    }
    None
}

/// Every parser, the counters invariant, then the `compile` target's steps.
fn check_lists(what: &str, data: &[u8]) -> Vec<String> {
    eprintln!("lists: {what}: {}", hex(data));
    let mut failures = Vec::new();
    for format in FORMATS {
        let out = parse(format, "fuzz", data);
        if (out.bad_lines as usize) < out.errors.len() {
            failures.push(format!("{what} as {format:?}: bad_lines {} < errors {}", out.bad_lines, out.errors.len()));
        }
    }
    if let Some((&control, rest)) = data.split_first() {
        compile(control, rest);
    }
    failures
}

/// As `fuzz_compile` in `fuzz/src/lib.rs` (a panic fails the test).
fn compile(control: u8, rest: &[u8]) {
    let format = FORMATS[usize::from(control & 0x0f) % FORMATS.len()];
    let allow = control & 0x80 != 0;
    let (list, query) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut out = parse(format, "fuzz", list);
    let entries: Vec<Entry> = std::mem::take(&mut out.entries);
    let mut inputs = vec![ListInput { allow, entries: &entries }];
    if control & 0x40 != 0 {
        inputs.push(ListInput { allow: !allow, entries: &entries });
    }
    let Ok(index) = Index::build(&inputs) else { return };
    let mut names: Vec<String> = Vec::new();
    match query {
        Some(q) => names.push(String::from_utf8_lossy(q).into_owned()),
        None => {
            if let Some(last) = String::from_utf8_lossy(list).lines().last() {
                names.push(last.trim().to_owned());
            }
        }
    }
    for e in entries.iter().take(16) {
        match &e.rule {
            Rule::Name { name, .. } => {
                names.push(name.clone());
                names.push(format!("x.{name}"));
            }
            Rule::Keyword(k) => names.push(format!("a{k}b.example")),
            Rule::Ip { net, .. } | Rule::AnswerIp { net, .. } => {
                let _ = index.check_ip(net.addr());
            }
            Rule::Regex(_) => {}
        }
    }
    for n in &names {
        let _ = index.check(&QName::parse(n).unwrap_or(QName::root()));
    }
}

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

#[test]
fn fuzz_regressions_replay() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (_app, h) = {
        let _g = rt.enter();
        handler(dir.path())
    };
    let allowed = source_for(0);
    let refused = source_for(3);
    let mut failures: Vec<String> = Vec::new();
    let mut runs = 0usize;

    rt.block_on(async {
        for (what, req) in tricky_requests() {
            for src in [allowed, source_for(2), refused] {
                runs += 1;
                failures.extend(check_packet(&h, what, &req, src).await);
            }
        }
        for path in regression_files() {
            let data = std::fs::read(&path).unwrap();
            let what = path.file_name().unwrap().to_string_lossy().into_owned();
            for src in [allowed, refused] {
                runs += 1;
                failures.extend(check_packet(&h, &format!("{what} (raw)"), &data, src).await);
            }
            if let Some((&c, req)) = data.split_first() {
                runs += 1;
                failures.extend(check_packet(&h, &format!("{what} (as the packet target)"), req, source_for(c)).await);
            }
            failures.extend(check_lists(&what, &data));
        }
    });
    for (what, req) in tricky_requests() {
        failures.extend(check_lists(what, &req));
    }
    assert!(runs > 0);
    assert!(failures.is_empty(), "{} fuzz regression(s):\n{}", failures.len(), failures.join("\n"));
}
