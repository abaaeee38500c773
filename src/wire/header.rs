//! The 12-byte message header (RFC 1035 §4.1.1): flag bits, the fields
//! packed into the flags word, and a writer.

use super::u16_at;

/// Header length.
pub const LEN: usize = 12;

/// Response.
pub const QR: u16 = 0x8000;
/// Authoritative answer.
pub const AA: u16 = 0x0400;
/// Truncated.
pub const TC: u16 = 0x0200;
/// Recursion desired.
pub const RD: u16 = 0x0100;
/// Recursion available.
pub const RA: u16 = 0x0080;
/// Authentic data (RFC 4035).
pub const AD: u16 = 0x0020;
/// Checking disabled (RFC 4035).
pub const CD: u16 = 0x0010;

/// Opcodes we tell apart.
pub const OPCODE_QUERY: u16 = 0;
pub const OPCODE_NOTIFY: u16 = 4;

/// The opcode in a flags word.
pub fn opcode(flags: u16) -> u16 {
    (flags >> 11) & 0xf
}

/// The (4-bit) rcode in a flags word.
pub fn rcode(flags: u16) -> u8 {
    (flags & 0x0f) as u8
}

/// The flags word of a message, if it has a header's first 4 bytes.
pub fn flags(p: &[u8]) -> Option<u16> {
    u16_at(p, 2)
}

/// Flags of our reply to a query: QR and RA set, `rcode`, RD and CD echoed
/// from the query, AD when the answer is authentic and the client may see it.
pub fn reply_flags(rcode: u8, rd: bool, cd: bool, ad: bool) -> u16 {
    let mut f = QR | RA | u16::from(rcode & 0x0f);
    if rd {
        f |= RD;
    }
    if cd {
        f |= CD;
    }
    if ad {
        f |= AD;
    }
    f
}

/// Writes a header: ID, flags and the four section counts, as one
/// 12-byte block (one capacity check, one copy).
pub fn write(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    let [i0, i1] = id.to_be_bytes();
    let [f0, f1] = flags.to_be_bytes();
    let [[q0, q1], [a0, a1], [n0, n1], [r0, r1]] = counts.map(u16::to_be_bytes);
    out.extend_from_slice(&[i0, i1, f0, f1, q0, q1, a0, a1, n0, n1, r0, r1]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_agree_with_hickory() {
        use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
        let mut out = Vec::new();
        write(&mut out, 0x1234, reply_flags(3, true, true, true), [0, 0, 0, 0]);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.op_code, OpCode::Query);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        assert!(m.metadata.checking_disabled && m.metadata.authentic_data);
        assert!(!m.metadata.truncation && !m.metadata.authoritative);
        assert_eq!(opcode(0x2000), 4);
        assert_eq!(rcode(0x8185), 5);
    }
}
