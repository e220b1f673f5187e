//! OpenPGP signatures (git's default `gpg.format=openpgp`), verified with
//! the pure-Rust `pgp` crate against an armored public keyring.
//!
//! The keyring is evaluated once, when it is loaded: self-signatures,
//! subkey bindings (with the embedded back-signature of signing subkeys),
//! key and subkey revocations are checked cryptographically, and the
//! primary user ID, expiry times, revocation state and signing capability
//! of every key and subkey are recorded. Verifying a commit is then one
//! signature check plus a few comparisons.
//!
//! Policy (documented choices):
//! * A signature must be a binary or text document signature made by the
//!   primary key or a subkey of a key in the keyring, with a hash of at
//!   least SHA-2 strength (MD5, SHA-1 and RIPEMD-160 are refused).
//! * Revoked keys and subkeys are refused whatever the reason code and
//!   whatever the signature time (like gpg's `REVKEYSIG`). Only
//!   self-revocations are honoured (designated revokers are not evaluated).
//! * Expiry is checked twice: the key (and the subkey) must not have been
//!   expired when the signature was made, **and** must not be expired now.
//!   The second check is what gpg — and so `git verify-commit` — does
//!   (`EXPKEYSIG`); it also matters because the signature creation time is
//!   chosen by the signer and cannot prove that a signature predates the
//!   expiry. A signature with its own expiration time is refused once
//!   that has passed.
//! * A signature by a key that has no "sign" key flag (when its binding
//!   signature carries key flags) is refused.
//! * The identity reported is the primary user ID: the one whose latest
//!   self-signature has the primary flag, else the first valid user ID.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, RevocationCode, Signature, SignatureType};
use pgp::types::{KeyDetails, Tag};

use super::error::{BoxError, Error, ExpiryCheck};
use super::{SignatureKind, Signer};

/// Uppercase hex, like gpg prints fingerprints and key IDs.
fn upper_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Validity facts shared by primary keys and subkeys.
#[derive(Debug, Clone)]
struct KeyState {
    key_id: [u8; 8],
    /// Creation time, Unix seconds.
    created: i64,
    /// Expiry instant, Unix seconds (`None`: never).
    expires: Option<i64>,
    /// `Some(reason)` if a valid revocation exists.
    revoked: Option<Option<String>>,
    /// Whether the key may make data signatures.
    can_sign: bool,
}

#[derive(Debug, Clone)]
struct SubkeyEntry {
    key: PublicSubkey,
    fingerprint: Vec<u8>,
    state: KeyState,
}

#[derive(Debug, Clone)]
struct KeyEntry {
    primary: PublicKey,
    /// Uppercase hex fingerprint of the primary key.
    fingerprint: String,
    user_id: String,
    state: KeyState,
    subkeys: Vec<SubkeyEntry>,
}

/// A loaded and pre-evaluated OpenPGP keyring.
#[derive(Debug, Clone)]
pub struct Keyring {
    path: PathBuf,
    keys: Vec<KeyEntry>,
    /// Fingerprint bytes → (key index, subkey index or `None` for primary).
    by_fingerprint: HashMap<Vec<u8>, (usize, Option<usize>)>,
    /// Key ID → candidates.
    by_key_id: HashMap<[u8; 8], Vec<(usize, Option<usize>)>>,
}

fn ts(t: pgp::types::Timestamp) -> i64 {
    i64::from(t.as_secs())
}

fn key_id_bytes(id: &pgp::types::KeyId) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(id.as_ref());
    out
}

/// Expiry instant from a binding signature's key expiration subpacket.
fn expiry_of(sig: &Signature, created: i64) -> Option<i64> {
    sig.key_expiration_time()
        .map(|d| i64::from(d.as_secs()))
        .filter(|&secs| secs > 0)
        .map(|secs| created + secs)
}

/// Whether the signature's hashed area carries a key flags subpacket.
fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, pgp::packet::SubpacketData::KeyFlags(_)))
    })
}

fn sig_time(sig: &Signature) -> i64 {
    sig.created().map(ts).unwrap_or(i64::MIN)
}

fn latest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    // Later entries win ties, so a re-issued self-signature with the same
    // timestamp that appears later in the file is preferred.
    sigs.fold(None, |best: Option<&Signature>, s| match best {
        Some(b) if sig_time(b) > sig_time(s) => Some(b),
        _ => Some(s),
    })
}

