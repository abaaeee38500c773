//! Trust anchors: the DS and DNSKEY records a validator trusts without proof,
//! per zone. Read from IANA's `root-anchors.xml` (RFC 7958, RFC 9718) or from
//! zone-file lines of DS and DNSKEY records (BIND's `root.key`, Unbound's
//! `trust-anchor-file` and `auto-trust-anchor-file`). No I/O: the caller reads
//! the file and passes its text.

use std::collections::BTreeMap;

use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS};
use hickory_proto::dnssec::{Algorithm, DigestType};
use hickory_proto::rr::{Name, RData};

use super::text::{self, unix_seconds};

/// The anchors of one zone: DS records (as a parent would publish them)
/// and/or DNSKEY records (the keys themselves).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchor {
    pub ds: Vec<DS>,
    pub dnskeys: Vec<DNSKEY>,
}

impl Anchor {
    pub fn is_empty(&self) -> bool {
        self.ds.is_empty() && self.dnskeys.is_empty()
    }
}

/// Trust anchors by zone name. Cheap to look up (a map walk per label).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustAnchors {
    zones: BTreeMap<Name, Anchor>,
}

/// A trust-anchor file that could not be used, naming `file:line`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct AnchorError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The IANA root KSKs as DS records (`root-anchors.xml` as published in 2024):
/// KSK-2017 (key tag 20326) and KSK-2024 (key tag 38696), RSASHA256, SHA-256.
const ROOT_DS: &[(u16, &str)] = &[
    (20326, "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"),
    (38696, "683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16"),
];

impl TrustAnchors {
    /// No anchors at all: every answer is insecure.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The IANA root KSKs compiled in (see [`ROOT_DS`]).
    pub fn builtin() -> Self {
        let ds = ROOT_DS
            .iter()
            .filter_map(|(tag, hex)| {
                let digest = data_encoding::HEXUPPER.decode(hex.as_bytes()).ok()?;
                Some(DS::new(*tag, Algorithm::RSASHA256, DigestType::SHA256, digest))
            })
            .collect();
        let mut zones = BTreeMap::new();
        zones.insert(Name::root(), Anchor { ds, dnskeys: Vec::new() });
        Self { zones }
    }

    /// Reads an anchor file: RFC 7958 XML (when the text starts with `<`), or
    /// zone-file lines of DS and/or DNSKEY records with `;` comments. In
    /// Unbound's auto-trust-anchor files a key whose `;;state=` comment is not
    /// VALID (2) or MISSING (3) is not trusted (RFC 5011 states, as Unbound
    /// reads them). XML `KeyDigest`s outside their `validFrom`/`validUntil`
    /// window at the current time are skipped. Errors name `origin:line`.
    pub fn parse(text: &str, origin: &str) -> Result<Self, AnchorError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self::parse_at(text, origin, now)
    }

    /// [`TrustAnchors::parse`] at a given time (seconds since the epoch) for
    /// the XML validity windows.
    pub fn parse_at(text: &str, origin: &str, now: i64) -> Result<Self, AnchorError> {
        let err = |line: usize, message: String| AnchorError { file: origin.to_owned(), line, message };
        let trimmed = text.trim_start_matches('\u{feff}').trim_start();
        let anchors = if trimmed.starts_with('<') { parse_xml(text, now).map_err(|(l, m)| err(l, m))? } else { parse_lines(text).map_err(|(l, m)| err(l, m))? };
        if anchors.zones.is_empty() {
            return Err(err(1, "no usable DS or DNSKEY trust anchor in the file".into()));
        }
        Ok(anchors)
    }

    /// Adds one anchor record set for `zone`.
    pub fn insert(&mut self, zone: Name, anchor: Anchor) {
        let e = self.zones.entry(zone.to_lowercase()).or_default();
        e.ds.extend(anchor.ds);
        e.dnskeys.extend(anchor.dnskeys);
    }

    /// The anchor of exactly `zone`.
    pub fn for_zone(&self, zone: &Name) -> Option<&Anchor> {
        self.zones.get(zone)
    }

    /// The deepest anchored zone at or above `name`, with its anchor.
    /// Cost: one map lookup per label of `name`.
    pub fn closest(&self, name: &Name) -> Option<(&Name, &Anchor)> {
        let labels = name.iter().count();
        (0..=labels).rev().find_map(|n| self.zones.get_key_value(&name.trim_to(n)))
    }

    /// Every anchored zone, in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &Anchor)> {
        self.zones.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

