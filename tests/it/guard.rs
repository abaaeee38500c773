//! The collateral-damage guard (`[guard]`) over the wire: pushed updates
//! (PUT and PATCH) that would newly block a protected name are held
//! (`hold_all`) or applied without those lines (`apply_rest`), shown in
//! metrics and `GET /v1/lists`, written to the audit log, and released by
//! `POST /v1/lists/NAME/confirm`; a file the operator edits is not held;
//! and `qalqan diff` through the binary.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::sources::{admin_config, body, TOKEN};
use crate::support::*;

async fn rcode(addr: std::net::SocketAddr, n: &str) -> ResponseCode {
    udp(addr, n, RecordType::A, EDNS).await.unwrap().metadata.response_code
}

const NX: ResponseCode = ResponseCode::NXDomain;
const OK: ResponseCode = ResponseCode::NoError;

fn guard_config(dir: &std::path::Path, on_hit: &str) -> String {
    let protected = write_list(dir, "protected.txt", "# ours and the popular\nprotected.test\nwww.shop.test # by a parent rule\n");
    format!(
        "{}[guard]\nprotected = \"{protected}\"\non_hit = \"{on_hit}\"\n[log]\naudit = \"{}\"\n",
        admin_config(dir, &[]),
        dir.join("audit.jsonl").display()
    )
}

async fn metric(srv: &TestServer, series: &str) -> f64 {
    sample(&http_get(srv.http, "/metrics").await.1, series)
}

async fn lists_json(srv: &TestServer) -> serde_json::Value {
    let (s, text) = http_req(srv.admin, "GET", "/v1/lists", Some(TOKEN), &[], b"").await;
    assert_eq!(s, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["lists"].as_array().unwrap().iter().find(|l| l["list"] == "reg").cloned().unwrap()
}

const LIST: &str = "[[lists]]\nname = \"reg\"\nsource = \"push\"\n";

#[tokio::test]
async fn hold_all_holds_a_put_and_a_patch_until_confirmed() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(&config(up.addr, LIST, &guard_config(dir.path(), "hold_all"))).await;
    let adm = srv.admin;
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &[], body(&["a.test"]).as_bytes()).await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "a.test.").await, NX);
    let first = lists_json(&srv).await["version"].clone();

    // PUT: a protected name in it → 202, nothing of it enforced
    let put = body(&["a.test", "b.test", "protected.test"]);
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &[], put.as_bytes()).await;
    assert_eq!(s, 202, "{resp}");
    assert!(resp.contains("protected.test") && resp.contains("\"held\""), "{resp}");
    assert_eq!(rcode(srv.addr, "protected.test.").await, OK, "a held name still resolves");
    assert_eq!(rcode(srv.addr, "b.test.").await, OK, "hold_all: the rest is held too");
    assert_eq!(rcode(srv.addr, "a.test.").await, NX, "the version in force stays");
    assert_eq!(metric(&srv, "qalqan_guard_held_total{list=\"reg\"}").await, 1.0);
    assert_eq!(metric(&srv, "qalqan_guard_held_names{list=\"reg\"}").await, 1.0);
    let l = lists_json(&srv).await;
    assert_eq!(l["version"], first, "{l}");
    assert_eq!(l["held"]["names"], serde_json::json!(["protected.test"]), "{l}");
    assert_eq!(l["held"]["on_hit"], "hold_all", "{l}");
    assert!(l["held"]["since"].is_string() && l["held"]["version"].is_string(), "{l}");
    let diag = http_get(srv.http, "/lists").await.1;
    assert!(diag.contains("held_names=protected.test\theld_on_hit=hold_all"), "{diag}");
    // the same content again (a retry): still held, not counted twice
    let (s, _) = http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &[], put.as_bytes()).await;
    assert_eq!(s, 202);
    assert_eq!(metric(&srv, "qalqan_guard_held_total{list=\"reg\"}").await, 1.0);

    // confirmed: published as if the guard had passed it
    let (s, resp) = http_req(adm, "POST", "/v1/lists/reg/confirm", Some(TOKEN), &[], b"").await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "protected.test.").await, NX);
    assert_eq!(rcode(srv.addr, "b.test.").await, NX);
    assert_eq!(metric(&srv, "qalqan_guard_held_names{list=\"reg\"}").await, 0.0);
    assert_eq!(metric(&srv, "qalqan_guard_confirmed_total{list=\"reg\"}").await, 1.0);
    assert!(lists_json(&srv).await["held"].is_null());
    let (s, resp) = http_req(adm, "POST", "/v1/lists/reg/confirm", Some(TOKEN), &[], b"").await;
    assert_eq!(s, 409, "{resp}");
    assert!(resp.contains("nothing is held"), "{resp}");
    assert_eq!(http_req(adm, "POST", "/v1/lists/reg/confirm", None, &[], b"").await.0, 401, "same auth as other writes");
    assert_eq!(http_req(adm, "POST", "/v1/lists/nope/confirm", Some(TOKEN), &[], b"").await.0, 404);

    // PATCH (the delta path): a parent of a protected name
    let (s, resp) = http_req(adm, "PATCH", "/v1/lists/reg", Some(TOKEN), &[], b"+shop.test\n+c.test\n").await;
    assert_eq!(s, 202, "{resp}");
    assert!(resp.contains("www.shop.test"), "{resp}");
    assert_eq!(rcode(srv.addr, "www.shop.test.").await, OK);
    assert_eq!(rcode(srv.addr, "c.test.").await, OK);
    assert_eq!(metric(&srv, "qalqan_guard_held_total{list=\"reg\"}").await, 2.0);
    let (s, resp) = http_req(adm, "POST", "/v1/lists/reg/confirm", Some(TOKEN), &[], b"").await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "www.shop.test.").await, NX);
    assert_eq!(rcode(srv.addr, "c.test.").await, NX);
    // the confirmed PATCH is the push in force: the next one applies to it
    let (s, resp) = http_req(adm, "PATCH", "/v1/lists/reg", Some(TOKEN), &[], b"-c.test\n").await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "c.test.").await, OK);
    assert_eq!(rcode(srv.addr, "shop.test.").await, NX);
    assert!(metric(&srv, "qalqan_list_updates_total{kind=\"delta\",list=\"reg\"}").await >= 1.0, "PATCHes go by delta with the guard on");

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(audit.matches("\"guard held\"").count(), 2, "{audit}");
    assert_eq!(audit.matches("\"guard confirmed\"").count(), 2, "{audit}");
    srv.shutdown().await;
}

