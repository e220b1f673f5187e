//! Commit signature verification and trust policy.
//!
//! tend only applies commits that are signed by a trusted key. This module
//! is pure logic: it reads the two trust files once
//! ([`TrustStore::load`]), verifies raw git commit objects
//! ([`TrustStore::verify_commit`]) and decides whether a new tip may be
//! applied ([`check`]), without running git or gpg.
//!
//! * SSH signatures (`gpg.format=ssh`) are checked against an allowed
//!   signers file in the format of `ssh-keygen -Y` / git's
//!   `gpg.ssh.allowedSignersFile` (see [`ssh`] for the exact semantics;
//!   `cert-authority` lines are refused at load time).
//! * OpenPGP signatures are checked against an armored public keyring
//!   (see [`openpgp`] for the expiry/revocation policy).
//! * The raw commit is hashed and compared with the commit id before
//!   anything else (SHA-1 with collision detection, or SHA-256 for 64-hex
//!   ids), so a [`CommitSource`] cannot hand over content that differs from
//!   the id being approved. Commit ids must therefore be full hex ids.
//!
//! Time: SSH validity windows are checked against the committer time
//! recorded in the (signed) commit, as git does; OpenPGP key expiry is
//! checked against both the signature time and the current time.

pub mod commit;
mod error;
pub mod openpgp;
pub mod pattern;
mod policy;
pub mod ssh;
mod time;

use std::fmt;
use std::path::Path;

pub use self::commit::{parse_commit, ObjectFormat, ParsedCommit};
pub use self::error::{BoxError, Error, ExpiryCheck};
pub use self::openpgp::Keyring;
pub use self::policy::{check, check_with_limit, CommitSource, Require, Verdict, DEFAULT_WALK_LIMIT};
pub use self::ssh::{AllowedSigner, AllowedSigners};

/// Which signature scheme a commit was signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SignatureKind {
    /// SSH signature (`-----BEGIN SSH SIGNATURE-----`, namespace `git`).
    Ssh,
    /// OpenPGP signature (`-----BEGIN PGP SIGNATURE-----`).
    OpenPgp,
}

impl fmt::Display for SignatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureKind::Ssh => "SSH",
            SignatureKind::OpenPgp => "OpenPGP",
        })
    }
}

/// Who signed a verified commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signer {
    /// Signature scheme.
    pub kind: SignatureKind,
    /// SSH: the principals field of the matching allowed signers line
    /// (comma-separated, as written). OpenPGP: the primary user ID.
    pub identity: String,
    /// SSH: `SHA256:…` key fingerprint as `ssh-keygen -l` prints it.
    /// OpenPGP: fingerprint of the primary key, uppercase hex as gpg prints
    /// it.
    pub fingerprint: String,
    /// The key that actually made the signature. OpenPGP: long key ID
    /// (16 uppercase hex digits) of the primary key or signing subkey.
    /// SSH: same as `fingerprint`.
    pub signing_key: String,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} key {} ({})", self.kind, self.fingerprint, self.identity)?;
        if !self.fingerprint.ends_with(&self.signing_key) && !self.fingerprint.starts_with(&self.signing_key) {
            write!(f, " via subkey {}", self.signing_key)?;
        }
        Ok(())
    }
}

/// The trust roots: parsed once, used for every commit.
#[derive(Debug, Clone)]
pub struct TrustStore {
    ssh: Option<AllowedSigners>,
    openpgp: Option<Keyring>,
}

const SSH_ARMOR: &[u8] = b"-----BEGIN SSH SIGNATURE-----";
const PGP_ARMOR: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const X509_ARMOR: &[u8] = b"-----BEGIN SIGNED MESSAGE-----";

impl TrustStore {
    /// Loads the allowed signers file and/or the armored OpenPGP keyring.
    /// At least one must be given ([`Error::NoTrustRoots`]). Parse errors
    /// name the file (and line for allowed signers).
    pub fn load(allowed_signers: Option<&Path>, openpgp_keyring: Option<&Path>) -> Result<TrustStore, Error> {
        if allowed_signers.is_none() && openpgp_keyring.is_none() {
            return Err(Error::NoTrustRoots);
        }
        Ok(TrustStore {
            ssh: allowed_signers.map(AllowedSigners::load).transpose()?,
            openpgp: openpgp_keyring.map(Keyring::load).transpose()?,
        })
    }

