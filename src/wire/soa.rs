//! The SOA of blocked negative answers (RFC 2308 §3: the client caches the
//! NXDOMAIN/NODATA for its MINIMUM): one template, written as bytes by the
//! fast path and as a hickory record by the handler.

/// MNAME and RNAME.
pub const MNAME: &str = "qalqan.invalid.";
pub const RNAME: &str = "hostmaster.qalqan.invalid.";
/// MNAME then RNAME, uncompressed wire form.
pub const NAMES_WIRE: &[u8] = b"\x06qalqan\x07invalid\x00\x0ahostmaster\x06qalqan\x07invalid\x00";
/// SERIAL, REFRESH, RETRY, EXPIRE (MINIMUM is the sinkhole TTL).
pub const TIMERS: [u32; 4] = [1, 3600, 600, 86_400];

/// Appends the record: owner as a compression pointer to `owner_offset`,
/// type SOA, class IN, `ttl`, RDATA = the template with MINIMUM = `ttl`.
/// Cost: three block copies (fixed part, names, timers).
pub fn write(out: &mut Vec<u8>, owner_offset: u16, ttl: u32) {
    const RDLEN: u16 = (NAMES_WIRE.len() + 20) as u16;
    const TIMERS_WIRE: [u8; 16] = {
        let mut b = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            let t = TIMERS[i].to_be_bytes();
            b[4 * i] = t[0];
            b[4 * i + 1] = t[1];
            b[4 * i + 2] = t[2];
            b[4 * i + 3] = t[3];
            i += 1;
        }
        b
    };
    let [o0, o1] = (0xc000 | owner_offset).to_be_bytes();
    let [s0, s1] = super::rtype::SOA.to_be_bytes();
    let [t0, t1, t2, t3] = ttl.to_be_bytes();
    let [r0, r1] = RDLEN.to_be_bytes();
    out.extend_from_slice(&[o0, o1, s0, s1, 0, 1, t0, t1, t2, t3, r0, r1]);
    out.extend_from_slice(NAMES_WIRE);
    out.extend_from_slice(&TIMERS_WIRE);
    out.extend_from_slice(&[t0, t1, t2, t3]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_template_is_the_text_template() {
        use hickory_proto::rr::Name;
        let mut wire = Vec::new();
        for n in [MNAME, RNAME] {
            for l in Name::from_ascii(n).unwrap().iter() {
                wire.push(l.len() as u8);
                wire.extend_from_slice(l);
            }
            wire.push(0);
        }
        assert_eq!(wire, NAMES_WIRE);
    }
}
