//! The single error type of the secrets module.
//!
//! Every variant names the file it is about. No variant ever carries
//! plaintext: values are referred to by their key path only.

use std::fmt;

/// Where in a file a problem was found, as precisely as the parser knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// 1-based line number, if known.
    pub line: Option<usize>,
    /// Key path (`a:b:c`), if known.
    pub key: Option<String>,
}

impl Location {
    /// A location that is only a line number.
    pub fn line(line: usize) -> Self {
        Location {
            line: Some(line),
            key: None,
        }
    }

    /// A location that is only a key path.
    pub fn key(key: impl Into<String>) -> Self {
        Location {
            line: None,
            key: Some(key.into()),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.line, &self.key) {
            (Some(l), Some(k)) => write!(f, " (line {l}, key {k:?})"),
            (Some(l), None) => write!(f, " (line {l})"),
            (None, Some(k)) => write!(f, " (key {k:?})"),
            (None, None) => Ok(()),
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}

/// Errors of parsing and decrypting SOPS files and of loading identities.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// None of the host's identities can unwrap the file's data key.
    #[error(
        "no identity can decrypt {file}: file is encrypted to {}; this host has {} \
         — add the host's key as a recipient",
        list(.recipients),
        list(.host_keys)
    )]
    NoMatchingIdentity {
        /// The file.
        file: String,
        /// The file's age recipients.
        recipients: Vec<String>,
        /// The public keys of the identities that were tried.
        host_keys: Vec<String>,
    },

    /// The file has no age recipient at all (PGP, KMS, Vault, ... only).
    #[error(
        "{file} cannot be decrypted with age: it is encrypted only to unsupported key types ({})",
        .key_types.join(", ")
    )]
    UnsupportedKeyType {
        /// The file.
        file: String,
        /// The key types present in the file (`pgp`, `kms`, ...).
        key_types: Vec<String>,
    },

    /// The recomputed MAC differs from the MAC stored in the file.
    #[error("MAC mismatch in {file}: the file was modified outside of sops or is corrupted")]
    MacMismatch {
        /// The file.
        file: String,
    },

    /// The file is not a well-formed SOPS file of the given format.
    #[error("malformed {format} file {file}{location}: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// The format it was parsed as.
        format: &'static str,
        /// Where the problem is.
        location: Location,
        /// What is wrong.
        reason: String,
    },

    /// The file is well-formed but has no `sops` metadata.
    #[error("{file} is not encrypted with sops: sops metadata not found")]
    MetadataNotFound {
        /// The file.
        file: String,
    },

    /// The sops metadata is present but invalid.
    #[error("invalid sops metadata in {file}: {reason}")]
    BadMetadata {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },

    /// An encrypted value cannot be decrypted or does not decode.
    #[error("cannot decrypt value {key:?} in {file}: {reason}")]
    BadValue {
        /// The file.
        file: String,
        /// The key path of the value (`a:b:c`).
        key: String,
        /// What is wrong (never the plaintext).
        reason: String,
    },

    /// The data key could not be recovered although an identity matched.
    #[error("cannot recover the data key of {file}: {reason}")]
    DataKey {
        /// The file.
        file: String,
        /// What went wrong.
        reason: String,
    },

    /// A decrypted document cannot be flattened into environment variables.
    #[error("{file}: key {key:?} cannot be used as an environment variable: {reason}")]
    NotFlat {
        /// The file.
        file: String,
        /// The offending top-level key.
        key: String,
        /// Why.
        reason: String,
    },

    /// A decrypted document cannot be written in its format.
    #[error("cannot write {file} as {format}: {reason}")]
    Emit {
        /// The file.
        file: String,
        /// The output format.
        format: &'static str,
        /// Why.
        reason: String,
    },

    /// An identity file or key could not be read or parsed.
    #[error("cannot load age identity from {source_name}: {reason}")]
    Identity {
        /// The file name or environment variable the identity came from.
        source_name: String,
        /// What is wrong (never key material).
        reason: String,
    },
}

impl Error {
    pub(crate) fn malformed(file: &str, format: &'static str, location: Location, reason: impl Into<String>) -> Self {
        Error::Malformed {
            file: file.to_string(),
            format,
            location,
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_metadata(file: &str, reason: impl Into<String>) -> Self {
        Error::BadMetadata {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_value(file: &str, key: &str, reason: impl Into<String>) -> Self {
        Error::BadValue {
            file: file.to_string(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
