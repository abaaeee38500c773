//! List reloads over the wire: new names enforced, removed names unblocked,
//! bad versions rejected with the old list kept, no failed query meanwhile.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

fn replace(dir: &std::path::Path, file: &str, text: &str) {
    let tmp = dir.join(format!("{file}.new"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

async fn rcode(addr: std::net::SocketAddr, n: &str) -> ResponseCode {
    udp(addr, n, RecordType::A, EDNS).await.unwrap().metadata.response_code
}

/// Queries `names` in a loop until stopped; counts failures (no reply or SERVFAIL).
fn query_loop(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, failures: Arc<AtomicUsize>, sent: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            for n in ["keep1.test.", "free.example.", "keep2.test."] {
                let (_, q) = query_bytes(n, RecordType::A, EDNS);
                sent.fetch_add(1, Ordering::SeqCst);
                match udp_raw(addr, &q, Duration::from_secs(2)).await {
                    Some(r) if r[3] & 0x0f != 2 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    })
}

#[tokio::test]
async fn file_reloads_atomically_and_keeps_last_good() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("# regulator\n");
    for i in 0..200 {
        body.push_str(&format!("keep{i}.test\n"));
    }
    let block = write_list(dir.path(), "reg.txt", &format!("{body}old.test\n"));
    let lists = format!("[[lists]]\nname = \"reg\"\nsource = \"{block}\"\nede = 16\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let addr = srv.addr;
    assert_eq!(rcode(addr, "old.test.").await, ResponseCode::NXDomain);
    assert_eq!(rcode(addr, "new.test.").await, ResponseCode::NoError);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let looper = query_loop(addr, stop.clone(), failures.clone(), sent.clone());

    // 1. atomic replace (rename): new name blocked, removed name free
    replace(dir.path(), "reg.txt", &format!("{body}new.test\n"));
    assert!(eventually(Duration::from_secs(3), || async { rcode(addr, "new.test.").await == ResponseCode::NXDomain }).await);
    assert_eq!(rcode(addr, "old.test.").await, ResponseCode::NoError, "removed name unblocked");

    // 2. in-place rewrite
    std::fs::write(dir.path().join("reg.txt"), format!("{body}new.test\ninplace.test\n")).unwrap();
    assert!(eventually(Duration::from_secs(3), || async { rcode(addr, "inplace.test.").await == ResponseCode::NXDomain }).await);

    // 3. garbage: over the bad-line budget → rejected, old list in force
    let garbage: String = (0..100).map(|i| format!("not a domain {i}\n")).collect();
    replace(dir.path(), "reg.txt", &format!("{body}{garbage}"));
    assert!(eventually(Duration::from_secs(5), || async { errors_of(&srv) == 1.0 }).await, "the garbage version was rejected");
    assert_eq!(rcode(addr, "inplace.test.").await, ResponseCode::NXDomain, "old list still enforced");

    // 4. empty / truncated file: shrink gate rejects it
    replace(dir.path(), "reg.txt", "# nothing\n");
    assert!(eventually(Duration::from_secs(5), || async { errors_of(&srv) == 2.0 }).await, "the empty version was rejected");
    assert_eq!(rcode(addr, "keep5.test.").await, ResponseCode::NXDomain, "old list still enforced");
    assert_eq!(rcode(addr, "new.test.").await, ResponseCode::NXDomain);
    let errors = srv.metrics.encode();
    assert!(errors.contains(r#"qalqan_list_reloads_total{list="reg",result="error"} 2"#), "{errors}");
    // the load at start and the two accepted versions were timed; the rejected ones were not published
    let builds = errors.lines().find_map(|l| l.strip_prefix("qalqan_policy_build_seconds_count ")).unwrap_or("0");
    assert!(builds.parse::<u64>().unwrap() >= 3, "{errors}");

    stop.store(true, Ordering::SeqCst);
    looper.await.unwrap();
    assert!(sent.load(Ordering::SeqCst) > 30, "query loop ran");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no query failed during reloads");
    srv.shutdown().await;
}

/// A cache hit that passed the policy is answered without asking it again
/// only under that same policy generation: after a reload lists the CNAME
/// target (or the name itself) of an answer served many times from the
/// cache, the next hits are blocked, and the upstream is not asked again.
#[tokio::test]
async fn cached_answers_are_rechecked_after_a_reload() {
    let up = Upstream::start().await;
    up.set("alias.example.", RecordType::A, Canned::Answer(vec![
        cname("alias.example.", 300, "target.cdn.test."),
        a("target.cdn.test.", 300, "198.51.100.20"),
    ]));
    up.set("direct.example.", RecordType::A, Canned::Answer(vec![a("direct.example.", 300, "198.51.100.21")]));
    let dir = tempfile::tempdir().unwrap();
    let block = write_list(dir.path(), "reg.txt", "other.test\n");
    let lists = format!("[[lists]]\nname = \"reg\"\nsource = \"{block}\"\nede = 16\nmax_shrink = 1.0\n");
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let addr = srv.addr;
    for _ in 0..5 {
        assert_eq!(rcode(addr, "alias.example.").await, ResponseCode::NoError);
        assert_eq!(rcode(addr, "direct.example.").await, ResponseCode::NoError);
    }
    let asked = up.count();
    assert_eq!(asked, 2, "later queries were cache hits");

    replace(dir.path(), "reg.txt", "other.test\ncdn.test\ndirect.example\n");
    assert!(eventually(Duration::from_secs(3), || async { rcode(addr, "direct.example.").await == ResponseCode::NXDomain }).await);
    for _ in 0..3 {
        let m = udp(addr, "alias.example.", RecordType::A, EDNS).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "CNAME target listed by the reload");
        assert_eq!(ede(&m), vec![(16, "blocked by list reg".to_owned())]);
    }
    assert_eq!(up.count(), asked, "the blocked answers came from the cache entry, not the upstream");

    // and back: unlisted again, the cached answer is served again
    replace(dir.path(), "reg.txt", "other.test\n");
    assert!(eventually(Duration::from_secs(3), || async { rcode(addr, "alias.example.").await == ResponseCode::NoError }).await);
    assert_eq!(rcode(addr, "direct.example.").await, ResponseCode::NoError);
    assert_eq!(up.count(), asked);
    srv.shutdown().await;
}

/// Rejected reloads of the list `reg` so far.
fn errors_of(srv: &TestServer) -> f64 {
    sample(&srv.metrics.encode(), r#"qalqan_list_reloads_total{list="reg",result="error"}"#)
}
