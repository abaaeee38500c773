//! Push and pull integrity (issue #19): replay protection under the update
//! lock, signed messages bound to list, method, base and time, pulled lists
//! over https with optional detached signatures, a state directory that
//! cannot be redirected by symlinks and whose copies are re-verified, and
//! an operator endpoint that neither reads files on a worker nor leaks
//! credentials. Ed25519 signatures come from `openssl`, an implementation
//! independent of ours.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

async fn rcode(addr: std::net::SocketAddr, n: &str) -> ResponseCode {
    udp(addr, n, RecordType::A, EDNS).await.unwrap().metadata.response_code
}

/// Without `[state] dir` a remote list never reads `./NAME.list` from the
/// working directory: a planted file there is not served; the start fails
/// for want of the source, naming the list.
#[tokio::test]
async fn remote_list_never_reads_the_working_directory() {
    let name = format!("cwdplant{}", std::process::id());
    let planted = std::env::current_dir().unwrap().join(format!("{name}.list"));
    std::fs::write(&planted, "planted.test\n").unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(planted);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let up = Upstream::start().await;
    let lists = format!(
        "[[lists]]\nname = \"{name}\"\nsource = \"http://127.0.0.1:{port}/l.txt\"\nallow_insecure = true\ntimeout_ms = 500\n"
    );
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let r = tokio::time::timeout(Duration::from_secs(5), srv.task).await.unwrap().unwrap();
    let e = r.expect_err("the planted ./NAME.list must not stand in for the source").to_string();
    assert!(e.contains(&name), "{e}");
}

use crate::sources::{admin_config, body, TOKEN};

const PUSH_LIST: &str = "[[lists]]\nname = \"reg\"\nsource = \"push\"\n";

fn json_u64(resp: &str, key: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(resp).ok()?.get(key)?.as_u64()
}

/// Two pushes of the same version at once: the version check runs under
/// the update lock, so exactly one is accepted and the others hear 409.
#[tokio::test]
async fn concurrent_pushes_of_one_version_accept_exactly_one() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(&config(up.addr, PUSH_LIST, &admin_config(dir.path(), &[]))).await;
    // big enough that a build takes a while, so the pushes overlap
    let big = |tag: usize| -> String { (0..40_000).map(|n| format!("n{n}-{tag}.test\n")).collect() };
    let mut tasks = Vec::new();
    for tag in 0..6 {
        let (adm, b) = (srv.admin, big(tag));
        tasks.push(tokio::spawn(async move {
            http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &[("X-Qalqan-Version", "1".into())], b.as_bytes()).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().0);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 409, 409, 409, 409, 409], "exactly one push of version 1 is accepted");
    srv.shutdown().await;
}

/// A push whose body equals the list in force still advances the accepted
/// version, so replaying an older version afterwards is refused; a body
/// rejected once (shrink gate, bad lines) is refused again, never 200.
#[tokio::test]
async fn equal_pushes_advance_the_version_and_rejected_bodies_never_get_200() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(&config(up.addr, PUSH_LIST, &admin_config(dir.path(), &[]))).await;
    let adm = srv.admin;
    let put = |v: u64, b: String| async move {
        http_req(adm, "PUT", "/v1/lists/reg", Some(TOKEN), &[("X-Qalqan-Version", v.to_string())], b.as_bytes()).await
    };
    let b = body(&["same.test"]);
    assert_eq!(put(1, b.clone()).await.0, 200);
    let (s, resp) = put(3, b.clone()).await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(json_u64(&resp, "push_version"), Some(3), "{resp}");
    let (s, resp) = put(2, body(&["older.test"])).await;
    assert_eq!(s, 409, "version 2 after version 3 (same body) is a replay: {resp}");
    assert_eq!(rcode(srv.addr, "older.test.").await, ResponseCode::NoError);

    // shrink gate: refused, and refused again when sent again
    for v in [4, 5] {
        let (s, resp) = put(v, "only.test\n".into()).await;
        assert_eq!(s, 422, "v{v}: {resp}");
    }
    // too many bad lines: refused both times
    let garbage: String = (0..100).map(|i| format!("not a domain {i}\n")).collect();
    for v in [6, 7] {
        let (s, resp) = put(v, format!("{b}{garbage}")).await;
        assert_eq!(s, 422, "v{v}: {resp}");
    }
    assert_eq!(rcode(srv.addr, "same.test.").await, ResponseCode::NXDomain);
    assert_eq!(rcode(srv.addr, "only.test.").await, ResponseCode::NoError);
    srv.shutdown().await;
}

