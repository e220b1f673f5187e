//! The flat formats: dotenv and INI (sops' `stores/dotenv` and `stores/ini`,
//! the latter following `gopkg.in/ini.v1`'s parser and writer).

use zeroize::Zeroizing;

use super::error::{Error, Location};
use super::tree::{secret, Entry, Value};

/// Flattened `sops_*` / `[sops]` metadata pairs (keys without prefix).
pub type FlatPairs = Vec<(String, Value)>;

/// sops' `ValToString`.
pub fn val_to_string(v: &Value) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    match v {
        Value::Str(s) | Value::Time(s) | Value::Comment(s) => out.extend_from_slice(s),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"<nil>"),
        Value::Float(f) => {
            let mut g = Vec::new();
            super::gofmt::format_float_g(*f, &mut g);
            for c in g.iter_mut() {
                if *c == b'e' {
                    *c = b'E';
                }
            }
            if g == b"+Inf" || g == b"-Inf" || g == b"NaN" || g.contains(&b'.') || g.contains(&b'E') {
                out.extend_from_slice(&g);
            } else {
                out.extend_from_slice(format!("{f:.1}").as_bytes());
            }
        }
        Value::Bytes(b) => {
            let parts: Vec<String> = b.iter().map(u8::to_string).collect();
            out.extend_from_slice(format!("[{}]", parts.join(" ")).as_bytes());
        }
        Value::Map(_) | Value::Seq(_) => out.extend_from_slice(b"<complex>"),
    }
    out
}

fn replace_all(s: &[u8], from: &[u8], to: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len()));
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// dotenv

/// Parses a dotenv file: returns the entries and the `sops_*` metadata pairs.
pub fn parse_dotenv(file: &str, bytes: &[u8]) -> Result<(Vec<Entry>, FlatPairs), Error> {
    let mut entries = Vec::new();
    let mut md = Vec::new();
    for (n, line) in bytes.split(|c| *c == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if line[0] == b'#' {
            entries.push(Entry::Comment(secret(&line[1..])));
            continue;
        }
        let pos = line.iter().position(|c| *c == b'=').ok_or_else(|| {
            Error::malformed(
                file,
                "dotenv",
                Location::line(n + 1),
                "invalid dotenv input line (no '=')",
            )
        })?;
        let key = String::from_utf8(line[..pos].to_vec())
            .map_err(|_| Error::malformed(file, "dotenv", Location::line(n + 1), "key is not UTF-8"))?;
        let value = Value::Str(replace_all(&line[pos + 1..], b"\\n", b"\n"));
        match key.strip_prefix("sops_") {
            Some(mdkey) => md.push((mdkey.to_string(), value)),
            None => entries.push(Entry::Pair(key, value)),
        }
    }
    Ok((entries, md))
}

/// Writes a dotenv document as `sops decrypt` does.
pub fn emit_dotenv(entries: &[Entry]) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut out = Zeroizing::new(Vec::new());
    for e in entries {
        match e {
            Entry::Comment(c) => {
                out.push(b'#');
                out.extend_from_slice(c);
                out.push(b'\n');
            }
            Entry::Pair(k, v) => {
                if matches!(v, Value::Map(_) | Value::Seq(_)) {
                    return Err(format!("cannot use complex value in dotenv file; offending key {k}"));
                }
                out.extend_from_slice(k.as_bytes());
                out.push(b'=');
                match v {
                    Value::Str(s) => out.extend_from_slice(&replace_all(s, b"\n", b"\\n")),
                    other => out.extend_from_slice(&val_to_string(other)),
                }
                out.push(b'\n');
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// INI

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|c| !is_space(*c)).unwrap_or(s.len());
    let end = s.iter().rposition(|c| !is_space(*c)).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn trim_left(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|c| !is_space(*c)).unwrap_or(s.len());
    &s[start..]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// sops' `stripCommentChar`.
fn strip_comment_char(c: &[u8]) -> &[u8] {
    if c.first() == Some(&b';') {
        let n = c.iter().take_while(|x| **x == b';' || **x == b' ').count();
        &c[n..]
    } else if c.first() == Some(&b'#') {
        let n = c.iter().take_while(|x| **x == b'#' || **x == b' ').count();
        &c[n..]
    } else {
        c
    }
}

struct IniKey {
    name: String,
    value: Zeroizing<Vec<u8>>,
    comment: Zeroizing<Vec<u8>>,
}

struct IniSection {
    name: String,
    comment: Zeroizing<Vec<u8>>,
    keys: Vec<IniKey>,
}

struct IniLines<'s> {
    lines: Vec<&'s [u8]>,
    pos: usize,
}

impl<'s> IniLines<'s> {
    fn next(&mut self) -> Option<&'s [u8]> {
        let l = self.lines.get(self.pos).copied();
        self.pos += 1;
        l
    }
}

