//! TSIG (RFC 8945, HMAC-SHA256 only): the key as configured, signing our
//! requests, verifying every message of a primary's answer (MAC chaining
//! over multi-message transfers, our own fudge), and the request side that
//! `server/notify.rs` needs to check a signed NOTIFY and sign its reply.

use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::tsig::{make_tsig_record, TsigAlgorithm, TsigError, TSIG};
use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::BinEncoder;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::message::{decode, Reply, SignedPart, HEADER_LEN};
use super::{malformed, AxfrError};

type HmacSha256 = Hmac<Sha256>;

/// Allowed clock difference for TSIG, both ways (RFC 8945 recommends 300 s).
pub(super) const FUDGE: u16 = 300;
/// HMAC-SHA256 output length; truncated MACs are refused.
const MAC_LEN: usize = 32;
/// RFC 8945 §5.3.1: at most 99 unsigned messages between two signed ones.
const MAX_UNSIGNED_RUN: u32 = 99;

pub use crate::keys::TsigKey;

/// Encodes (and signs, with a key) a request.
pub(super) fn encode_request(
    mut request: Message,
    tsig: Option<&TsigKey>,
) -> Result<(Vec<u8>, Option<TsigVerifier<'_>>), AxfrError> {
    match tsig {
        None => Ok((request.to_vec().map_err(AxfrError::Encode)?, None)),
        Some(key) => {
            let mac = sign_message(&mut request, key, now_secs(), None)?;
            Ok((request.to_vec().map_err(AxfrError::Encode)?, Some(TsigVerifier::new(key, mac))))
        }
    }
}

/// Seconds since the epoch (0 if the clock is before it): TSIG's time signed.
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hmac_of(key: &TsigKey) -> Result<HmacSha256, AxfrError> {
    HmacSha256::new_from_slice(&key.secret).map_err(|_| AxfrError::Tsig("unusable key secret".into()))
}

/// TSIG variables of a first (or only) message, RFC 8945 §4.3.3.
fn tsig_variables(rdata: &TSIG, key_name: &Name) -> Result<Vec<u8>, AxfrError> {
    let mut out = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut out);
    rdata.emit_tsig_for_mac(&mut enc, key_name).map_err(AxfrError::Encode)?;
    Ok(out)
}

/// TSIG timers (time signed, fudge) of a later message, RFC 8945 §5.3.1.
fn tsig_timers(rdata: &TSIG) -> [u8; 8] {
    // Time signed is 48 bits: the low six bytes of the u64. Constant indices
    // into fixed-size arrays, checked at compile time.
    let t = rdata.time.to_be_bytes();
    let f = rdata.fudge.to_be_bytes();
    [t[2], t[3], t[4], t[5], t[6], t[7], f[0], f[1]]
}

/// Signs `msg` (which has no signature yet) and attaches the TSIG record.
/// `prior_mac` is the request MAC when signing a response (tests' fake
/// primary). Returns the MAC.
fn sign_message(msg: &mut Message, key: &TsigKey, now: u64, prior_mac: Option<&[u8]>) -> Result<Vec<u8>, AxfrError> {
    sign_message_with(msg, key, now, FUDGE, prior_mac)
}

/// [`sign_message`] with the given fudge (tests sign as a lax primary would).
fn sign_message_with(msg: &mut Message, key: &TsigKey, now: u64, fudge: u16, prior_mac: Option<&[u8]>) -> Result<Vec<u8>, AxfrError> {
    let stub = TSIG::new(
        TsigAlgorithm::HmacSha256,
        now,
        fudge,
        Vec::new(),
        msg.metadata.id,
        None,
        Vec::new(),
    );
    let body = msg.to_vec().map_err(AxfrError::Encode)?;
    let vars = tsig_variables(&stub, &key.name)?;
    let mut mac = hmac_of(key)?;
    if let Some(prior) = prior_mac {
        let len = u16::try_from(prior.len()).map_err(|_| AxfrError::Tsig("MAC too long".into()))?;
        mac.update(&len.to_be_bytes());
        mac.update(prior);
    }
    mac.update(&body);
    mac.update(&vars);
    let mac = mac.finalize().into_bytes().to_vec();
    msg.signature = Some(Box::new(make_tsig_record(key.name.clone(), stub.set_mac(mac.clone()))));
    Ok(mac)
}

