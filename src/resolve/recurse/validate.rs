//! DNSSEC for the iterator (RFC 4033–4035, 5155): which zones are secure
//! (the chain of trust from an anchor, DS at the parent, DNSKEY at the
//! child, kept per zone), and whether one authority's answer verifies with
//! its zone's keys. The cryptography and the proofs are `crate::dnssec`'s;
//! this file decides what to fetch and what to ask them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::classify::{signer, signs};
use super::iterate::{Boxed, Budget, One};
use super::{Failure, Recurser, Security};
use crate::dnssec::{self, Bogus, DenialProof, Trust, TrustAnchors, ZoneKeys};

/// What is known of one zone's keys.
#[derive(Debug, Clone)]
pub(super) enum KeyState {
    Secure(Arc<ZoneKeys>),
    Insecure,
    Indeterminate,
    Bogus(Bogus),
}

/// How long a zone found bogus is not asked again (Unbound's `val-bogus-ttl`).
const BOGUS_TTL: Duration = Duration::from_secs(60);
/// How long a zone proven unsigned stays so (capped by the delegation TTL cap).
const INSECURE_TTL: Duration = Duration::from_secs(3600);

/// The validator's configuration and its per-zone key cache.
pub(super) struct Validator {
    pub anchors: TrustAnchors,
    /// RFC 7646: names at and below these are treated as unsigned.
    pub negative: Vec<Name>,
    pub max_nsec3_iterations: u16,
    pub max_denial_rrsets: usize,
    keys: Mutex<HashMap<Name, (KeyState, Instant)>>,
    max_entries: usize,
    max_ttl: Duration,
}

impl Validator {
    pub fn new(anchors: TrustAnchors, negative: Vec<Name>, max_entries: usize, max_ttl: Duration) -> Self {
        Validator {
            anchors,
            negative,
            max_nsec3_iterations: dnssec::MAX_NSEC3_ITERATIONS,
            max_denial_rrsets: dnssec::MAX_DENIAL_RRSETS,
            keys: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(16),
            max_ttl,
        }
    }

    fn cached(&self, zone: &Name, now: Instant) -> Option<KeyState> {
        let map = self.keys.lock().ok()?;
        map.get(zone).filter(|(_, until)| *until > now).map(|(s, _)| s.clone())
    }

    fn remember(&self, zone: &Name, state: &KeyState, now: Instant) {
        let ttl = match state {
            KeyState::Secure(k) => Duration::from_secs(u64::from(k.ttl)).max(Duration::from_secs(5)),
            KeyState::Insecure | KeyState::Indeterminate => INSECURE_TTL,
            KeyState::Bogus(_) => BOGUS_TTL,
        }
        .min(self.max_ttl);
        let Ok(mut map) = self.keys.lock() else { return };
        if map.len() >= self.max_entries {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= self.max_entries {
                let drop: Vec<Name> = map.keys().take(map.len() / 4 + 1).cloned().collect();
                for k in drop {
                    map.remove(&k);
                }
            }
        }
        map.insert(zone.clone(), (state.clone(), now + ttl));
    }
}

/// Seconds since the epoch as RRSIG validity times count them (RFC 4034
/// §3.1.5: serial arithmetic, so the wrap in 2106 is handled there).
fn now_u32() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (secs & u64::from(u32::MAX)) as u32
}

/// The RRSIGs among `records` at `owner` that cover `rtype`.
fn sigs_for(records: &[Record], owner: &Name, rtype: RecordType) -> Vec<Record> {
    records.iter().filter(|r| signs(r, owner, rtype)).cloned().collect()
}

/// The signer name of the first RRSIG in `sigs`.
fn signer_of(sigs: &[Record]) -> Option<Name> {
    sigs.iter().find_map(signer).cloned()
}

/// The RRsets of `records` (RRSIGs left out), in order of first appearance.
fn rrsets(records: &[Record]) -> Vec<(Name, RecordType, Vec<Record>)> {
    let mut out: Vec<(Name, RecordType, Vec<Record>)> = Vec::new();
    for r in records {
        let t = r.record_type();
        if t == RecordType::RRSIG {
            continue;
        }
        match out.iter_mut().find(|(n, rt, _)| *rt == t && *n == r.name) {
            Some((_, _, set)) => set.push(r.clone()),
            None => out.push((r.name.clone(), t, vec![r.clone()])),
        }
    }
    out
}

/// A denial proof's result as a security state.
fn denial(r: Result<DenialProof, Bogus>) -> Result<Security, Failure> {
    match r {
        Ok(DenialProof::Secure) => Ok(Security::Secure),
        Ok(DenialProof::InsecureOptOut | DenialProof::Insecure) => Ok(Security::Insecure),
        Err(b) => Err(Failure::Bogus(b)),
    }
}

