//! JSON as sops reads it (Go `encoding/json` token stream: order and duplicate
//! keys kept, numbers are float64) and writes it (`json.Marshal` + `json.Indent`
//! with a tab).

use base64::Engine;
use zeroize::Zeroizing;

use super::error::{Error, Location};
use super::tree::{Entry, Value};

struct Parser<'s> {
    s: &'s [u8],
    i: usize,
    file: &'s str,
    depth: usize,
}

type R<T> = Result<T, Error>;

impl<'s> Parser<'s> {
    fn line(&self) -> usize {
        1 + self.s[..self.i.min(self.s.len())]
            .iter()
            .filter(|c| **c == b'\n')
            .count()
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::malformed(self.file, "json", Location::line(self.line()), reason)
    }

    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ') | Some(b'\t') | Some(b'\n') | Some(b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> R<()> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected '{}'", c as char)))
        }
    }

    fn value(&mut self) -> R<Value> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                Ok(Value::Map(self.object_body()?))
            }
            Some(b'[') => {
                self.i += 1;
                self.enter()?;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(Value::Seq(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            self.depth -= 1;
                            return Ok(Value::Seq(items));
                        }
                        _ => return Err(self.err("expected ',' or ']' in array")),
                    }
                }
            }
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Value::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Value::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Value::Null)
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => self.number(),
            Some(_) => Err(self.err("invalid character")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > 10_000 {
            return Err(self.err("nesting too deep"));
        }
        Ok(())
    }

    fn object_body(&mut self) -> R<Vec<Entry>> {
        self.enter()?;
        let mut entries = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(entries);
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(self.err("expected object key"));
            }
            let k = self.string()?;
            let key = String::from_utf8(k.to_vec()).map_err(|_| self.err("invalid key"))?;
            self.expect(b':')?;
            let v = self.value()?;
            entries.push(Entry::Pair(key, v));
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(entries);
                }
                _ => return Err(self.err("expected ',' or '}' in object")),
            }
        }
    }

    fn number(&mut self) -> R<Value> {
        let start = self.i;
        let s = self.s;
        let mut i = self.i;
        if s.get(i) == Some(&b'-') {
            i += 1;
        }
        match s.get(i) {
            Some(b'0') => i += 1,
            Some(c) if c.is_ascii_digit() => {
                while s.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return Err(self.err("invalid number")),
        }
        if s.get(i) == Some(&b'.') {
            i += 1;
            if !s.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(self.err("invalid number"));
            }
            while s.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        if matches!(s.get(i), Some(b'e') | Some(b'E')) {
            i += 1;
            if matches!(s.get(i), Some(b'+') | Some(b'-')) {
                i += 1;
            }
            if !s.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(self.err("invalid number"));
            }
            while s.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        self.i = i;
        let text = std::str::from_utf8(&s[start..i]).map_err(|_| self.err("invalid number"))?;
        let f: f64 = text.parse().map_err(|_| self.err("invalid number"))?;
        if !f.is_finite() {
            return Err(self.err("number out of range"));
        }
        Ok(Value::Float(f))
    }

    fn hex4(&mut self) -> R<u32> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("invalid \\u escape"))?;
        self.i += 4;
        Ok(h)
    }

    fn string(&mut self) -> R<Zeroizing<Vec<u8>>> {
        self.i += 1; // opening quote
        let mut out = Zeroizing::new(Vec::new());
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    break;
                }
                b'\\' => {
                    let e = *self.s.get(self.i + 1).ok_or_else(|| self.err("unterminated string"))?;
                    self.i += 2;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi)
                                && self.s.get(self.i) == Some(&b'\\')
                                && self.s.get(self.i + 1) == Some(&b'u')
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                        .unwrap_or('\u{FFFD}')
                                } else {
                                    self.i = save;
                                    '\u{FFFD}'
                                }
                            } else {
                                char::from_u32(hi).unwrap_or('\u{FFFD}')
                            }
                        }
                        _ => return Err(self.err("invalid escape in string")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(self.err("control character in string")),
                _ => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        // Go replaces invalid UTF-8 with U+FFFD.
        if std::str::from_utf8(&out).is_err() {
            let fixed = String::from_utf8_lossy(&out).into_owned().into_bytes();
            out = Zeroizing::new(fixed);
        }
        Ok(out)
    }
}