/// Checks the TSIG of each response message in turn (RFC 8945 §5.3):
/// the first with the request MAC and all TSIG variables, each later one
/// with the prior MAC, any unsigned messages since, and the timers only.
pub(super) struct TsigVerifier<'k> {
    key: &'k TsigKey,
    prior_mac: Vec<u8>,
    first: bool,
    /// Unsigned messages since the last signed one, as received.
    unsigned: Vec<u8>,
    unsigned_run: u32,
}

impl<'k> TsigVerifier<'k> {
    pub(super) fn new(key: &'k TsigKey, request_mac: Vec<u8>) -> Self {
        Self {
            key,
            prior_mac: request_mac,
            first: true,
            unsigned: Vec::new(),
            unsigned_run: 0,
        }
    }

    pub(super) fn check(&mut self, buf: &[u8], reply: &Reply, now: u64) -> Result<(), AxfrError> {
        let Some(sig) = &reply.tsig else {
            if self.first {
                return Err(AxfrError::Tsig("the primary's answer is not signed".into()));
            }
            self.unsigned_run += 1;
            if self.unsigned_run > MAX_UNSIGNED_RUN {
                return Err(AxfrError::Tsig(format!(
                    "more than {MAX_UNSIGNED_RUN} unsigned messages in a row"
                )));
            }
            self.unsigned.extend_from_slice(buf);
            return Ok(());
        };
        if sig.key != self.key.name {
            return Err(AxfrError::Tsig(format!(
                "answer signed with key `{}`, not `{}`",
                sig.key, self.key.name
            )));
        }
        if sig.rdata.algorithm != TsigAlgorithm::HmacSha256 {
            return Err(AxfrError::Tsig(format!(
                "answer signed with {}, not hmac-sha256",
                sig.rdata.algorithm
            )));
        }
        if sig.rdata.mac.len() != MAC_LEN {
            return Err(AxfrError::Tsig(format!(
                "MAC of {} bytes (truncated MACs are not accepted)",
                sig.rdata.mac.len()
            )));
        }
        // our own limit, not only the primary's: a signed answer carrying a
        // fudge of hours could be replayed for hours (RFC 8945 §5.2.3: the
        // receiver's policy decides)
        let fudge = sig.rdata.fudge.min(FUDGE);
        if now.abs_diff(sig.rdata.time) > u64::from(fudge) {
            return Err(AxfrError::Tsig(format!(
                "answer signed at {}, now is {now}: outside the {fudge} s fudge",
                sig.rdata.time
            )));
        }
        let (header, body) = unsigned_parts(buf, reply, sig)?;
        let prior_len = u16::try_from(self.prior_mac.len()).map_err(|_| AxfrError::Tsig("MAC too long".into()))?;

        let mut mac = hmac_of(self.key)?;
        mac.update(&prior_len.to_be_bytes());
        mac.update(&self.prior_mac);
        mac.update(&self.unsigned);
        mac.update(&header);
        mac.update(body);
        if self.first {
            mac.update(&tsig_variables(&sig.rdata, &sig.key)?);
        } else {
            mac.update(&tsig_timers(&sig.rdata));
        }
        mac.verify_slice(&sig.rdata.mac)
            .map_err(|_| AxfrError::Tsig("bad MAC on the primary's answer".into()))?;

        self.prior_mac.clone_from(&sig.rdata.mac);
        self.first = false;
        self.unsigned.clear();
        self.unsigned_run = 0;
        Ok(())
    }

    /// The last message must be signed.
    pub(super) fn finish(&self) -> Result<(), AxfrError> {
        if self.first || self.unsigned_run > 0 {
            return Err(AxfrError::Tsig("the last message of the answer is not signed".into()));
        }
        Ok(())
    }
}

