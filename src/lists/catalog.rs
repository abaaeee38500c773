//! RFC 9432 catalog zones (`[[catalogs]]`): a zone, transferred like any
//! `axfr://` list (the same client, `source/axfr`, the same TSIG key and
//! NOTIFY handling), whose records name other zones. Each member zone
//! becomes an `axfr://` list called `catz:ZONE`, transferred from the same
//! primary with the catalog's key and `defaults` (a `group` property can
//! change its action, kind, EDE or mode: `groups`), and is kept in sync by
//! `zone_sync` like a configured list (AXFR, IXFR, NOTIFY, persisted copy).
//!
//! The set of lists is fixed at start (`ListId`s are positions), so each
//! catalog owns `max_members` member slots after the `[[lists]]`: a vacant
//! slot (`SourceKind::Vacant`) has no rules and is not waited for; a member
//! taking a slot gives it its config ([`Lists::assign`]); a member leaving
//! has its rules removed in one publish and its persisted files deleted
//! ([`Lists::retire`]). The membership is persisted (`catz:ZONE.catalog`
//! in the state directory) and read back at start, so the members are
//! enforced from their persisted copies while the primary is down.
//!
//! What is read of the catalog (RFC 9432 §4): `version` must be a TXT "2"
//! (otherwise the catalog is not processed and the membership in force
//! stays); `UNIQUE.zones` PTR is a member (a node with more than one PTR
//! is ignored, as is a zone listed under two ids: the first id in DNS
//! order keeps it); `group.UNIQUE.zones` TXT is the member's group. `coo`
//! (change of ownership, §4.4.1) and unknown properties are ignored: a
//! qalqan instance consumes one catalog per primary and never migrates a
//! member between catalogs. A member whose unique id changes is removed
//! and added again (its state reset, §5.4).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::publish::Lists;
use super::source::{soa_serial, transfer, AxfrError, Limits, Transfer, TsigKey};
use super::zone_sync;
use crate::config::{CatalogConfig, Config, ListConfig};
use crate::name::QName;
use crate::rules::ListId;

/// One member zone as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The member node's unique label (`UNIQUE` of `UNIQUE.zones.CATZ`).
    pub id: String,
    /// The member zone, lowercase, without the final dot.
    pub zone: String,
    /// The `group` property, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Why a catalog version is not processed (the membership in force stays).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no `version` TXT \"2\" (RFC 9432 §4.2.1): not a catalog this consumer reads")]
    Version,
    #[error("transfer")]
    Transfer(#[source] Box<AxfrError>),
}

/// A member zone name from a PTR target: lowercase, no final dot, and only
/// letters, digits, `-`, `_` and dots (it becomes a list and file name).
fn member_zone(target: &Name) -> Option<String> {
    let s = target.to_ascii().to_ascii_lowercase();
    let s = s.trim_end_matches('.');
    let ok = !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    ok.then(|| s.to_owned())
}

/// The members of catalog `catalog` in `records` (RFC 9432 §4), in DNS
/// order of their unique ids. Cost: O(records · log records).
pub fn parse(catalog: &Name, records: &[Record]) -> Result<Vec<Member>, CatalogError> {
    let lower = |n: &Name| n.to_ascii().to_ascii_lowercase();
    let cat = lower(catalog);
    let cat = if cat.ends_with('.') { cat } else { format!("{cat}.") };
    let version = format!("version.{cat}");
    let zones = format!(".zones.{cat}");
    let mut has_version = false;
    let mut ptrs: BTreeMap<String, Vec<&Name>> = BTreeMap::new();
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    for r in records {
        let owner = lower(&r.name);
        match (&r.data, r.record_type()) {
            (RData::TXT(t), RecordType::TXT) if owner == version => {
                let text: Vec<u8> = t.txt_data.iter().flat_map(|d| d.iter().copied()).collect();
                has_version |= text == b"2";
            }
            (RData::PTR(p), RecordType::PTR) => {
                if let Some(id) = owner.strip_suffix(&zones).filter(|id| !id.contains('.')) {
                    ptrs.entry(id.to_owned()).or_default().push(&p.0);
                }
            }
            (RData::TXT(t), RecordType::TXT) => {
                let Some(id) = owner.strip_prefix("group.").and_then(|o| o.strip_suffix(&zones)).filter(|id| !id.contains('.')) else {
                    continue;
                };
                if let Some(g) = t.txt_data.first() {
                    groups.entry(id.to_owned()).or_insert_with(|| String::from_utf8_lossy(g).into_owned());
                }
            }
            _ => {} // coo, other properties, SOA, NS: not used
        }
    }
    if !has_version {
        return Err(CatalogError::Version);
    }
    let mut out: Vec<Member> = Vec::new();
    for (id, targets) in ptrs {
        let [target] = targets.as_slice() else {
            tracing::warn!(catalog = %cat, member = %id, "member node with more than one PTR: ignored (RFC 9432 §4.1)");
            continue;
        };
        let Some(zone) = member_zone(target) else {
            tracing::warn!(catalog = %cat, member = %id, target = %target, "member zone name not usable as a list name: ignored");
            continue;
        };
        if out.iter().any(|m| m.zone == zone) {
            tracing::warn!(catalog = %cat, member = %id, %zone, "member zone listed twice: the first id keeps it");
            continue;
        }
        out.push(Member { group: groups.get(&id).cloned(), id, zone });
    }
    Ok(out)
}

