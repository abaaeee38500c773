//! `registry-xml`: the Russian blocked-resources registry as published
//! (`dump.xml`):
//!
//! ```text
//! <?xml version="1.0" encoding="windows-1251"?>
//! <reg:register updateTime="2026-12-01T10:00:00+03:00" formatVersion="2.4" xmlns:reg="http://rsoc.ru" xmlns:tns="http://rsoc.ru">
//! <content id="1" includeTime="2016-02-03T20:00:00" entryType="1" blockType="domain" urgencyType="1" hash="9C0F…">
//!   <decision date="2016-02-03" number="2-6-27/ 2016-02-03-20-АИ" org="ФНС"/>
//!   <domain><![CDATA[example.com]]></domain>
//!   <url><![CDATA[http://example.com/page]]></url>
//!   <ip>192.0.2.1</ip>
//!   <ipSubnet>198.51.100.0/24</ipSubnet>
//! </content>
//! </reg:register>
//! ```
//!
//! Read as a stream of events (quick-xml): the dump is never held as a
//! tree, only the `<content>` element being read. Markup is ASCII, so the
//! raw bytes are parsed as they are and each value is decoded on its own:
//! as Windows-1251 when the XML declaration says so (or the value is not
//! UTF-8), as UTF-8 otherwise. Names go through [`crate::name::normalize`]
//! (IDN → punycode).
//!
//! Rules, each with `decision: "<number> (<org>)"` as in
//! [`super::registry_csv`]:
//! - `blockType="domain"`: each `<domain>` exactly ([`Scope::Exact`]);
//! - `blockType="domain-mask"`: each `<domain>` (`*.name`) and everything below ([`Scope::Subtree`]);
//! - `blockType="default"` (or none): each `<url>` as in [`super::urls`]
//!   (a URL with a path blocks its host exactly: the whole host, not the
//!   page), and `<domain>` when the entry has no URL;
//! - `blockType="ip"`, and every `<ip>`/`<ipSubnet>` of any entry: a
//!   [`Rule::Ip`] (counted and exported for a firewall, see `ip_rules`).
//!
//! Entries are counted by `blockType` and by how DNS enforces them
//! ([`ParseOutput::entry_kinds`]): `enforced` (names, URLs without a path),
//! `host-level` (a URL with a path: DNS can only block the whole host),
//! `not enforceable by DNS` (`blockType="ip"`).

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};

use super::{push_rule, urls, ParseErrorKind, ParseOutput, Rule, RuleAction, Scope};

/// How entries that DNS enforces exactly are counted.
pub const ENFORCED: &str = "enforced";
/// Entries DNS can only enforce for a whole host (URLs with a path).
pub const HOST_LEVEL: &str = "host-level";
/// Entries DNS cannot enforce (bare addresses and subnets).
pub const NOT_DNS: &str = "not enforceable by DNS";

/// The `<content>` element being read.
#[derive(Default)]
struct Content {
    line: u32,
    block_type: String,
    urgent: bool,
    number: String,
    org: String,
    date: String,
    domains: Vec<String>,
    urls: Vec<String>,
    ips: Vec<String>,
}

/// Which child element's text is being collected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Domain,
    Url,
    Ip,
}

