//! RFC 1996 NOTIFY for `axfr://` lists: which NOTIFY refreshes which list.
//!
//! A NOTIFY is accepted only for a configured zone, from its primary's
//! address, and, when the list has a `tsig` key, only when signed with that
//! key (RFC 8945): an address is easy to spoof over UDP, a MAC is not.
//! A refused NOTIFY triggers nothing; an accepted one wakes the list's
//! refresh task, which then asks the primary itself (SOA, then IXFR).
//!
//! | NOTIFY                                      | reply                     | refresh |
//! |---------------------------------------------|---------------------------|---------|
//! | zone not configured, or not from primary    | REFUSED                   | no      |
//! | list has a key, NOTIFY unsigned             | REFUSED                   | no      |
//! | unknown key name / algorithm, bad or short MAC | NOTAUTH + unsigned TSIG BADKEY/BADSIG/BADTRUNC | no |
//! | signed outside the 300 s fudge              | NOTAUTH + signed TSIG BADTIME | no  |
//! | signed with the list's key (or list has none) | NOERROR, AA (signed if the NOTIFY was) | yes |

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::{TsigError, TSIG};
use hickory_proto::rr::Record;

use crate::lists::source::{request_tsig_id, sign_reply, unsigned_error_record, verify_request, RequestTsigError, SignedRequest, TsigKey};
use crate::name::QName;

/// The zone a [`NotifyTarget`] is for.
pub enum NotifyZone {
    /// A configured `axfr://` list's zone, or a catalog zone.
    Fixed(QName),
    /// A catalog member slot: the member zone it holds now (`None`: vacant,
    /// every NOTIFY refused). Swapped by `lists/catalog.rs`.
    Slot(Arc<arc_swap::ArcSwapOption<QName>>),
}

impl NotifyZone {
    fn is(&self, zone: &QName) -> bool {
        match self {
            Self::Fixed(z) => z == zone,
            Self::Slot(s) => s.load().as_deref() == Some(zone),
        }
    }
}

impl From<QName> for NotifyZone {
    fn from(z: QName) -> Self {
        Self::Fixed(z)
    }
}

impl std::fmt::Display for NotifyZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(z) => write!(f, "{z}"),
            Self::Slot(s) => match s.load().as_deref() {
                Some(z) => write!(f, "{z}"),
                None => f.write_str("(vacant catalog slot)"),
            },
        }
    }
}

/// An `axfr://` list that a NOTIFY from `primary` for `zone` refreshes.
pub struct NotifyTarget {
    pub zone: NotifyZone,
    pub primary: IpAddr,
    /// The list's TSIG key: when set, only NOTIFYs signed with it count.
    pub tsig: Option<TsigKey>,
    pub refresh: Arc<tokio::sync::Notify>,
}

/// How to answer one NOTIFY.
#[derive(Debug)]
pub struct Decision {
    pub rcode: ResponseCode,
    /// Accepted: the reply is authoritative and the list was told to refresh.
    pub accepted: bool,
    pub tsig: Option<ReplyTsig>,
}

/// The TSIG record a NOTIFY reply carries.
#[derive(Debug)]
pub enum ReplyTsig {
    /// A ready record: a key or MAC error, with an empty MAC.
    Unsigned(Record<TSIG>),
    /// Sign the reply (as encoded without it) over the request MAC.
    Sign { key: TsigKey, request: SignedRequest, error: Option<TsigError> },
}

impl ReplyTsig {
    /// Whether [`ReplyTsig::record`] needs the encoded reply.
    pub fn needs_reply_bytes(&self) -> bool {
        matches!(self, Self::Sign { .. })
    }

    /// The record to attach; `unsigned` is the reply encoded without it
    /// (needed only to sign). `None` when signing failed: the reply then
    /// goes out unsigned, which a signer treats as a failed NOTIFY.
    pub fn record(self, unsigned: Option<&[u8]>, now: u64) -> Option<Record<TSIG>> {
        match self {
            Self::Unsigned(r) => Some(r),
            Self::Sign { key, request, error } => match sign_reply(unsigned?, &key, &request, now, error) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "could not sign the NOTIFY reply");
                    None
                }
            },
        }
    }
}

