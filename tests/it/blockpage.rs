//! The block page over the wire (`[blockpage]`, RFC 7725): 451 with the
//! decision for a name a registry list blocks, 404 for others, `Host`
//! forms, HTML escaping, the limits (431, idle and slow clients, caps, the
//! ACL at accept), a reload turning 451 into 404 with the DNS answer, the
//! language by `Accept-Language`, metrics and the blocked-query log, the
//! real Windows-1251 registry dump, and headless Chromium loading the page.
//!
//! `QALQAN_SCREENSHOTS=1 cargo test --test it -- blockpage::chromium`
//! rewrites `docs/blockpage-{en,ru,kk}.png`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const REGISTRY: &str = "Updated: 2026-11-30 10:00:00 +0000\n\
IP;domain;URL;authority;decision;date\n\
203.0.113.9;blocked.example;http://blocked.example/page;Генпрокуратура;27-31-2015/Ид831-15;2015-03-12\n\
;evil.example;;\"Суд <b>&amp;</b>\";2-<script>alert(1)</script>;2016-01-02\n\
;reg.example;;Роскомнадзор (РКН);1-2(3);2017-05-06\n";

fn lists(path: &str) -> String {
    format!(
        "[[lists]]\nname = \"zapret\"\nsource = \"{path}\"\nformat = \"registry-csv\"\naction = \"sinkhole\"\nede = 16\nmax_shrink = 1.0\nauthority_url = \"https://regulator.example/registry\"\n"
    )
}

/// A running server with the block page on a listener of its own.
struct Site {
    srv: TestServer,
    page: SocketAddr,
    _up: Upstream,
    dir: tempfile::TempDir,
}

async fn start(blockpage_extra: &str, extra: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let path = write_list(dir.path(), "dump.csv", REGISTRY);
    start_in(dir, &path, blockpage_extra, extra).await
}

async fn start_in(dir: tempfile::TempDir, list_path: &str, blockpage_extra: &str, extra: &str) -> Site {
    let up = Upstream::start().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page = l.local_addr().unwrap();
    let extra = format!("[blockpage]\nlisten = [\"127.0.0.1:0\"]\ncontact = \"abuse@isp.example\"\n{blockpage_extra}\n{extra}");
    let srv = TestServer::start_with(&config(up.addr, &lists(list_path), &extra), |s| s.with_blockpage(vec![l])).await;
    Site { srv, page, _up: up, dir }
}

