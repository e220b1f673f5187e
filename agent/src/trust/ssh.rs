//! SSH signatures (`gpg.format=ssh`) and the allowed signers file.
//!
//! The allowed signers format is the one of `ssh-keygen(1)`
//! (`ALLOWED SIGNERS`) and git's `gpg.ssh.allowedSignersFile`:
//!
//! ```text
//! # comment
//! alice@example.com,*@ops.example.com namespaces="git",valid-after="20240101" ssh-ed25519 AAAA… laptop
//! "bob@example.com" ssh-rsa AAAA…
//! ```
//!
//! * principals: one token, comma-separated, optionally in double quotes;
//!   wildcards `*`/`?` are allowed (see [`AllowedSigner::principal_matches`]).
//! * options (optional, comma-separated, names case-insensitive):
//!   `namespaces="pat,pat"` (a pattern list that must allow `git`),
//!   `valid-after=TIME`, `valid-before=TIME` with TIME
//!   `YYYYMMDD[HHMM[SS]][Z]` (quoted or not; interpreted as UTC — OpenSSH
//!   uses local time when there is no `Z`), and `cert-authority`, which is
//!   **refused when the file is loaded** ([`Error::CertAuthorityUnsupported`]).
//! * key type, base64 key, optional comment.
//!
//! A commit's signing key is looked up by key (like
//! `ssh-keygen -Y find-principals`). Of the lines listing that key, the
//! first one whose options admit the signature wins; if none does, the
//! error of the first such line is reported. Validity windows are checked
//! against the committer time, as git does (`-Overify-time`), with
//! OpenSSH's bounds: refused if `time < valid-after` or
//! `time > valid-before`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, PublicKey, SshSig};

use super::error::Error;
use super::pattern::{match_pattern_list, ListMatch};
use super::time::parse_ssh_time;
use super::{SignatureKind, Signer};

/// The namespace git uses for commit and tag signatures.
pub const GIT_NAMESPACE: &str = "git";

/// One line of an allowed signers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSigner {
    /// The principals field as written (quotes removed), comma-separated.
    pub principals: String,
    /// `namespaces` option (pattern list), if present.
    pub namespaces: Option<String>,
    /// `valid-after` option, Unix seconds.
    pub valid_after: Option<i64>,
    /// `valid-before` option, Unix seconds.
    pub valid_before: Option<i64>,
    /// The public key.
    pub key: PublicKey,
    /// `SHA256:…` fingerprint of the key, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// 1-based line number in the file.
    pub line: usize,
}

impl AllowedSigner {
    /// Whether `name` is one of this line's principals (wildcards and `!`
    /// negation honoured, as `ssh-keygen -Y verify -I name` does).
    pub fn principal_matches(&self, name: &str) -> bool {
        match_pattern_list(name, &self.principals) == ListMatch::Allowed
    }

    /// Whether this line admits signatures in `namespace`.
    pub fn namespace_allowed(&self, namespace: &str) -> bool {
        match &self.namespaces {
            None => true,
            Some(list) => match_pattern_list(namespace, list) == ListMatch::Allowed,
        }
    }

    /// Checks the validity window against `time` (Unix seconds).
    pub fn valid_at(&self, time: i64) -> bool {
        self.valid_after.is_none_or(|after| time >= after) && self.valid_before.is_none_or(|before| time <= before)
    }
}

/// A parsed allowed signers file, indexed by key fingerprint.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    path: PathBuf,
    entries: Vec<AllowedSigner>,
    by_fingerprint: HashMap<[u8; 32], Vec<usize>>,
}

/// Splits off the next token: a double-quoted string (quotes removed,
/// `\"` unescaped) or a run of non-whitespace. Returns (token, rest).
fn next_quoted_or_word(s: &str) -> Result<(String, &str), String> {
    if let Some(body) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, &body[i + 1..])),
                '\\' if body[i + 1..].starts_with('"') => {
                    out.push('"');
                    chars.next();
                }
                _ => out.push(c),
            }
        }
        Err("unterminated quoted string".into())
    } else {
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        Ok((s[..end].to_string(), &s[end..]))
    }
}

