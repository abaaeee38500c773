//! Names on the wire: where one ends, its labels (following compression
//! pointers safely), and whether a question uses a pointer. (The query
//! name's normalisation, which reads the same bytes, is `name::NameBuf::read_wire`.)

use smallvec::SmallVec;

use super::header;

/// End of the name starting at `i` (labels, optionally ending in a pointer).
/// Checks label lengths and that the name stays inside `p`; does not follow
/// pointers. Cost: O(name length).
pub fn skip_name(p: &[u8], mut i: usize) -> Option<usize> {
    let mut total = 0usize;
    loop {
        let len = *p.get(i)?;
        match len & 0xc0 {
            0 if len == 0 => return Some(i + 1),
            0 => {
                total += 1 + usize::from(len);
                if total > 255 {
                    return None;
                }
                i += 1 + usize::from(len);
            }
            0xc0 => {
                p.get(i + 1)?;
                return Some(i + 2);
            }
            _ => return None,
        }
    }
}

/// The labels of the (possibly compressed) name at `i`, following at most
/// 32 pointers, each strictly backwards. `None` on loops, bad labels or a
/// name longer than 255 bytes. Cost: O(name length), no allocation up to
/// 16 labels.
pub fn name_labels(p: &[u8], mut i: usize) -> Option<SmallVec<[&[u8]; 16]>> {
    let mut labels = SmallVec::new();
    let mut hops = 0;
    let mut total = 0usize;
    loop {
        let len = *p.get(i)?;
        match len & 0xc0 {
            0 if len == 0 => return Some(labels),
            0 => {
                let len = usize::from(len);
                labels.push(p.get(i + 1..i + 1 + len)?);
                total += 1 + len;
                if total > 255 {
                    return None;
                }
                i += 1 + len;
            }
            0xc0 => {
                let target = (usize::from(len & 0x3f) << 8) | usize::from(*p.get(i + 1)?);
                hops += 1;
                if target >= i || hops > 32 {
                    return None;
                }
                i = target;
            }
            _ => return None,
        }
    }
}

/// Whether a question name of a raw message uses a compression pointer
/// into the header (or past the end). In a query that is always invalid
/// (there is no earlier name to point to), and hickory echoes question
/// bytes verbatim, so such a pointer would point into our reply's header:
/// the handler answers FORMERR without a question. A pointer to an earlier
/// question name (offset ≥ 12) is echoed safely. Cost: O(question section).
pub fn question_has_pointer(raw: &[u8]) -> bool {
    let qdcount = super::u16_at(raw, 4).unwrap_or(0);
    let mut i = header::LEN;
    for _ in 0..qdcount {
        loop {
            let Some(&len) = raw.get(i) else { return false };
            if len == 0 {
                i += 1;
                break;
            }
            if len & 0xc0 != 0 {
                let target = raw.get(i + 1).map(|&lo| (usize::from(len & 0x3f) << 8) | usize::from(lo));
                if target.is_none_or(|t| t < header::LEN) {
                    return true;
                }
                i += 2;
                break;
            }
            i += 1 + usize::from(len);
        }
        i += 4; // type, class
    }
    false
}