/// The v2 signed message binds list, method, version, base and time:
/// a signature for list A pushed to list B, a PUT signature reused for a
/// PATCH, a stale timestamp and the old v1 format are all refused (403);
/// `?force=1` needs a signature too. Signatures by `openssl`.
#[tokio::test]
async fn signatures_bind_list_method_base_and_time() {
    let Some(key) = OpensslKey::generate() else { return };
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lists = "[[lists]]\nname = \"lista\"\nsource = \"push\"\n[[lists]]\nname = \"listb\"\nsource = \"push\"\n";
    let srv = TestServer::start(&config(up.addr, lists, &admin_config(dir.path(), &[key.public_b64()]))).await;
    let adm = srv.admin;
    let headers = |v: u64, base: Option<u64>, ts: u64, sig: String| {
        let mut h = vec![("X-Qalqan-Version", v.to_string()), ("X-Qalqan-Timestamp", ts.to_string()), ("X-Qalqan-Signature", sig)];
        if let Some(b) = base {
            h.push(("X-Qalqan-Base-Version", b.to_string()));
        }
        h
    };
    let b = body(&["a.test"]);
    let now = unix_now();
    let sig_a1 = key.sign(&v2_message("PUT", "lista", "1", None, now, b.as_bytes()));
    // cross-list replay: list A's signature pushed to list B
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/listb", Some(TOKEN), &headers(1, None, now, sig_a1.clone()), b.as_bytes()).await;
    assert_eq!(s, 403, "{resp}");
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/lista", Some(TOKEN), &headers(1, None, now, sig_a1), b.as_bytes()).await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "a.test.").await, ResponseCode::NXDomain);

    // cross-method replay: a PUT signature reused for a PATCH
    let patch = b"+patched.test\n";
    let put_sig = key.sign(&v2_message("PUT", "lista", "2", None, now, patch));
    let (s, resp) = http_req(adm, "PATCH", "/v1/lists/lista", Some(TOKEN), &headers(2, Some(1), now, put_sig), patch).await;
    assert_eq!(s, 403, "{resp}");
    // a PATCH signed for another base version
    let wrong_base = key.sign(&v2_message("PATCH", "lista", "2", Some(0), now, patch));
    let (s, resp) = http_req(adm, "PATCH", "/v1/lists/lista", Some(TOKEN), &headers(2, Some(1), now, wrong_base), patch).await;
    assert_eq!(s, 403, "{resp}");
    let good = key.sign(&v2_message("PATCH", "lista", "2", Some(1), now, patch));
    let (s, resp) = http_req(adm, "PATCH", "/v1/lists/lista", Some(TOKEN), &headers(2, Some(1), now, good), patch).await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(rcode(srv.addr, "patched.test.").await, ResponseCode::NXDomain);

    // outside the 300 s window: refused with the reason
    let old = now - 1000;
    let stale = key.sign(&v2_message("PUT", "lista", "9", None, old, b.as_bytes()));
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/lista", Some(TOKEN), &headers(9, None, old, stale), b.as_bytes()).await;
    assert_eq!(s, 403, "{resp}");
    assert!(resp.contains("X-Qalqan-Timestamp"), "{resp}");

    // the old v1 format: a clear 403
    let mut v1 = b"qalqan-list-v1\nlista\n9\n".to_vec();
    v1.extend_from_slice(b.as_bytes());
    let h = [("X-Qalqan-Version", "9".to_owned()), ("X-Qalqan-Signature", key.sign(&v1))];
    let (s, resp) = http_req(adm, "PUT", "/v1/lists/lista", Some(TOKEN), &h, b.as_bytes()).await;
    assert_eq!(s, 403, "{resp}");
    assert!(resp.contains("qalqan-list-v1"), "{resp}");

    // force=1 needs a signature over POST, the name and the version in force
    let (s, resp) = http_req(adm, "POST", "/v1/lists/lista/reload?force=1", Some(TOKEN), &[], b"").await;
    assert_eq!(s, 403, "{resp}");
    let (_, all) = http_req(adm, "GET", "/v1/lists", Some(TOKEN), &[], b"").await;
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    let in_force = all["lists"][0]["version"].as_str().unwrap().to_owned();
    let for_b = key.sign(&v2_message("POST", "listb", &in_force, None, now, b""));
    let h = [("X-Qalqan-Timestamp", now.to_string()), ("X-Qalqan-Signature", for_b)];
    assert_eq!(http_req(adm, "POST", "/v1/lists/lista/reload?force=1", Some(TOKEN), &h, b"").await.0, 403, "signed for another list");
    let sig = key.sign(&v2_message("POST", "lista", &in_force, None, now, b""));
    let h = [("X-Qalqan-Timestamp", now.to_string()), ("X-Qalqan-Signature", sig)];
    let (s, resp) = http_req(adm, "POST", "/v1/lists/lista/reload?force=1", Some(TOKEN), &h, b"").await;
    assert_eq!(s, 200, "{resp}");
    srv.shutdown().await;
}

