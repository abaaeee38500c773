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
pub fn write(out: &mut Vec<u8>, owner_offset: u16, ttl: u32) {
    super::put16(out, 0xc000 | owner_offset);
    super::put16(out, super::rtype::SOA);
    super::put16(out, 1); // IN
    out.extend_from_slice(&ttl.to_be_bytes());
    super::put16(out, (NAMES_WIRE.len() + 20) as u16);
    out.extend_from_slice(NAMES_WIRE);
    for t in TIMERS {
        out.extend_from_slice(&t.to_be_bytes());
    }
    out.extend_from_slice(&ttl.to_be_bytes());
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
