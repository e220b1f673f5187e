//! SOPS file parsing and decryption with age, compatible with `sops` 3.x.
//!
//! ```text
//! let ids = Identities::from_env()?;                 // or Identities::load(&[path])
//! let doc = decrypt("secrets/db.env", &bytes, Format::from_path(path), &ids)?;
//! let plaintext = doc.to_bytes()?;                   // byte-identical to `sops decrypt`
//! ```
//!
//! Supported: YAML, JSON, dotenv, INI and binary files; age recipients
//! (X25519 and SSH ed25519/RSA keys); key groups with Shamir thresholds; MAC
//! verification including `mac_only_encrypted`; all encryption rules
//! (`encrypted_regex`, `unencrypted_suffix`, comment regexes, ...).
//! Plaintext lives in [`zeroize::Zeroizing`] buffers and is never printed by
//! `Debug` or included in errors.

mod cipher;
mod error;
mod flat;
mod gofmt;
mod json;
mod keys;
mod metadata;
mod tree;
mod walk;
mod yaml_emit;
mod yaml_parse;

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

pub use self::error::{Error, Location};
pub use self::keys::{Identities, ENV_KEY, ENV_KEY_FILE, ENV_SSH_KEY_FILE};
pub use self::metadata::{AgeStanza, KeyGroup, Metadata, Rule};
pub use self::walk::aad_for_path;

use self::tree::{Entry, Value};

/// The file formats sops writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `.yaml` / `.yml`
    Yaml,
    /// `.json`
    Json,
    /// `.env`
    Dotenv,
    /// `.ini`
    Ini,
    /// Anything else: a JSON document holding the file in its `data` key.
    Binary,
}

impl Format {
    /// The format sops picks for a path (by its suffix, case-sensitive).
    pub fn from_path(path: &Path) -> Format {
        let s = path.to_string_lossy();
        if s.ends_with(".yaml") || s.ends_with(".yml") {
            Format::Yaml
        } else if s.ends_with(".json") {
            Format::Json
        } else if s.ends_with(".env") {
            Format::Dotenv
        } else if s.ends_with(".ini") {
            Format::Ini
        } else {
            Format::Binary
        }
    }

    /// The format for a name as given to sops' `--input-type` (`yaml`, `json`,
    /// `dotenv`, `ini`, `binary`).
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name {
            "yaml" => Format::Yaml,
            "json" => Format::Json,
            "dotenv" => Format::Dotenv,
            "ini" => Format::Ini,
            "binary" => Format::Binary,
            _ => return None,
        })
    }

    /// The lowercase name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Dotenv => "dotenv",
            Format::Ini => "ini",
            Format::Binary => "binary",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed, still encrypted SOPS file. Needs no keys to build.
pub struct EncryptedFile {
    name: String,
    format: Format,
    docs: Vec<Vec<Entry>>,
    metadata: Metadata,
}

impl fmt::Debug for EncryptedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedFile")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("documents", &self.docs.len())
            .field("recipients", &self.metadata.recipients())
            .finish()
    }
}

impl EncryptedFile {
    /// The file's sops metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Age recipients of the file.
    pub fn recipients(&self) -> Vec<String> {
        self.metadata.recipients()
    }

    /// Decrypts with the given identities and verifies the MAC.
    pub fn decrypt(&self, ids: &Identities) -> Result<Document, Error> {
        let key = keys::data_key(&self.name, &self.metadata, ids)?;
        let docs = walk::decrypt_tree(&self.name, &self.docs, &self.metadata, &key)?;
        Ok(Document {
            name: self.name.clone(),
            format: self.format,
            docs,
        })
    }
}

fn remove_sops_key(entries: &mut Vec<Entry>) -> Option<Value> {
    let pos = entries
        .iter()
        .position(|e| matches!(e, Entry::Pair(k, _) if k == "sops"))?;
    match entries.remove(pos) {
        Entry::Pair(_, v) => Some(v),
        Entry::Comment(_) => None,
    }
}

/// Parses a SOPS file without decrypting anything (safe to fuzz).
/// `name` is only used in error messages.
pub fn parse_named(name: &str, bytes: &[u8], format: Format) -> Result<EncryptedFile, Error> {
    let not_found = || Error::MetadataNotFound { file: name.to_string() };
    let (docs, metadata) = match format {
        Format::Yaml => {
            let mut docs = yaml_parse::parse(name, bytes)?;
            let mut md_value = None;
            for d in docs.iter_mut() {
                let v = remove_sops_key(d);
                if md_value.is_none() {
                    md_value = v;
                }
            }
            let md = Metadata::from_value(name, &md_value.ok_or_else(not_found)?, false)?;
            (docs, md)
        }
        Format::Json | Format::Binary => {
            let mut entries = json::parse(name, bytes)?;
            let md_value = remove_sops_key(&mut entries).ok_or_else(not_found)?;
            let md = Metadata::from_value(name, &md_value, false)?;
            (vec![entries], md)
        }
        Format::Dotenv => {
            let (entries, md_pairs) = flat::parse_dotenv(name, bytes)?;
            if md_pairs.is_empty() {
                return Err(not_found());
            }
            let md = Metadata::from_value(name, &metadata::unflatten(md_pairs), true)?;
            (vec![entries], md)
        }
        Format::Ini => {
            let (entries, md_pairs) = flat::parse_ini(name, bytes)?;
            let md_pairs = md_pairs.ok_or_else(not_found)?;
            let md = Metadata::from_value(name, &metadata::unflatten(md_pairs), true)?;
            (vec![entries], md)
        }
    };
    Ok(EncryptedFile {
        name: name.to_string(),
        format,
        docs,
        metadata,
    })
}