/// One HTTP answer as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `raw` and reads the answer to the end (the server closes); a
/// connection closed or reset unanswered gives status 0.
async fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    if s.write_all(raw).await.is_ok() {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.expect("answer within 10 s") {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
    let text = String::from_utf8(buf).expect("the answer is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Reply { status, head: head.to_owned(), body: body.to_owned() }
}

async fn get(addr: SocketAddr, host: &str, headers: &str) -> Reply {
    send(addr, format!("GET / HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n").as_bytes()).await
}

#[tokio::test]
async fn blocked_name_gets_451_with_the_decision_others_404() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("blocked.jsonl");
    let site = start("", &format!("[log]\nblocked = \"{}\"\n", log.display())).await;
    let r = get(site.page, "blocked.example", "").await;
    assert_eq!(r.status, 451, "{r:?}");
    assert!(r.head.starts_with("HTTP/1.1 451 Unavailable For Legal Reasons"), "{}", r.head);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("link"), Some("<https://regulator.example/registry>; rel=\"blocked-by\""));
    assert_eq!(r.header("content-language"), Some("en"));
    for want in ["blocked.example", "27-31-2015/Ид831-15", "Генпрокуратура", "2015-03-12", "abuse@isp.example", "zapret", "This site is blocked"] {
        assert!(r.body.contains(want), "page lacks {want}: {}", r.body);
    }
    // the same policy answers DNS: the name points at the sinkhole
    let m = udp(site.srv.addr, "blocked.example.", RecordType::A, EDNS).await.unwrap();
    assert_eq!(m.answers.first().map(|a| a.data.clone()), Some(RData::A("192.0.2.66".parse().unwrap())));

    // Host in any case, with a port, with a trailing dot; a subdomain; an absolute-form target
    for host in ["BLOCKED.Example", "blocked.example:80", "blocked.example.", "Blocked.Example.:8080", "www.blocked.example"] {
        let r = get(site.page, host, "").await;
        assert_eq!(r.status, 451, "Host: {host}");
        assert!(r.body.contains("27-31-2015/Ид831-15"), "Host: {host}");
    }
    let r = send(site.page, b"GET http://blocked.example/some/path?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n").await;
    assert_eq!(r.status, 451, "the absolute-form target names the host");
    // a decision whose id has parentheses and whose authority has them too
    let r = get(site.page, "reg.example", "").await;
    assert!(r.body.contains("<td>1-2(3)</td>") && r.body.contains("<td>Роскомнадзор (РКН)</td>"), "{}", r.body);

    // not blocked: 404, generic, nothing echoed
    for host in ["free.example", "example", "203.0.113.9", "[2001:db8::1]:80"] {
        let r = get(site.page, host, "").await;
        assert_eq!(r.status, 404, "Host: {host}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(r.header("link").is_none());
        assert!(!r.body.contains(host.trim_start_matches('[').split(']').next().unwrap()), "404 echoes nothing: {}", r.body);
    }
    // HEAD: the status and headers, no body
    let r = send(site.page, b"HEAD / HTTP/1.1\r\nHost: blocked.example\r\n\r\n").await;
    assert_eq!(r.status, 451);
    assert!(r.header("content-length").and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > 500), "{}", r.head);
    assert!(r.body.is_empty(), "HEAD has no body: {:?}", r.body);
    let r = send(site.page, b"HEAD / HTTP/1.1\r\nHost: free.example\r\n\r\n").await;
    assert_eq!((r.status, r.body.as_str()), (404, ""));
    // other methods, no Host
    let r = send(site.page, b"POST / HTTP/1.1\r\nHost: blocked.example\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let r = send(site.page, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 400);

    // metrics: by deciding list and status
    let text = site.srv.metrics.encode();
    assert_eq!(sample(&text, "qalqan_blockpage_requests_total{list=\"zapret\",status=\"451\"}"), 9.0, "{text}");
    assert_eq!(sample(&text, "qalqan_blockpage_requests_total{list=\"\",status=\"404\"}"), 5.0);
    assert_eq!(sample(&text, "qalqan_blockpage_requests_total{list=\"\",status=\"405\"}"), 1.0);
    // the view is logged like a blocked query, with its decision
    let logged = eventually(Duration::from_secs(5), || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log).unwrap_or_default().lines().any(|l| {
                l.contains("\"protocol\":\"http\"")
                    && l.contains("\"qname\":\"blocked.example\"")
                    && l.contains("\"qtype\":null")
                    && l.contains("\"decision\":\"27-31-2015/Ид831-15 (Генпрокуратура)\"")
                    && l.contains("\"list\":\"zapret\"")
            })
        }
    })
    .await;
    assert!(logged, "no http line in the blocked-query log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    site.srv.shutdown().await;
}