impl Recurser {
    /// Whether `zone` is under a negative trust anchor.
    fn under_nta(&self, v: &Validator, zone: &Name) -> bool {
        v.negative.iter().any(|n| n.zone_of(zone))
    }

    /// The keys of `zone`: from the cache, else from a trust anchor for the
    /// zone, else from the DS set at its parent (whose keys are found the
    /// same way, up to an anchor). A zone no anchor is above is
    /// indeterminate; one whose parent proves it has no DS is insecure.
    pub(super) fn keys_for<'a>(&'a self, zone: &'a Name, b: &'a mut Budget) -> Boxed<'a, Result<KeyState, Failure>> {
        Box::pin(async move {
            let Some(v) = self.validator.as_ref() else { return Ok(KeyState::Indeterminate) };
            if self.under_nta(v, zone) {
                return Ok(KeyState::Insecure);
            }
            let now = Instant::now();
            if let Some(s) = v.cached(zone, now) {
                return Ok(s);
            }
            let state = if let Some(anchor) = v.anchors.for_zone(zone) {
                self.fetch_dnskeys(v, zone, Trust::Anchor(anchor), b).await?
            } else if zone.is_root() || v.anchors.closest(zone).is_none() {
                KeyState::Indeterminate
            } else {
                self.keys_via_ds(v, zone, b).await?
            };
            v.remember(zone, &state, Instant::now());
            Ok(state)
        })
    }

    /// `zone`'s keys through its parent: the DS RRset (or the proof there is
    /// none), verified with the parent's keys.
    async fn keys_via_ds(&self, v: &Validator, zone: &Name, b: &mut Budget) -> Result<KeyState, Failure> {
        let found = self.lookup_unvalidated(zone, RecordType::DS, b).await?;
        let parent = found.zone.clone();
        if !parent.zone_of(zone) || parent == *zone {
            return Ok(KeyState::Bogus(Bogus::Other("DS answered by the child's side")));
        }
        let parent_keys = match self.keys_for(&parent, b).await? {
            KeyState::Secure(k) => k,
            other => return Ok(other),
        };
        let now = now_u32();
        let ds_set: Vec<Record> =
            found.answers.iter().filter(|r| r.record_type() == RecordType::DS && r.name == *zone).cloned().collect();
        if ds_set.is_empty() {
            if found.rcode == ResponseCode::NXDomain {
                return Ok(KeyState::Bogus(Bogus::Other("the parent says the zone does not exist")));
            }
            return Ok(match denial(dnssec::prove_no_ds(zone, &found.authority, &parent_keys, now)) {
                Ok(_) => KeyState::Insecure,
                Err(Failure::Bogus(b)) => KeyState::Bogus(b),
                Err(_) => KeyState::Bogus(Bogus::NsecMissing),
            });
        }
        let sigs = sigs_for(&found.answers, zone, RecordType::DS);
        if let Err(e) = dnssec::verify_rrset(&ds_set, &sigs, &parent_keys, now) {
            return Ok(KeyState::Bogus(e));
        }
        let ds = dnssec::ds_records(&ds_set);
        self.fetch_dnskeys(v, zone, Trust::Ds(&ds), b).await
    }

    /// Asks `zone` for its DNSKEY RRset and checks it against `trust`.
    async fn fetch_dnskeys(&self, v: &Validator, zone: &Name, trust: Trust<'_>, b: &mut Budget) -> Result<KeyState, Failure> {
        let found = match self.lookup_unvalidated(zone, RecordType::DNSKEY, b).await {
            Ok(f) => f,
            Err(e @ (Failure::TooManyQueries(_) | Failure::TooDeep(_))) => return Err(e),
            Err(_) => return Ok(KeyState::Bogus(Bogus::DnskeyMissing)),
        };
        let dnskeys: Vec<Record> =
            found.answers.iter().filter(|r| r.record_type() == RecordType::DNSKEY && r.name == *zone).cloned().collect();
        let sigs = sigs_for(&found.answers, zone, RecordType::DNSKEY);
        Ok(match dnssec::verify_dnskeys(zone, &dnskeys, &sigs, trust, now_u32()) {
            Ok(Some(k)) => KeyState::Secure(Arc::new(
                k.with_max_nsec3_iterations(v.max_nsec3_iterations).with_max_denial_rrsets(v.max_denial_rrsets),
            )),
            Ok(None) => KeyState::Insecure,
            Err(e) => KeyState::Bogus(e),
        })
    }

    /// The keys an RRset or denial from `zone`'s servers is checked with:
    /// those of `signer` when it lies between the zone and the owner (a cut
    /// the walk did not see: parent and child on one server), else the zone's.
    async fn keys_of_signer(&self, zone: &Name, owner: &Name, signer: Option<Name>, b: &mut Budget) -> Result<KeyState, Failure> {
        let at = match signer {
            Some(s) if zone.zone_of(&s) && s.zone_of(owner) => s,
            // forward mode: the upstream's reply names no zone; the signer
            // must still be an ancestor of the owner
            Some(s) if self.upstream.is_some() && s.zone_of(owner) => s,
            Some(_) => return Err(Failure::Bogus(Bogus::Other("signer outside the zone that answered"))),
            // unsigned data through a forwarder: the zone it is in decides
            None if self.upstream.is_some() => self.zone_containing(owner, b).await?,
            None => zone.clone(),
        };
        self.keys_for(&at, b).await
    }

    /// Whether one authority's final answer for `name`/`qtype` verifies:
    /// every RRset of the chain part it holds, a wildcard's no-closer-match
    /// proof, and the denial (NXDOMAIN, NODATA) it ends in. `Err(Bogus)`
    /// ends the resolution (SERVFAIL with the matching EDE).
    pub(super) async fn validate_one(&self, one: &One, name: &Name, qtype: RecordType, b: &mut Budget) -> Result<Security, Failure> {
        let now = now_u32();
        let zone = one.zone();
        match one {
            One::Answer { records, authority, rcode, next, .. } => {
                let mut sec = Security::Secure;
                let mut end = name.clone();
                let mut end_is_cname = false;
                for (owner, rtype, set) in rrsets(records) {
                    let sigs = sigs_for(records, &owner, rtype);
                    match self.keys_of_signer(zone, &owner, signer_of(&sigs), b).await? {
                        KeyState::Secure(keys) => {
                            let verified = dnssec::verify_rrset(&set, &sigs, &keys, now).map_err(Failure::Bogus)?;
                            if let Some(w) = verified.wildcard {
                                sec = sec.and(denial(dnssec::prove_wildcard_answer(&owner, &w, authority, &keys, now))?);
                            }
                        }
                        KeyState::Bogus(e) => return Err(Failure::Bogus(e)),
                        KeyState::Insecure => sec = sec.and(Security::Insecure),
                        KeyState::Indeterminate => sec = sec.and(Security::Indeterminate),
                    }
                    end_is_cname = rtype == RecordType::CNAME && qtype != RecordType::CNAME;
                    if end_is_cname {
                        if let Some(RData::CNAME(c)) = set.first().map(|r| &r.data) {
                            end = c.0.clone();
                        }
                    }
                }
                // the chain ends here in a name without the type, or without existence
                if next.is_none() && end_is_cname {
                    let signer = signer_of(authority);
                    match self.keys_of_signer(zone, &end, signer, b).await? {
                        KeyState::Secure(keys) => {
                            let proof = if *rcode == ResponseCode::NXDomain {
                                dnssec::prove_nxdomain(&end, authority, &keys, now)
                            } else {
                                dnssec::prove_nodata(&end, qtype, authority, &keys, now)
                            };
                            sec = sec.and(denial(proof)?);
                        }
                        KeyState::Bogus(e) => return Err(Failure::Bogus(e)),
                        KeyState::Insecure => sec = sec.and(Security::Insecure),
                        KeyState::Indeterminate => sec = sec.and(Security::Indeterminate),
                    }
                }
                Ok(sec)
            }
            One::NxDomain { authority, .. } | One::NoData { authority, .. } => {
                // the zone that signs the denial: its SOA's owner when that is below the walk's cut
                let soa_owner =
                    authority.iter().find(|r| r.record_type() == RecordType::SOA).map(|r| r.name.clone()).filter(|o| zone.zone_of(o));
                let at = soa_owner.unwrap_or_else(|| zone.clone());
                match self.keys_of_signer(zone, name, Some(at), b).await? {
                    KeyState::Secure(keys) => {
                        let proof = if matches!(one, One::NxDomain { .. }) {
                            dnssec::prove_nxdomain(name, authority, &keys, now)
                        } else {
                            dnssec::prove_nodata(name, qtype, authority, &keys, now)
                        };
                        denial(proof)
                    }
                    KeyState::Bogus(e) => Err(Failure::Bogus(e)),
                    KeyState::Insecure => Ok(Security::Insecure),
                    KeyState::Indeterminate => Ok(Security::Indeterminate),
                }
            }
        }
    }
}
