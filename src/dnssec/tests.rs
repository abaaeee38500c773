//! The validator against zones signed at test time by `ldns-keygen` +
//! `ldns-signzone` (NSEC, NSEC3, NSEC3 opt-out, many iterations, five
//! algorithms, expired and future signatures), and the trust-anchor readers.

use std::path::Path;
use std::process::Command;

use hickory_proto::dnssec::rdata::{DNSSECRData, DS};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::text::parse_records;
use super::*;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn now() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32
}

/// `true` when ldns is there; outside CI a missing tool skips with a message,
/// under CI=true it fails.
fn have_ldns() -> bool {
    if Command::new("ldns-signzone").arg("-v").output().is_ok() && Command::new("ldns-keygen").arg("-v").output().is_ok() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "ldns-signzone/ldns-keygen missing (apt-get install ldnsutils); CI=true does not skip");
    eprintln!("skipping: ldns-signzone/ldns-keygen not installed (apt-get install ldnsutils)");
    false
}

const ZONE: &str = "\
@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300
@ IN NS ns1
ns1 IN A 192.0.2.1
www IN A 192.0.2.10
*.w IN A 192.0.2.20
a.b.ent IN A 192.0.2.30
alias IN CNAME www
sub IN NS ns.sub
ns.sub IN A 192.0.2.40
secure IN NS ns.secure
secure IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
ns.secure IN A 192.0.2.50
";

struct Signed {
    zone: Name,
    records: Vec<Record>,
    /// DS of the KSK (from `ldns-keygen`'s .ds file)
    ds: Vec<DS>,
    /// the KSK's .key and .ds files as text (trust-anchor file formats)
    key_file: String,
    ds_file: String,
}

fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn keygen(dir: &Path, alg: &str, zone: &str, ksk: bool) -> String {
    let mut args = vec!["-a", alg];
    if alg.starts_with("RSA") {
        args.extend(["-b", "2048"]);
    }
    if ksk {
        args.push("-k");
    }
    args.push(zone);
    run(dir, "ldns-keygen", &args)
}

/// Signs [`ZONE`] as `zone` with a fresh KSK and ZSK of `alg`, with extra
/// `ldns-signzone` options, then appends `after` (records added unsigned,
/// as after an opt-out signing) and parses the result.
fn sign(dir: &Path, zone: &str, alg: &str, opts: &[&str], after: &str) -> Signed {
    let file = format!("{zone}zone");
    std::fs::write(dir.join(&file), format!("$ORIGIN {zone}\n$TTL 3600\n{ZONE}")).unwrap();
    let ksk = keygen(dir, alg, zone, true);
    let zsk = keygen(dir, alg, zone, false);
    // inception an hour back, as real signers do: a test's `now()` taken
    // before signing is then inside the window
    let backdated = (now() - 3600).to_string();
    let mut args: Vec<&str> = opts.to_vec();
    if !opts.contains(&"-i") {
        args.extend(["-i", backdated.as_str()]);
    }
    args.extend([file.as_str(), ksk.as_str(), zsk.as_str()]);
    run(dir, "ldns-signzone", &args);
    let mut text = std::fs::read_to_string(dir.join(format!("{file}.signed"))).unwrap();
    text.push_str(after);
    let records = parse_records(&text).unwrap_or_else(|e| panic!("{zone} signed: {e}")).into_iter().map(|(_, r)| r).collect();
    let ds_file = std::fs::read_to_string(dir.join(format!("{ksk}.ds"))).unwrap();
    let ds = ds_records(&parse_records(&ds_file).unwrap().into_iter().map(|(_, r)| r).collect::<Vec<_>>());
    let key_file = std::fs::read_to_string(dir.join(format!("{ksk}.key"))).unwrap();
    Signed { zone: name(zone), records, ds, key_file, ds_file }
}

impl Signed {
    fn rrset(&self, owner: &str, t: RecordType) -> Vec<Record> {
        let owner = name(owner);
        self.records.iter().filter(|r| r.name == owner && r.record_type() == t).cloned().collect()
    }

    fn sigs(&self, owner: &str) -> Vec<Record> {
        self.rrset(owner, RecordType::RRSIG)
    }

    fn keys_at(&self, now: u32) -> Result<Option<ZoneKeys>, Bogus> {
        let z = self.zone.to_string();
        verify_dnskeys(&self.zone, &self.rrset(&z, RecordType::DNSKEY), &self.sigs(&z), Trust::Ds(&self.ds), now)
    }

    fn keys(&self) -> ZoneKeys {
        self.keys_at(now()).unwrap().unwrap()
    }

    /// Every NSEC/NSEC3 record and its RRSIGs, as a server could send them.
    fn denials(&self) -> Vec<Record> {
        let owners: Vec<&Name> =
            self.records.iter().filter(|r| matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3)).map(|r| &r.name).collect();
        self.records
            .iter()
            .filter(|r| match r.record_type() {
                RecordType::NSEC | RecordType::NSEC3 => true,
                RecordType::RRSIG => {
                    owners.contains(&&r.name)
                        && matches!(&r.data, RData::DNSSEC(DNSSECRData::RRSIG(s)) if matches!(s.input().type_covered, RecordType::NSEC | RecordType::NSEC3))
                }
                _ => false,
            })
            .cloned()
            .collect()
    }

    /// The records (and RRSIGs) of `from` as a server synthesises them for
    /// `to` from a wildcard: same data and signatures, owner `to`.
    fn expand(&self, from: &str, to: &str, t: RecordType) -> (Vec<Record>, Vec<Record>) {
        let rename = |mut r: Record| {
            r.name = name(to);
            r
        };
        (self.rrset(from, t).into_iter().map(rename).collect(), self.sigs(from).into_iter().map(rename).collect())
    }
}

