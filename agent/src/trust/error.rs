//! The single error type of the trust module.

use std::fmt;
use std::path::PathBuf;

use super::time::format_unix;
use super::SignatureKind;

/// A boxed error used as the `source` of some variants (keeps the chain).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shows a commit id abbreviated to 12 hex digits (the full id stays in the
/// variant's field).
struct Short<'a>(&'a str);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        match s.get(..12) {
            Some(p) if s.len() > 12 => f.write_str(p),
            _ => f.write_str(s),
        }
    }
}

/// Where a trust file came from, for "(not in …)" messages.
struct TrustFile<'a>(&'a Option<PathBuf>, SignatureKind);

impl fmt::Display for TrustFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(p), _) => write!(f, "not in {}", p.display()),
            (None, SignatureKind::Ssh) => f.write_str("no SSH allowed signers file is configured"),
            (None, SignatureKind::OpenPgp) => f.write_str("no OpenPGP keyring is configured"),
        }
    }
}

/// " via subkey ID" when a subkey made the signature.
struct ViaSubkey<'a>(&'a Option<String>);

impl fmt::Display for ViaSubkey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " via subkey {id}"),
            None => Ok(()),
        }
    }
}

/// The validity window of an allowed signers line, for `OutsideValidity`.
struct Window(Option<i64>, Option<i64>);

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(a), Some(b)) => write!(f, "valid-after {}, valid-before {}", format_unix(a), format_unix(b)),
            (Some(a), None) => write!(f, "valid-after {}", format_unix(a)),
            (None, Some(b)) => write!(f, "valid-before {}", format_unix(b)),
            (None, None) => f.write_str("no window"),
        }
    }
}

/// What an expiry was checked against (see [`Error::Expired`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExpiryCheck {
    /// The key had already expired when the signature was made (signature
    /// creation time).
    AtSignatureTime,
    /// The key (or the signature itself) has expired by now (verification
    /// time), as `gpg --verify` reports it.
    Now,
}