/// The state directory: files 0600, a symlink planted at a temporary name
/// is not followed, and a persisted push is re-verified on load: a
/// tampered copy (list and journal rewritten, signature kept) is not served.
#[tokio::test]
async fn persisted_pushes_are_private_unfollowed_and_reverified() {
    use base64::Engine as _;
    let Some(key) = OpensslKey::generate() else { return };
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    for planted in ["reg.tmp", "reg.list.tmp", "reg.push.json.tmp", "reg.push.log", "reg.push.log.tmp", "reg.meta.tmp", "reg.meta.json.tmp"] {
        std::os::unix::fs::symlink(&victim, state.join(planted)).unwrap();
    }
    let cfg = config(up.addr, PUSH_LIST, &admin_config(dir.path(), &[key.public_b64()]));
    let srv = TestServer::start(&cfg).await;
    let b = body(&["kept.test"]);
    let ts = unix_now();
    let sig = key.sign(&v2_message("PUT", "reg", "1", None, ts, b.as_bytes()));
    let h = [("X-Qalqan-Version", "1".to_owned()), ("X-Qalqan-Timestamp", ts.to_string()), ("X-Qalqan-Signature", sig)];
    let (s, resp) = http_req(srv.admin, "PUT", "/v1/lists/reg", Some(TOKEN), &h, b.as_bytes()).await;
    assert_eq!(s, 200, "{resp}");
    srv.shutdown().await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched", "a planted symlink was followed");
    for f in std::fs::read_dir(&state).unwrap() {
        let f = f.unwrap();
        let meta = std::fs::symlink_metadata(f.path()).unwrap();
        if meta.is_file() {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", f.path().display());
        }
    }

    // untouched: served again after a restart
    let srv = TestServer::start(&cfg).await;
    assert_eq!(rcode(srv.addr, "kept.test.").await, ResponseCode::NXDomain);
    srv.shutdown().await;

    // tampered: the list and the journal's body rewritten, the signature kept
    let evil = body(&["kept.test", "evil.test"]);
    std::fs::write(state.join("reg.list"), &evil).unwrap();
    let jpath = state.join("reg.push.json");
    if let Ok(text) = std::fs::read_to_string(&jpath) {
        let mut j: serde_json::Value = serde_json::from_str(&text).unwrap();
        j["entries"][0]["body"] = base64::engine::general_purpose::STANDARD.encode(evil.as_bytes()).into();
        std::fs::write(&jpath, j.to_string()).unwrap();
    }
    let srv = TestServer::start(&cfg).await;
    assert_eq!(rcode(srv.addr, "evil.test.").await, ResponseCode::NoError, "a tampered copy was served");
    assert_eq!(rcode(srv.addr, "kept.test.").await, ResponseCode::NoError);
    assert_eq!(http_get(srv.http, "/readyz").await.0, 503, "the list has no version until the next push");
    srv.shutdown().await;
}

/// Pulls follow a redirect within the origin, and refuse one to another
/// host or port (reqwest alone followed any): the start fails naming the
/// list instead of loading the other host's list.
#[tokio::test]
async fn pulls_refuse_redirects_to_another_origin() {
    let up = Upstream::start().await;
    let other = ListServer::start(&body(&["foreign.test"])).await;
    let web = ListServer::start("").await;
    web.route("/list.txt", HttpReply::ok(body(&["moved.test"]).as_bytes()));
    web.route("/old", HttpReply::redirect("/list.txt"));
    web.route("/away", HttpReply::redirect(&format!("http://{}/list.txt", other.addr)));
    let list = |name: &str, path: &str| {
        format!("[[lists]]\nname = \"{name}\"\nsource = \"http://{}{path}\"\nallow_insecure = true\ntimeout_ms = 2000\n", web.addr)
    };
    let srv = TestServer::start(&config(up.addr, &list("moved", "/old"), "")).await;
    assert_eq!(rcode(srv.addr, "moved.test.").await, ResponseCode::NXDomain, "same-origin redirect followed");
    srv.shutdown().await;

    let srv = TestServer::start(&config(up.addr, &list("away", "/away"), "")).await;
    let r = tokio::time::timeout(Duration::from_secs(5), srv.task).await.expect("the start must fail, not serve").unwrap();
    let e = r.expect_err("a redirect to another origin must not be followed").to_string();
    assert!(e.contains("away") && e.contains("redirect"), "{e}");
    assert_eq!(other.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "the other host was never asked");
}

