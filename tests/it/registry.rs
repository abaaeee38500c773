//! The real Russian registry dump (`../shared/data/regulator-ru-zapret`),
//! loaded as an ISP would: names and URL hosts blocked with their decision,
//! and no collateral blocking of other sites that share a listed address
//! (Cloudflare, Google, shared hosting) unless the list asks for it with
//! `ip_rules = "answer"`. Also RPZ `rpz-ip` triggers, `qalqan explain` on a
//! Windows-1251 row and `qalqan export --ips` against the dump's addresses.

use std::collections::BTreeSet;
use std::process::Command;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_qalqan");
const DUMP: &str = "regulator-ru-zapret/dump-2016-06-13.csv";

/// Unlisted names whose upstream answers carry addresses listed in the dump
/// (the address column of other entries), with the decision a block would name.
const NEIGHBOURS: &[(&str, &str, &str)] = &[
    // Cloudflare anycast, listed for al-wayi.org (line 783)
    ("cf-neighbour.example.", "104.24.108.248", "2-236(1)/2014 (суд)"),
    // Google, listed for al-wayi.blogspot.co.uk (line 779)
    ("google-neighbour.example.", "74.125.196.132", "2-3347/13 (суд)"),
    // a dedicated server, listed as an address-only entry
    ("host-neighbour.example.", "136.243.253.129", "2-6-27/ 2016-02-03-20-АИ (ФНС)"),
];

fn lists_toml(dump: &str, extra: &str) -> String {
    format!("[[lists]]\nname = \"zapret\"\nsource = \"{dump}\"\nformat = \"registry-csv\"\nede = 16\n{extra}")
}

async fn upstream() -> Upstream {
    let up = Upstream::start().await;
    for (name, ip, _) in NEIGHBOURS {
        up.set(name, RecordType::A, Canned::Answer(vec![a(name, 300, ip)]));
    }
    for n in ["al-wayi.org.", "www.al-wayi.org.", "123.ej.ru."] {
        up.set(n, RecordType::A, Canned::Answer(vec![a(n, 300, "198.51.100.50")]));
    }
    up
}

#[tokio::test]
async fn listed_names_are_blocked_and_neighbours_on_listed_addresses_resolve() {
    let Some(dump) = shared_data(DUMP) else { return };
    let up = upstream().await;
    let srv = TestServer::start(&config(up.addr, &lists_toml(&dump.display().to_string(), ""), "")).await;
    // the list and what it says about its addresses
    let state = srv.lists.state(qalqan::rules::ListId::from_raw(0)).expect("the dump loads");
    assert_eq!(state.bad_lines, 0);
    assert!(state.addresses.listed > 19_000, "{:?}", state.addresses);
    assert_eq!(state.addresses.enforced, 0);
    assert!(!srv.lists.policy.load().index.has_ip_rules(), "no answer-IP rules by default");

    // listed domains and URL hosts: blocked, the decision in the EDE text
    for (name, decision) in [
        ("al-wayi.org.", "2-236(1)/2014 (суд)"),
        ("www.al-wayi.org.", "2-236(1)/2014 (суд)"),
        ("123.ej.ru.", "Исорг-27/3-3420-14 (Генпрокуратура)"),
    ] {
        let m = udp(srv.addr, name, RecordType::A, EDNS).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        let e = ede(&m);
        assert_eq!(e.first().map(|e| e.0), Some(16), "{name}: {e:?}");
        assert!(e[0].1.contains(decision), "{name}: {e:?}");
    }
    // unlisted names on listed addresses: their real answer, twice (the
    // second from the cache, through the fast path)
    for round in 0..2 {
        for (name, ip, _) in NEIGHBOURS {
            let m = udp(srv.addr, name, RecordType::A, EDNS).await.unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name} round {round}");
            assert_eq!(m.answers.len(), 1, "{name} round {round}: {m:?}");
            assert_eq!(m.answers[0].data, RData::A(ip.parse().unwrap()), "{name}");
            assert!(ede(&m).is_empty(), "{name}: {:?}", ede(&m));
        }
    }
    // /lists says what the addresses do
    let (_, body) = http_get(srv.http, "/lists").await;
    assert!(body.contains("enforced by DNS: 0"), "{body}");
    srv.shutdown().await;
}

