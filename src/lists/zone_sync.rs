//! `axfr://HOST:PORT/ZONE` RPZ sources: AXFR at start, then IXFR when the
//! primary's SOA serial moves on (checked every `refresh_s`) or when it sends
//! a NOTIFY (accepted on the DNS listener only from the primary's address).
//! The zone is kept as its records; they go to the RPZ parser as records
//! (`rpz::parse_records`, no zone text in between) and through the same
//! update gate as every other list. The accepted zone is persisted twice:
//! as zone-file text (`NAME.list`, read back at start, by `qalqan check` and
//! `export` like any RPZ file) and as its records (`NAME.records`), so that
//! after a restart an IXFR can carry on from the persisted serial.
//!
//! An IXFR costs O(changes) up to the policy swap: the zone's version is a
//! sum of record hashes ([`RecordSum`]) moved by each record added or
//! removed, the update goes by delta (`lists/delta.rs`), and the zone text
//! is rendered only for a full build, a held version, or on the persist
//! thread for `NAME.list` (which names its version on its last line).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder, NameEncoding};
use tokio_util::sync::CancellationToken;

use super::parse::rpz;
use super::publish::{Incoming, Lists};
use super::source::{soa_serial, to_zone_text, transfer, Limits, Transfer, TsigKey};
use super::{LoadError, RecordParser, SourceMeta};
use crate::config::SourceKind;
use crate::rules::ListId;

/// The zone as last accepted: its records and its serial.
///
/// Records are kept in their wire form (see [`identity`]), one copy shared
/// by both maps, and decoded when the zone is parsed or written out: the
/// zone is held for the life of the process, an update is rare, and its
/// decoded records live only while the update is built. Measured
/// (RSS, 200k CNAME records with 45-byte owners): 192 bytes a record, where
/// hickory `Record`s (272 bytes each, the owner on the heap) took 733 and
/// the zone-text lines this replaced 138.
pub struct ZoneState {
    /// Every record but the SOA, in the order they came (AXFR order, then
    /// each IXFR addition at the end); the order is the "line" of a rule.
    /// Shared with the update that decodes them and with the write of
    /// `NAME.records`; copied only if one still holds them when the next
    /// transfer changes them (an IXFR that comes while the text of the
    /// last one is still being rendered behind, at `reload_nice`, pays
    /// that O(zone) copy).
    records: Arc<BTreeMap<u64, Arc<[u8]>>>,
    /// Where each record is in `records`, by its identity (TTL left out).
    ids: HashMap<Key, u64>,
    /// Position (key in `records`) the next added record gets: a record's
    /// position is its rule's line, kept across IXFRs.
    next: u64,
    serial: u32,
    /// The version: the sum of the records' hashes, kept up to date by
    /// `insert` and `remove`.
    sum: RecordSum,
    /// Whether the version in force was built from this state, numbered by
    /// position: then an IXFR can go by delta (a version read back from the
    /// zone text after a restart is numbered by text line).
    numbered: bool,
}

/// A record's wire form compared and hashed without its TTL: an IXFR
/// deletion matches owner (letter case kept), type, class and data, never
/// the TTL (RFC 1995 §4 names the RR to delete; the TTL is not part of
/// what tells RRs apart, RFC 2181 §5.2).
#[derive(Clone)]
struct Key(Arc<[u8]>);

impl Key {
    /// The wire bytes before and after the 4 TTL bytes (uncompressed owner,
    /// then type and class: `identity` writes it so).
    fn parts(&self) -> (&[u8], &[u8]) {
        let w = &self.0[..];
        let mut i = 0usize;
        while let Some(&l) = w.get(i) {
            i += 1 + usize::from(l);
            if l == 0 {
                break;
            }
        }
        let ttl = i + 4;
        match (w.get(..ttl), w.get(ttl + 4..)) {
            (Some(a), Some(b)) => (a, b),
            _ => (w, &[]),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (a, b) = self.parts();
        a.hash(state);
        b.hash(state);
    }
}

impl ZoneState {
    fn new(serial: u32) -> Self {
        Self { records: Arc::default(), ids: HashMap::new(), next: 0, serial, sum: RecordSum::default(), numbered: false }
    }

    /// The version of the zone as it stands (see [`RecordSum`]). Cost: O(1).
    pub fn version(&self) -> String {
        self.sum.version()
    }

    /// Adds `record` at the end, unless the zone has it already (a copy
    /// with another TTL takes the new TTL in place).
    fn insert(&mut self, record: &Record) {
        let id = Key(identity(record));
        if let Some(&at) = self.ids.get(&id) {
            if let Some(old) = self.records.get(&at) {
                if old[..] != id.0[..] {
                    self.sum.sub(old);
                    self.sum.add(&id.0);
                    Arc::make_mut(&mut self.records).insert(at, Arc::clone(&id.0));
                    self.ids.insert(id, at);
                }
            }
            return;
        }
        let at = self.next;
        self.next += 1;
        self.sum.add(&id.0);
        Arc::make_mut(&mut self.records).insert(at, Arc::clone(&id.0));
        self.ids.insert(id, at);
    }

