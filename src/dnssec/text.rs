//! Zone-file (presentation format) records, as `ldns-signzone`, `ldns-read-zone`,
//! `dig` and trust-anchor files print them: one record per logical line,
//! `( … )` joining lines, `;` comments, `$ORIGIN` and `$TTL` directives, a
//! blank owner repeating the previous one.
//!
//! hickory's zone parser (`serialize::txt::Parser`) refuses DNSKEY, RRSIG,
//! NSEC and NSEC3 ("should be dynamically generated"), so those four are
//! parsed here; every other type goes to `RData::try_from_str`. Names in
//! record data must be absolute (ldns and dig print them so).
//!
//! Cost: O(text length); one `Record` per record. No I/O.

use std::str::FromStr;

use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, NSEC, NSEC3, NSEC3PARAM, RRSIG, SigInput};
use hickory_proto::dnssec::{Algorithm, DigestType, Nsec3HashAlgorithm, PublicKeyBuf};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};

/// A record that could not be read, with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TextError {
    pub line: usize,
    pub message: String,
}

/// One logical line: the physical line it starts on, whether it starts with
/// blank space (owner omitted), and its text without comments or parentheses.
struct Logical {
    line: usize,
    indented: bool,
    text: String,
}

fn logical_lines(text: &str) -> Result<Vec<Logical>, TextError> {
    let mut out = Vec::new();
    let mut cur: Option<Logical> = None;
    let mut depth = 0u32;
    let mut paren_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut in_quote = false;
        let mut escaped = false;
        let mut kept = String::with_capacity(raw.len());
        for c in raw.chars() {
            if escaped {
                escaped = false;
                kept.push(c);
                continue;
            }
            match c {
                '\\' => {
                    escaped = true;
                    kept.push(c);
                }
                '"' => {
                    in_quote = !in_quote;
                    kept.push(c);
                }
                ';' if !in_quote => break,
                '(' if !in_quote => {
                    if depth == 0 {
                        paren_line = line;
                    }
                    depth += 1;
                    kept.push(' ');
                }
                ')' if !in_quote => {
                    depth = depth.checked_sub(1).ok_or_else(|| TextError { line, message: "`)` without `(`".into() })?;
                    kept.push(' ');
                }
                c => kept.push(c),
            }
        }
        match cur.as_mut() {
            Some(l) => {
                l.text.push(' ');
                l.text.push_str(&kept);
            }
            None if kept.trim().is_empty() => {}
            None => {
                cur = Some(Logical { line, indented: kept.starts_with([' ', '\t']), text: kept });
            }
        }
        if depth == 0 {
            if let Some(l) = cur.take() {
                out.push(l);
            }
        }
    }
    if depth > 0 {
        return Err(TextError { line: paren_line, message: "`(` never closed".into() });
    }
    Ok(out)
}

/// Every record of `text`, each with the line it starts on.
///
/// Fails on the first record that cannot be read (unknown type, bad rdata, a
/// relative owner with no `$ORIGIN`). Never panics on malformed input.
pub fn parse_records(text: &str) -> Result<Vec<(usize, Record)>, TextError> {
    let mut origin: Option<Name> = None;
    let mut default_ttl: Option<u32> = None;
    let mut last_owner: Option<Name> = None;
    let mut out = Vec::new();
    for l in logical_lines(text)? {
        let err = |message: String| TextError { line: l.line, message };
        let mut rest = l.text.trim();
        let (first, after) = next_token(rest);
        if first.eq_ignore_ascii_case("$ORIGIN") {
            let (o, _) = next_token(after);
            origin = Some(absolute_name(o, origin.as_ref()).map_err(err)?);
            continue;
        }
        if first.eq_ignore_ascii_case("$TTL") {
            let (t, _) = next_token(after);
            default_ttl = Some(parse_ttl(t).ok_or_else(|| err(format!("bad $TTL `{t}`")))?);
            continue;
        }
        if first.starts_with('$') {
            return Err(err(format!("directive {first} is not supported")));
        }
        let owner = if l.indented {
            last_owner.clone().ok_or_else(|| err("record with no owner name".into()))?
        } else {
            rest = after;
            if first == "@" {
                origin.clone().ok_or_else(|| err("`@` with no $ORIGIN".into()))?
            } else {
                absolute_name(first, origin.as_ref()).map_err(err)?
            }
        };
        last_owner = Some(owner.clone());
        // [ttl] [class] type, ttl and class in either order
        let mut ttl = None;
        let mut class = DNSClass::IN;
        let rtype = loop {
            let (tok, after) = next_token(rest);
            if tok.is_empty() {
                return Err(err("record with no type".into()));
            }
            rest = after;
            if let Some(t) = parse_ttl(tok).filter(|_| ttl.is_none()) {
                ttl = Some(t);
                continue;
            }
            match tok.to_ascii_uppercase().as_str() {
                "IN" => class = DNSClass::IN,
                "CH" => class = DNSClass::CH,
                "HS" => class = DNSClass::HS,
                up => break RecordType::from_str(up).map_err(|_| err(format!("unknown record type `{tok}`")))?,
            }
        };
        let ttl = ttl.or(default_ttl).unwrap_or(0);
        let data = parse_rdata(rtype, rest.trim()).map_err(|m| err(format!("{rtype}: {m}")))?;
        let mut record = Record::from_rdata(owner, ttl, data);
        record.dns_class = class;
        out.push((l.line, record));
    }
    Ok(out)
}