#[tokio::test]
async fn injection_in_values_host_and_path_is_escaped() {
    let site = start("", "").await;
    // list values are written as text, never markup
    let r = get(site.page, "evil.example", "").await;
    assert_eq!(r.status, 451);
    assert!(r.body.contains("2-&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", r.body);
    assert!(r.body.contains("Суд &lt;b&gt;&amp;amp;&lt;/b&gt;"), "{}", r.body);
    assert!(!r.body.contains("<script>") && !r.body.contains("<b>"), "{}", r.body);
    // attacker-controlled Host and path: never echoed raw
    for host in ["<script>alert(1)</script>.example", "blocked.example\"><img src=x onerror=alert(1)>", "x'onmouseover='alert(1)"] {
        let r = get(site.page, host, "").await;
        assert_eq!(r.status, 404, "Host: {host}");
        assert!(!r.body.contains("<script>alert") && !r.body.contains("<img") && !r.body.contains("onmouseover"), "Host: {host}: {}", r.body);
    }
    let r = send(site.page, b"GET /<script>alert(1)</script> HTTP/1.1\r\nHost: blocked.example\r\n\r\n").await;
    assert!(!r.body.contains("<script>alert"), "{r:?}");
    let r = send(site.page, b"GET /%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: blocked.example\r\n\r\n").await;
    assert_eq!(r.status, 451);
    assert!(!r.body.contains("<script>alert") && !r.body.contains("%3Cscript"), "the path is not shown");
    site.srv.shutdown().await;
}

#[tokio::test]
async fn limits_oversize_headers_idle_and_slow_clients() {
    let site = start("max_header_bytes = 2048\nidle_timeout_ms = 300\nrequest_timeout_ms = 800\n", "").await;
    // headers past max_header_bytes: 431
    let pad = "a".repeat(3000);
    let r = send(site.page, format!("GET / HTTP/1.1\r\nHost: blocked.example\r\nX-Pad: {pad}\r\n\r\n").as_bytes()).await;
    assert_eq!(r.status, 431, "{r:?}");
    // just under it: served
    let pad = "a".repeat(1800);
    let r = send(site.page, format!("GET / HTTP/1.1\r\nHost: blocked.example\r\nX-Pad: {pad}\r\n\r\n").as_bytes()).await;
    assert_eq!(r.status, 451);

    // a connection that sends nothing: closed after idle_timeout_ms
    let t = Instant::now();
    let mut s = TcpStream::connect(site.page).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed by the server").unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() < Duration::from_secs(2), "idle connection held {:?}", t.elapsed());

    // a slowloris: a byte every 100 ms is cut at request_timeout_ms, unanswered
    let t = Instant::now();
    let mut s = TcpStream::connect(site.page).await.unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: blocked.example\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for b in req {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if t.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(cut || matches!(read, Ok(Ok(0)) | Ok(Err(_))), "slow client got {:?}", String::from_utf8_lossy(&rest));
    assert!(t.elapsed() < Duration::from_secs(3), "slow client held {:?}", t.elapsed());

    let text = site.srv.metrics.encode();
    assert_eq!(sample(&text, "qalqan_blockpage_requests_total{list=\"\",status=\"431\"}"), 1.0, "{text}");
    assert!(sample(&text, "qalqan_blockpage_connections_closed_total{reason=\"idle\"}") >= 1.0, "{text}");
    assert!(sample(&text, "qalqan_blockpage_connections_closed_total{reason=\"timeout\"}") >= 1.0, "{text}");
    site.srv.shutdown().await;
}

#[tokio::test]
async fn acl_and_connection_caps_at_accept() {
    // clients outside allow_clients: closed at accept, nothing answered
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_list(dir.path(), "dump.csv", REGISTRY);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page = l.local_addr().unwrap();
    let cfg = config(up.addr, &lists(&path), "[blockpage]\nlisten = [\"127.0.0.1:0\"]\n").replace("allow_clients = [\"127.0.0.0/8\"]", "allow_clients = [\"10.0.0.0/8\"]");
    let srv = TestServer::start_with(&cfg, |s| s.with_blockpage(vec![l])).await;
    let r = get(page, "blocked.example", "").await;
    assert_eq!((r.status, r.head.as_str()), (0, ""), "answered a client outside the ACL");
    assert_eq!(sample(&srv.metrics.encode(), "qalqan_blockpage_connections_closed_total{reason=\"acl\"}"), 1.0);
    srv.shutdown().await;

    // max_per_client: a third idle connection from 127.0.0.0/24 is closed at once
    let site = start("max_per_client = 2\nidle_timeout_ms = 5000\nrequest_timeout_ms = 5000\n", "").await;
    let _a = TcpStream::connect(site.page).await.unwrap();
    let _b = TcpStream::connect(site.page).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let r = get(site.page, "blocked.example", "").await;
    assert_eq!(r.status, 0, "over the cap: closed, not answered");
    assert!(t.elapsed() < Duration::from_secs(2));
    drop((_a, _b));
    let ok = eventually(Duration::from_secs(3), || async { get(site.page, "blocked.example", "").await.status == 451 }).await;
    assert!(ok, "closed connections free their places");
    assert!(sample(&site.srv.metrics.encode(), "qalqan_blockpage_connections_closed_total{reason=\"limit\"}") >= 1.0);
    site.srv.shutdown().await;
}

#[tokio::test]
async fn reload_that_drops_a_name_turns_its_page_into_404_with_its_dns_answer() {
    let site = start("", "").await;
    assert_eq!(get(site.page, "blocked.example", "").await.status, 451);
    let dropped = REGISTRY.lines().filter(|l| !l.contains("blocked.example")).collect::<Vec<_>>().join("\n") + "\n";
    let tmp = site.dir.path().join("dump.csv.new");
    std::fs::write(&tmp, dropped).unwrap();
    std::fs::rename(&tmp, site.dir.path().join("dump.csv")).unwrap();
    // while DNS still blocks the name, its page is a 451; once DNS answers it, a 404
    let addr = site.srv.addr;
    let flipped = eventually(Duration::from_secs(10), || async move {
        let m = udp(addr, "blocked.example.", RecordType::A, EDNS).await.unwrap();
        let sinkholed = m.answers.iter().any(|a| a.data == RData::A("192.0.2.66".parse().unwrap()));
        !sinkholed
    })
    .await;
    assert!(flipped, "the reload did not unblock the name in DNS");
    let r = get(site.page, "blocked.example", "").await;
    assert_eq!(r.status, 404, "DNS no longer blocks it, so neither does the page: {r:?}");
    assert_eq!(get(site.page, "evil.example", "").await.status, 451, "the other names stay");
    site.srv.shutdown().await;
}

#[tokio::test]
async fn accept_language_chooses_kazakh_russian_or_english() {
    let site = start("", "").await;
    let cases: &[(&str, &str, &str)] = &[
        ("Accept-Language: ru-RU,ru;q=0.9,en;q=0.8\r\n", "ru", "Доступ к сайту ограничен"),
        ("Accept-Language: kk-KZ,kk;q=0.9,ru;q=0.8\r\n", "kk", "Бұл сайт бұғатталған"),
        ("Accept-Language: en;q=0.3, kk;q=0.7\r\n", "kk", "Бұл сайт бұғатталған"),
        ("Accept-Language: de-DE, fr;q=0.9\r\n", "en", "This site is blocked"),
        ("", "en", "This site is blocked"),
    ];
    for (header, lang, text) in cases {
        let r = get(site.page, "blocked.example", header).await;
        assert_eq!(r.status, 451);
        assert_eq!(r.header("content-language"), Some(*lang), "{header}");
        assert!(r.body.contains(text) && r.body.contains(&format!("lang=\"{lang}\"")), "{header}: {}", r.body);
        assert!(r.body.contains("Генпрокуратура"), "values are the same in every language");
    }
    let r = get(site.page, "free.example", "Accept-Language: ru\r\n").await;
    assert_eq!((r.status, r.header("content-language")), (404, Some("ru")));
    assert!(r.body.contains("Не найдено"));
    site.srv.shutdown().await;
}

#[tokio::test]
async fn operator_template_is_used_and_bad_ones_fail_check_with_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("page.html");
    std::fs::write(&t, "<p>{{name}} | {{decision}} | {{authority}} | {{date}} | {{contact}}</p>").unwrap();
    std::fs::write(dir.path().join("page.ru.html"), "<p>RU {{name}}</p>").unwrap();
    let site = start(&format!("template = \"{}\"\n", t.display()), "").await;
    let r = get(site.page, "blocked.example", "").await;
    assert_eq!(r.body, "<p>blocked.example | 27-31-2015/Ид831-15 | Генпрокуратура | 2015-03-12 | abuse@isp.example</p>");
    assert_eq!(get(site.page, "blocked.example", "Accept-Language: ru\r\n").await.body, "<p>RU blocked.example</p>");
    assert_eq!(get(site.page, "blocked.example", "Accept-Language: kk\r\n").await.body.get(..3), Some("<p>"), "no kk file: the main one");
    site.srv.shutdown().await;

    // `qalqan check`: an unknown placeholder and a missing file, each at FILE:LINE
    let list = write_list(dir.path(), "dump.csv", REGISTRY);
    std::fs::write(dir.path().join("bad.html"), "<html>\n<p>{{name}}</p>\n<p>{{decison}}</p>\n").unwrap();
    for (template, want) in [
        (dir.path().join("bad.html"), format!("{}:3: unknown placeholder `{{{{decison}}}}`", dir.path().join("bad.html").display())),
        (dir.path().join("gone.html"), format!("{}:4: template {}: cannot read", dir.path().join("q.toml").display(), dir.path().join("gone.html").display())),
    ] {
        let cfg = dir.path().join("q.toml");
        std::fs::write(&cfg, format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[blockpage]\ntemplate = \"{}\"\nlisten = [\"192.0.2.66:80\"]\n{}", template.display(), lists(&list))).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qalqan")).args(["check", "--config"]).arg(&cfg).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains(&want), "want `{want}` in:\n{stdout}");
    }
    // and a good config says where its pages come from
    let cfg = dir.path().join("q.toml");
    std::fs::write(&cfg, format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[sinkhole]\na = \"192.0.2.66\"\n[blockpage]\nlisten = [\"192.0.2.66:80\"]\n{}", lists(&list))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qalqan")).args(["check", "--config"]).arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("blockpage: listen 192.0.2.66:80; pages en config/blockpage.html (compiled in)"), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
    // DoH on 443 of the sinkhole address: https:// visits would meet its certificate
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "not a key").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ndoh_listen = [\"0.0.0.0:443\"]\n[tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n[sinkhole]\na = \"192.0.2.66\"\n[blockpage]\nlisten = [\"192.0.2.66:80\"]\n{}",
            lists(&list),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qalqan")).args(["check", "--config"]).arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("blockpage: warning: doh_listen serves 443 on a sinkhole address"), "{stdout}");
}

