//! Age identities (X25519 and SSH keys) and recovery of the sops data key.

use std::fmt;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use zeroize::Zeroizing;

use super::error::Error;
use super::metadata::{AgeStanza, Metadata};

/// Environment variable naming an age identity file.
pub const ENV_KEY_FILE: &str = "SOPS_AGE_KEY_FILE";
/// Environment variable holding age identities inline.
pub const ENV_KEY: &str = "SOPS_AGE_KEY";
/// Environment variable naming an SSH private key used as an age identity.
pub const ENV_SSH_KEY_FILE: &str = "SOPS_AGE_SSH_PRIVATE_KEY_FILE";

struct Loaded {
    identity: Box<dyn age::Identity + Send + Sync>,
    /// Public key (`age1...` or `ssh-ed25519 AAAA...`), for matching and messages.
    public: String,
}

/// A set of age identities able to unwrap sops data keys.
///
/// Key material is never printed: `Debug` shows public keys only.
#[derive(Default)]
pub struct Identities {
    ids: Vec<Loaded>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("public_keys", &self.public_keys())
            .finish()
    }
}

fn io_err(source: &str, e: std::io::Error) -> Error {
    Error::Identity {
        source_name: source.to_string(),
        reason: e.to_string(),
    }
}

/// The `ssh-xxx BASE64` form of an SSH public key blob (wire format).
fn ssh_public_string(blob: &[u8]) -> String {
    let ty = blob
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n))
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("ssh");
    format!("{ty} {}", base64::engine::general_purpose::STANDARD.encode(blob))
}

/// The public key of an unencrypted `openssh-key-v1` private key, which
/// stores it in clear before the private section.
fn openssh_public_key(text: &str) -> Option<String> {
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let raw = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(body.trim()).ok()?);
    let mut rest: &[u8] = raw.strip_prefix(b"openssh-key-v1\0")?;
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let s = rest.get(..n)?;
        *rest = &rest[n..];
        Some(s)
    }
    fn string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(take(rest, 4)?.try_into().ok()?) as usize;
        take(rest, len)
    }
    string(&mut rest)?; // cipher name
    string(&mut rest)?; // kdf name
    string(&mut rest)?; // kdf options
    let count = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?);
    if count != 1 {
        return None;
    }
    let key = string(&mut rest)?;
    Some(ssh_public_string(key))
}

