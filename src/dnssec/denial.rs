//! Authenticated denial of existence: NSEC (RFC 4035 3.1.3, 5.4; RFC 6840
//! 4.1, 4.3) and NSEC3 (RFC 5155 8; RFC 9276). Records are picked by what
//! they claim, then the RRset of each one a proof uses is verified with the
//! zone's keys (once, within a budget); only verified, non-wildcard-expanded
//! ones whose owner is in the zone count.

use std::cell::{Cell, RefCell};

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, NSEC3};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{labels, verify_rrset, Bogus, ZoneKeys};

/// What a denial proof established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialProof {
    /// Proven by signed NSEC/NSEC3 records.
    Secure,
    /// The NSEC3 covering the relevant name has the opt-out flag (RFC 5155
    /// 6, 8.6): an unsigned delegation may hide there, so the answer is
    /// insecure, not bogus. For [`prove_no_ds`] both this and `Secure` mean
    /// "no DS: the child is insecure".
    InsecureOptOut,
    /// The zone's NSEC3 uses more iterations than the limit
    /// ([`ZoneKeys::max_nsec3_iterations`], RFC 9276 3.2): not checked,
    /// treated as insecure.
    Insecure,
}

/// (name, salt, iterations, hash): every name is hashed once.
type Hashed = (Name, Vec<u8>, u16, Vec<u8>);

struct Nsec<'a> {
    owner: &'a Name,
    rd: &'a NSEC,
}

struct Nsec3<'a> {
    owner: &'a Name,
    hash: Vec<u8>,
    rd: &'a NSEC3,
}

/// The denial records of one authority section. Candidates are chosen by
/// their (unverified) content; a candidate's RRset signature is checked only
/// when a proof wants to use it, once, and at most
/// [`ZoneKeys::max_denial_rrsets`] RRsets are checked per call, so a long
/// authority section of bad signatures costs no more than that.
struct Denials<'a> {
    authority: &'a [Record],
    keys: &'a ZoneKeys,
    now: u32,
    nsec: Vec<Nsec<'a>>,
    /// NSEC3 records with the parameters of the first one (RFC 5155 7.1:
    /// one parameter set per zone); others are ignored
    nsec3: Vec<Nsec3<'a>>,
    /// the first NSEC3's owner when its iterations exceed the cap
    over_cap: Option<&'a Name>,
    checked: RefCell<Vec<(&'a Name, RecordType, bool)>>,
    failure: RefCell<Option<Bogus>>,
    budget: Cell<usize>,
    cache: RefCell<Vec<Hashed>>,
}

fn collect<'a>(authority: &'a [Record], keys: &'a ZoneKeys, now: u32) -> Denials<'a> {
    let mut d = Denials {
        authority,
        keys,
        now,
        nsec: Vec::new(),
        nsec3: Vec::new(),
        over_cap: None,
        checked: RefCell::new(Vec::new()),
        failure: RefCell::new(None),
        budget: Cell::new(keys.max_denial_rrsets()),
        cache: RefCell::new(Vec::new()),
    };
    let zone_labels = labels(&keys.zone);
    let mut params: Option<(&[u8], u16)> = None;
    for r in authority {
        if !keys.zone.zone_of(&r.name) {
            continue;
        }
        match &r.data {
            RData::DNSSEC(DNSSECRData::NSEC(rd)) => d.nsec.push(Nsec { owner: &r.name, rd }),
            RData::DNSSEC(DNSSECRData::NSEC3(rd)) => {
                // owner: <base32hex hash>.<zone>
                if labels(&r.name) != zone_labels + 1 {
                    continue;
                }
                let Some(first) = r.name.iter().next() else { continue };
                let Ok(hash) = data_encoding::BASE32HEX_NOPAD.decode(&first.to_ascii_uppercase()) else { continue };
                if hash.len() != rd.next_hashed_owner_name().len() {
                    continue;
                }
                let p = *params.get_or_insert((rd.salt(), rd.iterations()));
                if p != (rd.salt(), rd.iterations()) {
                    continue;
                }
                if rd.iterations() > keys.max_nsec3_iterations() {
                    d.over_cap.get_or_insert(&r.name);
                    continue;
                }
                d.nsec3.push(Nsec3 { owner: &r.name, hash, rd });
            }
            _ => {}
        }
    }
    d
}