    /// Removes `record` (an IXFR deletion), if the zone has it: its
    /// position and wire form.
    fn remove(&mut self, record: &Record) -> Option<(u64, Arc<[u8]>)> {
        let at = self.ids.remove(&Key(identity(record)))?;
        let gone = Arc::make_mut(&mut self.records).remove(&at)?;
        self.sum.sub(&gone);
        Some((at, gone))
    }
}

/// A zone's version identity: the sum, modulo 2^256, of a hash of each
/// record it holds (BLAKE3 keyed with a fixed key, over the record's wire
/// form: owner, type, class, TTL, data), so that adding or removing one
/// record moves it in O(1) and a transfer's version costs O(changes).
///
/// Sound as an *identity* (tells one set of records from another), not as
/// an integrity check (the transfer's integrity is TSIG's): the zone holds
/// each record once (by [`Key`]), so the set determines the sum; the sum
/// ignores the order, as the zone's content does (a record's position is
/// only its rule's line number, and a version that differs only there is
/// rebuilt in full, see `numbered`). Two different sets share a sum only if
/// the hashes of their difference cancel: by chance ~2^-256 per pair; made
/// on purpose it is a k-sum problem over 256 bits, which only the primary
/// (trusted, TSIG-authenticated, able to send anything anyway) could try.
/// The TTL is in the hash so that a TTL change is a new version (the
/// zone's text and local-data answers carry it), though deletions match
/// records without it. The key is fixed: a version must mean the same
/// after a restart (`NAME.list`'s last line, the guard's file).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct RecordSum([u64; 4]);

/// The key of [`RecordSum`]'s hash ("qalqan zone record sum v1", padded).
const SUM_KEY: [u8; 32] = *b"qalqan zone record sum v1\0\0\0\0\0\0\0";

impl RecordSum {
    fn lanes(wire: &[u8]) -> [u64; 4] {
        let h = blake3::keyed_hash(&SUM_KEY, wire);
        let b = h.as_bytes();
        let mut l = [0u64; 4];
        for (k, lane) in l.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[k * 8..k * 8 + 8]);
            *lane = u64::from_le_bytes(w);
        }
        l
    }

    /// Adds the record with wire form `wire`.
    pub fn add(&mut self, wire: &[u8]) {
        let h = Self::lanes(wire);
        let mut carry = false;
        for (a, b) in self.0.iter_mut().zip(h) {
            let (s, c1) = a.overflowing_add(b);
            let (s, c2) = s.overflowing_add(u64::from(carry));
            *a = s;
            carry = c1 || c2;
        }
    }

    /// Takes out the record with wire form `wire` (added before).
    pub fn sub(&mut self, wire: &[u8]) {
        let h = Self::lanes(wire);
        let mut borrow = false;
        for (a, b) in self.0.iter_mut().zip(h) {
            let (s, b1) = a.overflowing_sub(b);
            let (s, b2) = s.overflowing_sub(u64::from(borrow));
            *a = s;
            borrow = b1 || b2;
        }
    }

    /// As a version string: `z` and 64 hex digits (never the 16 of a
    /// content hash, so the two kinds never compare equal by accident).
    pub fn version(&self) -> String {
        let [a, b, c, d] = self.0;
        format!("z{d:016x}{c:016x}{b:016x}{a:016x}")
    }
}

/// `inc` (from [`zone_version`]) as version `version`: its text, when
/// rendered, ends with the line naming it.
fn with_version(mut inc: Incoming, version: String) -> Incoming {
    if let Some(render) = inc.render.take() {
        let line = format!("{}{version}\n", super::ZONE_VERSION_LINE);
        inc.render = Some(super::publish::Render::new(move || {
            let mut text = std::sync::Arc::unwrap_or_clone(render.render());
            text.extend_from_slice(line.as_bytes());
            text
        }));
    }
    inc.version = Some(version);
    inc
}

/// A record as uncompressed wire bytes (what [`Key`] compares, TTL aside).
/// Cost: one small allocation.
fn identity(record: &Record) -> Arc<[u8]> {
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    match record.emit(&mut enc) {
        Ok(()) => buf.into(),
        // a record hickory decoded always encodes again; should one not,
        // it is still told apart from every other (and never deleted)
        Err(_) => format!("{record:?}").into_bytes().into(),
    }
}

/// The records of a zone, decoded from their wire form, in order. A record
/// that does not decode (it was encoded by [`identity`], so none) is left out.
fn decoded(records: &BTreeMap<u64, Arc<[u8]>>) -> impl Iterator<Item = Record> + '_ {
    numbered(records).map(|(_, r)| r)
}

/// [`decoded`] with each record's line: its position + 1.
fn numbered(records: &BTreeMap<u64, Arc<[u8]>>) -> impl Iterator<Item = (u32, Record)> + '_ {
    records.iter().filter_map(|(&at, wire)| {
        let line = u32::try_from(at.saturating_add(1)).unwrap_or(u32::MAX);
        Record::read(&mut BinDecoder::new(wire)).ok().map(|r| (line, r))
    })
}

