//! dnstap costs: what the query path pays per query with `[dnstap]` on
//! (`Dnstap::log`: two byte copies, a clock read, a `try_send`; here with
//! no reader, so the writer drains and drops), and what the writer thread
//! pays to encode one query's CLIENT_QUERY + CLIENT_RESPONSE frames, with
//! and without the policy of a blocked query.
//! Run: `cargo bench --bench dnstap`.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};

use qalqan::dnstap::encode::{frame, Action, Kind, Match, Message, Policy, Protocol};
use qalqan::dnstap::{Counters, Dnstap, Endpoint, Settings};
use qalqan::metrics::Transport;

/// A 40-byte query and a 100-byte reply, the shapes of a simple A lookup.
fn query_and_reply() -> (Vec<u8>, Vec<u8>) {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
    q.extend_from_slice(&[0, 0, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    let mut r = q.clone();
    r.resize(100, 0xab);
    (q, r)
}

/// One query's two frames, as the writer encodes them.
fn pair<'a>(out: &mut Vec<u8>, m: &mut Message<'a>, q: &'a [u8], r: &'a [u8]) {
    out.clear();
    m.kind = Kind::ClientQuery;
    m.query_message = Some(q);
    m.response_message = None;
    m.response_time = None;
    frame(out, b"resolver-1", b"qalqan 0.1.0", m);
    m.kind = Kind::ClientResponse;
    m.query_message = None;
    m.response_message = Some(r);
    m.response_time = Some((1_795_468_287, 124_000_000));
    frame(out, b"resolver-1", b"qalqan 0.1.0", m);
    black_box(out.len());
}

fn encode(c: &mut Criterion) {
    let (q, r) = query_and_reply();
    let mut m = Message {
        kind: Kind::ClientQuery,
        query_address: &[192, 0, 2, 7],
        query_port: 53_000,
        protocol: Protocol::Udp,
        query_time: (1_795_468_287, 123_000_000),
        response_time: None,
        query_message: Some(&q),
        response_message: None,
        policy: None,
    };
    let mut out = Vec::with_capacity(1 << 16);
    c.bench_function("dnstap/encode_query_and_response", |b| b.iter(|| pair(&mut out, black_box(&mut m), &q, &r)));
    m.policy = Some(Policy {
        kind: "regulator",
        rule: b"example.com",
        action: Some(Action::Nxdomain),
        matched: Some(Match::Qname),
        value: b"\x03www\x07example\x03com\x00",
    });
    c.bench_function("dnstap/encode_blocked_query_and_response", |b| b.iter(|| pair(&mut out, black_box(&mut m), &q, &r)));
}

fn log(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("qalqan-bench-dnstap-{}", std::process::id()));
    let settings = Settings {
        endpoint: Endpoint::Unix(dir.join("absent.sock")),
        identity: "resolver-1".into(),
        version: "qalqan".into(),
        log_queries: true,
        log_responses: true,
        queue: 10_000,
        reconnect_min: Duration::from_secs(3600),
        reconnect_max: Duration::from_secs(3600),
        io_timeout: Duration::from_secs(1),
    };
    let counters = Counters { frames: prometheus::IntCounter::new("f", "f").unwrap(), dropped: prometheus::IntCounter::new("d", "d").unwrap() };
    let tap = Dnstap::start(settings, counters).unwrap();
    let (q, r) = query_and_reply();
    let client = "192.0.2.7:53000".parse().unwrap();
    c.bench_function("dnstap/log_on_the_query_path", |b| {
        b.iter(|| tap.log(black_box(&q), Some(black_box(&r)), client, Transport::Udp, None, None))
    });
    let _ = black_box(SystemTime::now());
}

criterion_group!(benches, encode, log);
criterion_main!(benches);
