//! `rpz`: Response Policy Zone files as published (BIND zone-file syntax, the
//! subset RPZ feeds use). A small line parser of our own, not a full zone
//! parser:
//!
//! - `$TTL` (ignored), `$ORIGIN` (owners are made relative to it), `;`
//!   comments, `( … )` records spanning lines (the multi-line SOA), quoted
//!   TXT strings;
//! - `owner [ttl] [class] TYPE rdata`, TTL and class in either order; a line
//!   starting with white space continues the previous owner;
//! - SOA and NS at the apex are zone plumbing, not rules.
//!
//! Triggers (owner relative to the origin): `name` → [`Scope::Exact`],
//! `*.name` → [`Scope::Below`]. Actions: `CNAME .` NXDOMAIN, `CNAME *.` NODATA,
//! `CNAME rpz-passthru.` allow, `CNAME rpz-drop.` drop, `CNAME target.` and
//! `A`/`AAAA`/`TXT` local data (records of one trigger merge into one entry,
//! at the line of the first). `rpz-ip` triggers (`32.10.2.0.192.rpz-ip`,
//! `48.zz.db8.2001.rpz-ip`) become [`Rule::AnswerIp`] with the same
//! actions. `rpz-nsdname`, `rpz-nsip`, `rpz-client-ip` triggers and
//! `rpz-tcp-only.` are counted as unsupported.
//!
//! A transferred zone comes as records, not text: [`parse_records`] reads
//! them with the same rules, without writing them out as zone text first.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{for_each_line, push_rule, LocalData, ParseErrorKind, ParseOutput, Rule, RuleAction, Scope};

/// Trigger labels we recognise but do not enforce.
const UNSUPPORTED_TRIGGERS: &[&str] = &["rpz-nsdname", "rpz-nsip", "rpz-client-ip"];

/// Record types that are valid in a zone but mean nothing to us as RPZ policy.
const OTHER_TYPES: &[&str] = &[
    "MX", "PTR", "SRV", "DNAME", "HINFO", "CAA", "HTTPS", "SVCB", "NAPTR", "DS", "RRSIG", "NSEC", "NSEC3", "DNSKEY",
    "SSHFP", "TLSA", "LOC", "SPF", "RP", "AFSDB", "CERT", "URI",
];

const CLASSES: &[&str] = &["IN", "CH", "HS", "CS"];

/// One token of a record, with where it came from (for error positions).
#[derive(Debug)]
struct Tok {
    text: String,
    quoted: bool,
    line: u32,
    col: u32,
}

#[derive(Default)]
struct State {
    /// Normalised origin, no trailing dot; `None` = root / not set.
    origin: Option<String>,
    /// The previous record's owner as a trigger relative to the origin ("" = apex).
    last_owner: Option<String>,
    /// Tokens of a record still open with `(`.
    pending: Vec<Tok>,
    pending_line: u32,
    pending_col: u32,
    pending_blank_owner: bool,
    depth: u32,
    /// Local-data entries, merged by (name, scope); emitted at the end.
    local_index: HashMap<Trigger, usize>,
    locals: Vec<super::Entry>,
}

/// What a record's owner triggers on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Trigger {
    /// QNAME trigger: a normalised name and its scope.
    Name(String, Scope),
    /// Response IP trigger (`rpz-ip`).
    Ip(ipnet::IpNet),
}

impl Trigger {
    fn rule(self, action: RuleAction) -> Rule {
        match self {
            Trigger::Name(name, scope) => Rule::Name { name, scope, action, important: false, decision: None },
            Trigger::Ip(net) => Rule::AnswerIp { net, action },
        }
    }
}

/// The prefix of an `rpz-ip` owner (the labels before `.rpz-ip`, relative
/// to the origin): `32.10.2.0.192` is 192.0.2.10/32; IPv6 words in reverse
/// order with `zz` for the run of zero words, `64.zz.db8.2001` is
/// 2001:db8::/64 (the BIND / Unbound encoding). Host bits must be zero.
fn rpz_ip_net(encoded: &str) -> Result<ipnet::IpNet, &'static str> {
    let mut labels = encoded.split('.');
    let len: u8 = labels.next().and_then(|l| l.parse().ok()).ok_or("the first label must be a prefix length")?;
    let rest: Vec<&str> = labels.collect();
    let v4 = rest.len() == 4 && rest.iter().all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()));
    let net = if v4 {
        let mut octets = [0u8; 4];
        for (o, l) in octets.iter_mut().rev().zip(&rest) {
            *o = l.parse().map_err(|_| "an IPv4 label is over 255")?;
        }
        ipnet::Ipv4Net::new(Ipv4Addr::from(octets), len).map(ipnet::IpNet::V4).map_err(|_| "IPv4 prefix length over 32")?
    } else {
        let words: Vec<&str> = rest.iter().rev().copied().collect();
        let zz = words.iter().filter(|w| **w == "zz").count();
        if zz > 1 || (zz == 0 && words.len() != 8) || words.len() > 8 || words.is_empty() {
            return Err("not an IPv4 (4 labels) or IPv6 (8 words, or `zz` for zeros) address");
        }
        let mut out = [0u16; 8];
        let mut i = 0usize;
        for w in &words {
            if *w == "zz" {
                i += 8 - (words.len() - 1);
                continue;
            }
            if w.is_empty() || w.len() > 4 {
                return Err("an IPv6 word is not 1-4 hex digits");
            }
            let v = u16::from_str_radix(w, 16).map_err(|_| "an IPv6 word is not 1-4 hex digits")?;
            if let Some(slot) = out.get_mut(i) {
                *slot = v;
            }
            i += 1;
        }
        ipnet::Ipv6Net::new(Ipv6Addr::from(out), len).map(ipnet::IpNet::V6).map_err(|_| "IPv6 prefix length over 128")?
    };
    if net.trunc() != net {
        return Err("address has bits set beyond the prefix length");
    }
    Ok(net)
}

