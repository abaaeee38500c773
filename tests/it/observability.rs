//! The operator endpoint over HTTP: counters move by exactly the queries
//! sent, /readyz follows upstream health, promtool accepts the output.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::*;

#[tokio::test]
async fn counters_move_by_exactly_the_queries_sent() {
    let up = Upstream::start().await;
    up.set("ok.example.", RecordType::A, Canned::Answer(vec![a("ok.example.", 300, "198.51.100.1")]));
    let dir = tempfile::tempdir().unwrap();
    let block = write_list(dir.path(), "b.txt", "bad.test\n");
    let lists = format!("[[lists]]\nname = \"reg\"\nsource = \"{block}\"\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let (_, before) = http_get(srv.http, "/metrics").await;
    for _ in 0..3 {
        udp(srv.addr, "bad.test.", RecordType::A, EDNS).await.unwrap();
    }
    udp(srv.addr, "ok.example.", RecordType::A, EDNS).await.unwrap(); // forwarded
    udp(srv.addr, "ok.example.", RecordType::A, EDNS).await.unwrap(); // cached
    tcp(srv.addr, "ok.example.", RecordType::A, EDNS).await; // cached, tcp
    let hdr = [0x12, 0x34, 0x01, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0]; // qdcount 0
    udp_raw(srv.addr, &hdr, Duration::from_secs(1)).await.unwrap();
    let (status, after) = http_get(srv.http, "/metrics").await;
    assert_eq!(status, 200);
    let d = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(d(r#"qalqan_queries_total{outcome="blocked",protocol="udp"}"#), 3.0, "{after}");
    assert_eq!(d(r#"qalqan_queries_total{outcome="forwarded",protocol="udp"}"#), 1.0);
    assert_eq!(d(r#"qalqan_queries_total{outcome="cached",protocol="udp"}"#), 1.0);
    assert_eq!(d(r#"qalqan_queries_total{outcome="cached",protocol="tcp"}"#), 1.0);
    assert_eq!(d(r#"qalqan_queries_total{outcome="formerr",protocol="udp"}"#), 1.0);
    assert_eq!(d(r#"qalqan_blocked_total{list="reg"}"#), 3.0);
    assert_eq!(d("qalqan_cache_hits_total"), 2.0);
    assert_eq!(d("qalqan_cache_misses_total"), 1.0);
    assert_eq!(d(&format!(r#"qalqan_upstream_requests_total{{result="ok",server="{}"}}"#, up.addr)), 1.0);
    assert_eq!(sample(&after, r#"qalqan_list_rules{list="reg"}"#), 1.0);
    assert!(sample(&after, "qalqan_cache_entries") >= 1.0);
    assert!(after.contains("process_resident_memory_bytes"));
    assert!(!after.contains("ok.example"), "names never become labels");

    // promtool (Debian package `prometheus`, installed by tests/run.sh) accepts it
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, &after).unwrap();
    match std::process::Command::new("promtool").args(["check", "metrics"]).stdin(std::fs::File::open(&path).unwrap()).output() {
        Ok(out) => assert!(out.status.success(), "promtool: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        Err(_) if std::env::var_os("CI").is_none() => eprintln!("skipping promtool check: not installed (tests/run.sh installs it)"),
        Err(e) => panic!("promtool missing in CI: {e}"),
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let up = Upstream::start().await;
    let srv = TestServer::start(&config(up.addr, "", "")).await;
    assert_eq!(http_get(srv.http, "/healthz").await.0, 200);
    let addr = srv.http;
    assert!(eventually(Duration::from_secs(2), || async move { http_get(addr, "/readyz").await.0 == 200 }).await);
    assert_eq!(http_get(srv.http, "/nope").await.0, 404);
    let (s, body) = http_get(srv.http, "/explain?name=x.example").await;
    assert_eq!((s, body.trim()), (200, "pass"));
    srv.shutdown().await;
}

#[tokio::test]
async fn readyz_fails_when_every_upstream_is_dead() {
    let dead = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(dead.local_addr().unwrap(), "", "").replace("timeout_ms = 1000", "timeout_ms = 200");
    let srv = TestServer::start(&cfg).await;
    for i in 0..3 {
        udp(srv.addr, &format!("q{i}.example."), RecordType::A, EDNS).await.unwrap();
    }
    let (status, body) = http_get(srv.http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("upstream"), "{body}");
    srv.shutdown().await;
}

#[tokio::test]
async fn blocked_queries_are_logged_as_json_lines_with_anonymised_clients() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let block = write_list(dir.path(), "b.txt", "# list\nbad.test\n");
    let log_path = dir.path().join("blocked.jsonl");
    for (how, want_client) in [("truncate", "127.0.0.0"), ("hash", "h:"), ("none", "127.0.0.1")] {
        let _ = std::fs::remove_file(&log_path);
        let extra = format!("[log]\nblocked = \"{}\"\nanonymize = \"{how}\"\n", log_path.display());
        let lists = format!("[[lists]]\nname = \"reg\"\nsource = \"{block}\"\nede = 16\n");
        let srv = TestServer::start(&config(up.addr, &lists, &extra)).await;
        udp(srv.addr, "x.bad.test.", RecordType::AAAA, EDNS).await.unwrap();
        udp(srv.addr, "allowed.example.", RecordType::A, EDNS).await.unwrap();
        let p = log_path.clone();
        assert!(
            eventually(Duration::from_secs(3), || {
                let p = p.clone();
                async move { std::fs::read_to_string(&p).map(|t| !t.is_empty()).unwrap_or(false) }
            })
            .await,
            "no log line written"
        );
        let text = std::fs::read_to_string(&log_path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "only the blocked query is logged: {text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["qname"], "x.bad.test");
        assert_eq!(v["qtype"], "AAAA");
        assert_eq!(v["list"], "reg");
        assert_eq!(v["rule"], format!("{block}:2"));
        assert_eq!(v["action"], "nxdomain");
        assert_eq!(v["ede"], 16);
        assert_eq!(v["protocol"], "udp");
        let client = v["client"].as_str().unwrap();
        assert!(client.starts_with(want_client), "{how}: {client}");
        if how == "hash" {
            assert!(!client.contains("127."), "{client}");
        }
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        srv.shutdown().await;
    }
}