/// Parses a whole dump. Cost: O(bytes) with memory for one `<content>`
/// element beyond the rules; one `String` per value.
pub fn parse(file: &str, bytes: &[u8], out: &mut ParseOutput) {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let cp1251 = declares_cp1251(bytes);
    let decode = |v: &[u8]| -> String {
        match (cp1251, std::str::from_utf8(v)) {
            (false, Ok(s)) => s.to_owned(),
            _ => encoding_rs::WINDOWS_1251.decode_without_bom_handling(v).0.into_owned(),
        }
    };
    let mut reader = quick_xml::Reader::from_reader(bytes);
    // line counting: newlines between the last event and this one
    let (mut line, mut counted) = (1u32, 0usize);
    let mut at_line = |pos: usize| -> u32 {
        let end = pos.min(bytes.len());
        if end > counted {
            let n = memchr::memchr_iter(b'\n', bytes.get(counted..end).unwrap_or(&[])).count();
            line = line.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            counted = end;
        }
        line
    };
    let mut content: Option<Content> = None;
    let mut field: Option<Field> = None;
    let mut text = String::new();
    loop {
        let start = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                let n = at_line(start);
                out.error(file, n, 1, ParseErrorKind::Other(format!("XML: {e}")));
                break;
            }
        };
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"content" => {
                let n = at_line(start);
                let mut c = Content { line: n, block_type: "default".into(), ..Content::default() };
                for (k, v) in attributes(&e, &decode) {
                    match k.as_str() {
                        "blockType" => c.block_type = v,
                        "urgencyType" => c.urgent = v.trim() != "0" && !v.trim().is_empty(),
                        _ => {}
                    }
                }
                if empty {
                    finish(file, c, out);
                } else {
                    content = Some(c);
                }
            }
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"decision" => {
                if let Some(c) = content.as_mut() {
                    for (k, v) in attributes(&e, &decode) {
                        match k.as_str() {
                            "number" => c.number = v,
                            "org" => c.org = v,
                            "date" => c.date = v,
                            _ => {}
                        }
                    }
                }
            }
            Event::Start(e) if content.is_some() => {
                field = match e.local_name().as_ref() {
                    b"domain" => Some(Field::Domain),
                    b"url" => Some(Field::Url),
                    b"ip" | b"ipSubnet" | b"ipv6" | b"ipv6Subnet" => Some(Field::Ip),
                    _ => None,
                };
                text.clear();
            }
            Event::Text(t) if field.is_some() => text.push_str(&decode(&t)),
            Event::CData(t) if field.is_some() => text.push_str(&decode(&t)),
            Event::GeneralRef(r) if field.is_some() => match r.resolve_char_ref() {
                Ok(Some(ch)) => text.push(ch),
                _ => {
                    let name = decode(&r);
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => text.push_str(s),
                        None => {
                            let n = at_line(start);
                            out.error(file, n, 1, ParseErrorKind::Other(format!("unknown entity `&{name};`")));
                        }
                    }
                }
            },
            Event::End(e) => match e.local_name().as_ref() {
                b"content" => {
                    if let Some(c) = content.take() {
                        finish(file, c, out);
                    }
                    field = None;
                }
                _ => {
                    if let (Some(f), Some(c)) = (field.take(), content.as_mut()) {
                        let v = text.trim().to_owned();
                        if !v.is_empty() {
                            match f {
                                Field::Domain => c.domains.push(v),
                                Field::Url => c.urls.push(v),
                                Field::Ip => c.ips.push(v),
                            }
                        }
                    }
                }
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(c) = content.take() {
        let n = c.line;
        out.error(file, n, 1, ParseErrorKind::Other("<content> not closed".into()));
    }
    out.lines = at_line(bytes.len());
}

/// The attributes of `e`, decoded and unescaped; malformed ones skipped.
fn attributes(e: &BytesStart<'_>, decode: &dyn Fn(&[u8]) -> String) -> Vec<(String, String)> {
    e.attributes()
        .filter_map(Result::ok)
        .map(|a| {
            let key = decode(a.key.local_name().as_ref());
            let raw = decode(&a.value);
            let value = quick_xml::escape::unescape(&raw).map_or_else(|_| raw.clone(), Cow::into_owned);
            (key, value)
        })
        .collect()
}

/// Whether the XML declaration names Windows-1251.
fn declares_cp1251(bytes: &[u8]) -> bool {
    let head = bytes.get(..bytes.len().min(200)).unwrap_or(bytes);
    let end = memchr::memmem::find(head, b"?>").unwrap_or(head.len());
    let decl = String::from_utf8_lossy(head.get(..end).unwrap_or(head)).to_ascii_lowercase();
    decl.starts_with("<?xml") && (decl.contains("windows-1251") || decl.contains("cp1251"))
}

