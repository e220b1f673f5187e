//! HTTP(S) credentials, read from the file named by `[source] https_credentials` (never from the
//! config itself, never logged, never shown in status or errors).
//!
//! The file holds one entry per line (blank lines and `#` comments are ignored):
//!
//! * `user:password` — HTTP basic authentication for every HTTP(S) source;
//! * `TOKEN` — `Authorization: Bearer TOKEN` for every HTTP(S) source;
//! * `https://user:password@host[:port][/path]` — git-credentials format (as `git credential-store`
//!   writes it, percent-encoded): basic authentication only for URLs with that scheme, host and
//!   port, under that path; `https://TOKEN@host` is a bearer token for that host.
//!
//! Scoped entries win over the unscoped one (at most one); the longest matching path wins.

use base64::Engine as _;
use reqwest::header::HeaderValue;
use std::path::{Path, PathBuf};

/// The credentials file could not be used. Messages name the file and line, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("https_credentials {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not in a known format.
    #[error("https_credentials {path}: line {line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (without the line's content).
        message: String,
    },
}

#[derive(Clone)]
enum Secret {
    Basic { user: String, password: String },
    Bearer(String),
}

impl Secret {
    fn header(&self) -> Option<HeaderValue> {
        let text = match self {
            Secret::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            Secret::Bearer(token) => format!("Bearer {token}"),
        };
        let mut value = HeaderValue::from_str(&text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

#[derive(Clone)]
struct Scope {
    scheme: String,
    /// `host` or `host:port`, lowercase, without the default port.
    authority: String,
    path: String,
}

#[derive(Clone)]
struct Entry {
    scope: Option<Scope>,
    secret: Secret,
}

/// Parsed credentials. `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct Credentials {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} entries, redacted)", self.entries.len())
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for e in &mut self.entries {
            match &mut e.secret {
                Secret::Basic { user, password } => {
                    user.zeroize();
                    password.zeroize();
                }
                Secret::Bearer(t) => t.zeroize(),
            }
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `(scheme, authority without default port, path)` of an http(s) URL, lowercased where git
/// compares case-insensitively. `None` for other URLs.
fn split_url(url: &str) -> Option<(String, String, String, Option<String>)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_owned()), h),
        None => (None, authority),
    };
    let mut hostport = hostport.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    if hostport.ends_with(default_port) {
        hostport.truncate(hostport.len() - default_port.len());
    }
    if hostport.is_empty() {
        return None;
    }
    Some((scheme, hostport, path.to_owned(), userinfo))
}

fn path_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty() || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