fn revocation_reason(sig: &Signature) -> Option<String> {
    let text = sig
        .revocation_reason_string()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .filter(|s| !s.is_empty());
    let code = sig.revocation_reason_code().map(|c| match c {
        RevocationCode::NoReason => "no reason specified".to_string(),
        RevocationCode::KeySuperseded => "key superseded".to_string(),
        RevocationCode::KeyCompromised => "key compromised".to_string(),
        RevocationCode::KeyRetired => "key retired".to_string(),
        RevocationCode::CertUserIdInvalid => "user ID no longer valid".to_string(),
        other => format!("code {}", u8::from(*other)),
    });
    match (code, text) {
        (Some(c), Some(t)) => Some(format!("{c}: {t}")),
        (Some(c), None) => Some(c),
        (None, t) => t,
    }
}

fn evaluate(spk: &SignedPublicKey) -> Result<KeyEntry, String> {
    let primary = &spk.primary_key;
    let fingerprint = upper_hex(primary.fingerprint().as_bytes());
    let created = ts(primary.created_at());

    let revoked = spk
        .details
        .revocation_signatures
        .iter()
        .find(|s| s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok())
        .map(revocation_reason);

    // Latest valid self-certification per user ID; user IDs whose latest
    // self-signature is a certification revocation are skipped.
    let mut uids: Vec<(String, &Signature)> = Vec::new();
    for user in &spk.details.users {
        let valid = user
            .signatures
            .iter()
            .filter(|s| s.verify_certification(primary, Tag::UserId, &user.id).is_ok());
        if let Some(sig) = latest(valid) {
            if sig.typ() != Some(SignatureType::CertRevocation) {
                let name = String::from_utf8_lossy(user.id.id()).into_owned();
                uids.push((name, sig));
            }
        }
    }
    let primary_uid = uids
        .iter()
        .filter(|(_, s)| s.is_primary())
        .fold(None, |best: Option<&(String, &Signature)>, cand| match best {
            Some(b) if sig_time(b.1) >= sig_time(cand.1) => Some(b),
            _ => Some(cand),
        })
        .or_else(|| uids.first())
        .ok_or_else(|| format!("key {fingerprint} has no valid self-signed user ID"))?;

    // Expiry and flags: a direct-key self-signature overrides the user ID
    // binding when it carries the subpacket.
    let direct = latest(
        spk.details
            .direct_signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok()),
    );
    let uid_sig = primary_uid.1;
    let expires = direct
        .filter(|d| d.key_expiration_time().is_some())
        .map_or_else(|| expiry_of(uid_sig, created), |d| expiry_of(d, created));
    let flags_sig = direct.filter(|d| has_key_flags(d)).unwrap_or(uid_sig);
    let can_sign = !has_key_flags(flags_sig) || flags_sig.key_flags().sign();

    let mut subkeys = Vec::new();
    for sub in &spk.public_subkeys {
        let sub_created = ts(sub.key.created_at());
        let binding = latest(sub.signatures.iter().filter(|s| {
            s.typ() == Some(SignatureType::SubkeyBinding)
                && s.verify_subkey_binding(primary, &sub.key).is_ok()
                && (!s.key_flags().sign()
                    || s.embedded_signature()
                        .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok()))
        }));
        let Some(binding) = binding else {
            // Unbound subkeys are ignored: a signature by one is reported
            // as made by an unknown key.
            continue;
        };
        let sub_revoked = sub
            .signatures
            .iter()
            .find(|s| {
                s.typ() == Some(SignatureType::SubkeyRevocation) && s.verify_subkey_binding(primary, &sub.key).is_ok()
            })
            .map(revocation_reason);
        subkeys.push(SubkeyEntry {
            key: sub.key.clone(),
            fingerprint: sub.key.fingerprint().as_bytes().to_vec(),
            state: KeyState {
                key_id: key_id_bytes(&sub.key.legacy_key_id()),
                created: sub_created,
                expires: expiry_of(binding, sub_created),
                revoked: sub_revoked,
                can_sign: binding.key_flags().sign(),
            },
        });
    }

    Ok(KeyEntry {
        primary: primary.clone(),
        fingerprint,
        user_id: primary_uid.0.clone(),
        state: KeyState {
            key_id: key_id_bytes(&primary.legacy_key_id()),
            created,
            expires,
            revoked,
            can_sign,
        },
        subkeys,
    })
}