#[tokio::test]
async fn ip_rules_answer_blocks_every_name_on_a_listed_address() {
    let Some(dump) = shared_data(DUMP) else { return };
    let up = upstream().await;
    let lists = lists_toml(&dump.display().to_string(), "ip_rules = \"answer\"\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let state = srv.lists.state(qalqan::rules::ListId::from_raw(0)).expect("the dump loads");
    assert_eq!(state.addresses.enforced, state.addresses.listed);
    for round in 0..2 {
        for (name, _, decision) in NEIGHBOURS {
            let m = udp(srv.addr, name, RecordType::A, EDNS).await.unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name} round {round}");
            assert!(m.answers.is_empty());
            let e = ede(&m);
            assert!(e.first().is_some_and(|e| e.1.contains(decision)), "{name}: {e:?}");
        }
    }
    // a name on an address the dump does not list still resolves
    up.set("clean.example.", RecordType::A, Canned::Answer(vec![a("clean.example.", 300, "198.51.100.77")]));
    let m = udp(srv.addr, "clean.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    srv.shutdown().await;
}

#[tokio::test]
async fn rpz_ip_triggers_block_answers_by_address() {
    let up = Upstream::start().await;
    let answers: &[(&str, RecordType, &str)] = &[
        ("hit4.example.", RecordType::A, "192.0.2.10"),
        ("near4.example.", RecordType::A, "192.0.2.11"),
        ("hit6.example.", RecordType::AAAA, "2001:db8::10"),
        ("near6.example.", RecordType::AAAA, "2001:db8::11"),
        ("specific.example.", RecordType::A, "203.0.113.7"),
        ("wide.example.", RecordType::A, "203.0.113.8"),
    ];
    for (name, t, ip) in answers {
        let rec = if *t == RecordType::A { a(name, 300, ip) } else { aaaa(name, 300, ip) };
        up.set(name, *t, Canned::Answer(vec![rec]));
    }
    up.set("via-cname.example.", RecordType::A, Canned::Answer(vec![cname("via-cname.example.", 300, "hit4.example."), a("hit4.example.", 300, "192.0.2.10")]));
    let dir = tempfile::tempdir().unwrap();
    let zone = "$TTL 60\n$ORIGIN rpz.test.\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n  NS localhost.\n\
                32.10.2.0.192.rpz-ip CNAME .\n\
                128.10.zz.db8.2001.rpz-ip CNAME .\n\
                24.0.113.0.203.rpz-ip CNAME *.\n\
                32.7.113.0.203.rpz-ip A 192.0.2.99\n";
    let rpz = write_list(dir.path(), "ip.rpz", zone);
    let lists = format!("[[lists]]\nname = \"ip-rpz\"\nsource = \"{rpz}\"\nformat = \"rpz\"\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let q = |n: &'static str, t: RecordType| {
        let addr = srv.addr;
        async move { udp(addr, n, t, EDNS).await.unwrap() }
    };
    for round in 0..2 {
        let m = q("hit4.example.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "round {round}");
        assert!(ede(&m).first().is_some_and(|e| e.1.contains("ip-rpz")), "{:?}", ede(&m));
        let m = q("near4.example.", RecordType::A).await;
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 1), "round {round}");
        assert_eq!(q("hit6.example.", RecordType::AAAA).await.metadata.response_code, ResponseCode::NXDomain);
        let m = q("near6.example.", RecordType::AAAA).await;
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 1));
        // the /32 with local data beats the /24 with NODATA
        let m = q("specific.example.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), vec![RData::A("192.0.2.99".parse().unwrap())]);
        let m = q("wide.example.", RecordType::A).await;
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0), "NODATA: {m:?}");
        // an address at the end of a CNAME chain
        assert_eq!(q("via-cname.example.", RecordType::A).await.metadata.response_code, ResponseCode::NXDomain);
    }
    srv.shutdown().await;
}

