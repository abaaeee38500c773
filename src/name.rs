//! Domain names in canonical form.
//!
//! Two entry points: [`QName`] for a query name on the serving path (made once
//! per query, borrowed by everything after it) and [`normalize`] for names read
//! from lists (IDN to A-labels, run at load time only).

use smallvec::SmallVec;

/// Longest name in presentation form without the trailing dot (RFC 1035 §2.3.4:
/// 255 octets on the wire = 253 characters of text).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name longer than 253 characters")]
    TooLong,
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    #[error("empty label")]
    EmptyLabel,
    #[error("character {0:?} is not allowed in a host name")]
    BadChar(char),
    #[error("IDN conversion failed")]
    Idna,
}

/// A query name in canonical form: lowercase ASCII, no trailing dot, with the
/// start offset of every label so that suffix walks never rescan.
///
/// The root name is the empty string with no labels.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct QName {
    text: Box<str>,
    starts: SmallVec<[u8; 8]>,
}

impl QName {
    /// From a name in presentation form (`"WWW.Example.com."`).
    ///
    /// Cost: O(len), one allocation (two past 8 labels). Lowercases ASCII;
    /// fails on empty labels, over-long labels or names, and on bytes outside
    /// printable ASCII (hickory escapes binary labels as `\DDD`, which this
    /// accepts as ordinary characters, so such names still match nothing but
    /// never panic). Measured by `qname_parse` in `benches/hot_path.rs`.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.is_empty() {
            return Ok(Self::root());
        }
        if trimmed.len() > MAX_NAME_LEN + 64 {
            // escaped binary labels can legitimately be longer than 253 chars
            // of text; anything past this is not a name from a valid packet.
            return Err(NameError::TooLong);
        }
        let mut bytes = trimmed.as_bytes().to_ascii_lowercase();
        let mut starts = SmallVec::new();
        let mut label_start = 0usize;
        starts.push(0u8);
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'.' {
                if i == label_start {
                    return Err(NameError::EmptyLabel);
                }
                label_start = i + 1;
                starts.push(u8::try_from(label_start).map_err(|_| NameError::TooLong)?);
            } else if !(0x21..0x7f).contains(b) {
                return Err(NameError::BadChar(char::from(*b)));
            }
        }
        if label_start == bytes.len() {
            return Err(NameError::EmptyLabel);
        }
        bytes.shrink_to_fit();
        // only printable ASCII got here, so this conversion cannot fail
        let text = String::from_utf8(bytes).map_err(|_| NameError::BadChar('?'))?;
        Ok(Self { text: text.into_boxed_str(), starts })
    }

    /// From wire labels (as hickory keeps them: a `LowerName` is already
    /// lowercase). Cost: O(len), one allocation; no text round trip.
    /// Labels with bytes outside printable ASCII or dots are rejected
    /// (no list rule can match them).
    pub fn from_labels<'a>(labels: impl Iterator<Item = &'a [u8]>) -> Result<Self, NameError> {
        Ok(NameBuf::from_labels(labels)?.as_name().to_qname())
    }

    /// The root name (`.`).
    pub fn root() -> Self {
        Self { text: Box::from(""), starts: SmallVec::new() }
    }

    /// The name as text: lowercase, no trailing dot (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Number of labels (0 for the root).
    pub fn label_count(&self) -> usize {
        self.starts.len()
    }

    /// "a.b.example" → "a.b.example", "b.example", "example".
    ///
    /// Cost: O(labels), no allocation.
    pub fn suffixes(&self) -> impl Iterator<Item = &str> + '_ {
        self.as_name().suffixes()
    }

    /// The same name, borrowed (what matching takes).
    pub fn as_name(&self) -> NameRef<'_> {
        NameRef { text: &self.text, starts: &self.starts }
    }
}

/// A normalised name, borrowed: from a [`QName`] or from a [`NameBuf`] on
/// the stack (the UDP fast path matches a query name without allocating).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameRef<'a> {
    text: &'a str,
    starts: &'a [u8],
}

