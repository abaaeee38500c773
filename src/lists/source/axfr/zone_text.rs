//! Records as zone-file lines: how a transferred zone reaches qalqan's own
//! RPZ text parser, and the persisted copy of it.

use std::fmt::Write as _;

use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Renders records as zone-file lines ("owner TTL IN TYPE rdata"), for feeding qalqan's own RPZ text parser.
///
/// First line `$ORIGIN origin.`; every owner and every name in rdata is
/// absolute with a trailing dot (so `CNAME .`, `CNAME *.` and
/// `CNAME rpz-passthru.` come out exactly so); names are in ASCII
/// (punycode, never decoded to Unicode); TXT strings are quoted with `"`
/// and `\` escaped and other non-printable bytes as `\DDD`. Types with no
/// presentation form here are written as RFC 3597 `TYPEnnn \# len hex`.
/// Cost: O(total record size), one `String`.
pub fn to_zone_text(origin: &Name, records: &[Record]) -> String {
    let mut out = String::with_capacity(records.len().saturating_mul(48).saturating_add(64));
    let _ = writeln!(out, "$ORIGIN {}", abs(origin));
    for r in records {
        let _ = write!(out, "{} {} {} ", abs(&r.name), r.ttl, r.dns_class);
        write_type_and_rdata(&mut out, r);
        out.push('\n');
    }
    out
}

fn abs(name: &Name) -> String {
    let mut s = name.to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn write_type_and_rdata(out: &mut String, r: &Record) {
    let rtype = r.record_type();
    match &r.data {
        RData::CNAME(n) => {
            let _ = write!(out, "CNAME {}", abs(&n.0));
        }
        RData::NS(n) => {
            let _ = write!(out, "NS {}", abs(&n.0));
        }
        RData::PTR(n) => {
            let _ = write!(out, "PTR {}", abs(&n.0));
        }
        RData::A(a) => {
            let _ = write!(out, "A {}", a.0);
        }
        RData::AAAA(a) => {
            let _ = write!(out, "AAAA {}", a.0);
        }
        RData::MX(mx) => {
            let _ = write!(out, "MX {} {}", mx.preference, abs(&mx.exchange));
        }
        RData::SOA(s) => {
            let _ = write!(
                out,
                "SOA {} {} {} {} {} {} {}",
                abs(&s.mname),
                abs(&s.rname),
                s.serial,
                s.refresh,
                s.retry,
                s.expire,
                s.minimum
            );
        }
        RData::TXT(t) => {
            out.push_str("TXT");
            for s in t.txt_data.iter() {
                out.push(' ');
                quote_into(out, s);
            }
            if t.txt_data.is_empty() {
                out.push_str(" \"\"");
            }
        }
        RData::Unknown { rdata, .. } => write_generic(out, rtype, &rdata.anything),
        RData::Update0(_) => write_generic(out, rtype, &[]),
        other => {
            let text = other.to_string();
            if text.contains('\n') || matches!(rtype, RecordType::Unknown(_)) {
                write_generic(out, rtype, &[]);
            } else {
                let _ = write!(out, "{rtype} {text}");
            }
        }
    }
}

fn write_generic(out: &mut String, rtype: RecordType, bytes: &[u8]) {
    let _ = write!(out, "TYPE{} \\# {}", u16::from(rtype), bytes.len());
    if !bytes.is_empty() {
        out.push(' ');
        for b in bytes {
            let _ = write!(out, "{b:02x}");
        }
    }
}

fn quote_into(out: &mut String, s: &[u8]) {
    out.push('"');
    for &b in s {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use hickory_proto::rr::rdata::{A, TXT};

    #[test]
    fn zone_text_lines() {
        let txt = Record::from_rdata(
            name("t.rpz.test."),
            60,
            RData::TXT(TXT::from_bytes(vec![&b"a \"q\" \\ b"[..], &[7u8, b'x'][..]])),
        );
        let cases: Vec<(&str, Record, &str)> = vec![
            (
                "nxdomain",
                cname("bad.example", "."),
                "bad.example.rpz.test. 300 IN CNAME .",
            ),
            (
                "nodata",
                cname("*.bad.example", "*."),
                "*.bad.example.rpz.test. 300 IN CNAME *.",
            ),
            (
                "passthru",
                cname("ok.example", "rpz-passthru."),
                "ok.example.rpz.test. 300 IN CNAME rpz-passthru.",
            ),
            (
                "drop",
                cname("d.example", "rpz-drop."),
                "d.example.rpz.test. 300 IN CNAME rpz-drop.",
            ),
            (
                "redirect",
                cname("r.example", "walled.example."),
                "r.example.rpz.test. 300 IN CNAME walled.example.",
            ),
            (
                "idn stays ascii",
                cname("xn--80ak6aa92e.com", "."),
                "xn--80ak6aa92e.com.rpz.test. 300 IN CNAME .",
            ),
            (
                "a",
                Record::from_rdata(name("l.rpz.test."), 5, RData::A(A::new(192, 0, 2, 1))),
                "l.rpz.test. 5 IN A 192.0.2.1",
            ),
            ("txt", txt, r#"t.rpz.test. 60 IN TXT "a \"q\" \\ b" "\007x""#),
            (
                "soa",
                soa(9),
                "rpz.test. 3600 IN SOA ns.rpz.test. admin.rpz.test. 9 3600 600 86400 60",
            ),
        ];
        for (case, record, want) in cases {
            let text = to_zone_text(&zone(), std::slice::from_ref(&record));
            assert_eq!(text, format!("$ORIGIN rpz.test.\n{want}\n"), "case `{case}`");
        }
    }

    #[test]
    fn zone_text_parses_as_rpz() {
        use crate::lists::parse::{rpz, ParseOutput};
        let records = vec![
            soa(9),
            Record::from_rdata(
                zone(),
                3600,
                RData::NS(hickory_proto::rr::rdata::NS(name("ns.rpz.test."))),
            ),
            cname("bad.example", "."),
            cname("*.bad.example", "*."),
            cname("ok.example", "rpz-passthru."),
            Record::from_rdata(name("l.rpz.test."), 5, RData::A(A::new(192, 0, 2, 1))),
            Record::from_rdata(
                name("l.rpz.test."),
                5,
                RData::TXT(TXT::new(vec!["blocked \"here\"".into()])),
            ),
        ];
        let text = to_zone_text(&zone(), &records);
        let mut out = ParseOutput::default();
        rpz::parse("axfr", text.as_bytes(), &mut out);
        assert_eq!(out.bad_lines, 0, "{:?}\n{text}", out.errors);
        assert_eq!(out.entries.len(), 4, "{:?}\n{text}", out.entries);
    }
}
