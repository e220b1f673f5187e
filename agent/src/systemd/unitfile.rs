//! A light parser and syntax check for unit files and drop-ins.
//!
//! It accepts what systemd's own parser accepts for well-formed files
//! (sections, `Key=Value`, `#`/`;` comments, backslash continuation lines,
//! comments inside continuations) and reports anything else with file:line.
//! It does not know every directive: `systemd-analyze verify`
//! ([`super::verify`]) is the deep check.

use std::collections::BTreeSet;

use super::error::Error;

/// One `Key=Value` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value, continuation lines joined with a space.
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// One `[Section]` and its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section name without brackets.
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    /// Assignments in order.
    pub entries: Vec<Entry>,
}

/// A parsed unit file or drop-in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedUnit {
    /// Sections in file order (a name may repeat, as systemd allows).
    pub sections: Vec<Section>,
}

impl ParsedUnit {
    /// All values of `key` in every section named `section`, in order.
    pub fn values<'a>(&'a self, section: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> {
        self.sections
            .iter()
            .filter(move |s| s.name == section)
            .flat_map(|s| s.entries.iter())
            .filter(move |e| e.key == key)
            .map(|e| e.value.as_str())
    }

    /// The last value of `key` in `section` (systemd's "last one wins" for
    /// single-valued settings), if any.
    pub fn last(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .filter(|s| s.name == section)
            .flat_map(|s| s.entries.iter())
            .filter(|e| e.key == key)
            .map(|e| e.value.as_str())
            .next_back()
    }

    /// Whether a section of that name exists.
    pub fn has_section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s.name == name)
    }

    /// The `[Install]` section's entries as text, normalised, for detecting
    /// a change of enablement (`WantedBy=` ...) between two versions.
    pub fn install_fingerprint(&self) -> String {
        let mut out = String::new();
        for s in self.sections.iter().filter(|s| s.name == "Install") {
            for e in &s.entries {
                out.push_str(&e.key);
                out.push('=');
                out.push_str(&e.value);
                out.push('\n');
            }
        }
        out
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parse and syntax-check `bytes`. `file` labels errors (e.g. `units/web.service`).
pub fn parse(file: &str, bytes: &[u8]) -> Result<ParsedUnit, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
        Error::Syntax {
            file: file.to_string(),
            line,
            message: "not valid UTF-8".into(),
        }
    })?;
    let syntax = |line: usize, message: String| Error::Syntax {
        file: file.to_string(),
        line,
        message,
    };

    let mut parsed = ParsedUnit::default();
    // A pending assignment whose value continues on the next line.
    let mut continuing: Option<Entry> = None;

    for (idx, raw) in text.split('\n').enumerate() {
        let line_no = idx + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim();

        if let Some(mut entry) = continuing.take() {
            // Comment lines inside a continuation are skipped (systemd.syntax(7)).
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continuing = Some(entry);
                continue;
            }
            let (part, more) = match trimmed.strip_suffix('\\') {
                Some(p) => (p.trim_end(), true),
                None => (trimmed, false),
            };
            if !part.is_empty() {
                if !entry.value.is_empty() {
                    entry.value.push(' ');
                }
                entry.value.push_str(part);
            }
            if more {
                continuing = Some(entry);
            } else if let Some(section) = parsed.sections.last_mut() {
                section.entries.push(entry);
            }
            continue;
        }

        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(syntax(
                    line_no,
                    format!("section header `{trimmed}` lacks the closing `]`"),
                ));
            };
            if name.is_empty() || name.contains(['[', ']']) || name.chars().any(|c| c.is_control()) {
                return Err(syntax(line_no, format!("invalid section header `{trimmed}`")));
            }
            parsed.sections.push(Section {
                name: name.to_string(),
                line: line_no,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(syntax(
                line_no,
                format!("expected `Key=Value`, a `[Section]` header or a comment, found `{trimmed}`"),
            ));
        };
        let key = key.trim_end();
        if !valid_key(key) {
            return Err(syntax(line_no, format!("invalid key `{key}`")));
        }
        if parsed.sections.is_empty() {
            return Err(syntax(line_no, format!("assignment `{key}=` outside of any [Section]")));
        }
        let value = value.trim_start();
        let (value, more) = match value.strip_suffix('\\') {
            Some(v) => (v.trim_end(), true),
            None => (value, false),
        };
        let entry = Entry {
            key: key.to_string(),
            value: value.to_string(),
            line: line_no,
        };
        if more {
            continuing = Some(entry);
        } else if let Some(section) = parsed.sections.last_mut() {
            section.entries.push(entry);
        }
    }
    if let Some(entry) = continuing {
        // systemd accepts a trailing backslash at the end of the file.
        if let Some(section) = parsed.sections.last_mut() {
            section.entries.push(entry);
        }
    }
    Ok(parsed)
}