#[tokio::test]
async fn real_registry_dump_in_windows_1251() {
    let Some(dump) = shared_data("regulator-ru-zapret/dump-2016-06-13.csv") else { return };
    // the row of 123.ej.ru as the file has it (cp1251), for its date
    let bytes = std::fs::read(&dump).unwrap();
    let text = encoding_rs::WINDOWS_1251.decode(&bytes).0.into_owned();
    let row = text.lines().find(|l| l.split(';').nth(1) == Some("123.ej.ru")).expect("the dump lists 123.ej.ru");
    let date = row.split(';').nth(5).unwrap().trim().to_owned();
    assert!(!date.is_empty());
    let site = start_in(tempfile::tempdir().unwrap(), &dump.display().to_string(), "", "").await;
    let r = get(site.page, "123.ej.ru", "Accept-Language: ru\r\n").await;
    assert_eq!(r.status, 451);
    for want in ["Исорг-27/3-3420-14", "Генпрокуратура", date.as_str()] {
        assert!(r.body.contains(want), "lacks {want}: {}", r.body);
    }
    site.srv.shutdown().await;
}

/// The Chromium binary, or `None` (then the test skips, or fails under CI).
fn chromium() -> Option<&'static str> {
    for bin in ["chromium", "chromium-browser"] {
        if std::process::Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(bin);
        }
    }
    assert!(!in_ci(), "CI=true: chromium not found (tests/run.sh installs the Debian package `chromium`)");
    eprintln!("SKIPPING: chromium not found (apt-get install chromium)");
    None
}