// ------------------------------------------------- signed requests (NOTIFY)

/// Why a request that had to carry the list's TSIG key was not accepted.
///
/// [`RequestTsigError::tsig_error`] gives the RFC 8945 error to answer
/// with (in a NOTAUTH reply); `Unsigned` and `Malformed` have none.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestTsigError {
    #[error("not signed")]
    Unsigned,
    #[error("malformed")]
    Malformed(#[source] AxfrError),
    #[error("signed with key `{0}` (hmac-sha256 key of the list expected)")]
    BadKey(Name),
    #[error("MAC of {0} bytes (truncated MACs are not accepted)")]
    BadTrunc(usize),
    #[error("bad MAC")]
    BadSig,
    /// The MAC is good; `request` is what a signed BADTIME reply needs.
    #[error("signed at {signed}, now is {now}: outside the {FUDGE} s fudge")]
    BadTime { signed: u64, now: u64, request: SignedRequest },
}

impl RequestTsigError {
    /// The TSIG error code for the reply, if this is a TSIG error at all.
    pub fn tsig_error(&self) -> Option<TsigError> {
        match self {
            Self::Unsigned | Self::Malformed(_) => None,
            Self::BadKey(_) => Some(TsigError::BadKey),
            Self::BadTrunc(_) => Some(TsigError::BadTrunc),
            Self::BadSig => Some(TsigError::BadSig),
            Self::BadTime { .. } => Some(TsigError::BadTime),
        }
    }
}

/// A request whose TSIG checked out: what signing the reply needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The request MAC: the reply's MAC covers it (RFC 8945 §5.3).
    pub mac: Vec<u8>,
    /// The request's original ID, echoed in the reply's TSIG.
    pub original_id: u16,
}

/// Checks the TSIG of one request message `raw` (as received) against
/// `key` at time `now` (seconds since the epoch), as RFC 8945 §5.2 orders
/// it: key and algorithm, MAC length, MAC, then time (our 300 s fudge, or
/// the signer's if smaller).
///
/// Cost: one decode of the message and one HMAC over it. Never panics on
/// any input; a message that does not decode is `Malformed`.
pub fn verify_request(raw: &[u8], key: &TsigKey, now: u64) -> Result<SignedRequest, RequestTsigError> {
    let bad = RequestTsigError::Malformed;
    let msg = decode(raw).map_err(bad)?;
    let Some(sig) = &msg.tsig else { return Err(RequestTsigError::Unsigned) };
    if sig.key != key.name || sig.rdata.algorithm != TsigAlgorithm::HmacSha256 {
        return Err(RequestTsigError::BadKey(sig.key.clone()));
    }
    if sig.rdata.mac.len() != MAC_LEN {
        return Err(RequestTsigError::BadTrunc(sig.rdata.mac.len()));
    }
    let (header, body) = unsigned_parts(raw, &msg, sig).map_err(bad)?;
    let mut mac = hmac_of(key).map_err(bad)?;
    mac.update(&header);
    mac.update(body);
    mac.update(&tsig_variables(&sig.rdata, &sig.key).map_err(bad)?);
    mac.verify_slice(&sig.rdata.mac).map_err(|_| RequestTsigError::BadSig)?;
    let request = SignedRequest { mac: sig.rdata.mac.clone(), original_id: sig.rdata.oid };
    if now.abs_diff(sig.rdata.time) > u64::from(sig.rdata.fudge.min(FUDGE)) {
        return Err(RequestTsigError::BadTime { signed: sig.rdata.time, now, request });
    }
    Ok(request)
}