/// ini.v1's `readValue` (default options). Appends inline comments to `comment`.
fn read_value(input: &[u8], lines: &mut IniLines<'_>, comment: &mut Vec<u8>) -> Zeroizing<Vec<u8>> {
    let line = trim_left(input);
    if line.is_empty() {
        return Zeroizing::new(Vec::new());
    }
    let quote: Option<&[u8]> = if line.len() > 3 && line.starts_with(b"\"\"\"") {
        Some(b"\"\"\"")
    } else if line[0] == b'`' {
        Some(b"`")
    } else {
        None
    };
    if let Some(q) = quote {
        let rest = &line[q.len()..];
        if let Some(pos) = rfind(rest, q) {
            return Zeroizing::new(rest[..pos].to_vec());
        }
        // Multi-line value: read until a line containing the closing quote.
        let mut val = Zeroizing::new(rest.to_vec());
        while let Some(next) = lines.next() {
            let mut next_full = next.to_vec();
            next_full.push(b'\n');
            if let Some(pos) = rfind(&next_full, q) {
                val.extend_from_slice(&next_full[..pos]);
                let after = &next_full[pos..];
                if let Some(i) = after.iter().position(|c| *c == b'#' || *c == b';') {
                    comment.extend_from_slice(trim(&after[i..]));
                }
                return val;
            }
            val.extend_from_slice(&next_full);
        }
        return val;
    }
    let mut line = trim(line).to_vec();
    // Continuation lines.
    while line.last() == Some(&b'\\') {
        line.pop();
        match lines.next() {
            Some(next) => {
                let t = trim(next);
                line.extend_from_slice(t);
            }
            None => break,
        }
    }
    if let Some(i) = line.iter().position(|c| *c == b'#' || *c == b';') {
        comment.extend_from_slice(&line[i..]);
        let kept = trim(&line[..i]).to_vec();
        line = kept;
    }
    let surrounded = |q: u8| {
        line.len() >= 2 && line[0] == q && line[line.len() - 1] == q && line.iter().filter(|c| **c == q).count() == 2
    };
    if surrounded(b'\'') || surrounded(b'"') {
        return Zeroizing::new(line[1..line.len() - 1].to_vec());
    }
    Zeroizing::new(line)
}

/// ini.v1's `readKeyName`: returns the key and the offset of the value.
fn read_key_name(line: &[u8]) -> Option<(Vec<u8>, usize)> {
    let quote: Option<&[u8]> = match line.first() {
        Some(b'"') if line.len() > 6 && line.starts_with(b"\"\"\"") => Some(b"\"\"\""),
        Some(b'"') => Some(b"\""),
        Some(b'`') => Some(b"`"),
        _ => None,
    };
    if let Some(q) = quote {
        let start = q.len();
        let pos = find(&line[start..], q)? + start;
        let i = line[pos + start..].iter().position(|c| *c == b'=' || *c == b':')?;
        let end = pos + i;
        return Some((trim(&line[start..pos]).to_vec(), end + start + 1));
    }
    let end = line.iter().position(|c| *c == b'=' || *c == b':')?;
    if end == 0 {
        return None;
    }
    Some((trim(&line[..end]).to_vec(), end + 1))
}