/// Records an IXFR removed: position and wire form.
type Removed = Vec<(u64, Arc<[u8]>)>;

/// The edit an IXFR made, for an update by delta: each removed record's
/// line blanked (lines keep their numbers), the added records' lines
/// appended. `None` if a changed record carries a rule that cannot travel
/// by delta (see `lists/delta.rs`). Cost: a parse of the changed records.
fn ixfr_edit(
    file: &str,
    origin: &Name,
    from_version: String,
    from_lines: u64,
    removed: &[(u64, Arc<[u8]>)],
    st: &ZoneState,
) -> Option<super::delta::Edit> {
    use super::delta::{name_only, Edit, Hunk};
    use super::parse::ParseOutput;
    let mut edit = Edit { from_version, from_lines: u32::try_from(from_lines).ok()?, ..Default::default() };
    let mut removed: Vec<&(u64, Arc<[u8]>)> = removed.iter().filter(|(at, _)| *at < from_lines).collect();
    removed.sort_by_key(|(at, _)| *at);
    for (at, wire) in removed {
        let record = Record::read(&mut BinDecoder::new(wire)).ok()?;
        let mut probe = ParseOutput::default();
        rpz::parse_numbered_records(file, origin, [(u32::try_from(at + 1).ok()?, &record)], &mut probe);
        if !name_only(&probe.entries) || !probe.unsupported.is_empty() {
            return None;
        }
        edit.removed_rules += probe.entries.len();
        edit.removed_bad += probe.bad_lines;
        edit.hunks.push(Hunk { at: u32::try_from(*at).ok()?, del: 1, ins: 1, entries: Vec::new() });
    }
    if st.next > from_lines {
        let mut probe = ParseOutput::default();
        let added = st.records.range(from_lines..).filter_map(|(&at, wire)| {
            let line = u32::try_from(at - from_lines + 1).ok()?;
            Record::read(&mut BinDecoder::new(wire)).ok().map(|r| (line, r))
        });
        rpz::parse_numbered_records(file, origin, added, &mut probe);
        if !name_only(&probe.entries) || !probe.unsupported.is_empty() {
            return None;
        }
        edit.added_bad = probe.bad_lines;
        let ins = u32::try_from(st.next - from_lines).ok()?;
        edit.hunks.push(Hunk { at: edit.from_lines, del: 0, ins, entries: probe.entries });
    }
    Some(edit)
}

/// The version of a zone to offer: the rules parsed from the records
/// themselves, each numbered by its position, and the zone text (what is
/// persisted) rendered only when asked for. Both decode the records when
/// called, not here: an update by delta (an IXFR) calls neither before
/// the swap. Cost: O(1) here; O(zone) for each of them called.
fn zone_version(
    i: ListId,
    origin: &Name,
    wire: &Arc<BTreeMap<u64, Arc<[u8]>>>,
    next: u64,
    meta: SourceMeta,
    edit: Option<super::delta::Edit>,
    received: std::time::Instant,
) -> Incoming {
    let (o, w) = (origin.clone(), Arc::clone(wire));
    let parser = RecordParser::new(move |file, out| {
        rpz::parse_numbered_records(file, &o, numbered(&w), out);
        // positions of records deleted at the end stay taken
        out.lines = out.lines.max(u32::try_from(next).unwrap_or(u32::MAX));
    });
    let (o, w) = (origin.clone(), Arc::clone(wire));
    let render = super::publish::Render::new(move || to_zone_text(&o, decoded(&w)).into_bytes());
    Incoming { records: Some(parser), edit, received, render: Some(render), ..Incoming::new(i, Vec::new(), meta) }
}

/// RFC 1982 serial arithmetic: whether `a` is newer than `b`.
pub fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

struct Source {
    primary: std::net::SocketAddr,
    zone: Name,
    tsig: Option<TsigKey>,
    limits: Limits,
}

fn source_of(lists: &Lists, i: ListId) -> Result<Source, LoadError> {
    let Some(cfg) = lists.config(i) else {
        return Err(LoadError::Fetch { list: String::new(), reason: "no such list".into() });
    };
    let fail = |reason: String| LoadError::Fetch { list: cfg.name.clone(), reason };
    let SourceKind::Axfr { primary, zone } = &cfg.origin else { return Err(fail("not an axfr source".into())) };
    let config = |what: String, e: Box<dyn std::error::Error + Send + Sync>| LoadError::Config { list: cfg.name.clone(), what, source: e };
    let zone = Name::from_ascii(format!("{zone}.")).map_err(|e| config(format!("zone {zone}"), e.into()))?;
    let tsig = match &cfg.tsig {
        Some(t) => Some(TsigKey::parse(t).map_err(|e| config("tsig".into(), e.into()))?),
        None => None,
    };
    let limits = Limits {
        timeout: cfg.timeout,
        max_records: cfg.max_rules.saturating_mul(3).saturating_add(16),
        max_bytes: usize::try_from(cfg.max_bytes).unwrap_or(usize::MAX).saturating_mul(2),
    };
    Ok(Source { primary: *primary, zone, tsig, limits })
}

