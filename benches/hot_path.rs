//! Hot-path benchmarks: name normalisation, policy match (hit, miss, deep
//! subtree hit, keyword) at 100k and 1M rules, policy compile, and cache
//! hits one at a time and batched, and the answer-address check at 100k
//! prefixes, and one DNSSEC RRset verification (ECDSA P-256), and the
//! policy check and PATCH publish with a delta pending at 1M rules, and
//! views: the client-prefix lookup at 1000 prefixes and the view-aware
//! check beside the plain one.
//!
//! Rules come from `../shared/data/domains/hagezi-light-domains.txt` when it
//! exists (real names), topped up with synthetic names to reach each size;
//! without it every name is synthetic. Run: `cargo bench --bench hot_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use qalqan::name::QName;
use qalqan::policy::index::{Index, ListInput};
use qalqan::rules::{Entry, Rule, RuleAction, Scope};

fn real_names() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/domains/hagezi-light-domains.txt");
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(str::to_owned).collect(),
        Err(_) => {
            eprintln!("skipping real names: {path} not found; using synthetic names only");
            Vec::new()
        }
    }
}

fn names(n: usize) -> Vec<String> {
    let mut v = real_names();
    v.truncate(n);
    let mut i = 0usize;
    while v.len() < n {
        v.push(format!("s{i:x}.tracker-{}.example{}", i % 977, i % 13));
        i += 1;
    }
    v
}

/// A fixed-seed Fisher–Yates shuffle (xorshift): the same order every run,
/// no locality with the order the items were built in.
fn shuffle<T>(v: &mut [T]) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn entries(names: &[String]) -> Vec<Entry> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| Entry {
            line: i as u32 + 1,
            rule: Rule::Name { name: n.clone(), scope: Scope::Subtree, action: RuleAction::List, important: false, decision: None },
        })
        .collect()
}

fn normalise(c: &mut Criterion) {
    let mut g = c.benchmark_group("qname_parse");
    for n in ["www.example.com.", "A.Very.Deep.Sub.Domain.Of.Some.Tracker.Example.NET."] {
        g.bench_function(n, |b| b.iter(|| QName::parse(black_box(n))));
    }
    g.finish();
}

fn check(c: &mut Criterion) {
    for size in [100_000usize, 1_000_000] {
        let listed = names(size);
        let e = entries(&listed);
        let index = Index::build(&[ListInput { allow: false, entries: &e }]).unwrap();
        eprintln!("index at {size} rules: {} bytes ({:.1} B/rule)", index.memory_bytes(), index.memory_bytes() as f64 / size as f64);
        let hits: Vec<QName> = listed.iter().step_by(size / 1000).map(|n| QName::parse(n).unwrap()).collect();
        let deep: Vec<QName> = listed.iter().step_by(size / 1000).map(|n| QName::parse(&format!("a.b.c.{n}")).unwrap()).collect();
        let misses: Vec<QName> = (0..1000).map(|i| QName::parse(&format!("www.site{i}.popular-example.org")).unwrap()).collect();
        let mut g = c.benchmark_group(format!("policy_check_{size}"));
        g.throughput(Throughput::Elements(1000));
        g.bench_function("hit", |b| b.iter(|| for q in &hits { black_box(index.check(black_box(q))); }));
        g.bench_function("subtree_hit_3_deep", |b| b.iter(|| for q in &deep { black_box(index.check(black_box(q))); }));
        g.bench_function("miss", |b| b.iter(|| for q in &misses { black_box(index.check(black_box(q))); }));
        g.finish();
        // cold: 200k listed names in random order, more than the CPU caches
        // hold, as the blocked workload sees them. Each hit misses the cache
        // at the table slot and at the record (its text sits in the record):
        // ~240 ns at 1M rules on the shared machine. The hashbrown layout
        // before it (control group, slot, rule record, text: four misses)
        // took 430–590 ns on the same machine and run. Touching the first
        // probe of a batch of 32 names before checking them was tried with
        // that layout: 12 % faster cold, 70 % slower warm, so not used
        let mut cold: Vec<QName> = listed.iter().step_by(5).map(|n| QName::parse(n).unwrap()).collect();
        shuffle(&mut cold);
        let mut g = c.benchmark_group(format!("policy_check_cold_{size}"));
        g.throughput(Throughput::Elements(cold.len() as u64));
        g.sample_size(10);
        g.bench_function("hit", |b| b.iter(|| for q in &cold { black_box(index.check(black_box(q))); }));
        // as the UDP fast path checks a batch of datagrams: hash every name,
        // touch every first slot, touch every record, then check each
        for batch in [4usize, 32] {
            g.bench_function(format!("hit_prefetched_batch_{batch}"), |b| {
                b.iter(|| {
                    for chunk in cold.chunks(batch) {
                        let mut hashes = [0u64; 32];
                        for (q, h) in chunk.iter().zip(hashes.iter_mut()) {
                            *h = index.name_hash(q.as_name());
                        }
                        for &h in hashes.iter().take(chunk.len()) {
                            index.prefetch_slot(h);
                        }
                        for &h in hashes.iter().take(chunk.len()) {
                            index.prefetch_rule(h);
                        }
                        for q in chunk {
                            black_box(index.check(black_box(q)));
                        }
                    }
                })
            });
        }
        g.finish();
    }
}

