//! Shared code of the qalqan fuzz targets (see README.md).
//!
//! Every target is a thin `fuzz_target!` around one function here, so the
//! invariants live in one place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use qalqan::lists::parse::parse;
use qalqan::name::QName;
use qalqan::policy::index::{Index, ListInput};
use qalqan::rules::{Entry, Format, Rule};
use qalqan::server::handler::Handler;

/// The seven list formats, in the order the `compile` target's first byte picks them.
pub const FORMATS: [Format; 7] = [
    Format::Domains,
    Format::Hosts,
    Format::Adblock,
    Format::Rpz,
    Format::Urls,
    Format::RegistryCsv,
    Format::Keywords,
];

// ---------------------------------------------------------------- packet

const BLOCK_DOMAINS: &str = "\
# fuzz fixture
blocked.example
*.wildcard-blocked.example
xn--80ak6aa92e.example
";

const ALLOW_DOMAINS: &str = "allowed.blocked.example\n";

const RPZ: &str = "\
$TTL 300
$ORIGIN rpz.fuzz.test.
@       IN SOA  localhost. hostmaster.localhost. ( 1 3600 600 86400 60 )
        IN NS   localhost.
bad.example             CNAME .
*.wild.example          CNAME .
nodata.example          CNAME *.
pass.bad.example        CNAME rpz-passthru.
drop.example            CNAME rpz-drop.
local.example           A     192.0.2.1
local.example           AAAA  2001:db8::1
local.example           TXT   \"blocked by order\"
redirect.example 60 IN  CNAME walled.garden.test.
32.1.2.0.192.rpz-ip     CNAME .
";

const KEYWORDS: &str = "casino\nxn--80akhbyknj4f\n";

const ADBLOCK: &str = "\
||ads.example^
||important.example^$important
@@||important.example^
|exact.example^
/^tracker[0-9]+\\./
";

const HOSTS: &str = "0.0.0.0 hosts-blocked.example other.example\n127.0.0.1 localhost\n";

struct PacketEnv {
    rt: tokio::runtime::Runtime,
    handler: Handler,
    _app: qalqan::App,
}

fn packet_env() -> &'static PacketEnv {
    static ENV: OnceLock<PacketEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qalqan-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let files = [
            ("block.txt", BLOCK_DOMAINS),
            ("allow.txt", ALLOW_DOMAINS),
            ("z.rpz", RPZ),
            ("kw.txt", KEYWORDS),
            ("ads.txt", ADBLOCK),
            ("hosts.txt", HOSTS),
        ];
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write list");
        }
        let p = |f: &str| dir.join(f).display().to_string();
        let toml = format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
allow_clients = ["127.0.0.0/8", "::1/128"]
[upstream]
servers = ["127.0.0.1:9"]
timeout_ms = 1
[[lists]]
name = "allow"
source = "{allow}"
format = "domains"
kind = "allow"
[[lists]]
name = "reg"
source = "{block}"
format = "domains"
[[lists]]
name = "rpz"
source = "{rpz}"
format = "rpz"
[[lists]]
name = "kw"
source = "{kw}"
format = "keywords"
action = "refused"
[[lists]]
name = "ads"
source = "{ads}"
format = "adblock"
action = "sinkhole"
[[lists]]
name = "hosts"
source = "{hosts}"
format = "hosts"
action = "nodata"
"#,
            allow = p("allow.txt"),
            block = p("block.txt"),
            rpz = p("z.rpz"),
            kw = p("kw.txt"),
            ads = p("ads.txt"),
            hosts = p("hosts.txt"),
        );
        let app = qalqan::App::from_toml_str(&toml).expect("fuzz config loads");
        // lists are in memory now; nothing watches the files outside `serve`
        let _ = std::fs::remove_dir_all(&dir);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        // no upstreams: forwarding fails at once with SERVFAIL, nothing is sent
        let handler = {
            let _g = rt.enter();
            qalqan::build_handler(&app, Vec::new(), None, None, None)
        };
        seed_cache(&handler);
        PacketEnv { rt, handler, _app: app }
    })
}