/// The first two fields of an SSH public key line (drops the comment).
fn ssh_key_core(s: &str) -> String {
    s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

impl Identities {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads identity files: age identity files (`AGE-SECRET-KEY-1...` lines,
    /// `#` comments and blank lines allowed) or unencrypted OpenSSH/PEM
    /// private keys (ed25519, RSA), such as `/etc/ssh/ssh_host_ed25519_key`.
    pub fn load(files: &[PathBuf]) -> Result<Self, Error> {
        let mut ids = Identities::new();
        for f in files {
            ids.add_file(f)?;
        }
        Ok(ids)
    }

    /// Loads the identities named by `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`
    /// and `SOPS_AGE_SSH_PRIVATE_KEY_FILE`, whichever are set and non-empty.
    pub fn from_env() -> Result<Self, Error> {
        let mut ids = Identities::new();
        // Empty variables count as unset.
        if let Some(path) = std::env::var_os(ENV_KEY_FILE).filter(|p| !p.is_empty()) {
            ids.add_file(Path::new(&path))?;
        }
        if let Ok(inline) = std::env::var(ENV_KEY) {
            let inline = Zeroizing::new(inline);
            if !inline.trim().is_empty() {
                ids.add_text(ENV_KEY, &inline)?;
            }
        }
        if let Some(path) = std::env::var_os(ENV_SSH_KEY_FILE).filter(|p| !p.is_empty()) {
            ids.add_file(Path::new(&path))?;
        }
        Ok(ids)
    }

    /// Adds all identities of another set.
    pub fn merge(&mut self, other: Identities) {
        self.ids.extend(other.ids);
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Public keys of all identities, for error messages.
    pub fn public_keys(&self) -> Vec<String> {
        self.ids.iter().map(|l| l.public.clone()).collect()
    }

    /// Adds the identities of one file (age identity file or SSH private key).
    pub fn add_file(&mut self, path: &Path) -> Result<(), Error> {
        let source = path.display().to_string();
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(path)
            .and_then(|f| BufReader::new(f).read_to_string(&mut text))
            .map_err(|e| io_err(&source, e))?;
        self.add_text(&source, &text)
    }

    /// Adds identities from text: an age identity list or an SSH private key.
    /// `source` names where the text came from, for errors.
    pub fn add_text(&mut self, source: &str, text: &str) -> Result<(), Error> {
        if text.trim_start().starts_with("-----BEGIN") {
            return self.add_ssh(source, text);
        }
        let mut found = 0usize;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !line.starts_with("AGE-SECRET-KEY-1") {
                return Err(Error::Identity {
                    source_name: source.to_string(),
                    reason: format!(
                        "line {}: not an age X25519 identity (plugin and other identities are not supported)",
                        n + 1
                    ),
                });
            }
            let id = age::x25519::Identity::from_str(line).map_err(|_| Error::Identity {
                source_name: source.to_string(),
                reason: format!("line {}: malformed age identity", n + 1),
            })?;
            let public = id.to_public().to_string();
            self.ids.push(Loaded {
                identity: Box::new(id),
                public,
            });
            found += 1;
        }
        if found == 0 {
            return Err(Error::Identity {
                source_name: source.to_string(),
                reason: "no identity found".to_string(),
            });
        }
        Ok(())
    }

    fn add_ssh(&mut self, source: &str, text: &str) -> Result<(), Error> {
        let id = age::ssh::Identity::from_buffer(text.as_bytes(), Some(source.to_string()))
            .map_err(|e| io_err(source, e))?;
        match &id {
            age::ssh::Identity::Unencrypted(_) => {}
            age::ssh::Identity::Encrypted(_) => {
                return Err(Error::Identity {
                    source_name: source.to_string(),
                    reason: "passphrase-protected SSH keys are not supported".to_string(),
                })
            }
            age::ssh::Identity::Unsupported(_) => {
                return Err(Error::Identity {
                    source_name: source.to_string(),
                    reason: "unsupported SSH key type (only ed25519 and RSA)".to_string(),
                })
            }
        }
        let public = openssh_public_key(text).unwrap_or_else(|| format!("ssh-rsa key from {source}"));
        self.ids.push(Loaded {
            identity: Box::new(id),
            public,
        });
        Ok(())
    }

    /// Tries to unwrap one age stanza, preferring identities whose public key
    /// is the stanza's recipient.
    fn unwrap(&self, stanza: &AgeStanza) -> Option<Zeroizing<Vec<u8>>> {
        let want = ssh_key_core(&stanza.recipient);
        let mut order: Vec<&Loaded> = self.ids.iter().filter(|l| ssh_key_core(&l.public) == want).collect();
        if order.is_empty() {
            // The recipient string may be spelled differently; try everything.
            order = self.ids.iter().collect();
        }
        for l in order {
            if let Some(key) = unwrap_with(stanza, l.identity.as_ref()) {
                return Some(key);
            }
        }
        None
    }
}

fn unwrap_with(stanza: &AgeStanza, identity: &dyn age::Identity) -> Option<Zeroizing<Vec<u8>>> {
    let armored = age::armor::ArmoredReader::new(stanza.enc.as_bytes());
    let decryptor = age::Decryptor::new_buffered(BufReader::new(armored)).ok()?;
    let mut reader = decryptor.decrypt(std::iter::once(identity)).ok()?;
    let mut out = Zeroizing::new(Vec::with_capacity(32));
    reader.read_to_end(&mut out).ok()?;
    Some(out)
}

fn gf_mult(a: u8, b: u8) -> u8 {
    let mut acc: u8 = 0;
    for i in (0..8).rev() {
        let bit = (b >> i) & 1;
        let a_or_zero = 0u8.wrapping_sub(bit) & a;
        let reduce = 0u8.wrapping_sub(acc >> 7) & 0x1B;
        acc = a_or_zero ^ (reduce ^ acc.wrapping_add(acc));
    }
    acc
}

fn gf_inverse(a: u8) -> u8 {
    // a^254 by square-and-multiply.
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u32;
    while e > 0 {
        if e & 1 == 1 {
            result = gf_mult(result, base);
        }
        base = gf_mult(base, base);
        e >>= 1;
    }
    result
}

/// Recombines Shamir shares as sops does (last byte of each part is x).
pub fn shamir_combine(parts: &[Zeroizing<Vec<u8>>]) -> Result<Zeroizing<Vec<u8>>, String> {
    if parts.len() < 2 {
        return Err("less than two parts cannot be used to reconstruct the secret".into());
    }
    let len = parts[0].len();
    if len < 2 || parts.iter().any(|p| p.len() != len) {
        return Err("shares have inconsistent lengths".into());
    }
    let xs: Vec<u8> = parts.iter().map(|p| p[len - 1]).collect();
    for (i, x) in xs.iter().enumerate() {
        if xs[..i].contains(x) {
            return Err("duplicate share detected".into());
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    for (idx, out) in secret.iter_mut().enumerate() {
        let mut result = 0u8;
        for (i, part) in parts.iter().enumerate() {
            let mut basis = 1u8;
            for (j, xj) in xs.iter().enumerate() {
                if i == j {
                    continue;
                }
                let num = *xj; // 0 xor x_j
                let denom = xs[i] ^ xj;
                basis = gf_mult(basis, gf_mult(num, gf_inverse(denom)));
            }
            result ^= gf_mult(part[idx], basis);
        }
        *out = result;
    }
    Ok(secret)
}

/// Recovers the 32-byte data key of a file.
pub fn data_key(file: &str, md: &Metadata, ids: &Identities) -> Result<Zeroizing<[u8; 32]>, Error> {
    let recipients = md.recipients();
    if recipients.is_empty() {
        return Err(Error::UnsupportedKeyType {
            file: file.to_string(),
            key_types: md.other_key_types(),
        });
    }
    let mut parts: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    for group in &md.key_groups {
        if let Some(part) = group.age.iter().find_map(|s| ids.unwrap(s)) {
            parts.push(part);
        }
    }
    let no_match = || Error::NoMatchingIdentity {
        file: file.to_string(),
        recipients: recipients.clone(),
        host_keys: ids.public_keys(),
    };
    let key = if md.key_groups.len() > 1 {
        let threshold = if md.shamir_threshold == 0 {
            md.key_groups.len()
        } else {
            md.shamir_threshold
        };
        if parts.len() < threshold.max(1) {
            return Err(no_match());
        }
        shamir_combine(&parts).map_err(|reason| Error::DataKey {
            file: file.to_string(),
            reason,
        })?
    } else {
        parts.pop().ok_or_else(no_match)?
    };
    let arr: [u8; 32] = key.as_slice().try_into().map_err(|_| Error::DataKey {
        file: file.to_string(),
        reason: format!("data key has {} bytes, expected 32", key.len()),
    })?;
    Ok(Zeroizing::new(arr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn gf_arithmetic() {
        assert_eq!(gf_mult(0x57, 0x83), 0xC1); // FIPS-197 example
        for a in 1..=255u8 {
            assert_eq!(gf_mult(a, gf_inverse(a)), 1);
        }
    }

    #[test]
    fn shamir_two_of_three() {
        // Secret 0x2A split with polynomial f(x) = 0x2A + 0x11 x.
        let f = |x: u8| 0x2A ^ gf_mult(0x11, x);
        let part = |x: u8| Zeroizing::new(vec![f(x), x]);
        let s = shamir_combine(&[part(1), part(3)]).expect("combine");
        assert_eq!(s.as_slice(), &[0x2A]);
        let s = shamir_combine(&[part(2), part(3)]).expect("combine");
        assert_eq!(s.as_slice(), &[0x2A]);
        assert!(shamir_combine(&[part(2), part(2)]).is_err());
    }

    #[test]
    fn identity_text_parsing() {
        let id = age::x25519::Identity::generate();
        let text = format!(
            "# created: now\n# public key: {}\n\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        );
        let mut ids = Identities::new();
        ids.add_text("test", &text).expect("parse");
        assert_eq!(ids.public_keys(), vec![id.to_public().to_string()]);
        let err = Identities::new().add_text("test", "# nothing\n").expect_err("empty");
        assert!(err.to_string().contains("no identity found"));
        let err = Identities::new()
            .add_text("test", "AGE-SECRET-KEY-1XYZ\n")
            .expect_err("bad key");
        assert!(!err.to_string().contains("XYZ"), "no key material in errors");
        assert!(format!("{ids:?}").contains("age1"));
    }
}