/// The persisted membership (`catz:ZONE.catalog`, JSON).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Persisted {
    serial: u32,
    members: Vec<Member>,
}

fn persisted_path(state_dir: Option<&PathBuf>, zone: &str) -> Option<PathBuf> {
    state_dir.map(|d| d.join(format!("{}.catalog", CatalogConfig::member_name(zone))))
}

/// A member list's persisted copy (as `Config::list_path` names it).
fn member_path(state_dir: Option<&PathBuf>, cfg: &ListConfig) -> Option<PathBuf> {
    state_dir.map(|d| d.join(format!("{}.list", cfg.name)))
}

fn read_persisted(state_dir: Option<&PathBuf>, zone: &str) -> Option<Persisted> {
    let path = persisted_path(state_dir, zone)?;
    let bytes = super::state::read(&path).ok()?;
    match serde_json::from_slice::<Persisted>(&bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "persisted catalog unreadable: waiting for the primary");
            None
        }
    }
}

/// The member slots of every `[[catalogs]]` entry, to follow the
/// `[[lists]]` in [`Lists::new`]: members of the persisted membership
/// first (with their persisted copies' paths, so that `load_initial`
/// enforces them before the primary answers), then vacant slots.
pub fn slot_specs(config: &Config) -> Vec<(ListConfig, Option<PathBuf>)> {
    let mut out = Vec::new();
    for c in &config.catalogs {
        let members = read_persisted(config.state_dir.as_ref(), &c.zone).map(|p| p.members).unwrap_or_default();
        for n in 0..c.max_members {
            match members.get(n) {
                Some(m) => {
                    let cfg = c.member(&m.zone, m.group.as_deref());
                    let path = config.list_path(&cfg);
                    out.push((cfg, path));
                }
                None => out.push((c.vacant(n), None)),
            }
        }
    }
    out
}

/// A catalog's member slot at run time.
struct Slot {
    id: ListId,
    /// The zone a NOTIFY must name to refresh this slot (`None`: vacant).
    zone: Arc<ArcSwapOption<QName>>,
    refresh: Arc<Notify>,
    member: Option<Member>,
    /// The member's `zone_sync` task and its stop token.
    task: Option<(CancellationToken, JoinHandle<()>)>,
}

/// What `serve` needs to route NOTIFYs and admin reloads: the catalog
/// zone's and each slot's (its list id, the zone it holds, what wakes its sync).
pub struct Targets {
    pub catalog: (QName, Arc<Notify>),
    pub slots: Vec<(ListId, Arc<ArcSwapOption<QName>>, Arc<Notify>)>,
}

/// One `[[catalogs]]` entry being followed.
pub struct Follower {
    lists: Arc<Lists>,
    cfg: CatalogConfig,
    zone: Name,
    tsig: Option<TsigKey>,
    state_dir: Option<PathBuf>,
    slots: Vec<Slot>,
    /// The catalog's records and serial as last accepted (`None`: not yet
    /// transferred by this process).
    records: Option<(u32, Vec<Record>)>,
    /// The serial of the persisted membership (read at start).
    persisted_serial: Option<u32>,
    refresh: Arc<Notify>,
}