/// (what, qname, `None` for NXDOMAIN or the NODATA type, proof or EDE code)
type DenialCase = (&'static str, &'static str, Option<RecordType>, Result<DenialProof, u16>);

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn nsec_zone_positive_and_negative_answers() {
    if !have_ldns() {
        return;
    }
    let dir = tmp();
    let z = sign(dir.path(), "example.test.", "ECDSAP256SHA256", &[], "");
    let keys = z.keys();
    let t = now();
    assert_eq!(keys.zone, name("example.test."));
    assert_eq!(keys.keys().count(), 2, "KSK and ZSK");

    // positive answers
    let www = verify_rrset(&z.rrset("www.example.test.", RecordType::A), &z.sigs("www.example.test."), &keys, t).unwrap();
    assert_eq!(www.wildcard, None);
    assert!(www.ttl <= 3600 && www.ttl > 3000, "ttl {}", www.ttl);
    let (recs, sigs) = z.expand("*.w.example.test.", "x.w.example.test.", RecordType::A);
    let wild = verify_rrset(&recs, &sigs, &keys, t).unwrap();
    assert_eq!(wild.wildcard, Some(name("*.w.example.test.")), "labels field shows the expansion");
    let auth = z.denials();
    let q = |s: &str| name(s);
    assert_eq!(prove_wildcard_answer(&q("x.w.example.test."), &q("*.w.example.test."), &auth, &keys, t), Ok(DenialProof::Secure));
    assert_eq!(prove_wildcard_answer(&q("a.b.w.example.test."), &q("*.w.example.test."), &auth, &keys, t), Ok(DenialProof::Secure));
    // an existing name below the wildcard's parent is no wildcard answer
    assert!(prove_wildcard_answer(&q("w.example.test."), &q("*.w.example.test."), &auth, &keys, t).is_err());

    let cases: &[DenialCase] = &[
        ("nxdomain", "nope.example.test.", None, Ok(DenialProof::Secure)),
        ("nxdomain deep", "a.b.nope.example.test.", None, Ok(DenialProof::Secure)),
        ("nxdomain after the last name (wrap to apex)", "zzz.example.test.", None, Ok(DenialProof::Secure)),
        ("nxdomain of an existing name", "www.example.test.", None, Err(6)),
        ("nxdomain of an empty non-terminal", "b.ent.example.test.", None, Err(6)),
        ("nxdomain under the wildcard", "x.w.example.test.", None, Err(6)),
        ("nxdomain below an insecure cut", "x.sub.example.test.", None, Err(12)),
        ("nodata", "www.example.test.", Some(RecordType::AAAA), Ok(DenialProof::Secure)),
        ("nodata of a present type", "www.example.test.", Some(RecordType::A), Err(6)),
        ("nodata at a CNAME", "alias.example.test.", Some(RecordType::A), Err(6)),
        ("nodata at an empty non-terminal", "b.ent.example.test.", Some(RecordType::A), Ok(DenialProof::Secure)),
        ("nodata at a top empty non-terminal", "ent.example.test.", Some(RecordType::TXT), Ok(DenialProof::Secure)),
        ("wildcard nodata", "x.w.example.test.", Some(RecordType::AAAA), Ok(DenialProof::Secure)),
        ("wildcard nodata of the wildcard's type", "x.w.example.test.", Some(RecordType::A), Err(6)),
        ("nodata of a nonexistent name", "nope.example.test.", Some(RecordType::A), Err(12)),
        ("DS nodata at an insecure delegation", "sub.example.test.", Some(RecordType::DS), Ok(DenialProof::Secure)),
        ("A nodata from the parent side of a cut", "sub.example.test.", Some(RecordType::A), Err(6)),
        ("DS nodata from the child apex NSEC", "example.test.", Some(RecordType::DS), Err(6)),
    ];
    for (what, qname, qtype, want) in cases {
        let got = match qtype {
            None => prove_nxdomain(&q(qname), &auth, &keys, t),
            Some(qt) => prove_nodata(&q(qname), *qt, &auth, &keys, t),
        };
        assert_eq!(got.map_err(|e| e.ede_code()), *want, "case `{what}` ({qname})");
    }

    let no_ds: &[(&str, Result<DenialProof, u16>)] =
        &[("sub.example.test.", Ok(DenialProof::Secure)), ("secure.example.test.", Err(6)), ("www.example.test.", Err(6)), ("nope.example.test.", Err(12))];
    for (child, want) in no_ds {
        assert_eq!(prove_no_ds(&q(child), &auth, &keys, t).map_err(|e| e.ede_code()), *want, "prove_no_ds({child})");
    }

    // the NXDOMAIN proof needs both NSECs: the one covering the name
    // (a.b.ent → ns1) alone does not deny the wildcard *.example.test.
    let covering: Vec<Record> = auth.iter().filter(|r| r.name == q("a.b.ent.example.test.")).cloned().collect();
    assert_eq!(prove_nxdomain(&q("nope.example.test."), &covering, &keys, t), Err(Bogus::NsecMissing));
    assert_eq!(prove_nxdomain(&q("nope.example.test."), &[], &keys, t), Err(Bogus::NsecMissing));
    // an NSEC whose next name was changed no longer verifies: that is the reason given
    let forged: Vec<Record> = auth
        .iter()
        .cloned()
        .map(|mut r| {
            if r.name == q("a.b.ent.example.test.") {
                if let RData::DNSSEC(DNSSECRData::NSEC(n)) = &r.data {
                    r.data = RData::DNSSEC(DNSSECRData::NSEC(hickory_proto::dnssec::rdata::NSEC::new(q("zzzz.example.test."), n.type_bit_maps().collect::<Vec<_>>())));
                }
            }
            r
        })
        .collect();
    assert_eq!(prove_nxdomain(&q("nope.example.test."), &forged, &keys, t), Err(Bogus::Other("signature does not verify")));
    // records that claim nothing about the name are never verified: thirty
    // junk NSECs with bad signatures cost nothing and change nothing
    let mut flooded: Vec<Record> = Vec::new();
    let www_nsec = auth.iter().find(|r| r.name == q("www.example.test.") && r.record_type() == RecordType::NSEC).unwrap();
    let www_nsec_sig = auth.iter().find(|r| r.name == q("www.example.test.") && r.record_type() == RecordType::RRSIG).unwrap();
    for i in 0..30 {
        let (owner, next) = (q(&format!("zz{i:02}.example.test.")), q(&format!("zz{:02}.example.test.", i + 1)));
        let mut r = www_nsec.clone();
        r.name = owner.clone();
        r.data = RData::DNSSEC(DNSSECRData::NSEC(hickory_proto::dnssec::rdata::NSEC::new(next, [RecordType::A])));
        let mut s = www_nsec_sig.clone();
        s.name = owner;
        flooded.extend([r, s]);
    }
    flooded.extend(auth.iter().cloned());
    assert_eq!(prove_nxdomain(&q("nope.example.test."), &flooded, &keys.clone().with_max_denial_rrsets(2), t), Ok(DenialProof::Secure));
    // a proof that needs more verified RRsets than allowed is bogus
    assert_eq!(prove_nxdomain(&q("nope.example.test."), &auth, &keys.clone().with_max_denial_rrsets(1), t), Err(Bogus::Other("too many NSEC records to check")));
    // names outside the zone are not the zone's to deny
    assert!(prove_nxdomain(&q("nope.other.test."), &auth, &keys, t).is_err());
}