fn keywords(c: &mut Criterion) {
    let kw: Vec<Entry> = (0..1000).map(|i| Entry { line: i + 1, rule: Rule::Keyword(format!("kw{i}word")) }).collect();
    let index = Index::build(&[ListInput { allow: false, entries: &kw }]).unwrap();
    let q = QName::parse("some.long.name.with-kw500word-inside.example.com").unwrap();
    let miss = QName::parse("some.long.name.without.any.keyword.example.com").unwrap();
    let mut g = c.benchmark_group("keyword_1000");
    g.bench_function("hit", |b| b.iter(|| index.check(black_box(&q))));
    g.bench_function("miss", |b| b.iter(|| index.check(black_box(&miss))));
    g.finish();
}

fn compile(c: &mut Criterion) {
    let e = entries(&names(1_000_000));
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("1m_rules", |b| {
        b.iter_batched(|| (), |_| Index::build(&[ListInput { allow: false, entries: &e }]).unwrap(), BatchSize::PerIteration)
    });
    g.finish();
}

/// What counting costs per query: `Metrics::observe` (two atomic adds and a
/// histogram bucket) against doing nothing.
fn metrics(c: &mut Criterion) {
    let m = qalqan::metrics::Metrics::new().unwrap();
    let mut g = c.benchmark_group("metrics");
    g.bench_function("observe", |b| {
        b.iter(|| {
            m.observe(
                black_box(hickory_server::net::xfer::Protocol::Udp),
                black_box(qalqan::metrics::Outcome::Blocked),
                black_box(std::time::Duration::from_micros(7)),
            )
        })
    });
    g.bench_function("blocked_by_list", |b| b.iter(|| m.blocked(black_box("regulator"))));
    g.finish();
}

/// Cache hits with the entries out of the CPU caches (100k answers, looked up
/// in random order, as the cached workload sees them): `get_ref` one key at a
/// time against `get_batch` of 8 and 32 keys (as the UDP fast path looks up
/// a `recvmmsg` batch), reading each hit's first answer byte.
fn cache(c: &mut Criterion) {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{rdata::A, DNSClass, Name, RData, Record, RecordType};
    use qalqan::resolve::cache::{Cache, Key, KeyRef, Lookup, TtlPolicy};
    let cache = Cache::new(200_000, TtlPolicy { min_ttl: 0, max_ttl: 86_400, max_negative_ttl: 3600, stale_max: 0 });
    let now = std::time::Instant::now();
    let mut keys = Vec::new();
    for n in names(100_000) {
        let Ok(owner) = Name::from_ascii(format!("{n}.")) else { continue };
        let Ok(qname) = QName::parse(&n) else { continue };
        let key = Key { name: qname, qtype: RecordType::A, qclass: DNSClass::IN, dnssec_ok: false, checking_disabled: false };
        let answer = qalqan::resolve::Answer {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(owner.clone(), 300, RData::A(A::new(192, 0, 2, 1)))],
            authorities: vec![],
            additionals: vec![],
            authentic_data: false,
        };
        if cache.insert_answer(&key, &owner, &answer, now).is_some_and(|(_, stored)| stored) {
            keys.push(key);
        }
    }
    shuffle(&mut keys);
    let refs: Vec<Option<KeyRef<'_>>> = keys.iter().map(|k| Some(k.as_ref())).collect();
    let mut g = c.benchmark_group("cache_hit_cold_100k");
    g.throughput(Throughput::Elements(refs.len() as u64));
    g.sample_size(10);
    g.bench_function("get_ref", |b| {
        b.iter(|| {
            for k in refs.iter().flatten() {
                black_box(cache.get_ref(k, now).map(|e| e.wire.bytes.first().copied()));
            }
        })
    });
    for batch in [8usize, 32] {
        g.bench_function(format!("get_batch_{batch}"), |b| {
            let mut out: Vec<Option<Lookup<u8>>> = (0..batch).map(|_| None).collect();
            b.iter(|| {
                for chunk in refs.chunks(batch) {
                    cache.get_batch(chunk, now, &mut out, |_, e| e.wire.bytes.first().copied());
                    black_box(&out);
                }
            })
        });
    }
    g.finish();
}