impl Follower {
    /// The follower of catalog `k` of `config`, its slots being those
    /// [`slot_specs`] made (numbered after `config.lists`).
    pub fn new(lists: &Arc<Lists>, config: &Config, k: usize) -> Option<Self> {
        let cfg = config.catalogs.get(k)?.clone();
        let first = config.lists.len() + config.catalogs.iter().take(k).map(|c| c.max_members).sum::<usize>();
        let zone = Name::from_ascii(format!("{}.", cfg.zone)).ok()?;
        let tsig = cfg.tsig.as_deref().map(TsigKey::parse).transpose().ok()?;
        let persisted = read_persisted(config.state_dir.as_ref(), &cfg.zone);
        let members = persisted.as_ref().map(|p| p.members.clone()).unwrap_or_default();
        let slots = (first..first + cfg.max_members)
            .filter_map(|i| {
                let id = ListId::from_index(i)?;
                let member = members.get(i - first).cloned();
                let zone = member.as_ref().and_then(|m| QName::parse(&m.zone).ok()).map(Arc::new);
                Some(Slot { id, zone: Arc::new(ArcSwapOption::new(zone)), refresh: Arc::new(Notify::new()), member, task: None })
            })
            .collect();
        Some(Self {
            lists: Arc::clone(lists),
            zone,
            tsig,
            state_dir: config.state_dir.clone(),
            slots,
            records: None,
            persisted_serial: persisted.map(|p| p.serial),
            refresh: Arc::new(Notify::new()),
            cfg,
        })
    }

    /// The NOTIFY routes of this catalog.
    pub fn targets(&self) -> Option<Targets> {
        Some(Targets {
            catalog: (QName::parse(&self.cfg.zone).ok()?, Arc::clone(&self.refresh)),
            slots: self.slots.iter().map(|s| (s.id, Arc::clone(&s.zone), Arc::clone(&s.refresh))).collect(),
        })
    }

    pub fn primary(&self) -> std::net::SocketAddr {
        self.cfg.primary
    }

    pub fn tsig(&self) -> Option<&TsigKey> {
        self.tsig.as_ref()
    }

    /// Starts the sync task of every member read back at start.
    fn start_persisted(&mut self, stop: &CancellationToken) {
        for n in 0..self.slots.len() {
            if self.slots[n].member.is_some() {
                self.start_member(n, stop);
            }
        }
    }

    /// Starts the `zone_sync` task of slot `n` (from its persisted records
    /// when they are the version in force) and has it sync at once.
    fn start_member(&mut self, n: usize, stop: &CancellationToken) {
        let Some(slot) = self.slots.get_mut(n) else { return };
        let state = zone_sync::from_persisted(&self.lists, slot.id);
        let token = stop.child_token();
        let task = zone_sync::spawn(Arc::clone(&self.lists), slot.id, state, Arc::clone(&slot.refresh), token.clone());
        slot.refresh.notify_one();
        slot.task = Some((token, task));
    }

    /// Brings the catalog up to date with its primary: SOA check, then
    /// AXFR (or IXFR over the records this process holds). `Ok(None)`:
    /// nothing new.
    async fn fetch(&self) -> Result<Option<(u32, Vec<Record>)>, AxfrError> {
        let limits = Limits { timeout: self.cfg.timeout, max_records: 1_000_000, max_bytes: 64 << 20 };
        let have = self.records.as_ref().map(|(s, _)| *s).or(self.persisted_serial);
        if let Some(have) = have {
            let serial = soa_serial(self.cfg.primary, &self.zone, self.tsig.as_ref(), self.cfg.timeout).await?;
            if !zone_sync::serial_newer(serial, have) {
                return Ok(None);
            }
        }
        let from = self.records.as_ref().map(|(s, _)| *s);
        match transfer(self.cfg.primary, &self.zone, from, self.tsig.as_ref(), &limits).await? {
            Transfer::Full { serial, records } => Ok(Some((serial, records.into_iter().filter(|r| r.record_type() != RecordType::SOA).collect()))),
            Transfer::Incremental { serial, diffs, .. } => {
                let mut records = self.records.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
                let same = |a: &Record, b: &Record| a.name == b.name && a.record_type() == b.record_type() && a.data == b.data;
                for (deleted, added) in diffs {
                    records.retain(|r| !deleted.iter().any(|d| same(r, d)));
                    for a in added {
                        if !records.iter().any(|r| same(r, &a)) {
                            records.push(a);
                        }
                    }
                }
                Ok(Some((serial, records)))
            }
            Transfer::UpToDate { .. } => Ok(None),
        }
    }

