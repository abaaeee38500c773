//! `qalqan ctl` over the wire: the built binary against the real server's
//! admin API (127.0.0.1, port 0), every verb, its output and its effect.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::sources::{admin_config, body};
use crate::support::*;

/// Runs `qalqan ctl ARGS` (off the runtime: the server runs on it) in `dir`;
/// returns (exit code, stdout, stderr).
async fn ctl(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_qalqan"))
            .arg("ctl")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("the qalqan binary runs");
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    })
    .await
    .unwrap()
}

async fn rcode(addr: std::net::SocketAddr, n: &str) -> ResponseCode {
    udp(addr, n, RecordType::A, EDNS).await.unwrap().metadata.response_code
}

#[tokio::test]
async fn ctl_status_lists_reload_explain_push() {
    let Some(key) = OpensslKey::generate() else { return };
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = write_list(d, "regulator.txt", "# the regulator\nfirst.test\nfiled.test\n");
    let lists = format!(
        "[[lists]]\nname = \"regulator\"\nsource = \"{file}\"\nede = 16\n[[lists]]\nname = \"pushed\"\nsource = \"push\"\nede = 16\n"
    );
    let srv = TestServer::start(&config(up.addr, &lists, &admin_config(d, &[key.public_b64()]))).await;
    let admin = srv.admin.to_string();
    let token = d.join("token").display().to_string();
    let to = ["--admin", admin.as_str(), "--token-file", token.as_str()];
    fn with<'a>(to: &[&'a str], verb: &[&'a str]) -> Vec<&'a str> {
        to.iter().chain(verb).copied().collect()
    }

    // status, through a config file's [admin] table (the way an operator runs it)
    let ctl_config = write_list(d, "ctl.toml", &format!("[admin]\nlisten = \"{admin}\"\ntoken_file = \"{token}\"\n"));
    let (code, out, err) = ctl(d, &["--config", &ctl_config, "status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("qalqan {}\nup ", env!("CARGO_PKG_VERSION"))), "{out}");
    assert!(out.contains("lists: 2 configured, 1 loaded, 2 rules"), "the push list has no version yet: {out}");
    let (code, out, _) = ctl(d, &with(&to, &["--json", "status"])).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("--json prints the API's JSON");
    assert_eq!(v["lists"]["loaded"], 1, "{out}");

    // lists
    let (code, out, err) = ctl(d, &with(&to, &["lists"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("LIST "), "{out}");
    let row = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    assert!(row("regulator").contains(&file) && row("regulator").contains(" 2 "), "{out}");
    assert!(row("pushed").contains("not loaded"), "{out}");

    // explain: list, rule as written, FILE:LINE
    let (code, out, _) = ctl(d, &with(&to, &["explain", "www.filed.test"])).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("blocked"), "{out}");
    assert!(out.contains("list:     regulator") && out.contains(&format!("source:   {file}:3")) && out.contains("rule:     filed.test"), "{out}");
    let (_, out, _) = ctl(d, &with(&to, &["explain", "free.test"])).await;
    assert_eq!(out.trim(), "pass");

    // reload: a name added to the file is enforced when the command returns
    std::fs::write(&file, "# the regulator\nfirst.test\nfiled.test\nadded.test\n").unwrap();
    let (code, out, err) = ctl(d, &with(&to, &["reload", "regulator"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("regulator: version ") && out.contains("3 rules"), "{out}");
    assert_eq!(rcode(srv.addr, "added.test.").await, ResponseCode::NXDomain);

    // push: unsigned is refused (keys are configured), signed goes through
    let list = write_list(d, "push.txt", &body(&["pushed-by-ctl.test"]));
    let (code, _, err) = ctl(d, &with(&to, &["push", "pushed", &list, "--version", "1"])).await;
    assert_eq!(code, 1, "the server refused: {err}");
    assert!(err.contains("X-Qalqan-Signature is required") && err.contains("HTTP 403"), "{err}");
    assert_eq!(rcode(srv.addr, "pushed-by-ctl.test.").await, ResponseCode::NoError);
    let pem = key.pem().display().to_string();
    let (code, out, err) = ctl(d, &with(&to, &["push", "pushed", &list, "--version", "1", "--sign", &pem])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pushed: version") && out.contains("51 rules") && out.contains("push version 1"), "{out}");
    assert_eq!(rcode(srv.addr, "pushed-by-ctl.test.").await, ResponseCode::NXDomain, "the pushed name is blocked");
    let (_, out, _) = ctl(d, &with(&to, &["explain", "pushed-by-ctl.test"])).await;
    assert!(out.contains("list:     pushed"), "{out}");
    // the same version again is a replay
    let (code, _, err) = ctl(d, &with(&to, &["push", "pushed", &list, "--version", "1", "--sign", &pem])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HTTP 409"), "{err}");

    // the server says no: unknown list, wrong token
    let (code, _, err) = ctl(d, &with(&to, &["reload", "nope"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("no list `nope`") && err.contains("HTTP 404"), "{err}");
    let bad = write_list(d, "bad-token", "not-the-token-0123456789\n");
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (code, _, err) = ctl(d, &["--admin", &admin, "--token-file", &bad, "status"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("bearer token"), "{err}");
    srv.shutdown().await;
}

#[tokio::test]
async fn ctl_says_when_it_cannot_ask() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = write_list(d, "token", "s3cret-token-0123456789\n");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // a port nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let admin = format!("127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let (code, out, err) = ctl(d, &["--admin", &admin, "--token-file", &token, "status"]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(&format!("cannot reach the admin API at http://{admin}")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "a refused connection fails at once");
    // a config without [admin]
    let cfg = write_list(d, "plain.toml", "[server]\nlisten = [\"127.0.0.1:5353\"]\n");
    let (code, _, err) = ctl(d, &["--config", &cfg, "status"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("has no [admin] table"), "{err}");
    // a token others can read is refused before anything is sent
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, _, err) = ctl(d, &["--admin", &admin, "--token-file", &token, "status"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("readable by group or others"), "{err}");
    // a signing key that is not one
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let list = write_list(d, "l.txt", "a.test\n");
    let (code, _, err) = ctl(d, &["--admin", &admin, "--token-file", &token, "push", "l", &list, "--version", "1", "--sign", &list]).await;
    assert_eq!(code, 2);
    assert!(err.contains("signing key") && err.contains("BEGIN PRIVATE KEY"), "{err}");
}