fn next_token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn absolute_name(text: &str, origin: Option<&Name>) -> Result<Name, String> {
    let name = Name::parse(text, origin).map_err(|e| format!("bad name `{text}`: {e}"))?;
    if !name.is_fqdn() {
        return Err(format!("relative name `{text}` with no $ORIGIN"));
    }
    Ok(name)
}

/// A TTL in seconds, or with BIND's unit letters (`1h30m`, `2d`).
fn parse_ttl(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<u32>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut n: u64 = 0;
    let mut digits = false;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            n = n.checked_mul(10)?.checked_add(u64::from(d))?;
            digits = true;
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604_800,
            _ => return None,
        };
        if !digits {
            return None;
        }
        total = total.checked_add(n.checked_mul(unit)?)?;
        n = 0;
        digits = false;
    }
    if digits {
        return None;
    }
    u32::try_from(total).ok()
}

fn num<T: FromStr>(tok: Option<&str>, what: &str) -> Result<T, String> {
    let tok = tok.ok_or_else(|| format!("missing {what}"))?;
    tok.parse().map_err(|_| format!("bad {what} `{tok}`"))
}

fn types(tokens: &mut dyn Iterator<Item = &str>) -> Result<Vec<RecordType>, String> {
    tokens
        .map(|t| {
            let up = t.to_ascii_uppercase();
            RecordType::from_str(&up)
                .ok()
                .or_else(|| up.strip_prefix("TYPE").and_then(|n| n.parse::<u16>().ok()).map(RecordType::from))
                .ok_or_else(|| format!("unknown type `{t}` in the bitmap"))
        })
        .collect()
}

fn base64(tokens: &mut dyn Iterator<Item = &str>, what: &str) -> Result<Vec<u8>, String> {
    let joined: String = tokens.collect();
    if joined.is_empty() {
        return Err(format!("missing {what}"));
    }
    data_encoding::BASE64.decode(joined.as_bytes()).map_err(|e| format!("bad base64 in {what}: {e}"))
}

fn hex(text: &str, what: &str) -> Result<Vec<u8>, String> {
    data_encoding::HEXUPPER_PERMISSIVE.decode(text.as_bytes()).map_err(|e| format!("bad hex in {what}: {e}"))
}

/// An RRSIG time: `YYYYMMDDHHmmSS` (UTC) or seconds since the epoch (RFC 4034 3.2).
fn sig_time(tok: Option<&str>, what: &str) -> Result<u32, String> {
    let tok = tok.ok_or_else(|| format!("missing {what}"))?;
    if tok.len() == 14 && tok.bytes().all(|b| b.is_ascii_digit()) {
        let f = |r: std::ops::Range<usize>| tok[r].parse::<i64>().unwrap_or(0);
        let secs = unix_seconds(f(0..4), f(4..6), f(6..8), f(8..10), f(10..12), f(12..14))
            .ok_or_else(|| format!("bad {what} `{tok}`"))?;
        // serial arithmetic: only the low 32 bits travel (RFC 4034 3.1.5)
        return Ok(secs as u32);
    }
    tok.parse::<u32>().map_err(|_| format!("bad {what} `{tok}`"))
}

/// Seconds since 1970-01-01T00:00:00Z of a UTC civil time, or `None` when a
/// field is out of range (days-from-civil, H. Hinnant's algorithm).
pub(crate) fn unix_seconds(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..=60).contains(&s) {
        return None;
    }
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + h * 3600 + mi * 60 + s)
}

