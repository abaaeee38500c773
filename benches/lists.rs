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

/// A transferred RPZ zone of 100k records (QNAME, wildcard and local-data
/// triggers): parsed from its records, as zone transfers are now, against
/// the text round trip they replaced (render, then the text parser), and
/// the render alone (still done, for the persisted copy and the version),
/// and decoding the wire form `zone_sync` keeps the zone in, then parsing.
fn zone_transfer(c: &mut Criterion) {
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData, Record};
    use qalqan::lists::parse::{rpz, ParseOutput};
    use qalqan::lists::source::to_zone_text;
    let origin = Name::from_ascii("rpz.test.").unwrap();
    let name = |s: String| Name::from_ascii(s).unwrap();
    let records: Vec<Record> = (0..100_000)
        .map(|i| {
            let owner = name(format!("host{i}.blocked-domain-number-{i}.example.rpz.test."));
            match i % 10 {
                0 => Record::from_rdata(owner, 300, RData::A(A::new(192, 0, 2, (i % 250) as u8))),
                1 => Record::from_rdata(name(format!("*.wild{i}.example.rpz.test.")), 300, RData::CNAME(CNAME(name(".".into())))),
                _ => Record::from_rdata(owner, 300, RData::CNAME(CNAME(name(".".into())))),
            }
        })
        .collect();
    eprintln!("size_of::<Record>() = {} bytes", std::mem::size_of::<Record>());
    let mut g = c.benchmark_group("zone_transfer_100k");
    g.sample_size(10);
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("records", |b| {
        b.iter(|| {
            let mut out = ParseOutput::default();
            rpz::parse_records("bench", &origin, black_box(&records), &mut out);
            out
        })
    });
    g.bench_function("text_round_trip", |b| {
        b.iter(|| {
            let text = to_zone_text(&origin, black_box(&records));
            let mut out = ParseOutput::default();
            rpz::parse("bench", text.as_bytes(), &mut out);
            out
        })
    });
    g.bench_function("render_only", |b| b.iter(|| to_zone_text(&origin, black_box(&records))));
    // zone_sync keeps the zone as wire records and decodes it for each update
    let wire: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
            let mut buf = Vec::new();
            let mut enc = BinEncoder::new(&mut buf);
            enc.set_name_encoding(NameEncoding::Uncompressed);
            r.emit(&mut enc).unwrap();
            buf
        })
        .collect();
    g.bench_function("records_from_wire", |b| {
        use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
        b.iter(|| {
            let decoded = black_box(&wire).iter().filter_map(|w| Record::read(&mut BinDecoder::new(w)).ok());
            let mut out = ParseOutput::default();
            rpz::parse_records("bench", &origin, decoded, &mut out);
            out
        })
    });
    g.finish();
}

criterion_group!(benches, parsers, zone_transfer);
criterion_main!(benches);