    /// One round: fetch, parse, and apply a changed membership. `Ok(false)`:
    /// the catalog had not changed.
    async fn round(&mut self, stop: &CancellationToken) -> Result<bool, CatalogError> {
        let Some((serial, records)) = self.fetch().await.map_err(|e| CatalogError::Transfer(Box::new(e)))? else {
            return Ok(false);
        };
        let mut members = parse(&self.zone, &records)?;
        if members.len() > self.slots.len() {
            tracing::error!(catalog = %self.cfg.zone, members = members.len(), max_members = self.slots.len(), "catalog has more members than max_members: the rest are left out");
            members.truncate(self.slots.len());
        }
        self.records = Some((serial, records));
        self.apply(&members, stop).await;
        self.persist(serial, &members).await;
        tracing::info!(catalog = %self.cfg.zone, serial, members = members.len(), "catalog applied");
        Ok(true)
    }

    /// Makes the slots hold exactly `members`: leavers retired (their
    /// rules unpublished), changed groups reassigned, newcomers given a
    /// vacant slot and a sync task.
    async fn apply(&mut self, members: &[Member], stop: &CancellationToken) {
        let same_member = |a: &Member, b: &Member| a.id == b.id && a.zone == b.zone;
        for n in 0..self.slots.len() {
            let slot = &mut self.slots[n];
            let Some(held) = slot.member.clone() else { continue };
            match members.iter().find(|m| same_member(m, &held)) {
                None => {
                    // its sync task ends first (at most one sync running
                    // out): no version of the zone arrives after the retire
                    if let Some((token, task)) = slot.task.take() {
                        token.cancel();
                        let _ = task.await;
                    }
                    slot.zone.store(None);
                    slot.member = None;
                    self.lists.retire_async(slot.id, self.cfg.vacant(n)).await;
                    tracing::info!(catalog = %self.cfg.zone, member = %held.zone, "member zone left the catalog: unenforced");
                }
                Some(m) if m.group != held.group => {
                    let cfg = self.cfg.member(&m.zone, m.group.as_deref());
                    let path = member_path(self.state_dir.as_ref(), &cfg);
                    self.lists.assign_async(slot.id, cfg, path).await;
                    slot.member = Some(m.clone());
                    tracing::info!(catalog = %self.cfg.zone, member = %m.zone, group = ?m.group, "member zone's group changed");
                }
                Some(_) => {}
            }
        }
        for m in members {
            if self.slots.iter().any(|s| s.member.as_ref().is_some_and(|h| same_member(h, m))) {
                continue;
            }
            let Some(n) = self.slots.iter().position(|s| s.member.is_none()) else { break };
            let cfg = self.cfg.member(&m.zone, m.group.as_deref());
            let path = member_path(self.state_dir.as_ref(), &cfg);
            let slot = &mut self.slots[n];
            self.lists.assign_async(slot.id, cfg, path).await;
            slot.zone.store(QName::parse(&m.zone).ok().map(Arc::new));
            slot.member = Some(m.clone());
            tracing::info!(catalog = %self.cfg.zone, member = %m.zone, group = ?m.group, "member zone joined the catalog: transferring");
            self.start_member(n, stop);
        }
    }