impl<'a> Denials<'a> {
    fn fail(&self) -> Bogus {
        self.failure.borrow().clone().unwrap_or(Bogus::NsecMissing)
    }

    fn note(&self, b: Bogus) {
        self.failure.borrow_mut().get_or_insert(b);
    }

    /// The RRset (`owner`, `t`) is signed by the zone (not a wildcard
    /// expansion). Checked once per call, within the budget.
    fn signed(&self, owner: &'a Name, t: RecordType) -> bool {
        if let Some((_, _, ok)) = self.checked.borrow().iter().find(|(o, ty, _)| *o == owner && *ty == t) {
            return *ok;
        }
        let ok = if self.budget.get() == 0 {
            self.note(Bogus::Other("too many NSEC records to check"));
            false
        } else {
            self.budget.set(self.budget.get() - 1);
            let rrset: Vec<Record> = self.authority.iter().filter(|r| &r.name == owner && r.record_type() == t).cloned().collect();
            match verify_rrset(&rrset, self.authority, self.keys, self.now) {
                Ok(v) if v.wildcard.is_none() => true,
                Ok(_) => {
                    self.note(Bogus::Other("wildcard-expanded NSEC record"));
                    false
                }
                Err(e) => {
                    self.note(e);
                    false
                }
            }
        };
        self.checked.borrow_mut().push((owner, t, ok));
        ok
    }

    /// NSEC3 iterations above the cap, on a record that is really the zone's:
    /// the denial is then insecure (RFC 9276 3.2), and nothing is hashed.
    fn over_cap(&self) -> Option<Result<DenialProof, Bogus>> {
        let owner = self.over_cap?;
        Some(if self.nsec3.is_empty() && self.signed(owner, RecordType::NSEC3) { Ok(DenialProof::Insecure) } else { Err(self.fail()) })
    }

    // ---- NSEC ----

    fn nsec_matching(&self, name: &Name) -> Option<&Nsec<'a>> {
        self.nsec.iter().find(|n| n.owner == name && self.signed(n.owner, RecordType::NSEC))
    }

    /// An NSEC proving `name` absent: owner < name < next in canonical order
    /// (the last NSEC of the zone wraps to the apex), not an empty
    /// non-terminal (next not below name), and not the NSEC of a delegation
    /// or DNAME above `name`, which says nothing about names below the cut
    /// (RFC 6840 4.1).
    fn nsec_covering(&self, name: &Name) -> Option<&Nsec<'a>> {
        self.nsec.iter().find(|n| {
            nsec_covers(n.owner, n.rd.next_domain_name(), name)
                && !is_ent(name, n.rd.next_domain_name())
                && !ancestor_cut(n.owner, n.rd.type_set(), name)
                && self.signed(n.owner, RecordType::NSEC)
        })
    }

    /// An NSEC showing `name` is an empty non-terminal: it falls between
    /// owner and next, and next is below it (RFC 4035 3.1.3.1 note, RFC 4592).
    fn nsec_ent(&self, name: &Name) -> bool {
        self.nsec.iter().any(|n| {
            nsec_covers(n.owner, n.rd.next_domain_name(), name)
                && is_ent(name, n.rd.next_domain_name())
                && !ancestor_cut(n.owner, n.rd.type_set(), name)
                && self.signed(n.owner, RecordType::NSEC)
        })
    }

    /// The closest encloser an NSEC covering `qname` implies: the longest
    /// ancestor `qname` shares with the NSEC's owner or next name.
    fn nsec_closest_encloser(n: &Nsec<'_>, qname: &Name) -> Name {
        let a = common_ancestor(qname, n.owner);
        let b = common_ancestor(qname, n.rd.next_domain_name());
        if labels(&a) >= labels(&b) {
            a
        } else {
            b
        }
    }

    // ---- NSEC3 ----

    fn hash(&self, name: &Name, rd: &NSEC3) -> Option<Vec<u8>> {
        let mut cache = self.cache.borrow_mut();
        if let Some((_, _, _, h)) = cache.iter().find(|(n, s, i, _)| n == name && s == rd.salt() && *i == rd.iterations()) {
            return Some(h.clone());
        }
        let h = rd.hash_algorithm().hash(rd.salt(), name, rd.iterations()).ok()?.as_ref().to_vec();
        cache.push((name.clone(), rd.salt().to_vec(), rd.iterations(), h.clone()));
        Some(h)
    }

    fn nsec3_matching(&self, name: &Name) -> Option<&Nsec3<'a>> {
        let h = self.hash(name, self.nsec3.first()?.rd)?;
        self.nsec3.iter().find(|n| n.hash == h && self.signed(n.owner, RecordType::NSEC3))
    }

    fn nsec3_covering(&self, name: &Name) -> Option<&Nsec3<'a>> {
        let h = self.hash(name, self.nsec3.first()?.rd)?;
        let h = h.as_slice();
        self.nsec3.iter().find(|n| {
            let (o, next) = (n.hash.as_slice(), n.rd.next_hashed_owner_name());
            let covers = if o < next {
                o < h && h < next
            } else {
                // the last NSEC3 of the chain wraps (or a one-record chain)
                h > o || h < next
            };
            covers && self.signed(n.owner, RecordType::NSEC3)
        })
    }

    /// RFC 5155 8.3 closest encloser proof for `qname` in `zone`: the
    /// deepest proper ancestor with a matching NSEC3 (not a delegation or
    /// DNAME, which would be the parent side of a cut), and an NSEC3 covering
    /// the next closer name. Returns (closest encloser, covering NSEC3).
    fn closest_encloser(&self, qname: &Name, zone: &Name) -> Option<(Name, &Nsec3<'a>)> {
        let (q, z) = (labels(qname), labels(zone));
        if q <= z {
            return None;
        }
        for n in (z..q).rev() {
            let candidate = qname.trim_to(n);
            if let Some(m) = self.nsec3_matching(&candidate) {
                let ts = m.rd.type_set();
                if ts.contains(RecordType::DNAME) || (ts.contains(RecordType::NS) && !ts.contains(RecordType::SOA)) {
                    return None;
                }
                let next_closer = qname.trim_to(n + 1);
                return self.nsec3_covering(&next_closer).map(|c| (candidate, c));
            }
        }
        None
    }
}

