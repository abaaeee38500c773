//! Test helpers shared by the files of this module: records of a small
//! `rpz.test.` zone, and a fake primary on 127.0.0.1:0 that answers one
//! TCP request with scripted messages.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::{CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{transfer, AxfrError, Limits, Transfer, TsigKey};

pub(super) fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}
pub(super) fn zone() -> Name {
    name("rpz.test.")
}
pub(super) fn soa(serial: u32) -> Record {
    let soa = SOA::new(
        name("ns.rpz.test."),
        name("admin.rpz.test."),
        serial,
        3600,
        600,
        86400,
        60,
    );
    Record::from_rdata(zone(), 3600, RData::SOA(soa))
}
pub(super) fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(
        name(&format!("{owner}.rpz.test.")),
        300,
        RData::CNAME(CNAME(name(target))),
    )
}
pub(super) fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        max_records: 1000,
        max_bytes: 1 << 20,
    }
}
pub(super) fn key() -> TsigKey {
    TsigKey::parse("hmac-sha256:qalqan-key:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==").unwrap()
}

/// One answer message to `req` carrying `answers`.
pub(super) fn response(req: &Message, answers: Vec<Record>) -> Message {
    let mut m = Message::response(req.metadata.id, OpCode::Query);
    m.metadata.authoritative = true;
    m.add_queries(req.queries.clone());
    m.add_answers(answers);
    m
}
pub(super) fn wire(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap()
}
pub(super) fn messages(req: &Message, parts: Vec<Vec<Record>>) -> Vec<Vec<u8>> {
    parts.into_iter().map(|p| wire(&response(req, p))).collect()
}

/// A primary on 127.0.0.1:0 that answers one TCP request with the
/// messages `script` makes, then closes (or, with `hold`, stays silent).
pub(super) async fn fake_primary<F>(script: F) -> SocketAddr
where
    F: FnOnce(Message, Vec<u8>) -> (Vec<Vec<u8>>, bool) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.unwrap();
        let req = Message::from_vec(&buf).unwrap();
        let (out, hold) = script(req, buf);
        for m in out {
            let mut framed = u16::try_from(m.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&m);
            if s.write_all(&framed).await.is_err() {
                return;
            }
        }
        if hold {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
    addr
}

pub(super) async fn run(have: Option<u32>, limits: &Limits, parts: Vec<Vec<Record>>) -> Result<Transfer, AxfrError> {
    let addr = fake_primary(move |req, _| (messages(&req, parts), false)).await;
    transfer(addr, &zone(), have, None, limits).await
}