/// `signature = "required"`: a pulled version is accepted only with a
/// detached Ed25519 signature (made by openssl) at `<url>.sig`; a bad or
/// missing one keeps the last good list.
#[tokio::test]
async fn pulled_lists_with_required_signatures_keep_the_last_good_version() {
    let Some(key) = OpensslKey::generate() else { return };
    let pull_msg = |b: &str| [b"qalqan-pull-v1\n".as_slice(), b.as_bytes()].concat();
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let v1 = body(&["first.test"]);
    let web = ListServer::start("").await;
    web.route("/list.txt", HttpReply::ok(v1.as_bytes()));
    web.route("/list.txt.sig", HttpReply::ok(key.sign(&pull_msg(&v1)).as_bytes()));
    let lists = format!(
        "[[lists]]\nname = \"signedweb\"\nsource = \"http://{}/list.txt\"\nallow_insecure = true\nsignature = \"required\"\nrefresh_s = 1\n",
        web.addr
    );
    let srv = TestServer::start(&config(up.addr, &lists, &admin_config(dir.path(), &[key.public_b64()]))).await;
    assert_eq!(rcode(srv.addr, "first.test.").await, ResponseCode::NXDomain);

    // a new version with the old version's signature: refused
    let v2 = body(&["first.test", "second.test"]);
    web.route("/list.txt", HttpReply::ok(v2.as_bytes()));
    let before = web.requests.load(std::sync::atomic::Ordering::SeqCst);
    let reqs = web.requests.clone();
    assert!(eventually(Duration::from_secs(5), || { let r = reqs.clone(); async move { r.load(std::sync::atomic::Ordering::SeqCst) >= before + 4 } }).await);
    assert_eq!(rcode(srv.addr, "second.test.").await, ResponseCode::NoError, "bad signature: last good list kept");
    // no signature at all: refused
    web.route("/list.txt.sig", HttpReply { status: 404, ..HttpReply::ok(b"") });
    let before = web.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(5), || { let r = reqs.clone(); async move { r.load(std::sync::atomic::Ordering::SeqCst) >= before + 4 } }).await);
    assert_eq!(rcode(srv.addr, "second.test.").await, ResponseCode::NoError, "missing signature: last good list kept");
    assert_eq!(rcode(srv.addr, "first.test.").await, ResponseCode::NXDomain);
    // the raw 64-byte form, valid: accepted
    web.route("/list.txt.sig", HttpReply::ok(&key.sign_raw(&pull_msg(&v2))));
    assert!(eventually(Duration::from_secs(5), || async { rcode(srv.addr, "second.test.").await == ResponseCode::NXDomain }).await);
    srv.shutdown().await;
}

/// `/lists`, `/explain` and `GET /v1/lists` never show a URL's credentials
/// (userinfo, token=… and other secret query parameters).
#[tokio::test]
async fn operator_endpoints_redact_credentials_in_urls() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let web = ListServer::start(&body(&["listed.test"])).await;
    let lists = format!(
        "[[lists]]\nname = \"web\"\nsource = \"http://operator:pw-SECRET1@{}/list.txt?token=tok-SECRET2&key=k-SECRET3&format=plain\"\nallow_insecure = true\n",
        web.addr
    );
    let srv = TestServer::start(&config(up.addr, &lists, &admin_config(dir.path(), &[]))).await;
    let http = srv.http;
    assert!(eventually(Duration::from_secs(5), || async move { http_get(http, "/lists").await.1.contains("rules=") }).await);
    let (s, l) = http_get(srv.http, "/lists").await;
    assert_eq!(s, 200);
    let (_, ex) = http_get(srv.http, "/explain?name=listed.test").await;
    assert!(ex.contains("blocked"), "{ex} {l}");
    let (_, api) = http_req(srv.admin, "GET", "/v1/lists", Some(TOKEN), &[], b"").await;
    for shown in [&l, &ex, &api] {
        assert!(shown.contains("REDACTED") && shown.contains("format=plain"), "{shown}");
        for secret in ["SECRET1", "SECRET2", "SECRET3", "operator"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
    }
    srv.shutdown().await;
}

/// `/explain` shows the rule as written only for file lists: a push list's
/// `source = "push"` is not a path, and `./push` in the working directory
/// is never read for it.
#[tokio::test]
async fn explain_never_reads_a_remote_lists_source_as_a_file() {
    let planted = std::env::current_dir().unwrap().join("push");
    std::fs::write(&planted, "PLANTED-LINE\n".repeat(200)).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(planted);
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(&config(up.addr, PUSH_LIST, &admin_config(dir.path(), &[]))).await;
    let (s, resp) = http_req(srv.admin, "PUT", "/v1/lists/reg", Some(TOKEN), &[], body(&["pushed.test"]).as_bytes()).await;
    assert_eq!(s, 200, "{resp}");
    let (s, ex) = http_get(srv.http, "/explain?name=pushed.test").await;
    assert_eq!(s, 200);
    assert!(ex.contains("blocked") && ex.contains("reg"), "{ex}");
    assert!(!ex.contains("PLANTED"), "./push was read: {ex}");
    srv.shutdown().await;
}
