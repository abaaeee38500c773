//! What the iterator has learnt about zone cuts: for each zone, its name
//! servers and their addresses (glue from the parent, or resolved), which
//! servers were lame for it, until the NS set's TTL runs out. Bounded; the
//! root (from the hints) is never forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, Record};

use super::classify::Delegation;

/// How long a server that answered REFUSED/SERVFAIL or otherwise lame for
/// a zone is skipped for that zone.
const LAME_FOR: Duration = Duration::from_secs(900);

/// One zone cut.
#[derive(Debug)]
pub(super) struct Zone {
    pub name: Name,
    pub ns: Vec<Name>,
    /// `None`: the root from the hints, kept for ever.
    pub expires: Option<Instant>,
    /// DS and NSEC/NSEC3 records from the referral (for the validator,
    /// which is not wired in yet).
    #[allow(dead_code)]
    pub security: Vec<Record>,
    /// NS name → address: glue, then whatever was resolved for glueless NS.
    addrs: Mutex<Vec<(Name, IpAddr)>>,
    lame: Mutex<Vec<(IpAddr, Instant)>>,
}

impl Zone {
    pub fn root(addrs: &[IpAddr]) -> Zone {
        let ns = Name::from_ascii("hints.root-servers.invalid.").unwrap_or_else(|_| Name::root());
        Zone {
            name: Name::root(),
            ns: vec![ns.clone()],
            expires: None,
            security: Vec::new(),
            addrs: Mutex::new(addrs.iter().map(|ip| (ns.clone(), *ip)).collect()),
            lame: Mutex::new(Vec::new()),
        }
    }

    /// The addresses known for the zone's servers, minus those lame for it.
    pub fn addresses(&self, now: Instant) -> Vec<IpAddr> {
        let lame: Vec<IpAddr> =
            self.lame.lock().map(|l| l.iter().filter(|(_, until)| *until > now).map(|(ip, _)| *ip).collect()).unwrap_or_default();
        let mut out: Vec<IpAddr> = Vec::new();
        if let Ok(a) = self.addrs.lock() {
            for (_, ip) in a.iter() {
                if !lame.contains(ip) && !out.contains(ip) {
                    out.push(*ip);
                }
            }
        }
        out
    }

    /// NS names with no address yet.
    pub fn unresolved(&self) -> Vec<Name> {
        let Ok(a) = self.addrs.lock() else { return Vec::new() };
        self.ns.iter().filter(|n| !a.iter().any(|(m, _)| m == *n)).cloned().collect()
    }

    /// Addresses found for `ns` (an empty list marks it tried).
    pub fn add_addresses(&self, ns: &Name, ips: &[IpAddr]) {
        if let Ok(mut a) = self.addrs.lock() {
            for ip in ips {
                if !a.iter().any(|(_, x)| x == ip) {
                    a.push((ns.clone(), *ip));
                }
            }
        }
    }

    pub fn mark_lame(&self, ip: IpAddr, now: Instant) {
        if let Ok(mut l) = self.lame.lock() {
            l.retain(|(_, until)| *until > now);
            l.push((ip, now + LAME_FOR));
        }
    }
}

/// The zone cuts learnt, keyed by zone name; and names known to exist
/// without a cut (QNAME minimisation need not ask for them again).
pub(super) struct Zones {
    root: Arc<Zone>,
    map: Mutex<HashMap<Name, Arc<Zone>>>,
    /// Names a minimised query found to exist (data or an empty
    /// non-terminal) inside their zone, until when. A wrong entry only costs
    /// a referral: the parent still holds any cut made later.
    no_cut: Mutex<HashMap<Name, Instant>>,
    max_entries: usize,
    max_ttl: Duration,
}

impl Zones {
    pub fn new(roots: &[IpAddr], max_entries: usize, max_ttl: Duration) -> Self {
        Zones {
            root: Arc::new(Zone::root(roots)),
            map: Mutex::new(HashMap::new()),
            no_cut: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(16),
            max_ttl,
        }
    }

    /// The deepest zone known at or above `name`. Cost: one hash lookup per
    /// label of `name`, one lock.
    pub fn closest(&self, name: &Name, now: Instant) -> Arc<Zone> {
        let Ok(map) = self.map.lock() else { return Arc::clone(&self.root) };
        let mut n = name.clone();
        while !n.is_root() {
            if let Some(z) = map.get(&n) {
                if z.expires.is_none_or(|t| t > now) {
                    return Arc::clone(z);
                }
            }
            n = n.base_name();
        }
        Arc::clone(&self.root)
    }

    /// Records the cut a referral showed; returns it (or the one already
    /// known and still fresh, so lame marks and resolved addresses stay).
    pub fn learn(&self, d: Delegation, now: Instant) -> Arc<Zone> {
        let ttl = Duration::from_secs(u64::from(d.ttl)).min(self.max_ttl).max(Duration::from_secs(1));
        let zone = Arc::new(Zone {
            addrs: Mutex::new(d.glue),
            name: d.zone,
            ns: d.ns,
            expires: Some(now + ttl),
            security: d.security,
            lame: Mutex::new(Vec::new()),
        });
        let Ok(mut map) = self.map.lock() else { return zone };
        if let Some(known) = map.get(&zone.name) {
            if known.expires.is_some_and(|t| t > now) {
                return Arc::clone(known);
            }
        }
        if map.len() >= self.max_entries {
            map.retain(|_, z| z.expires.is_some_and(|t| t > now));
            if map.len() >= self.max_entries {
                let drop = map.len() / 4 + 1;
                let victims: Vec<Name> = map.keys().take(drop).cloned().collect();
                for v in victims {
                    map.remove(&v);
                }
            }
        }
        map.insert(zone.name.clone(), Arc::clone(&zone));
        zone
    }

    /// Remembers that `name` exists without a cut, for `ttl` seconds (capped
    /// like delegations).
    pub fn note_no_cut(&self, name: &Name, ttl: u32, now: Instant) {
        let until = now + Duration::from_secs(u64::from(ttl)).min(self.max_ttl);
        let Ok(mut m) = self.no_cut.lock() else { return };
        if m.len() >= self.max_entries {
            m.retain(|_, t| *t > now);
            if m.len() >= self.max_entries {
                let drop: Vec<Name> = m.keys().take(m.len() / 4 + 1).cloned().collect();
                for k in drop {
                    m.remove(&k);
                }
            }
        }
        m.insert(name.clone(), until);
    }

    /// Whether `name` is known to exist without a cut.
    pub fn is_no_cut(&self, name: &Name, now: Instant) -> bool {
        self.no_cut.lock().is_ok_and(|m| m.get(name).is_some_and(|t| *t > now))
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}