    async fn persist(&self, serial: u32, members: &[Member]) {
        let Some(path) = persisted_path(self.state_dir.as_ref(), &self.cfg.zone) else { return };
        // in slot order; a restart gives them the first slots (`slot_specs`)
        let held: Vec<Member> = self.slots.iter().filter_map(|s| s.member.clone()).collect();
        debug_assert!(held.iter().all(|h| members.contains(h)));
        let body = serde_json::to_vec_pretty(&Persisted { serial, members: held }).unwrap_or_default();
        let shown = path.display().to_string();
        let written = tokio::task::spawn_blocking(move || super::state::write(&path, &body)).await;
        if let Some(e) = written.map_err(|e| e.to_string()).and_then(|w| w.map_err(|e| e.to_string())).err() {
            tracing::warn!(path = %shown, error = %e, "could not persist the catalog membership");
        }
    }

    /// Follows the catalog until `stop`: a round at start, then every
    /// `refresh_s` and at each NOTIFY for the catalog zone.
    pub fn spawn(mut self, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            self.start_persisted(&stop);
            // the catalog's own checks count under its name, like a list's
            let label = CatalogConfig::member_name(&self.cfg.zone);
            loop {
                let result = match self.round(&stop).await {
                    Ok(true) => "success",
                    Ok(false) => "unchanged",
                    Err(e) => {
                        tracing::warn!(catalog = %self.cfg.zone, primary = %self.cfg.primary, error = %super::ErrorChain(&e), "catalog not updated; keeping its members");
                        "error"
                    }
                };
                self.lists.metrics().list_reloads.with_label_values(&[&label, result]).inc();
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(self.cfg.refresh) => {}
                    _ = self.refresh.notified() => tracing::debug!(catalog = %self.cfg.zone, "catalog refresh requested"),
                }
            }
            for s in &mut self.slots {
                if let Some((token, task)) = s.task.take() {
                    token.cancel();
                    let _ = task.await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{PTR, TXT};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }
    fn txt(owner: &str, t: &str) -> Record {
        Record::from_rdata(n(owner), 0, RData::TXT(TXT::new(vec![t.to_owned()])))
    }
    fn ptr(owner: &str, t: &str) -> Record {
        Record::from_rdata(n(owner), 0, RData::PTR(PTR(n(t))))
    }

    #[test]
    fn members_groups_and_what_is_ignored() {
        let cat = n("catz.test.");
        let recs = vec![
            txt("version.catz.test.", "2"),
            ptr("b.zones.catz.test.", "Two.Example."),
            ptr("a.zones.catz.test.", "one.example."),
            txt("group.b.zones.catz.test.", "urgent"),
            ptr("coo.a.zones.catz.test.", "other.catz."),
            ptr("c.zones.catz.test.", "x.example."),
            ptr("c.zones.catz.test.", "y.example."),
            ptr("d.zones.catz.test.", "one.example."),
            // a label with a `/` (legal in DNS, not in a list or file name)
            Record::from_rdata(n("e.zones.catz.test."), 0, RData::PTR(PTR(Name::from_labels(vec![&b"bad/name"[..], b"example"]).unwrap()))),
        ];
        let got = parse(&cat, &recs).unwrap();
        assert_eq!(
            got,
            vec![
                Member { id: "a".into(), zone: "one.example".into(), group: None },
                Member { id: "b".into(), zone: "two.example".into(), group: Some("urgent".into()) },
            ]
        );
        assert!(matches!(parse(&cat, &recs[1..]), Err(CatalogError::Version)), "no version: not processed");
        let mut v1 = recs.clone();
        v1[0] = txt("version.catz.test.", "1");
        assert!(matches!(parse(&cat, &v1), Err(CatalogError::Version)), "version 1 is not read");
    }

    /// `[[catalogs]]` is checked at start; its slots follow the lists, the
    /// persisted membership's members first (with the group's keys and their
    /// persisted copies), then vacant slots.
    #[test]
    fn config_and_slots() {
        let dir = tempfile::tempdir().unwrap();
        let toml = |extra: &str| {
            format!(
                "[state]\ndir = \"{}\"\n[[catalogs]]\nsource = \"axfr://192.0.2.53:53/Catz.Test\"\nmax_members = 3\n\
                 groups = {{ urgent = {{ action = \"refused\", ede = 16 }} }}\n{extra}",
                dir.path().display()
            )
        };
        let config = Config::from_toml_str(&toml(""), "t.toml").unwrap();
        let specs = slot_specs(&config);
        assert_eq!(specs.len(), 3);
        assert!(specs.iter().all(|(c, p)| c.origin == crate::config::SourceKind::Vacant && p.is_none()));
        let persisted = Persisted { serial: 7, members: vec![Member { id: "m1".into(), zone: "one.example".into(), group: Some("urgent".into()) }] };
        std::fs::write(dir.path().join("catz:catz.test.catalog"), serde_json::to_vec(&persisted).unwrap()).unwrap();
        let specs = slot_specs(&config);
        let (c, p) = &specs[0];
        assert_eq!((c.name.as_str(), c.action, c.ede, c.catalog.as_deref()), ("catz:one.example", crate::rules::Action::Refused, 16, Some("catz.test")));
        assert_eq!(c.origin, crate::config::SourceKind::Axfr { primary: "192.0.2.53:53".parse().unwrap(), zone: "one.example".into() });
        assert_eq!(p.as_deref(), Some(dir.path().join("catz:one.example.list").as_path()));
        assert!(specs[1..].iter().all(|(c, _)| c.origin == crate::config::SourceKind::Vacant));
        for (extra, key) in [
            ("defaults = { format = \"domains\" }\n", "defaults.format"),
            ("refresh_s = 0\n", "refresh_s"),
            ("max_members = 70000\n", "catalogs"),
        ] {
            let e = Config::from_toml_str(&toml(extra), "t.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = Config::from_toml_str("[[catalogs]]\nsource = \"https://x.example/c\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("axfr://"), "{e}");
    }

    /// A slot takes a member (assign + a version offered: enforced under
    /// its name), then gives it back (retire: its rules gone in one publish,
    /// the other lists' kept, its state, series and files gone).
    #[test]
    fn a_slot_takes_a_member_and_gives_it_back() {
        use crate::policy::Verdict;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("local.txt"), "local.example\n").unwrap();
        let toml = format!(
            "[state]\ndir = \"{d}/state\"\n[[lists]]\nname = \"local\"\nsource = \"{d}/local.txt\"\n\
             [[catalogs]]\nsource = \"axfr://192.0.2.53:53/catz.test\"\nmax_members = 2\n",
            d = dir.path().display()
        );
        let config = Config::from_toml_str(&toml, "t.toml").unwrap();
        let mut specs: Vec<_> = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect();
        specs.extend(slot_specs(&config));
        let lists = Arc::new(Lists::new(specs, Arc::new(crate::metrics::Metrics::new().unwrap()), config.state_dir.clone()));
        lists.load_initial().unwrap();
        let blocked = |n: &str| matches!(lists.policy.load().check(&QName::parse(n).unwrap()), Verdict::Blocked(_));
        let slot = ListId::from_index(1).unwrap();
        let cat = &config.catalogs[0];
        let member = cat.member("one.rpz", None);
        let path = member_path(config.state_dir.as_ref(), &member);
        lists.assign(slot, member, path.clone());
        let meta = super::super::SourceMeta { serial: Some(3), ..Default::default() };
        lists.offer(super::super::publish::Incoming::new(slot, b"$ORIGIN one.rpz.\nbad.example CNAME .\n".to_vec(), meta)).unwrap();
        assert!(blocked("bad.example") && blocked("local.example"));
        assert_eq!(lists.policy.load().list_info(slot).map(|l| l.name.as_str()), Some("catz:one.rpz"));
        assert!(lists.metrics().encode().contains(r#"qalqan_list_serial{list="catz:one.rpz"} 3"#));
        assert!(path.as_ref().is_some_and(|p| p.exists()), "persisted like a zone list");
        let generation = lists.retire(slot, cat.vacant(0));
        assert!(generation.is_some());
        assert!(!blocked("bad.example"), "the member's rules are gone");
        assert!(blocked("local.example"), "the other lists' rules are kept");
        assert!(lists.state(slot).is_none() && lists.id_of("catz:one.rpz").is_none());
        assert!(!lists.metrics().encode().contains("catz:one.rpz"));
        assert!(path.as_ref().is_some_and(|p| !p.exists()), "its persisted copy is deleted");
        assert_eq!(lists.retire(slot, cat.vacant(0)), None, "a vacant slot has nothing to retire");
    }
}