#[test]
fn nsec_zone_bogus_cases() {
    if !have_ldns() {
        return;
    }
    let dir = tmp();
    let z = sign(dir.path(), "example.test.", "ECDSAP256SHA256", &[], "");
    let keys = z.keys();
    let t = now();
    let www = z.rrset("www.example.test.", RecordType::A);
    let www_sigs = z.sigs("www.example.test.");

    // broken signature: the data changed after signing
    let mut changed = www.clone();
    changed[0].data = RData::A(std::net::Ipv4Addr::new(192, 0, 2, 99).into());
    let e = verify_rrset(&changed, &www_sigs, &keys, t).unwrap_err();
    assert_eq!((e.ede_code(), e.to_string().as_str()), (6, "signature does not verify"));
    // missing RRSIGs, or RRSIGs for another type only
    assert_eq!(verify_rrset(&www, &[], &keys, t), Err(Bogus::RrsigsMissing));
    assert_eq!(verify_rrset(&www, &z.sigs("ns1.example.test."), &keys, t).map_err(|e| e.ede_code()), Err(10));
    // the clock outside the signatures' window
    assert_eq!(verify_rrset(&www, &www_sigs, &keys, t - 7200), Err(Bogus::SignatureNotYetValid));
    assert_eq!(verify_rrset(&www, &www_sigs, &keys, t + 86400 * 60), Err(Bogus::SignatureExpired));
    // mixed RRsets are refused, not silently filtered
    let mut mixed = www.clone();
    mixed.extend(z.rrset("ns1.example.test.", RecordType::A));
    assert!(verify_rrset(&mixed, &www_sigs, &keys, t).is_err());
    // duplicates are dropped before checking (RFC 4034 6.3)
    let mut doubled = www.clone();
    doubled.extend(www.clone());
    assert!(verify_rrset(&doubled, &www_sigs, &keys, t).is_ok());

    // TTL: the least of the records', the RRSIG's and the original TTL
    let mut short_sig = www_sigs.clone();
    short_sig.iter_mut().for_each(|r| r.ttl = 100);
    assert_eq!(verify_rrset(&www, &short_sig, &keys, t).map(|v| v.ttl), Ok(100));
    let mut long = www.clone();
    long.iter_mut().for_each(|r| r.ttl = 86400 * 7);
    assert_eq!(verify_rrset(&long, &www_sigs, &keys, t).map(|v| v.ttl), Ok(3600), "capped by the original TTL");
    // an RRSIG whose labels field exceeds the owner's labels is never used
    let (up, up_sigs) = z.expand("www.example.test.", "test.", RecordType::A);
    let keys_up = ZoneKeys { zone: Name::root(), ..keys.clone() };
    let up_sigs: Vec<Record> = up_sigs
        .into_iter()
        .map(|mut r| {
            if let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &r.data {
                let mut input = sig.input().clone();
                input.signer_name = Name::root();
                r.data = RData::DNSSEC(DNSSECRData::RRSIG(hickory_proto::dnssec::rdata::RRSIG::from_sig(input, sig.sig().to_vec())));
            }
            r
        })
        .collect();
    assert_eq!(verify_rrset(&up, &up_sigs, &keys_up, t), Err(Bogus::Other("RRSIG labels field exceeds the owner's labels")));
    // key-tag collision: a different key with the ZSK's tag listed first is
    // tried, fails, and the real ZSK is tried next
    let zsk = keys.keys().find(|(_, k)| !k.secure_entry_point()).map(|(t, k)| (t, k.clone())).unwrap();
    let ksk = keys.keys().find(|(_, k)| k.secure_entry_point()).map(|(_, k)| k.clone()).unwrap();
    let colliding = ZoneKeys { keys: vec![(zsk.0, ksk.clone()), zsk.clone()], ..keys.clone() };
    assert!(verify_rrset(&www, &www_sigs, &colliding, t).is_ok());
    let only_decoy = ZoneKeys { keys: vec![(zsk.0, ksk)], ..keys.clone() };
    assert_eq!(verify_rrset(&www, &www_sigs, &only_decoy, t), Err(Bogus::Other("signature does not verify")));
    // ... but a key tag shared by many keys is a denial of service (KeyTrap):
    // at most MAX_SIGNATURE_CHECKS verifications, then bogus
    let mut trap = vec![(zsk.0, only_decoy.keys[0].1.clone()); MAX_SIGNATURE_CHECKS];
    trap.push(zsk.clone());
    let trap = ZoneKeys { keys: trap, ..keys.clone() };
    assert_eq!(verify_rrset(&www, &www_sigs, &trap, t), Err(Bogus::Other("too many signatures to check")));
    let no_zsk = ZoneKeys { keys: Vec::new(), ..keys.clone() };
    assert_eq!(verify_rrset(&www, &www_sigs, &no_zsk, t), Err(Bogus::DnskeyMissing));

    let apex = "example.test.";
    let dnskeys = z.rrset(apex, RecordType::DNSKEY);
    let dnskey_sigs = z.sigs(apex);
    // DS of another key of the same zone
    let other = keygen(dir.path(), "ECDSAP256SHA256", apex, true);
    let other_ds: Vec<DS> = parse_records(&std::fs::read_to_string(dir.path().join(format!("{other}.ds"))).unwrap())
        .unwrap()
        .into_iter()
        .filter_map(|(_, r)| match r.data {
            RData::DNSSEC(DNSSECRData::DS(d)) => Some(d),
            _ => None,
        })
        .collect();
    let e = verify_dnskeys(&z.zone, &dnskeys, &dnskey_sigs, Trust::Ds(&other_ds), t).unwrap_err();
    assert_eq!((e.clone(), e.ede_code()), (Bogus::DnskeyMissing, 9));
    // ... but with both DS records, the right one is found
    let both: Vec<DS> = other_ds.iter().chain(&z.ds).cloned().collect();
    assert!(verify_dnskeys(&z.zone, &dnskeys, &dnskey_sigs, Trust::Ds(&both), t).unwrap().is_some());
    // no DNSKEY answer at all
    assert_eq!(verify_dnskeys(&z.zone, &[], &dnskey_sigs, Trust::Ds(&z.ds), t), Err(Bogus::DnskeyMissing));
    // DNSKEY RRset without its RRSIG
    assert_eq!(verify_dnskeys(&z.zone, &dnskeys, &[], Trust::Ds(&z.ds), t), Err(Bogus::RrsigsMissing));
    // a DS of an algorithm nobody supports: insecure, not bogus (RFC 4035 5.2)
    let private = vec![DS::new(1, hickory_proto::dnssec::Algorithm::Unknown(253), hickory_proto::dnssec::DigestType::SHA256, vec![0; 32])];
    assert_eq!(verify_dnskeys(&z.zone, &dnskeys, &dnskey_sigs, Trust::Ds(&private), t), Ok(None));
    // the KSK with the REVOKE bit is not a trust point any more
    let revoked: Vec<Record> = dnskeys
        .iter()
        .cloned()
        .map(|mut r| {
            if let RData::DNSSEC(DNSSECRData::DNSKEY(k)) = &r.data {
                if k.secure_entry_point() {
                    r.data = RData::DNSSEC(DNSSECRData::DNSKEY(hickory_proto::dnssec::rdata::DNSKEY::with_flags(k.flags() | 0x80, k.public_key().clone())));
                }
            }
            r
        })
        .collect();
    let anchor_revoked = TrustAnchors::parse(&z.key_file, "k.key").unwrap();
    assert_eq!(verify_dnskeys(&z.zone, &revoked, &dnskey_sigs, Trust::Anchor(anchor_revoked.for_zone(&z.zone).unwrap()), t), Err(Bogus::DnskeyMissing));

    // trust anchors from the key files ldns-keygen wrote
    for (file, text) in [("K.key", &z.key_file), ("K.ds", &z.ds_file)] {
        let anchors = TrustAnchors::parse(text, file).unwrap();
        let a = anchors.for_zone(&z.zone).unwrap_or_else(|| panic!("{file}: no anchor"));
        assert!(verify_dnskeys(&z.zone, &dnskeys, &dnskey_sigs, Trust::Anchor(a), t).unwrap().is_some(), "{file}");
        let (at, _) = anchors.closest(&name("deep.www.example.test.")).unwrap();
        assert_eq!(at, &z.zone);
    }
    // a key of the zone is not a key of another zone
    let sub = name("sub.example.test.");
    assert_eq!(verify_dnskeys(&sub, &dnskeys, &dnskey_sigs, Trust::Ds(&z.ds), t), Err(Bogus::DnskeyMissing));
}

