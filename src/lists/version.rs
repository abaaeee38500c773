//! Version identities of a list: the content version of its bytes (whole,
//! or as they come in pieces from a streamed file) and the chained identity
//! of a PATCH over a version. One home, so that every channel and the
//! restart path name a version alike.

/// The version identity of a list made by applying `patch` to the version
/// whose identity is `from` (a PATCH): 16 hex digits of BLAKE3 over both.
/// An identity, not an integrity check (signatures and the journal are
/// that): computing it costs the PATCH's bytes, not the list's, so a PATCH
/// never hashes the whole list. [`super::push::Journal::content_id`] gives the
/// same value for a replayed journal, so a restart keeps the identity.
pub fn chained_version(from: &str, patch: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"qalqan-patch\0");
    h.update(from.as_bytes());
    h.update(b"\0");
    h.update(patch);
    let d = h.finalize();
    let b = d.as_bytes();
    format!("{:016x}", u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

/// A stable content id, as 16 hex digits: FNV-1a 64 over the bytes taken
/// 8 at a time (little-endian words, then the tail bytes, then the length):
/// one multiply per 8 bytes instead of one per byte, a small part of a
/// reload next to parsing it. Not collision-resistant (nor was FNV-1a); it only tells an
/// unchanged list from a changed one.
pub fn content_version(bytes: &[u8]) -> String {
    let mut h = ContentHasher::default();
    h.update(bytes);
    h.finish()
}

/// [`content_version`] of bytes that come in pieces (a file read in
/// chunks): the same value whatever the pieces.
#[derive(Debug, Clone)]
pub struct ContentHasher {
    h: u64,
    /// Bytes of a word not complete yet.
    carry: [u8; 8],
    n: usize,
    len: u64,
}

const CONTENT_PRIME: u64 = 0x0100_0000_01b3;

impl Default for ContentHasher {
    fn default() -> Self {
        Self { h: 0xcbf2_9ce4_8422_2325, carry: [0; 8], n: 0, len: 0 }
    }
}

impl ContentHasher {
    #[inline]
    fn word(&mut self, w: [u8; 8]) {
        self.h = (self.h ^ u64::from_le_bytes(w)).wrapping_mul(CONTENT_PRIME);
    }

    /// Adds the next bytes. Cost: one multiply per 8 bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.n > 0 {
            let take = (8 - self.n).min(bytes.len());
            if let (Some(dst), Some(src)) = (self.carry.get_mut(self.n..self.n + take), bytes.get(..take)) {
                dst.copy_from_slice(src);
            }
            self.n += take;
            bytes = bytes.get(take..).unwrap_or(&[]);
            if self.n < 8 {
                return;
            }
            self.word(self.carry);
            self.n = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.word(b);
        }
        let rest = words.remainder();
        if let Some(dst) = self.carry.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        self.n = rest.len();
    }

    /// Bytes added so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was added yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The version of everything added.
    pub fn finish(self) -> String {
        let mut h = self.h;
        for &b in self.carry.get(..self.n).unwrap_or(&[]) {
            h = (h ^ u64::from(b)).wrapping_mul(CONTENT_PRIME);
        }
        h = (h ^ self.len).wrapping_mul(CONTENT_PRIME);
        // fold the high bits down: the multiply leaves the low bits weak
        h ^= h >> 29;
        format!("{h:016x}")
    }
}