/// Cached answers for the fast path's hit encoding (`server::fast`'s
/// pre-encoded replies): an address, a CNAME chain into a blocked name, a
/// negative answer with SOA, and the same name under DO and CD keys.
fn seed_cache(handler: &Handler) {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
    use qalqan::resolve::cache::Key;
    use qalqan::resolve::Answer;
    let name = |s: &str| Name::from_ascii(s).expect("fixture name");
    let a = |owner: &str| Record::from_rdata(name(owner), 300, RData::A(A::new(192, 0, 2, 7)));
    let soa = Record::from_rdata(
        name("example."),
        300,
        RData::SOA(SOA::new(name("ns.example."), name("h.example."), 1, 3600, 600, 86400, 60)),
    );
    let answers = [
        ("hit.example.", RecordType::A, ResponseCode::NoError, vec![a("hit.example.")], vec![]),
        (
            "chain.example.",
            RecordType::A,
            ResponseCode::NoError,
            vec![
                Record::from_rdata(name("chain.example."), 300, RData::CNAME(CNAME(name("x.blocked.example.")))),
                a("x.blocked.example."),
            ],
            vec![],
        ),
        ("gone.example.", RecordType::A, ResponseCode::NXDomain, vec![], vec![soa.clone()]),
        ("empty.example.", RecordType::AAAA, ResponseCode::NoError, vec![], vec![soa]),
    ];
    let now = std::time::Instant::now();
    for (owner, qtype, rcode, ans, auth) in answers {
        for (dnssec_ok, checking_disabled) in [(false, false), (true, false), (false, true)] {
            let key = Key { name: QName::parse(owner).expect("fixture"), qtype, qclass: DNSClass::IN, dnssec_ok, checking_disabled };
            let answer = Answer {
                rcode,
                answers: ans.clone(),
                authorities: auth.clone(),
                additionals: vec![],
                authentic_data: dnssec_ok,
            };
            let _ = handler.shared.cache.insert_answer(&key, &name(owner), &answer, now);
        }
    }
}

/// The client address chosen by the control byte: allowed v4, allowed v6,
/// or outside `allow_clients` (the ACL's REFUSED path).
pub fn source_for(control: u8) -> SocketAddr {
    let ip = match control % 4 {
        0 | 1 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        2 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    };
    SocketAddr::new(ip, 5353)
}

/// Runs `request` from `src` through `server::slow::handle_bytes` and checks
/// the reply: it decodes, carries the request's ID and is a response.
pub fn run_packet(request: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let env = packet_env();
    let reply = env.rt.block_on(qalqan::server::slow::handle_bytes(&env.handler, request, src));
    if let Some(reply) = &reply {
        check_reply(request, reply);
    }
    run_fast_path(env, request, src);
    reply
}

/// The same request through the UDP fast path (`server::fast`): a template or
/// pre-encoded reply, a miss forwarded from the fast path (no upstreams:
/// SERVFAIL at once), or a hand-over to the hickory path (already checked).
fn run_fast_path(env: &PacketEnv, request: &[u8], src: SocketAddr) {
    use qalqan::server::fast::{answer, miss, Fast};
    let shared = &env.handler.shared;
    match answer(shared, request, src, std::time::Instant::now()) {
        Fast::Reply(reply, _) => check_reply(request, &reply),
        Fast::Miss(_) => {
            if let Some(reply) = env.rt.block_on(miss(shared, &env.handler, request, src)) {
                check_reply(request, &reply);
            }
        }
        // handed to the hickory path (checked above), or no reply at all
        Fast::Slow | Fast::Drop => {}
    }
}

/// The reply invariants (panics when one is broken).
pub fn check_reply(request: &[u8], reply: &[u8]) {
    assert!(
        request.get(2).is_some_and(|f| f & 0x80 == 0),
        "a reply to a response (QR set), or to less than a header\nrequest {}\nreply {}",
        hex(request),
        hex(reply)
    );
    let msg = match Message::from_vec(reply) {
        Ok(m) => m,
        Err(_) if skip_known_bugs() && question_has_pointer(request) => return,
        Err(e) => panic!("reply does not decode: {e}\nrequest {}\nreply {}", hex(request), hex(reply)),
    };
    assert!(request.len() >= 2, "reply to a request shorter than a DNS ID: {}", hex(request));
    let id = u16::from_be_bytes([request[0], request[1]]);
    assert_eq!(msg.metadata.id, id, "reply ID differs\nrequest {}\nreply {}", hex(request), hex(reply));
    assert_eq!(
        msg.metadata.message_type,
        MessageType::Response,
        "reply is not a response\nrequest {}\nreply {}",
        hex(request),
        hex(reply)
    );
}