#[test]
fn expired_and_future_signatures() {
    if !have_ldns() {
        return;
    }
    let dir = tmp();
    let t = now();
    let old = sign(dir.path(), "old.test.", "ECDSAP256SHA256", &["-e", "20200101", "-i", "20190101"], "");
    assert_eq!(old.keys_at(t).map_err(|e| e.ede_code()), Err(7));
    // with the clock inside the window the chain holds, so the reason is the time
    let mid_2019 = text::unix_seconds(2019, 6, 1, 0, 0, 0).unwrap() as u32;
    let keys = old.keys_at(mid_2019).unwrap().unwrap();
    let e = verify_rrset(&old.rrset("www.old.test.", RecordType::A), &old.sigs("www.old.test."), &keys, t).unwrap_err();
    assert_eq!((e.ede_code(), e.to_string().as_str()), (7, "signature expired"));
    assert_eq!(prove_nxdomain(&name("nope.old.test."), &old.denials(), &keys, t), Err(Bogus::SignatureExpired));

    let future = sign(dir.path(), "future.test.", "ECDSAP256SHA256", &["-i", "20400101", "-e", "20450101"], "");
    assert_eq!(future.keys_at(t), Err(Bogus::SignatureNotYetValid));
    assert_eq!(Bogus::SignatureNotYetValid.ede_code(), 8);
}

