//! Records as zone-file lines: the persisted copy of a transferred zone
//! (read back at start, by `qalqan check` and `qalqan export` as any RPZ
//! file). Nothing parses this text on the transfer path: the records go
//! to the RPZ parser as records (`lists::parse::rpz::parse_records`).

use std::borrow::Borrow;
use std::fmt::Write as _;

use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Renders records as zone-file lines ("owner TTL IN TYPE rdata"), in the
/// order given: the persisted copy of a transferred zone, which qalqan's own
/// RPZ text parser reads back like any zone file.
///
/// First line `$ORIGIN origin.`; every owner and every name in rdata is
/// absolute with a trailing dot (so `CNAME .`, `CNAME *.` and
/// `CNAME rpz-passthru.` come out exactly so); names are in ASCII
/// (punycode, never decoded to Unicode); TXT strings are quoted with `"`
/// and `\` escaped and other non-printable bytes as `\DDD`. Types with no
/// presentation form here are written as RFC 3597 `TYPEnnn \# len hex`.
/// Cost: O(total record size), one `String`.
pub fn to_zone_text<R: Borrow<Record>>(origin: &Name, records: impl IntoIterator<Item = R>) -> String {
    let records = records.into_iter();
    let mut out = String::with_capacity(records.size_hint().0.saturating_mul(48).saturating_add(64));
    let _ = writeln!(out, "$ORIGIN {}", abs(origin));
    for r in records {
        let r = r.borrow();
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

    /// A zone with every trigger and action kind qalqan reads, plus the
    /// records it skips or refuses: parsed from its records and from its
    /// text, it gives the same rules (a record's line is its index; the
    /// text has `$ORIGIN` as line 1), unsupported counts and bad records.
    #[test]
    fn records_parse_like_their_zone_text() {
        use crate::lists::parse::{rpz, LocalData, ParseOutput, Rule, RuleAction, Scope};
        use hickory_proto::rr::rdata::{AAAA, CNAME, MX, NS, NULL};
        use hickory_proto::rr::DNSClass;
        let at = |owner: &str, data: RData| Record::from_rdata(name(&format!("{owner}.rpz.test.")), 300, data);
        let to = |owner: &str, target: &str| at(owner, RData::CNAME(CNAME(name(target))));
        let in_class = |mut r: Record, class: DNSClass| {
            r.dns_class = class;
            r
        };
        let records = vec![
            soa(9),
            Record::from_rdata(zone(), 3600, RData::NS(NS(name("ns.rpz.test.")))),
            Record::from_rdata(zone(), 300, RData::A(A::new(192, 0, 2, 53))),
            to("bad.example", "."),
            to("*.bad.example", "."),
            to("nodata.example", "*."),
            to("ok.example", "rpz-passthru."),
            to("drop.example", "rpz-drop."),
            to("legacy.example", "legacy.example."),
            to("redirect.example", "walled.example."),
            to("*.below.example", "Walled.Example."),
            to("Bad2.EXAMPLE", "."),
            to("xn--80ak6aa92e.com", "."),
            to("32.10.2.0.192.rpz-ip", "."),
            to("48.zz.db8.2001.rpz-ip", "rpz-drop."),
            at("24.0.2.0.192.rpz-ip", RData::A(A::new(192, 0, 2, 99))),
            at("www.example", RData::A(A::new(192, 0, 2, 1))),
            to("between.example", "."),
            at("www.example", RData::A(A::new(192, 0, 2, 2))),
            at("www.example", RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
            at("www.example", RData::TXT(TXT::new(vec!["blocked \"here\"".into(), "; see \\ (policy)".into()]))),
            at("empty.example", RData::TXT(TXT::new(vec![]))),
            in_class(to("chaos.example", "."), DNSClass::CH),
            // skipped, counted as unsupported
            to("tcp.example", "rpz-tcp-only."),
            to("wild.example", "*.walled.example."),
            to("ns.bad.example.rpz-nsdname", "."),
            to("32.1.2.0.192.rpz-client-ip", "rpz-drop."),
            at("mx.example", RData::MX(MX::new(10, name("mail.example.")))),
            // refused, counted as bad
            to("24.1.2.0.192.rpz-ip", "."),
            to("*.*.x", "."),
            in_class(to("none.example", "."), DNSClass::NONE),
            at("u.example", RData::Unknown { code: RecordType::Unknown(65280), rdata: NULL::with(vec![1, 2]) }),
        ];

        let text = to_zone_text(&zone(), &records);
        let mut from_text = ParseOutput::default();
        rpz::parse("axfr", text.as_bytes(), &mut from_text);
        let mut from_records = ParseOutput::default();
        rpz::parse_records("axfr", &zone(), &records, &mut from_records);

        let text_entries: Vec<(u32, Rule)> = from_text.entries.iter().map(|e| (e.line - 1, e.rule.clone())).collect();
        let record_entries: Vec<(u32, Rule)> = from_records.entries.iter().map(|e| (e.line, e.rule.clone())).collect();
        assert_eq!(record_entries, text_entries, "{text}");
        assert_eq!(from_records.rules, from_text.rules);
        assert_eq!(from_records.unsupported, from_text.unsupported, "{text}");
        assert_eq!(from_records.bad_lines, from_text.bad_lines, "{text}");
        let errors = |out: &ParseOutput<'_>, shift: u32| out.errors.iter().map(|e| (e.line - shift, e.kind.clone())).collect::<Vec<_>>();
        assert_eq!(errors(&from_records, 0), errors(&from_text, 1), "{text}");
        assert_eq!(from_records.lines, u32::try_from(records.len()).unwrap());

        // the zone does cover every kind (so that the comparison means something)
        let rules: Vec<&Rule> = record_entries.iter().map(|(_, r)| r).collect();
        let has = |f: &dyn Fn(&Rule) -> bool| rules.iter().any(|r| f(r));
        let name_action = |want: RuleAction, want_scope: Scope| {
            move |r: &Rule| matches!(r, Rule::Name { action, scope, .. } if *action == want && *scope == want_scope)
        };
        assert!(has(&name_action(RuleAction::Nxdomain, Scope::Exact)), "QNAME");
        assert!(has(&name_action(RuleAction::Nxdomain, Scope::Below)), "wildcard");
        assert!(has(&name_action(RuleAction::Nodata, Scope::Exact)), "CNAME *.");
        assert!(has(&name_action(RuleAction::Allow, Scope::Exact)), "passthru");
        assert!(has(&name_action(RuleAction::Drop, Scope::Exact)), "drop");
        assert!(has(&|r| matches!(r, Rule::AnswerIp { action: RuleAction::Nxdomain, .. })), "rpz-ip");
        assert!(has(&|r| matches!(r, Rule::AnswerIp { action: RuleAction::Local(_), .. })), "rpz-ip local data");
        let walled = RuleAction::Local(vec![LocalData::Cname("walled.example".into())]);
        assert!(has(&name_action(walled.clone(), Scope::Exact)), "walled garden");
        assert!(has(&name_action(walled, Scope::Below)), "walled garden below");
        let www = RuleAction::Local(vec![
            LocalData::A("192.0.2.1".parse().unwrap()),
            LocalData::A("192.0.2.2".parse().unwrap()),
            LocalData::Aaaa("2001:db8::1".parse().unwrap()),
            LocalData::Txt("blocked \"here\"; see \\ (policy)".into()),
        ]);
        assert!(has(&name_action(www, Scope::Exact)), "local A/AAAA/TXT merged");
        assert!(from_records.unsupported.len() >= 5 && from_records.bad_lines == 4, "{:?} {:?}", from_records.unsupported, from_records.errors);
    }

    /// TXT bytes outside printable ASCII: the records keep them; the text
    /// parser reads the `\DDD` escapes of the zone text as digits (a known
    /// gap of the text path, see `rpz::parse_records`).
    #[test]
    fn txt_bytes_are_kept_from_records() {
        use crate::lists::parse::{rpz, LocalData, ParseOutput, Rule, RuleAction};
        let txt = Record::from_rdata(name("t.rpz.test."), 60, RData::TXT(TXT::new(vec!["блок".into()])));
        let mut out = ParseOutput::default();
        rpz::parse_records("axfr", &zone(), [&txt], &mut out);
        assert!(matches!(&out.entries[0].rule, Rule::Name { action: RuleAction::Local(v), .. } if v == &vec![LocalData::Txt("блок".into())]));
    }
}
