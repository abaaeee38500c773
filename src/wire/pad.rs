//! EDNS(0) Padding (RFC 7830) of encrypted replies with the Block-Length
//! Padding strategy of RFC 8467 §4.1: a reply is padded to a multiple of
//! 468 bytes, so its size says little about the name asked for.

use super::name::skip_name;
use super::u16_at;

/// The block size RFC 8467 recommends for responses.
pub const RESPONSE_BLOCK: usize = 468;

/// EDNS option code of Padding (RFC 7830).
const PADDING: u16 = 12;

/// Appends a Padding option to the OPT record of `msg` so that its length
/// becomes a multiple of `block`. Returns whether it did: a message without
/// an OPT record (the client sent no EDNS), with the OPT record not last
/// (inserting bytes would move what a later record may point at), already
/// padded, unparsable, or that would exceed 65535 bytes is left unchanged.
///
/// Cost: one walk over the message's record headers; at most one
/// reallocation of `msg`. Never panics on malformed input.
pub fn pad(msg: &mut Vec<u8>, block: usize) -> bool {
    let Some(opt) = last_opt(msg) else { return false };
    if block == 0 || has_padding(msg, opt.rdata) {
        return false;
    }
    let with_header = msg.len() + 4;
    let fill = (block - with_header % block) % block;
    let new_len = with_header + fill;
    let Some(rdlen) = u16_at(msg, opt.rdata - 2).and_then(|l| l.checked_add(u16::try_from(4 + fill).ok()?)) else {
        return false;
    };
    if new_len > usize::from(u16::MAX) {
        return false;
    }
    msg.reserve(4 + fill);
    msg.extend_from_slice(&PADDING.to_be_bytes());
    msg.extend_from_slice(&u16::try_from(fill).unwrap_or(0).to_be_bytes());
    msg.resize(new_len, 0);
    if let Some(slot) = msg.get_mut(opt.rdata - 2..opt.rdata) {
        slot.copy_from_slice(&rdlen.to_be_bytes());
    }
    true
}

/// Where the OPT record's RDATA starts, when the OPT record is the
/// message's last record and its RDATA ends the message.
struct Opt {
    rdata: usize,
}

fn last_opt(p: &[u8]) -> Option<Opt> {
    let qd = u16_at(p, 4)?;
    let records = u32::from(u16_at(p, 6)?) + u32::from(u16_at(p, 8)?) + u32::from(u16_at(p, 10)?);
    let mut i = 12usize;
    for _ in 0..qd {
        i = skip_name(p, i)?.checked_add(4)?;
    }
    let mut last = None;
    for _ in 0..records {
        let start = skip_name(p, i)?;
        let rtype = u16_at(p, start)?;
        let rdlen = usize::from(u16_at(p, start + 8)?);
        let rdata = start + 10;
        i = rdata.checked_add(rdlen)?;
        if i > p.len() {
            return None;
        }
        last = (rtype == 41).then_some(Opt { rdata });
    }
    (i == p.len()).then_some(last).flatten()
}

fn has_padding(p: &[u8], rdata: usize) -> bool {
    let mut i = rdata;
    while let (Some(code), Some(len)) = (u16_at(p, i), u16_at(p, i + 2)) {
        if code == PADDING {
            return true;
        }
        i += 4 + usize::from(len);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    fn msg(edns: bool) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(Name::from_str("example.com.").unwrap(), RecordType::A));
        if edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn cases() {
        let with = msg(true);
        let without = msg(false);
        let cases: &[(&str, Vec<u8>, bool)] = &[
            ("EDNS reply", with.clone(), true),
            ("no OPT record", without.clone(), false),
            ("truncated", with[..with.len() - 3].to_vec(), false),
            ("header only", with[..12].to_vec(), false),
            ("empty", Vec::new(), false),
        ];
        for (name, input, want) in cases {
            let mut m = input.clone();
            assert_eq!(pad(&mut m, RESPONSE_BLOCK), *want, "case `{name}`");
            if *want {
                assert_eq!(m.len() % RESPONSE_BLOCK, 0, "case `{name}`");
                let parsed = Message::from_vec(&m).unwrap();
                let opts = parsed.edns.unwrap();
                assert!(opts.options().as_ref().iter().any(|(c, _)| u16::from(*c) == 12), "case `{name}`");
                // a second pass leaves it alone
                assert!(!pad(&mut m, RESPONSE_BLOCK), "case `{name}`");
            } else {
                assert_eq!(&m, input, "case `{name}`");
            }
        }
    }
}