const BEGIN_PUBLIC: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

impl Keyring {
    /// Parses an armored keyring (one or more concatenated
    /// `PGP PUBLIC KEY BLOCK`s, each holding one or more keys); `path` is
    /// used in error messages.
    pub fn parse(path: &Path, content: &str) -> Result<Self, Error> {
        let err = |reason: String, source: Option<BoxError>| Error::KeyringParse {
            path: path.to_path_buf(),
            reason,
            source,
        };
        let starts: Vec<usize> = content.match_indices(BEGIN_PUBLIC).map(|(i, _)| i).collect();
        if starts.is_empty() {
            return Err(err(
                "no armored OpenPGP public key block (-----BEGIN PGP PUBLIC KEY BLOCK-----) found".into(),
                None,
            ));
        }
        let mut keys = Vec::new();
        for (n, &start) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(content.len());
            let block = &content[start..end];
            let (parsed, _headers) = SignedPublicKey::from_string_many(block)
                .map_err(|e| err(format!("invalid armored key block #{}", n + 1), Some(Box::new(e))))?;
            for key in parsed {
                let key = key.map_err(|e| err(format!("invalid key in block #{}", n + 1), Some(Box::new(e))))?;
                keys.push(evaluate(&key).map_err(|reason| err(reason, None))?);
            }
        }
        if keys.is_empty() {
            return Err(err("keyring contains no keys".into(), None));
        }

        let mut by_fingerprint = HashMap::new();
        let mut by_key_id: HashMap<[u8; 8], Vec<(usize, Option<usize>)>> = HashMap::new();
        for (ki, key) in keys.iter().enumerate() {
            by_fingerprint.insert(key.primary.fingerprint().as_bytes().to_vec(), (ki, None));
            by_key_id.entry(key.state.key_id).or_default().push((ki, None));
            for (si, sub) in key.subkeys.iter().enumerate() {
                by_fingerprint.insert(sub.fingerprint.clone(), (ki, Some(si)));
                by_key_id.entry(sub.state.key_id).or_default().push((ki, Some(si)));
            }
        }
        Ok(Keyring {
            path: path.to_path_buf(),
            keys,
            by_fingerprint,
            by_key_id,
        })
    }

    /// Reads and parses an armored keyring file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let content = std::fs::read_to_string(path).map_err(|source| Error::ReadTrustFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &content)
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of primary keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the keyring holds no keys (never true for a loaded keyring).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `(fingerprint, primary user ID)` of every key, in file order.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.keys.iter().map(|k| (k.fingerprint.as_str(), k.user_id.as_str()))
    }

    /// Candidate signing keys for a signature, by issuer fingerprint first,
    /// then by issuer key ID.
    fn candidates(&self, sig: &Signature) -> Vec<(usize, Option<usize>)> {
        let by_fpr: Vec<_> = sig
            .issuer_fingerprint()
            .iter()
            .filter_map(|f| self.by_fingerprint.get(f.as_bytes()).copied())
            .collect();
        if !by_fpr.is_empty() {
            return by_fpr;
        }
        sig.issuer_key_id()
            .iter()
            .filter_map(|id| self.by_key_id.get(&key_id_bytes(id)))
            .flatten()
            .copied()
            .collect()
    }
}

fn issuer_label(sig: &Signature) -> String {
    if let Some(f) = sig.issuer_fingerprint().first() {
        return upper_hex(f.as_bytes());
    }
    match sig.issuer_key_id().first() {
        Some(id) => format!("ID {}", upper_hex(id.as_ref())),
        None => "without issuer".into(),
    }
}

