//! The collateral-damage guard (`[guard]`): a remote update (HTTP pull,
//! push PUT/PATCH, AXFR/IXFR) that would newly block a protected name is
//! held until an operator confirms it. This file reads the protected names
//! and compares a candidate policy with the one in force; `publish.rs`
//! decides what to hold and keeps the held update.
//!
//! Cost: two [`Policy::check`] per protected name (the new policy first,
//! the old one only where the new one blocks): a few thousand hash probes
//! for thousands of names, nothing next to a list build.

use std::path::{Path, PathBuf};

use crate::name::QName;
use crate::policy::{Hit, Policy, Verdict};
use crate::rules::GuardOnHit;

/// The protected names and what a hit does.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The protected names, normalised (IDN → punycode), without duplicates.
    pub names: Vec<QName>,
    pub on_hit: GuardOnHit,
    /// The file they were read from (`[guard] protected`).
    pub path: PathBuf,
}

/// Why the protected-names file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("[guard] protected: reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("[guard] protected: {path}:{line}: `{text}` is not a domain name")]
    BadName { path: String, line: usize, text: String },
}

/// One protected name a candidate version newly blocks, and the rule that
/// would block it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardHit {
    /// The protected name.
    pub name: String,
    /// The deciding rule in the candidate policy.
    pub hit: Hit,
}

impl Guard {
    /// Reads `path`: one name a line; `#` starts a comment (whole line or
    /// after the name); blank lines are skipped. A line that is not a name
    /// is an error naming file and line (a typo here would silently leave
    /// a name unprotected).
    pub fn load(path: &Path, on_hit: GuardOnHit) -> Result<Self, GuardError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GuardError::Read { path: shown.clone(), source })?;
        let names = parse_names(&text).map_err(|(line, text)| GuardError::BadName { path: shown, line, text })?;
        Ok(Self { names, on_hit, path: path.to_owned() })
    }

    /// The protected names `new` blocks and `old` does not (exactly, by a
    /// parent or wildcard rule, by a keyword or regex: whatever
    /// [`Policy::check`] decides; shadow lists never block). In the order
    /// of the file.
    pub fn newly_blocked(&self, old: &Policy, new: &Policy) -> Vec<GuardHit> {
        newly_blocked(&self.names, old, new)
    }
}

/// [`Guard::newly_blocked`] over any names (also `qalqan diff --popular`).
pub fn newly_blocked(names: &[QName], old: &Policy, new: &Policy) -> Vec<GuardHit> {
    names
        .iter()
        .filter_map(|n| match new.check(n) {
            Verdict::Blocked(hit) if !matches!(old.check(n), Verdict::Blocked(_)) => Some(GuardHit { name: n.as_str().to_owned(), hit }),
            _ => None,
        })
        .collect()
}

/// The names of a protected/popular file: `Err((line, text))` on the first
/// line that is not a name. Also accepts `rank,name` lines (the shape of
/// the popular-domain rankings: Tranco, Umbrella, Alexa).
pub fn parse_names(text: &str) -> Result<Vec<QName>, (usize, String)> {
    let mut names = Vec::new();
    match read_names(text, &mut names, true).0 {
        Some(bad) => Err(bad),
        None => Ok(names),
    }
}

/// [`parse_names`] that skips lines that are not names (a ranking of a
/// million names has a few); returns the names and how many were skipped.
pub fn parse_names_lenient(text: &str) -> (Vec<QName>, usize) {
    let mut names = Vec::new();
    let skipped = read_names(text, &mut names, false).1;
    (names, skipped)
}

/// Fills `names`; `strict`: stops at the first bad line and returns it;
/// otherwise counts the bad lines skipped.
fn read_names(text: &str, names: &mut Vec<QName>, strict: bool) -> (Option<(usize, String)>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut skipped = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let field = match line.split_once(',') {
            Some((rank, name)) if rank.trim().bytes().all(|b| b.is_ascii_digit()) => name.trim(),
            _ => line,
        };
        let Some(name) = crate::name::normalize(field).ok().and_then(|n| QName::parse(&n).ok()) else {
            if strict {
                return (Some((i + 1, line.to_owned())), skipped);
            }
            skipped += 1;
            continue;
        };
        if seen.insert(name.as_str().to_owned()) {
            names.push(name);
        }
    }
    (None, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names read, or the first bad line.
    type Want = Result<Vec<&'static str>, usize>;

    #[test]
    fn protected_files() {
        let cases: &[(&str, &str, Want)] = &[
            ("names and comments", "# ours\nisp.example\n\nWWW.Example.COM. # trailing\n", Ok(vec!["isp.example", "www.example.com"])),
            ("duplicates once", "a.example\na.example\n", Ok(vec!["a.example"])),
            ("ranking csv", "1,google.com\n2,facebook.com\n", Ok(vec!["google.com", "facebook.com"])),
            ("idn", "пример.рф\n", Ok(vec!["xn--e1afmkfd.xn--p1ai"])),
            ("not a name", "ok.example\nbad..name\n", Err(2)),
            ("space inside", "two words\n", Err(1)),
        ];
        for (what, text, want) in cases {
            let got = parse_names(text).map(|v| v.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>()).map_err(|(l, _)| l);
            let want = want.clone().map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "case `{what}`");
        }
    }
}