#[test]
fn nsec3_zone() {
    if !have_ldns() {
        return;
    }
    let dir = tmp();
    let z = sign(dir.path(), "example.test.", "ECDSAP256SHA256", &["-n", "-s", "abcd", "-t", "5"], "");
    let keys = z.keys();
    let t = now();
    let auth = z.denials();
    assert!(auth.iter().any(|r| r.record_type() == RecordType::NSEC3) && !auth.iter().any(|r| r.record_type() == RecordType::NSEC));
    let q = |s: &str| name(s);
    let cases: &[DenialCase] = &[
        ("nxdomain", "nope.example.test.", None, Ok(DenialProof::Secure)),
        ("nxdomain deep", "a.b.nope.example.test.", None, Ok(DenialProof::Secure)),
        ("nxdomain of an existing name", "www.example.test.", None, Err(6)),
        ("nxdomain of an empty non-terminal", "b.ent.example.test.", None, Err(6)),
        ("nxdomain below an insecure cut", "x.sub.example.test.", None, Err(12)),
        ("nodata", "www.example.test.", Some(RecordType::AAAA), Ok(DenialProof::Secure)),
        ("nodata of a present type", "www.example.test.", Some(RecordType::A), Err(6)),
        ("nodata at a CNAME", "alias.example.test.", Some(RecordType::TXT), Err(6)),
        ("nodata at an empty non-terminal", "b.ent.example.test.", Some(RecordType::A), Ok(DenialProof::Secure)),
        ("wildcard nodata", "x.w.example.test.", Some(RecordType::AAAA), Ok(DenialProof::Secure)),
        ("wildcard nodata of the wildcard's type", "x.w.example.test.", Some(RecordType::A), Err(6)),
        ("DS nodata at an insecure delegation", "sub.example.test.", Some(RecordType::DS), Ok(DenialProof::Secure)),
        ("A nodata from the parent side of a cut", "sub.example.test.", Some(RecordType::A), Err(6)),
        ("DS nodata from the child apex NSEC3", "example.test.", Some(RecordType::DS), Err(6)),
        ("DS nodata of a nonexistent name without opt-out", "nope.example.test.", Some(RecordType::DS), Err(12)),
    ];
    for (what, qname, qtype, want) in cases {
        let got = match qtype {
            None => prove_nxdomain(&q(qname), &auth, &keys, t),
            Some(qt) => prove_nodata(&q(qname), *qt, &auth, &keys, t),
        };
        assert_eq!(got.map_err(|e| e.ede_code()), *want, "case `{what}` ({qname})");
    }
    let (recs, sigs) = z.expand("*.w.example.test.", "x.y.w.example.test.", RecordType::A);
    let v = verify_rrset(&recs, &sigs, &keys, t).unwrap();
    assert_eq!(v.wildcard, Some(q("*.w.example.test.")));
    assert_eq!(prove_wildcard_answer(&q("x.y.w.example.test."), &q("*.w.example.test."), &auth, &keys, t), Ok(DenialProof::Secure));
    assert_eq!(prove_no_ds(&q("sub.example.test."), &auth, &keys, t), Ok(DenialProof::Secure));
    assert_eq!(prove_no_ds(&q("secure.example.test."), &auth, &keys, t).map_err(|e| e.ede_code()), Err(6));
    assert_eq!(prove_no_ds(&q("nope.example.test."), &auth, &keys, t), Err(Bogus::NsecMissing));
    // the iteration cap (RFC 9276): below the zone's 5, the proof is not attempted
    let strict = keys.clone().with_max_nsec3_iterations(4);
    assert_eq!(prove_nxdomain(&q("nope.example.test."), &auth, &strict, t), Ok(DenialProof::Insecure));
}