/// Parses a JSON document whose top level is an object.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Vec<Entry>, Error> {
    let mut p = Parser {
        s: bytes,
        i: 0,
        file,
        depth: 0,
    };
    p.ws();
    if p.s.get(p.i) != Some(&b'{') {
        return Err(p.err("expected a JSON object at the top level"));
    }
    p.i += 1;
    let entries = p.object_body()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("invalid character after top-level value"));
    }
    Ok(entries)
}

/// Go's `encoding/json` string encoding (HTML-safe).
pub fn write_string(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let text = String::from_utf8_lossy(s);
    for ch in text.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let b = c as u32 as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xF)]);
            }
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn newline(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    out.extend(std::iter::repeat_n(b'\t', depth));
}

fn write_value(v: &Value, depth: usize, out: &mut Vec<u8>) -> Result<(), String> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) => {
            if !f.is_finite() {
                return Err("unsupported value: non-finite float".into());
            }
            super::gofmt::format_float_json(*f, out);
        }
        Value::Str(s) | Value::Time(s) => write_string(s, out),
        Value::Bytes(b) => {
            let enc = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(b.as_slice()));
            write_string(enc.as_bytes(), out);
        }
        Value::Comment(c) => {
            out.push(b'{');
            newline(out, depth + 1);
            write_string(b"Value", out);
            out.extend_from_slice(b": ");
            write_string(c, out);
            newline(out, depth);
            out.push(b'}');
        }
        Value::Map(entries) => write_map(entries, depth, out)?,
        Value::Seq(items) => {
            out.push(b'[');
            let mut empty = true;
            for item in items {
                if matches!(item, Value::Comment(_)) {
                    continue;
                }
                if !empty {
                    out.push(b',');
                }
                newline(out, depth + 1);
                write_value(item, depth + 1, out)?;
                empty = false;
            }
            if !empty {
                newline(out, depth);
            }
            out.push(b']');
        }
    }
    Ok(())
}

fn write_map(entries: &[Entry], depth: usize, out: &mut Vec<u8>) -> Result<(), String> {
    out.push(b'{');
    let mut empty = true;
    for e in entries {
        let Entry::Pair(k, v) = e else { continue };
        if !empty {
            out.push(b',');
        }
        newline(out, depth + 1);
        write_string(k.as_bytes(), out);
        out.extend_from_slice(b": ");
        write_value(v, depth + 1, out)?;
        empty = false;
    }
    if !empty {
        newline(out, depth);
    }
    out.push(b'}');
    Ok(())
}

/// Serializes a document as `sops decrypt` does for JSON.
pub fn emit(entries: &[Entry]) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut out = Zeroizing::new(Vec::new());
    write_map(entries, 0, &mut out)?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tree::secret;
    use super::*;

    #[test]
    fn roundtrip_formatting() {
        let src = br#"{"a": 1, "b": [true, null, 1.5e-7, "x<y>&\u00e9\n"], "c": {}, "d": [], "a": "dup"}"#;
        let entries = parse("t.json", src).expect("parse");
        let out = emit(&entries).expect("emit");
        assert_eq!(
            String::from_utf8(out.to_vec()).expect("utf8"),
            "{\n\t\"a\": 1,\n\t\"b\": [\n\t\ttrue,\n\t\tnull,\n\t\t1.5e-7,\n\t\t\"x\\u003cy\\u003e\\u0026\u{e9}\\n\"\n\t],\n\t\"c\": {},\n\t\"d\": [],\n\t\"a\": \"dup\"\n}\n"
        );
    }

    #[test]
    fn rejects_bad_json() {
        assert!(parse("t", b"[1]").is_err());
        assert!(parse("t", b"{\"a\": 1} x").is_err());
        assert!(parse("t", b"{\"a\": 01}").is_err());
        let err = parse("t", b"{\n\"a\": tru}").expect_err("bad");
        assert!(matches!(
            err,
            Error::Malformed {
                location: Location { line: Some(2), .. },
                ..
            }
        ));
    }

    #[test]
    fn go_string_escapes() {
        let mut out = Vec::new();
        write_string(secret(b"\x01\x08\t\xe2\x80\xa8").as_ref(), &mut out);
        assert_eq!(out, b"\"\\u0001\\b\\t\\u2028\"");
    }
}