/// Why verification or policy checking failed.
///
/// Every variant's `Display` is one line naming the commit (abbreviated to
/// 12 hex digits) and the exact reason; the fields carry the full values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The commit has no `gpgsig` (or `gpgsig-sha256`) header.
    #[error("commit {}: not signed (no gpgsig header)", Short(.commit))]
    Unsigned {
        /// Full commit id.
        commit: String,
    },

    /// The commit carries a signature in a format tend does not verify
    /// (e.g. X.509/CMS made by `gpgsm`).
    #[error("commit {}: unsupported signature format ({format})", Short(.commit))]
    UnsupportedSignature {
        /// Full commit id.
        commit: String,
        /// Human-readable description of the format found.
        format: String,
    },

    /// The raw commit object could not be parsed.
    #[error("commit {}: malformed commit object: {reason}", Short(.commit))]
    MalformedCommit {
        /// Full commit id.
        commit: String,
        /// What is wrong.
        reason: String,
    },

    /// The raw bytes handed in do not hash to the commit id (or the SHA-1
    /// collision detector fired).
    #[error("commit {}: object content does not match its id ({reason})", Short(.commit))]
    CommitIdMismatch {
        /// Full commit id as requested.
        commit: String,
        /// Actual hash or collision description.
        reason: String,
    },

    /// The signing key is not in the configured trust file.
    #[error(
        "commit {}: signed by unknown {kind} key {key} ({})",
        Short(.commit),
        TrustFile(.trust_file, *.kind)
    )]
    UnknownKey {
        /// Full commit id.
        commit: String,
        /// SSH or OpenPGP.
        kind: SignatureKind,
        /// `SHA256:…` fingerprint (SSH), or OpenPGP issuer fingerprint or
        /// key ID.
        key: String,
        /// The trust file that was searched, `None` if none is configured
        /// for this signature kind.
        trust_file: Option<PathBuf>,
    },

    /// The signature is malformed or does not match the commit content.
    #[error("commit {}: bad {kind} signature by key {key}: {reason}", Short(.commit))]
    BadSignature {
        /// Full commit id.
        commit: String,
        /// SSH or OpenPGP.
        kind: SignatureKind,
        /// Fingerprint / key ID of the claimed signer (`unknown` if the
        /// signature could not even be parsed).
        key: String,
        /// Exact reason.
        reason: String,
        /// Underlying library error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The OpenPGP key (primary or signing subkey), or the signature itself,
    /// has expired.
    #[error(
        "commit {}: signed by OpenPGP key {key}{}, whose {what} expired at {} ({})",
        Short(.commit),
        ViaSubkey(.signing_subkey),
        format_unix(*.expired_at),
        match .checked_against {
            ExpiryCheck::AtSignatureTime => format!("signature made {}", format_unix(*.at)),
            ExpiryCheck::Now => format!("now {}", format_unix(*.at)),
        }
    )]
    Expired {
        /// Full commit id.
        commit: String,
        /// Fingerprint of the primary key (uppercase hex).
        key: String,
        /// Key ID of the subkey that made the signature, if a subkey did.
        signing_subkey: Option<String>,
        /// What expired: `key` (the primary key), `subkey` or `signature`.
        what: &'static str,
        /// Expiry instant (Unix seconds).
        expired_at: i64,
        /// Reference instant that is past the expiry (Unix seconds).
        at: i64,
        /// Which reference instant `at` is.
        checked_against: ExpiryCheck,
    },

    /// The OpenPGP key or signing subkey carries a valid revocation.
    #[error(
        "commit {}: signed by OpenPGP key {key}{}, whose {what} is revoked{}",
        Short(.commit),
        ViaSubkey(.signing_subkey),
        .reason.as_deref().map(|r| format!(" (reason: {r})")).unwrap_or_default()
    )]
    Revoked {
        /// Full commit id.
        commit: String,
        /// Fingerprint of the primary key (uppercase hex).
        key: String,
        /// Key ID of the subkey that made the signature, if a subkey did.
        signing_subkey: Option<String>,
        /// What is revoked: `key` (the primary key) or `subkey`.
        what: &'static str,
        /// Revocation reason from the revocation signature, if any.
        reason: Option<String>,
    },

    /// The committer time lies outside the `valid-after`/`valid-before`
    /// window of the allowed signers entry.
    #[error(
        "commit {}: key {fingerprint} of {principal} is not valid at committer time {} ({})",
        Short(.commit),
        format_unix(*.commit_time),
        Window(*.valid_after, *.valid_before)
    )]
    OutsideValidity {
        /// Full commit id.
        commit: String,
        /// Principals of the matched allowed signers entry.
        principal: String,
        /// `SHA256:…` fingerprint.
        fingerprint: String,
        /// Committer time (Unix seconds) the window was checked against.
        commit_time: i64,
        /// `valid-after` (Unix seconds), if set.
        valid_after: Option<i64>,
        /// `valid-before` (Unix seconds), if set.
        valid_before: Option<i64>,
    },

    /// The allowed signers entry restricts namespaces and `git` is not one.
    #[error(
        "commit {}: key {fingerprint} of {principal} is not allowed to sign namespace \"git\" (namespaces=\"{namespaces}\")",
        Short(.commit)
    )]
    NamespaceNotAllowed {
        /// Full commit id.
        commit: String,
        /// Principals of the matched allowed signers entry.
        principal: String,
        /// `SHA256:…` fingerprint.
        fingerprint: String,
        /// The entry's `namespaces` option.
        namespaces: String,
    },

    /// An allowed signers line uses `cert-authority`, which tend does not
    /// support. Raised when the file is loaded.
    #[error("{}:{line}: cert-authority is not supported (list the signing keys themselves)", .path.display())]
    CertAuthorityUnsupported {
        /// Allowed signers file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },

    /// A line of the allowed signers file is invalid.
    #[error("{}:{line}: {reason}", .path.display())]
    AllowedSignersParse {
        /// Allowed signers file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
        /// Underlying key-decoding error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The OpenPGP keyring file is invalid.
    #[error("{}: {reason}", .path.display())]
    KeyringParse {
        /// Keyring file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// Underlying OpenPGP error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A trust file could not be read.
    #[error("cannot read trust file {}", .path.display())]
    ReadTrustFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Neither an allowed signers file nor an OpenPGP keyring was given.
    #[error("no trust roots configured: give an SSH allowed signers file and/or an OpenPGP keyring")]
    NoTrustRoots,

    /// A [`CommitSource`](super::CommitSource) could not produce a commit.
    #[error("commit {}: cannot read commit object", Short(.commit))]
    CommitRead {
        /// Full commit id.
        commit: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// The tip neither equals nor descends from the last applied commit
    /// (rollback or force-push) and no rollback was allowed for it.
    #[error(
        "commit {}: not a descendant of last applied commit {} (rollback or force-push; allow a rollback to this commit explicitly to proceed)",
        Short(.tip),
        Short(.last_applied)
    )]
    NotDescendant {
        /// Full id of the tip.
        tip: String,
        /// Full id of the last applied commit.
        last_applied: String,
    },

    /// The history walk between tip and last applied commit visited more
    /// commits than allowed.
    #[error(
        "commit {}: history walk to last applied commit {} exceeded {limit} commits",
        Short(.tip),
        Short(.last_applied)
    )]
    WalkLimitExceeded {
        /// Full id of the tip.
        tip: String,
        /// Full id of the last applied commit.
        last_applied: String,
        /// The limit that was hit.
        limit: usize,
    },
}