/// The answer-address check (`Index::check_ip`) at 100k prefixes: v4 /32s
/// with a share of /24 and /16 and v6 /128 and /48, 1000 answer addresses
/// per iteration (half inside a prefix, in random order).
fn answer_ip(c: &mut Criterion) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut e = Vec::with_capacity(100_000);
    let mut inside = Vec::new();
    for i in 0..100_000u32 {
        let r = rand();
        let net: ipnet::IpNet = match i % 10 {
            0 => ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(u128::from(r) << 64), 48).unwrap().trunc().into(),
            1 => ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(u128::from(r) << 32 | 1), 128).unwrap().into(),
            2 => ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(r as u32), 24).unwrap().trunc().into(),
            3 if i % 100 == 3 => ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(r as u32), 16).unwrap().trunc().into(),
            _ => ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(r as u32), 32).unwrap().into(),
        };
        if i % 100 == 0 {
            inside.push(net.addr());
        }
        e.push(Entry { line: i + 1, rule: Rule::AnswerIp { net, action: RuleAction::List } });
    }
    let index = Index::build(&[ListInput { allow: false, entries: &e }]).unwrap();
    let mut probes: Vec<std::net::IpAddr> = inside.into_iter().take(500).collect();
    while probes.len() < 1000 {
        let r = rand();
        probes.push(if r % 4 == 0 { std::net::Ipv6Addr::from(u128::from(r) << 40).into() } else { std::net::Ipv4Addr::from(r as u32).into() });
    }
    shuffle(&mut probes);
    eprintln!("answer-ip index at 100k prefixes: {} bytes", index.memory_bytes());
    let mut g = c.benchmark_group("answer_ip_100k");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("check_ip", |b| {
        b.iter(|| probes.iter().filter(|ip| index.check_ip(black_box(**ip)).1.is_some()).count())
    });
    g.finish();
}

/// One DNSSEC-validated RRset: `www.bench.test. A` (two addresses, one
/// ECDSA P-256 RRSIG) from the committed zone `benches/data/dnssec-p256.zone`
/// (signed until 2045). Cost per call: one ECDSA verification plus building
/// the canonical signed data.
fn dnssec_verify_rrset(c: &mut Criterion) {
    use qalqan::dnssec::{self, Anchor, Trust};
    use qalqan::dnssec::text::parse_records;

    let text = include_str!("data/dnssec-p256.zone");
    let records: Vec<_> = parse_records(text).expect("bench zone parses").into_iter().map(|(_, r)| r).collect();
    let of = |name: &str, t: RecordType| -> Vec<Record> {
        let name = Name::from_ascii(name).unwrap();
        records.iter().filter(|r| r.name == name && r.record_type() == t).cloned().collect()
    };
    let zone = Name::from_ascii("bench.test.").unwrap();
    let ksk = of("bench.test.", RecordType::DNSKEY)
        .into_iter()
        .filter_map(|r| match r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) if k.secure_entry_point() => Some(k),
            _ => None,
        })
        .collect();
    let anchor = Anchor { ds: Vec::new(), dnskeys: ksk };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32;
    let keys = dnssec::verify_dnskeys(&zone, &of("bench.test.", RecordType::DNSKEY), &of("bench.test.", RecordType::RRSIG), Trust::Anchor(&anchor), now)
        .expect("bench zone keys validate")
        .expect("bench zone is signed");
    let rrset = of("www.bench.test.", RecordType::A);
    let sigs = of("www.bench.test.", RecordType::RRSIG);
    dnssec::verify_rrset(&rrset, &sigs, &keys, now).expect("bench RRset validates");
    c.bench_function("dnssec_verify_rrset", |b| b.iter(|| dnssec::verify_rrset(black_box(&rrset), black_box(&sigs), &keys, now)));
}

