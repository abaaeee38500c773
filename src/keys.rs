//! Keys the configuration names: TSIG keys for zone transfers and NOTIFY
//! (`tsig = "hmac-sha256:NAME:BASE64SECRET"`, the `kdig -y` form). A leaf:
//! the config checks them, the transfer client and the NOTIFY check use
//! them, and none of those need each other for it.

use std::fmt;

use hickory_proto::rr::Name;

/// Why a key does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// A TSIG key, as given to `kdig -y`.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Key name, fully qualified, lowercase.
    pub name: Name,
    /// Always `"hmac-sha256"` (the only algorithm supported).
    pub algorithm: String,
    pub secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl TsigKey {
    /// Parses the `kdig -y` form `hmac-sha256:NAME:BASE64SECRET` (the
    /// algorithm may be left out, as kdig allows: `NAME:BASE64SECRET`).
    ///
    /// Fails with a [`KeyError`] on another algorithm, a bad name, a
    /// secret that is not base64, or an empty secret.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let (alg, name, secret) = match parts.as_slice() {
            [alg, name, secret] => (*alg, *name, *secret),
            [name, secret] => ("hmac-sha256", *name, *secret),
            _ => {
                return Err(KeyError(
                    "key must look like `hmac-sha256:NAME:BASE64SECRET`".into(),
                ))
            }
        };
        let algorithm = alg.to_ascii_lowercase();
        if algorithm != "hmac-sha256" {
            return Err(KeyError(format!(
                "algorithm `{alg}` is not supported (only hmac-sha256)"
            )));
        }
        let mut key_name = Name::from_ascii(name).map_err(|e| KeyError(format!("key name `{name}`: {e}")))?;
        if key_name.num_labels() == 0 {
            return Err(KeyError("key name is empty".into()));
        }
        key_name.set_fqdn(true);
        let secret = secret.trim();
        let secret = data_encoding::BASE64
            .decode(secret.as_bytes())
            .or_else(|_| data_encoding::BASE64_NOPAD.decode(secret.as_bytes()))
            .map_err(|e| KeyError(format!("key secret is not base64: {e}")))?;
        if secret.is_empty() {
            return Err(KeyError("key secret is empty".into()));
        }
        Ok(Self {
            name: key_name.to_lowercase(),
            algorithm,
            secret,
        })
    }
}