/// Why a record makes no rule. The text and the record parsers both
/// decide through [`trigger_of`] and [`State::cname_to`], and report it at
/// their own position.
enum Refusal {
    /// `unknown record type …` (the text parser reports it at the type).
    UnknownType(String),
    Unsupported(String),
    Error(String),
    Name(crate::name::NameError),
}

impl Refusal {
    fn report(self, out: &mut ParseOutput, file: &str, line: u32, col: u32) {
        match self {
            Refusal::UnknownType(msg) | Refusal::Error(msg) => out.error(file, line, col, ParseErrorKind::Other(msg)),
            Refusal::Unsupported(what) => out.unsupported(&what),
            Refusal::Name(e) => out.error(file, line, col, ParseErrorKind::Name(e)),
        }
    }
}

/// What a CNAME's target makes of its trigger.
enum CnameTo {
    Rule(RuleAction),
    /// Local data: a CNAME to this (absolute, normalised) name.
    Local(String),
}

/// The trigger of a record with relative `owner` and type `rtype`
/// (uppercase; `as_written` for the message); `Ok(None)`: nothing to do
/// (the apex SOA and NS).
fn trigger_of(owner: &str, rtype: &str, as_written: &str) -> Result<Option<Trigger>, Refusal> {
    let known = matches!(rtype, "CNAME" | "A" | "AAAA" | "TXT" | "SOA" | "NS") || OTHER_TYPES.contains(&rtype);
    let unknown = || Refusal::UnknownType(format!("unknown record type `{as_written}`"));
    if owner.is_empty() {
        return match rtype {
            "SOA" | "NS" => Ok(None),
            _ if known => Err(Refusal::Unsupported("rpz record at the zone apex".into())),
            _ => Err(unknown()),
        };
    }
    if !known {
        return Err(unknown());
    }
    if let Some(encoded) = owner.strip_suffix(".rpz-ip") {
        return match rpz_ip_net(encoded) {
            Ok(net) => Ok(Some(Trigger::Ip(net))),
            Err(msg) => Err(Refusal::Error(format!("rpz-ip trigger `{owner}`: {msg}"))),
        };
    }
    if let Some(label) = owner.split('.').find(|l| UNSUPPORTED_TRIGGERS.contains(l)) {
        return Err(Refusal::Unsupported(format!("{label} trigger")));
    }
    let (raw_name, scope) = match owner.strip_prefix("*.") {
        Some(rest) => (rest, Scope::Below),
        None => (owner, Scope::Exact),
    };
    crate::name::normalize(raw_name).map(|name| Some(Trigger::Name(name, scope))).map_err(Refusal::Name)
}

/// Parses a whole RPZ zone. Cost: O(bytes); one `String` per token while a
/// line is parsed and one per rule.
pub fn parse(file: &str, bytes: &[u8], out: &mut ParseOutput) {
    let mut st = State::default();
    for_each_line(file, bytes, out, |file, n, line, out| st.line(file, n, line, out));
    if st.depth > 0 {
        let (line, col) = (st.pending_line, st.pending_col);
        out.error(file, line, col, ParseErrorKind::Other("unclosed `(` at end of zone".into()));
    }
    // local data is merged per trigger while parsing, so it is emitted last
    for e in std::mem::take(&mut st.locals) {
        out.push(e.line, e.rule);
    }
}

impl State {
    fn line(&mut self, file: &str, n: u32, line: &str, out: &mut ParseOutput) {
        let mut toks = Vec::new();
        let mut depth = i64::from(self.depth);
        if let Err((col, msg)) = tokenize(line, n, &mut toks, &mut depth) {
            out.error(file, n, col, ParseErrorKind::Other(msg.into()));
            self.reset_pending();
            return;
        }
        if depth < 0 {
            out.error(file, n, 1, ParseErrorKind::Other("`)` without `(`".into()));
            self.reset_pending();
            return;
        }
        if self.depth == 0 {
            // start of a record
            self.pending_line = n;
            self.pending_col = toks.first().map_or(1, |t| t.col);
            self.pending_blank_owner = line.starts_with([' ', '\t']);
        }
        self.pending.extend(toks);
        self.depth = u32::try_from(depth).unwrap_or(0);
        if self.depth > 0 {
            return;
        }
        let toks = std::mem::take(&mut self.pending);
        if !toks.is_empty() {
            self.record(file, toks, out);
        }
    }