/// Verifies an armored OpenPGP signature over `payload` for `commit`.
pub(super) fn verify(
    keyring: Option<&Keyring>,
    commit: &str,
    armored: &[u8],
    payload: &[u8],
    now: i64,
) -> Result<Signer, Error> {
    let bad = |key: String, reason: String, source: Option<BoxError>| Error::BadSignature {
        commit: commit.to_string(),
        kind: SignatureKind::OpenPgp,
        key,
        reason,
        source,
    };
    let (detached, _headers) = DetachedSignature::from_armor_single(armored).map_err(|e| {
        bad(
            "unknown".into(),
            "malformed OpenPGP signature".into(),
            Some(Box::new(e)),
        )
    })?;
    let sig = &detached.signature;
    let issuer = issuer_label(sig);
    let unknown = || Error::UnknownKey {
        commit: commit.to_string(),
        kind: SignatureKind::OpenPgp,
        key: issuer.clone(),
        trust_file: keyring.map(|k| k.path.clone()),
    };
    let keyring = keyring.ok_or_else(unknown)?;
    if sig.issuer_fingerprint().is_empty() && sig.issuer_key_id().is_empty() {
        return Err(bad(issuer, "signature names no issuer key".into(), None));
    }
    if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return Err(bad(
            issuer,
            format!("not a document signature (type {:?})", sig.typ()),
            None,
        ));
    }
    if let Some(h @ (HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160)) = sig.hash_alg() {
        return Err(bad(issuer, format!("weak hash algorithm {h}"), None));
    }

    let candidates = keyring.candidates(sig);
    if candidates.is_empty() {
        return Err(unknown());
    }
    // Key ID collisions are possible in principle: try every candidate and
    // keep the first that verifies.
    let mut verified = None;
    let mut last_err: Option<BoxError> = None;
    for (ki, si) in candidates {
        let Some(key) = keyring.keys.get(ki) else {
            continue;
        };
        let result = match si {
            None => sig.verify(&key.primary, payload),
            Some(i) => match key.subkeys.get(i) {
                Some(sub) => sig.verify(&sub.key, payload),
                None => continue,
            },
        };
        match result {
            Ok(()) => {
                verified = Some((key, si));
                break;
            }
            Err(e) => last_err = Some(Box::new(e)),
        }
    }
    let Some((key, si)) = verified else {
        return Err(bad(
            issuer,
            "signature does not match the commit content".into(),
            last_err,
        ));
    };

    let signing_state = match si {
        Some(i) => key.subkeys.get(i).map(|s| &s.state),
        None => Some(&key.state),
    }
    .unwrap_or(&key.state);
    let signing_key = upper_hex(&signing_state.key_id);
    let signing_subkey = si.map(|_| signing_key.clone());
    let label = match &signing_subkey {
        Some(sub) => format!("{} (subkey {sub})", key.fingerprint),
        None => key.fingerprint.clone(),
    };

    // Revocation: primary first, then subkey.
    let subkey_state = si.map(|_| (signing_state, "subkey"));
    for (state, what) in std::iter::once((&key.state, "key")).chain(subkey_state) {
        if let Some(reason) = &state.revoked {
            return Err(Error::Revoked {
                commit: commit.to_string(),
                key: key.fingerprint.clone(),
                signing_subkey,
                what,
                reason: reason.clone(),
            });
        }
    }

    let Some(sig_created) = sig.created().map(ts) else {
        return Err(bad(label, "signature has no creation time".into(), None));
    };
    if sig_created < signing_state.created {
        return Err(bad(label, "signature is older than the signing key".into(), None));
    }
    if !signing_state.can_sign {
        return Err(bad(
            label,
            "the key that made the signature is not signing-capable".into(),
            None,
        ));
    }

    let subkey_expiry = si.and(signing_state.expires).map(|e| ("subkey", e));
    let key_expiry = key.state.expires.map(|e| ("key", e));
    for (what, expired_at) in key_expiry.into_iter().chain(subkey_expiry) {
        let (at, checked_against) = if sig_created >= expired_at {
            (sig_created, ExpiryCheck::AtSignatureTime)
        } else if now >= expired_at {
            (now, ExpiryCheck::Now)
        } else {
            continue;
        };
        return Err(Error::Expired {
            commit: commit.to_string(),
            key: key.fingerprint.clone(),
            signing_subkey,
            what,
            expired_at,
            at,
            checked_against,
        });
    }
    if let Some(d) = sig.signature_expiration_time() {
        let secs = i64::from(d.as_secs());
        if secs > 0 && now >= sig_created + secs {
            return Err(Error::Expired {
                commit: commit.to_string(),
                key: key.fingerprint.clone(),
                signing_subkey,
                what: "signature",
                expired_at: sig_created + secs,
                at: now,
                checked_against: ExpiryCheck::Now,
            });
        }
    }

    Ok(Signer {
        kind: SignatureKind::OpenPgp,
        identity: key.user_id.clone(),
        fingerprint: key.fingerprint.clone(),
        signing_key,
    })
}
