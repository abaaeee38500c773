//! Regulator workflow (issue #24) over the wire: shadow lists.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

fn shadow_config(up: std::net::SocketAddr, enforced: &str, candidate: &str, mode: &str) -> String {
    config(
        up,
        &format!(
            r#"
[[lists]]
name = "regulator"
source = "{enforced}"
[[lists]]
name = "candidate"
source = "{candidate}"
mode = "{mode}"
"#
        ),
        "",
    )
}

/// A name on a shadow list is answered from the upstream (and from the cache
/// the second time), each query counted in `qalqan_shadow_hits_total`;
/// `/explain` shows the hit apart from the verdict; the same config with
/// `mode = "enforce"` blocks the name.
#[tokio::test]
async fn shadow_hits_are_counted_and_answered_then_enforced_after_promotion() {
    let up = Upstream::start().await;
    up.set("trial.test.", RecordType::A, Canned::Answer(vec![a("trial.test.", 300, "198.51.100.5")]));
    up.set("www.trial.test.", RecordType::A, Canned::Answer(vec![a("www.trial.test.", 300, "198.51.100.6")]));
    let dir = tempfile::tempdir().unwrap();
    let enforced = write_list(dir.path(), "reg.txt", "bad.test\n");
    // enough rules that a one-line edit is published as a delta
    let filler: String = (0..400).map(|i| format!("filler{i}.test\n")).collect();
    let candidate = write_list(dir.path(), "cand.txt", &format!("# candidate\ntrial.test\nbad.test\n{filler}"));
    let log = dir.path().join("blocked.jsonl");
    let srv = TestServer::start(&format!("[log]\nblocked = \"{}\"\n{}", log.display(), shadow_config(up.addr, &enforced, &candidate, "shadow"))).await;
    let series = r#"qalqan_shadow_hits_total{list="candidate"}"#;

    // answered normally, twice over UDP (the second from the cache) and once over TCP
    for _ in 0..2 {
        let m = udp(srv.addr, "trial.test.", RecordType::A, EDNS).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1, "{:?}", m.answers);
        assert!(ede(&m).is_empty(), "{:?}", ede(&m));
    }
    let m = tcp(srv.addr, "www.trial.test.", RecordType::A, EDNS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(up.count(), 2, "one upstream query per name; the repeat came from the cache");
    assert_eq!(sample(&srv.metrics.encode(), series), 3.0, "every query counted, cache hits included");
    // a name on both lists: the enforced list blocks it, the shadow list counts it
    let m = udp(srv.addr, "bad.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ede(&m), vec![(15, "blocked by list regulator".to_owned())]);
    let text = srv.metrics.encode();
    assert_eq!(sample(&text, series), 4.0);
    assert_eq!(sample(&text, r#"qalqan_blocked_total{list="candidate"}"#), 0.0, "{text}");
    // a name on no list is not counted
    udp(srv.addr, "other.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(sample(&srv.metrics.encode(), series), 4.0);

    let (_, lists_text) = http_get(srv.http, "/lists").await;
    assert!(lists_text.lines().any(|l| l.starts_with("candidate\t") && l.ends_with("\tmode=shadow")), "{lists_text}");
    assert!(!lists_text.lines().any(|l| l.starts_with("regulator\t") && l.contains("mode=shadow")), "{lists_text}");
    // logged in the blocked-query log, marked as shadow hits
    let shadow_lines = || std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains(r#""shadow":true"#)).map(str::to_owned).collect::<Vec<_>>();
    assert!(eventually(std::time::Duration::from_secs(3), || async { shadow_lines().len() == 4 }).await, "{:?}", shadow_lines());
    let lines = shadow_lines();
    assert!(lines[0].contains(r#""qname":"trial.test""#) && lines[0].contains(r#""list":"candidate""#) && lines[0].contains("cand.txt:2"), "{lines:?}");
    assert!(lines[2].contains(r#""protocol":"tcp""#), "{lines:?}");

    let (status, ex) = http_get(srv.http, "/explain?name=www.trial.test").await;
    assert_eq!(status, 200);
    assert!(ex.starts_with("pass"), "the verdict is that of the enforced lists: {ex}");
    let shadow = ex.split_once("shadow (not enforced)").map(|(_, s)| s).unwrap_or_else(|| panic!("no shadow section: {ex}"));
    assert!(shadow.contains("list:     candidate") && shadow.contains("cand.txt:2") && shadow.contains("rule:     trial.test"), "{ex}");
    let (_, ex) = http_get(srv.http, "/explain?name=bad.test").await;
    assert!(ex.starts_with("blocked") && ex.contains("list:     regulator") && ex.contains("shadow (not enforced)\n  list:     candidate"), "{ex}");

    // a file edit published as a delta: the added rule is a shadow rule too
    up.set("later.test.", RecordType::A, Canned::Answer(vec![a("later.test.", 300, "198.51.100.7")]));
    std::fs::write(dir.path().join("cand.txt"), format!("# candidate\ntrial.test\nbad.test\n{filler}later.test\n")).unwrap();
    let before = sample(&srv.metrics.encode(), series);
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            udp(srv.addr, "later.test.", RecordType::A, EDNS).await.is_some_and(|m| m.metadata.response_code == ResponseCode::NoError && m.answers.len() == 1)
                && sample(&srv.metrics.encode(), series) > before
        })
        .await,
        "a shadow rule added by delta is counted, never enforced"
    );
    let text = srv.metrics.encode();
    assert!(text.contains(r#"qalqan_list_updates_total{kind="delta",list="candidate"} 1"#), "{text}");
    let before = sample(&text, series);
    udp(srv.addr, "trial.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(sample(&srv.metrics.encode(), series), before + 1.0);

    // promoted at run time (what SIGHUP does with a re-read config): the
    // cached answer is re-decided, the name blocked by the candidate list
    let changed = srv.lists.set_modes(&[("candidate".into(), qalqan::rules::ListMode::Enforce), ("regulator".into(), qalqan::rules::ListMode::Enforce)]);
    assert_eq!(changed, ["candidate"]);
    let m = udp(srv.addr, "trial.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ede(&m), vec![(15, "blocked by list candidate".to_owned())]);
    let after_promotion = sample(&srv.metrics.encode(), series);
    // and back to shadow: answered again
    assert_eq!(srv.lists.set_modes(&[("candidate".into(), qalqan::rules::ListMode::Shadow)]), ["candidate"]);
    let m = udp(srv.addr, "trial.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(sample(&srv.metrics.encode(), series), after_promotion + 1.0);
    srv.shutdown().await;

    // promoted: the same lists with mode = "enforce"
    let srv = TestServer::start(&shadow_config(up.addr, &enforced, &candidate, "enforce")).await;
    let m = udp(srv.addr, "trial.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ede(&m), vec![(15, "blocked by list candidate".to_owned())]);
    let text = srv.metrics.encode();
    assert_eq!(sample(&text, r#"qalqan_blocked_total{list="candidate"}"#), 1.0, "{text}");
    assert_eq!(sample(&text, series), 0.0);
    let (_, ex) = http_get(srv.http, "/explain?name=trial.test").await;
    assert!(ex.starts_with("blocked") && !ex.contains("shadow"), "{ex}");
    srv.shutdown().await;
}

/// Only block lists can be shadow lists: the config names the key.
#[test]
fn a_shadow_allow_list_is_a_config_error() {
    let toml = r#"
[upstream]
servers = ["127.0.0.1:53"]
[[lists]]
name = "ok"
source = "ok.txt"
kind = "allow"
mode = "shadow"
"#;
    let e = qalqan::config::Config::from_toml_str(toml, "test.toml").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("lists[0].mode") && e.contains("only block lists"), "{e}");
}

/// The audit log as the server writes it: a `started` line, then one line
/// per list update; `qalqan audit verify` accepts the chain, and after one
/// line is edited names the line where the chain breaks.
/// A forwarded answer the UDP fast path does not serve itself (a CNAME to
/// a blocked name: the hickory path builds the blocked answer) is handed
/// over after the fast path counted the query's shadow hit and took its
/// rate-limit token: neither happens twice.
#[tokio::test]
async fn a_query_handed_from_the_fast_path_counts_its_shadow_hit_and_token_once() {
    let up = Upstream::start().await;
    up.set("alias.test.", RecordType::A, Canned::Answer(vec![cname("alias.test.", 300, "bad.test."), a("bad.test.", 300, "198.51.100.9")]));
    up.set("kept.test.", RecordType::A, Canned::Answer(vec![a("kept.test.", 300, "198.51.100.10")]));
    let dir = tempfile::tempdir().unwrap();
    let enforced = write_list(dir.path(), "reg.txt", "bad.test\n");
    let candidate = write_list(dir.path(), "cand.txt", "alias.test\nkept.test\n");
    // 3 queries and no burst beyond that: a query charged twice leaves the third refused
    let limits = "[limits]\nper_client_qps = 3\nburst = 3\n";
    let srv = TestServer::start(&format!("{limits}{}", shadow_config(up.addr, &enforced, &candidate, "shadow"))).await;
    let series = r#"qalqan_shadow_hits_total{list="candidate"}"#;
    let m = udp(srv.addr, "alias.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "the CNAME target is blocked: {m:?}");
    assert_eq!(sample(&srv.metrics.encode(), series), 1.0, "the handed-over query was counted twice");
    let m = udp(srv.addr, "kept.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.answers.len(), 1, "{:?}", m.answers);
    let m = udp(srv.addr, "kept.test.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "a token was taken twice: {m:?}");
    assert_eq!(m.answers.len(), 1, "{:?}", m.answers);
    let text = srv.metrics.encode();
    assert_eq!(sample(&text, series), 3.0, "{text}");
    assert_eq!(sample(&text, "qalqan_rate_limited_total"), 0.0, "{text}");
    srv.shutdown().await;
}

#[tokio::test]
async fn the_audit_log_is_a_hash_chain_the_cli_verifies() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), "reg.txt", "old.test\n");
    let audit = dir.path().join("audit.jsonl");
    let extra = format!("[log]\naudit = \"{}\"\n", audit.display());
    let lists = format!("[[lists]]\nname = \"reg\"\nsource = \"{list}\"\n");
    let srv = TestServer::start(&config(up.addr, &lists, &extra)).await;
    let addr = srv.addr;
    let blocked = |n: &'static str| async move {
        udp(addr, n, RecordType::A, EDNS).await.is_some_and(|m| m.metadata.response_code == ResponseCode::NXDomain)
    };
    assert!(eventually(std::time::Duration::from_secs(3), || blocked("old.test.")).await);
    for (i, body) in ["old.test\nnew1.test\n", "new2.test\n"].iter().enumerate() {
        let tmp = dir.path().join("reg.txt.new");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, dir.path().join("reg.txt")).unwrap();
        let name = if i == 0 { "new1.test." } else { "new2.test." };
        assert!(eventually(std::time::Duration::from_secs(5), || blocked(name)).await, "{name}");
    }
    srv.shutdown().await;

    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains(r#""event":"started""#) && lines[0].contains(qalqan::audit::GENESIS), "{text}");
    assert!(lines[1].contains(r#""event":"list updated""#) && lines[1].contains(r#""new_rules":2"#), "{text}");
    assert!(lines[2].contains(r#""new_rules":1"#), "{text}");

    let verify = |path: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qalqan")).args(["audit", "verify"]).arg(path).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = verify(&audit);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("chain intact, 3 lines, head "), "{out}");

    // a rule count rewritten in line 2: line 3 no longer carries its hash
    let edited = text.replacen(r#""new_rules":2"#, r#""new_rules":9"#, 1);
    assert_ne!(edited, text);
    std::fs::write(&audit, &edited).unwrap();
    let (code, out) = verify(&audit);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("audit.jsonl:3: chain broken"), "{out}");

    // a restart continues the chain from the last line (here: the edited file's)
    std::fs::write(&audit, &text).unwrap();
    let srv = TestServer::start(&config(up.addr, &lists, &extra)).await;
    srv.shutdown().await;
    let (code, out) = verify(&audit);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("chain intact, 4 lines"), "{out}");
}

/// A registry `dump.xml` in the shape the registry publishes: Windows-1251,
/// `<content>` entries of every blockType with decisions, CDATA values,
/// IDN names, URLs with and without paths, addresses and subnets. `n`
/// entries of each kind (numbered), plus fixed ones the tests query.
fn registry_dump(n: usize) -> Vec<u8> {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"windows-1251\"?>\n<reg:register updateTime=\"2026-12-01T10:00:00+03:00\" \
         updateTimeUrgently=\"2026-12-01T09:00:00+03:00\" formatVersion=\"2.4\" xmlns:reg=\"http://rsoc.ru\" xmlns:tns=\"http://rsoc.ru\">\n",
    );
    let mut id = 0;
    let mut entry = |x: &mut String, block_type: Option<&str>, urgent: bool, body: &str| {
        id += 1;
        let bt = block_type.map(|b| format!(" blockType=\"{b}\"")).unwrap_or_default();
        let urg = if urgent { " urgencyType=\"1\"" } else { "" };
        x.push_str(&format!(
            "<content id=\"{id}\" includeTime=\"2016-02-03T20:00:00\" entryType=\"1\"{bt}{urg} hash=\"{:032X}\">\n\
             <decision date=\"2016-02-03\" number=\"2-6-27/ 2016-02-03-{id}-АИ\" org=\"ФНС\"/>\n{body}</content>\n",
            id * 7919
        ));
    };
    entry(&mut x, Some("domain"), true, "<domain><![CDATA[казино-пример.рф]]></domain>\n");
    entry(&mut x, Some("domain"), false, "<domain><![CDATA[exact.example]]></domain>\n<ip>192.0.2.10</ip>\n");
    entry(&mut x, Some("domain-mask"), false, "<domain><![CDATA[*.mask.example]]></domain>\n");
    entry(
        &mut x,
        None,
        false,
        "<url><![CDATA[http://shared.example/forbidden/page.html?id=1&x=2]]></url>\n<domain><![CDATA[shared.example]]></domain>\n<ip>192.0.2.11</ip>\n",
    );
    entry(&mut x, Some("default"), false, "<url><![CDATA[https://whole.example/]]></url>\n<domain><![CDATA[whole.example]]></domain>\n");
    entry(&mut x, Some("ip"), false, "<ip>203.0.113.7</ip>\n<ipSubnet>198.51.100.0/24</ipSubnet>\n");
    for i in 0..n {
        entry(&mut x, Some("domain"), i % 10 == 0, &format!("<domain><![CDATA[site{i}.example]]></domain>\n<ip>10.0.{}.{}</ip>\n", i / 250, i % 250));
        entry(&mut x, Some("domain-mask"), false, &format!("<domain><![CDATA[*.mask{i}.example]]></domain>\n"));
        entry(&mut x, None, false, &format!("<url><![CDATA[http://page{i}.example/path/{i}]]></url>\n<domain><![CDATA[page{i}.example]]></domain>\n"));
        entry(&mut x, Some("ip"), false, &format!("<ip>10.1.{}.{}</ip>\n", i / 250, i % 250));
    }
    x.push_str("</reg:register>\n");
    encoding_rs::WINDOWS_1251.encode(&x).0.into_owned()
}

/// The dump loaded as `format = "registry-xml"`: each blockType enforced as
/// far as DNS can, IDN names as punycode, the decision in the EDE text;
/// `qalqan check` and `/lists` count the entries per blockType and by how
/// DNS enforces them.
#[tokio::test]
async fn a_registry_xml_dump_is_enforced_and_counted_per_block_type() {
    let up = Upstream::start().await;
    for n in ["sub.exact.example.", "mask.example.", "www.shared.example."] {
        up.set(n, RecordType::A, Canned::Answer(vec![a(n, 300, "198.51.100.50")]));
    }
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.xml");
    std::fs::write(&dump, registry_dump(200)).unwrap();
    let lists = format!("[[lists]]\nname = \"zapret\"\nsource = \"{}\"\nformat = \"registry-xml\"\nede = 16\n", dump.display());
    let toml = config(up.addr, &lists, "");
    let srv = TestServer::start(&toml).await;
    let addr = srv.addr;
    let rcode = |n: &'static str| async move { udp(addr, n, RecordType::A, EDNS).await.unwrap().metadata.response_code };
    for blocked in ["xn----7sbqgfbjvgkmmd.xn--p1ai.", "exact.example.", "www.mask.example.", "a.b.mask7.example.", "shared.example.", "whole.example.", "x.whole.example.", "page199.example.", "site0.example."] {
        assert_eq!(rcode(blocked).await, ResponseCode::NXDomain, "{blocked}");
    }
    // domain: exactly that name; a URL with a path: its host exactly
    for passed in ["sub.exact.example.", "www.shared.example."] {
        assert_eq!(rcode(passed).await, ResponseCode::NoError, "{passed}");
    }
    let m = udp(srv.addr, "exact.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(ede(&m), vec![(16, "blocked by list zapret; decision 2-6-27/ 2016-02-03-2-АИ (ФНС)".to_owned())]);
    let (_, lists_text) = http_get(srv.http, "/lists").await;
    assert!(
        lists_text.contains("entries: blockType=default: 202, blockType=domain: 202, blockType=domain-mask: 201, blockType=ip: 201, enforced: 404, host-level: 201, not enforceable by DNS: 201, urgent: 21"),
        "{lists_text}"
    );
    srv.shutdown().await;

    let cfg = dir.path().join("qalqan.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qalqan")).args(["check", "--config"]).arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("  entries: blockType=default: 202, blockType=domain: 202, blockType=domain-mask: 201, blockType=ip: 201, enforced: 404, host-level: 201, not enforceable by DNS: 201"), "{stdout}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qalqan")).args(["export", "--ips", "--config"]).arg(&cfg).output().unwrap();
    let ips = String::from_utf8_lossy(&out.stdout);
    assert!(ips.contains("203.0.113.7\t2-6-27/ 2016-02-03-6-АИ (ФНС)") && ips.contains("198.51.100.0/24\t"), "{ips}");
}