/// The TSIG record for a reply to a verified request: `unsigned` is the
/// reply encoded without it. With `error` (BADTIME), the record carries the
/// error and our time in Other Data, and is still signed (RFC 8945 §5.3.2).
pub fn sign_reply(
    unsigned: &[u8],
    key: &TsigKey,
    request: &SignedRequest,
    now: u64,
    error: Option<TsigError>,
) -> Result<Record<TSIG>, AxfrError> {
    let other = match error {
        // the 48-bit time: the low six bytes (constant indices, fixed array)
        Some(TsigError::BadTime) => {
            let t = now.to_be_bytes();
            vec![t[2], t[3], t[4], t[5], t[6], t[7]]
        }
        _ => Vec::new(),
    };
    let stub = TSIG::new(TsigAlgorithm::HmacSha256, now, FUDGE, Vec::new(), request.original_id, error, other);
    let len = u16::try_from(request.mac.len()).map_err(|_| AxfrError::Tsig("MAC too long".into()))?;
    let mut mac = hmac_of(key)?;
    mac.update(&len.to_be_bytes());
    mac.update(&request.mac);
    mac.update(unsigned);
    mac.update(&tsig_variables(&stub, &key.name)?);
    let mac = mac.finalize().into_bytes().to_vec();
    Ok(make_tsig_record(key.name.clone(), stub.set_mac(mac)))
}

/// The unsigned TSIG record of an error reply (BADKEY, BADSIG, BADTRUNC):
/// empty MAC, as RFC 8945 §5.3.2 requires for key and MAC errors.
pub fn unsigned_error_record(key_name: Name, original_id: u16, now: u64, error: TsigError) -> Record<TSIG> {
    make_tsig_record(
        key_name,
        TSIG::new(TsigAlgorithm::HmacSha256, now, FUDGE, Vec::new(), original_id, Some(error), Vec::new()),
    )
}

/// Signs `msg` as a request with `key` at `now` and encodes it: how a
/// primary signs its NOTIFY (for tests of the verifying side).
pub fn sign_request(mut msg: Message, key: &TsigKey, now: u64) -> Result<Vec<u8>, AxfrError> {
    sign_message(&mut msg, key, now, None)?;
    msg.to_vec().map_err(AxfrError::Encode)
}

/// Whether `unsigned` with `record` attached verifies as a response to a
/// request whose MAC was `request_mac` (tests of the NOTIFY reply).
#[cfg(test)]
pub(crate) fn reply_verifies(unsigned: &[u8], record: &Record<TSIG>, key: &TsigKey, request_mac: &[u8]) -> bool {
    let Ok(mut msg) = Message::from_vec(unsigned) else { return false };
    msg.signature = Some(Box::new(record.clone()));
    let Ok(buf) = msg.to_vec() else { return false };
    let Ok(reply) = decode(&buf) else { return false };
    TsigVerifier::new(key, request_mac.to_vec()).check(&buf, &reply, record.data.time).is_ok()
}

/// The original ID of a request's TSIG, if it has one (for error replies).
pub fn request_tsig_id(raw: &[u8]) -> Option<(Name, u16)> {
    let msg = decode(raw).ok()?;
    msg.tsig.map(|t| (t.key, t.rdata.oid))
}