/// A config file for the `qalqan` commands that read the dump (no server needed).
fn command_config(dir: &std::path::Path, dump: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("q.toml");
    let upstream: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    std::fs::write(&cfg, config(upstream, &lists_toml(&dump.display().to_string(), ""), "")).unwrap();
    cfg
}

fn run(args: &[&str], cfg: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).arg("--config").arg(cfg).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn explain_prints_a_windows_1251_row_as_text_and_check_counts_addresses() {
    let Some(dump) = shared_data(DUMP) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = command_config(dir.path(), &dump);
    let (ok, out, err) = run(&["explain", "123.ej.ru"], &cfg);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("blocked"), "{out}");
    assert!(
        out.contains("rule:     176.56.182.155 | 87.239.187.242;123.ej.ru;http://123.ej.ru/;Генпрокуратура;Исорг-27/3-3420-14;2014-04-29"),
        "{out}"
    );
    assert!(out.contains(":85\n"), "source line: {out}");
    assert!(!out.contains('\u{fffd}'), "{out}");
    let (ok, out, err) = run(&["check"], &cfg);
    assert!(ok, "{out}{err}");
    assert!(out.contains(", enforced by DNS: 0 (ip_rules unset"), "{out}");
    assert!(out.contains("answer-IP rules active: 0"), "{out}");
}

/// The dump's distinct addresses, found independently: the address column
/// (values split on `|`) and IP-literal URL hosts.
fn dump_addresses(dump: &std::path::Path) -> BTreeSet<String> {
    let bytes = std::fs::read(dump).unwrap();
    let (text, _, _) = encoding_rs::WINDOWS_1251.decode(&bytes);
    let url_ip = regex::Regex::new(r"https?://(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?:[:/]|$|;|\s)").unwrap();
    let mut set = BTreeSet::new();
    for line in text.lines().skip(1) {
        let first = line.split(';').next().unwrap_or("");
        for v in first.split('|').map(str::trim).filter(|v| !v.is_empty()) {
            let net: ipnet::IpNet = v.parse().or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).unwrap();
            set.insert(if net.prefix_len() == net.max_prefix_len() { net.addr().to_string() } else { net.trunc().to_string() });
        }
        for c in url_ip.captures_iter(line) {
            set.insert(c[1].parse::<std::net::Ipv4Addr>().unwrap().to_string());
        }
    }
    set
}

#[test]
fn export_ips_lists_every_distinct_address_of_the_dump_once() {
    let Some(dump) = shared_data(DUMP) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = command_config(dir.path(), &dump);
    let (ok, out, err) = run(&["export", "--ips"], &cfg);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let got: BTreeSet<String> = lines.iter().map(|l| l.split('\t').next().unwrap().to_owned()).collect();
    assert_eq!(got.len(), lines.len(), "an address exported twice");
    let want = dump_addresses(&dump);
    assert_eq!(got.difference(&want).collect::<Vec<_>>(), Vec::<&String>::new(), "exported but not in the dump");
    assert_eq!(want.difference(&got).collect::<Vec<_>>(), Vec::<&String>::new(), "in the dump but not exported");
    // each line carries its decision: the first one listing the address
    assert!(lines.contains(&"136.243.253.129\t2-6-27/ 2016-02-03-20-АИ (ФНС)"), "{}", &out[..out.len().min(500)]);
    assert!(lines.iter().all(|l| l.contains('\t')), "every dump row has a decision");
    // one list by name; an unknown name is an error
    let (ok, by_name, _) = run(&["export", "--ips", "zapret"], &cfg);
    assert!(ok);
    assert_eq!(by_name, out);
    let (ok, _, err) = run(&["export", "--ips", "nope"], &cfg);
    assert!(!ok && err.contains("no list named `nope`"), "{err}");
}