/// The directory under which tend materialises secrets; a unit whose text
/// mentions `/run/tend/secrets/NAME` is a user of secret `NAME`.
pub const SECRETS_DIR: &str = "/run/tend/secrets/";

/// Secret names referenced as `/run/tend/secrets/NAME` anywhere in `bytes`.
pub fn referenced_secrets(bytes: &[u8]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let needle = SECRETS_DIR.as_bytes();
    let mut rest = bytes;
    while let Some(pos) = find(rest, needle) {
        let after = &rest[pos + needle.len()..];
        let len = after
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(**b, b'_' | b'-' | b'.' | b'@'))
            .count();
        let name = String::from_utf8_lossy(&after[..len]);
        let name = name.trim_end_matches('.');
        if !name.is_empty() {
            out.insert(name.to_string());
        }
        rest = &after[len..];
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_comments_and_continuations() {
        let text = b"# comment\n; other\n[Unit]\nDescription=Web server\n\n[Service]\nExecStart=/bin/sh -c \\\n  'echo a' \\\n# skipped comment\n  more\nEnvironment=A=1\r\n[Install]\nWantedBy=multi-user.target\n";
        let p = parse("units/web.service", text).expect("valid");
        assert_eq!(p.sections.len(), 3);
        assert_eq!(p.last("Unit", "Description"), Some("Web server"));
        assert_eq!(p.last("Service", "ExecStart"), Some("/bin/sh -c 'echo a' more"));
        assert_eq!(p.last("Service", "Environment"), Some("A=1"));
        let exec = &p.sections[1].entries[0];
        assert_eq!(exec.line, 7);
        assert_eq!(p.sections[2].line, 12);
        assert_eq!(p.install_fingerprint(), "WantedBy=multi-user.target\n");
    }

    #[test]
    fn reports_file_and_line() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"Description=x\n", 1, "outside of any [Section]"),
            (b"[Unit]\nDescription=x\n[Service\n", 3, "closing `]`"),
            (b"[Unit]\n\nnot an assignment\n", 3, "expected `Key=Value`"),
            (b"[Unit]\n=value\n", 2, "invalid key"),
            (b"[Unit]\nBad Key=1\n", 2, "invalid key"),
            (b"[]\n", 1, "invalid section header"),
            (b"[Unit]\nDescription=\xff\n", 2, "UTF-8"),
        ];
        for (text, line, needle) in cases {
            match parse("units/x.service", text) {
                Err(Error::Syntax { file, line: l, message }) => {
                    assert_eq!(file, "units/x.service");
                    assert_eq!(l, *line, "{message}");
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("expected syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn error_display_is_one_line_with_location() {
        let err = parse("base/units/x.service", b"[Unit]\nfoo\n").expect_err("invalid");
        let text = err.to_string();
        assert!(text.starts_with("base/units/x.service:2: "), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn finds_secret_references() {
        let s = referenced_secrets(
            b"[Service]\nEnvironmentFile=/run/tend/secrets/db.env\nExecStart=/app --token /run/tend/secrets/api-token. x\nLoadCredential=x:/run/tend/secrets/\n",
        );
        let want: BTreeSet<String> = ["db.env", "api-token"].map(String::from).into();
        assert_eq!(s, want);
        assert!(referenced_secrets(b"[Service]\nExecStart=/bin/true\n").is_empty());
    }
}