    /// Builds a store from already parsed parts.
    pub fn from_parts(
        allowed_signers: Option<AllowedSigners>,
        openpgp_keyring: Option<Keyring>,
    ) -> Result<TrustStore, Error> {
        if allowed_signers.is_none() && openpgp_keyring.is_none() {
            return Err(Error::NoTrustRoots);
        }
        Ok(TrustStore {
            ssh: allowed_signers,
            openpgp: openpgp_keyring,
        })
    }

    /// The SSH allowed signers, if configured.
    pub fn allowed_signers(&self) -> Option<&AllowedSigners> {
        self.ssh.as_ref()
    }

    /// The OpenPGP keyring, if configured.
    pub fn openpgp_keyring(&self) -> Option<&Keyring> {
        self.openpgp.as_ref()
    }

    /// Verifies one raw commit object (as `git cat-file commit ID` prints
    /// it) against the trust roots, using the current time for OpenPGP
    /// expiry checks.
    pub fn verify_commit(&self, commit_id_hex: &str, raw_commit: &[u8]) -> Result<Signer, Error> {
        self.verify_commit_at(commit_id_hex, raw_commit, time::now_unix())
    }

    /// Like [`verify_commit`](Self::verify_commit) with an explicit
    /// "now" (Unix seconds) for OpenPGP expiry checks.
    pub fn verify_commit_at(&self, commit_id_hex: &str, raw_commit: &[u8], now: i64) -> Result<Signer, Error> {
        let parsed = parse_verified_commit(commit_id_hex, raw_commit)?;
        self.verify_parsed(commit_id_hex, &parsed, now)
    }

    /// Verifies a commit that was already hashed and parsed with
    /// [`parse_verified_commit`].
    fn verify_parsed(&self, commit: &str, parsed: &ParsedCommit, now: i64) -> Result<Signer, Error> {
        // parse_verified_commit has validated the id, so the format is known.
        let format = ObjectFormat::from_id(commit).unwrap_or(ObjectFormat::Sha1);
        let Some((_header, armored)) = parsed.signature(format) else {
            return Err(Error::Unsigned {
                commit: commit.to_string(),
            });
        };
        let trimmed = trim_ascii_start(armored);
        if trimmed.starts_with(SSH_ARMOR) {
            ssh::verify(
                self.ssh.as_ref(),
                commit,
                armored,
                &parsed.payload,
                parsed.committer_time,
            )
        } else if trimmed.starts_with(PGP_ARMOR) {
            openpgp::verify(self.openpgp.as_ref(), commit, armored, &parsed.payload, now)
        } else if trimmed.starts_with(X509_ARMOR) {
            Err(Error::UnsupportedSignature {
                commit: commit.to_string(),
                format: "X.509/CMS (gpgsm) signatures are not supported".into(),
            })
        } else {
            let first_line = trimmed
                .split(|&b| b == b'\n')
                .next()
                .map(|l| String::from_utf8_lossy(l).chars().take(60).collect::<String>())
                .unwrap_or_default();
            Err(Error::UnsupportedSignature {
                commit: commit.to_string(),
                format: format!("unrecognised armor \"{first_line}\""),
            })
        }
    }
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    &b[start..]
}

/// Checks that `raw_commit` hashes to `commit_id_hex` (full hex id) and
/// parses it.
pub fn parse_verified_commit(commit_id_hex: &str, raw_commit: &[u8]) -> Result<ParsedCommit, Error> {
    let format = ObjectFormat::from_id(commit_id_hex).ok_or_else(|| Error::MalformedCommit {
        commit: commit_id_hex.to_string(),
        reason: "commit id must be a full 40- or 64-digit hex object id".into(),
    })?;
    let actual = commit::commit_object_id(raw_commit, format).map_err(|reason| Error::CommitIdMismatch {
        commit: commit_id_hex.to_string(),
        reason,
    })?;
    if !actual.eq_ignore_ascii_case(commit_id_hex) {
        return Err(Error::CommitIdMismatch {
            commit: commit_id_hex.to_string(),
            reason: format!("content hashes to {actual}"),
        });
    }
    parse_commit(raw_commit).map_err(|reason| Error::MalformedCommit {
        commit: commit_id_hex.to_string(),
        reason,
    })
}