#[test]
fn nsec3_opt_out_and_iteration_cap() {
    if !have_ldns() {
        return;
    }
    let dir = tmp();
    // an unsigned delegation added after signing lies in an opt-out span
    let z = sign(dir.path(), "example.test.", "ECDSAP256SHA256", &["-n", "-p"], "optout.example.test. 3600 IN NS ns.elsewhere.test.\n");
    let keys = z.keys();
    let t = now();
    let auth = z.denials();
    let q = |s: &str| name(s);
    assert_eq!(prove_no_ds(&q("optout.example.test."), &auth, &keys, t), Ok(DenialProof::InsecureOptOut));
    assert_eq!(prove_nodata(&q("optout.example.test."), RecordType::DS, &auth, &keys, t), Ok(DenialProof::InsecureOptOut));
    assert_eq!(prove_nxdomain(&q("nope.example.test."), &auth, &keys, t), Ok(DenialProof::InsecureOptOut));
    // a delegation with its own NSEC3 is proven outright
    assert_eq!(prove_no_ds(&q("sub.example.test."), &auth, &keys, t), Ok(DenialProof::Secure));
    // a name that exists is still no NXDOMAIN
    assert!(prove_nxdomain(&q("www.example.test."), &auth, &keys, t).is_err());

    let many = sign(dir.path(), "many.test.", "ECDSAP256SHA256", &["-n", "-s", "ab", "-t", "200"], "");
    let keys = many.keys();
    let auth = many.denials();
    assert_eq!(prove_nxdomain(&q("nope.many.test."), &auth, &keys, t), Ok(DenialProof::Insecure));
    assert_eq!(prove_nodata(&q("www.many.test."), RecordType::AAAA, &auth, &keys, t), Ok(DenialProof::Insecure));
    let lenient = keys.with_max_nsec3_iterations(500);
    assert_eq!(prove_nxdomain(&q("nope.many.test."), &auth, &lenient, t), Ok(DenialProof::Secure));
}

#[test]
fn every_supported_algorithm() {
    if !have_ldns() {
        return;
    }
    let dir = tmp();
    for alg in ["RSASHA1", "RSASHA1-NSEC3-SHA1", "RSASHA256", "RSASHA512", "ECDSAP384SHA384", "ED25519"] {
        let zone = format!("{}.test.", alg.to_ascii_lowercase());
        let opts: &[&str] = if alg.contains("NSEC3") { &["-n"] } else { &[] };
        let z = sign(dir.path(), &zone, alg, opts, "");
        let t = now();
        let keys = z.keys_at(t).unwrap_or_else(|e| panic!("{alg}: {e}")).unwrap_or_else(|| panic!("{alg}: insecure"));
        let www = format!("www.{zone}");
        assert!(verify_rrset(&z.rrset(&www, RecordType::A), &z.sigs(&www), &keys, t).is_ok(), "{alg}");
        assert_eq!(prove_nxdomain(&name(&format!("nope.{zone}")), &z.denials(), &keys, t), Ok(DenialProof::Secure), "{alg}");
    }
}

// ---- trust anchors ----

const KSK_2017: &str = "AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU=";
const KSK_2024: &str = "AwEAAa96jeuknZlaeSrvyAJj6ZHv28hhOKkx3rLGXVaC6rXTsDc449/cidltpkyGwCJNnOAlFNKF2jBosZBU5eeHspaQWOmOElZsjICMQMC3aeHbGiShvZsx4wMYSjH8e7Vrhbu6irwCzVBApESjbUdpWWmEnhathWu1jo+siFUiRAAxm9qyJNg/wOZqqzL/dL/q8PkcRU5oUKEpUge71M3ej2/7CPqpdVwuMoTvoB+ZOT4YeGyxMvHmbrxlFzGOHOijtzN+u1TQNatX2XBuzZNQ1K+s2CXkPIZo7s6JgZyvaBevYtxPvYLw4z9mR7K2vaF18UYH9Z9GNUUeayffKC73PYc=";

/// IANA's root-anchors.xml as published in 2024 (RFC 9718 format), with the
/// retired KSK-2010 entry that older copies carry.
const ROOT_ANCHORS_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<TrustAnchor id="380DC50D-484E-40D0-A3AE-68F2B18F61C7" source="http://data.iana.org/root-anchors/root-anchors.xml">
<Zone>.</Zone>
<KeyDigest id="Kjqmt7v" validFrom="2010-07-15T00:00:00+00:00" validUntil="2019-01-11T00:00:00+00:00">
<KeyTag>19036</KeyTag>
<Algorithm>8</Algorithm>
<DigestType>2</DigestType>
<Digest>49AAC11D7B6F6446702E54A1607371607A1A41855200FD2CE1CDDE32F24E8FB5</Digest>
</KeyDigest>
<KeyDigest id="Klajeyz" validFrom="2017-02-02T00:00:00+00:00">
<KeyTag>20326</KeyTag>
<Algorithm>8</Algorithm>
<DigestType>2</DigestType>
<Digest>E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D</Digest>
<PublicKey>AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU=</PublicKey>
<Flags>257</Flags>
</KeyDigest>
<KeyDigest id="Kmyv6jo" validFrom="2024-07-18T00:00:00+00:00">
<KeyTag>38696</KeyTag>
<Algorithm>8</Algorithm>
<DigestType>2</DigestType>
<Digest>683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16</Digest>
<PublicKey>AwEAAa96jeuknZlaeSrvyAJj6ZHv28hhOKkx3rLGXVaC6rXTsDc449/cidltpkyGwCJNnOAlFNKF2jBosZBU5eeHspaQWOmOElZsjICMQMC3aeHbGiShvZsx4wMYSjH8e7Vrhbu6irwCzVBApESjbUdpWWmEnhathWu1jo+siFUiRAAxm9qyJNg/wOZqqzL/dL/q8PkcRU5oUKEpUge71M3ej2/7CPqpdVwuMoTvoB+ZOT4YeGyxMvHmbrxlFzGOHOijtzN+u1TQNatX2XBuzZNQ1K+s2CXkPIZo7s6JgZyvaBevYtxPvYLw4z9mR7K2vaF18UYH9Z9GNUUeayffKC73PYc=</PublicKey>
<Flags>257</Flags>
</KeyDigest>
</TrustAnchor>
"#;