/// Incremental publish at 1M rules (a pushed list): the policy check with
/// no delta (the one-branch cost), with a pending delta of 10 added and 10
/// removed names (hit on the base, hit on the delta, miss), and a PATCH of
/// 10 names published as a delta (adding then removing the same 10, so the
/// delta stays small across iterations; includes the PATCH's pass over the
/// 1M-line body and the content hash).
fn delta(c: &mut Criterion) {
    use qalqan::lists::publish::Lists;
    use qalqan::lists::push::{PushEntry, PushMethod};
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[state]\ndir = \"{}\"\n[[lists]]\nname = \"reg\"\nsource = \"push\"\nformat = \"domains\"\nmax_rules = 2000000\nmax_bytes = 200000000\n",
        dir.path().display()
    );
    let config = qalqan::config::Config::from_toml_str(&toml, "bench.toml").unwrap();
    let specs = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect();
    let lists = Lists::new(specs, std::sync::Arc::new(qalqan::metrics::Metrics::new().unwrap()), None);
    let listed = names(1_000_000);
    let body = listed.join("\n") + "\n";
    let entry = |method, body: Vec<u8>| PushEntry { method, version: 0, base_version: None, timestamp: None, signature: None, body: body.into() };
    let id = qalqan::rules::ListId::from_raw(0);
    lists.offer_push(id, entry(PushMethod::Put, body.into_bytes()), "bench".into()).unwrap();
    let hits: Vec<QName> = listed.iter().step_by(1000).map(|n| QName::parse(n).unwrap()).collect();
    let misses: Vec<QName> = (0..1000).map(|i| QName::parse(&format!("www.site{i}.popular-example.org")).unwrap()).collect();
    let added: Vec<QName> = (0..10).map(|i| QName::parse(&format!("urgent{i}.test")).unwrap()).collect();
    let no_delta = lists.policy.load_full();
    assert!(no_delta.delta.is_none());
    let mut patch = String::new();
    for i in 0..10 {
        patch.push_str(&format!("+urgent{i}.test\n-{}\n", listed[i * 7919 + 1]));
    }
    lists.offer_push(id, entry(PushMethod::Patch, patch.into_bytes()), "bench".into()).unwrap();
    let with_delta = lists.policy.load_full();
    assert!(with_delta.delta.is_some());
    let mut g = c.benchmark_group("policy_delta_1m");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("hit_no_delta", |b| b.iter(|| for q in &hits { black_box(no_delta.check(black_box(q))); }));
    g.bench_function("miss_no_delta", |b| b.iter(|| for q in &misses { black_box(no_delta.check(black_box(q))); }));
    g.bench_function("hit_with_delta", |b| b.iter(|| for q in &hits { black_box(with_delta.check(black_box(q))); }));
    g.bench_function("miss_with_delta", |b| b.iter(|| for q in &misses { black_box(with_delta.check(black_box(q))); }));
    g.throughput(Throughput::Elements(10));
    g.bench_function("hit_in_delta", |b| b.iter(|| for q in &added { black_box(with_delta.check(black_box(q))); }));
    g.finish();
    let mut g = c.benchmark_group("publish_delta_1m");
    g.sample_size(20);
    let mut round = 0u64;
    g.bench_function("patch_10_names", |b| {
        b.iter(|| {
            round += 1;
            let sign = if round % 2 == 1 { '+' } else { '-' };
            let patch: String = (0..10).map(|i| format!("{sign}flip{i}.test\n")).collect();
            lists.offer_push(id, entry(PushMethod::Patch, patch.into_bytes()), "bench".into()).unwrap()
        })
    });
    g.finish();
}

