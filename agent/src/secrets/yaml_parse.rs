//! A YAML parser for sops files: block and flow collections, all scalar
//! styles, multiple documents, anchors/aliases, and comments attached the way
//! sops' YAML store places them (own-line comments belong to the collection
//! whose indentation they share; trailing comments go before their entry).

use std::collections::HashMap;

use base64::Engine;
use zeroize::Zeroizing;

use super::error::{Error, Location};
use super::tree::{secret, Entry, Secret, Value};

/// How go-yaml resolves a plain scalar.
enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Uint,
    Float(f64),
    Timestamp(String),
    Str,
}

/// Go's `strconv.ParseInt(s, 0, 64)` / `ParseUint`.
fn go_parse_int(s: &str) -> Option<Result<i64, ()>> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &body[2..]),
        Some("0o") => (8, &body[2..]),
        Some("0b") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = u128::from_str_radix(digits, radix).ok()?;
    if neg {
        if mag <= 1u128 << 63 {
            Some(Ok((mag as i128).wrapping_neg() as i64))
        } else {
            None
        }
    } else if mag <= i64::MAX as u128 {
        Some(Ok(mag as i64))
    } else if mag <= u64::MAX as u128 {
        Some(Err(()))
    } else {
        None
    }
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-') | Some(b'+')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e') | Some(b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-') | Some(b'+')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

fn finite(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn resolve_plain(s: &str) -> Resolved {
    match s {
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Resolved::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        _ => {}
    }
    let Some(&first) = s.as_bytes().first() else {
        return Resolved::Null;
    };
    match first {
        b'.' => {
            if s.bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                if let Some(f) = finite(s) {
                    return Resolved::Float(f);
                }
            }
            Resolved::Str
        }
        b'+' | b'-' | b'0'..=b'9' => {
            if let Some(t) = super::gofmt::yaml_timestamp(s) {
                return Resolved::Timestamp(t);
            }
            let plain = s.replace('_', "");
            match go_parse_int(&plain) {
                Some(Ok(i)) => return Resolved::Int(i),
                Some(Err(())) => return Resolved::Uint,
                None => {}
            }
            if yaml_style_float(&plain) {
                if let Some(f) = finite(&plain) {
                    return Resolved::Float(f);
                }
            }
            Resolved::Str
        }
        _ => Resolved::Str,
    }
}

/// Whether go-yaml would read `s`, written as a plain scalar, back as a string.
pub fn plain_resolves_to_str(s: &str) -> bool {
    matches!(resolve_plain(s), Resolved::Str) || s == "<<"
}

struct Pending {
    col: usize,
    text: Secret,
}

struct Parser<'s> {
    s: &'s [u8],
    i: usize,
    line: usize,
    line_start: usize,
    pending: Vec<Pending>,
    anchors: HashMap<String, Value>,
    file: &'s str,
}

type R<T> = Result<T, Error>;

fn is_blank_or_end(c: Option<u8>) -> bool {
    matches!(c, None | Some(b' ') | Some(b'\t') | Some(b'\n') | Some(b'\r'))
}

