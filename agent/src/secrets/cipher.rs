//! sops' value cipher: `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]`.

use aes_gcm::aead::generic_array::typenum::{U12, U16, U32};
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::AesGcm;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use zeroize::Zeroizing;

use super::tree::{Secret, Value};

/// Go's `base64.StdEncoding`: padding required, trailing bits not checked.
pub const GO_STD_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// The type tag of an encrypted value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// `str`
    Str,
    /// `int`
    Int,
    /// `float`
    Float,
    /// `bool`
    Bool,
    /// `bytes`
    Bytes,
    /// `time`
    Time,
    /// `comment`
    Comment,
}

/// The parts of an `ENC[...]` value, still base64-encoded.
#[derive(Debug, PartialEq, Eq)]
pub struct EncParts<'a> {
    /// Ciphertext (base64).
    pub data: &'a str,
    /// Nonce (base64).
    pub iv: &'a str,
    /// GCM tag (base64).
    pub tag: &'a str,
    /// Type name.
    pub ty: &'a str,
}

/// Splits an encrypted value like sops' regular expression
/// `^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]` does.
pub fn split_enc(s: &str) -> Option<EncParts<'_>> {
    let rest = s.strip_prefix("ENC[AES256_GCM,data:")?;
    let end = rest.rfind(']')?;
    let body = &rest[..end];
    let t = body.rfind(",type:")?;
    let ty = &body[t + 6..];
    let body = &body[..t];
    let g = body.rfind(",tag:")?;
    let tag = &body[g + 5..];
    let body = &body[..g];
    let v = body.rfind(",iv:")?;
    let iv = &body[v + 4..];
    let data = &body[..v];
    if data.is_empty() || iv.is_empty() || tag.is_empty() || ty.is_empty() {
        return None;
    }
    Some(EncParts { data, iv, tag, ty })
}

impl ValueType {
    fn parse(s: &str) -> Option<ValueType> {
        Some(match s {
            "str" => ValueType::Str,
            "int" => ValueType::Int,
            "float" => ValueType::Float,
            "bool" => ValueType::Bool,
            "bytes" => ValueType::Bytes,
            "time" => ValueType::Time,
            "comment" => ValueType::Comment,
            _ => return None,
        })
    }
}

/// The reason a value could not be decrypted (never contains plaintext).
pub type Reason = String;

fn open_with<N>(key: &[u8; 32], iv: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<(), Reason>
where
    N: aes_gcm::aead::generic_array::ArrayLength<u8>,
{
    let cipher = AesGcm::<Aes256, N>::new(GenericArray::from_slice(key));
    cipher
        .decrypt_in_place_detached(
            GenericArray::from_slice(iv),
            aad,
            buf,
            GenericArray::<u8, U16>::from_slice(tag),
        )
        .map_err(|_| "authentication failed (wrong key, tampered value or wrong key path)".to_string())
}

/// Decrypts the raw bytes of an `ENC[...]` value, returning plaintext and type.
pub fn decrypt_raw(enc: &str, key: &[u8; 32], aad: &[u8]) -> Result<(Secret, ValueType), Reason> {
    let parts = split_enc(enc).ok_or_else(|| "value does not match sops' ENC[AES256_GCM,...] format".to_string())?;
    let ty = ValueType::parse(parts.ty).ok_or_else(|| format!("unknown datatype {:?}", parts.ty))?;
    let mut buf = Zeroizing::new(
        GO_STD_B64
            .decode(parts.data)
            .map_err(|e| format!("invalid base64 in data: {e}"))?,
    );
    let iv = GO_STD_B64
        .decode(parts.iv)
        .map_err(|e| format!("invalid base64 in iv: {e}"))?;
    let tag = GO_STD_B64
        .decode(parts.tag)
        .map_err(|e| format!("invalid base64 in tag: {e}"))?;
    if tag.len() != 16 {
        return Err(format!("GCM tag has {} bytes, expected 16", tag.len()));
    }
    match iv.len() {
        32 => open_with::<U32>(key, &iv, aad, &mut buf, &tag)?,
        12 => open_with::<U12>(key, &iv, aad, &mut buf, &tag)?,
        16 => open_with::<U16>(key, &iv, aad, &mut buf, &tag)?,
        n => return Err(format!("unsupported IV length {n}")),
    }
    Ok((buf, ty))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.Atoi` (base 10, optional sign, 64-bit).
fn parse_go_int(s: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(s).ok()?;
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

/// Go's `strconv.ParseFloat(s, 64)` for the inputs sops produces.
fn parse_go_float(s: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(s).ok()?;
    if text.contains('_') {
        return None;
    }
    text.parse::<f64>().ok()
}

/// Decrypts an `ENC[...]` value into a typed [`Value`], like sops' `Cipher.Decrypt`.
/// The empty string decrypts to the empty string.
pub fn decrypt_value(enc: &str, key: &[u8; 32], aad: &[u8]) -> Result<Value, Reason> {
    if enc.is_empty() {
        return Ok(Value::Str(Zeroizing::new(Vec::new())));
    }
    let (plain, ty) = decrypt_raw(enc, key, aad)?;
    Ok(match ty {
        ValueType::Str => Value::Str(plain),
        ValueType::Bytes => Value::Bytes(plain),
        ValueType::Comment => Value::Comment(plain),
        ValueType::Int => Value::Int(parse_go_int(&plain).ok_or("decrypted int does not parse")?),
        ValueType::Float => Value::Float(parse_go_float(&plain).ok_or("decrypted float does not parse")?),
        ValueType::Bool => Value::Bool(parse_go_bool(&plain).ok_or("decrypted bool does not parse")?),
        ValueType::Time => {
            let text = std::str::from_utf8(&plain).map_err(|_| "decrypted time is not UTF-8")?;
            if super::gofmt::rfc3339_seconds(text).is_none() {
                return Err("decrypted time is not RFC 3339".to_string());
            }
            Value::Time(plain)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_enc_values() {
        let p = split_enc("ENC[AES256_GCM,data:AAA=,iv:BBB=,tag:CCC=,type:str]").expect("valid");
        assert_eq!(
            p,
            EncParts {
                data: "AAA=",
                iv: "BBB=",
                tag: "CCC=",
                ty: "str"
            }
        );
        assert!(split_enc("ENC[AES256_GCM,data:,iv:B,tag:C,type:str]").is_none());
        assert!(split_enc("plain").is_none());
        assert!(split_enc("ENC[AES256_GCM,data:A,iv:B,type:str]").is_none());
    }

    #[test]
    fn go_scalar_parsers() {
        assert_eq!(parse_go_int(b"-42"), Some(-42));
        assert_eq!(parse_go_int(b"+7"), Some(7));
        assert_eq!(parse_go_int(b"1_000"), None);
        assert_eq!(parse_go_int(b""), None);
        assert_eq!(parse_go_bool(b"True"), Some(true));
        assert_eq!(parse_go_bool(b"F"), Some(false));
        assert_eq!(parse_go_bool(b"yes"), None);
        assert_eq!(parse_go_float(b"1.5"), Some(1.5));
        assert_eq!(parse_go_float(b"1_0"), None);
    }

    #[test]
    fn wrong_key_is_refused() {
        let key = [7u8; 32];
        let err = decrypt_value(
            "ENC[AES256_GCM,data:PA==,iv:Ji3x+D08nMWZjtatqOw4yrkaPh4fSbmIU5qZ4hcan98=,tag:5pUY298pwS+Vi/hvXmt+rQ==,type:int]",
            &key,
            b"a:",
        )
        .expect_err("must fail");
        assert!(err.contains("authentication failed"));
    }
}