fn nsec_covers(owner: &Name, next: &Name, name: &Name) -> bool {
    if owner < next {
        owner < name && name < next
    } else {
        // the last NSEC wraps to the apex; a lone NSEC covers all but itself
        owner < name || name < next
    }
}

fn is_ent(name: &Name, next: &Name) -> bool {
    name.zone_of(next) && name != next
}

/// `owner` is a delegation point or DNAME strictly above `name`.
fn ancestor_cut(owner: &Name, types: &hickory_proto::rr::RecordTypeSet, name: &Name) -> bool {
    owner != name
        && owner.zone_of(name)
        && (types.contains(RecordType::DNAME) || (types.contains(RecordType::NS) && !types.contains(RecordType::SOA)))
}

fn common_ancestor(a: &Name, b: &Name) -> Name {
    let n = a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x.eq_ignore_ascii_case(y)).count();
    a.trim_to(n)
}

/// Types in a NSEC/NSEC3 bitmap at the name itself say "no `qtype`":
/// neither the type nor a CNAME; for DS the record must be from the parent
/// side (no SOA), for other types not from the parent side of a delegation
/// (NS without SOA), RFC 4035 5.4 and RFC 6840 4.3/4.4.
fn bitmap_denies(types: &hickory_proto::rr::RecordTypeSet, qtype: RecordType, qname: &Name) -> Result<(), Bogus> {
    if types.contains(qtype) {
        return Err(Bogus::Other("NSEC shows the type exists"));
    }
    if types.contains(RecordType::CNAME) {
        return Err(Bogus::Other("NSEC shows a CNAME at the name"));
    }
    if qtype == RecordType::DS {
        if types.contains(RecordType::SOA) && !qname.is_root() {
            return Err(Bogus::Other("child-side NSEC used to deny DS"));
        }
    } else if types.contains(RecordType::NS) && !types.contains(RecordType::SOA) {
        return Err(Bogus::Other("parent-side delegation NSEC used to deny a child type"));
    }
    Ok(())
}

fn in_zone(name: &Name, keys: &ZoneKeys) -> Result<(), Bogus> {
    if keys.zone.zone_of(name) {
        Ok(())
    } else {
        Err(Bogus::Other("name outside the signer's zone"))
    }
}