    fn reset_pending(&mut self) {
        self.pending.clear();
        self.depth = 0;
    }

    fn record(&mut self, file: &str, toks: Vec<Tok>, out: &mut ParseOutput) {
        let n = self.pending_line;
        let Some(first) = toks.first() else { return };
        let err = |out: &mut ParseOutput, t: &Tok, msg: String| out.error(file, t.line, t.col, ParseErrorKind::Other(msg));

        if !self.pending_blank_owner && !first.quoted && first.text.starts_with('$') {
            let directive = first.text.to_ascii_uppercase();
            match directive.as_str() {
                "$TTL" => {
                    if toks.get(1).is_none() {
                        err(out, first, "$TTL without a value".into());
                    }
                }
                "$ORIGIN" => match toks.get(1) {
                    Some(arg) => match self.absolute(&arg.text) {
                        Ok(origin) => self.origin = origin,
                        Err(e) => out.error(file, arg.line, arg.col, ParseErrorKind::Name(e)),
                    },
                    None => err(out, first, "$ORIGIN without a name".into()),
                },
                "$INCLUDE" | "$GENERATE" => out.unsupported(&format!("rpz {directive}")),
                _ => err(out, first, format!("unknown directive `{}`", first.text)),
            }
            return;
        }

        // owner
        let mut i = 0usize;
        let owner = if self.pending_blank_owner {
            match &self.last_owner {
                Some(o) => o.clone(),
                None => return err(out, first, "record with no owner and no previous owner".into()),
            }
        } else {
            i = 1;
            self.relative_owner(&first.text)
        };
        self.last_owner = Some(owner.clone());

        // optional TTL and class, in either order
        for _ in 0..2 {
            match toks.get(i) {
                Some(t) if !t.quoted && (is_ttl(&t.text) || CLASSES.iter().any(|c| t.text.eq_ignore_ascii_case(c))) => {
                    i += 1;
                }
                _ => break,
            }
        }
        let Some(type_tok) = toks.get(i) else {
            let last = toks.last().unwrap_or(first);
            return err(out, last, "missing record type".into());
        };
        let rtype = type_tok.text.to_ascii_uppercase();
        let rdata = toks.get(i + 1..).unwrap_or(&[]);

        // trigger (an unknown type reported at the type, the rest at the owner)
        let trigger = match trigger_of(&owner, &rtype, &type_tok.text) {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(r @ Refusal::UnknownType(_)) => return r.report(out, file, type_tok.line, type_tok.col),
            Err(r) => return r.report(out, file, first.line, first.col),
        };

        let one_rdata = |out: &mut ParseOutput| -> Option<&Tok> {
            match rdata {
                [one] => Some(one),
                [] => {
                    err(out, type_tok, format!("{rtype} record without data"));
                    None
                }
                [_, extra, ..] => {
                    err(out, extra, format!("unexpected data after {rtype} record"));
                    None
                }
            }
        };
        let data = match rtype.as_str() {
            "CNAME" => {
                let Some(target) = one_rdata(out) else { return };
                return match self.cname_to(&target.text.to_ascii_lowercase(), &trigger) {
                    Ok(CnameTo::Rule(action)) => push_rule(out, n, trigger.rule(action)),
                    Ok(CnameTo::Local(name)) => self.push_local(out, n, trigger, LocalData::Cname(name)),
                    Err(r) => r.report(out, file, target.line, target.col),
                };
            }
            "A" => {
                let Some(t) = one_rdata(out) else { return };
                match t.text.parse::<Ipv4Addr>() {
                    Ok(ip) => LocalData::A(ip),
                    Err(_) => return out.error(file, t.line, t.col, ParseErrorKind::BadAddress),
                }
            }
            "AAAA" => {
                let Some(t) = one_rdata(out) else { return };
                match t.text.parse::<Ipv6Addr>() {
                    Ok(ip) => LocalData::Aaaa(ip),
                    Err(_) => return out.error(file, t.line, t.col, ParseErrorKind::BadAddress),
                }
            }
            "TXT" => {
                if rdata.is_empty() {
                    return err(out, type_tok, "TXT record without data".into());
                }
                LocalData::Txt(rdata.iter().map(|t| t.text.as_str()).collect())
            }
            other => {
                out.unsupported(&format!("rpz {other} record"));
                return;
            }
        };
        self.push_local(out, n, trigger, data);
    }