/// Decides a NOTIFY for `zone` from `src`; `raw` is the request as
/// received, `now` seconds since the epoch. Wakes the list's refresh task
/// when (and only when) the decision is `accepted`.
///
/// Cost: a scan of the configured targets, and for a keyed list one decode
/// and one HMAC of the request. Never panics on any input.
pub fn decide(targets: &[NotifyTarget], zone: Option<&QName>, src: IpAddr, raw: &[u8], now: u64) -> Decision {
    let refused = |rcode| Decision { rcode, accepted: false, tsig: None };
    let Some(t) = targets.iter().find(|t| zone.is_some_and(|z| t.zone.is(z)) && t.primary == src) else {
        tracing::debug!(?zone, %src, "NOTIFY refused: not a configured zone from its primary");
        return refused(ResponseCode::Refused);
    };
    let tsig = match &t.tsig {
        None => None,
        Some(key) => match verify_request(raw, key, now) {
            Ok(request) => Some(ReplyTsig::Sign { key: key.clone(), request, error: None }),
            Err(e) => {
                tracing::debug!(zone = %t.zone, primary = %src, error = %crate::lists::ErrorChain(&e), "NOTIFY refused: TSIG");
                let tsig_error = e.tsig_error();
                return match e {
                    RequestTsigError::Unsigned => refused(ResponseCode::Refused),
                    RequestTsigError::Malformed(_) => refused(ResponseCode::FormErr),
                    RequestTsigError::BadTime { request, .. } => Decision {
                        rcode: ResponseCode::NotAuth,
                        accepted: false,
                        tsig: Some(ReplyTsig::Sign { key: key.clone(), request, error: Some(TsigError::BadTime) }),
                    },
                    RequestTsigError::BadKey(_) | RequestTsigError::BadSig | RequestTsigError::BadTrunc(_) => {
                        let record = tsig_error.zip(request_tsig_id(raw)).map(|(err, (name, oid))| {
                            ReplyTsig::Unsigned(unsigned_error_record(name, oid, now, err))
                        });
                        Decision { rcode: ResponseCode::NotAuth, accepted: false, tsig: record }
                    }
                };
            }
        },
    };
    tracing::info!(zone = %t.zone, primary = %src, signed = tsig.is_some(), "NOTIFY accepted; refreshing");
    t.refresh.notify_one();
    Decision { rcode: ResponseCode::NoError, accepted: true, tsig }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::time::Duration;

    const NOW: u64 = 1_800_000_000;
    const PRIMARY: [u8; 4] = [192, 0, 2, 53];

    fn key(spec: &str) -> TsigKey {
        TsigKey::parse(spec).unwrap()
    }
    fn list_key() -> TsigKey {
        key("hmac-sha256:xfr-key:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==")
    }
    fn notify_msg() -> Message {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Notify);
        m.add_query(Query::query(Name::from_ascii("rpz.test.").unwrap(), RecordType::SOA));
        m
    }
    fn signed(k: &TsigKey, at: u64) -> Vec<u8> {
        crate::lists::source::sign_request(notify_msg(), k, at).unwrap()
    }
    /// Signed, then the MAC cut to its first 16 bytes.
    fn truncated() -> Vec<u8> {
        use hickory_proto::rr::rdata::tsig::{make_tsig_record, TsigAlgorithm};
        let k = list_key();
        let good = crate::lists::source::verify_request(&signed(&k, NOW), &k, NOW).unwrap();
        let mut m = notify_msg();
        let t = TSIG::new(TsigAlgorithm::HmacSha256, NOW, 300, good.mac[..16].to_vec(), 4242, None, Vec::new());
        m.signature = Some(Box::new(make_tsig_record(k.name.clone(), t)));
        m.to_vec().unwrap()
    }
    fn target(tsig: Option<TsigKey>) -> (Vec<NotifyTarget>, Arc<tokio::sync::Notify>) {
        let refresh = Arc::new(tokio::sync::Notify::new());
        let t = NotifyTarget { zone: QName::parse("rpz.test").unwrap().into(), primary: IpAddr::from(PRIMARY), tsig, refresh: Arc::clone(&refresh) };
        (vec![t], refresh)
    }
    /// Whether a refresh was requested (a stored permit is taken at once).
    async fn woken(n: &tokio::sync::Notify) -> bool {
        tokio::time::timeout(Duration::ZERO, n.notified()).await.is_ok()
    }

    #[tokio::test]
    async fn notify_decisions() {
        let other_secret = key("hmac-sha256:xfr-key:b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==");
        let other_name = key("hmac-sha256:other-key:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==");
        let unsigned = notify_msg().to_vec().unwrap();
        let primary = IpAddr::from(PRIMARY);
        let stranger = IpAddr::from([192, 0, 2, 99]);
        // (case, list key?, source, request, rcode, TSIG error in the reply)
        type Case = (&'static str, bool, IpAddr, Vec<u8>, ResponseCode, Option<TsigError>);
        let cases: Vec<Case> = vec![
            ("no key, unsigned", false, primary, unsigned.clone(), ResponseCode::NoError, None),
            ("no key, other source", false, stranger, unsigned.clone(), ResponseCode::Refused, None),
            ("key, signed", true, primary, signed(&list_key(), NOW), ResponseCode::NoError, None),
            ("key, signed, other source", true, stranger, signed(&list_key(), NOW), ResponseCode::Refused, None),
            ("key, unsigned", true, primary, unsigned.clone(), ResponseCode::Refused, None),
            ("key, wrong secret", true, primary, signed(&other_secret, NOW), ResponseCode::NotAuth, Some(TsigError::BadSig)),
            ("key, wrong key name", true, primary, signed(&other_name, NOW), ResponseCode::NotAuth, Some(TsigError::BadKey)),
            ("key, 301 s late", true, primary, signed(&list_key(), NOW - 301), ResponseCode::NotAuth, Some(TsigError::BadTime)),
            ("key, 301 s early", true, primary, signed(&list_key(), NOW + 301), ResponseCode::NotAuth, Some(TsigError::BadTime)),
            ("key, 299 s late", true, primary, signed(&list_key(), NOW - 299), ResponseCode::NoError, None),
            ("key, truncated MAC", true, primary, truncated(), ResponseCode::NotAuth, Some(TsigError::BadTrunc)),
            ("key, garbage", true, primary, vec![0x10, 0x92, 0x20, 0, 0, 1, 0, 0, 0, 0, 0, 1, 3], ResponseCode::FormErr, None),
        ];
        for (case, keyed, src, raw, rcode, tsig_error) in cases {
            let (targets, refresh) = target(keyed.then(list_key));
            let zone = QName::parse("rpz.test").unwrap();
            let d = decide(&targets, Some(&zone), src, &raw, NOW);
            assert_eq!(d.rcode, rcode, "case `{case}`");
            assert_eq!(d.accepted, rcode == ResponseCode::NoError, "case `{case}`");
            assert_eq!(woken(&refresh).await, d.accepted, "case `{case}`: refresh only when accepted");
            let got_error = match &d.tsig {
                Some(ReplyTsig::Unsigned(r)) => r.data.error,
                Some(ReplyTsig::Sign { error, .. }) => *error,
                None => None,
            };
            assert_eq!(got_error, tsig_error, "case `{case}`");
            // a signed NOTIFY that is accepted gets a signed reply
            if keyed && d.accepted {
                assert!(matches!(d.tsig, Some(ReplyTsig::Sign { error: None, .. })), "case `{case}`");
            }
        }
        // another zone from the primary: refused
        let (targets, refresh) = target(None);
        let d = decide(&targets, Some(&QName::parse("other.test").unwrap()), primary, &unsigned, NOW);
        assert_eq!(d.rcode, ResponseCode::Refused);
        assert!(!woken(&refresh).await);
    }

    /// The reply to a signed NOTIFY verifies as a response to it (the
    /// MAC chains over the request MAC); checked with the transfer
    /// client's verifier, which Knot's signing is tested against.
    #[test]
    fn reply_is_signed_over_the_request_mac() {
        let raw = signed(&list_key(), NOW);
        let request = crate::lists::source::verify_request(&raw, &list_key(), NOW).unwrap();
        let mut reply = Message::new(4242, MessageType::Response, OpCode::Notify);
        reply.add_query(Query::query(Name::from_ascii("rpz.test.").unwrap(), RecordType::SOA));
        let unsigned = reply.to_vec().unwrap();
        let t = ReplyTsig::Sign { key: list_key(), request: request.clone(), error: None };
        let record = t.record(Some(&unsigned), NOW).unwrap();
        assert!(crate::lists::source::axfr::reply_verifies(&unsigned, &record, &list_key(), &request.mac));
        let mut other = unsigned.clone();
        other[3] ^= 1;
        assert!(!crate::lists::source::axfr::reply_verifies(&other, &record, &list_key(), &request.mac));
    }
}