/// `[[views]]`: the client → view lookup over 1000 prefixes (4 views, /24s
/// and /16s mixed, IPv4 and IPv6 clients), and the policy check of 100k
/// rules in three lists restricted to a view's lists beside the check
/// without views (`check_in(name, None)`, what a server without views does).
fn views(c: &mut Criterion) {
    let mut toml = String::new();
    for (name, reg) in [("regulator", true), ("adult", false), ("malware", false)] {
        toml.push_str(&format!("[[lists]]\nname = \"{name}\"\nsource = \"{name}.txt\"\nregulator = {reg}\n"));
    }
    for v in 0..4 {
        let clients: Vec<String> = (0..250)
            .map(|i| match i % 3 {
                0 => format!("\"10.{v}.{i}.0/24\""),
                1 => format!("\"2001:db8:{v:x}:{i:x}::/64\""),
                _ => format!("\"{}.{}.0.0/16\"", 100 + v, i),
            })
            .collect();
        let lists = if v % 2 == 0 { "[\"adult\", \"malware\"]" } else { "[\"malware\"]" };
        toml.push_str(&format!("[[views]]\nname = \"v{v}\"\nclients = [{}]\nlists = {lists}\n", clients.join(", ")));
    }
    let config = qalqan::config::Config::from_toml_str(&toml, "bench.toml").unwrap();
    let views = qalqan::views_of(&config.views).unwrap();
    let listed = names(100_000);
    let (reg, rest) = listed.split_at(50_000);
    let (adult, malware) = rest.split_at(25_000);
    let (e0, e1, e2) = (entries(reg), entries(adult), entries(malware));
    let index = Index::build(&[
        ListInput { allow: false, entries: &e0 },
        ListInput { allow: false, entries: &e1 },
        ListInput { allow: false, entries: &e2 },
    ])
    .unwrap();
    let policy = qalqan::lists::policy_of(&config.lists, index, 1);
    let clients: Vec<std::net::IpAddr> = (0..1000u32)
        .map(|i| match i % 4 {
            0 => format!("10.{}.{}.7", i % 4, i % 250),
            1 => format!("2001:db8:{:x}:{:x}::9", i % 4, i % 250),
            2 => format!("{}.{}.3.4", 100 + i % 4, i % 250),
            _ => format!("192.0.2.{}", i % 250), // no view
        })
        .map(|s| s.parse().unwrap())
        .collect();
    let hits: Vec<QName> = listed.iter().step_by(100).map(|n| QName::parse(n).unwrap()).collect();
    let misses: Vec<QName> = (0..1000).map(|i| QName::parse(&format!("www.site{i}.popular-example.org")).unwrap()).collect();
    let view = views.of("10.0.3.7".parse().unwrap()).map(|v| &v.lists);
    assert!(view.is_some());
    let mut g = c.benchmark_group("views");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("client_lookup_1000_prefixes", |b| b.iter(|| for ip in &clients { black_box(views.of(black_box(*ip))); }));
    g.bench_function("check_hit_no_views", |b| b.iter(|| for q in &hits { black_box(policy.check_in(black_box(q).as_name(), None)); }));
    g.bench_function("check_hit_in_view", |b| b.iter(|| for q in &hits { black_box(policy.check_in(black_box(q).as_name(), view)); }));
    g.bench_function("check_miss_no_views", |b| b.iter(|| for q in &misses { black_box(policy.check_in(black_box(q).as_name(), None)); }));
    g.bench_function("check_miss_in_view", |b| b.iter(|| for q in &misses { black_box(policy.check_in(black_box(q).as_name(), view)); }));
    g.bench_function("lookup_and_check_hit", |b| {
        b.iter(|| {
            for (q, ip) in hits.iter().zip(&clients) {
                black_box(policy.check_in(q.as_name(), views.of(black_box(*ip)).map(|v| &v.lists)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, normalise, check, keywords, compile, metrics, cache, answer_ip, dnssec_verify_rrset, delta, views);
criterion_main!(benches);
