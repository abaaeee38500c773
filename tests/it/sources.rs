//! Live list sources over the wire: HTTP pull (ETag/304, errors keep the last
//! good list, persisted copy on restart) and the push API (tokens,
//! signatures, replays, PATCH), with a query loop that must never fail.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

async fn rcode(addr: std::net::SocketAddr, n: &str) -> ResponseCode {
    udp(addr, n, RecordType::A, EDNS).await.unwrap().metadata.response_code
}

async fn blocked_within(addr: std::net::SocketAddr, n: &'static str, secs: u64) -> bool {
    eventually(Duration::from_secs(secs), || async move { rcode(addr, n).await == ResponseCode::NXDomain }).await
}

/// Queries in a loop until stopped; counts replies that are missing or SERVFAIL.
fn query_loop(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, failures: Arc<AtomicUsize>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut sent = 0;
        while !stop.load(Ordering::SeqCst) {
            let (_, q) = query_bytes("steady.example.", RecordType::A, EDNS);
            sent += 1;
            match udp_raw(addr, &q, Duration::from_secs(2)).await {
                Some(r) if r[3] & 0x0f != 2 => {}
                _ => {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        sent
    })
}

pub fn body(names: &[&str]) -> String {
    let mut b = String::from("# served by the test\n");
    for i in 0..50 {
        b.push_str(&format!("base{i}.test\n"));
    }
    for n in names {
        b.push_str(n);
        b.push('\n');
    }
    b
}

#[tokio::test]
async fn http_source_pulls_updates_and_keeps_last_good() {
    let up = Upstream::start().await;
    let web = ListServer::start(&body(&["first.test"])).await;
    let state = tempfile::tempdir().unwrap();
    let extra = format!("[state]\ndir = \"{}\"\n", state.path().display());
    let lists = format!("[[lists]]\nname = \"web\"\nsource = \"http://{}/list.txt\"\nallow_insecure = true\nrefresh_s = 1\n", web.addr);
    let srv = TestServer::start(&config(up.addr, &lists, &extra)).await;
    let addr = srv.addr;
    assert!(blocked_within(addr, "first.test.", 3).await, "fetched before ready");
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let looper = query_loop(addr, stop.clone(), failures.clone());

    // unchanged content: conditional request answered 304
    let nm = web.not_modified.clone();
    assert!(eventually(Duration::from_secs(4), || { let nm = nm.clone(); async move { nm.load(Ordering::SeqCst) > 0 } }).await, "ETag 304 path used");

    // a new version is enforced on the next pull
    web.set(200, "text/plain", &body(&["first.test", "second.test"]), Some("\"v2\""));
    assert!(blocked_within(addr, "second.test.", 4).await);

    // bad versions never replace the list
    for (status, ctype, b) in [
        (500, "text/plain", "oops".to_owned()),
        (200, "text/html", "<html><body>maintenance</body></html>".to_owned()),
        (200, "text/plain", "<!DOCTYPE html><html></html>".to_owned()),
        (200, "text/plain", String::new()),
        (200, "text/plain", "# only a comment now\n".to_owned()),
    ] {
        let before = web_errors(&srv);
        web.set(status, ctype, &b, Some("\"bad\""));
        assert!(eventually(Duration::from_secs(5), || async { web_errors(&srv) > before }).await, "{status} {ctype} {b:?} rejected");
        assert_eq!(rcode(addr, "second.test.").await, ResponseCode::NXDomain, "kept after {status} {ctype} {b:?}");
    }
    let m = http_get(srv.http, "/metrics").await.1;
    assert!(sample(&m, r#"qalqan_list_reloads_total{list="web",result="error"}"#) >= 5.0, "{m}");

    // the source goes away: still enforced
    let before = web_errors(&srv);
    web.stop();
    assert!(eventually(Duration::from_secs(5), || async { web_errors(&srv) > before }).await, "the failed pull is counted");
    assert_eq!(rcode(addr, "second.test.").await, ResponseCode::NXDomain);
    stop.store(true, Ordering::SeqCst);
    let sent = looper.await.unwrap();
    assert!(sent > 20);
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no query failed during updates");
    srv.shutdown().await;

    // restart with the source down: the persisted copy is served
    assert!(state.path().join("web.list").exists());
    let srv = TestServer::start(&config(up.addr, &lists, &extra)).await;
    assert_eq!(rcode(srv.addr, "second.test.").await, ResponseCode::NXDomain, "persisted copy in force");
    srv.shutdown().await;
}

#[tokio::test]
async fn http_source_unreachable_at_start_without_copy_fails_naming_the_list() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let up = Upstream::start().await;
    let lists = format!("[[lists]]\nname = \"web\"\nsource = \"http://127.0.0.1:{port}/l.txt\"\nallow_insecure = true\ntimeout_ms = 500\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let r = tokio::time::timeout(Duration::from_secs(5), srv.task).await.unwrap().unwrap();
    let e = r.expect_err("start must fail").to_string();
    assert!(e.contains("web") && e.contains("GET http://127.0.0.1"), "{e}");
}

pub fn admin_config(dir: &std::path::Path, keys: &[String]) -> String {
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token-0123456789\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "[state]\ndir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\nregulator_keys = [{}]\n",
        dir.join("state").display(),
        token.display(),
        keys.join(", ")
    )
}

pub const TOKEN: &str = "s3cret-token-0123456789";

#[tokio::test]
async fn push_api_needs_the_token_and_patches() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lists = "[[lists]]\nname = \"pushed\"\nsource = \"push\"\nede = 16\n";
    let srv = TestServer::start(&config(up.addr, lists, &admin_config(dir.path(), &[]))).await;
    let adm = srv.admin;
    let b = body(&["pushed.test"]);
    let (s, _) = http_req(adm, "PUT", "/v1/lists/pushed", None, &[], b.as_bytes()).await;
    assert_eq!(s, 401, "no token");
    let (s, _) = http_req(adm, "PUT", "/v1/lists/pushed", Some("wrong-token-0123456789"), &[], b.as_bytes()).await;
    assert_eq!(s, 401, "wrong token");
    assert_eq!(rcode(srv.addr, "pushed.test.").await, ResponseCode::NoError, "nothing changed");
    assert_eq!(http_get(srv.http, "/readyz").await.0, 503, "a push list without a version is not ready");

    let (s, resp) = http_req(adm, "PUT", "/v1/lists/pushed", Some(TOKEN), &[], b.as_bytes()).await;
    assert_eq!(s, 200, "{resp}");
    assert!(resp.contains("\"rules\":51") && resp.contains("\"push_version\":1"), "{resp}");
    assert_eq!(rcode(srv.addr, "pushed.test.").await, ResponseCode::NXDomain);
    assert_eq!(http_get(srv.http, "/readyz").await.0, 200);

    let (s, resp) = http_req(adm, "PATCH", "/v1/lists/pushed", Some(TOKEN), &[], b"+added.test\n-pushed.test\n").await;
    assert_eq!(s, 200, "{resp}");
    assert!(resp.contains("\"rules\":51"), "{resp}");
    assert_eq!(rcode(srv.addr, "added.test.").await, ResponseCode::NXDomain);
    assert_eq!(rcode(srv.addr, "pushed.test.").await, ResponseCode::NoError);

    // a truncated push is rejected, the list stays
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/pushed", Some(TOKEN), &[], b"only.test\n").await;
    assert_eq!(s, 422, "{resp}");
    assert!(resp.contains("fewer"), "{resp}");
    assert_eq!(rcode(srv.addr, "added.test.").await, ResponseCode::NXDomain);
    // … unless the operator forces it
    let (s, _) = http_req(adm, "POST", "/v1/lists/pushed/reload?force=1", Some(TOKEN), &[], b"").await;
    assert_eq!(s, 200);
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/pushed", Some(TOKEN), &[], b"only.test\n").await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "added.test.").await, ResponseCode::NoError);
    assert_eq!(rcode(srv.addr, "only.test.").await, ResponseCode::NXDomain);
    // not a push list / unknown list
    let (s, _) = http_req(adm, "PUT", "/v1/lists/nope", Some(TOKEN), &[], b"x.test\n").await;
    assert_eq!(s, 404);
    srv.shutdown().await;
}

#[tokio::test]
async fn push_signatures_valid_invalid_replayed() {
    let Some(key) = OpensslKey::generate() else { return };
    let Some(other) = OpensslKey::generate() else { return };
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lists = "[[lists]]\nname = \"reg\"\nsource = \"push\"\n";
    let srv = TestServer::start(&config(up.addr, lists, &admin_config(dir.path(), &[key.public_b64()]))).await;
    let adm = srv.admin;
    let b = body(&["signed.test"]);
    let signed = |k: &OpensslKey, v: u64, body: &str| {
        let ts = unix_now();
        let sig = k.sign(&v2_message("PUT", "reg", &v.to_string(), None, ts, body.as_bytes()));
        vec![("X-Qalqan-Version", v.to_string()), ("X-Qalqan-Timestamp", ts.to_string()), ("X-Qalqan-Signature", sig)]
    };
    // unsigned: refused when keys are configured
    let (s, _) = http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &[("X-Qalqan-Version", "1".into())], b.as_bytes()).await;
    assert_eq!(s, 403);
    // signed by another key: refused
    assert_eq!(http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &signed(&other, 1, &b), b.as_bytes()).await.0, 403);
    // signature over another version: refused
    let mut h = signed(&key, 1, &b);
    h[0].1 = "2".into();
    assert_eq!(http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &h, b.as_bytes()).await.0, 403);
    assert_eq!(rcode(srv.addr, "signed.test.").await, ResponseCode::NoError);
    // valid
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &signed(&key, 5, &b), b.as_bytes()).await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "signed.test.").await, ResponseCode::NXDomain);
    // replay of an older, validly signed version: refused
    let old = body(&[]);
    assert_eq!(http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &signed(&key, 4, &old), old.as_bytes()).await.0, 409);
    let h = signed(&key, 5, &b);
    assert_eq!(http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &h, b.as_bytes()).await.0, 409, "same version again");
    assert_eq!(rcode(srv.addr, "signed.test.").await, ResponseCode::NXDomain);
    srv.shutdown().await;

    // the pushed version and its number survive a restart (state dir)
    let srv = TestServer::start(&config(up.addr, lists, &admin_config(dir.path(), &[key.public_b64()]))).await;
    assert_eq!(rcode(srv.addr, "signed.test.").await, ResponseCode::NXDomain);
    assert_eq!(http_req(srv.admin, "PUT", "/v1/lists/reg", Some(TOKEN), &h, b.as_bytes()).await.0, 409, "replay after restart");
    srv.shutdown().await;
}