/// Splits off the options token: up to the first whitespace that is not
/// inside double quotes.
fn next_options_token(s: &str) -> Result<(&str, &str), String> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => return Ok((&s[..i], &s[i..])),
            _ => {}
        }
    }
    if in_quotes {
        return Err("unterminated quoted string in options".into());
    }
    Ok((s, ""))
}

/// Splits an options token at commas outside quotes.
fn split_options(token: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in token.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                parts.push(&token[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&token[start..]);
    parts
}

/// Removes surrounding quotes from an option value (if quoted).
fn option_value(raw: &str) -> Result<String, String> {
    if raw.starts_with('"') {
        let (v, rest) = next_quoted_or_word(raw)?;
        if !rest.is_empty() {
            return Err(format!("unexpected text after quoted value: {rest}"));
        }
        Ok(v)
    } else {
        Ok(raw.to_string())
    }
}

/// Whether a token is (meant to be) a key type rather than options.
fn looks_like_key_type(token: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"].iter().any(|p| token.starts_with(p))
}

#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

enum LineError {
    Parse(String, Option<super::error::BoxError>),
    CertAuthority,
}

impl From<String> for LineError {
    fn from(s: String) -> Self {
        LineError::Parse(s, None)
    }
}

fn parse_options(token: &str) -> Result<Options, LineError> {
    let mut opts = Options::default();
    for opt in split_options(token) {
        if opt.is_empty() {
            return Err(format!("empty option in \"{token}\"").into());
        }
        let (name, value) = match opt.find('=') {
            Some(i) => (&opt[..i], Some(&opt[i + 1..])),
            None => (opt, None),
        };
        let lname = name.to_ascii_lowercase();
        match (lname.as_str(), value) {
            ("cert-authority", None) => return Err(LineError::CertAuthority),
            ("namespaces", Some(v)) => {
                let v = option_value(v)?;
                if v.is_empty() {
                    return Err("namespaces option is empty".to_string().into());
                }
                if opts.namespaces.replace(v).is_some() {
                    return Err("namespaces option given twice".to_string().into());
                }
            }
            ("valid-after", Some(v)) => {
                let t = parse_ssh_time(&option_value(v)?)?;
                if opts.valid_after.replace(t).is_some() {
                    return Err("valid-after option given twice".to_string().into());
                }
            }
            ("valid-before", Some(v)) => {
                let t = parse_ssh_time(&option_value(v)?)?;
                if opts.valid_before.replace(t).is_some() {
                    return Err("valid-before option given twice".to_string().into());
                }
            }
            ("cert-authority", Some(_)) => return Err("cert-authority takes no value".to_string().into()),
            ("namespaces" | "valid-after" | "valid-before", None) => {
                return Err(format!("option {name} needs a value").into())
            }
            _ => return Err(format!("unsupported option \"{name}\"").into()),
        }
    }
    Ok(opts)
}

/// Parses one non-comment line.
fn parse_line(text: &str, line: usize) -> Result<AllowedSigner, LineError> {
    let (principals, rest) = next_quoted_or_word(text)?;
    if principals.is_empty() {
        return Err("empty principals".to_string().into());
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Err("missing key after principals".to_string().into());
    }

    let (opts, rest) = {
        let (token, after) = next_options_token(rest)?;
        if looks_like_key_type(token) {
            (Options::default(), rest)
        } else {
            let opts = parse_options(token)?;
            (opts, after.trim_start())
        }
    };

    let (key_type, rest) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
    if key_type.is_empty() {
        return Err("missing key".to_string().into());
    }
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err(format!("certificate key type {key_type} is not supported").into());
    }
    let rest = rest.trim_start();
    let (b64, _comment) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
    if b64.is_empty() {
        return Err(format!("missing base64 key after {key_type}").into());
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {b64}"))
        .map_err(|e| LineError::Parse(format!("invalid {key_type} public key"), Some(Box::new(e))))?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    Ok(AllowedSigner {
        principals,
        namespaces: opts.namespaces,
        valid_after: opts.valid_after,
        valid_before: opts.valid_before,
        key,
        fingerprint,
        line,
    })
}

impl AllowedSigners {
    /// Parses the content of an allowed signers file; `path` is used in
    /// error messages.
    pub fn parse(path: &Path, content: &str) -> Result<Self, Error> {
        let mut entries = Vec::new();
        let mut by_fingerprint: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
        for (idx, raw_line) in content.lines().enumerate() {
            let line = idx + 1;
            let text = raw_line.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let entry = parse_line(text, line).map_err(|e| match e {
                LineError::CertAuthority => Error::CertAuthorityUnsupported {
                    path: path.to_path_buf(),
                    line,
                },
                LineError::Parse(reason, source) => Error::AllowedSignersParse {
                    path: path.to_path_buf(),
                    line,
                    reason,
                    source,
                },
            })?;
            if let Some(fp) = entry.key.fingerprint(HashAlg::Sha256).sha256() {
                by_fingerprint.entry(fp).or_default().push(entries.len());
            }
            entries.push(entry);
        }
        Ok(AllowedSigners {
            path: path.to_path_buf(),
            entries,
            by_fingerprint,
        })
    }

    /// Reads and parses an allowed signers file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let content = std::fs::read_to_string(path).map_err(|source| Error::ReadTrustFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &content)
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All entries, in file order.
    pub fn entries(&self) -> &[AllowedSigner] {
        &self.entries
    }

    /// Entries listing exactly `key`, in file order.
    pub fn find<'a>(&'a self, key: &'a ssh_key::public::KeyData) -> impl Iterator<Item = &'a AllowedSigner> + 'a {
        key.fingerprint(HashAlg::Sha256)
            .sha256()
            .and_then(|fp| self.by_fingerprint.get(&fp))
            .into_iter()
            .flatten()
            .filter_map(|&i| self.entries.get(i))
            .filter(move |e| e.key.key_data() == key)
    }
}

