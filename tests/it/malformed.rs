//! Bad packets: a reply (FORMERR, NOTIMP, BADVERS …) with the packet's ID
//! whenever a header can be read and it is a query; silence for anything
//! shorter than a header and for responses (QR set). Each case below says
//! which of the two it expects; the server keeps answering afterwards.

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

    // a compression pointer loop in the question name: FORMERR, no question echoed
    let looped = [0x00, 0x07, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1];
    let r = udp_raw(srv.addr, &looped, wait).await.expect("FORMERR for a pointer loop");
    assert_eq!((&r[..2], rcode_of(&r)), (&[0x00, 0x07][..], 1));
    assert_eq!(&r[4..6], &[0, 0], "the looping question is not echoed");
    still_answers(&srv).await;

    // truncated question: FORMERR
    let (_, q) = query_bytes("truncated.example.", RecordType::A, PLAIN);
    let r = udp_raw(srv.addr, &q[..q.len() - 3], wait).await.expect("FORMERR for a cut question");
    assert_eq!((&r[..2], rcode_of(&r)), (&q[..2], 1));
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

    // random garbage of many sizes. Dropped (no reply) may be exactly:
    // anything with QR set (a response: answering it could start a loop
    // with another server). Every other packet of 12 bytes or more has a
    // header, so it gets a reply with its ID (FORMERR, NOTIMP, BADVERS,
    // REFUSED, or an answer if the bytes happen to make a query).
    let packets: Vec<Vec<u8>> = (0..400u16)
        .map(|round| {
            let len = [12usize, 13, 17, 31, 64, 200, 512, 1500][usize::from(round) % 8];
            let mut junk: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            junk[..2].copy_from_slice(&round.to_be_bytes()); // a distinct ID each
            if round % 2 == 0 {
                junk[2] &= 0x7f; // half of them queries for sure
            }
            junk
        })
        .collect();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut replied = std::collections::HashSet::new();
    let mut buf = vec![0u8; 65535];
    for chunk in packets.chunks(50) {
        for p in chunk {
            sock.send_to(p, srv.addr).await.unwrap();
        }
        // every reply to this chunk, until the socket is quiet for 300 ms
        while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await {
            let r = &buf[..n];
            let id = u16::from_be_bytes([r[0], r[1]]);
            let sent = packets.get(usize::from(id)).expect("the reply carries a packet's ID");
            assert!(sent[2] & 0x80 == 0, "a response got a reply: {sent:02x?}");
            assert!(r[2] & 0x80 != 0, "QR set in the reply");
            replied.insert(id);
        }
    }
    let silent_queries: Vec<&Vec<u8>> =
        packets.iter().enumerate().filter(|(i, p)| p[2] & 0x80 == 0 && !replied.contains(&(*i as u16))).map(|(_, p)| p).collect();
    assert!(silent_queries.is_empty(), "queries with a header got no reply: {silent_queries:02x?}");
    still_answers(&srv).await;
    srv.shutdown().await;
}
