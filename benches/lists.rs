//! List parse and compile benchmarks over the real files in `../shared/data/`
//! (skipped with a message when that directory is absent).
//! Run: `cargo bench --bench lists`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use qalqan::lists::parse::parse;
use qalqan::rules::Format;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");

fn parsers(c: &mut Criterion) {
    let files: &[(&str, Format)] = &[
        ("domains/hagezi-light-domains.txt", Format::Domains),
        ("domains/hagezi-light-wildcard.txt", Format::Domains),
        ("hosts/stevenblack-unified-fakenews.hosts", Format::Hosts),
        ("adblock/adguard-dns-filter-without-privacy.txt", Format::Adblock),
        ("adblock/hagezi-light-adblock.txt", Format::Adblock),
        ("rpz/hagezi-light.rpz", Format::Rpz),
        ("urls/phishing-database-links-ACTIVE.txt", Format::Urls),
        ("regulator-ru-zapret/dump-2016-06-13.csv", Format::RegistryCsv),
    ];
    let mut g = c.benchmark_group("parse");
    g.sample_size(10);
    for (file, format) in files {
        let path = format!("{DATA}/{file}");
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("skipping {path}: not found (../shared/data is only in the workspace)");
            continue;
        };
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(*file, |b| b.iter(|| parse(*format, "bench", black_box(&bytes))));
    }
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