fn tags(a: &Anchor) -> Vec<u16> {
    let mut t: Vec<u16> = a.ds.iter().map(|d| d.key_tag()).chain(a.dnskeys.iter().filter_map(|k| k.calculate_key_tag().ok())).collect();
    t.sort_unstable();
    t
}

#[test]
fn builtin_root_anchors_are_the_digests_of_the_root_ksks() {
    let anchors = TrustAnchors::builtin();
    let root = anchors.for_zone(&Name::root()).unwrap();
    assert_eq!(tags(root), vec![20326, 38696]);
    for key in [KSK_2017, KSK_2024] {
        let (_, rec) = parse_records(&format!(". 172800 IN DNSKEY 257 3 8 {key}\n")).unwrap().remove(0);
        let RData::DNSSEC(DNSSECRData::DNSKEY(k)) = rec.data else { panic!("not a DNSKEY") };
        assert!(root.ds.iter().any(|d| d.key_tag() == k.calculate_key_tag().unwrap() && d.covers(&Name::root(), &k).unwrap()));
    }
    let (zone, _) = anchors.closest(&name("www.example.com.")).unwrap();
    assert!(zone.is_root());
}

#[test]
fn rfc7958_xml() {
    let t2026 = text::unix_seconds(2026, 12, 1, 0, 0, 0).unwrap();
    let anchors = TrustAnchors::parse_at(ROOT_ANCHORS_XML, "root-anchors.xml", t2026).unwrap();
    assert_eq!(anchors, TrustAnchors::builtin(), "the retired KSK-2010 is left out; the rest equals the compiled-in anchors");
    let t2016 = text::unix_seconds(2016, 1, 1, 0, 0, 0).unwrap();
    let then = TrustAnchors::parse_at(ROOT_ANCHORS_XML, "root-anchors.xml", t2016).unwrap();
    assert_eq!(tags(then.for_zone(&Name::root()).unwrap()), vec![19036]);
    assert!(TrustAnchors::parse(ROOT_ANCHORS_XML, "root-anchors.xml").is_ok());

    let broken = ROOT_ANCHORS_XML.replace("<Digest>683D", "<Digest>ZZ3D");
    let e = TrustAnchors::parse_at(&broken, "root-anchors.xml", t2026).unwrap_err();
    assert!(e.to_string().starts_with("root-anchors.xml:22: <Digest> is not hex"), "{e}");
    let e = TrustAnchors::parse_at(&ROOT_ANCHORS_XML.replace("<KeyTag>20326</KeyTag>", ""), "r.xml", t2026).unwrap_err();
    assert!(e.to_string().starts_with("r.xml:10: <KeyDigest> without <KeyTag>"), "{e}");
    let e = TrustAnchors::parse_at("<TrustAnchor></TrustAnchor>", "r.xml", t2026).unwrap_err();
    assert!(e.to_string().starts_with("r.xml:1: no <Zone>"), "{e}");
}

#[test]
fn zone_file_anchors() {
    // Unbound's auto-trust-anchor-file: only VALID/MISSING keys are anchors
    let autotrust = format!(
        "; autotrust trust anchor file\n;;id: . 1\n;;last_queried: 1733580000 ;;Sat Dec  7 14:00:00 2024\n\
         .\t172800\tIN\tDNSKEY\t257 3 8 {KSK_2017} ;{{id = 20326 (ksk), size = 2048b}} ;;state=2 [  VALID  ] ;;count=0 ;;lastchange=1720000000\n\
         .\t172800\tIN\tDNSKEY\t257 3 8 {KSK_2024} ;{{id = 38696 (ksk), size = 2048b}} ;;state=1 [ ADDPEND ] ;;count=1 ;;lastchange=1733580000\n"
    );
    let a = TrustAnchors::parse(&autotrust, "root.key").unwrap();
    assert_eq!(tags(a.for_zone(&Name::root()).unwrap()), vec![20326]);
    // BIND-style parentheses, DS lines, several zones
    let lines = format!(
        ". IN DNSKEY 257 3 8 (\n  {}\n  {} ) ; KSK-2024\n\
         . IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n\
         example.test. 3600 IN DS 63174 13 2 12d0e6bfe6605400abb851e6f1897c682c1d197ac6fccce9e0a23e5d0bad373e\n",
        &KSK_2024[..100],
        &KSK_2024[100..]
    );
    let a = TrustAnchors::parse(&lines, "anchors.conf").unwrap();
    assert_eq!(tags(a.for_zone(&Name::root()).unwrap()), vec![20326, 38696]);
    assert_eq!(tags(a.for_zone(&name("example.test.")).unwrap()), vec![63174]);
    assert_eq!(a.closest(&name("www.example.test.")).map(|(z, _)| z.clone()), Some(name("example.test.")));
    assert_eq!(a.closest(&name("www.other.test.")).map(|(z, _)| z.clone()), Some(Name::root()));
    assert_eq!(a.for_zone(&name("test.")), None);

    let bad: &[(&str, &str)] = &[
        ("; header\n. IN DS 20326 8 2 E06D44B8\n. IN DNSKEY 257 3 8 !!notbase64\n", "root.key:3: DNSKEY: bad base64"),
        (". IN A 192.0.2.1\n", "root.key:1: A record: only DS and DNSKEY"),
        (". IN DNSKEY 0 3 8 AwEAAQ==\n", "root.key:1: DNSKEY without the zone key flag"),
        ("; nothing here\n", "root.key:1: no usable DS or DNSKEY"),
        ("\n\n. IN DNSKEY ( 257 3 8\n AwEAAQ==\n", "root.key:3: `(` never closed"),
    ];
    for (text, want) in bad {
        let e = TrustAnchors::parse(text, "root.key").unwrap_err();
        assert!(e.to_string().starts_with(want), "`{text}`: got `{e}`, want `{want}`");
    }
}