fn parse_lines(text: &str) -> Result<TrustAnchors, (usize, String)> {
    let records = text::parse_records(text).map_err(|e| (e.line, e.message))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = TrustAnchors::default();
    for (line, record) in records {
        // Unbound's autotrust files keep keys in every RFC 5011 state; only
        // VALID and MISSING ones are trust anchors
        if let Some(state) = lines.get(line - 1).and_then(|l| l.split(";;state=").nth(1)) {
            let n: String = state.chars().take_while(char::is_ascii_digit).collect();
            if !matches!(n.as_str(), "2" | "3") {
                continue;
            }
        }
        let mut anchor = Anchor::default();
        match record.data {
            RData::DNSSEC(DNSSECRData::DS(ds)) => anchor.ds.push(ds),
            RData::DNSSEC(DNSSECRData::DNSKEY(key)) => {
                if !key.zone_key() {
                    return Err((line, "DNSKEY without the zone key flag (256) cannot be a trust anchor".into()));
                }
                if key.revoke() {
                    continue;
                }
                anchor.dnskeys.push(key);
            }
            other => return Err((line, format!("{} record: only DS and DNSKEY records belong in a trust-anchor file", other.record_type()))),
        }
        out.insert(record.name, anchor);
    }
    Ok(out)
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The text between `<tag>` and `</tag>` in `s`, and the offset of `<tag`.
fn element<'a>(s: &'a str, tag: &str) -> Option<(usize, &'a str)> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = s.find(&open)?;
    let body = start + open.len();
    let end = s[body..].find(&close)? + body;
    Some((start, s[body..end].trim()))
}

fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// `2017-02-02T00:00:00+00:00` (xsd:dateTime as IANA writes it; `Z` or an
/// offset, fractional seconds ignored) in seconds since the epoch.
fn xml_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if !s.is_ascii() || b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let f = |r: std::ops::Range<usize>| s.get(r).and_then(|t| t.parse::<i64>().ok());
    let base = unix_seconds(f(0..4)?, f(5..7)?, f(8..10)?, f(11..13)?, f(14..16)?, f(17..19)?)?;
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) && &r[3..4] == ":" => {
            let mins = r[1..3].parse::<i64>().ok()? * 60 + r[4..6].parse::<i64>().ok()?;
            if r.starts_with('-') {
                -mins * 60
            } else {
                mins * 60
            }
        }
        _ => return None,
    };
    Some(base - offset)
}

/// RFC 7958 section 2.1: `<TrustAnchor>` with one `<Zone>` and `<KeyDigest>`
/// elements holding `KeyTag`, `Algorithm`, `DigestType` and `Digest`.
fn parse_xml(text: &str, now: i64) -> Result<TrustAnchors, (usize, String)> {
    let (at, zone) = element(text, "Zone").ok_or((1, "no <Zone> element (is this an RFC 7958 root-anchors.xml?)".to_owned()))?;
    let zone = Name::from_ascii(zone).map_err(|e| (line_of(text, at), format!("bad <Zone> `{zone}`: {e}")))?;
    let mut zone = zone;
    zone.set_fqdn(true);
    let mut ds = Vec::new();
    let mut pos = 0;
    let mut digests = 0;
    while let Some(found) = text[pos..].find("<KeyDigest") {
        let start = pos + found;
        let line = line_of(text, start);
        let open_end = text[start..].find('>').ok_or((line, "<KeyDigest> tag never closed".to_owned()))? + start;
        let close = text[open_end..].find("</KeyDigest>").ok_or((line, "<KeyDigest> without </KeyDigest>".to_owned()))? + open_end;
        let tag = &text[start..open_end];
        let body = &text[open_end + 1..close];
        pos = close + "</KeyDigest>".len();
        digests += 1;
        // (line of the element, its text)
        let field = |name: &str| -> Result<(usize, &str), (usize, String)> {
            element(body, name)
                .map(|(at, v)| (line_of(text, open_end + 1 + at), v))
                .ok_or((line, format!("<KeyDigest> without <{name}>")))
        };
        let number = |name: &str| -> Result<u16, (usize, String)> {
            let (l, v) = field(name)?;
            v.parse().map_err(|_| (l, format!("<{name}> `{v}` is not a number")))
        };
        let key_tag = number("KeyTag")?;
        let alg = u8::try_from(number("Algorithm")?).map_err(|_| (line, "<Algorithm> above 255".to_owned()))?;
        let dt = u8::try_from(number("DigestType")?).map_err(|_| (line, "<DigestType> above 255".to_owned()))?;
        let (digest_line, digest) = field("Digest")?;
        let digest = data_encoding::HEXUPPER_PERMISSIVE
            .decode(digest.as_bytes())
            .map_err(|e| (digest_line, format!("<Digest> is not hex: {e}")))?;
        let window = |name: &str| -> Result<Option<i64>, (usize, String)> {
            attribute(tag, name).map(|v| xml_time(v).ok_or((line, format!("{name} `{v}` is not an xsd:dateTime")))).transpose()
        };
        let from = window("validFrom")?;
        let until = window("validUntil")?;
        if from.is_some_and(|f| now < f) || until.is_some_and(|u| now >= u) {
            continue;
        }
        ds.push(DS::new(key_tag, Algorithm::from_u8(alg), DigestType::from(dt), digest));
    }
    if digests == 0 {
        return Err((1, "no <KeyDigest> element".into()));
    }
    let mut out = TrustAnchors::default();
    if !ds.is_empty() {
        out.insert(zone, Anchor { ds, dnskeys: Vec::new() });
    }
    Ok(out)
}
