//! The `sops` metadata section, in its tree form (YAML, JSON, binary) or its
//! flattened form (dotenv `sops_*` keys, INI `[sops]` section).

use regex::bytes::Regex;

use super::error::Error;
use super::tree::{Entry, Value};

/// One `age` entry: a recipient and the data key encrypted to it (armored age file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeStanza {
    /// The recipient (`age1...` or `ssh-ed25519 AAAA...`).
    pub recipient: String,
    /// The armored age file holding the data key (or its Shamir share).
    pub enc: String,
}

/// A key group: every key in it encrypts the same data key (or share).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyGroup {
    /// The age keys of the group.
    pub age: Vec<AgeStanza>,
    /// Key types present in the group that this module cannot use (`pgp`, `kms`, ...).
    pub other: Vec<&'static str>,
}

/// Which values sops encrypted (at most one rule may be set per file).
#[derive(Clone, Debug)]
pub enum Rule {
    /// Values under a key ending with this suffix are cleartext (default `_unencrypted`).
    UnencryptedSuffix(String),
    /// Only values under a key ending with this suffix are encrypted.
    EncryptedSuffix(String),
    /// Values under a key matching this regex are cleartext.
    UnencryptedRegex(Regex),
    /// Only values under a key matching this regex are encrypted.
    EncryptedRegex(Regex),
    /// Values preceded by a comment matching this regex are cleartext.
    UnencryptedCommentRegex(Regex),
    /// Only values preceded by a comment matching this regex are encrypted.
    EncryptedCommentRegex(Regex),
}

/// The parsed `sops` metadata.
#[derive(Clone, Debug)]
pub struct Metadata {
    /// Key groups; a file without `key_groups` has exactly one.
    pub key_groups: Vec<KeyGroup>,
    /// Shamir threshold (0 when unset).
    pub shamir_threshold: usize,
    /// `lastmodified`, as in the file.
    pub last_modified: String,
    /// The encrypted MAC (`mac`).
    pub mac: String,
    /// The encryption rule.
    pub rule: Rule,
    /// `mac_only_encrypted`.
    pub mac_only_encrypted: bool,
    /// `version`.
    pub version: String,
}

const OTHER_KEY_TYPES: [(&str, &str); 5] = [
    ("pgp", "pgp"),
    ("kms", "kms"),
    ("gcp_kms", "gcp_kms"),
    ("azure_kv", "azure_kv"),
    ("hc_vault", "hc_vault"),
];

fn get<'a>(map: &'a [Entry], key: &str) -> Option<&'a Value> {
    map.iter().find_map(|e| match e {
        Entry::Pair(k, v) if k == key => Some(v),
        _ => None,
    })
}

fn as_string(file: &str, field: &str, v: Option<&Value>) -> Result<String, Error> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::Str(s)) | Some(Value::Time(s)) => {
            String::from_utf8(s.to_vec()).map_err(|_| Error::bad_metadata(file, format!("{field} is not UTF-8")))
        }
        Some(other) => Err(Error::bad_metadata(
            file,
            format!("{field} must be a string, found {}", other.kind()),
        )),
    }
}

fn as_list<'a>(file: &str, field: &str, v: Option<&'a Value>) -> Result<&'a [Value], Error> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Seq(items)) => Ok(items),
        Some(other) => Err(Error::bad_metadata(
            file,
            format!("{field} must be a list, found {}", other.kind()),
        )),
    }
}

fn as_map<'a>(file: &str, field: &str, v: &'a Value) -> Result<&'a [Entry], Error> {
    match v {
        Value::Map(entries) => Ok(entries),
        other => Err(Error::bad_metadata(
            file,
            format!("{field} must be a mapping, found {}", other.kind()),
        )),
    }
}

fn group_from(file: &str, map: &[Entry]) -> Result<KeyGroup, Error> {
    let mut group = KeyGroup::default();
    for item in as_list(file, "age", get(map, "age"))? {
        if matches!(item, Value::Comment(_)) {
            continue;
        }
        let m = as_map(file, "age entry", item)?;
        group.age.push(AgeStanza {
            recipient: as_string(file, "age recipient", get(m, "recipient"))?
                .trim()
                .to_string(),
            enc: as_string(file, "age enc", get(m, "enc"))?,
        });
    }
    for (field, name) in OTHER_KEY_TYPES {
        if !as_list(file, field, get(map, field))?.is_empty() {
            group.other.push(name);
        }
    }
    Ok(group)
}

fn compile(file: &str, field: &str, pattern: &str) -> Result<Regex, Error> {
    Regex::new(pattern).map_err(|e| Error::bad_metadata(file, format!("invalid {field}: {e}")))
}