#[tokio::test]
async fn admin_refuses_a_token_file_others_can_read() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = admin_config(dir.path(), &[]);
    std::fs::set_permissions(dir.path().join("token"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let srv = TestServer::start(&config(up.addr, "[[lists]]\nname = \"p\"\nsource = \"push\"\n", &cfg)).await;
    let r = tokio::time::timeout(Duration::from_secs(5), srv.task).await.unwrap().unwrap();
    let e = r.expect_err("must refuse").to_string();
    assert!(e.contains("chmod 600"), "{e}");
}

/// Failed pulls of the list `web` so far.
fn web_errors(srv: &TestServer) -> f64 {
    sample(&srv.metrics.encode(), r#"qalqan_list_reloads_total{list="web",result="error"}"#)
}

/// A PATCH of ten names on a large pushed list is enforced by the time its
/// answer comes back, as a delta over the compiled list (no rebuild of the
/// 100k names): the ten added names are blocked, the ten removed ones are
/// not, the rest stay blocked, and /explain names each added rule by its
/// line in the list as it is now.
#[tokio::test]
async fn a_patch_of_ten_names_on_a_large_list_is_enforced_as_a_delta() {
    const N: usize = 100_000;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lists = "[[lists]]\nname = \"reg\"\nsource = \"push\"\nformat = \"domains\"\nmax_rules = 1000000\nmax_bytes = 100000000\n";
    let srv = TestServer::start(&config(up.addr, lists, &admin_config(dir.path(), &[]))).await;
    let mut b = String::from("# registry\n");
    for i in 0..N {
        b.push_str(&format!("n{i}.big.test\n"));
    }
    let (s, resp) = http_req(srv.admin, "PUT", "/v1/lists/reg", Some(TOKEN), &[], b.as_bytes()).await;
    assert_eq!(s, 200, "{resp}");
    let mut patch = String::new();
    for i in 0..10 {
        patch.push_str(&format!("+urgent{i}.test\n-n{}.big.test\n", i * 1000));
    }
    let (s, resp) = http_req(srv.admin, "PATCH", "/v1/lists/reg", Some(TOKEN), &[], patch.as_bytes()).await;
    assert_eq!(s, 200, "{resp}");
    assert!(resp.contains(&format!("\"rules\":{N}")), "{resp}");
    for i in 0..10 {
        assert_eq!(rcode(srv.addr, &format!("urgent{i}.test.")).await, ResponseCode::NXDomain, "added urgent{i}");
        assert_eq!(rcode(srv.addr, &format!("n{}.big.test.", i * 1000)).await, ResponseCode::NoError, "removed n{}", i * 1000);
        assert_eq!(rcode(srv.addr, &format!("x.n{}.big.test.", i * 1000 + 1)).await, ResponseCode::NXDomain, "kept");
    }
    let kinds = srv.metrics.encode();
    assert!(kinds.contains(r#"qalqan_list_updates_total{kind="delta",list="reg"} 1"#), "{kinds}");
    assert!(kinds.contains(r#"qalqan_list_updates_total{kind="full",list="reg"} 1"#), "{kinds}");
    // lines: the header, N names less the 10 removed, then the 10 added
    let (_, ex) = http_get(srv.http, "/explain?name=urgent3.test").await;
    assert!(ex.contains(&format!("push:{}\n", 1 + N - 10 + 4)), "{ex}");
    let (_, ex) = http_get(srv.http, "/explain?name=n1001.big.test").await;
    assert!(ex.contains(&format!("push:{}\n", 1 + 1001 + 1 - 2)), "{ex}");
    srv.shutdown().await;
}