#[tokio::test]
async fn apply_rest_enforces_the_rest_and_keeps_the_lines_out_across_a_restart() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(up.addr, LIST, &guard_config(dir.path(), "apply_rest"));
    let srv = TestServer::start(&cfg).await;
    let adm = srv.admin;
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &[], body(&["a.test"]).as_bytes()).await;
    assert_eq!(s, 200, "{resp}");
    let put = body(&["a.test", "b.test", "protected.test"]);
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &[], put.as_bytes()).await;
    assert_eq!(s, 200, "apply_rest: the update is applied: {resp}");
    assert!(resp.contains("rules_left_out") && resp.contains("protected.test"), "{resp}");
    assert_eq!(rcode(srv.addr, "b.test.").await, NX, "the rest is enforced");
    assert_eq!(rcode(srv.addr, "protected.test.").await, OK, "the protected name is not");
    assert_eq!(metric(&srv, "qalqan_guard_held_total{list=\"reg\"}").await, 1.0);
    // PATCH: a parent rule of a protected name, with another name
    let (s, resp) = http_req(adm, "PATCH", "/v1/lists/reg", Some(TOKEN), &[], b"+shop.test\n+d.test\n").await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "d.test.").await, NX);
    assert_eq!(rcode(srv.addr, "shop.test.").await, OK, "the whole rule is left out, not only the protected name");
    assert_eq!(rcode(srv.addr, "www.shop.test.").await, OK);
    assert_eq!(rcode(srv.addr, "protected.test.").await, OK);
    let l = lists_json(&srv).await;
    assert_eq!(l["held"]["names"], serde_json::json!(["protected.test", "www.shop.test"]), "{l}");
    let rules: Vec<&str> = l["held"]["rules_left_out"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["protected.test", "shop.test"], "{l}");
    srv.shutdown().await;

    // a restart serves the persisted push without the lines, still held
    let srv = TestServer::start(&cfg).await;
    assert_eq!(rcode(srv.addr, "d.test.").await, NX);
    assert_eq!(rcode(srv.addr, "protected.test.").await, OK, "a restart must not enforce what was never confirmed");
    assert_eq!(rcode(srv.addr, "www.shop.test.").await, OK);
    assert_eq!(lists_json(&srv).await["held"]["names"], serde_json::json!(["protected.test", "www.shop.test"]));
    let (s, resp) = http_req(srv.admin, "POST", "/v1/lists/reg/confirm", Some(TOKEN), &[], b"").await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "protected.test.").await, NX);
    assert_eq!(rcode(srv.addr, "www.shop.test.").await, NX);
    assert!(lists_json(&srv).await["held"].is_null());
    srv.shutdown().await;
    let srv = TestServer::start(&cfg).await;
    assert_eq!(rcode(srv.addr, "protected.test.").await, NX, "confirmed stays confirmed after a restart");
    srv.shutdown().await;
}

