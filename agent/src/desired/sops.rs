//! SOPS files referenced by a revision (`env_file:` and `secrets:`): detected, decrypted in
//! memory with the host's age identities, and summarised by a keyed hash that is safe to store.

use crate::secrets::{self, Document, Format, Identities};
use std::path::Path;

/// What decrypting needs: the host's identities (none for offline validation, which checks
/// structure only) and the host's key for content hashes.
#[derive(Clone, Copy)]
pub struct SecretsCtx<'a> {
    /// Age identities; `None` means "check structure only" (`tend validate` without keys).
    pub identities: Option<&'a Identities>,
    /// Key of the keyed content hash (per host, so hashes reveal nothing offline).
    pub hash_key: &'a [u8; 32],
}

impl SecretsCtx<'_> {
    /// Structure-only checks with a fixed key (for `tend validate` and tests).
    pub fn offline() -> SecretsCtx<'static> {
        static ZERO: [u8; 32] = [0; 32];
        SecretsCtx {
            identities: None,
            hash_key: &ZERO,
        }
    }
}

/// A file a revision refers to.
pub enum Opened {
    /// Not a SOPS file.
    Plain,
    /// A SOPS file: its keyed content hash, and the decrypted document when identities were given.
    Sops {
        /// Keyed hash of the plaintext (of the ciphertext when not decrypted).
        hash: String,
        /// The plaintext, when decrypted.
        doc: Option<Document>,
    },
}

/// Detect and, with identities, decrypt `bytes` read from repository path `path`.
pub fn open(path: &str, bytes: &[u8], ctx: &SecretsCtx<'_>) -> Result<Opened, secrets::Error> {
    let format = Format::from_path(Path::new(path));
    let file = match secrets::parse_named(path, bytes, format) {
        Ok(f) => f,
        Err(secrets::Error::MetadataNotFound { .. }) => return Ok(Opened::Plain),
        // Not parseable as its format at all: not a SOPS file either (the caller reports it).
        Err(secrets::Error::Malformed { .. }) if !looks_like_sops(bytes) => return Ok(Opened::Plain),
        Err(e) => return Err(e),
    };
    match ctx.identities {
        Some(ids) => {
            let doc = file.decrypt(ids)?;
            Ok(Opened::Sops {
                hash: doc.content_hash(ctx.hash_key),
                doc: Some(doc),
            })
        }
        None => {
            use sha2::Digest;
            Ok(Opened::Sops {
                hash: hex::encode(sha2::Sha256::digest(bytes)),
                doc: None,
            })
        }
    }
}

fn looks_like_sops(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.contains("ENC[AES256_GCM,") || text.contains("sops_version") || text.contains("\"sops\"")
}
