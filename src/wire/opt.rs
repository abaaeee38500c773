//! The OPT pseudo-record (RFC 6891) as we write it: root owner, version 0,
//! our UDP payload size, the DO bit, and at most one Extended DNS Error
//! option (RFC 8914). Every OPT qalqan writes as bytes comes from here (the
//! hickory path's comes from `server::respond::reply_edns`, with the same
//! rules).

use super::rtype;

/// RFC 8914 option code.
pub const EDE_OPTION: u16 = 15;
/// RFC 8914 INFO-CODE 18, Prohibited.
pub const EDE_PROHIBITED: u16 = 18;
/// RFC 8914 §4.4: Stale Answer (served under RFC 8767).
pub const EDE_STALE: u16 = 3;

/// Appends an OPT record: `payload`, DO as given, and the EDE option
/// `(INFO-CODE, EXTRA-TEXT pieces)` if any (pieces concatenated; a text
/// too long for one option is left out, the code kept). The caller counts
/// it in ARCOUNT. Cost: no allocation beyond `out`'s growth.
pub fn write(out: &mut Vec<u8>, payload: u16, dnssec_ok: bool, ede: Option<(u16, &[&str])>) {
    let [t0, t1] = rtype::OPT.to_be_bytes();
    let [p0, p1] = payload.to_be_bytes();
    let do_bit = if dnssec_ok { 0x80 } else { 0 };
    // root owner, OPT, class = payload, extended rcode 0, version 0, flags
    let fixed = [0, t0, t1, p0, p1, 0, 0, do_bit, 0];
    match ede {
        Some((code, parts)) => {
            let text_len: usize = parts.iter().map(|p| p.len()).sum();
            let (len, keep) = match u16::try_from(2 + text_len) {
                Ok(l) if l < u16::MAX - 4 => (l, true),
                _ => (2, false),
            };
            let [d0, d1] = (len + 4).to_be_bytes(); // RDLENGTH
            let [e0, e1] = EDE_OPTION.to_be_bytes();
            let [l0, l1] = len.to_be_bytes();
            let [c0, c1] = code.to_be_bytes();
            out.extend_from_slice(&fixed);
            out.extend_from_slice(&[d0, d1, e0, e1, l0, l1, c0, c1]);
            if keep {
                for p in parts {
                    out.extend_from_slice(p.as_bytes());
                }
            }
        }
        None => {
            out.extend_from_slice(&fixed);
            out.extend_from_slice(&[0, 0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_opt_decodes_with_its_ede() {
        use hickory_proto::op::{Message, MessageType, OpCode};
        let mut m = Message::new(1, MessageType::Response, OpCode::Query).to_vec().unwrap();
        m[11] = 1; // ARCOUNT
        write(&mut m, 1232, true, Some((18, &["blocked by list ", "reg"])));
        let got = Message::from_vec(&m).unwrap();
        let e = got.edns.unwrap();
        assert_eq!((e.max_payload(), e.flags().dnssec_ok, e.version()), (1232, true, 0));
        let opt = e.options().as_ref().iter().find(|(c, _)| u16::from(*c) == EDE_OPTION).map(|(_, o)| o.clone());
        let Some(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(_, data)) = opt else { panic!("{opt:?}") };
        assert_eq!(&data[..2], &18u16.to_be_bytes());
        assert_eq!(&data[2..], b"blocked by list reg");
    }
}
