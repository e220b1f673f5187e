//! Decryption of the tree and MAC computation, following sops' `Tree.Decrypt`.

use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use super::cipher::decrypt_value;
use super::error::Error;
use super::metadata::{Metadata, Rule};
use super::tree::{mac_bytes, Entry, Secret, Value};

/// Initial MAC bytes when `mac_only_encrypted` is set (`sha256("sops")`).
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b, 0x97, 0x5b,
    0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Builds the additional data sops uses for a value: keys joined by `:` plus a trailing `:`.
pub fn aad_for_path<S: AsRef<str>>(path: &[S]) -> String {
    let mut out = String::new();
    for (i, p) in path.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(p.as_ref());
    }
    out.push(':');
    out
}

struct Walker<'a> {
    file: &'a str,
    key: &'a [u8; 32],
    md: &'a Metadata,
    hasher: Sha512,
    path: Vec<&'a str>,
    /// `k1:k2:` for the current path (empty for the root).
    aad: String,
    comments: Vec<Vec<&'a [u8]>>,
    scratch: Zeroizing<Vec<u8>>,
}

impl<'a> Walker<'a> {
    fn aad(&self) -> &[u8] {
        if self.aad.is_empty() {
            b":"
        } else {
            self.aad.as_bytes()
        }
    }

    fn should_encrypt(&self, is_comment: bool) -> bool {
        match &self.md.rule {
            Rule::UnencryptedSuffix(s) => !self.path.iter().any(|p| p.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => self.path.iter().any(|p| p.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !self.path.iter().any(|p| r.is_match(p.as_bytes())),
            Rule::EncryptedRegex(r) => self.path.iter().any(|p| r.is_match(p.as_bytes())),
            Rule::UnencryptedCommentRegex(r) => !self.comments.iter().flatten().any(|c| r.is_match(c)),
            Rule::EncryptedCommentRegex(r) => {
                let last_level = self.comments.len().saturating_sub(1);
                let last_len = self.comments.last().map_or(0, Vec::len);
                self.comments.iter().enumerate().any(|(i, level)| {
                    level.iter().enumerate().any(|(j, c)| {
                        let own_line = is_comment && i == last_level && j + 1 == last_len;
                        !own_line && r.is_match(c)
                    })
                })
            }
        }
    }

    fn key_path(&self) -> String {
        self.path.join(":")
    }

    fn hash(&mut self, v: &Value, encrypted: bool) {
        if (!self.md.mac_only_encrypted || encrypted) && mac_bytes(v, &mut self.scratch) {
            self.hasher.update(self.scratch.as_slice());
        }
    }

    /// A comment: decrypted when it should be, kept verbatim when it does not decrypt.
    fn comment(&self, text: &Secret) -> Secret {
        if !self.should_encrypt(true) {
            return text.clone();
        }
        let Ok(enc) = std::str::from_utf8(text) else {
            return text.clone();
        };
        match decrypt_value(enc, self.key, self.aad()) {
            Ok(Value::Comment(p)) | Ok(Value::Str(p)) => p,
            _ => text.clone(),
        }
    }

    fn leaf(&mut self, v: &'a Value) -> Result<Value, Error> {
        let encrypted = self.should_encrypt(false);
        let out = if encrypted {
            match v {
                Value::Str(s) => {
                    let enc = std::str::from_utf8(s)
                        .map_err(|_| Error::bad_value(self.file, &self.key_path(), "encrypted value is not UTF-8"))?;
                    decrypt_value(enc, self.key, self.aad())
                        .map_err(|reason| Error::bad_value(self.file, &self.key_path(), reason))?
                }
                other => {
                    return Err(Error::bad_value(
                        self.file,
                        &self.key_path(),
                        format!("expected an encrypted value, found a cleartext {}", other.kind()),
                    ))
                }
            }
        } else {
            v.deep_clone()
        };
        self.hash(&out, encrypted);
        Ok(out)
    }

    fn value(&mut self, v: &'a Value) -> Result<Value, Error> {
        match v {
            Value::Map(entries) => Ok(Value::Map(self.map(entries)?)),
            Value::Seq(items) => Ok(Value::Seq(self.seq(items)?)),
            Value::Null => Ok(Value::Null),
            Value::Comment(c) => Ok(Value::Comment(self.comment(c))),
            scalar => self.leaf(scalar),
        }
    }

    fn map(&mut self, entries: &'a [Entry]) -> Result<Vec<Entry>, Error> {
        self.comments.push(Vec::new());
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            match e {
                Entry::Comment(c) => {
                    if let Some(level) = self.comments.last_mut() {
                        level.push(c.as_slice());
                    }
                    out.push(Entry::Comment(self.comment(c)));
                }
                Entry::Pair(k, v) => {
                    let value_is_comment = matches!(v, Value::Comment(_));
                    if let Value::Comment(c) = v {
                        if let Some(level) = self.comments.last_mut() {
                            level.push(c.as_slice());
                        }
                    }
                    let aad_len = self.aad.len();
                    self.aad.push_str(k);
                    self.aad.push(':');
                    self.path.push(k.as_str());
                    let result = self.value(v);
                    self.path.pop();
                    self.aad.truncate(aad_len);
                    out.push(Entry::Pair(k.clone(), result?));
                    if !value_is_comment {
                        if let Some(level) = self.comments.last_mut() {
                            level.clear();
                        }
                    }
                }
            }
        }
        self.comments.pop();
        Ok(out)
    }

    fn seq(&mut self, items: &'a [Value]) -> Result<Vec<Value>, Error> {
        self.comments.push(Vec::new());
        let mut out = Vec::with_capacity(items.len());
        for v in items {
            let is_comment = if let Value::Comment(c) = v {
                if let Some(level) = self.comments.last_mut() {
                    level.push(c.as_slice());
                }
                true
            } else {
                false
            };
            out.push(self.value(v)?);
            if !is_comment {
                if let Some(level) = self.comments.last_mut() {
                    level.clear();
                }
            }
        }
        self.comments.pop();
        Ok(out)
    }
}

/// Decrypts all documents and verifies the MAC. Returns the decrypted documents.
pub fn decrypt_tree(file: &str, docs: &[Vec<Entry>], md: &Metadata, key: &[u8; 32]) -> Result<Vec<Vec<Entry>>, Error> {
    let mut w = Walker {
        file,
        key,
        md,
        hasher: Sha512::new(),
        path: Vec::new(),
        aad: String::new(),
        comments: Vec::new(),
        scratch: Zeroizing::new(Vec::new()),
    };
    if md.mac_only_encrypted {
        w.hasher.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        out.push(w.map(d)?);
    }
    let digest = w.hasher.finalize();
    let mut computed = String::with_capacity(128);
    for b in digest.iter() {
        computed.push_str(&format!("{b:02X}"));
    }
    let mac_aad = super::gofmt::rfc3339_seconds(&md.last_modified).unwrap_or_default();
    let stored =
        decrypt_value(&md.mac, key, mac_aad.as_bytes()).map_err(|_| Error::MacMismatch { file: file.to_string() })?;
    match stored {
        Value::Str(s) if s.as_slice() == computed.as_bytes() => Ok(out),
        _ => Err(Error::MacMismatch { file: file.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_paths() {
        assert_eq!(aad_for_path::<&str>(&[]), ":");
        assert_eq!(aad_for_path(&["a"]), "a:");
        assert_eq!(aad_for_path(&["db", "password"]), "db:password:");
        assert_eq!(aad_for_path(&["k:x", "y"]), "k:x:y:");
    }
}