impl Credentials {
    /// Read the credentials file. Errors name the file and line, never a secret.
    pub fn load(path: &Path) -> Result<Credentials, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    log::warn!(
                        "https_credentials {}: readable by group or others; chmod 600 it",
                        path.display()
                    );
                }
            }
        }
        Credentials::parse(&text).map_err(|(line, message)| Error::Invalid {
            path: path.to_owned(),
            line,
            message,
        })
    }

    /// Parse the file's text; the error is `(line, message)`.
    pub fn parse(text: &str) -> Result<Credentials, (usize, String)> {
        let mut entries = Vec::new();
        let mut unscoped = false;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let n = i + 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.contains(char::is_whitespace) {
                return Err((n, "an entry is one word: user:password, a token, or a URL".into()));
            }
            let entry = if line.contains("://") {
                let (scheme, authority, path, userinfo) = split_url(line)
                    .ok_or_else(|| (n, "only http:// and https:// URLs can carry credentials".into()))?;
                let userinfo = userinfo.ok_or_else(|| (n, "the URL has no user:password@ or token@".to_string()))?;
                let secret = match userinfo.split_once(':') {
                    Some((u, p)) => Secret::Basic {
                        user: percent_decode(u).ok_or_else(|| (n, "bad percent-encoding".to_string()))?,
                        password: percent_decode(p).ok_or_else(|| (n, "bad percent-encoding".to_string()))?,
                    },
                    None => Secret::Bearer(
                        percent_decode(&userinfo).ok_or_else(|| (n, "bad percent-encoding".to_string()))?,
                    ),
                };
                Entry {
                    scope: Some(Scope {
                        scheme,
                        authority,
                        path,
                    }),
                    secret,
                }
            } else {
                if unscoped {
                    return Err((
                        n,
                        "a second entry for every source; scope it with a URL (https://user:password@host)".into(),
                    ));
                }
                unscoped = true;
                let secret = match line.split_once(':') {
                    Some((u, p)) => Secret::Basic {
                        user: u.to_owned(),
                        password: p.to_owned(),
                    },
                    None => Secret::Bearer(line.to_owned()),
                };
                Entry { scope: None, secret }
            };
            if entry.secret.header().is_none() {
                return Err((n, "contains characters that cannot be sent in an HTTP header".into()));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err((0, "no credentials in the file".into()));
        }
        Ok(Credentials { entries })
    }

    /// The `Authorization` header for `url`, if any entry is meant for it.
    pub fn header_for(&self, url: &str) -> Option<HeaderValue> {
        let (scheme, authority, path, _) = split_url(url)?;
        let scoped = self
            .entries
            .iter()
            .filter_map(|e| e.scope.as_ref().map(|s| (s, e)))
            .filter(|(s, _)| s.scheme == scheme && s.authority == authority && path_matches(&s.path, &path))
            .max_by_key(|(s, _)| s.path.trim_end_matches('/').len())
            .map(|(_, e)| e);
        scoped
            .or_else(|| self.entries.iter().find(|e| e.scope.is_none()))
            .and_then(|e| e.secret.header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(c: &Credentials, url: &str) -> Option<String> {
        c.header_for(url).map(|h| h.to_str().unwrap_or_default().to_owned())
    }

    #[test]
    fn user_password_is_basic_for_every_http_source() {
        let c = Credentials::parse("# deploy\n\nfleet:s3cret\n").expect("parse");
        assert_eq!(
            header(&c, "https://git.example/fleet.git").as_deref(),
            Some("Basic ZmxlZXQ6czNjcmV0")
        );
        assert!(header(&c, "http://10.0.0.5/fleet.git").is_some());
        assert_eq!(header(&c, "ssh://git@h/x.git"), None);
        assert_eq!(header(&c, "/srv/x.git"), None);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    #[test]
    fn token_is_bearer() {
        let c = Credentials::parse("glpat-abc123\n").expect("parse");
        assert_eq!(header(&c, "https://h/x.git").as_deref(), Some("Bearer glpat-abc123"));
        assert!(c.header_for("https://h/x.git").is_some_and(|h| h.is_sensitive()));
    }

    #[test]
    fn url_entries_are_scoped_by_scheme_host_port_and_path() {
        let c = Credentials::parse(
            "https://alice:p%40ss@git.example/fleet\nhttps://bob:x@git.example\nhttp://mirror.local:8080/\n",
        );
        assert!(c.is_err(), "an URL without user info is refused");
        let c = Credentials::parse("https://alice:p%40ss@git.example/fleet\nhttps://bob:x@Git.Example:443\n")
            .expect("parse");
        let alice = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:p@ss")
        );
        let bob = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:x"));
        assert_eq!(header(&c, "https://git.example/fleetwood.git"), Some(bob.clone()));
        assert_eq!(header(&c, "https://git.example/fleet"), Some(alice.clone()));
        assert_eq!(header(&c, "https://git.example/fleet/sub.git"), Some(alice));
        assert_eq!(header(&c, "https://git.example/other.git"), Some(bob));
        assert_eq!(header(&c, "http://git.example/fleet"), None, "scheme must match");
        assert_eq!(header(&c, "https://git.example:8443/fleet"), None, "port must match");
        assert_eq!(header(&c, "https://evil.example/fleet"), None, "host must match");
    }

    #[test]
    fn errors_name_the_line_but_not_the_secret() {
        let e = Credentials::parse("a:b\nc:d\n").expect_err("two unscoped");
        assert_eq!(e.0, 2);
        let e = Credentials::parse("user name:pw\n").expect_err("space");
        assert!(!e.1.contains("pw"));
        assert!(Credentials::parse("# only a comment\n").is_err());
        assert!(Credentials::parse("ssh://u:p@h/x\n").is_err());
    }
}
