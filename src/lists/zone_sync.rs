//! `axfr://HOST:PORT/ZONE` RPZ sources: AXFR at start, then IXFR when the
//! primary's SOA serial moves on (checked every `refresh_s`) or when it sends
//! a NOTIFY (accepted on the DNS listener only from the primary's address).
//! The zone is kept as its set of record lines; the text of that set goes
//! through the same RPZ parser and update gate as every other list.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, Record, RecordType};
use tokio_util::sync::CancellationToken;

use super::publish::{Incoming, Lists};
use super::source::{soa_serial, to_zone_text, transfer, Limits, Transfer, TsigKey};
use super::{LoadError, SourceMeta};
use crate::config::SourceKind;

/// The zone as last accepted: one line per record, and its serial.
pub struct ZoneState {
    lines: BTreeSet<String>,
    serial: u32,
}

/// RFC 1982 serial arithmetic: whether `a` is newer than `b`.
pub fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

fn render(origin: &Name, records: &[Record]) -> Vec<String> {
    to_zone_text(origin, records).lines().skip(1).map(str::to_owned).collect()
}

fn zone_text(origin: &Name, lines: &BTreeSet<String>) -> Vec<u8> {
    let mut out = format!("$ORIGIN {}\n", origin.to_ascii());
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out.into_bytes()
}

struct Source {
    primary: std::net::SocketAddr,
    zone: Name,
    tsig: Option<TsigKey>,
    limits: Limits,
}

fn source_of(lists: &Lists, i: usize) -> Result<Source, LoadError> {
    let Some((cfg, _)) = lists.configs().get(i) else {
        return Err(LoadError::Fetch { list: String::new(), reason: "no such list".into() });
    };
    let fail = |reason: String| LoadError::Fetch { list: cfg.name.clone(), reason };
    let SourceKind::Axfr { primary, zone } = &cfg.origin else { return Err(fail("not an axfr source".into())) };
    let zone = Name::from_ascii(format!("{zone}.")).map_err(|e| fail(format!("zone {zone}: {e}")))?;
    let tsig = match &cfg.tsig {
        Some(t) => Some(TsigKey::parse(t).map_err(|e| fail(format!("tsig: {e}")))?),
        None => None,
    };
    let limits = Limits {
        timeout: cfg.timeout,
        max_records: cfg.max_rules.saturating_mul(3).saturating_add(16),
        max_bytes: usize::try_from(cfg.max_bytes).unwrap_or(usize::MAX).saturating_mul(2),
    };
    Ok(Source { primary: *primary, zone, tsig, limits })
}

/// The zone state recovered from the persisted copy of list `i`, if any.
pub fn from_persisted(lists: &Lists, i: usize) -> Option<ZoneState> {
    let serial = lists.state(i)?.meta.serial?;
    let path = lists.configs().get(i)?.1.as_ref()?;
    let text = std::fs::read_to_string(path).ok()?;
    let lines = text.lines().filter(|l| !l.starts_with('$') && !l.trim().is_empty()).map(str::to_owned).collect();
    Some(ZoneState { lines, serial })
}

/// Brings list `i` up to date with its primary and offers the result.
pub async fn sync(lists: &Arc<Lists>, i: usize, state: &mut Option<ZoneState>) -> Result<(), LoadError> {
    let src = source_of(lists, i)?;
    let name = lists.configs().get(i).map(|c| c.0.name.clone()).unwrap_or_default();
    let fail = |e: super::source::AxfrError| LoadError::Fetch { list: name.clone(), reason: format!("{} from {}: {e}", src.zone, src.primary) };
    if let Some(st) = state.as_ref() {
        let serial = soa_serial(src.primary, &src.zone, src.tsig.as_ref(), src.limits.timeout).await.map_err(&fail)?;
        if !serial_newer(serial, st.serial) {
            lists.touch(i);
            return Ok(());
        }
    }
    let have = state.as_ref().map(|s| s.serial);
    let t = transfer(src.primary, &src.zone, have, src.tsig.as_ref(), &src.limits).await.map_err(&fail)?;
    let (serial, kind) = match t {
        Transfer::UpToDate { .. } => {
            lists.touch(i);
            return Ok(());
        }
        Transfer::Full { serial, records } => {
            let records: Vec<Record> = records.into_iter().filter(|r| r.record_type() != RecordType::SOA).collect();
            *state = Some(ZoneState { lines: render(&src.zone, &records).into_iter().collect(), serial });
            (serial, "AXFR")
        }
        Transfer::Incremental { serial, diffs, .. } => {
            let Some(st) = state.as_mut() else {
                return Err(LoadError::Fetch { list: name, reason: "incremental transfer without a base zone".into() });
            };
            for (deleted, added) in diffs {
                for l in render(&src.zone, &deleted) {
                    st.lines.remove(&l);
                }
                for l in render(&src.zone, &added) {
                    st.lines.insert(l);
                }
            }
            st.serial = serial;
            (serial, "IXFR")
        }
    };
    let Some(st) = state.as_ref() else { return Ok(()) };
    let meta = SourceMeta { serial: Some(serial), who: format!("{kind} {} from {}", src.zone, src.primary), ..Default::default() };
    let bytes = zone_text(&src.zone, &st.lines);
    match lists.offer_async(Incoming { list: i, bytes, meta, force: false }).await {
        Ok(_) => Ok(()),
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
    i: usize,
    mut state: Option<ZoneState>,
    now: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = lists.configs().get(i).map(|c| c.0.refresh).unwrap_or(Duration::from_secs(300));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                _ = now.notified() => tracing::debug!(list = i, "zone refresh requested"),
            }
            if let Err(e) = sync(&lists, i, &mut state).await {
                lists.source_failed(&e);
            }
        }
    })
}