/// Whether `QALQAN_FUZZ_SKIP_KNOWN=1` is set: then an undecodable reply to a
/// request whose question uses a compression pointer is tolerated, so a run
/// can go past that known bug (tests/data/fuzz-regressions/packet-{1,2}.bin:
/// hickory-server echoes the question's original bytes, pointer included,
/// and the pointer then targets different bytes of the reply).
pub fn skip_known_bugs() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var("QALQAN_FUZZ_SKIP_KNOWN").is_ok_and(|v| v == "1"))
}

/// Whether a name in the question section of `msg` has a compression pointer.
pub fn question_has_pointer(msg: &[u8]) -> bool {
    let Some(qd) = msg.get(4..6).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return false };
    let mut i = 12usize;
    for _ in 0..qd {
        loop {
            let Some(&len) = msg.get(i) else { return false };
            match len {
                0 => break,
                l if l & 0xc0 == 0xc0 => return true,
                l => i += 1 + usize::from(l),
            }
        }
        i += 1 + 4;
    }
    false
}

/// The `packet` target: byte 0 picks the client address, the rest is the request.
pub fn fuzz_packet(data: &[u8]) {
    let Some((&control, request)) = data.split_first() else { return };
    run_packet(request, source_for(control));
}

// ---------------------------------------------------------------- lists

/// Parses `data` as `format`, checks the output's counters and returns the rules.
pub fn check_parse(format: Format, data: &[u8]) -> Vec<Entry> {
    let mut out = parse(format, "fuzz", data);
    assert!(
        out.bad_lines as usize >= out.errors.len(),
        "{format:?}: bad_lines {} < errors {}",
        out.bad_lines,
        out.errors.len()
    );
    std::mem::take(&mut out.entries)
}

/// The `compile` target: byte 0 picks the format (low bits) and list
/// shapes (high bits); the rest is `LIST [\0 QUERY-NAME]`. The index is
/// built and checked against the query name, the last line of the list,
/// and every (up to 16) rule name and a name below it.
pub fn fuzz_compile(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else { return };
    let format = FORMATS[usize::from(control & 0x0f) % FORMATS.len()];
    let allow = control & 0x80 != 0;
    let (list, query) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let entries = check_parse(format, list);
    let mut inputs = vec![ListInput { allow, entries: &entries }];
    if control & 0x40 != 0 {
        // the same rules again in a list of the other kind
        inputs.push(ListInput { allow: !allow, entries: &entries });
    }
    let Ok(index) = Index::build(&inputs) else { return };
    let mut names: Vec<String> = Vec::new();
    match query {
        Some(q) => names.push(String::from_utf8_lossy(q).into_owned()),
        None => {
            let text = String::from_utf8_lossy(list);
            if let Some(last) = text.lines().last() {
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
        let q = QName::parse(n).unwrap_or(QName::root());
        let _ = index.check(&q);
    }
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An upstream reply through everything that reads one: the matcher against a fixed question, the byte
/// scan, `Reply::accept` (with hickory's re-encoding of odd shapes), the cache entry, the CNAME/address
/// walk and the entry's lazy decode into records.
pub fn fuzz_upstream_reply(data: &[u8]) {
    use qalqan::wire::query::answers;
    use qalqan::wire::scan::{each_chain_item, ChainItem};
    use qalqan::resolve::Reply;
    let question = b"\x03www\x07example\x00\x00\x01\x00\x01";
    let id = data.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let _ = answers(data, id, question);
    let Some(reply) = Reply::accept(data.to_vec()) else { return };
    for &off in &reply.scan.ttl_offsets {
        let off = usize::from(off);
        assert!(off + 4 <= reply.bytes.len(), "TTL offset {off} out of {} bytes: {}", reply.bytes.len(), hex(data));
    }
    let _ = each_chain_item(&reply.bytes, reply.scan.question_end, reply.scan.answers, |item| match item {
        ChainItem::Target(q) => (q.as_str().len() > 300).then_some(()),
        ChainItem::Addr(_) => None,
    });
    let cache = qalqan::resolve::cache::Cache::new(
        4,
        qalqan::resolve::cache::TtlPolicy { min_ttl: 0, max_ttl: 86_400, max_negative_ttl: 3600, stale_max: 0 },
    );
    let key = qalqan::resolve::cache::Key {
        name: qalqan::name::QName::parse("www.example").expect("fixture"),
        qtype: hickory_proto::rr::RecordType::A,
        qclass: hickory_proto::rr::DNSClass::IN,
        dnssec_ok: false,
        checking_disabled: false,
    };
    let (entry, _) = cache.insert(&key, reply, std::time::Instant::now());
    let _ = entry.answer();
}