impl<'a> NameRef<'a> {
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// As [`QName::suffixes`]. Cost: O(labels), no allocation.
    pub fn suffixes(&self) -> impl Iterator<Item = &'a str> + 'a {
        let text = self.text;
        self.starts.iter().map(move |&s| text.get(usize::from(s)..).unwrap_or(""))
    }

    /// Text offset of label `k` (0 = the first); for a name read from a
    /// message's first question this plus 12 is the label's wire offset.
    pub fn label_start(&self, k: usize) -> Option<u8> {
        self.starts.get(k).copied()
    }

    /// An owned copy. Cost: one allocation (two past 8 labels).
    pub fn to_qname(&self) -> QName {
        QName { text: Box::from(self.text), starts: SmallVec::from_slice(self.starts) }
    }
}

/// Whether `c` may stand in a label of a name we match: printable ASCII,
/// no dot (a branch-free test, so the loops using it vectorise).
fn label_byte_ok(c: u8) -> bool {
    (0x21..0x7f).contains(&c) & (c != b'.')
}

/// Byte positions within a 32-byte block, as bytes (so the masked check of
/// [`NameBuf::read_wire`] compares in byte lanes).
const BLOCK_POS: [u8; 32] = {
    let mut p = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        p[i] = i as u8;
        i += 1;
    }
    p
};

/// A normalised name built on the stack from wire labels (at most 255
/// bytes, so at most 127 labels): lowercase, checked like [`QName::from_labels`].
pub struct NameBuf {
    /// Whole 32-byte blocks (see [`NameBuf::read_wire`]).
    bytes: [u8; 256],
    len: u8,
    starts: [u8; 128],
    labels: u8,
}

impl Default for NameBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl NameBuf {
    /// The root name; labels are added with [`NameBuf::push_label`].
    pub fn new() -> Self {
        NameBuf { bytes: [0; 256], len: 0, starts: [0; 128], labels: 0 }
    }