/// First bytes of a `NAME.records` file (format version 1: then the serial,
/// 4 bytes big-endian, then each record as a 2-byte big-endian length and
/// its uncompressed wire form).
const RECORDS_MAGIC: &[u8] = b"qalqan-zone-records 1\n";

/// `NAME.records` next to the persisted copy `NAME.list` of list `i`.
fn records_path(lists: &Lists, i: ListId) -> Option<PathBuf> {
    lists.config(i)?.path.as_ref().map(|p| p.with_extension("records"))
}

fn encode_records(serial: u32, records: &BTreeMap<u64, Arc<[u8]>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORDS_MAGIC.len() + 4 + records.len().saturating_mul(64));
    out.extend_from_slice(RECORDS_MAGIC);
    out.extend_from_slice(&serial.to_be_bytes());
    for wire in records.values() {
        // a record longer than 65535 bytes cannot have come in a message
        let Ok(len) = u16::try_from(wire.len()) else { continue };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(wire);
    }
    out
}

fn decode_records(bytes: &[u8]) -> Option<ZoneState> {
    let rest = bytes.strip_prefix(RECORDS_MAGIC)?;
    let (serial, mut rest) = rest.split_first_chunk::<4>()?;
    let mut st = ZoneState::new(u32::from_be_bytes(*serial));
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let (wire, tail) = tail.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
        let mut d = BinDecoder::new(wire);
        let record = Record::read(&mut d).ok()?;
        if !d.is_empty() {
            return None;
        }
        st.insert(&record);
        rest = tail;
    }
    Some(st)
}

/// Writes the records of the accepted zone to `NAME.records` (0600, renamed
/// into place: see `lists::state::write`), after the swap, off the async
/// threads, on a thread at `reload_nice` (O(zone): queries first).
async fn save(lists: &Lists, i: ListId, st: &ZoneState) {
    let Some(path) = records_path(lists, i) else { return };
    let shown = path.display().to_string();
    let (serial, records) = (st.serial, Arc::clone(&st.records));
    let written = super::publish::on_build_thread(lists.reload_nice(), move || super::state::write(&path, &encode_records(serial, &records))).await;
    if let Some(e) = written.map_err(|e| e.to_string()).and_then(|w| w.map_err(|e| e.to_string())).err() {
        tracing::warn!(path = %shown, error = %e, "could not persist the zone's records: after a restart the zone is transferred whole");
    }
}

/// The zone state recovered from `NAME.records`, if any, and only if it
/// holds exactly the version in force (the persisted copy loaded at start):
/// otherwise the next transfer is a full one.
pub fn from_persisted(lists: &Lists, i: ListId) -> Option<ZoneState> {
    let in_force = lists.state(i)?;
    in_force.meta.serial?;
    let path = records_path(lists, i)?;
    let bytes = super::state::read(&path).ok()?;
    let Some(st) = decode_records(&bytes) else {
        tracing::warn!(path = %path.display(), "persisted zone records unreadable: the next transfer is a full one");
        return None;
    };
    let zone = source_of(lists, i).ok()?.zone;
    // a copy from before record sums is named by the hash of its text
    if st.version() != in_force.version && super::content_version(to_zone_text(&zone, decoded(&st.records)).as_bytes()) != in_force.version {
        tracing::info!(path = %path.display(), "persisted zone records are not the version in force: the next transfer is a full one");
        return None;
    }
    Some(st)
}

