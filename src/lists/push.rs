//! Pushed lists: the signed message, signature checks, PATCH application and
//! the journal that lets a pushed list be re-verified when it is read back
//! from the state directory. No I/O here.
//!
//! # The signed message (`qalqan-list-v2`)
//!
//! An Ed25519 signature (RFC 8032, pure Ed25519, no pre-hash) by one of
//! `regulator_keys`, sent base64 in `X-Qalqan-Signature`, over these bytes:
//!
//! ```text
//! qalqan-list-v2\n{method}\n{name}\n{version}\n{base}\n{timestamp}\n{body}
//! ```
//!
//! - `method`: `PUT`, `PATCH` or `POST` (upper case);
//! - `name`: the list name as in the URL;
//! - `version`: `X-Qalqan-Version` in decimal (PUT, PATCH); for
//!   `POST /v1/lists/{name}/reload?force=1` the content version of the list
//!   in force (16 hex digits, as `GET /v1/lists` shows it, `-` when the list
//!   has none yet);
//! - `base`: for PATCH, `X-Qalqan-Base-Version` (the version the patch
//!   applies to) in decimal; `-` for PUT and POST;
//! - `timestamp`: `X-Qalqan-Timestamp`, UNIX seconds in decimal;
//! - `body`: the request body as sent (empty for POST).
//!
//! Each line ends with one `\n`; the body follows the last one unchanged.
//! A signature over the old `qalqan-list-v1\n{name}\n{version}\n{body}` is
//! refused with a message saying so.

use base64::Engine as _;

/// The tag that opens every v2 signed message.
pub const SIGNED_TAG: &str = "qalqan-list-v2";

/// The HTTP method a signature is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PushMethod {
    Put,
    Patch,
    Post,
}

impl PushMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PushMethod::Put => "PUT",
            PushMethod::Patch => "PATCH",
            PushMethod::Post => "POST",
        }
    }
}

/// The v2 signed message (see the module docs).
pub fn signed_message(method: PushMethod, name: &str, version: &str, base: Option<u64>, timestamp: u64, body: &[u8]) -> Vec<u8> {
    let base = base.map_or_else(|| "-".to_owned(), |b| b.to_string());
    let mut m = format!("{SIGNED_TAG}\n{}\n{name}\n{version}\n{base}\n{timestamp}\n", method.as_str()).into_bytes();
    m.extend_from_slice(body);
    m
}

/// The old v1 message, only to tell a client that it signs the old format.
pub fn signed_message_v1(name: &str, version: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("qalqan-list-v1\n{name}\n{version}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

/// Decodes a signature sent as base64 (standard alphabet, padding optional)
/// or as the 64 raw bytes of a `.sig` file.
pub fn decode_signature(sig: &[u8]) -> Option<ed25519_dalek::Signature> {
    let from_text = std::str::from_utf8(sig).ok().and_then(|t| {
        let t = t.trim();
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
            .ok()
    });
    match from_text {
        Some(bytes) if bytes.len() == 64 => ed25519_dalek::Signature::from_slice(&bytes).ok(),
        _ => ed25519_dalek::Signature::from_slice(sig).ok(),
    }
}

/// Whether `sig` (see [`decode_signature`]) signs `message` under one of `keys`
/// (strict verification: no small-order keys, canonical `S`).
pub fn verify(keys: &[[u8; 32]], message: &[u8], sig: &[u8]) -> bool {
    let Some(sig) = decode_signature(sig) else { return false };
    keys.iter()
        .any(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_ok_and(|vk| vk.verify_strict(message, &sig).is_ok()))
}

/// Applies `+LINE` / `-LINE` lines to `base` (other lines: error).
pub fn apply_patch(base: &[u8], patch: &[u8]) -> Result<Vec<u8>, String> {
    let base = std::str::from_utf8(base).map_err(|_| "the base version is not UTF-8; PUT the full list".to_owned())?;
    let patch = std::str::from_utf8(patch).map_err(|_| "the patch is not UTF-8".to_owned())?;
    let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
    for (n, l) in patch.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        if let Some(add) = l.strip_prefix('+') {
            lines.push(add.to_owned());
        } else if let Some(del) = l.strip_prefix('-') {
            let before = lines.len();
            lines.retain(|x| x.trim() != del.trim());
            if lines.len() == before {
                tracing::debug!(line = n + 1, "patch removes a line that is not there");
            }
        } else {
            return Err(format!("patch line {}: must start with + or -", n + 1));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out.into_bytes())
}

/// One accepted push, as persisted: enough to check its signature again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushEntry {
    pub method: PushMethod,
    pub version: u64,
    /// PATCH: the version it applied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Base64 signature as sent (None: an unsigned push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The body as sent, base64 (shared: a PUT's body is the list in force).
    #[serde(with = "b64")]
    pub body: std::sync::Arc<Vec<u8>>,
}

mod b64 {
    use base64::Engine as _;
    use std::sync::Arc;
    pub fn serialize<S: serde::Serializer>(v: &Arc<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v.as_slice()))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<Vec<u8>>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map(Arc::new).map_err(serde::de::Error::custom)
    }
}