/// The record data of one record of type `rtype` from its text.
pub fn parse_rdata(rtype: RecordType, text: &str) -> Result<RData, String> {
    let mut t = text.split_whitespace();
    let data = match rtype {
        RecordType::DNSKEY => {
            let flags: u16 = num(t.next(), "flags")?;
            let protocol: u8 = num(t.next(), "protocol")?;
            if protocol != 3 {
                return Err(format!("protocol {protocol}, not 3"));
            }
            let alg: u8 = num(t.next(), "algorithm")?;
            let key = base64(&mut t, "public key")?;
            DNSSECRData::DNSKEY(DNSKEY::with_flags(flags, PublicKeyBuf::new(key, Algorithm::from_u8(alg))))
        }
        RecordType::DS => {
            let tag: u16 = num(t.next(), "key tag")?;
            let alg: u8 = num(t.next(), "algorithm")?;
            let dt: u8 = num(t.next(), "digest type")?;
            let digest: String = t.collect();
            if digest.is_empty() {
                return Err("missing digest".into());
            }
            DNSSECRData::DS(DS::new(tag, Algorithm::from_u8(alg), DigestType::from(dt), hex(&digest, "digest")?))
        }
        RecordType::RRSIG => {
            let covered = t.next().ok_or("missing type covered")?;
            let type_covered = types(&mut std::iter::once(covered))?.pop().ok_or("missing type covered")?;
            let algorithm = Algorithm::from_u8(num(t.next(), "algorithm")?);
            let num_labels: u8 = num(t.next(), "labels")?;
            let original_ttl: u32 = num(t.next(), "original TTL")?;
            let expiration = sig_time(t.next(), "expiration")?;
            let inception = sig_time(t.next(), "inception")?;
            let key_tag: u16 = num(t.next(), "key tag")?;
            let signer = t.next().ok_or("missing signer name")?;
            let signer_name = absolute_name(signer, None)?;
            let sig = base64(&mut t, "signature")?;
            let input = SigInput {
                type_covered,
                algorithm,
                num_labels,
                original_ttl,
                sig_expiration: SerialNumber::new(expiration),
                sig_inception: SerialNumber::new(inception),
                key_tag,
                signer_name,
            };
            DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))
        }
        RecordType::NSEC => {
            let next = absolute_name(t.next().ok_or("missing next name")?, None)?;
            DNSSECRData::NSEC(NSEC::new(next, types(&mut t)?))
        }
        RecordType::NSEC3 | RecordType::NSEC3PARAM => {
            let alg: u8 = num(t.next(), "hash algorithm")?;
            let hash = Nsec3HashAlgorithm::try_from(alg).map_err(|_| format!("unknown hash algorithm {alg}"))?;
            let flags: u8 = num(t.next(), "flags")?;
            let iterations: u16 = num(t.next(), "iterations")?;
            let salt = match t.next().ok_or("missing salt")? {
                "-" => Vec::new(),
                s => hex(s, "salt")?,
            };
            if rtype == RecordType::NSEC3PARAM {
                DNSSECRData::NSEC3PARAM(NSEC3PARAM::new(hash, flags & 1 == 1, iterations, salt))
            } else {
                let next = t.next().ok_or("missing next hashed owner")?;
                let next = data_encoding::BASE32HEX_NOPAD
                    .decode(next.to_ascii_uppercase().as_bytes())
                    .map_err(|e| format!("bad base32hex next hashed owner: {e}"))?;
                DNSSECRData::NSEC3(NSEC3::new(hash, flags & 1 == 1, iterations, salt, next, types(&mut t)?))
            }
        }
        other => return RData::try_from_str(other, text).map_err(|e| e.to_string()),
    };
    Ok(RData::DNSSEC(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        let cases: &[(&str, Option<u32>)] =
            &[("3600", Some(3600)), ("1h", Some(3600)), ("1h30m", Some(5400)), ("2D", Some(172_800)), ("IN", None), ("h", None), ("", None), ("1x", None)];
        for (text, want) in cases {
            assert_eq!(parse_ttl(text), *want, "case `{text}`");
        }
    }

    #[test]
    fn civil_time() {
        assert_eq!(unix_seconds(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(unix_seconds(2020, 1, 1, 0, 0, 0), Some(1_577_836_800));
        assert_eq!(unix_seconds(2045, 1, 1, 0, 0, 0), Some(2_366_841_600));
        assert_eq!(unix_seconds(2020, 13, 1, 0, 0, 0), None);
    }

    #[test]
    fn records_of_every_kind() {
        let text = "$ORIGIN example.\n$TTL 300\n\
            @ IN SOA ns1 host ( 1 7200 3600\n 1209600 300 ) ; serial\n\
            \tIN NS ns1.example.\n\
            www 60 IN A 192.0.2.1\n\
            example. 3600 IN DNSKEY 257 3 13 aDgrJDpwVN2I1soHap3HDR07mMvK6S2K6xvI8qVM9Pm+6+dS5ZsUM/oatxbXYMqWU+hxtoc0Gle7gyMm2M882g== ;{id = 63174 (ksk), size = 256b}\n\
            example. IN 3600 RRSIG A 13 2 3600 20270104172929 20261207172929 24933 example. DO3y7usWOkiVThKK1ZNg4hEHfkGvRIR+s+I7RPDYXXKBBE38l7WvZwVo2QFTEM0JKGS+veIwk5d9AR4dH7/ItQ==\n\
            www IN NSEC zzz.example. A RRSIG NSEC TYPE65534\n\
            g3vkqkk51e55fh3a14ib1j6d51dmntl5 300 IN NSEC3 1 1 5 abcd  i2rooo38kp5fnla4ndjh1ka2l61jd1g4 NS SOA RRSIG DNSKEY NSEC3PARAM\n\
            @ IN NSEC3PARAM 1 0 5 -\n\
            sub IN DS 60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118\n";
        let recs = parse_records(text).unwrap();
        let kinds: Vec<(usize, String, RecordType, u32)> =
            recs.iter().map(|(l, r)| (*l, r.name.to_string(), r.record_type(), r.ttl)).collect();
        assert_eq!(
            kinds,
            vec![
                (3, "example.".into(), RecordType::SOA, 300),
                (5, "example.".into(), RecordType::NS, 300),
                (6, "www.example.".into(), RecordType::A, 60),
                (7, "example.".into(), RecordType::DNSKEY, 3600),
                (8, "example.".into(), RecordType::RRSIG, 3600),
                (9, "www.example.".into(), RecordType::NSEC, 300),
                (10, "g3vkqkk51e55fh3a14ib1j6d51dmntl5.example.".into(), RecordType::NSEC3, 300),
                (11, "example.".into(), RecordType::NSEC3PARAM, 300),
                (12, "sub.example.".into(), RecordType::DS, 300),
            ]
        );
        let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &recs[4].1.data else { panic!("not an RRSIG") };
        assert_eq!(sig.input().sig_expiration.get(), unix_seconds(2027, 1, 4, 17, 29, 29).unwrap() as u32);
        assert_eq!(sig.input().key_tag, 24933);
        let RData::DNSSEC(DNSSECRData::DNSKEY(key)) = &recs[3].1.data else { panic!("not a DNSKEY") };
        assert_eq!(key.calculate_key_tag().unwrap(), 63174);
        let RData::DNSSEC(DNSSECRData::NSEC3(n3)) = &recs[6].1.data else { panic!("not an NSEC3") };
        assert!(n3.opt_out());
        assert_eq!((n3.iterations(), n3.salt()), (5, &[0xab, 0xcd][..]));
        assert_eq!(n3.next_hashed_owner_name().len(), 20);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("www.example. IN A 1.2.3.4\nbad.example. IN BOGUS x\n", 2, "unknown record type"),
            ("www IN A 1.2.3.4\n", 1, "relative name"),
            ("\n\nx. IN DNSKEY 257 3 13 !!!\n", 3, "bad base64"),
            ("x. IN DNSKEY 257 2 13 AAAA\n", 1, "protocol 2"),
            ("x. IN DS 1 8 2\n", 1, "missing digest"),
            ("x. IN A ( 1.2.3.4\n", 1, "never closed"),
            ("x. IN A 1.2.3.4 )\n", 1, "without"),
            ("x. IN RRSIG A 13 2 3600 20271404172929 20261207172929 1 x. AAAA\n", 1, "bad expiration"),
            ("x. IN NSEC3 7 0 1 - aaaa A\n", 1, "unknown hash algorithm"),
            ("x.\n", 1, "no type"),
        ];
        for (text, line, needle) in cases {
            let e = parse_records(text).expect_err(text);
            assert_eq!(e.line, *line, "case `{text}`: {e}");
            assert!(e.message.contains(needle), "case `{text}`: {e}");
        }
    }
}