/// Turns one `<content>` entry into rules and counts it.
fn finish(file: &str, c: Content, out: &mut ParseOutput) {
    let decision = super::registry_csv::format_decision(&c.number, &c.org, &c.date);
    let n = c.line;
    let kind = c.block_type.trim().to_owned();
    *out.entry_kinds.entry(format!("blockType={kind}")).or_insert(0) += 1;
    if c.urgent {
        *out.entry_kinds.entry("urgent".into()).or_insert(0) += 1;
    }
    let mut enforcement = ENFORCED;
    let name = |out: &mut ParseOutput, raw: &str, scope: Scope| match crate::name::normalize(raw) {
        Ok(name) => push_rule(out, n, Rule::Name { name, scope, action: RuleAction::List, important: false, decision: decision.clone() }),
        Err(e) => out.error(file, n, 1, ParseErrorKind::Name(e)),
    };
    match kind.as_str() {
        "domain" => c.domains.iter().for_each(|d| name(out, d, Scope::Exact)),
        "domain-mask" => c.domains.iter().for_each(|d| name(out, d.strip_prefix("*.").unwrap_or(d), Scope::Subtree)),
        "ip" => enforcement = NOT_DNS,
        "default" | "" => {
            for u in &c.urls {
                if urls::split_url(u).is_ok_and(|p| p.has_path) {
                    enforcement = HOST_LEVEL;
                }
                urls::push_url(out, file, n, u, u, decision.clone());
            }
            if c.urls.is_empty() {
                c.domains.iter().for_each(|d| name(out, d, Scope::Exact));
            }
        }
        other => {
            out.unsupported(&format!("registry blockType `{other}`"));
            return;
        }
    }
    for ip in &c.ips {
        match super::parse_ip_net(ip) {
            Some(net) => push_rule(out, n, Rule::Ip { net, decision: decision.clone() }),
            None => out.error(file, n, 1, ParseErrorKind::BadAddress),
        }
    }
    *out.entry_kinds.entry(enforcement.to_owned()).or_insert(0) += 1;
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Format, Rule, Scope};

    fn rules(bytes: &[u8]) -> (Vec<String>, super::super::ParseOutput<'static>) {
        let out = parse(Format::RegistryXml, "dump.xml", bytes);
        let r = out
            .entries
            .iter()
            .map(|e| match &e.rule {
                Rule::Name { name, scope, decision, .. } => {
                    let s = if *scope == Scope::Exact { "exact" } else { "subtree" };
                    format!("{}:{name}/{s}@{}", e.line, decision.as_deref().map_or("-", |d| crate::rules::decision_parts(d).0))
                }
                Rule::Ip { net, .. } => format!("{}:{net}", e.line),
                other => format!("{other:?}"),
            })
            .collect();
        (r, out)
    }

    #[test]
    fn every_block_type_cp1251_idn_and_entities() {
        let xml = "<?xml version=\"1.0\" encoding=\"windows-1251\"?>\n\
<reg:register updateTime=\"2026-12-01T10:00:00+03:00\" formatVersion=\"2.4\" xmlns:reg=\"http://rsoc.ru\">\n\
<content id=\"1\" blockType=\"domain\" urgencyType=\"1\" hash=\"AB\">\n\
<decision date=\"2016-02-03\" number=\"2-6-27\" org=\"\u{424}\u{41d}\u{421}\"/>\n\
<domain><![CDATA[\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}]]></domain>\n\
</content>\n\
<content id=\"2\" blockType=\"domain-mask\"><decision number=\"n2\" org=\"o\"/><domain>*.mask.test</domain></content>\n\
<content id=\"3\"><decision number=\"n3\" org=\"o\"/><url>http://page.test/a?b=1&amp;c=2</url><url>https://whole.test/</url><domain>page.test</domain><ip>192.0.2.1</ip></content>\n\
<content id=\"4\" blockType=\"ip\"><decision number=\"n4\" org=\"o\"/><ip>192.0.2.9</ip><ipSubnet>198.51.100.0/24</ipSubnet></content>\n\
<content id=\"5\" blockType=\"weird\"><domain>x.test</domain></content>\n\
</reg:register>\n";
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(xml);
        let (r, out) = rules(&bytes);
        assert_eq!(
            r,
            [
                "3:xn--e1afmkfd.xn--p1ai/exact@2-6-27 (\u{424}\u{41d}\u{421})",
                "7:mask.test/subtree@n2 (o)",
                "8:page.test/exact@n3 (o)",
                "8:whole.test/subtree@n3 (o)",
                "8:192.0.2.1/32",
                "9:192.0.2.9/32",
                "9:198.51.100.0/24",
            ]
        );
        let kinds: Vec<String> = out.entry_kinds.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            kinds,
            [
                "blockType=default=1",
                "blockType=domain=1",
                "blockType=domain-mask=1",
                "blockType=ip=1",
                "blockType=weird=1",
                "enforced=2",
                "host-level=1",
                "not enforceable by DNS=1",
                "urgent=1"
            ]
        );
        assert_eq!(out.unsupported.get("registry blockType `weird`"), Some(&1));
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.lines, 12);
        // the decision's date rides along with it (structured DNS errors' `{date}`)
        let first = out.entries.first().and_then(|e| match &e.rule {
            Rule::Name { decision: Some(d), .. } => crate::rules::decision_parts(d).1,
            _ => None,
        });
        assert_eq!(first, Some("2016-02-03"));
    }

    #[test]
    fn utf8_and_malformed_input_never_panic() {
        let (r, out) = rules("<?xml version=\"1.0\"?><r><content blockType=\"domain\"><domain>\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}</domain></content></r>".as_bytes());
        assert_eq!(r, ["1:xn--e1afmkfd.xn--p1ai/exact@-"]);
        assert!(out.errors.is_empty());
        for bad in [&b"<r><content><domain>a.test</dom"[..], b"<r><content><url>http://[::1</url></content></r>", b"\xff\xfe<<<", b"<r><content blockType=\"domain\"><domain>&bogus;</domain></content></r>"] {
            let _ = rules(bad);
        }
        let (_, out) = rules(b"<r><content><domain>a.test</domain>");
        assert_eq!(out.bad_lines, 1);
    }
}