impl Error {
    /// Wraps an error from a [`CommitSource`](super::CommitSource).
    pub fn commit_read(commit: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::CommitRead {
            commit: commit.into(),
            source: source.into(),
        }
    }

    /// The commit this error is about, if it is about one commit.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Error::Unsigned { commit }
            | Error::UnsupportedSignature { commit, .. }
            | Error::MalformedCommit { commit, .. }
            | Error::CommitIdMismatch { commit, .. }
            | Error::UnknownKey { commit, .. }
            | Error::BadSignature { commit, .. }
            | Error::Expired { commit, .. }
            | Error::Revoked { commit, .. }
            | Error::OutsideValidity { commit, .. }
            | Error::NamespaceNotAllowed { commit, .. }
            | Error::CommitRead { commit, .. } => Some(commit),
            Error::NotDescendant { tip, .. } | Error::WalkLimitExceeded { tip, .. } => Some(tip),
            Error::CertAuthorityUnsupported { .. }
            | Error::AllowedSignersParse { .. }
            | Error::KeyringParse { .. }
            | Error::ReadTrustFile { .. }
            | Error::NoTrustRoots => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        // clippy::result_large_err fires at 128 bytes; callers return
        // Result<_, Error> everywhere.
        assert!(
            std::mem::size_of::<Error>() <= 128,
            "Error is {} bytes",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn display_is_one_line_with_short_commit() {
        let e = Error::UnknownKey {
            commit: "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d".into(),
            kind: SignatureKind::Ssh,
            key: "SHA256:abc".into(),
            trust_file: Some(PathBuf::from("/etc/tend/allowed_signers")),
        };
        assert_eq!(
            e.to_string(),
            "commit 1a2b3c4d5e6f: signed by unknown SSH key SHA256:abc (not in /etc/tend/allowed_signers)"
        );
        let e = Error::OutsideValidity {
            commit: "abc".into(),
            principal: "p".into(),
            fingerprint: "SHA256:x".into(),
            commit_time: 1_704_067_200,
            valid_after: Some(0),
            valid_before: Some(86_400),
        };
        assert_eq!(
            e.to_string(),
            "commit abc: key SHA256:x of p is not valid at committer time 2024-01-01T00:00:00Z (valid-after 1970-01-01T00:00:00Z, valid-before 1970-01-02T00:00:00Z)"
        );
        let e = Error::Expired {
            commit: "abc".into(),
            key: "FPR".into(),
            signing_subkey: Some("SUB".into()),
            what: "subkey",
            expired_at: 86_400,
            at: 90_000,
            checked_against: ExpiryCheck::AtSignatureTime,
        };
        assert_eq!(
            e.to_string(),
            "commit abc: signed by OpenPGP key FPR via subkey SUB, whose subkey expired at 1970-01-02T00:00:00Z (signature made 1970-01-02T01:00:00Z)"
        );
        assert!(!e.to_string().contains('\n'));
        assert_eq!(e.commit(), Some("abc"));
    }
}