impl<'s> Parser<'s> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::malformed(self.file, "yaml", Location::line(self.line), reason)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at(&self, k: usize) -> Option<u8> {
        self.s.get(self.i + k).copied()
    }

    fn col(&self) -> usize {
        self.i - self.line_start
    }

    fn eol(&self) -> bool {
        matches!(self.peek(), None | Some(b'\n') | Some(b'\r'))
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ') | Some(b'\t')) {
            self.i += 1;
        }
    }

    fn newline(&mut self) {
        if self.peek() == Some(b'\r') {
            self.i += 1;
        }
        if self.peek() == Some(b'\n') {
            self.i += 1;
        }
        self.line += 1;
        self.line_start = self.i;
    }

    fn read_comment(&mut self) -> Secret {
        // at '#'
        self.i += 1;
        let start = self.i;
        while !self.eol() {
            self.i += 1;
        }
        let mut end = self.i;
        if end > start && self.s[end - 1] == b'\r' {
            end -= 1;
        }
        secret(&self.s[start..end])
    }

    /// Skips blank lines and own-line comments (collected as pending).
    fn skip_to_content(&mut self) {
        loop {
            self.skip_spaces();
            match self.peek() {
                None => return,
                Some(b'#') => {
                    let col = self.col();
                    let text = self.read_comment();
                    self.pending.push(Pending { col, text });
                    self.newline();
                }
                Some(b'\n') | Some(b'\r') => self.newline(),
                _ => return,
            }
        }
    }

    fn at_doc_marker(&self) -> bool {
        self.col() == 0
            && (self.s[self.i..].starts_with(b"---") || self.s[self.i..].starts_with(b"..."))
            && is_blank_or_end(self.at(3))
    }

    /// After a value: optional trailing comment, then end of line.
    fn end_of_line(&mut self, trailing: &mut Vec<Secret>) -> R<()> {
        self.skip_spaces();
        if self.peek() == Some(b'#') {
            trailing.push(self.read_comment());
        }
        if !self.eol() {
            return Err(self.err("unexpected content after value"));
        }
        if self.peek().is_some() {
            self.newline();
        }
        Ok(())
    }

    fn take_foot(&mut self, indent: usize) -> Vec<Secret> {
        let n = self.pending.iter().take_while(|p| p.col >= indent).count();
        self.pending.drain(..n).map(|p| p.text).collect()
    }

    fn take_all_pending(&mut self) -> Vec<Secret> {
        self.pending.drain(..).map(|p| p.text).collect()
    }

    // ------------------------------------------------------------------
    // Documents

    fn stream(&mut self) -> R<Vec<Vec<Entry>>> {
        let mut docs = Vec::new();
        if self.s.starts_with(b"\xEF\xBB\xBF") {
            self.i = 3;
            self.line_start = 3;
        }
        loop {
            self.skip_to_content();
            if self.peek().is_none() {
                if !self.pending.is_empty() {
                    let entries = self.take_all_pending().into_iter().map(Entry::Comment).collect();
                    docs.push(entries);
                }
                break;
            }
            if self.col() == 0 && self.peek() == Some(b'%') {
                while !self.eol() {
                    self.i += 1;
                }
                continue;
            }
            let mut explicit = false;
            if self.at_doc_marker() && self.s[self.i..].starts_with(b"---") {
                self.i += 3;
                explicit = true;
                self.skip_spaces();
                if !self.eol() && self.peek() != Some(b'#') {
                    // Content on the marker line: only flow/scalar roots can appear here.
                    let mut trailing = Vec::new();
                    let v = self.inline_value(0, &mut trailing)?;
                    docs.push(self.root_entries(v)?);
                    continue;
                }
                let mut trailing = Vec::new();
                self.end_of_line(&mut trailing)?;
                for t in trailing {
                    self.pending.push(Pending { col: 0, text: t });
                }
            } else if self.at_doc_marker() {
                // "..." document end
                self.i += 3;
                let mut trailing = Vec::new();
                self.end_of_line(&mut trailing)?;
                continue;
            }
            self.skip_to_content();
            if self.peek().is_none() || self.at_doc_marker() {
                let entries = self.take_all_pending().into_iter().map(Entry::Comment).collect();
                if explicit || !docs.is_empty() {
                    docs.push(entries);
                }
                continue;
            }
            let v = self.block_node(0, true)?;
            let mut entries = self.root_entries(v)?;
            // Everything left before the next document belongs to this one.
            self.skip_to_content();
            entries.extend(self.take_all_pending().into_iter().map(Entry::Comment));
            docs.push(entries);
        }
        Ok(docs)
    }

    fn root_entries(&mut self, v: Value) -> R<Vec<Entry>> {
        match v {
            Value::Map(entries) => Ok(entries),
            Value::Null => Ok(Vec::new()),
            Value::Seq(_) => Err(self.err("YAML documents that are sequences are not supported")),
            _ => Err(self.err("YAML documents that are values are not supported")),
        }
    }

    /// A node starting at the current position (after `skip_to_content`), in block context.
    /// `indent` is the column of the node's first token.
    fn block_node(&mut self, parent_indent: usize, is_root: bool) -> R<Value> {
        let indent = self.col();
        if self.peek() == Some(b'-') && is_blank_or_end(self.at(1)) {
            return Ok(Value::Seq(self.block_seq(indent)?));
        }
        if self.line_has_key() {
            return Ok(Value::Map(self.block_map(indent)?));
        }
        let mut trailing = Vec::new();
        let v = self.inline_value(if is_root { 0 } else { parent_indent }, &mut trailing)?;
        for t in trailing {
            self.pending.push(Pending { col: indent, text: t });
        }
        Ok(v)
    }

    /// Whether the current line holds `key:` (a block mapping entry).
    fn line_has_key(&self) -> bool {
        let s = self.s;
        let mut i = self.i;
        match s.get(i) {
            Some(b'"') => {
                i += 1;
                while let Some(&c) = s.get(i) {
                    if c == b'\\' {
                        i += 2;
                        continue;
                    }
                    if c == b'"' || c == b'\n' {
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            Some(b'\'') => {
                i += 1;
                while let Some(&c) = s.get(i) {
                    if c == b'\'' {
                        if s.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    if c == b'\n' {
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            Some(b'[') | Some(b'{') | Some(b'|') | Some(b'>') | Some(b'#') | Some(b'*') | None => return false,
            _ => {
                while let Some(&c) = s.get(i) {
                    if c == b'\n' || c == b'\r' {
                        return false;
                    }
                    if c == b':' && is_blank_or_end(s.get(i + 1).copied()) {
                        return true;
                    }
                    if c == b'#' && i > self.i && matches!(s[i - 1], b' ' | b'\t') {
                        return false;
                    }
                    i += 1;
                }
                return false;
            }
        }
        while matches!(s.get(i), Some(b' ') | Some(b'\t')) {
            i += 1;
        }
        s.get(i) == Some(&b':') && is_blank_or_end(s.get(i + 1).copied())
    }

    fn block_map(&mut self, indent: usize) -> R<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        loop {
            self.skip_to_content();
            if self.peek().is_none() || self.at_doc_marker() || self.col() < indent {
                entries.extend(self.take_foot(indent).into_iter().map(Entry::Comment));
                return Ok(entries);
            }
            if self.col() > indent {
                return Err(self.err("bad indentation of a mapping entry"));
            }
            entries.extend(self.take_all_pending().into_iter().map(Entry::Comment));
            if self.peek() == Some(b'-') && is_blank_or_end(self.at(1)) {
                // An indentless sequence belongs to the previous key; anything else is an error.
                return Err(self.err("expected a mapping key, found a sequence item"));
            }
            if self.peek() == Some(b'?') && is_blank_or_end(self.at(1)) {
                return Err(self.err("complex mapping keys are not supported"));
            }
            let key_line = self.line;
            let key = self.key()?;
            let mut trailing = Vec::new();
            let value = self.value_after_indicator(indent, true, &mut trailing)?;
            entries.extend(trailing.into_iter().map(Entry::Comment));
            let h = {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&key, &mut hasher);
                std::hash::Hasher::finish(&hasher)
            };
            if !seen.insert(h) && entries.iter().any(|e| matches!(e, Entry::Pair(k, _) if *k == key)) {
                return Err(Error::malformed(
                    self.file,
                    "yaml",
                    Location {
                        line: Some(key_line),
                        key: Some(key),
                    },
                    "duplicate mapping key",
                ));
            }
            entries.push(Entry::Pair(key, value));
        }
    }

    fn block_seq(&mut self, indent: usize) -> R<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            self.skip_to_content();
            let is_item = self.peek() == Some(b'-') && is_blank_or_end(self.at(1));
            if self.peek().is_none()
                || self.at_doc_marker()
                || self.col() < indent
                || (self.col() == indent && !is_item)
            {
                items.extend(self.take_foot(indent).into_iter().map(Value::Comment));
                return Ok(items);
            }
            if self.col() > indent {
                return Err(self.err("bad indentation of a sequence item"));
            }
            items.extend(self.take_all_pending().into_iter().map(Value::Comment));
            self.i += 1; // '-'
            let mut trailing = Vec::new();
            let v = self.seq_item_value(indent, &mut trailing)?;
            items.extend(trailing.into_iter().map(Value::Comment));
            items.push(v);
        }
    }

    fn seq_item_value(&mut self, dash_col: usize, trailing: &mut Vec<Secret>) -> R<Value> {
        self.skip_spaces();
        if self.eol() || self.peek() == Some(b'#') {
            return self.value_after_indicator(dash_col, false, trailing);
        }
        let col = self.col();
        if self.peek() == Some(b'-') && is_blank_or_end(self.at(1)) {
            return Ok(Value::Seq(self.block_seq(col)?));
        }
        if self.line_has_key() {
            return Ok(Value::Map(self.block_map(col)?));
        }
        self.value_after_indicator(dash_col, false, trailing)
    }

    /// The value after `key:` or `- `, at `parent_indent`.
    fn value_after_indicator(&mut self, parent_indent: usize, in_map: bool, trailing: &mut Vec<Secret>) -> R<Value> {
        self.skip_spaces();
        if self.peek() == Some(b'#') {
            trailing.push(self.read_comment());
        }
        if !self.eol() {
            return self.inline_value(parent_indent, trailing);
        }
        if self.peek().is_some() {
            self.newline();
        }
        self.skip_to_content();
        if self.peek().is_none() || self.at_doc_marker() {
            return Ok(Value::Null);
        }
        let col = self.col();
        let is_item = self.peek() == Some(b'-') && is_blank_or_end(self.at(1));
        if col > parent_indent {
            return self.block_node(parent_indent, false);
        }
        if in_map && col == parent_indent && is_item {
            return Ok(Value::Seq(self.block_seq(col)?));
        }
        Ok(Value::Null)
    }

    /// A value starting on the current line (after an indicator or at a node start).
    fn inline_value(&mut self, parent_indent: usize, trailing: &mut Vec<Secret>) -> R<Value> {
        let mut anchor: Option<String> = None;
        let mut tag: Option<String> = None;
        loop {
            match self.peek() {
                Some(b'&') => {
                    self.i += 1;
                    anchor = Some(self.word());
                    self.skip_spaces();
                }
                Some(b'!') => {
                    tag = Some(self.word());
                    self.skip_spaces();
                }
                _ => break,
            }
        }
        let value = if (anchor.is_some() || tag.is_some()) && (self.eol() || self.peek() == Some(b'#')) {
            // Properties alone on the line: the node follows on the next lines.
            let v = self.value_after_indicator(parent_indent, true, trailing)?;
            self.apply_tag(tag.as_deref(), v, None)?
        } else {
            match self.peek() {
                Some(b'*') => {
                    self.i += 1;
                    let name = self.word();
                    let v = self
                        .anchors
                        .get(&name)
                        .map(Value::deep_clone)
                        .ok_or_else(|| self.err(format!("unknown alias *{name}")))?;
                    self.end_of_line(trailing)?;
                    v
                }
                Some(b'[') | Some(b'{') => {
                    let v = self.flow_node()?;
                    self.end_of_line(trailing)?;
                    self.apply_tag(tag.as_deref(), v, None)?
                }
                Some(b'|') | Some(b'>') => {
                    let text = self.block_scalar(parent_indent, trailing)?;
                    self.apply_tag(tag.as_deref(), Value::Str(text), None)?
                }
                Some(b'"') => {
                    let text = self.double_quoted()?;
                    self.end_of_line(trailing)?;
                    self.apply_tag(tag.as_deref(), Value::Str(text), None)?
                }
                Some(b'\'') => {
                    let text = self.single_quoted()?;
                    self.end_of_line(trailing)?;
                    self.apply_tag(tag.as_deref(), Value::Str(text), None)?
                }
                Some(b'-') if is_blank_or_end(self.at(1)) => {
                    return Err(self.err("block sequence on the same line as its key"));
                }
                _ => {
                    let text = self.plain_multiline(parent_indent, trailing)?;
                    let plain = std::str::from_utf8(&text)
                        .map_err(|_| self.err("invalid UTF-8"))?
                        .to_string();
                    self.apply_tag(tag.as_deref(), Value::Str(text), Some(&plain))?
                }
            }
        };
        if let Some(a) = anchor {
            self.anchors.insert(a, value.deep_clone());
        }
        Ok(value)
    }

    fn word(&mut self) -> String {
        let start = self.i;
        while !is_blank_or_end(self.peek()) && !matches!(self.peek(), Some(b',') | Some(b']') | Some(b'}')) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// Resolves a scalar with an optional tag; `plain` is set for plain scalars.
    fn apply_tag(&self, tag: Option<&str>, v: Value, plain: Option<&str>) -> R<Value> {
        let text = match &v {
            Value::Str(s) => s.clone(),
            _ => {
                return match tag {
                    None | Some("!!map") | Some("!!seq") | Some("!") => Ok(v),
                    Some(t) => Err(self.err(format!("unsupported tag {t} on a collection"))),
                }
            }
        };
        let as_str = || {
            std::str::from_utf8(&text)
                .map(str::to_string)
                .map_err(|_| self.err("invalid UTF-8"))
        };
        match tag {
            None => match plain {
                Some(p) => self.resolve_value(p, v),
                None => Ok(v),
            },
            Some("!") | Some("!!str") | Some("tag:yaml.org,2002:str") => Ok(v),
            Some("!!binary") => {
                let cleaned: Vec<u8> = text.iter().copied().filter(|c| !c.is_ascii_whitespace()).collect();
                let data = super::cipher::GO_STD_B64
                    .decode(&cleaned)
                    .map_err(|_| self.err("!!binary value contains invalid base64 data"))?;
                Ok(Value::Str(Zeroizing::new(data)))
            }
            Some("!!int") | Some("!!float") | Some("!!bool") | Some("!!null") | Some("!!timestamp") => {
                let s = as_str()?;
                let r = self.resolve_value(&s, Value::Str(text.clone()))?;
                let ok = matches!(
                    (tag, &r),
                    (Some("!!int"), Value::Int(_))
                        | (Some("!!float"), Value::Float(_))
                        | (Some("!!bool"), Value::Bool(_))
                        | (Some("!!null"), Value::Null)
                        | (Some("!!timestamp"), Value::Time(_))
                );
                match (tag, r) {
                    (_, r) if ok => Ok(r),
                    (Some("!!float"), Value::Int(i)) => Ok(Value::Float(i as f64)),
                    _ => Err(self.err(format!("cannot decode value as {}", tag.unwrap_or("")))),
                }
            }
            Some(t) => Err(self.err(format!("unsupported tag {t}"))),
        }
    }

    fn resolve_value(&self, p: &str, v: Value) -> R<Value> {
        Ok(match resolve_plain(p) {
            Resolved::Null => Value::Null,
            Resolved::Bool(b) => Value::Bool(b),
            Resolved::Int(i) => Value::Int(i),
            Resolved::Float(f) => Value::Float(f),
            Resolved::Timestamp(t) => Value::Time(Zeroizing::new(t.into_bytes())),
            Resolved::Uint => return Err(self.err("integer out of range")),
            Resolved::Str => v,
        })
    }

    // ------------------------------------------------------------------
    // Keys and scalars

    fn key(&mut self) -> R<String> {
        let text = match self.peek() {
            Some(b'"') => self.double_quoted()?,
            Some(b'\'') => self.single_quoted()?,
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if c == b':' && is_blank_or_end(self.at(1)) {
                        break;
                    }
                    if c == b'\n' || c == b'\r' {
                        return Err(self.err("mapping key without ':'"));
                    }
                    self.i += 1;
                }
                let raw = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.err("invalid UTF-8 in key"))?;
                let raw = raw.trim_end();
                if !plain_resolves_to_str(raw) {
                    return Err(self.err(format!("non-string mapping key {raw:?} is not supported by sops")));
                }
                secret(raw.as_bytes())
            }
        };
        self.skip_spaces();
        if self.peek() != Some(b':') {
            return Err(self.err("expected ':' after mapping key"));
        }
        self.i += 1;
        String::from_utf8(text.to_vec()).map_err(|_| self.err("invalid UTF-8 in key"))
    }

    /// Plain scalar on the current line, plus continuation lines indented more than `parent_indent`.
    fn plain_multiline(&mut self, parent_indent: usize, trailing: &mut Vec<Secret>) -> R<Secret> {
        let mut out = Zeroizing::new(Vec::new());
        self.plain_line(&mut out, false);
        loop {
            self.skip_spaces();
            if self.peek() == Some(b'#') {
                trailing.push(self.read_comment());
                break;
            }
            if self.peek().is_none() {
                break;
            }
            if !self.eol() {
                return Err(self.err("unexpected content after plain scalar"));
            }
            // Look ahead for a continuation line.
            let save = (self.i, self.line, self.line_start);
            let mut blank_lines = 0usize;
            self.newline();
            loop {
                self.skip_spaces();
                if matches!(self.peek(), Some(b'\n') | Some(b'\r')) {
                    blank_lines += 1;
                    self.newline();
                    continue;
                }
                break;
            }
            let continues = self.peek().is_some()
                && self.col() > parent_indent
                && self.peek() != Some(b'#')
                && !self.at_doc_marker()
                && !self.line_has_key()
                && !(self.peek() == Some(b'-') && is_blank_or_end(self.at(1)));
            if !continues {
                (self.i, self.line, self.line_start) = save;
                break;
            }
            if blank_lines == 0 {
                out.push(b' ');
            } else {
                out.extend(std::iter::repeat_n(b'\n', blank_lines));
            }
            self.plain_line(&mut out, false);
        }
        if self.peek().is_some() {
            self.newline();
        }
        Ok(out)
    }

    /// One line of a plain scalar (stops before ` #` and trailing blanks).
    fn plain_line(&mut self, out: &mut Vec<u8>, flow: bool) {
        let start = self.i;
        let mut end = self.i;
        while let Some(c) = self.peek() {
            if c == b'\n' || c == b'\r' {
                break;
            }
            if c == b'#' && self.i > start && matches!(self.s[self.i - 1], b' ' | b'\t') {
                break;
            }
            if flow && matches!(c, b',' | b'[' | b']' | b'{' | b'}') {
                break;
            }
            if flow
                && c == b':'
                && (is_blank_or_end(self.at(1)) || matches!(self.at(1), Some(b',') | Some(b']') | Some(b'}')))
            {
                break;
            }
            self.i += 1;
            if c != b' ' && c != b'\t' {
                end = self.i;
            }
        }
        out.extend_from_slice(&self.s[start..end]);
        self.i = end;
    }

    /// Line folding inside quoted scalars: at a line break, returns the folded text.
    fn fold_break(&mut self, out: &mut Vec<u8>) {
        while matches!(out.last(), Some(b' ') | Some(b'\t')) {
            out.pop();
        }
        let mut breaks = 0;
        while matches!(self.peek(), Some(b'\n') | Some(b'\r')) {
            self.newline();
            breaks += 1;
            self.skip_spaces();
        }
        if breaks == 1 {
            out.push(b' ');
        } else {
            out.extend(std::iter::repeat_n(b'\n', breaks - 1));
        }
    }

    fn single_quoted(&mut self) -> R<Secret> {
        self.i += 1;
        let mut out = Zeroizing::new(Vec::new());
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated single-quoted string")),
                Some(b'\'') if self.at(1) == Some(b'\'') => {
                    out.push(b'\'');
                    self.i += 2;
                }
                Some(b'\'') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\n') | Some(b'\r') => self.fold_break(&mut out),
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn double_quoted(&mut self) -> R<Secret> {
        self.i += 1;
        let mut out = Zeroizing::new(Vec::new());
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated double-quoted string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\n') | Some(b'\r') => self.fold_break(&mut out),
                Some(b'\\') => {
                    let e = self.at(1).ok_or_else(|| self.err("unterminated escape"))?;
                    self.i += 2;
                    let simple = match e {
                        b'0' => Some(0u8),
                        b'a' => Some(7),
                        b'b' => Some(8),
                        b't' | b'\t' => Some(9),
                        b'n' => Some(10),
                        b'v' => Some(11),
                        b'f' => Some(12),
                        b'r' => Some(13),
                        b'e' => Some(0x1B),
                        b' ' => Some(b' '),
                        b'"' => Some(b'"'),
                        b'/' => Some(b'/'),
                        b'\\' => Some(b'\\'),
                        _ => None,
                    };
                    if let Some(c) = simple {
                        out.push(c);
                        continue;
                    }
                    let code = match e {
                        b'N' => 0x85,
                        b'_' => 0xA0,
                        b'L' => 0x2028,
                        b'P' => 0x2029,
                        b'x' | b'u' | b'U' => {
                            let n = match e {
                                b'x' => 2,
                                b'u' => 4,
                                _ => 8,
                            };
                            let hex = self
                                .s
                                .get(self.i..self.i + n)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.err("invalid escape sequence"))?;
                            self.i += n;
                            hex
                        }
                        b'\n' | b'\r' => {
                            self.i -= 1;
                            self.newline();
                            self.skip_spaces();
                            continue;
                        }
                        _ => return Err(self.err("invalid escape sequence")),
                    };
                    let ch = char::from_u32(code).ok_or_else(|| self.err("invalid escape sequence"))?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn block_scalar(&mut self, parent_indent: usize, trailing: &mut Vec<Secret>) -> R<Secret> {
        let literal = self.peek() == Some(b'|');
        self.i += 1;
        let mut chomp = 0i8; // -1 strip, 0 clip, 1 keep
        let mut explicit: Option<usize> = None;
        for _ in 0..2 {
            match self.peek() {
                Some(b'-') => {
                    chomp = -1;
                    self.i += 1;
                }
                Some(b'+') => {
                    chomp = 1;
                    self.i += 1;
                }
                Some(c @ b'1'..=b'9') => {
                    explicit = Some(usize::from(c - b'0'));
                    self.i += 1;
                }
                _ => {}
            }
        }
        self.end_of_line(trailing)?;
        // Determine content indentation.
        let mut lines: Vec<(usize, usize, usize)> = Vec::new(); // (indent, start, end) per line
        let block_indent = explicit.map(|e| parent_indent + e);
        let mut detected: Option<usize> = block_indent;
        loop {
            if self.peek().is_none() {
                break;
            }
            let line_begin = self.i;
            let mut spaces = 0;
            while self.peek() == Some(b' ') {
                self.i += 1;
                spaces += 1;
            }
            let content_start = self.i;
            while !self.eol() {
                self.i += 1;
            }
            let mut end = self.i;
            if end > content_start && self.s[end - 1] == b'\r' {
                end -= 1;
            }
            let blank = self.s[content_start..end].iter().all(|c| *c == b' ' || *c == b'\t');
            if detected.is_none() && !blank {
                detected = Some(spaces);
            }
            let ind = detected.unwrap_or(usize::MAX);
            if !blank && (spaces < ind || spaces <= parent_indent) {
                self.i = line_begin;
                break;
            }
            if blank && detected.is_some() && spaces < ind && end > content_start {
                self.i = line_begin;
                break;
            }
            lines.push((spaces, line_begin, end));
            if self.peek().is_some() {
                self.newline();
            } else {
                break;
            }
        }
        let ind = detected.unwrap_or(parent_indent + 1);
        let mut out = Zeroizing::new(Vec::new());
        let content: Vec<&[u8]> = lines
            .iter()
            .map(|&(_, b, e)| {
                let s = &self.s[b..e];
                if s.len() >= ind {
                    &s[ind..]
                } else {
                    &s[s.len()..]
                }
            })
            .collect();
        // Trailing blank lines are handled by chomping.
        let last_content = content.iter().rposition(|l| !l.is_empty());
        match last_content {
            None => {
                if chomp == 1 {
                    out.extend(std::iter::repeat_n(b'\n', content.len()));
                }
                return Ok(out);
            }
            Some(last) => {
                let mut prev_more_indented = false;
                let mut prev_empty_run = 0usize;
                let mut first = true;
                for l in &content[..=last] {
                    if literal {
                        out.extend_from_slice(l);
                        out.push(b'\n');
                        continue;
                    }
                    // Folded: join non-empty, non-more-indented lines with a space.
                    if l.is_empty() {
                        prev_empty_run += 1;
                        continue;
                    }
                    let more = l.first().is_some_and(|c| *c == b' ' || *c == b'\t');
                    if !first {
                        if more || prev_more_indented {
                            out.extend(std::iter::repeat_n(b'\n', prev_empty_run));
                        } else if prev_empty_run == 0 {
                            out.pop();
                            out.push(b' ');
                        } else {
                            out.pop();
                            out.extend(std::iter::repeat_n(b'\n', prev_empty_run));
                        }
                    } else {
                        out.extend(std::iter::repeat_n(b'\n', prev_empty_run));
                    }
                    out.extend_from_slice(l);
                    out.push(b'\n');
                    prev_more_indented = more;
                    prev_empty_run = 0;
                    first = false;
                }
                let trailing_blank = content.len() - last - 1;
                match chomp {
                    -1 => {
                        out.pop();
                    }
                    1 => out.extend(std::iter::repeat_n(b'\n', trailing_blank)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    // ------------------------------------------------------------------
    // Flow collections

    fn skip_flow_space(&mut self) {
        loop {
            self.skip_spaces();
            match self.peek() {
                Some(b'\n') | Some(b'\r') => self.newline(),
                Some(b'#') => {
                    let _ = self.read_comment();
                }
                _ => return,
            }
        }
    }

    fn flow_scalar(&mut self) -> R<Value> {
        match self.peek() {
            Some(b'"') => Ok(Value::Str(self.double_quoted()?)),
            Some(b'\'') => Ok(Value::Str(self.single_quoted()?)),
            Some(b'[') | Some(b'{') => self.flow_node(),
            Some(b'*') => {
                self.i += 1;
                let name = self.word();
                self.anchors
                    .get(&name)
                    .map(Value::deep_clone)
                    .ok_or_else(|| self.err(format!("unknown alias *{name}")))
            }
            _ => {
                let mut out = Zeroizing::new(Vec::new());
                self.plain_line(&mut out, true);
                let text = std::str::from_utf8(&out)
                    .map_err(|_| self.err("invalid UTF-8"))?
                    .to_string();
                self.resolve_value(&text, Value::Str(out))
            }
        }
    }

    fn flow_node(&mut self) -> R<Value> {
        let open = self.peek();
        self.i += 1;
        if open == Some(b'[') {
            let mut items = Vec::new();
            loop {
                self.skip_flow_space();
                match self.peek() {
                    None => return Err(self.err("unterminated flow sequence")),
                    Some(b']') => {
                        self.i += 1;
                        return Ok(Value::Seq(items));
                    }
                    _ => {}
                }
                items.push(self.flow_scalar()?);
                self.skip_flow_space();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b']') => {}
                    _ => return Err(self.err("expected ',' or ']' in flow sequence")),
                }
            }
        }
        let mut entries: Vec<Entry> = Vec::new();
        loop {
            self.skip_flow_space();
            match self.peek() {
                None => return Err(self.err("unterminated flow mapping")),
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Map(entries));
                }
                _ => {}
            }
            let k = match self.flow_scalar()? {
                Value::Str(s) => String::from_utf8(s.to_vec()).map_err(|_| self.err("invalid UTF-8 in key"))?,
                _ => return Err(self.err("non-string mapping key is not supported by sops")),
            };
            self.skip_flow_space();
            let v = if self.peek() == Some(b':') {
                self.i += 1;
                self.skip_flow_space();
                if matches!(self.peek(), Some(b',') | Some(b'}')) {
                    Value::Null
                } else {
                    self.flow_scalar()?
                }
            } else {
                Value::Null
            };
            entries.push(Entry::Pair(k, v));
            self.skip_flow_space();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(self.err("expected ',' or '}' in flow mapping")),
            }
        }
    }
}

/// Parses a YAML stream into documents (each a mapping).
pub fn parse(file: &str, bytes: &[u8]) -> Result<Vec<Vec<Entry>>, Error> {
    let mut p = Parser {
        s: bytes,
        i: 0,
        line: 1,
        line_start: 0,
        pending: Vec::new(),
        anchors: HashMap::new(),
        file,
    };
    p.stream()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(src: &str) -> Vec<Entry> {
        let mut docs = parse("t.yaml", src.as_bytes()).expect("parses");
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    fn describe(v: &Value) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Str(s) => format!("s:{}", String::from_utf8_lossy(s)),
            Value::Int(i) => format!("i:{i}"),
            Value::Float(f) => format!("f:{f}"),
            Value::Bool(b) => format!("b:{b}"),
            Value::Bytes(_) => "bytes".into(),
            Value::Time(t) => format!("t:{}", String::from_utf8_lossy(t)),
            Value::Comment(c) => format!("#{}", String::from_utf8_lossy(c)),
            Value::Map(e) => format!("{{{}}}", e.iter().map(describe_entry).collect::<Vec<_>>().join(", ")),
            Value::Seq(items) => format!("[{}]", items.iter().map(describe).collect::<Vec<_>>().join(", ")),
        }
    }

    fn describe_entry(e: &Entry) -> String {
        match e {
            Entry::Comment(c) => format!("#{}", String::from_utf8_lossy(c)),
            Entry::Pair(k, v) => format!("{k}={}", describe(v)),
        }
    }

    fn show(src: &str) -> String {
        describe(&Value::Map(doc(src)))
    }

    #[test]
    fn scalars_resolve_like_go_yaml() {
        assert_eq!(
            show("a: 1\nb: 1.5\nc: true\nd: ~\ne: hello\nf: \"1\"\ng: 0x10\nh: 2024-01-01\ni: 1e3\nj: yes\nk: 08\n"),
            "{a=i:1, b=f:1.5, c=b:true, d=null, e=s:hello, f=s:1, g=i:16, h=t:2024-01-01T00:00:00Z, i=f:1000, j=s:yes, k=f:8}"
        );
    }

    #[test]
    fn nested_and_comments() {
        let src = "#c0\na:\n    b: 1\n    #foot\nl:\n    #head\n    - x\n    - k: v\n      j: w\n    - - n\n#end\n";
        assert_eq!(
            show(src),
            "{#c0, a={b=i:1, #foot}, l=[#head, s:x, {k=s:v, j=s:w}, [s:n]], #end}"
        );
    }

    #[test]
    fn quoted_and_block_scalars() {
        let src = "a: 'it''s'\nb: \"x\\ty\\u00e9\"\nc: |\n    l1\n    l2\nd: |-\n    x\ne: >\n    f1\n    f2\n\n    f3\nf: |4+\n        sp\n\ng: plain\n  continued\n";
        assert_eq!(
            show(src),
            "{a=s:it's, b=s:x\ty\u{e9}, c=s:l1\nl2\n, d=s:x, e=s:f1 f2\nf3\n, f=s:    sp\n\n, g=s:plain continued}"
        );
    }

    #[test]
    fn flow_collections_anchors_documents() {
        assert_eq!(
            show("a: []\nb: {}\nc: [1, two, {x: y}]\n"),
            "{a=[], b={}, c=[i:1, s:two, {x=s:y}]}"
        );
        assert_eq!(show("a: &x 5\nb: *x\n"), "{a=i:5, b=i:5}");
        let docs = parse("t", b"a: 1\n---\nb: 2\n").expect("parses");
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("f.yaml", b"a: 1\n  b: 2\n").expect_err("bad");
        assert!(
            matches!(
                err,
                Error::Malformed {
                    location: Location { line: Some(2), .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(parse("f.yaml", b"- a\n").is_err());
        assert!(parse("f.yaml", b"a: \"open\n").is_err());
        assert!(parse("f.yaml", b"a: 1\na: 2\n").is_err());
    }

    #[test]
    fn trailing_comments_go_before_entry() {
        assert_eq!(show("a: 1 # c\n"), "{# c, a=i:1}");
    }
}