    /// Cost: O(len), no allocation.
    pub fn from_labels<'a>(labels: impl Iterator<Item = &'a [u8]>) -> Result<Self, NameError> {
        let mut b = Self::new();
        for label in labels {
            b.push_label(label)?;
        }
        Ok(b)
    }

    /// Appends one wire label, lowercased. Fails (and leaves the buffer
    /// unusable) on an empty label, a byte outside printable ASCII or a dot,
    /// or a name past 253 characters. Cost: one pass over the label that
    /// checks, lowercases and copies at once (it vectorises).
    pub fn push_label(&mut self, label: &[u8]) -> Result<(), NameError> {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        let mut at = usize::from(self.len);
        if self.labels > 0 {
            *self.bytes.get_mut(at).ok_or(NameError::TooLong)? = b'.';
            at += 1;
        }
        let end = at + label.len();
        if end > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        *self.starts.get_mut(usize::from(self.labels)).ok_or(NameError::TooLong)? =
            u8::try_from(at).map_err(|_| NameError::TooLong)?;
        let dst = self.bytes.get_mut(at..end).ok_or(NameError::TooLong)?;
        // no early exit, so this form vectorises; the error path finds the byte
        let mut ok = true;
        for (d, &c) in dst.iter_mut().zip(label) {
            ok &= label_byte_ok(c);
            *d = c.to_ascii_lowercase();
        }
        if !ok {
            let bad = label.iter().copied().find(|&c| !label_byte_ok(c)).unwrap_or(b'?');
            return Err(NameError::BadChar(char::from(bad)));
        }
        self.len = u8::try_from(end).map_err(|_| NameError::TooLong)?;
        self.labels += 1;
        Ok(())
    }

    /// Reads an uncompressed wire name at the start of `wire` (labels up to
    /// the root label) into this buffer, dropping its old name; returns the
    /// wire bytes it took. `None` for a compression pointer, a label type
    /// other than a plain label, a name running past `wire`, or what
    /// [`NameBuf::push_label`] refuses (the caller leaves those to a full
    /// parser). Filling the caller's buffer, not returning one, copies
    /// nothing back.
    ///
    /// Cost: one walk over the length bytes, one copy of the name, and one
    /// pass over all of it that checks, lowercases and puts the dots (it
    /// vectorises across labels; `push_label` per label did not for short
    /// labels). No allocation.
    pub fn read_wire(&mut self, wire: &[u8]) -> Option<usize> {
        self.len = 0;
        self.labels = 0;
        // walk the length bytes; `at` is the next length byte's offset
        let mut at = 0usize;
        loop {
            let len = usize::from(*wire.get(at)?);
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            *self.starts.get_mut(usize::from(self.labels))? = u8::try_from(at).ok()?;
            self.labels += 1;
            at += 1 + len;
            if at > MAX_NAME_LEN + 1 {
                self.labels = 0;
                return None; // text (at - 1 bytes) over 253
            }
        }
        if at == 0 {
            return Some(1); // the root
        }
        // text = wire[1..at] with each later length byte turned into a dot
        let text_len = at - 1;
        self.bytes.get_mut(..text_len)?.copy_from_slice(wire.get(1..at)?);
        let labels = usize::from(self.labels);
        // length bytes (1..=63) fail `allowed`: mark them allowed first
        for k in 1..labels {
            let s = usize::from(*self.starts.get(k)?);
            *self.bytes.get_mut(s - 1)? = b'a';
        }
        // whole 32-byte blocks, bytes past the name masked out of the check:
        // a fixed-length loop is straight vector code, with no scalar tail
        // for the short names that are most queries
        // (byte lanes throughout: the position test is a u8 compare)
        let mut bad = 0u8;
        for (bi, block) in self.bytes.chunks_exact_mut(32).take(text_len.div_ceil(32)).enumerate() {
            let Ok(block) = <&mut [u8; 32]>::try_from(block) else { break };
            let rem = u8::try_from(text_len.saturating_sub(bi * 32).min(32)).unwrap_or(32);
            let mut m = 0u8;
            for (d, &j) in block.iter_mut().zip(BLOCK_POS.iter()) {
                let c = *d;
                m |= u8::from(j < rem) & u8::from(!label_byte_ok(c));
                *d = c.to_ascii_lowercase();
            }
            bad |= m;
        }
        if bad != 0 {
            self.labels = 0;
            return None;
        }
        for k in 1..labels {
            let s = usize::from(*self.starts.get(k)?);
            *self.bytes.get_mut(s - 1)? = b'.';
        }
        self.len = u8::try_from(text_len).ok()?;
        Some(at + 1)
    }

    /// Cost: a UTF-8 check of the bytes (they are printable ASCII, so it
    /// cannot fail; an impossible failure reads as the root name).
    pub fn as_name(&self) -> NameRef<'_> {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or(&[]);
        let starts = self.starts.get(..usize::from(self.labels)).unwrap_or(&[]);
        match std::str::from_utf8(bytes) {
            Ok(text) => NameRef { text, starts },
            Err(_) => NameRef { text: "", starts: &[] },
        }
    }
}

impl std::fmt::Display for QName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.text.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.text)
        }
    }
}

/// Normalises a host name read from a list: trims white space and one
/// trailing dot, lowercases, converts IDN (U-labels) to A-labels (punycode),
/// and checks RFC 1035 length limits. Underscores are accepted (they occur
/// in real lists, e.g. `_dmarc` and tracking hosts).
///
/// Cost: O(len) with one allocation for ASCII input; IDN input goes through
/// the `idna` crate (UTS 46), which is slower but only runs at list load.
pub fn normalize(raw: &str) -> Result<String, NameError> {
    let name = raw.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    match normalize_plain(name) {
        Some(done) => Ok(done),
        None => normalize_general(name),
    }
}

/// [`normalize`] of a trimmed name without its trailing dot, any input.
fn normalize_general(name: &str) -> Result<String, NameError> {
    let ascii: String = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name).map_err(|_| NameError::Idna)?
    };
    check_host(&ascii)?;
    Ok(ascii)
}