impl Metadata {
    /// Reads metadata from the value of the `sops` key.
    /// `flat` is set for dotenv/INI, where every value is a string.
    pub fn from_value(file: &str, sops: &Value, flat: bool) -> Result<Metadata, Error> {
        let map = as_map(file, "sops", sops)?;
        let top = group_from(file, map)?;
        let mut key_groups = Vec::new();
        if !top.age.is_empty() || !top.other.is_empty() {
            key_groups.push(top);
        } else {
            for g in as_list(file, "key_groups", get(map, "key_groups"))? {
                if matches!(g, Value::Comment(_)) {
                    continue;
                }
                key_groups.push(group_from(file, as_map(file, "key group", g)?)?);
            }
        }
        if key_groups.is_empty() {
            return Err(Error::bad_metadata(file, "no keys found in file"));
        }
        let shamir_threshold = match get(map, "shamir_threshold") {
            None | Some(Value::Null) => 0,
            Some(Value::Int(i)) if *i >= 0 => *i as usize,
            Some(Value::Float(f)) if *f >= 0.0 && f.fract() == 0.0 && *f < 1e9 => *f as usize,
            Some(Value::Str(s)) if flat => std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| Error::bad_metadata(file, "shamir_threshold is not an integer"))?,
            Some(_) => return Err(Error::bad_metadata(file, "shamir_threshold is not an integer")),
        };
        let mac_only_encrypted = match get(map, "mac_only_encrypted") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Str(s)) if flat => s.as_slice() == b"true",
            Some(_) => return Err(Error::bad_metadata(file, "mac_only_encrypted is not a boolean")),
        };
        let last_modified = as_string(file, "lastmodified", get(map, "lastmodified"))?;
        if super::gofmt::rfc3339_seconds(&last_modified).is_none() {
            return Err(Error::bad_metadata(file, "lastmodified is not an RFC 3339 time"));
        }
        let mut rules = Vec::new();
        for field in [
            "unencrypted_suffix",
            "encrypted_suffix",
            "unencrypted_regex",
            "encrypted_regex",
            "unencrypted_comment_regex",
            "encrypted_comment_regex",
        ] {
            let v = as_string(file, field, get(map, field))?;
            if !v.is_empty() {
                rules.push((field, v));
            }
        }
        if rules.len() > 1 {
            return Err(Error::bad_metadata(
                file,
                "cannot use more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, \
                 unencrypted_regex, encrypted_comment_regex, or unencrypted_comment_regex in the same file",
            ));
        }
        let rule = match rules.pop() {
            None => Rule::UnencryptedSuffix("_unencrypted".to_string()),
            Some(("unencrypted_suffix", v)) => Rule::UnencryptedSuffix(v),
            Some(("encrypted_suffix", v)) => Rule::EncryptedSuffix(v),
            Some(("unencrypted_regex", v)) => Rule::UnencryptedRegex(compile(file, "unencrypted_regex", &v)?),
            Some(("encrypted_regex", v)) => Rule::EncryptedRegex(compile(file, "encrypted_regex", &v)?),
            Some(("unencrypted_comment_regex", v)) => {
                Rule::UnencryptedCommentRegex(compile(file, "unencrypted_comment_regex", &v)?)
            }
            Some((_, v)) => Rule::EncryptedCommentRegex(compile(file, "encrypted_comment_regex", &v)?),
        };
        Ok(Metadata {
            key_groups,
            shamir_threshold,
            last_modified,
            mac: as_string(file, "mac", get(map, "mac"))?,
            rule,
            mac_only_encrypted,
            version: as_string(file, "version", get(map, "version"))?,
        })
    }

    /// All age recipients of the file, in order, without duplicates.
    pub fn recipients(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in &self.key_groups {
            for a in &g.age {
                if !out.contains(&a.recipient) {
                    out.push(a.recipient.clone());
                }
            }
        }
        out
    }

    /// The unsupported key types present anywhere in the file.
    pub fn other_key_types(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in &self.key_groups {
            for t in &g.other {
                if !out.iter().any(|o| o == t) {
                    out.push((*t).to_string());
                }
            }
        }
        out
    }
}

const MAP_SEP: &str = "__map_";
const LIST_SEP: &str = "__list_";

enum Flat {
    Map(Vec<(String, Flat)>),
    List(Vec<Option<Flat>>),
    Leaf(Value),
}

enum Token {
    Key(String),
    Index(usize),
}