/// A file list is edited by the operator: trusted, never held.
#[tokio::test]
async fn a_local_file_change_is_not_held() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_list(dir.path(), "local.txt", "a.test\n");
    let lists = format!("[[lists]]\nname = \"local\"\nsource = \"{file}\"\n");
    let srv = TestServer::start(&config(up.addr, &lists, &guard_config(dir.path(), "hold_all"))).await;
    assert_eq!(rcode(srv.addr, "protected.test.").await, OK);
    std::fs::write(&file, "a.test\nprotected.test\n").unwrap();
    let (s, resp) = http_req(srv.admin, "POST", "/v1/lists/local/reload", Some(TOKEN), &[], b"").await;
    assert_eq!(s, 200, "{resp}");
    assert!(eventually(Duration::from_secs(5), || async { rcode(srv.addr, "protected.test.").await == NX }).await);
    assert_eq!(metric(&srv, "qalqan_guard_held_total{list=\"local\"}").await, 0.0);
    assert_eq!(metric(&srv, "qalqan_guard_protected_names").await, 2.0);
    srv.shutdown().await;
}

fn qalqan(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qalqan")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn diff_prints_added_removed_and_newly_blocked_popular_names() {
    let dir = tempfile::tempdir().unwrap();
    let old = write_list(dir.path(), "old.txt", "||ads.test^\n||track.test^\n@@||ok.ads.test^\n");
    let new = write_list(dir.path(), "new.txt", "! adblock\n||ads.test^\n||shop.test^\n||news.test^\n@@||ok.ads.test^\n");
    let popular = write_list(dir.path(), "popular.csv", "1,www.shop.test\n2,ok.ads.test\n3,track.test\n4,news.test\nnot a name\n");
    let (code, out, err) = qalqan(&["diff", &old, &new, "--popular", &popular]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!("--- {old} (3 rules)"),
            format!("+++ {new} (4 rules)"),
            format!("-track.test\t{old}:2"),
            format!("+shop.test\t{new}:3"),
            format!("+news.test\t{new}:4"),
            "rules added: 2, removed: 1".to_owned(),
            format!("newly blocked popular names: 2 of 4 in {popular} (1 lines not names, skipped)"),
            format!("!www.shop.test\tby shop.test at {new}:3"),
            format!("!news.test\tby news.test at {new}:4"),
        ],
        "{out}"
    );
    assert!(err.contains("format adblock"), "{err}");
    // the other way round: track.test comes back
    let (code, out, _) = qalqan(&["diff", &new, &old, "--popular", &popular, "--format", "adblock"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("newly blocked popular names: 1 of 4") && out.contains("!track.test\tby track.test"), "{out}");
    // nothing newly blocked: 0
    let (code, out, _) = qalqan(&["diff", &old, &old, "--popular", &popular]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rules added: 0, removed: 0") && out.contains("newly blocked popular names: 0 of 4"), "{out}");
    let (code, _, err) = qalqan(&["diff", &old, &dir.path().join("missing").display().to_string()]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = qalqan(&["diff", &old, &new, "--format", "nonsense"]);
    assert_eq!(code, 2, "{err}");
}

/// An HTTP pull is a remote channel: held; the next pulls of the same
/// content neither rebuild nor count again; a confirm publishes it.
#[tokio::test]
async fn an_http_pull_is_held_once_and_confirmed() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let web = ListServer::start(&body(&["first.test"])).await;
    let lists = format!("[[lists]]\nname = \"reg\"\nsource = \"http://{}/list.txt\"\nallow_insecure = true\nrefresh_s = 1\n", web.addr);
    let srv = TestServer::start(&config(up.addr, &lists, &guard_config(dir.path(), "hold_all"))).await;
    assert!(eventually(Duration::from_secs(4), || async { rcode(srv.addr, "first.test.").await == NX }).await, "first pull");
    web.set(200, "text/plain", &body(&["first.test", "second.test", "protected.test"]), Some("\"v2\""));
    assert!(eventually(Duration::from_secs(4), || async { metric(&srv, "qalqan_guard_held_total{list=\"reg\"}").await == 1.0 }).await);
    tokio::time::sleep(Duration::from_millis(2500)).await; // two more pulls of the held version
    assert_eq!(metric(&srv, "qalqan_guard_held_total{list=\"reg\"}").await, 1.0, "held once, not per pull");
    assert_eq!(rcode(srv.addr, "protected.test.").await, OK);
    assert_eq!(rcode(srv.addr, "second.test.").await, OK);
    assert_eq!(lists_json(&srv).await["held"]["names"], serde_json::json!(["protected.test"]));
    let (s, resp) = http_req(srv.admin, "POST", "/v1/lists/reg/confirm", Some(TOKEN), &[], b"").await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "protected.test.").await, NX);
    assert_eq!(rcode(srv.addr, "second.test.").await, NX);
    tokio::time::sleep(Duration::from_millis(1500)).await; // the next pull: same content, in force
    assert_eq!(rcode(srv.addr, "protected.test.").await, NX, "a pull after the confirm keeps it");
    assert!(lists_json(&srv).await["held"].is_null());
    srv.shutdown().await;
}