fn parse_ini_sections(file: &str, bytes: &[u8]) -> Result<Vec<IniSection>, Error> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines = IniLines {
        lines: bytes.split(|c| *c == b'\n').collect(),
        pos: 0,
    };
    let mut sections = vec![IniSection {
        name: "DEFAULT".to_string(),
        comment: Zeroizing::new(Vec::new()),
        keys: Vec::new(),
    }];
    let mut comment: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
    while let Some(raw) = lines.next() {
        let n = lines.pos;
        let line = trim_left(raw);
        if line.is_empty() {
            continue;
        }
        if line[0] == b'#' || line[0] == b';' {
            comment.extend_from_slice(line);
            comment.push(b'\n');
            continue;
        }
        if line[0] == b'[' {
            let close = line
                .iter()
                .rposition(|c| *c == b']')
                .ok_or_else(|| Error::malformed(file, "ini", Location::line(n), "unclosed section"))?;
            let name = String::from_utf8(line[1..close].to_vec())
                .map_err(|_| Error::malformed(file, "ini", Location::line(n), "section name is not UTF-8"))?;
            let after = &line[close + 1..];
            if let Some(i) = after.iter().position(|c| *c == b'#' || *c == b';') {
                comment.extend_from_slice(&after[i..]);
            }
            if name.is_empty() {
                return Err(Error::malformed(file, "ini", Location::line(n), "empty section name"));
            }
            let c = Zeroizing::new(trim(&comment).to_vec());
            comment.clear();
            if name == "DEFAULT" && sections.len() == 1 && sections[0].keys.is_empty() {
                sections[0].comment = c;
            } else {
                sections.push(IniSection {
                    name,
                    comment: c,
                    keys: Vec::new(),
                });
            }
            continue;
        }
        let (kname, offset) = read_key_name(line)
            .ok_or_else(|| Error::malformed(file, "ini", Location::line(n), "key-value delimiter not found"))?;
        let kname = String::from_utf8(kname)
            .map_err(|_| Error::malformed(file, "ini", Location::line(n), "key is not UTF-8"))?;
        let value = read_value(&line[offset..], &mut lines, &mut comment);
        let c = Zeroizing::new(trim(&comment).to_vec());
        comment.clear();
        let section = sections
            .last_mut()
            .ok_or_else(|| Error::malformed(file, "ini", Location::line(n), "no section"))?;
        match section.keys.iter_mut().find(|k| k.name == kname) {
            Some(existing) => {
                existing.value = value;
                existing.comment = c;
            }
            None => section.keys.push(IniKey {
                name: kname,
                value,
                comment: c,
            }),
        }
    }
    Ok(sections)
}

/// Parses an INI file: returns the sections as entries and the `[sops]` pairs.
pub fn parse_ini(file: &str, bytes: &[u8]) -> Result<(Vec<Entry>, Option<FlatPairs>), Error> {
    let sections = parse_ini_sections(file, bytes)?;
    let mut entries = Vec::new();
    let mut md: Option<FlatPairs> = None;
    for s in sections {
        if s.name == "sops" {
            if md.is_none() {
                md = Some(
                    s.keys
                        .into_iter()
                        .map(|k| (k.name, Value::Str(replace_all(&k.value, b"\\n", b"\n"))))
                        .collect(),
                );
            }
            continue;
        }
        let mut items = Vec::new();
        if !s.comment.is_empty() {
            items.push(Entry::Comment(secret(strip_comment_char(&s.comment))));
        }
        for k in s.keys {
            let has_comment = !k.comment.is_empty();
            let c = secret(strip_comment_char(&k.comment));
            items.push(Entry::Pair(k.name, Value::Str(k.value)));
            if has_comment {
                items.push(Entry::Comment(c));
            }
        }
        entries.push(Entry::Pair(s.name, Value::Map(items)));
    }
    Ok((entries, md))
}

fn write_comment_lines(comment: &[u8], trim_plain: bool, out: &mut Vec<u8>) {
    for line in comment.split(|c| *c == b'\n') {
        match line.first() {
            Some(b'#') | Some(b';') => {
                out.push(line[0]);
                out.push(b' ');
                out.extend_from_slice(trim(&line[1..]));
            }
            _ => {
                out.extend_from_slice(b"; ");
                out.extend_from_slice(if trim_plain { trim(line) } else { line });
            }
        }
        out.push(b'\n');
    }
}