impl PushEntry {
    /// The message its signature covers.
    pub fn message(&self, name: &str) -> Vec<u8> {
        signed_message(self.method, name, &self.version.to_string(), self.base_version, self.timestamp.unwrap_or(0), &self.body)
    }
}

/// The pushes that make up the version in force of a push list: the last
/// PUT, then every PATCH since (oldest first). Persisted as
/// `NAME.push.json` in the state directory; a PUT starts a new journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    pub entries: Vec<PushEntry>,
}

/// The signature rules a push (or a persisted push) must meet.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    pub keys: Vec<[u8; 32]>,
    /// Refuse unsigned pushes.
    pub required: bool,
}

impl SignaturePolicy {
    /// Checks `entry`'s signature: a present one must verify, an absent one
    /// is accepted only when signatures are not required.
    pub fn check(&self, name: &str, entry: &PushEntry) -> Result<(), String> {
        match &entry.signature {
            Some(sig) if verify(&self.keys, &entry.message(name), sig.as_bytes()) => Ok(()),
            Some(_) => Err(format!("version {}: the signature does not verify against any regulator key", entry.version)),
            None if self.required => Err(format!("version {}: unsigned, and signatures are required", entry.version)),
            None => Ok(()),
        }
    }
}

impl Journal {
    /// The version of the last push.
    pub fn version(&self) -> Option<u64> {
        self.entries.last().map(|e| e.version)
    }

    /// The version identity of the list this journal makes: the content
    /// version of the PUT's body, then [`super::version::chained_version`] for each
    /// PATCH (a journal that opens with a PATCH starts from the empty
    /// list). What `Lists::offer_push` computed when each push came.
    pub fn content_id(&self) -> String {
        let (mut id, patches) = match self.entries.split_first() {
            Some((put, rest)) if put.method == PushMethod::Put => (super::version::content_version(&put.body), rest),
            _ => (super::version::content_version(b""), &self.entries[..]),
        };
        for e in patches {
            id = super::version::chained_version(&id, &e.body);
        }
        id
    }

    /// Replays the journal of list `name`: checks that it opens with a PUT,
    /// that versions grow and each PATCH names the version before it as its
    /// base, and every signature against `sigs`; returns the list's bytes
    /// (those of [`apply_patch`] applied PATCH by PATCH).
    /// Cost: O(bytes + patches) when no body holds a CR ([`Lines`]: one
    /// pass over the base, a look-up per patch line); otherwise
    /// O(bytes × patches), PATCH by PATCH.
    pub fn replay(&self, name: &str, sigs: &SignaturePolicy) -> Result<Vec<u8>, String> {
        let mut prev: Option<u64> = None;
        for e in &self.entries {
            sigs.check(name, e)?;
            if prev.is_some_and(|p| e.version <= p) {
                return Err(format!("version {} follows version {}: versions must grow", e.version, prev.unwrap_or(0)));
            }
            match e.method {
                PushMethod::Put if prev.is_none() => {}
                PushMethod::Patch if e.base_version == prev => {}
                m => return Err(format!("version {}: a {} cannot follow version {prev:?} here", e.version, m.as_str())),
            }
            prev = Some(e.version);
        }
        let (first, patches) = self.entries.split_first().ok_or_else(|| "empty journal".to_owned())?;
        let base: &[u8] = if first.method == PushMethod::Put { &first.body } else { b"" };
        let patches: Vec<&[u8]> =
            if first.method == PushMethod::Put { patches.iter().map(|e| e.body.as_slice()).collect() } else { self.entries.iter().map(|e| e.body.as_slice()).collect() };
        if first.method == PushMethod::Put && patches.is_empty() {
            return Ok(base.to_vec());
        }
        let has_cr = std::iter::once(base).chain(patches.iter().copied()).any(|b| memchr::memchr(b'\r', b).is_some());
        if has_cr {
            let mut body = base.to_vec();
            for p in patches {
                body = apply_patch(&body, p)?;
            }
            return Ok(body);
        }
        let mut lines = Lines::new(base)?;
        for p in patches {
            lines.apply(p)?;
        }
        Ok(lines.finish())
    }
}

/// A list's lines under PATCHes, with an index by trimmed text, so that a
/// `-LINE` costs its matches, not a pass over the list. For bodies without
/// a CR its bytes are exactly those of [`apply_patch`] applied one PATCH
/// after another (an emptied list reads back as one blank line, as
/// `"\n".lines()` does).
struct Lines<'a> {
    lines: Vec<Option<&'a str>>,
    index: std::collections::HashMap<&'a str, Vec<usize>, foldhash::fast::RandomState>,
    live: usize,
}