/// `qname` does not exist and no wildcard could have matched it (RFC 4035
/// 5.4 and 3.1.3.2 with NSEC: a covering NSEC and one covering
/// `*.closest-encloser`; RFC 5155 8.4 with NSEC3: closest encloser proof and
/// a covering NSEC3 for the wildcard). An opt-out NSEC3 over the next closer
/// name gives [`DenialProof::InsecureOptOut`].
///
/// Cost: one signature verification per NSEC/NSEC3 RRset the proof uses
/// (two or three; never more than [`ZoneKeys::max_denial_rrsets`]), records
/// that claim nothing about `qname` are not verified; with NSEC3, one
/// iterated SHA-1 (iterations ≤ [`ZoneKeys::max_nsec3_iterations`]) per
/// ancestor of `qname` below the zone and per wildcard tried.
pub fn prove_nxdomain(qname: &Name, authority: &[Record], keys: &ZoneKeys, now: u32) -> Result<DenialProof, Bogus> {
    in_zone(qname, keys)?;
    let d = collect(authority, keys, now);
    if !d.nsec.is_empty() {
        if d.nsec_matching(qname).is_some() || d.nsec_ent(qname) {
            return Err(Bogus::Other("NSEC shows the name exists"));
        }
        let Some(cov) = d.nsec_covering(qname) else { return Err(d.fail()) };
        let ce = Denials::nsec_closest_encloser(cov, qname);
        if !keys.zone.zone_of(&ce) {
            return Err(d.fail());
        }
        let Ok(wildcard) = ce.prepend_label("*") else { return Err(d.fail()) };
        if d.nsec_matching(&wildcard).is_some() {
            return Err(Bogus::Other("NSEC shows a wildcard that should have matched"));
        }
        return if d.nsec_covering(&wildcard).is_some() { Ok(DenialProof::Secure) } else { Err(d.fail()) };
    }
    if let Some(r) = d.over_cap() {
        return r;
    }
    if !d.nsec3.is_empty() {
        if d.nsec3_matching(qname).is_some() {
            return Err(Bogus::Other("NSEC3 shows the name exists"));
        }
        let Some((ce, cov)) = d.closest_encloser(qname, &keys.zone) else { return Err(d.fail()) };
        let Ok(wildcard) = ce.prepend_label("*") else { return Err(d.fail()) };
        if d.nsec3_covering(&wildcard).is_none() {
            return Err(d.fail());
        }
        return Ok(if cov.rd.opt_out() { DenialProof::InsecureOptOut } else { DenialProof::Secure });
    }
    Err(d.fail())
}

/// `qname` exists but has no `qtype` (RFC 4035 3.1.3.1, 5.4; RFC 5155 8.5,
/// 8.6, 8.7): a matching NSEC/NSEC3 without the type and without CNAME (for
/// DS, from the parent side: SOA clear; for other types, not the parent side
/// of a delegation), or an empty non-terminal, or the wildcard NODATA form
/// (qname covered, `*.closest-encloser` matched without the type). For DS
/// with NSEC3 and no matching record, a closest encloser proof whose next
/// closer is covered by an opt-out NSEC3 gives [`DenialProof::InsecureOptOut`].
///
/// Cost: as [`prove_nxdomain`].
pub fn prove_nodata(qname: &Name, qtype: RecordType, authority: &[Record], keys: &ZoneKeys, now: u32) -> Result<DenialProof, Bogus> {
    in_zone(qname, keys)?;
    let d = collect(authority, keys, now);
    if !d.nsec.is_empty() {
        if let Some(m) = d.nsec_matching(qname) {
            bitmap_denies(m.rd.type_set(), qtype, qname)?;
            return Ok(DenialProof::Secure);
        }
        if d.nsec_ent(qname) {
            return Ok(DenialProof::Secure);
        }
        // wildcard NODATA: qname absent, *.ce present without the type
        let Some(cov) = d.nsec_covering(qname) else { return Err(d.fail()) };
        let ce = Denials::nsec_closest_encloser(cov, qname);
        let Ok(wildcard) = ce.prepend_label("*") else { return Err(d.fail()) };
        let Some(m) = d.nsec_matching(&wildcard) else { return Err(d.fail()) };
        bitmap_denies(m.rd.type_set(), qtype, &wildcard)?;
        return Ok(DenialProof::Secure);
    }
    if let Some(r) = d.over_cap() {
        return r;
    }
    if !d.nsec3.is_empty() {
        if let Some(m) = d.nsec3_matching(qname) {
            bitmap_denies(m.rd.type_set(), qtype, qname)?;
            return Ok(DenialProof::Secure);
        }
        let Some((ce, cov)) = d.closest_encloser(qname, &keys.zone) else { return Err(d.fail()) };
        if let Some(m) = ce.prepend_label("*").ok().and_then(|w| d.nsec3_matching(&w)) {
            bitmap_denies(m.rd.type_set(), qtype, qname)?;
            return Ok(DenialProof::Secure);
        }
        if qtype == RecordType::DS && cov.rd.opt_out() {
            return Ok(DenialProof::InsecureOptOut);
        }
        return Err(d.fail());
    }
    Err(d.fail())
}