/// Headless Chromium on `http://NAME/` with NAME resolved to `page`; extra
/// arguments (`--dump-dom`, `--screenshot=…`); returns stdout.
async fn browse(bin: &'static str, page: SocketAddr, name: &str, lang: &str, args: &[String]) -> String {
    let (name, lang, args) = (name.to_owned(), lang.to_owned(), args.to_vec());
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(bin)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--host-resolver-rules=MAP {name} {page}"))
            .arg(format!("--lang={lang}"))
            .arg(format!("--accept-lang={lang}"))
            .args(&args)
            .arg(format!("http://{name}/"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = String::new();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("chromium did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        out.push_str(&reader.join().unwrap());
        out
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn chromium_shows_the_decision() {
    let Some(bin) = chromium() else { return };
    let site = start("", "").await;
    let dom = browse(bin, site.page, "blocked.example", "en-US", &["--dump-dom".into()]).await;
    for want in ["This site is blocked", "blocked.example", "27-31-2015/Ид831-15", "Генпрокуратура", "2015-03-12", "abuse@isp.example"] {
        assert!(dom.contains(want), "Chromium's DOM lacks {want}:\n{dom}");
    }
    let dom = browse(bin, site.page, "blocked.example", "ru", &["--dump-dom".into()]).await;
    assert!(dom.contains("Доступ к сайту ограничен"), "Chromium in Russian:\n{dom}");
    let dom = browse(bin, site.page, "free.example", "en-US", &["--dump-dom".into()]).await;
    assert!(dom.contains("Not found") && !dom.contains("Генпрокуратура"), "{dom}");
    let text = site.srv.metrics.encode();
    assert!(sample(&text, "qalqan_blockpage_requests_total{list=\"zapret\",status=\"451\"}") >= 2.0, "{text}");

    if std::env::var_os("QALQAN_SCREENSHOTS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        for lang in ["en", "ru", "kk"] {
            let file = docs.join(format!("blockpage-{lang}.png"));
            let _ = std::fs::remove_file(&file);
            browse(bin, site.page, "blocked.example", lang, &["--window-size=1024,640".into(), format!("--screenshot={}", file.display())]).await;
            assert!(file.is_file(), "no screenshot {}", file.display());
        }
    }
    site.srv.shutdown().await;
}