/// Brings list `i` up to date with its primary and offers the result.
pub async fn sync(lists: &Arc<Lists>, i: ListId, state: &mut Option<ZoneState>) -> Result<(), LoadError> {
    let src = source_of(lists, i)?;
    let name = lists.config(i).map(|c| c.name.clone()).unwrap_or_default();
    let fail = |source: super::source::AxfrError| LoadError::Transfer {
        list: name.clone(),
        zone: src.zone.to_string(),
        primary: src.primary,
        source: Box::new(source),
    };
    if let Some(st) = state.as_ref() {
        let serial = soa_serial(src.primary, &src.zone, src.tsig.as_ref(), src.limits.timeout).await.map_err(&fail)?;
        if !serial_newer(serial, st.serial) {
            lists.touch(i);
            return Ok(());
        }
    }
    let have = state.as_ref().map(|s| s.serial);
    let t = transfer(src.primary, &src.zone, have, src.tsig.as_ref(), &src.limits).await.map_err(&fail)?;
    let received = std::time::Instant::now();
    // an IXFR over a version in force numbered by position: its edit
    let mut delta_from: Option<(u64, Removed)> = None;
    let (serial, kind) = match t {
        Transfer::UpToDate { .. } => {
            lists.touch(i);
            return Ok(());
        }
        Transfer::Full { serial, records } => {
            let mut st = ZoneState::new(serial);
            for r in records.iter().filter(|r| r.record_type() != RecordType::SOA) {
                st.insert(r);
            }
            *state = Some(st);
            (serial, "AXFR")
        }
        Transfer::Incremental { serial, diffs, .. } => {
            let Some(st) = state.as_mut() else {
                return Err(LoadError::Fetch { list: name, reason: "incremental transfer without a base zone".into() });
            };
            let from_lines = st.next;
            let mut removed = Vec::new();
            for (deleted, added) in diffs {
                for r in &deleted {
                    if let Some(gone) = st.remove(r) {
                        removed.push(gone);
                    }
                }
                for r in &added {
                    st.insert(r);
                }
            }
            st.serial = serial;
            if st.numbered {
                delta_from = Some((from_lines, removed));
            }
            st.numbered = false;
            (serial, "IXFR")
        }
    };
    let Some(st) = state.as_ref() else { return Ok(()) };
    let meta = SourceMeta { serial: Some(serial), who: format!("{kind} {} from {}", src.zone, src.primary), ..Default::default() };
    let file = lists.config(i).map(|c| c.source.clone()).unwrap_or_default();
    let edit = match (delta_from, lists.state(i)) {
        (Some((from_lines, removed)), Some(in_force)) => ixfr_edit(&file, &src.zone, in_force.version, from_lines, &removed, st),
        _ => None,
    };
    let (origin, wire, next) = (src.zone.clone(), Arc::clone(&st.records), st.next);
    let who = meta.who.clone();
    // the version as the records' sum, moved by this transfer's changes
    // only; the rules (full build) and the text (full build, persisting)
    // are made from the records on the build and persist threads
    let version = st.version();
    tracing::debug!(list = %i, version = %version, incremental = edit.is_some(), "zone version by record sum");
    let make = move || with_version(zone_version(i, &origin, &wire, next, meta, edit, received), version);
    match lists.offer_made(make).await {
        Ok(in_force) => {
            // numbered only if this very build is in force (not a version
            // with the same content read back from zone text)
            if let Some(st) = state.as_mut() {
                st.numbered = in_force.meta.serial == Some(serial) && in_force.meta.who == who;
            }
            let Some(st) = state.as_ref() else { return Ok(()) };
            save(lists, i, st).await;
            Ok(())
        }
        Err(e) => {
            // the zone moved on but its version was not accepted: start over
            // from a full transfer next time
            *state = None;
            Err(e)
        }
    }
}