/// Writes INI as `sops decrypt` does (ini.v1 pretty format).
pub fn emit_ini(entries: &[Entry]) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut sections: Vec<IniSection> = Vec::new();
    for e in entries {
        let Entry::Pair(name, v) = e else { continue };
        let Value::Map(items) = v else {
            return Err("section values should always be mappings".into());
        };
        let mut section = IniSection {
            name: name.clone(),
            comment: Zeroizing::new(Vec::new()),
            keys: Vec::new(),
        };
        let mut rest: &[Entry] = items;
        if let Some(Entry::Comment(c)) = items.first() {
            section.comment = c.clone();
            rest = &items[1..];
        }
        let mut last: Option<usize> = None;
        for item in rest {
            match item {
                Entry::Comment(c) => {
                    if let Some(i) = last {
                        section.keys[i].comment = c.clone();
                    }
                }
                Entry::Pair(k, v) => {
                    let value = val_to_string(v);
                    match section.keys.iter().position(|x| x.name == *k) {
                        Some(i) => {
                            section.keys[i].value = value;
                            last = Some(i);
                        }
                        None => {
                            section.keys.push(IniKey {
                                name: k.clone(),
                                value,
                                comment: Zeroizing::new(Vec::new()),
                            });
                            last = Some(section.keys.len() - 1);
                        }
                    }
                }
            }
        }
        sections.push(section);
    }
    let mut out = Zeroizing::new(Vec::new());
    let last_idx = sections.len().saturating_sub(1);
    for (i, sec) in sections.iter().enumerate() {
        if !sec.comment.is_empty() {
            write_comment_lines(&sec.comment, false, &mut out);
        }
        if i > 0 || !sec.name.eq_ignore_ascii_case("DEFAULT") {
            out.push(b'[');
            out.extend_from_slice(sec.name.as_bytes());
            out.extend_from_slice(b"]\n");
        } else if sec.keys.is_empty() {
            continue;
        }
        let quoted_name = |k: &str| -> String {
            if k.contains('"') || k.contains('=') || k.contains(':') {
                format!("`{k}`")
            } else if k.contains('`') {
                format!("\"\"\"{k}\"\"\"")
            } else {
                k.to_string()
            }
        };
        let align = sec.keys.iter().map(|k| quoted_name(&k.name).len()).max().unwrap_or(0);
        for k in &sec.keys {
            if !k.comment.is_empty() {
                write_comment_lines(&k.comment, true, &mut out);
            }
            let name = quoted_name(&k.name);
            out.extend_from_slice(name.as_bytes());
            out.extend(std::iter::repeat_n(b' ', align.saturating_sub(name.len())));
            out.extend_from_slice(b" = ");
            let v: &[u8] = &k.value;
            if v.contains(&b'\n') || v.contains(&b'`') {
                out.extend_from_slice(b"\"\"\"");
                out.extend_from_slice(v);
                out.extend_from_slice(b"\"\"\"");
            } else if v.contains(&b'#') || v.contains(&b';') {
                out.push(b'`');
                out.extend_from_slice(v);
                out.push(b'`');
            } else if trim(v).len() != v.len() {
                out.push(b'"');
                out.extend_from_slice(v);
                out.push(b'"');
            } else {
                out.extend_from_slice(v);
            }
            out.push(b'\n');
        }
        if i != last_idx {
            out.push(b'\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_roundtrip() {
        let src = b"#c\nA=1\nB=x\\ny\nsops_version=3\n\n";
        let (entries, md) = parse_dotenv("t.env", src).expect("parse");
        assert_eq!(md.len(), 1);
        let out = emit_dotenv(&entries).expect("emit");
        assert_eq!(out.as_slice(), b"#c\nA=1\nB=x\\ny\n");
        assert!(parse_dotenv("t.env", b"NOEQUALS\n").is_err());
    }

    #[test]
    fn ini_parse_and_write() {
        let src = b"; top\nglobal = 1\n\n[db]\n; host c\nhost = h\npassword = s3cr#t\nsp = \" x \"\n\n[empty]\n";
        let (entries, md) = parse_ini("t.ini", src).expect("parse");
        assert!(md.is_none());
        let out = emit_ini(&entries).expect("emit");
        assert_eq!(
            String::from_utf8(out.to_vec()).expect("utf8"),
            "; top\nglobal = 1\n\n[db]\n; host c\nhost     = h\n; t\npassword = s3cr\nsp       = \" x \"\n\n[empty]\n"
        );
    }

    #[test]
    fn go_val_to_string() {
        assert_eq!(val_to_string(&Value::Float(3.0)).as_slice(), b"3.0");
        assert_eq!(val_to_string(&Value::Float(1.5)).as_slice(), b"1.5");
        assert_eq!(val_to_string(&Value::Float(1e21)).as_slice(), b"1E+21");
        assert_eq!(val_to_string(&Value::Bool(true)).as_slice(), b"true");
    }
}