/// The message as it was before its TSIG was added (RFC 8945 §4.3.1):
/// the header with the original ID and one additional record fewer, and
/// the bytes between the header and the TSIG record.
fn unsigned_parts<'b>(buf: &'b [u8], msg: &Reply, sig: &SignedPart) -> Result<([u8; HEADER_LEN], &'b [u8]), AxfrError> {
    let mut header: [u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| malformed("short header"))?;
    let arcount = msg.header.counts.additionals.checked_sub(1).ok_or_else(|| malformed("TSIG not counted"))?;
    // Constant indices into our own [u8; 12]: checked at compile time.
    let [id_hi, id_lo] = sig.rdata.oid.to_be_bytes();
    let [ar_hi, ar_lo] = arcount.to_be_bytes();
    header[0] = id_hi;
    header[1] = id_lo;
    header[10] = ar_hi;
    header[11] = ar_lo;
    let body = buf.get(HEADER_LEN..sig.start).ok_or_else(|| malformed("TSIG record inside the header"))?;
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{transfer, Transfer};
    use super::*;
    use hickory_proto::op::{MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::RecordType;
    use std::net::SocketAddr;

    /// Signs a later message of a multi-message answer (prior MAC + message + timers).
    fn sign_later(msg: &mut Message, key: &TsigKey, now: u64, prior: &[u8]) -> Vec<u8> {
        let stub = TSIG::new(
            TsigAlgorithm::HmacSha256,
            now,
            FUDGE,
            Vec::new(),
            msg.metadata.id,
            None,
            Vec::new(),
        );
        let mut mac = hmac_of(key).unwrap();
        mac.update(&u16::try_from(prior.len()).unwrap().to_be_bytes());
        mac.update(prior);
        mac.update(&msg.to_vec().unwrap());
        mac.update(&tsig_timers(&stub));
        let mac = mac.finalize().into_bytes().to_vec();
        msg.signature = Some(Box::new(make_tsig_record(key.name.clone(), stub.set_mac(mac.clone()))));
        mac
    }

    /// A fake primary that checks the request's MAC and signs its answer
    /// (`unsigned_middle`: leave the middle message unsigned; `tamper`:
    /// flip a byte of the last message after signing).
    async fn signing_primary(server_key: TsigKey, unsigned_middle: bool, tamper: bool) -> SocketAddr {
        fake_primary(move |mut req, raw| {
            let reply = decode(&raw).unwrap();
            let sig = reply.tsig.expect("request is signed");
            // Check the request MAC as a primary would.
            let mut header: [u8; 12] = raw[..12].try_into().unwrap();
            header[11] -= 1;
            let mut mac = hmac_of(&server_key).unwrap();
            mac.update(&header);
            mac.update(&raw[12..sig.start]);
            mac.update(&tsig_variables(&sig.rdata, &sig.key).unwrap());
            if mac.verify_slice(&sig.rdata.mac).is_err() {
                let mut m = response(&req, vec![]);
                m.metadata.response_code = ResponseCode::NotAuth;
                let t = TSIG::new(
                    TsigAlgorithm::HmacSha256,
                    now_secs(),
                    FUDGE,
                    vec![],
                    req.metadata.id,
                    Some(TsigError::BadSig),
                    vec![],
                );
                m.signature = Some(Box::new(make_tsig_record(sig.key.clone(), t)));
                return (vec![wire(&m)], false);
            }
            req.additionals.clear();
            let now = now_secs();
            let mut first = response(&req, vec![soa(7), cname("a", ".")]);
            let mut prior = sign_message(&mut first, &server_key, now, Some(&sig.rdata.mac)).unwrap();
            let mut middle = response(&req, vec![cname("b", ".")]);
            let mut last = response(&req, vec![cname("c", "."), soa(7)]);
            let middle_wire = if unsigned_middle {
                let w = wire(&middle);
                // The next MAC covers the unsigned message as sent.
                let stub = TSIG::new(
                    TsigAlgorithm::HmacSha256,
                    now,
                    FUDGE,
                    Vec::new(),
                    last.metadata.id,
                    None,
                    Vec::new(),
                );
                let mut mac = hmac_of(&server_key).unwrap();
                mac.update(&u16::try_from(prior.len()).unwrap().to_be_bytes());
                mac.update(&prior);
                mac.update(&w);
                mac.update(&last.to_vec().unwrap());
                mac.update(&tsig_timers(&stub));
                let mac = mac.finalize().into_bytes().to_vec();
                last.signature = Some(Box::new(make_tsig_record(server_key.name.clone(), stub.set_mac(mac))));
                w
            } else {
                prior = sign_later(&mut middle, &server_key, now, &prior);
                sign_later(&mut last, &server_key, now, &prior);
                wire(&middle)
            };
            let mut last_wire = wire(&last);
            if tamper {
                // Clear the AA bit: covered by the MAC, ignored otherwise.
                last_wire[2] ^= 0x04;
            }
            (vec![wire(&first), middle_wire, last_wire], false)
        })
        .await
    }

    #[tokio::test]
    async fn tsig_signed_multi_message_transfer() {
        let want = Transfer::Full {
            serial: 7,
            records: vec![soa(7), cname("a", "."), cname("b", "."), cname("c", ".")],
        };
        for unsigned_middle in [false, true] {
            let addr = signing_primary(key(), unsigned_middle, false).await;
            let got = transfer(addr, &zone(), None, Some(&key()), &limits()).await;
            assert_eq!(got.unwrap(), want, "unsigned_middle={unsigned_middle}");
        }
    }

    #[tokio::test]
    async fn tsig_failures() {
        let other = TsigKey::parse("hmac-sha256:qalqan-key:b3RoZXItc2VjcmV0").unwrap();
        // Primary has another secret: it rejects the request.
        let addr = signing_primary(other, false, false).await;
        let err = transfer(addr, &zone(), None, Some(&key()), &limits())
            .await
            .unwrap_err();
        assert!(matches!(&err, AxfrError::Tsig(m) if m.contains("BADSIG")), "{err:?}");
        // A message altered in flight.
        let addr = signing_primary(key(), false, true).await;
        let err = transfer(addr, &zone(), None, Some(&key()), &limits())
            .await
            .unwrap_err();
        assert!(matches!(&err, AxfrError::Tsig(m) if m.contains("bad MAC")), "{err:?}");
        // An unsigned answer to a signed request.
        let addr = fake_primary(|req, _| (messages(&req, vec![vec![soa(7), soa(7)]]), false)).await;
        let err = transfer(addr, &zone(), None, Some(&key()), &limits())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AxfrError::Tsig(m) if m.contains("not signed")),
            "{err:?}"
        );
    }

    /// A primary's own fudge does not widen ours: an answer signed an hour
    /// ago with a 10-hour fudge is refused (a replay window of hours).
    #[test]
    fn tsig_time_is_checked_against_our_fudge_not_the_primarys() {
        let key = TsigKey::parse("hmac-sha256:k.example:c2VjcmV0").unwrap();
        let request_mac = vec![7u8; 32];
        let signed_at = 1_800_000_000u64;
        let mut msg = Message::new(42, MessageType::Response, OpCode::Query);
        msg.add_query(Query::query(zone(), RecordType::AXFR));
        msg.add_answer(soa(7));
        sign_message_with(&mut msg, &key, signed_at, 36_000, Some(&request_mac)).unwrap();
        let buf = msg.to_vec().unwrap();
        let reply = decode(&buf).unwrap();
        let err = TsigVerifier::new(&key, request_mac.clone()).check(&buf, &reply, signed_at + 3600).unwrap_err();
        assert!(err.to_string().contains("outside the 300 s fudge"), "{err}");
        TsigVerifier::new(&key, request_mac.clone()).check(&buf, &reply, signed_at + 299).unwrap();
        // and a wrong MAC is still a wrong MAC inside the window
        TsigVerifier::new(&key, vec![8u8; 32]).check(&buf, &reply, signed_at).unwrap_err();
    }

    #[test]
    fn tsig_key_parsing() {
        let ok = TsigKey::parse("hmac-sha256:Qalqan-Key:c2VjcmV0").unwrap();
        assert_eq!(ok.name, name("qalqan-key."));
        assert_eq!(ok.secret, b"secret");
        assert_eq!(ok.algorithm, "hmac-sha256");
        assert_eq!(TsigKey::parse("k.example:c2VjcmV0").unwrap().name, name("k.example."));
        assert!(!format!("{ok:?}").contains("c2VjcmV0") && !format!("{ok:?}").contains("secret\""));
        let bad: &[(&str, &str)] = &[
            ("algorithm", "hmac-md5:k:c2VjcmV0"),
            ("base64", "hmac-sha256:k:not base64!"),
            ("empty secret", "hmac-sha256:k:"),
            ("empty name", "hmac-sha256::c2VjcmV0"),
            ("one part", "c2VjcmV0"),
            ("four parts", "a:b:c:d"),
        ];
        for (case, s) in bad {
            assert!(matches!(TsigKey::parse(s), Err(crate::keys::KeyError(_))), "case `{case}`");
        }
    }
}
