//! Compose-style variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` for a literal `$`.

use std::collections::BTreeMap;

/// Variables available to a layer: its `.env` file and host facts.
pub type Vars = BTreeMap<String, String>;

/// Why a value could not be interpolated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// `${VAR:?message}` (or `?`) with VAR missing.
    #[error("required variable {name} is missing: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message from the compose file.
        message: String,
    },
    /// Malformed `${...}`.
    #[error("invalid interpolation {text:?}: {why}")]
    Syntax {
        /// The offending text.
        text: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Interpolate `input`. Unset variables without a default become empty strings (as compose
/// does); their names are pushed to `unset` so the caller can warn.
pub fn interpolate(input: &str, vars: &Vars, unset: &mut Vec<String>) -> Result<String, Error> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = matching_brace(body).ok_or_else(|| Error::Syntax {
                text: input.to_owned(),
                why: "missing closing brace",
            })?;
            out.push_str(&expand(&body[..end], vars, unset, input)?);
            rest = &body[end + 1..];
        } else {
            let len = after
                .char_indices()
                .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
                .map(|(i, c)| i + c.len_utf8())
                .last()
                .unwrap_or(0);
            if len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
                // A lone `$` is kept, like compose does for `$` not followed by a name.
                out.push('$');
                rest = after;
            } else {
                let name = &after[..len];
                out.push_str(&lookup(name, vars, unset));
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(name: &str, vars: &Vars, unset: &mut Vec<String>) -> String {
    match vars.get(name) {
        Some(v) => v.clone(),
        None => {
            if !unset.iter().any(|u| u == name) {
                unset.push(name.to_owned());
            }
            String::new()
        }
    }
}

/// Index of the `}` closing the expression that starts at `body` (nested `${}` allowed in defaults).
fn matching_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand(expr: &str, vars: &Vars, unset: &mut Vec<String>, whole: &str) -> Result<String, Error> {
    let name_len = expr
        .char_indices()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    let name = &expr[..name_len];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Error::Syntax {
            text: whole.to_owned(),
            why: "expected a variable name after ${",
        });
    }
    let op = &expr[name_len..];
    let value = vars.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let nested = |s: &str, unset: &mut Vec<String>| interpolate(s, vars, unset);
    if op.is_empty() {
        return Ok(lookup(name, vars, unset));
    }
    if let Some(d) = op.strip_prefix(":-") {
        return if set_nonempty {
            Ok(value.cloned().unwrap_or_default())
        } else {
            nested(d, unset)
        };
    }
    if let Some(d) = op.strip_prefix('-') {
        return match value {
            Some(v) => Ok(v.clone()),
            None => nested(d, unset),
        };
    }
    if let Some(m) = op.strip_prefix(":?") {
        return if set_nonempty {
            Ok(value.cloned().unwrap_or_default())
        } else {
            Err(Error::Required {
                name: name.to_owned(),
                message: nested(m, unset)?,
            })
        };
    }
    if let Some(m) = op.strip_prefix('?') {
        return match value {
            Some(v) => Ok(v.clone()),
            None => Err(Error::Required {
                name: name.to_owned(),
                message: nested(m, unset)?,
            }),
        };
    }
    if let Some(a) = op.strip_prefix(":+") {
        return if set_nonempty {
            nested(a, unset)
        } else {
            Ok(String::new())
        };
    }
    if let Some(a) = op.strip_prefix('+') {
        return if value.is_some() {
            nested(a, unset)
        } else {
            Ok(String::new())
        };
    }
    Err(Error::Syntax {
        text: whole.to_owned(),
        why: "unknown operator (use :-, -, :?, ?, :+ or +)",
    })
}

/// Parse a compose `.env` file: `KEY=VALUE`, `export KEY=VALUE`, comments, single and double
/// quotes (double quotes understand `\n`, `\t`, `\"` and `\\`). Values may refer to earlier keys.
pub fn parse_dotenv(text: &str, base: &Vars) -> Result<Vars, (usize, String)> {
    let mut vars = Vars::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err((line_no, format!("expected KEY=VALUE, found {:?}", truncate(line))));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        {
            return Err((line_no, format!("invalid variable name {key:?}")));
        }
        let value = value.trim_start();
        let parsed = if let Some(v) = value.strip_prefix('\'') {
            let end = v.find('\'').ok_or((line_no, "unterminated single quote".to_owned()))?;
            v[..end].to_owned()
        } else if let Some(v) = value.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = v.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(other) => out.push(other),
                        None => {}
                    },
                    c => out.push(c),
                }
            }
            if !closed {
                return Err((line_no, "unterminated double quote".to_owned()));
            }
            let mut scope = base.clone();
            scope.extend(vars.clone());
            interpolate(&out, &scope, &mut Vec::new()).map_err(|e| (line_no, e.to_string()))?
        } else {
            let v = match value.find(" #") {
                Some(p) => &value[..p],
                None => value,
            };
            let mut scope = base.clone();
            scope.extend(vars.clone());
            interpolate(v.trim_end(), &scope, &mut Vec::new()).map_err(|e| (line_no, e.to_string()))?
        };
        vars.insert(key.to_owned(), parsed);
    }
    Ok(vars)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "1"), ("EMPTY", ""), ("HOST", "edge")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn run(s: &str) -> Result<String, Error> {
        interpolate(s, &vars(), &mut Vec::new())
    }

    #[test]
    fn table() {
        let cases = [
            ("plain", "plain"),
            ("$A", "1"),
            ("${A}", "1"),
            ("x${A}y", "x1y"),
            ("$$A", "$A"),
            ("${MISSING:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${MISSING-def}", "def"),
            ("${A:-def}", "1"),
            ("${A:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${MISSING:-${HOST}-x}", "edge-x"),
            ("cost: 5$", "cost: 5$"),
            ("${MISSING}", ""),
        ];
        for (input, want) in cases {
            assert_eq!(run(input).as_deref(), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn required_variable_errors() {
        let e = run("${MISSING:?set MISSING please}").expect_err("required");
        assert_eq!(
            e,
            Error::Required {
                name: "MISSING".into(),
                message: "set MISSING please".into()
            }
        );
        assert!(run("${EMPTY:?x}").is_err());
        assert_eq!(run("${EMPTY?x}").as_deref(), Ok(""));
    }

    #[test]
    fn syntax_errors() {
        assert!(run("${A").is_err());
        assert!(run("${}").is_err());
        assert!(run("${A*x}").is_err());
    }

    #[test]
    fn unset_names_reported_once() {
        let mut unset = Vec::new();
        interpolate("$X ${X} ${Y:-d}", &vars(), &mut unset).expect("ok");
        assert_eq!(unset, vec!["X".to_owned()]);
    }

    #[test]
    fn dotenv_parsing() {
        let text = "# comment\nA=1\nexport B = two\nC='single $A'\nD=\"double $A\\n\"\nE=x # trailing\n\nF=${A}${A}\n";
        let v = parse_dotenv(text, &Vars::new()).expect("valid");
        assert_eq!(v["A"], "1");
        assert_eq!(v["B"], "two");
        assert_eq!(v["C"], "single $A");
        assert_eq!(v["D"], "double 1\n");
        assert_eq!(v["E"], "x");
        assert_eq!(v["F"], "11");
        let e = parse_dotenv("A=1\nnot a pair\n", &Vars::new()).expect_err("bad");
        assert_eq!(e.0, 2);
    }
}