/// A wildcard answer for `qname` synthesised from `wildcard` (`*.ce`, as
/// [`super::Verified::wildcard`] gives it) is legitimate: no name closer to
/// `qname` than `ce` exists (RFC 4035 5.3.4: an NSEC covering `qname` whose
/// implied closest encloser is `ce`; RFC 5155 8.8: an NSEC3 covering the next
/// closer name, opt-out giving [`DenialProof::InsecureOptOut`]).
pub fn prove_wildcard_answer(qname: &Name, wildcard: &Name, authority: &[Record], keys: &ZoneKeys, now: u32) -> Result<DenialProof, Bogus> {
    in_zone(qname, keys)?;
    if !wildcard.is_wildcard() {
        return Err(Bogus::Other("wildcard name does not start with *"));
    }
    let ce = wildcard.base_name();
    if !keys.zone.zone_of(&ce) || !ce.zone_of(qname) || labels(qname) <= labels(&ce) {
        return Err(Bogus::Other("wildcard does not enclose the name"));
    }
    let d = collect(authority, keys, now);
    if !d.nsec.is_empty() {
        let Some(cov) = d.nsec_covering(qname) else { return Err(d.fail()) };
        let implied = Denials::nsec_closest_encloser(cov, qname);
        return if labels(&implied) <= labels(&ce) { Ok(DenialProof::Secure) } else { Err(d.fail()) };
    }
    if let Some(r) = d.over_cap() {
        return r;
    }
    if !d.nsec3.is_empty() {
        let next_closer = qname.trim_to(labels(&ce) + 1);
        let Some(cov) = d.nsec3_covering(&next_closer) else { return Err(d.fail()) };
        return Ok(if cov.rd.opt_out() { DenialProof::InsecureOptOut } else { DenialProof::Secure });
    }
    Err(d.fail())
}

/// `child` is a delegation without DS, so the child zone is insecure (RFC
/// 4035 5.2): an NSEC at `child` with NS, without DS and SOA; or an NSEC3
/// matching `child` the same way (RFC 5155 8.9); or, with NSEC3 and no
/// matching record, a closest encloser proof whose next closer name is
/// covered by an opt-out NSEC3 ([`DenialProof::InsecureOptOut`], RFC 5155
/// 8.6). Both `Ok` values mean "no DS: treat the child as insecure".
pub fn prove_no_ds(child: &Name, authority: &[Record], keys: &ZoneKeys, now: u32) -> Result<DenialProof, Bogus> {
    in_zone(child, keys)?;
    if child == &keys.zone {
        return Err(Bogus::Other("the DS of a zone is in its parent"));
    }
    let d = collect(authority, keys, now);
    let delegation_without_ds = |ts: &hickory_proto::rr::RecordTypeSet| -> Result<(), Bogus> {
        if ts.contains(RecordType::DS) {
            return Err(Bogus::Other("NSEC shows a DS at the delegation"));
        }
        if !ts.contains(RecordType::NS) || ts.contains(RecordType::SOA) {
            return Err(Bogus::Other("NSEC shows no delegation at the child"));
        }
        Ok(())
    };
    if !d.nsec.is_empty() {
        let Some(m) = d.nsec_matching(child) else { return Err(d.fail()) };
        delegation_without_ds(m.rd.type_set())?;
        return Ok(DenialProof::Secure);
    }
    if let Some(r) = d.over_cap() {
        return r;
    }
    if !d.nsec3.is_empty() {
        if let Some(m) = d.nsec3_matching(child) {
            delegation_without_ds(m.rd.type_set())?;
            return Ok(DenialProof::Secure);
        }
        let Some((_, cov)) = d.closest_encloser(child, &keys.zone) else { return Err(d.fail()) };
        return if cov.rd.opt_out() { Ok(DenialProof::InsecureOptOut) } else { Err(d.fail()) };
    }
    Err(d.fail())
}