    /// The action of a CNAME to `t` (lowercase, as written) for `trigger`:
    /// `.` NXDOMAIN, `*.` NODATA, `rpz-passthru.` (or the trigger's own
    /// name) allow, `rpz-drop.` drop, any other name local data.
    fn cname_to(&self, t: &str, trigger: &Trigger) -> Result<CnameTo, Refusal> {
        let bare = t.strip_suffix('.').unwrap_or(t);
        let action = match bare {
            "" if t == "." => RuleAction::Nxdomain,
            "*" => RuleAction::Nodata,
            "rpz-passthru" => RuleAction::Allow,
            "rpz-drop" => RuleAction::Drop,
            "rpz-tcp-only" => return Err(Refusal::Unsupported("rpz-tcp-only action".into())),
            _ if bare.starts_with("*.") => return Err(Refusal::Unsupported("rpz wildcard CNAME target".into())),
            _ => match self.absolute(t) {
                // legacy passthru: CNAME to the trigger's own name
                Ok(Some(target)) if matches!(trigger, Trigger::Name(name, _) if *name == target) => RuleAction::Allow,
                Ok(Some(target)) => return Ok(CnameTo::Local(target)),
                Ok(None) => return Err(Refusal::Error("CNAME to the root is written `.`".into())),
                Err(e) => return Err(Refusal::Name(e)),
            },
        };
        Ok(CnameTo::Rule(action))
    }

    /// Adds local data, merged into the entry for the same trigger if there is one.
    fn push_local(&mut self, out: &mut ParseOutput, n: u32, trigger: Trigger, data: LocalData) {
        let _ = out;
        if let Some(&idx) = self.local_index.get(&trigger) {
            if let Some(super::Entry {
                rule: Rule::Name { action: RuleAction::Local(v), .. } | Rule::AnswerIp { action: RuleAction::Local(v), .. },
                ..
            }) = self.locals.get_mut(idx)
            {
                v.push(data);
                return;
            }
        }
        let idx = self.locals.len();
        self.local_index.insert(trigger.clone(), idx);
        self.locals.push(super::Entry { line: n, rule: trigger.rule(RuleAction::Local(vec![data])) });
    }

    /// An owner as written → trigger text relative to the origin ("" = apex).
    fn relative_owner(&self, raw: &str) -> String {
        let raw = raw.to_ascii_lowercase();
        if raw == "@" || raw == "." {
            return String::new();
        }
        let Some(abs) = raw.strip_suffix('.') else { return raw };
        match &self.origin {
            Some(o) if abs == o => String::new(),
            Some(o) => match abs.strip_suffix(o.as_str()).and_then(|s| s.strip_suffix('.')) {
                Some(rel) => rel.to_owned(),
                None => abs.to_owned(),
            },
            None => abs.to_owned(),
        }
    }

    /// A name in rdata or `$ORIGIN` → absolute, normalised (`None` = root).
    fn absolute(&self, raw: &str) -> Result<Option<String>, crate::name::NameError> {
        if raw == "." {
            return Ok(None);
        }
        if raw == "@" {
            return Ok(self.origin.clone());
        }
        let full = match (raw.strip_suffix('.'), &self.origin) {
            (Some(abs), _) => abs.to_owned(),
            (None, Some(o)) => format!("{raw}.{o}"),
            (None, None) => raw.to_owned(),
        };
        crate::name::normalize(&full).map(Some)
    }
}

/// Parses the records of a transferred zone (AXFR, or the zone an IXFR
/// brought up to date; SOA included or not) straight from hickory's
/// records, with the same result as [`parse`] over the same records written
/// as zone-file lines (`lists::source::to_zone_text`): the same rules,
/// actions and local data (merged per trigger, emitted last), the same
/// unsupported constructs and the same bad records. `origin` is the zone's
/// apex, as `$ORIGIN` is for a file.
///
/// Positions: a record's "line" is its 1-based index in `records`; the
/// column is always 1 (a record has no columns). `out.lines` counts records.
///
/// Where the two differ on purpose: TXT strings are taken as their bytes
/// (UTF-8, invalid sequences replaced), where the text parser reads a
/// `\DDD` escape as the three digits; and rdata of types qalqan ignores is
/// never looked at, so no presentation-format quirk (a `;` or `(` inside a
/// CAA value) can change how the next record is read.
///
/// Cost: O(records); one `String` per owner name, one per rule. No I/O.
pub fn parse_records<R: Borrow<Record>>(file: &str, origin: &Name, records: impl IntoIterator<Item = R>, out: &mut ParseOutput) {
    let numbered = records.into_iter().scan(0u32, |n, r| {
        *n = n.saturating_add(1);
        Some((*n, r))
    });
    parse_numbered_records(file, origin, numbered, out);
}