/// Keeps list `i` in sync until `stop`: every `refresh_s`, and at once when
/// `now` is notified (NOTIFY from the primary, admin reload).
pub fn spawn(
    lists: Arc<Lists>,
    i: ListId,
    mut state: Option<ZoneState>,
    now: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = lists.config(i).map(|c| c.refresh).unwrap_or(Duration::from_secs(300));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                _ = now.notified() => tracing::debug!(list = %i, "zone refresh requested"),
            }
            match sync(&lists, i, &mut state).await {
                // held by the guard: logged and counted once when held (the
                // same version again is not), not a source failure
                Err(LoadError::Held { .. }) | Ok(()) => {}
                Err(e) => lists.source_failed(&e),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::RData;

    fn cname(owner: &str, target: &str, ttl: u32) -> Record {
        let name = |s: &str| Name::from_ascii(s).unwrap();
        Record::from_rdata(name(&format!("{owner}.rpz.test.")), ttl, RData::CNAME(CNAME(name(target))))
    }

    fn owners(st: &ZoneState) -> Vec<String> {
        decoded(&st.records).map(|r| format!("{} {}", r.name, r.ttl)).collect()
    }

    /// IXFR deletions match a record on owner (case kept), class, type
    /// and data, never on TTL; a duplicate is kept once (a copy with
    /// another TTL updates the TTL in place); a record added again goes to
    /// the end.
    /// The version from scratch: the sum over the records held.
    fn recomputed(st: &ZoneState) -> String {
        let mut sum = RecordSum::default();
        st.records.values().for_each(|w| sum.add(w));
        sum.version()
    }

    #[test]
    fn record_sum_moved_by_each_change_equals_the_sum_from_scratch() {
        let pool = ["a", "b.a", "c.b.a", "*.a", "d", "*.d", "e.d", "f", "g", "h.g"];
        let targets = [".", "*.", "rpz-passthru.", "rpz-drop.", "x.example."];
        let mut x = 0x0dd_ba11_cafe_f00du64;
        let mut rand = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut st = ZoneState::new(1);
        let mut seen = std::collections::HashMap::new();
        for step in 0..3000 {
            let r = cname(pool[rand(pool.len())], targets[rand(targets.len())], [60, 300][rand(2)]);
            if rand(3) == 0 {
                st.remove(&r); // a deletion matches whatever TTL is held
            } else {
                st.insert(&r); // a TTL change replaces in place
            }
            assert_eq!(st.version(), recomputed(&st), "step {step}");
            // one set of records, one version, whatever the path to it
            let mut set: Vec<Vec<u8>> = st.records.values().map(|w| w.to_vec()).collect();
            set.sort();
            if let Some(before) = seen.insert(set, st.version()) {
                assert_eq!(before, st.version(), "step {step}");
            }
        }
        assert!(seen.len() > 100, "the walk visited few sets: {}", seen.len());
        // the order does not count, the TTL does
        let (a, b) = (cname("a", ".", 300), cname("b.a", ".", 300));
        let (mut one, mut two) = (ZoneState::new(1), ZoneState::new(1));
        one.insert(&a);
        one.insert(&b);
        two.insert(&b);
        two.insert(&a);
        assert_eq!(one.version(), two.version());
        two.insert(&cname("a", ".", 60));
        assert_ne!(one.version(), two.version());
        assert_eq!(ZoneState::new(1).version(), format!("z{}", "0".repeat(64)));
    }

    #[test]
    fn the_persisted_text_names_its_version() {
        let zone = Name::from_ascii("rpz.test.").unwrap();
        let mut st = ZoneState::new(7);
        st.insert(&cname("a", ".", 300));
        st.insert(&cname("b", "rpz-drop.", 300));
        let meta = SourceMeta { serial: Some(7), ..Default::default() };
        let mut inc = with_version(zone_version(ListId::from_raw(0), &zone, &st.records, st.next, meta, None, std::time::Instant::now()), st.version());
        assert!(inc.bytes.is_empty(), "nothing rendered before it is asked for");
        assert_eq!(inc.version_id(), st.version(), "the version needs no text");
        assert!(inc.bytes.is_empty());
        inc.materialize();
        let text = String::from_utf8(inc.bytes.to_vec()).unwrap();
        assert!(text.starts_with("$ORIGIN rpz.test.\n"), "{text}");
        assert_eq!(crate::lists::zone_version_in_text(text.as_bytes()), Some(st.version()));
        assert_eq!(crate::lists::zone_version_in_text(b"$ORIGIN rpz.test.\na 300 IN CNAME .\n"), None);
        assert_eq!(crate::lists::zone_version_in_text(b"; qalqan-zone-version zzz\n"), None);
        assert_eq!(crate::lists::zone_version_in_text(b""), None);
        // the text parses as the same rules (the last line is a comment)
        let mut out = crate::lists::parse::ParseOutput::default();
        rpz::parse("t", text.as_bytes(), &mut out);
        assert_eq!((out.rules, out.bad_lines), (2, 0), "{:?}", out.errors);
    }

    #[test]
    fn ixfr_deletions_match_owner_type_and_data_not_ttl() {
        let mut st = ZoneState::new(1);
        st.insert(&cname("a", ".", 300));
        st.insert(&cname("b", ".", 300));
        st.insert(&cname("a", ".", 300));
        assert_eq!(owners(&st), ["a.rpz.test. 300", "b.rpz.test. 300"]);
        st.insert(&cname("b", ".", 60));
        assert_eq!(owners(&st), ["a.rpz.test. 300", "b.rpz.test. 60"], "same record, new TTL, same place");
        for other in [cname("A", ".", 300), cname("a", "*.", 300)] {
            assert!(st.remove(&other).is_none());
        }
        assert_eq!(owners(&st).len(), 2, "only the very same record is deleted");
        assert_eq!(st.remove(&cname("a", ".", 60)).map(|(at, _)| at), Some(0), "a deletion with another TTL still matches");
        assert_eq!(owners(&st), ["b.rpz.test. 60"]);
        st.insert(&cname("a", ".", 300));
        assert_eq!(owners(&st), ["b.rpz.test. 60", "a.rpz.test. 300"]);
    }

    /// A build still holding the records sees them as they were.
    #[test]
    fn a_build_keeps_its_records_while_the_zone_moves_on() {
        let mut st = ZoneState::new(1);
        st.insert(&cname("a", ".", 300));
        let held = Arc::clone(&st.records);
        st.remove(&cname("a", ".", 300));
        st.insert(&cname("b", ".", 300));
        assert_eq!(held.len(), 1);
        assert_eq!(owners(&st), ["b.rpz.test. 300"]);
    }

    /// After a restart the records are used only when they are the version
    /// in force (the persisted copy that was loaded); then an IXFR can carry
    /// on from their serial. Records of another version mean a full transfer.
    #[test]
    fn persisted_records_resume_only_the_version_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[state]\ndir = \"{}\"\n[[lists]]\nname = \"rpz\"\nsource = \"axfr://127.0.0.1:53/rpz.test\"\nformat = \"rpz\"\n",
            dir.path().display()
        );
        let config = crate::config::Config::from_toml_str(&toml, "test.toml").unwrap();
        let specs = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect();
        let lists = Lists::new(specs, Arc::new(crate::metrics::Metrics::new().unwrap()), Some(dir.path().to_owned()));
        let zone = Name::from_ascii("rpz.test.").unwrap();
        let mut st = ZoneState::new(5);
        st.insert(&cname("a", ".", 300));
        st.insert(&cname("b", "rpz-passthru.", 300));
        let bytes = to_zone_text(&zone, decoded(&st.records)).into_bytes();
        let meta = SourceMeta { serial: Some(5), ..Default::default() };
        assert_eq!(lists.offer(Incoming::new(ListId::from_raw(0), bytes, meta)).unwrap().rules, 2);
        assert!(from_persisted(&lists, ListId::from_raw(0)).is_none(), "no NAME.records yet");
        let path = records_path(&lists, ListId::from_raw(0)).unwrap();
        assert_eq!(path, dir.path().join("rpz.records"));
        super::super::state::write(&path, &encode_records(st.serial, &st.records)).unwrap();
        let back = from_persisted(&lists, ListId::from_raw(0)).unwrap();
        assert_eq!((back.serial, owners(&back)), (5, owners(&st)));
        st.remove(&cname("b", "rpz-passthru.", 300));
        super::super::state::write(&path, &encode_records(6, &st.records)).unwrap();
        assert!(from_persisted(&lists, ListId::from_raw(0)).is_none(), "records of another version");
    }

    #[test]
    fn persisted_records_round_trip() {
        let mut st = ZoneState::new(7);
        st.insert(&cname("x", "rpz-passthru.", 300));
        st.insert(&Record::from_rdata(Name::from_ascii("Y.rpz.test.").unwrap(), 5, RData::A(A::new(192, 0, 2, 1))));
        st.insert(&cname("z", ".", 300));
        st.remove(&cname("x", "rpz-passthru.", 300));
        let bytes = encode_records(st.serial, &st.records);
        let back = decode_records(&bytes).unwrap();
        assert_eq!(back.serial, 7);
        let all = |s: &ZoneState| decoded(&s.records).map(|r| (r.name.to_ascii(), r.ttl, r.data)).collect::<Vec<_>>();
        assert_eq!(all(&back), all(&st));
        assert_eq!(back.ids.len(), 2);
        // anything torn or foreign is no state at all
        for bad in [&bytes[..bytes.len() - 1], &bytes[..RECORDS_MAGIC.len() + 2], b"$ORIGIN rpz.test.\n".as_slice()] {
            assert!(decode_records(bad).is_none());
        }
    }

    /// IXFRs by delta against fresh builds: random deletions (matched
    /// whatever the TTL), re-additions and new records of a zone, offered as
    /// `sync` offers them (records, zone text, the IXFR's edit), answer
    /// every name as a fresh numbered build of the zone's records does —
    /// verdict, depth, rule, position and answer.
    #[test]
    fn ixfr_deltas_answer_as_a_fresh_build() {
        use crate::policy::index::ListInput;
        use crate::policy::{Index, Verdict};
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[state]\ndir = \"{}\"\n[[lists]]\nname = \"rpz\"\nsource = \"axfr://127.0.0.1:53/rpz.test\"\nformat = \"rpz\"\nmax_shrink = 1.0\n",
            dir.path().display()
        );
        let config = crate::config::Config::from_toml_str(&toml, "test.toml").unwrap();
        let specs = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect();
        // a tiny zone: without a large merge share every change would be a full build
        let lists = Lists::new(specs, Arc::new(crate::metrics::Metrics::new().unwrap()), Some(dir.path().to_owned())).with_delta(1e9, 1000);
        let zone = Name::from_ascii("rpz.test.").unwrap();
        let id = ListId::from_raw(0);
        let pool = ["a", "b.a", "c.b.a", "*.a", "d", "*.d", "e.d", "f"];
        let targets = [".", "*.", "rpz-passthru.", "rpz-drop."];
        let mut x = 0x5eed_1234_abcd_9876u64;
        let mut rand = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut st = ZoneState::new(1);
        for _ in 0..12 {
            st.insert(&cname(pool[rand(pool.len())], targets[rand(targets.len())], 300));
        }
        let offer = |st: &ZoneState, edit| {
            let meta = SourceMeta { serial: Some(st.serial), who: "test".into(), ..Default::default() };
            lists.offer(zone_version(id, &zone, &st.records, st.next, meta, edit, std::time::Instant::now())).unwrap()
        };
        offer(&st, None);
        st.numbered = true;
        // the triggers are the owners relative to the zone
        let names: Vec<String> = ["a", "b.a", "c.b.a", "x.a", "d", "e.d", "y.e.d", "f", "z.f", "g"].iter().map(|n| n.to_string()).collect();
        let view = |p: &crate::policy::Policy, n: &str| {
            let q = crate::name::QName::parse(n).unwrap();
            let (verdict, hit) = match p.check(&q) {
                Verdict::Pass => return "pass".to_owned(),
                Verdict::Allowed(h) => ("allowed", h),
                Verdict::Blocked(h) => ("blocked", h),
            };
            format!("{verdict} depth {} rule {} line {} answer {}", hit.depth, p.rule_text(hit.rule), p.rule_line(hit.rule), p.answer(&hit).as_str())
        };
        let mut blocked = 0;
        for step in 0..60 {
            let from_lines = st.next;
            let mut removed = Vec::new();
            for _ in 0..=rand(3) {
                // a deletion names the record with any TTL
                let ttl = [300, 60][rand(2)];
                if let Some(gone) = st.remove(&cname(pool[rand(pool.len())], targets[rand(targets.len())], ttl)) {
                    removed.push(gone);
                }
                if rand(2) == 0 {
                    st.insert(&cname(pool[rand(pool.len())], targets[rand(targets.len())], 300));
                }
            }
            st.serial += 1;
            let version = lists.state(id).unwrap().version;
            let edit = ixfr_edit("axfr://127.0.0.1:53/rpz.test", &zone, version, from_lines, &removed, &st);
            assert!(edit.is_some(), "CNAME triggers always go by delta");
            offer(&st, edit);
            let mut fresh = crate::lists::parse::ParseOutput::default();
            rpz::parse_numbered_records("axfr://127.0.0.1:53/rpz.test", &zone, numbered(&st.records), &mut fresh);
            let want = crate::lists::policy_of(&config.lists, Index::build(&[ListInput { allow: false, entries: &fresh.entries }]).unwrap(), 0);
            let got = lists.policy.load();
            for n in &names {
                let v = view(&want, n);
                blocked += usize::from(v.starts_with("blocked"));
                assert_eq!(view(&got, n), v, "step {step}: {n}");
            }
            assert_eq!(lists.state(id).unwrap().rules, fresh.rules, "step {step}: rules");
        }
        let m = lists.metrics().encode();
        let deltas = m.lines().find_map(|l| l.strip_prefix(r#"qalqan_list_updates_total{kind="delta",list="rpz"} "#)).and_then(|v| v.parse::<u32>().ok());
        assert!(deltas.is_some_and(|d| d > 30), "IXFRs went by delta {deltas:?} times");
        assert!(blocked > 100, "the names were blocked only {blocked} times: the test tests nothing");
    }

    /// The guard on zone transfers: an IXFR (by delta) adding a trigger for
    /// a protected name is held whole (`hold_all`) or applied without it
    /// (`apply_rest`), and a confirm publishes it.
    #[test]
    fn ixfr_adding_a_protected_name_is_held_then_confirmed() {
        for on_hit in [crate::rules::GuardOnHit::HoldAll, crate::rules::GuardOnHit::ApplyRest] {
            let dir = tempfile::tempdir().unwrap();
            let toml = format!(
                "[state]\ndir = \"{}\"\n[[lists]]\nname = \"rpz\"\nsource = \"axfr://127.0.0.1:53/rpz.test\"\nformat = \"rpz\"\nmax_shrink = 1.0\n",
                dir.path().display()
            );
            let config = crate::config::Config::from_toml_str(&toml, "test.toml").unwrap();
            let specs = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect();
            let protected = dir.path().join("protected.txt");
            // RPZ triggers are names relative to the zone: `*.bank` covers `www.bank`
            std::fs::write(&protected, "www.bank\n").unwrap();
            let guard = crate::lists::guard::Guard::load(&protected, on_hit).unwrap();
            let lists = Lists::new(specs, Arc::new(crate::metrics::Metrics::new().unwrap()), Some(dir.path().to_owned()))
                .with_delta(1e9, 1000)
                .with_guard(guard);
            let zone = Name::from_ascii("rpz.test.").unwrap();
            let id = ListId::from_raw(0);
            let offer = |st: &ZoneState, edit| {
                let meta = SourceMeta { serial: Some(st.serial), who: "test".into(), ..Default::default() };
                lists.offer(zone_version(id, &zone, &st.records, st.next, meta, edit, std::time::Instant::now()))
            };
            let blocked = |n: &str| matches!(lists.policy.load().check(&crate::name::QName::parse(n).unwrap()), crate::policy::Verdict::Blocked(_));
            let mut st = ZoneState::new(1);
            st.insert(&cname("ads", ".", 300));
            offer(&st, None).unwrap();
            st.numbered = true;
            let before = lists.state(id).unwrap().version;
            let from_lines = st.next;
            st.insert(&cname("*.bank", ".", 300));
            st.insert(&cname("other", ".", 300));
            st.serial = 2;
            let edit = ixfr_edit("axfr://127.0.0.1:53/rpz.test", &zone, before.clone(), from_lines, &[], &st);
            assert!(edit.is_some(), "an IXFR by delta");
            let r = offer(&st, edit);
            let held = lists.held(id).unwrap_or_else(|| panic!("{on_hit:?}: not held: {r:?}, www.bank blocked: {}", blocked("www.bank")));
            assert_eq!(held.names, ["www.bank"]);
            assert!(!blocked("www.bank"), "{on_hit:?}: a protected name is never blocked unconfirmed");
            match on_hit {
                crate::rules::GuardOnHit::HoldAll => {
                    assert!(matches!(r, Err(LoadError::Held { .. })), "{r:?}");
                    assert_eq!(lists.state(id).unwrap().version, before, "the version in force stays");
                    assert!(!blocked("other"));
                }
                crate::rules::GuardOnHit::ApplyRest => {
                    assert!(r.is_ok(), "{r:?}");
                    assert!(blocked("other"), "the rest is in force");
                    assert!(!blocked("x.bank"), "the whole trigger is left out");
                    assert_eq!(held.rules.len(), 1, "{:?}", held.rules);
                }
            }
            lists.confirm(id, "test").unwrap();
            assert!(blocked("www.bank") && blocked("other"), "{on_hit:?}: confirmed");
            assert!(lists.held(id).is_none());
            assert!(matches!(lists.confirm(id, "test"), Err(crate::lists::publish::ConfirmError::NothingHeld(_))));
        }
    }
}