impl<'a> Lines<'a> {
    fn new(base: &'a [u8]) -> Result<Self, String> {
        let base = std::str::from_utf8(base).map_err(|_| "the base version is not UTF-8; PUT the full list".to_owned())?;
        let mut me = Self { lines: Vec::new(), index: std::collections::HashMap::default(), live: 0 };
        for l in base.lines() {
            me.push(l);
        }
        Ok(me)
    }

    fn push(&mut self, l: &'a str) {
        self.index.entry(l.trim()).or_default().push(self.lines.len());
        self.lines.push(Some(l));
        self.live += 1;
    }

    fn apply(&mut self, patch: &'a [u8]) -> Result<(), String> {
        let patch = std::str::from_utf8(patch).map_err(|_| "the patch is not UTF-8".to_owned())?;
        for (n, l) in patch.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            if let Some(add) = l.strip_prefix('+') {
                self.push(add);
            } else if let Some(del) = l.strip_prefix('-') {
                for k in self.index.remove(del.trim()).unwrap_or_default() {
                    if let Some(slot @ Some(_)) = self.lines.get_mut(k) {
                        *slot = None;
                        self.live -= 1;
                    }
                }
            } else {
                return Err(format!("patch line {}: must start with + or -", n + 1));
            }
        }
        if self.live == 0 {
            // apply_patch writes an empty list as "\n", which reads back as one blank line
            self.push("");
        }
        Ok(())
    }

    fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in self.lines.into_iter().flatten() {
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
        if out.is_empty() {
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_adds_and_removes() {
        let got = apply_patch(b"a.test\nb.test\n", b"+c.test\n-a.test\n").unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), "b.test\nc.test\n");
        assert!(apply_patch(b"", b"x.test\n").is_err());
    }

    #[test]
    fn signed_message_v2_layout() {
        let m = signed_message(PushMethod::Patch, "reg", "7", Some(6), 1_700_000_000, b"+a.test\n");
        assert_eq!(m, b"qalqan-list-v2\nPATCH\nreg\n7\n6\n1700000000\n+a.test\n");
        let m = signed_message(PushMethod::Put, "reg", "7", None, 1, b"");
        assert_eq!(m, b"qalqan-list-v2\nPUT\nreg\n7\n-\n1\n");
    }

    #[test]
    fn journal_replay_checks_the_chain() {
        let none = SignaturePolicy::default();
        let put = PushEntry { method: PushMethod::Put, version: 3, base_version: None, timestamp: None, signature: None, body: b"a.test\n".to_vec().into() };
        let patch = PushEntry { method: PushMethod::Patch, version: 4, base_version: Some(3), body: b"+b.test\n".to_vec().into(), ..put.clone() };
        let j = Journal { entries: vec![put.clone(), patch.clone()] };
        assert_eq!(j.replay("l", &none).unwrap(), b"a.test\nb.test\n");
        let wrong_base = PushEntry { base_version: Some(2), ..patch.clone() };
        assert!(Journal { entries: vec![put.clone(), wrong_base] }.replay("l", &none).is_err());
        let older = PushEntry { version: 2, base_version: Some(3), ..patch };
        assert!(Journal { entries: vec![put.clone(), older] }.replay("l", &none).is_err());
        // the indexed replay gives the bytes of apply_patch, PATCH after PATCH
        let bodies: &[&[u8]] = &[b"a.test\n b.test\n\na.test\nc.test", b"", b"\n", b"a.test\r\nb.test\r\n"];
        let patches: &[&[u8]] = &[b"-a.test\n+d.test\n", b"-b.test\n-c.test\n-d.test\n-\n", b"+e.test\n", b"-e.test\n+e.test\n+ f.test \n", b"-f.test\n"];
        for b in bodies {
            let mut entries = vec![PushEntry { body: b.to_vec().into(), ..put.clone() }];
            let mut want = b.to_vec();
            for (k, p) in patches.iter().enumerate() {
                let v = 4 + k as u64;
                entries.push(PushEntry { method: PushMethod::Patch, version: v, base_version: Some(v - 1), body: p.to_vec().into(), ..put.clone() });
                want = apply_patch(&want, p).unwrap();
                let got = Journal { entries: entries.clone() }.replay("l", &none).unwrap();
                assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "body {b:?}, {} patches", k + 1);
            }
        }
        let required = SignaturePolicy { keys: vec![[1; 32]], required: true };
        assert!(Journal { entries: vec![put] }.replay("l", &required).unwrap_err().contains("unsigned"));
    }
}
