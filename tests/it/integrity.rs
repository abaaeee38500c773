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
        "[[lists]]\nname = \"{name}\"\nsource = \"http://127.0.0.1:{port}/l.txt\"\ntimeout_ms = 500\n"
    );
    let srv = TestServer::start(&config(up.addr, &lists, "")).await;
    let r = tokio::time::timeout(Duration::from_secs(5), srv.task).await.unwrap().unwrap();
    let e = r.expect_err("the planted ./NAME.list must not stand in for the source").to_string();
    assert!(e.contains(&name), "{e}");
}