/// Verifies an armored SSH signature over `payload` for `commit`.
pub(super) fn verify(
    signers: Option<&AllowedSigners>,
    commit: &str,
    armored: &[u8],
    payload: &[u8],
    committer_time: i64,
) -> Result<Signer, Error> {
    let bad = |key: String, reason: String, source: Option<super::error::BoxError>| Error::BadSignature {
        commit: commit.to_string(),
        kind: SignatureKind::Ssh,
        key,
        reason,
        source,
    };
    let sig = SshSig::from_pem(armored)
        .map_err(|e| bad("unknown".into(), "malformed SSH signature".into(), Some(Box::new(e))))?;
    let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
    let unknown = || Error::UnknownKey {
        commit: commit.to_string(),
        kind: SignatureKind::Ssh,
        key: fingerprint.clone(),
        trust_file: signers.map(|s| s.path.clone()),
    };
    let signers = signers.ok_or_else(unknown)?;
    let mut candidates = signers.find(sig.public_key()).peekable();
    let first = *candidates.peek().ok_or_else(unknown)?;

    // Cryptographic check first: a forged signature must never be reported
    // as a policy problem.
    if sig.namespace() != GIT_NAMESPACE {
        return Err(bad(
            fingerprint,
            format!(
                "signature namespace is \"{}\", expected \"{GIT_NAMESPACE}\"",
                sig.namespace()
            ),
            None,
        ));
    }
    first.key.verify(GIT_NAMESPACE, payload, &sig).map_err(|e| {
        bad(
            fingerprint.clone(),
            "signature does not match the commit content".into(),
            Some(Box::new(e)),
        )
    })?;

    let mut first_error = None;
    for entry in candidates {
        let outcome = if !entry.namespace_allowed(GIT_NAMESPACE) {
            Err(Error::NamespaceNotAllowed {
                commit: commit.to_string(),
                principal: entry.principals.clone(),
                fingerprint: fingerprint.clone(),
                namespaces: entry.namespaces.clone().unwrap_or_default(),
            })
        } else if !entry.valid_at(committer_time) {
            Err(Error::OutsideValidity {
                commit: commit.to_string(),
                principal: entry.principals.clone(),
                fingerprint: fingerprint.clone(),
                commit_time: committer_time,
                valid_after: entry.valid_after,
                valid_before: entry.valid_before,
            })
        } else {
            Ok(())
        };
        match outcome {
            Ok(()) => {
                return Ok(Signer {
                    kind: SignatureKind::Ssh,
                    identity: entry.principals.clone(),
                    fingerprint: fingerprint.clone(),
                    signing_key: fingerprint,
                })
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAICgE7bWNkAkyu8+QDp9LK+oC+jn0rRhTVxovXnDfS4sZ";

    fn parse(content: &str) -> Result<AllowedSigners, Error> {
        AllowedSigners::parse(Path::new("/etc/tend/allowed_signers"), content)
    }

    fn one(content: &str) -> AllowedSigner {
        let s = parse(content).expect("valid file");
        assert_eq!(s.entries().len(), 1, "{content}");
        s.entries()[0].clone()
    }

    fn parse_err(content: &str) -> (usize, String) {
        match parse(content) {
            Err(Error::AllowedSignersParse { line, reason, .. }) => (line, reason),
            other => panic!("expected parse error for {content:?}, got {other:?}"),
        }
    }

    #[test]
    fn plain_line_with_comment() {
        let e = one(&format!("alice@example.com ssh-ed25519 {ED} alice laptop\n"));
        assert_eq!(e.principals, "alice@example.com");
        assert_eq!(e.namespaces, None);
        assert_eq!(e.valid_after, None);
        assert_eq!(e.line, 1);
        assert!(e.fingerprint.starts_with("SHA256:"), "{}", e.fingerprint);
        assert_eq!(e.key.algorithm(), ssh_key::Algorithm::Ed25519);
    }

    #[test]
    fn comments_blank_lines_and_line_numbers() {
        let content = format!(
            "# header comment\n\n   \n  # indented comment\nbob ssh-ed25519 {ED}\n\ncarol,dave ssh-ed25519 {ED}\n"
        );
        let s = parse(&content).expect("valid");
        let lines: Vec<usize> = s.entries().iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![5, 7]);
        assert_eq!(s.entries()[1].principals, "carol,dave");
    }

    #[test]
    fn options_are_parsed() {
        let e = one(&format!(
            "\"*@example.com,root\" namespaces=\"git,file\",Valid-After=\"20240101\",valid-before=20250101123000Z ssh-ed25519 {ED}"
        ));
        assert_eq!(e.principals, "*@example.com,root");
        assert_eq!(e.namespaces.as_deref(), Some("git,file"));
        assert_eq!(e.valid_after, Some(1_704_067_200));
        assert_eq!(e.valid_before, Some(1_735_734_600));
        assert!(e.namespace_allowed("git"));
        assert!(!e.namespace_allowed("ssh"));
        assert!(e.valid_at(1_704_067_200));
        assert!(!e.valid_at(1_704_067_199));
        assert!(e.valid_at(1_735_734_600));
        assert!(!e.valid_at(1_735_734_601));
    }

    #[test]
    fn quoted_option_with_space_and_escape() {
        let e = one(&format!("p namespaces=\"a b,\\\"q\\\"\" ssh-ed25519 {ED}"));
        assert_eq!(e.namespaces.as_deref(), Some("a b,\"q\""));
    }

    #[test]
    fn principal_patterns() {
        let e = one(&format!("*@example.com,!mallory@example.com,ops? ssh-ed25519 {ED}"));
        assert!(e.principal_matches("alice@example.com"));
        assert!(!e.principal_matches("mallory@example.com"));
        assert!(e.principal_matches("ops1"));
        assert!(!e.principal_matches("ops12"));
        assert!(!e.principal_matches("alice@example.org"));
    }

    #[test]
    fn namespaces_file_only_denies_git() {
        let e = one(&format!("p namespaces=\"file\" ssh-ed25519 {ED}"));
        assert!(!e.namespace_allowed("git"));
    }

    #[test]
    fn cert_authority_is_refused_at_load() {
        let content = format!("ok ssh-ed25519 {ED}\n*@example.com cert-authority ssh-ed25519 {ED}\n");
        match parse(&content) {
            Err(Error::CertAuthorityUnsupported { line, path }) => {
                assert_eq!(line, 2);
                assert_eq!(path, Path::new("/etc/tend/allowed_signers"));
            }
            other => panic!("expected CertAuthorityUnsupported, got {other:?}"),
        }
        let err = parse(&format!("x CERT-AUTHORITY,namespaces=\"git\" ssh-ed25519 {ED}")).expect_err("refused");
        assert!(err.to_string().contains("cert-authority is not supported"), "{err}");
        assert!(err.to_string().starts_with("/etc/tend/allowed_signers:1: "), "{err}");
    }

    #[test]
    fn bad_lines_report_line_numbers() {
        let good = format!("ok ssh-ed25519 {ED}\n");
        let cases: Vec<(String, &str)> = vec![
            ("alice\n".into(), "missing key"),
            ("alice ssh-ed25519\n".into(), "missing base64"),
            (
                "alice ssh-ed25519 AAAAnotakey\n".into(),
                "invalid ssh-ed25519 public key",
            ),
            (format!("alice ssh-rsa {ED}\n"), "invalid ssh-rsa public key"),
            (
                format!("alice bogus=1 ssh-ed25519 {ED}\n"),
                "unsupported option \"bogus\"",
            ),
            (format!("alice valid-after=2024 ssh-ed25519 {ED}\n"), "invalid time"),
            (
                format!("alice valid-before=\"20241301\" ssh-ed25519 {ED}\n"),
                "no such date",
            ),
            (format!("alice namespaces ssh-ed25519 {ED}\n"), "needs a value"),
            (format!("alice namespaces=\"git ssh-ed25519 {ED}\n"), "unterminated"),
            (format!("\"alice ssh-ed25519 {ED}\n"), "unterminated"),
            (
                format!("alice namespaces=\"git\",namespaces=\"file\" ssh-ed25519 {ED}\n"),
                "given twice",
            ),
            (
                format!("alice ssh-ed25519-cert-v01@openssh.com {ED}\n"),
                "not supported",
            ),
            (
                format!("alice valid-after=\"20240101\", ssh-ed25519 {ED}\n"),
                "empty option",
            ),
        ];
        for (bad, want) in cases {
            let content = format!("# c\n{good}{bad}");
            let (line, reason) = parse_err(&content);
            assert_eq!(line, 3, "{bad:?}");
            assert!(reason.contains(want), "{bad:?}: {reason:?} should contain {want:?}");
        }
    }

    #[test]
    fn error_display_names_file_and_line() {
        let err = parse("\n\nalice bogus ssh-ed25519 AAAA\n").expect_err("bad");
        assert_eq!(
            err.to_string(),
            "/etc/tend/allowed_signers:3: unsupported option \"bogus\""
        );
    }

    #[test]
    fn find_by_key_returns_all_lines_in_order() {
        let s = parse(&format!("a ssh-ed25519 {ED}\nb ssh-ed25519 {ED}\n")).expect("ok");
        let key = s.entries()[0].key.key_data().clone();
        let found: Vec<&str> = s.find(&key).map(|e| e.principals.as_str()).collect();
        assert_eq!(found, vec!["a", "b"]);
    }
}