/// [`parse_records`] with each record's position given (a zone kept by
/// `lists/zone_sync.rs` numbers its records in the order they came, and
/// keeps the numbers across IXFRs, so that an update can go by delta):
/// `out.lines` is the largest position.
pub fn parse_numbered_records<R: Borrow<Record>>(
    file: &str,
    origin: &Name,
    records: impl IntoIterator<Item = (u32, R)>,
    out: &mut ParseOutput,
) {
    let mut st = State::default();
    match st.absolute(&absolute_text(origin)) {
        Ok(o) => st.origin = o,
        Err(e) => out.error(file, 0, 1, ParseErrorKind::Name(e)),
    }
    for (n, record) in records {
        out.lines = out.lines.max(n);
        st.record_of(file, n, record.borrow(), out);
    }
    for e in std::mem::take(&mut st.locals) {
        out.push(e.line, e.rule);
    }
}

/// A name as an absolute ASCII text with its trailing dot (`.` for the
/// root): what a zone file written by `to_zone_text` holds for it.
fn absolute_text(name: &Name) -> String {
    let mut s = name.to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// The type of `record` as the text parser would see it: its mnemonic, or
/// `TYPEnnn` for a record whose data hickory did not decode (written in
/// the RFC 3597 generic form, which the text parser does not accept).
fn type_text(record: &Record) -> String {
    let rtype = record.record_type();
    match (&record.data, rtype) {
        (RData::Unknown { .. } | RData::Update0(_), _) | (_, RecordType::Unknown(_)) => format!("TYPE{}", u16::from(rtype)),
        _ => rtype.to_string().to_ascii_uppercase(),
    }
}

impl State {
    /// One transferred record: [`State::record`] for a record that is
    /// already split into owner, class, type and data.
    fn record_of(&mut self, file: &str, n: u32, record: &Record, out: &mut ParseOutput) {
        let err = |out: &mut ParseOutput, msg: String| out.error(file, n, 1, ParseErrorKind::Other(msg));
        let owner = self.relative_owner(&absolute_text(&record.name));
        // the text parser skips IN, CH and HS and reads any other class as the type
        let class = record.dns_class.to_string();
        if !CLASSES.iter().any(|c| class.eq_ignore_ascii_case(c)) {
            return err(out, format!("unknown record type `{class}`"));
        }
        let rtype = type_text(record);
        let trigger = match trigger_of(&owner, &rtype, &rtype) {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(r) => return r.report(out, file, n, 1),
        };
        let data = match (rtype.as_str(), &record.data) {
            ("CNAME", RData::CNAME(target)) => {
                return match self.cname_to(&absolute_text(&target.0).to_ascii_lowercase(), &trigger) {
                    Ok(CnameTo::Rule(action)) => push_rule(out, n, trigger.rule(action)),
                    Ok(CnameTo::Local(name)) => self.push_local(out, n, trigger, LocalData::Cname(name)),
                    Err(r) => r.report(out, file, n, 1),
                };
            }
            ("A", RData::A(a)) => LocalData::A(a.0),
            ("AAAA", RData::AAAA(a)) => LocalData::Aaaa(a.0),
            ("TXT", RData::TXT(txt)) => {
                let bytes: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                LocalData::Txt(String::from_utf8_lossy(&bytes).into_owned())
            }
            (other, _) => {
                out.unsupported(&format!("rpz {other} record"));
                return;
            }
        };
        self.push_local(out, n, trigger, data);
    }
}

/// `300`, `1h`, `1h30m`, `2W`: a TTL field.
fn is_ttl(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && s.bytes().all(|b| b.is_ascii_digit() || b"smhdwSMHDW".contains(&b))
}

/// Splits one line into tokens (`;` comments dropped, `"…"` kept whole,
/// parentheses counted in `depth`). Errors carry a 1-based column.
fn tokenize(line: &str, n: u32, toks: &mut Vec<Tok>, depth: &mut i64) -> Result<(), (u32, &'static str)> {
    let col = |i: usize| u32::try_from(i + 1).unwrap_or(u32::MAX);
    let mut cur: Option<(usize, String)> = None;
    let mut chars = line.char_indices();
    let flush = |cur: &mut Option<(usize, String)>, toks: &mut Vec<Tok>| {
        if let Some((start, text)) = cur.take() {
            toks.push(Tok { text, quoted: false, line: n, col: col(start) });
        }
    };
    while let Some((i, c)) = chars.next() {
        match c {
            ';' => break,
            c if c.is_whitespace() => flush(&mut cur, toks),
            '(' => {
                flush(&mut cur, toks);
                *depth += 1;
            }
            ')' => {
                flush(&mut cur, toks);
                *depth -= 1;
            }
            '"' => {
                flush(&mut cur, toks);
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, q)) = chars.next() {
                    match q {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                text.push(e);
                            }
                        }
                        q => text.push(q),
                    }
                }
                if !closed {
                    return Err((col(i), "unterminated quoted string"));
                }
                toks.push(Tok { text, quoted: true, line: n, col: col(i) });
            }
            c => match &mut cur {
                Some((_, text)) => text.push(c),
                None => cur = Some((i, c.to_string())),
            },
        }
    }
    flush(&mut cur, toks);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Format, LocalData, ParseErrorKind, Rule, RuleAction, Scope};
    use crate::name::NameError;

    const HEAD: &str = "$TTL 300\n@ SOA localhost. root.localhost. 1 43200 3600 259200 300\n  NS  localhost.\n";

    /// Parses HEAD + `body`; returns the rules (name, scope, action, line),
    /// unsupported constructs, and error texts.
    type Rules = Vec<(String, Scope, RuleAction, u32)>;

    fn run(body: &str) -> (Rules, Vec<String>, Vec<String>) {
        let text = format!("{HEAD}{body}");
        let out = parse(Format::Rpz, "z.rpz", text.as_bytes());
        let rules = out
            .entries
            .iter()
            .map(|e| match &e.rule {
                Rule::Name { name, scope, action, important: false, decision: None } => {
                    (name.clone(), *scope, action.clone(), e.line)
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let unsupported = out.unsupported.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        let errors = out.errors.iter().map(ToString::to_string).collect();
        (rules, unsupported, errors)
    }

    type Want = (&'static [(&'static str, Scope, RuleAction, u32)], &'static [&'static str], &'static [&'static str]);

    #[test]
    fn rpz_records() {
        use RuleAction::*;
        use Scope::*;
        let a = |s: &str| LocalData::A(s.parse().unwrap());
        let local_a = Local(vec![a("192.0.2.1")]);
        let cases: Vec<(&str, &str, Want)> = vec![
            ("nxdomain", "bad.example CNAME .\n", (&[("bad.example", Exact, Nxdomain, 4)], &[], &[])),
            ("wildcard", "*.bad.example CNAME .\n", (&[("bad.example", Below, Nxdomain, 4)], &[], &[])),
            ("nodata", "bad.example CNAME *.\n", (&[("bad.example", Exact, Nodata, 4)], &[], &[])),
            ("passthru", "ok.example CNAME rpz-passthru.\n", (&[("ok.example", Exact, Allow, 4)], &[], &[])),
            ("drop", "bad.example CNAME rpz-drop.\n", (&[("bad.example", Exact, Drop, 4)], &[], &[])),
            ("ttl and class", "bad.example 60 IN CNAME .\n", (&[("bad.example", Exact, Nxdomain, 4)], &[], &[])),
            ("class then ttl", "bad.example IN 1h CNAME .\n", (&[("bad.example", Exact, Nxdomain, 4)], &[], &[])),
            ("case", "Bad.EXAMPLE cname .\n", (&[("bad.example", Exact, Nxdomain, 4)], &[], &[])),
            ("comment", "; bad.example CNAME .\nbad.example CNAME . ; why\n", (&[("bad.example", Exact, Nxdomain, 5)], &[], &[])),
            ("punycode", "xn--e1afmkfd.xn--p1ai CNAME .\n", (&[("xn--e1afmkfd.xn--p1ai", Exact, Nxdomain, 4)], &[], &[])),
            ("idn", "пример.рф CNAME .\n", (&[("xn--e1afmkfd.xn--p1ai", Exact, Nxdomain, 4)], &[], &[])),
            ("blank lines", "\n\nbad.example CNAME .\n", (&[("bad.example", Exact, Nxdomain, 6)], &[], &[])),
            ("tcp-only", "x.example CNAME rpz-tcp-only.\n", (&[], &["rpz-tcp-only action x1"], &[])),
            ("rpz-nsdname", "ns.bad.example.rpz-nsdname CNAME .\n", (&[], &["rpz-nsdname trigger x1"], &[])),
            ("rpz-nsip", "32.1.2.0.192.rpz-nsip CNAME .\n", (&[], &["rpz-nsip trigger x1"], &[])),
            ("rpz-client-ip", "32.1.2.0.192.rpz-client-ip CNAME rpz-drop.\n", (&[], &["rpz-client-ip trigger x1"], &[])),
            ("mx", "x.example MX 10 mail.example.\n", (&[], &["rpz MX record x1"], &[])),
            ("garbage", "this is not a record\n", (&[], &[], &["z.rpz:4:6: unknown record type `is`"])),
            ("lone word", "lonely\n", (&[], &[], &["z.rpz:4:1: missing record type"])),
            ("bad a", "x.example A 999.1.1.1\n", (&[], &[], &["z.rpz:4:13: not a valid IP address"])),
            ("bad owner", "a..b CNAME .\n", (&[], &[], &["z.rpz:4:1: bad name: empty label"])),
            ("no rdata", "x.example CNAME\n", (&[], &[], &["z.rpz:4:11: CNAME record without data"])),
            ("extra rdata", "x.example CNAME . extra\n", (&[], &[], &["z.rpz:4:19: unexpected data after CNAME record"])),
            ("unterminated", "x.example TXT \"abc\n", (&[], &[], &["z.rpz:4:15: unterminated quoted string"])),
            ("bad directive", "$FOO 1\n", (&[], &[], &["z.rpz:4:1: unknown directive `$FOO`"])),
        ];
        for (name, body, (rules, unsupported, errors)) in cases {
            let got = run(body);
            let want_rules: Vec<_> = rules.iter().map(|(n, s, a, l)| (n.to_string(), *s, a.clone(), *l)).collect();
            let want_u: Vec<String> = unsupported.iter().map(|s| s.to_string()).collect();
            let want_e: Vec<String> = errors.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, (want_rules, want_u, want_e), "case `{name}`");
        }
        // local data, checked separately for the richer values
        let (rules, _, errors) = run("x.example A 192.0.2.1\n");
        assert!(errors.is_empty());
        assert_eq!(rules, vec![("x.example".into(), Exact, local_a, 4)]);
    }

    #[test]
    fn local_data_merges_per_owner() {
        let body = "www.example A 192.0.2.1\n  A 192.0.2.2\n  AAAA 2001:db8::1\n  TXT \"blocked; see\" \"policy\"\n\
                    *.www.example CNAME walled.example.\nother.example CNAME .\nwww.example A 192.0.2.3\n";
        let (rules, _, errors) = run(body);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            rules,
            vec![
                // local data is emitted after the other rules (merged per trigger)
                ("other.example".into(), Scope::Exact, RuleAction::Nxdomain, 9),
                (
                    "www.example".into(),
                    Scope::Exact,
                    RuleAction::Local(vec![
                        LocalData::A("192.0.2.1".parse().unwrap()),
                        LocalData::A("192.0.2.2".parse().unwrap()),
                        LocalData::Aaaa("2001:db8::1".parse().unwrap()),
                        LocalData::Txt("blocked; seepolicy".into()),
                        LocalData::A("192.0.2.3".parse().unwrap()),
                    ]),
                    4,
                ),
                ("www.example".into(), Scope::Below, RuleAction::Local(vec![LocalData::Cname("walled.example".into())]), 8),
            ]
        );
    }

    #[test]
    fn origin_handling() {
        let cases: &[(&str, &str, Result<&str, &str>)] = &[
            ("relative owner", "$ORIGIN rpz.example.\nbad.com CNAME .\n", Ok("bad.com")),
            ("absolute under origin", "$ORIGIN rpz.example.\nbad.com.rpz.example. CNAME .\n", Ok("bad.com")),
            ("absolute elsewhere", "$ORIGIN rpz.example.\nbad.com. CNAME .\n", Ok("bad.com")),
            ("no origin relative", "bad.com CNAME .\n", Ok("bad.com")),
            ("no origin absolute", "bad.com. CNAME .\n", Ok("bad.com")),
            ("origin case", "$ORIGIN RPZ.Example.\nBad.Com.rpz.EXAMPLE. CNAME .\n", Ok("bad.com")),
            ("relative origin", "$ORIGIN rpz.example.\n$ORIGIN sub\nbad.com.sub.rpz.example. CNAME .\n", Ok("bad.com")),
            ("cname relative to origin", "$ORIGIN rpz.example.\nx.com CNAME walled\n", Ok("walled.rpz.example")),
            ("legacy passthru", "$ORIGIN rpz.example.\nok.com CNAME ok.com.\n", Ok("allow")),
            ("apex a", "$ORIGIN rpz.example.\n@ A 192.0.2.1\n", Err("rpz record at the zone apex")),
        ];
        for (name, text, want) in cases {
            let out = parse(Format::Rpz, "z.rpz", text.as_bytes());
            assert!(out.errors.is_empty(), "case `{name}`: {:?}", out.errors);
            let got = match out.entries.first().map(|e| &e.rule) {
                Some(Rule::Name { action: RuleAction::Local(v), .. }) => match v.first() {
                    Some(LocalData::Cname(t)) => Ok(t.as_str()),
                    _ => panic!("case `{name}`"),
                },
                Some(Rule::Name { action: RuleAction::Allow, .. }) => Ok("allow"),
                Some(Rule::Name { name, .. }) => Ok(name.as_str()),
                Some(other) => panic!("case `{name}`: {other:?}"),
                None => Err(out.unsupported.keys().next().map_or("", |s| s.as_str())),
            };
            assert_eq!(got, *want, "case `{name}`");
        }
    }

    #[test]
    fn rpz_ip_triggers() {
        use RuleAction::*;
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        type Case = (&'static str, &'static str, Result<(&'static str, RuleAction), &'static str>);
        let cases: &[Case] = &[
            ("v4 host", "32.10.2.0.192.rpz-ip CNAME .", Ok(("192.0.2.10/32", Nxdomain))),
            ("v4 prefix", "24.0.2.0.192.rpz-ip CNAME *.", Ok(("192.0.2.0/24", Nodata))),
            ("v4 passthru", "32.1.2.0.192.rpz-ip CNAME rpz-passthru.", Ok(("192.0.2.1/32", Allow))),
            ("v4 drop", "8.0.0.0.10.rpz-ip CNAME rpz-drop.", Ok(("10.0.0.0/8", Drop))),
            ("v6 zz", "128.1.zz.db8.2001.rpz-ip CNAME .", Ok(("2001:db8::1/128", Nxdomain))),
            ("v6 prefix", "48.zz.db8.2001.rpz-ip CNAME .", Ok(("2001:db8::/48", Nxdomain))),
            ("v6 eight words", "128.8.7.6.5.4.3.2.1.rpz-ip CNAME .", Ok(("1:2:3:4:5:6:7:8/128", Nxdomain))),
            ("v6 zz in the middle", "128.1.zz.2.rpz-ip CNAME .", Ok(("2::1/128", Nxdomain))),
            ("under origin", "32.1.2.0.192.rpz-ip.rpz.example. CNAME .", Ok(("192.0.2.1/32", Nxdomain))),
            ("local a", "32.1.2.0.192.rpz-ip A 192.0.2.99", Ok(("192.0.2.1/32", Local(vec![LocalData::A("192.0.2.99".parse().unwrap())])))),
            ("host bits", "24.1.2.0.192.rpz-ip CNAME .", Err("rpz-ip trigger `24.1.2.0.192.rpz-ip`: address has bits set beyond the prefix length")),
            ("long prefix", "33.1.2.0.192.rpz-ip CNAME .", Err("rpz-ip trigger `33.1.2.0.192.rpz-ip`: IPv4 prefix length over 32")),
            ("octet", "32.1.2.0.300.rpz-ip CNAME .", Err("rpz-ip trigger `32.1.2.0.300.rpz-ip`: an IPv4 label is over 255")),
            ("no length", "x.1.2.0.192.rpz-ip CNAME .", Err("rpz-ip trigger `x.1.2.0.192.rpz-ip`: the first label must be a prefix length")),
            ("two zz", "128.1.zz.2.zz.rpz-ip CNAME .", Err("rpz-ip trigger `128.1.zz.2.zz.rpz-ip`: not an IPv4 (4 labels) or IPv6 (8 words, or `zz` for zeros) address")),
        ];
        for (name, line, want) in cases {
            let text = format!("$ORIGIN rpz.example.\n{line}\n");
            let out = parse(Format::Rpz, "z.rpz", text.as_bytes());
            let got = match (out.entries.first().map(|e| &e.rule), out.errors.first()) {
                (Some(Rule::AnswerIp { net, action }), None) => Ok((net.to_string(), action.clone())),
                (None, Some(e)) => Err(match &e.kind {
                    ParseErrorKind::Other(m) => m.clone(),
                    k => k.to_string(),
                }),
                other => panic!("case `{name}`: {other:?}"),
            };
            let want = want.clone().map(|(n, a)| (net(n).to_string(), a)).map_err(str::to_owned);
            assert_eq!(got, want, "case `{name}`");
        }
        // local data of one rpz-ip trigger merges like a name's
        let out = parse(Format::Rpz, "z.rpz", b"32.1.2.0.192.rpz-ip A 192.0.2.99\n  AAAA 2001:db8::99\n");
        assert_eq!(out.entries.len(), 1);
        assert!(matches!(&out.entries[0].rule, Rule::AnswerIp { action: RuleAction::Local(v), .. } if v.len() == 2));
    }

    #[test]
    fn multi_line_soa_and_continuations() {
        let text = "; header\n$TTL 30\n$ORIGIN rpz.example.\n@ IN SOA localhost. root.localhost. (\n   1752927088 ; serial\n   86400 3600\n   604800 30 )\n NS localhost.\n\nbad.example CNAME .\n  TXT \"x\"\n";
        let out = parse(Format::Rpz, "z.rpz", text.as_bytes());
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.entries.len(), 2);
        assert_eq!(out.entries[0].line, 10);
        assert_eq!(out.entries[1].line, 11);
        assert!(matches!(&out.entries[1].rule, Rule::Name { action: RuleAction::Local(v), .. } if v == &vec![LocalData::Txt("x".into())]));
        assert!(out.unsupported.is_empty());
    }

    #[test]
    fn unclosed_paren_is_an_error() {
        let out = parse(Format::Rpz, "z.rpz", b"@ SOA a. b. ( 1 2 3\n4 5\n");
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].to_string(), "z.rpz:1:1: unclosed `(` at end of zone");
        let out = parse(Format::Rpz, "z.rpz", b"x.example CNAME . )\n");
        assert_eq!(out.errors[0].kind, ParseErrorKind::Other("`)` without `(`".into()));
        let out = parse(Format::Rpz, "z.rpz", b"*.*.x CNAME .\n");
        assert_eq!(out.errors[0].kind, ParseErrorKind::Name(NameError::BadChar('*')));
    }
}
