//! The in-memory tree shared by all formats, mirroring sops' `TreeBranch`.
//!
//! The same types hold the encrypted file (values are `ENC[...]` strings) and
//! the decrypted document (values are plaintext). Every byte buffer is a
//! [`Secret`], zeroized on drop, and `Debug` never prints contents.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// A byte buffer wiped on drop. Strings may hold invalid UTF-8 (binary files).
pub type Secret = Zeroizing<Vec<u8>>;

/// Make a [`Secret`] from bytes.
pub fn secret(bytes: &[u8]) -> Secret {
    Zeroizing::new(bytes.to_vec())
}

/// A node of the tree.
pub enum Value {
    /// YAML/JSON null; never encrypted and not part of the MAC.
    Null,
    /// A string (sops type `str`).
    Str(Secret),
    /// An integer (sops type `int`).
    Int(i64),
    /// A float (sops type `float`).
    Float(f64),
    /// A boolean (sops type `bool`).
    Bool(bool),
    /// Raw bytes (sops type `bytes`, written by old sops versions).
    Bytes(Secret),
    /// A timestamp in RFC 3339 text form (sops type `time`).
    Time(Secret),
    /// A comment that is an item of a sequence (sops type `comment`).
    Comment(Secret),
    /// A mapping, in file order.
    Map(Vec<Entry>),
    /// A sequence, in file order; may contain [`Value::Comment`] items.
    Seq(Vec<Value>),
}

/// An item of a mapping: a key and its value, or a comment line.
pub enum Entry {
    /// A comment line (text after `#`).
    Comment(Secret),
    /// A key and its value.
    Pair(String, Value),
}

impl Value {
    /// Name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Str(_) => "string",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Bytes(_) => "bytes",
            Value::Time(_) => "timestamp",
            Value::Comment(_) => "comment",
            Value::Map(_) => "mapping",
            Value::Seq(_) => "sequence",
        }
    }

    /// Wipe every scalar in place (strings are also wiped on drop).
    pub fn wipe(&mut self) {
        match self {
            Value::Null => {}
            Value::Str(s) | Value::Bytes(s) | Value::Time(s) | Value::Comment(s) => s.zeroize(),
            Value::Int(i) => i.zeroize(),
            Value::Float(f) => f.zeroize(),
            Value::Bool(b) => b.zeroize(),
            Value::Map(entries) => {
                for e in entries {
                    match e {
                        Entry::Comment(c) => c.zeroize(),
                        Entry::Pair(_, v) => v.wipe(),
                    }
                }
            }
            Value::Seq(items) => {
                for v in items {
                    v.wipe();
                }
            }
        }
    }

    /// Deep copy.
    pub fn deep_clone(&self) -> Value {
        match self {
            Value::Null => Value::Null,
            Value::Str(s) => Value::Str(s.clone()),
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::Bool(b) => Value::Bool(*b),
            Value::Bytes(s) => Value::Bytes(s.clone()),
            Value::Time(s) => Value::Time(s.clone()),
            Value::Comment(s) => Value::Comment(s.clone()),
            Value::Map(entries) => Value::Map(entries.iter().map(Entry::deep_clone).collect()),
            Value::Seq(items) => Value::Seq(items.iter().map(Value::deep_clone).collect()),
        }
    }
}

impl Entry {
    /// Deep copy.
    pub fn deep_clone(&self) -> Entry {
        match self {
            Entry::Comment(c) => Entry::Comment(c.clone()),
            Entry::Pair(k, v) => Entry::Pair(k.clone(), v.deep_clone()),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Map(entries) => f.debug_list().entries(entries.iter()).finish(),
            Value::Seq(items) => f.debug_list().entries(items.iter()).finish(),
            Value::Null => f.write_str("null"),
            other => write!(f, "<{} redacted>", other.kind()),
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Comment(_) => f.write_str("<comment redacted>"),
            Entry::Pair(k, v) => write!(f, "{k:?}: {v:?}"),
        }
    }
}

/// The bytes sops feeds into the MAC for a scalar (Go's `sops.ToBytes`).
/// Returns `None` for values that are not part of the MAC.
pub fn mac_bytes(v: &Value, out: &mut Vec<u8>) -> bool {
    out.clear();
    match v {
        Value::Str(s) | Value::Bytes(s) | Value::Time(s) => out.extend_from_slice(s),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) => super::gofmt::format_float_f(*f, out),
        Value::Bool(true) => out.extend_from_slice(b"True"),
        Value::Bool(false) => out.extend_from_slice(b"False"),
        Value::Null | Value::Comment(_) | Value::Map(_) | Value::Seq(_) => return false,
    }
    true
}