/// Parses a SOPS file without decrypting anything (the fuzzing entry point).
pub fn parse(bytes: &[u8], format: Format) -> Result<EncryptedFile, Error> {
    parse_named("<input>", bytes, format)
}

/// Parses and decrypts a SOPS file, verifying its MAC.
/// `name` (usually the path) is used in error messages.
pub fn decrypt(name: &str, bytes: &[u8], format: Format, ids: &Identities) -> Result<Document, Error> {
    parse_named(name, bytes, format)?.decrypt(ids)
}

/// The age recipients a file is encrypted to (for error messages).
pub fn recipients(bytes: &[u8], format: Format) -> Result<Vec<String>, Error> {
    Ok(parse(bytes, format)?.recipients())
}

/// A decrypted SOPS document. Plaintext is wiped on drop and never printed.
pub struct Document {
    name: String,
    format: Format,
    docs: Vec<Vec<Entry>>,
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("documents", &self.docs.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Document {
    fn drop(&mut self) {
        for d in self.docs.iter_mut() {
            for e in d.iter_mut() {
                if let Entry::Pair(_, v) = e {
                    v.wipe();
                }
            }
        }
    }
}

fn go_env_string(v: &Value) -> Zeroizing<Vec<u8>> {
    match v {
        Value::Null => Zeroizing::new(Vec::new()),
        other => flat::val_to_string(other),
    }
}

impl Document {
    /// The name the document was decrypted under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The document's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The plaintext exactly as `sops decrypt` prints it, in the file's format.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.to_bytes_as(self.format)
    }

    /// The plaintext as `sops decrypt --output-type FORMAT` would print it.
    pub fn to_bytes_as(&self, format: Format) -> Result<Zeroizing<Vec<u8>>, Error> {
        let emit_err = |reason: String| Error::Emit {
            file: self.name.clone(),
            format: format.name(),
            reason,
        };
        let first = || self.docs.first().map(Vec::as_slice).unwrap_or(&[]);
        match format {
            Format::Yaml => Ok(yaml_emit::emit(&self.docs)),
            Format::Json => json::emit(first()).map_err(emit_err),
            Format::Dotenv => flat::emit_dotenv(first()).map_err(emit_err),
            Format::Ini => flat::emit_ini(first()).map_err(emit_err),
            Format::Binary => {
                if self.docs.len() != 1 {
                    return Err(emit_err("there must be exactly one tree branch".into()));
                }
                for e in first() {
                    if let Entry::Pair(k, v) = e {
                        if k == "data" {
                            return match v {
                                Value::Str(s) => Ok(s.clone()),
                                _ => Err(emit_err("'data' key in tree does not have a string value".into())),
                            };
                        }
                    }
                }
                Err(emit_err("no binary data found in tree".into()))
            }
        }
    }

    /// Top-level keys and values as environment variables (for compose
    /// `env_file`). Nested values are an error naming the key.
    pub fn to_env(&self) -> Result<Vec<(String, Zeroizing<String>)>, Error> {
        let mut out = Vec::new();
        for d in &self.docs {
            for e in d {
                let Entry::Pair(k, v) = e else { continue };
                if matches!(v, Value::Map(_) | Value::Seq(_)) {
                    return Err(Error::NotFlat {
                        file: self.name.clone(),
                        key: k.clone(),
                        reason: format!("value is a {}", v.kind()),
                    });
                }
                if matches!(v, Value::Comment(_)) {
                    continue;
                }
                let bytes = go_env_string(v);
                let text = std::str::from_utf8(&bytes).map_err(|_| Error::NotFlat {
                    file: self.name.clone(),
                    key: k.clone(),
                    reason: "value is not valid UTF-8".into(),
                })?;
                if text.contains('\0') {
                    return Err(Error::NotFlat {
                        file: self.name.clone(),
                        key: k.clone(),
                        reason: "value contains a NUL byte".into(),
                    });
                }
                out.push((k.clone(), Zeroizing::new(text.to_string())));
            }
        }
        Ok(out)
    }

    /// A keyed hash (HMAC-SHA256, hex) of the plaintext content, safe to store
    /// in labels or state. Covers structure, keys, typed values and comments.
    pub fn content_hash(&self, key: &[u8; 32]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
        mac.update(b"tend-secrets-v1\0");
        mac.update(self.format.name().as_bytes());
        fn feed(mac: &mut Hmac<Sha256>, tag: u8, data: &[u8]) {
            mac.update(&[tag]);
            mac.update(&(data.len() as u64).to_be_bytes());
            mac.update(data);
        }
        fn value(mac: &mut Hmac<Sha256>, v: &Value) {
            let mut buf = Zeroizing::new(Vec::new());
            match v {
                Value::Map(entries) => {
                    feed(mac, b'm', &(entries.len() as u64).to_be_bytes());
                    for e in entries {
                        entry(mac, e);
                    }
                }
                Value::Seq(items) => {
                    feed(mac, b'l', &(items.len() as u64).to_be_bytes());
                    for i in items {
                        value(mac, i);
                    }
                }
                Value::Null => feed(mac, b'n', b""),
                Value::Comment(c) => feed(mac, b'#', c),
                Value::Str(s) => feed(mac, b's', s),
                Value::Bytes(s) => feed(mac, b'b', s),
                Value::Time(s) => feed(mac, b't', s),
                Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                    tree::mac_bytes(v, &mut buf);
                    feed(mac, v.kind().as_bytes()[0], &buf);
                }
            }
        }
        fn entry(mac: &mut Hmac<Sha256>, e: &Entry) {
            match e {
                Entry::Comment(c) => feed(mac, b'#', c),
                Entry::Pair(k, v) => {
                    feed(mac, b'k', k.as_bytes());
                    value(mac, v);
                }
            }
        }
        for d in &self.docs {
            feed(&mut mac, b'd', &(d.len() as u64).to_be_bytes());
            for e in d {
                entry(&mut mac, e);
            }
        }
        let tag = mac.finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::tree::secret;
    use super::*;

    fn doc(entries: Vec<Entry>, format: Format) -> Document {
        Document {
            name: "t".into(),
            format,
            docs: vec![entries],
        }
    }

    #[test]
    fn formats_from_path() {
        assert_eq!(Format::from_path(Path::new("a/b.yaml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("b.yml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("b.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("secrets/db.env")), Format::Dotenv);
        assert_eq!(Format::from_path(Path::new(".env")), Format::Dotenv);
        assert_eq!(Format::from_path(Path::new("x.ini")), Format::Ini);
        assert_eq!(Format::from_path(Path::new("x.YAML")), Format::Binary);
        assert_eq!(Format::from_path(Path::new("cert.pem")), Format::Binary);
        assert_eq!(Format::from_name("dotenv"), Some(Format::Dotenv));
        assert_eq!(Format::from_name("toml"), None);
    }

    #[test]
    fn env_flattening() {
        let d = doc(
            vec![
                Entry::Comment(secret(b" c")),
                Entry::Pair("A".into(), Value::Str(secret(b"x"))),
                Entry::Pair("N".into(), Value::Int(5)),
                Entry::Pair("F".into(), Value::Float(2.0)),
                Entry::Pair("B".into(), Value::Bool(false)),
                Entry::Pair("Z".into(), Value::Null),
            ],
            Format::Yaml,
        );
        let env = d.to_env().expect("flat");
        let got: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        assert_eq!(
            got,
            vec![
                ("A".into(), "x".into()),
                ("N".into(), "5".into()),
                ("F".into(), "2.0".into()),
                ("B".into(), "false".into()),
                ("Z".into(), "".into()),
            ]
        );
        let nested = doc(vec![Entry::Pair("db".into(), Value::Map(vec![]))], Format::Yaml);
        match nested.to_env() {
            Err(Error::NotFlat { key, .. }) => assert_eq!(key, "db"),
            other => panic!("expected NotFlat, got {other:?}"),
        }
    }

    #[test]
    fn content_hash_is_keyed_and_sensitive() {
        let a = doc(vec![Entry::Pair("A".into(), Value::Str(secret(b"x")))], Format::Dotenv);
        let b = doc(vec![Entry::Pair("A".into(), Value::Str(secret(b"y")))], Format::Dotenv);
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        assert_eq!(a.content_hash(&k1).len(), 64);
        assert_ne!(a.content_hash(&k1), b.content_hash(&k1));
        assert_ne!(a.content_hash(&k1), a.content_hash(&k2));
        assert_eq!(a.content_hash(&k1), a.content_hash(&k1));
        assert!(!format!("{a:?}").contains('x'.to_string().as_str()) || !format!("{a:?}").contains("\"x\""));
    }

    #[test]
    fn debug_never_shows_plaintext() {
        let v = Value::Map(vec![Entry::Pair("k".into(), Value::Str(secret(b"hunter2")))]);
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("hunter2"));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn parse_without_metadata_is_refused() {
        assert!(matches!(
            parse(b"a: 1\n", Format::Yaml),
            Err(Error::MetadataNotFound { .. })
        ));
        assert!(matches!(
            parse(b"{\"a\": 1}", Format::Json),
            Err(Error::MetadataNotFound { .. })
        ));
        assert!(matches!(
            parse(b"A=1\n", Format::Dotenv),
            Err(Error::MetadataNotFound { .. })
        ));
        assert!(matches!(
            parse(b"[a]\nb=1\n", Format::Ini),
            Err(Error::MetadataNotFound { .. })
        ));
    }
}