#[test]
fn bogus_reasons_and_codes() {
    let cases = [
        (Bogus::SignatureExpired, 7),
        (Bogus::SignatureNotYetValid, 8),
        (Bogus::DnskeyMissing, 9),
        (Bogus::RrsigsMissing, 10),
        (Bogus::NsecMissing, 12),
        (Bogus::Other("x"), 6),
    ];
    for (b, code) in cases {
        assert_eq!(b.ede_code(), code, "{b}");
        assert!(!b.to_string().is_empty());
    }
    assert!(serial_lt(u32::MAX - 5, 5), "serial arithmetic wraps");
    assert!(!serial_lt(5, u32::MAX - 5));
}

/// The committed bench fixture (`benches/data/dnssec-p256.zone`) validates,
/// so `dnssec_verify_rrset` measures the success path.
#[test]
fn bench_fixture_validates() {
    let records: Vec<Record> =
        parse_records(include_str!("../../benches/data/dnssec-p256.zone")).unwrap().into_iter().map(|(_, r)| r).collect();
    let z = Signed { zone: name("bench.test."), records, ds: Vec::new(), key_file: String::new(), ds_file: String::new() };
    let ksk: Vec<_> = z
        .rrset("bench.test.", RecordType::DNSKEY)
        .into_iter()
        .filter_map(|r| match r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) if k.secure_entry_point() => Some(k),
            _ => None,
        })
        .collect();
    let anchor = Anchor { ds: Vec::new(), dnskeys: ksk };
    let t = now();
    let keys = verify_dnskeys(&z.zone, &z.rrset("bench.test.", RecordType::DNSKEY), &z.sigs("bench.test."), Trust::Anchor(&anchor), t).unwrap().unwrap();
    let v = verify_rrset(&z.rrset("www.bench.test.", RecordType::A), &z.sigs("www.bench.test."), &keys, t).unwrap();
    assert_eq!(v.wildcard, None);
    assert_eq!(prove_nodata(&name("www.bench.test."), RecordType::AAAA, &z.denials(), &keys, t), Ok(DenialProof::Secure));
}

/// Junk keys and signatures of every algorithm fail cleanly, never panic.
#[test]
fn malformed_keys_and_signatures_do_not_panic() {
    use hickory_proto::dnssec::rdata::{DNSKEY, RRSIG};
    use hickory_proto::dnssec::{Algorithm, PublicKeyBuf};
    let records: Vec<Record> =
        parse_records(include_str!("../../benches/data/dnssec-p256.zone")).unwrap().into_iter().map(|(_, r)| r).collect();
    let owner = name("www.bench.test.");
    let rrset: Vec<Record> = records.iter().filter(|r| r.name == owner && r.record_type() == RecordType::A).cloned().collect();
    let sig_rec = records.iter().find(|r| r.name == owner && r.record_type() == RecordType::RRSIG).unwrap().clone();
    let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &sig_rec.data else { panic!("not an RRSIG") };
    let t = now();
    for alg in [5u8, 7, 8, 10, 13, 14, 15, 16, 200] {
        let alg = Algorithm::from_u8(alg);
        for len in [0usize, 1, 2, 3, 4, 31, 32, 33, 64, 65, 96, 128, 260] {
            let key_bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let key = DNSKEY::with_flags(256, PublicKeyBuf::new(key_bytes, alg));
            let mut input = sig.input().clone();
            input.algorithm = alg;
            for sig_len in [0usize, 1, 64, 256] {
                let mut r = sig_rec.clone();
                r.data = RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input.clone(), vec![0x5a; sig_len])));
                let keys = ZoneKeys { zone: name("bench.test."), ttl: 0, keys: vec![(input.key_tag, key.clone())], max_nsec3_iterations: 0, max_denial_rrsets: 0 };
                assert!(verify_rrset(&rrset, &[r], &keys, t).is_err(), "{alg:?} key {len} sig {sig_len}");
            }
        }
    }
}

/// Every prefix (and a few corruptions) of the anchor formats fails or
/// parses, never panics.
#[test]
fn truncated_and_corrupted_anchor_files_do_not_panic() {
    let lines = format!(". 172800 IN DNSKEY 257 3 8 ( {KSK_2017} ) ;;state=2\n. IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n");
    for text in [ROOT_ANCHORS_XML, lines.as_str()] {
        for cut in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let _ = TrustAnchors::parse(&text[..cut], "f");
        }
    }
    for (from, to) in [("2017-02-02T00:00:00+00:00", "2017-02-02T00:00:00+0é00"), ("<Zone>.</Zone>", "<Zone>é..</Zone>"), ("</KeyDigest>", "")] {
        let _ = TrustAnchors::parse(&ROOT_ANCHORS_XML.replacen(from, to, 1), "f");
    }
}
