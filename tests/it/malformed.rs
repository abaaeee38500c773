//! Bad packets: FORMERR when a header can be read, silence otherwise; the
//! server keeps answering afterwards.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::support::*;

async fn still_answers(srv: &TestServer) {
    let m = udp(srv.addr, "alive.example.", RecordType::A, EDNS).await.expect("server stopped answering");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

fn rcode_of(raw: &[u8]) -> u8 {
    raw[3] & 0x0f
}

#[tokio::test]
async fn malformed_packets_never_break_the_server() {
    let up = Upstream::start().await;
    let srv = TestServer::start(&config(up.addr, "", "")).await;
    let wait = Duration::from_millis(500);

    // garbage shorter than a header: dropped
    assert!(udp_raw(srv.addr, b"\x01\x02\x03", wait).await.is_none());
    still_answers(&srv).await;

    // a header claiming one question but nothing after it: FORMERR
    let hdr = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let r = udp_raw(srv.addr, &hdr, wait).await.expect("FORMERR expected");
    assert_eq!(&r[..2], &[0x12, 0x34]);
    assert_eq!(rcode_of(&r), 1, "FORMERR");
    still_answers(&srv).await;

    // qdcount = 0
    let r = udp_raw(srv.addr, &[0xab, 0xcd, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0], wait).await.expect("reply");
    assert_eq!(rcode_of(&r), 1, "qdcount 0 → FORMERR");
    still_answers(&srv).await;

    // qdcount = 2
    let (_, mut q) = query_bytes("a.example.", RecordType::A, PLAIN);
    let question = q[12..].to_vec();
    q[5] = 2;
    q.extend_from_slice(&question);
    let r = udp_raw(srv.addr, &q, wait).await.expect("reply");
    assert_eq!(rcode_of(&r), 1, "qdcount 2 → FORMERR");
    still_answers(&srv).await;

    // a compression pointer loop in the question name
    let looped = [0x00, 0x07, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1];
    if let Some(r) = udp_raw(srv.addr, &looped, wait).await {
        assert_eq!(rcode_of(&r), 1);
    }
    still_answers(&srv).await;

    // truncated question
    let (_, q) = query_bytes("truncated.example.", RecordType::A, PLAIN);
    if let Some(r) = udp_raw(srv.addr, &q[..q.len() - 3], wait).await {
        assert_eq!(rcode_of(&r), 1);
    }
    still_answers(&srv).await;

    // a response sent as a query: ignored
    let (_, mut q) = query_bytes("resp.example.", RecordType::A, PLAIN);
    q[2] |= 0x80;
    assert!(udp_raw(srv.addr, &q, wait).await.is_none());
    still_answers(&srv).await;

    // an unsupported opcode (STATUS = 2): NOTIMP
    let (_, mut q) = query_bytes("op.example.", RecordType::A, PLAIN);
    q[2] = (q[2] & 0x87) | (2 << 3);
    let r = udp_raw(srv.addr, &q, wait).await.expect("reply");
    assert_eq!(rcode_of(&r), 4, "NOTIMP");
    still_answers(&srv).await;

    // EDNS version 1: BADVERS (extended rcode 16)
    let (_, mut q) = query_bytes("v1.example.", RecordType::A, EDNS);
    let n = q.len();
    q[n - 5] = 1; // OPT: ..., TTL = ext-rcode, VERSION, flags(2); then rdlen(2)
    let r = udp_raw(srv.addr, &q, wait).await.expect("reply");
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(u16::from(m.metadata.response_code), 16, "BADVERS");
    still_answers(&srv).await;

    // random garbage of many sizes
    for len in [12usize, 13, 17, 31, 64, 200, 512, 1500] {
        let junk: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let _ = udp_raw(srv.addr, &junk, Duration::from_millis(100)).await;
    }
    still_answers(&srv).await;
    srv.shutdown().await;
}