/// Splits a flattened key like sops' `tokenize` (`age__list_0__map_enc`).
fn tokenize(path: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut state_list = false;
    let mut content_start = 0usize;
    let mut i = 0usize;
    let finish = |tokens: &mut Vec<Token>, state_list: bool, s: &str| {
        if state_list {
            tokens.push(Token::Index(s.parse().unwrap_or(0)));
        } else {
            tokens.push(Token::Key(s.to_string()));
        }
    };
    while i < path.len() {
        if path[i..].starts_with(MAP_SEP) {
            finish(&mut tokens, state_list, &path[content_start..i]);
            state_list = false;
            i += MAP_SEP.len();
            content_start = i;
        } else if path[i..].starts_with(LIST_SEP) {
            finish(&mut tokens, state_list, &path[content_start..i]);
            state_list = true;
            i += LIST_SEP.len();
            content_start = i;
        } else {
            i += path[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    finish(&mut tokens, state_list, &path[content_start..]);
    tokens
}

fn insert(node: &mut Flat, tokens: &[Token], value: Value) {
    let Some((first, rest)) = tokens.split_first() else {
        *node = Flat::Leaf(value);
        return;
    };
    let fresh = |rest: &[Token]| match rest.first() {
        Some(Token::Index(_)) => Flat::List(Vec::new()),
        _ => Flat::Map(Vec::new()),
    };
    match (first, &mut *node) {
        (Token::Key(k), Flat::Map(items)) => {
            let pos = match items.iter().position(|(name, _)| name == k) {
                Some(p) => p,
                None => {
                    items.push((k.clone(), fresh(rest)));
                    items.len() - 1
                }
            };
            insert(&mut items[pos].1, rest, value);
        }
        (Token::Index(i), Flat::List(items)) => {
            let i = (*i).min(10_000);
            if items.len() <= i {
                items.resize_with(i + 1, || None);
            }
            let slot = items[i].get_or_insert_with(|| fresh(rest));
            insert(slot, rest, value);
        }
        (_, other) => {
            // Type conflict: the later key wins, like a Go map overwrite would.
            *other = fresh(tokens);
            insert(other, tokens, value);
        }
    }
}

fn into_value(f: Flat) -> Value {
    match f {
        Flat::Leaf(v) => v,
        Flat::Map(items) => Value::Map(items.into_iter().map(|(k, v)| Entry::Pair(k, into_value(v))).collect()),
        Flat::List(items) => Value::Seq(items.into_iter().map(|v| v.map_or(Value::Null, into_value)).collect()),
    }
}

/// Rebuilds the metadata tree from flattened `key = value` pairs
/// (keys without the `sops_` prefix). `\n` escapes are decoded.
pub fn unflatten(pairs: Vec<(String, Value)>) -> Value {
    let mut root = Flat::Map(Vec::new());
    for (k, v) in pairs {
        let tokens = tokenize(&k);
        insert(&mut root, &tokens, v);
    }
    into_value(root)
}

#[cfg(test)]
mod tests {
    use super::super::tree::secret;
    use super::*;

    #[test]
    fn unflattens_sops_keys() {
        let v = unflatten(vec![
            ("age__list_0__map_recipient".into(), Value::Str(secret(b"age1x"))),
            ("age__list_0__map_enc".into(), Value::Str(secret(b"E"))),
            ("age__list_1__map_recipient".into(), Value::Str(secret(b"age1y"))),
            ("lastmodified".into(), Value::Str(secret(b"2024-01-01T00:00:00Z"))),
            ("mac".into(), Value::Str(secret(b"M"))),
            ("mac_only_encrypted".into(), Value::Str(secret(b"true"))),
        ]);
        let md = Metadata::from_value("f", &v, true).expect("valid");
        assert_eq!(md.recipients(), vec!["age1x".to_string(), "age1y".to_string()]);
        assert_eq!(md.key_groups[0].age[0].enc, "E");
        assert!(md.mac_only_encrypted);
        assert!(matches!(md.rule, Rule::UnencryptedSuffix(ref s) if s == "_unencrypted"));
    }

    #[test]
    fn two_rules_are_refused() {
        let v = unflatten(vec![
            ("age__list_0__map_recipient".into(), Value::Str(secret(b"age1x"))),
            ("lastmodified".into(), Value::Str(secret(b"2024-01-01T00:00:00Z"))),
            ("encrypted_regex".into(), Value::Str(secret(b"^a"))),
            ("unencrypted_suffix".into(), Value::Str(secret(b"_u"))),
        ]);
        let err = Metadata::from_value("f", &v, true).expect_err("two rules");
        assert!(matches!(err, Error::BadMetadata { .. }));
    }
}