/// [`normalize`] for the names most list lines hold: ASCII letters (either
/// case), digits, `-`, `_` and dots, at most [`MAX_NAME_LEN`] bytes, no
/// label empty or over [`MAX_LABEL_LEN`]. `None` for anything else (IDN,
/// bad characters, bad lengths), which [`normalize_general`] decides and
/// explains. Cost: branch-free passes the compiler vectorises (the bytes,
/// then adjacent pairs for an empty label), a split at the dots only for a
/// name longer than one label may be, and the lowercase copy; the general
/// path's per-byte branches were a large share of a reload (`parse/*` in
/// `benches/lists.rs` measures this path). (One scalar pass that did all of
/// it at once was slower than these.)
fn normalize_plain(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else { return None };
    if bytes.len() > MAX_NAME_LEN || first == b'.' || last == b'.' {
        return None;
    }
    let bad = bytes.iter().fold(false, |bad, &c| bad | !is_plain_name_byte(c));
    let empty_label = bytes.windows(2).fold(false, |e, w| e | ((w[0] == b'.') & (w[1] == b'.')));
    if bad || empty_label {
        return None;
    }
    if bytes.len() > MAX_LABEL_LEN && bytes.split(|&c| c == b'.').any(|l| l.len() > MAX_LABEL_LEN) {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// [`normalize`] of a whole list line when it is nothing but a plain name
/// ([`normalize_plain`]'s bytes, one trailing dot allowed): no comment,
/// no space, no wildcard to look for. `None` for every other line (the
/// caller's full parse takes it, errors included). Cost: one pass.
pub fn normalize_plain_line(line: &str) -> Option<String> {
    let name = line.strip_suffix('.').unwrap_or(line);
    normalize_plain(name)
}

/// The bytes [`normalize_plain`] takes: ASCII letters, digits, `-`, `_`,
/// `.`. By arithmetic, which the compiler vectorises (a table look-up per
/// byte, as it was, it cannot).
#[inline]
fn is_plain_name_byte(c: u8) -> bool {
    let letter = (c | 0x20).wrapping_sub(b'a') < 26;
    let digit = c.wrapping_sub(b'0') < 10;
    letter | digit | (c == b'-') | (c == b'_') | (c == b'.')
}

/// Checks an ASCII, lowercased name against RFC 1035 limits and the host name
/// character set (letters, digits, `-`, `_`).
fn check_host(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    // one pass over the bytes (this runs once per list line); per label, in
    // this order: empty, too long, first bad character
    let mut len = 0usize;
    let mut bad: Option<u8> = None;
    let end_label = |len: usize, bad: Option<u8>| -> Result<(), NameError> {
        if len == 0 {
            return Err(NameError::EmptyLabel);
        }
        if len > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong);
        }
        match bad {
            Some(c) => Err(NameError::BadChar(char::from(c))),
            None => Ok(()),
        }
    };
    for &c in name.as_bytes() {
        if c == b'.' {
            end_label(len, bad)?;
            len = 0;
            continue;
        }
        len += 1;
        if bad.is_none() && !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_') {
            bad = Some(c);
        }
    }
    end_label(len, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qname_parse_table() {
        let cases: &[(&str, &str, Result<&str, NameError>)] = &[
            ("lowercases", "WWW.Example.COM.", Ok("www.example.com")),
            ("no trailing dot", "a.b", Ok("a.b")),
            ("root", ".", Ok("")),
            ("empty label", "a..b", Err(NameError::EmptyLabel)),
            ("space", "a b.c", Err(NameError::BadChar(' '))),
        ];
        for (name, input, want) in cases {
            let got = QName::parse(input);
            let got = got.as_ref().map(|q| q.as_str()).map_err(Clone::clone);
            assert_eq!(got, want.clone(), "case `{name}`");
        }
    }

    /// (case name, labels, the normalised name or the error)
    type LabelsCase<'a> = (&'a str, &'a [&'a [u8]], Result<&'a str, NameError>);

    #[test]
    fn name_buf_matches_qname() {
        let cases: &[LabelsCase<'_>] = &[
            ("plain", &[b"www", b"Example", b"COM"], Ok("www.example.com")),
            ("root", &[], Ok("")),
            ("empty label", &[b"a", b"", b"b"], Err(NameError::EmptyLabel)),
            ("dot inside", &[b"a.b", b"c"], Err(NameError::BadChar('.'))),
            ("binary", &[b"a\x00", b"c"], Err(NameError::BadChar('\0'))),
        ];
        for (label, labels, want) in cases {
            let got = NameBuf::from_labels(labels.iter().copied()).map(|b| b.as_name().as_str().to_owned());
            assert_eq!(got.as_deref().map_err(Clone::clone), *want, "case `{label}`");
            let q = QName::from_labels(labels.iter().copied()).map(|q| q.as_str().to_owned());
            assert_eq!(q.as_deref().map_err(Clone::clone), *want, "case `{label}` (QName)");
        }
        let long: Vec<&[u8]> = std::iter::repeat_n(&b"abcdefghi"[..], 26).collect(); // 26 * 10 - 1 = 259
        assert_eq!(NameBuf::from_labels(long.into_iter()).err(), Some(NameError::TooLong));
        let b = NameBuf::from_labels([&b"a"[..], b"b", b"c"].into_iter()).unwrap();
        assert_eq!(b.as_name().suffixes().collect::<Vec<_>>(), ["a.b.c", "b.c", "c"]);
        assert_eq!(b.as_name().to_qname(), QName::parse("a.b.c").unwrap());
    }

    /// [`NameBuf::read_wire`] into a fresh buffer: the name and the wire bytes it took.
    fn from_wire(wire: &[u8]) -> Option<(NameBuf, usize)> {
        let mut b = NameBuf::new();
        let used = b.read_wire(wire)?;
        Some((b, used))
    }

    /// `read_wire` agrees with `from_labels` (text, labels, offsets, wire
    /// length) on every name, and refuses what it must: seeded random wire
    /// names of random labels and bytes, plus the length edges.
    #[test]
    fn from_wire_matches_from_labels() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let alphabet = b"abcXYZ019-_.* \x00\x7f\xc3";
        for _ in 0..20_000 {
            let mut labels: Vec<Vec<u8>> = Vec::new();
            for _ in 0..rand(6) {
                let max = if rand(20) == 0 { 63 } else { 9 };
                let mut l = Vec::new();
                for _ in 0..1 + rand(max) {
                    l.push(alphabet[rand(alphabet.len() as u64) as usize]);
                }
                labels.push(l);
            }
            let mut wire: Vec<u8> = Vec::new();
            for l in &labels {
                wire.push(l.len() as u8);
                wire.extend_from_slice(l);
            }
            wire.extend_from_slice(&[0, 0, 1]); // root label, then what follows the name
            let want = NameBuf::from_labels(labels.iter().map(Vec::as_slice)).ok();
            let got = from_wire(&wire);
            match (&want, &got) {
                (Some(w), Some((g, used))) => {
                    assert_eq!(g.as_name(), w.as_name(), "{wire:?}");
                    assert_eq!(*used, wire.len() - 2);
                    for k in 0..labels.len() {
                        assert_eq!(g.as_name().label_start(k), w.as_name().label_start(k));
                    }
                }
                (None, None) => {}
                _ => panic!("from_wire {:?} vs from_labels {:?} for {wire:?}", got.map(|g| g.0.as_name().as_str().to_owned()), want.is_some()),
            }
        }
        // 253 characters are a name, 254 are not; pointers and truncation are refused
        let wire_of = |n: usize| {
            let mut w = Vec::new();
            let mut left = n;
            while left > 0 {
                let l = left.min(63);
                w.push(l as u8);
                w.extend(std::iter::repeat_n(b'a', l));
                left = left.saturating_sub(l + 1);
            }
            w.push(0);
            w
        };
        assert_eq!(from_wire(&wire_of(253)).map(|(b, _)| b.as_name().as_str().len()), Some(253));
        assert!(from_wire(&wire_of(255)).is_none());
        assert!(from_wire(b"\xc0\x0c").is_none());
        assert!(from_wire(b"\x03ab").is_none());
        assert!(from_wire(b"\x03abc").is_none());
        assert_eq!(from_wire(b"\x00").map(|(b, used)| (b.as_name().as_str().len(), used)), Some((0, 1)));
    }

    #[test]
    fn suffixes_walk_every_label() {
        let q = QName::parse("a.b.example").unwrap();
        let got: Vec<&str> = q.suffixes().collect();
        assert_eq!(got, vec!["a.b.example", "b.example", "example"]);
        assert_eq!(QName::root().suffixes().count(), 0);
    }

    /// The bytes [`normalize_plain`] takes, spelled out: the reference for
    /// [`is_plain_name_byte`].
    static PLAIN_NAME_BYTE: [bool; 256] = {
        let mut t = [false; 256];
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            t[c] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
            c += 1;
        }
        t
    };

    #[test]
    fn the_plain_byte_test_agrees_with_its_table() {
        for c in 0..=255u8 {
            assert_eq!(is_plain_name_byte(c), PLAIN_NAME_BYTE[usize::from(c)], "byte {c:#04x}");
        }
    }

    #[test]
    fn the_plain_fast_path_agrees_with_the_general_one() {
        let long_label = format!("{}.example", "a".repeat(63));
        let too_long_label = format!("{}.example", "a".repeat(64));
        let long_name = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        let too_long_name = format!("{long_name}x");
        let inputs = [
            "example.com", "Ads.Example.COM", "_dmarc.example", "x-1.y_2.z", "a", "a..b", ".a", "a.",
            "a/b", "a b", "ex*ample.com", "пример.рф", "a\u{0}b", "-lead.example", "1.2.3.4",
            &long_label, &too_long_label, &long_name, &too_long_name,
        ];
        for input in inputs {
            let general = normalize_general(input);
            match normalize_plain(input) {
                Some(plain) => assert_eq!(Ok(plain), general, "{input:?}"),
                None => assert!(general.is_err() || !input.bytes().all(|c| PLAIN_NAME_BYTE[usize::from(c)]), "{input:?} left to the general path though plain"),
            }
        }
        assert_eq!(long_name.len(), MAX_NAME_LEN);
        assert!(normalize_plain(&long_name).is_some() && normalize_plain(&too_long_name).is_none());
        // a whole plain line: what `normalize` makes of it, or the full parse's
        for input in inputs.iter().copied().chain([".", "a.b.", "a.b..", "", " a.b", "a.b\r", "*.a.b", "a.b#c"]) {
            match normalize_plain_line(input) {
                Some(name) => assert_eq!(Ok(name), normalize(input), "{input:?}"),
                None => assert!(
                    normalize(input).is_err() || input.bytes().any(|c| !PLAIN_NAME_BYTE[usize::from(c)]),
                    "{input:?} left to the full parse though a plain name"
                ),
            }
        }
        assert_eq!(normalize_plain_line("Ads.Example.COM.").as_deref(), Some("ads.example.com"));
        assert_eq!(normalize_plain_line("a..b"), None);
        assert_eq!(normalize_plain_line("a.b."), Some("a.b".into()));
    }

    #[test]
    fn normalize_table() {
        let cases: &[(&str, &str, Result<&str, NameError>)] = &[
            ("plain", "example.com", Ok("example.com")),
            ("case and dot", "Ads.Example.COM.", Ok("ads.example.com")),
            ("padding", "  ads.example  ", Ok("ads.example")),
            ("underscore", "_dmarc.example", Ok("_dmarc.example")),
            ("cyrillic idn", "пример.рф", Ok("xn--e1afmkfd.xn--p1ai")),
            ("uppercase idn", "ПРИМЕР.РФ", Ok("xn--e1afmkfd.xn--p1ai")),
            ("empty", "", Err(NameError::Empty)),
            ("empty label", "a..b", Err(NameError::EmptyLabel)),
            ("slash", "a/b", Err(NameError::BadChar('/'))),
            ("long label", &"a".repeat(64), Err(NameError::LabelTooLong)),
        ];
        for (name, input, want) in cases {
            let got = normalize(input);
            assert_eq!(got.as_deref().map_err(Clone::clone), want.clone(), "case `{name}`");
        }
    }
}
