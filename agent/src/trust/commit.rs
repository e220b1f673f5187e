//! Parsing of raw git commit objects and reconstruction of the signed
//! payload.
//!
//! git signs a commit by computing the commit object *without* its
//! signature header(s), signing that, and inserting the armored signature
//! as a `gpgsig` header (`gpgsig-sha256` in SHA-256 repositories) whose
//! continuation lines start with one space. Verification reverses this:
//! every header line whose name starts with `gpgsig`, together with its
//! continuation lines, is removed from the header block, and everything
//! else — including the message after the first empty line — is kept
//! byte for byte.

use sha1_checked::Digest as _;

/// Which header a signature was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureHeader {
    /// `gpgsig` (signature over the SHA-1 form of the commit).
    Gpgsig,
    /// `gpgsig-sha256` (signature over the SHA-256 form of the commit).
    GpgsigSha256,
}

/// Hash function of the repository, derived from the length of an object id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    /// 40 hex digits.
    Sha1,
    /// 64 hex digits.
    Sha256,
}

impl ObjectFormat {
    /// Derives the object format from a full hex object id.
    pub fn from_id(id: &str) -> Option<Self> {
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match id.len() {
            40 => Some(ObjectFormat::Sha1),
            64 => Some(ObjectFormat::Sha256),
            _ => None,
        }
    }
}

/// A parsed commit object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommit {
    /// Tree id (hex).
    pub tree: String,
    /// Parent ids (hex), in header order.
    pub parents: Vec<String>,
    /// Committer time, Unix seconds.
    pub committer_time: i64,
    /// First paragraph of the message, lines joined by one space (like
    /// git's `%s`).
    pub subject: String,
    /// Content of the `gpgsig` header (continuation prefix removed).
    pub gpgsig: Option<Vec<u8>>,
    /// Content of the `gpgsig-sha256` header (continuation prefix removed).
    pub gpgsig_sha256: Option<Vec<u8>>,
    /// The commit with all `gpgsig*` headers removed: the bytes the
    /// signature covers.
    pub payload: Vec<u8>,
}

impl ParsedCommit {
    /// The signature to verify for a repository of the given format: the
    /// header native to that format, falling back to the other one.
    pub fn signature(&self, format: ObjectFormat) -> Option<(SignatureHeader, &[u8])> {
        let sha1 = self.gpgsig.as_deref().map(|s| (SignatureHeader::Gpgsig, s));
        let sha256 = self
            .gpgsig_sha256
            .as_deref()
            .map(|s| (SignatureHeader::GpgsigSha256, s));
        match format {
            ObjectFormat::Sha1 => sha1.or(sha256),
            ObjectFormat::Sha256 => sha256.or(sha1),
        }
    }
}

fn is_hex_id(s: &str) -> bool {
    ObjectFormat::from_id(s).is_some()
}

/// Parses the `committer` header value: `Name <email> 1700000000 +0000`.
fn parse_committer_time(value: &[u8]) -> Result<i64, String> {
    let value = String::from_utf8_lossy(value);
    let after_email = value
        .rfind('>')
        .and_then(|i| value.get(i + 1..))
        .ok_or_else(|| "committer header has no <email>".to_string())?;
    let mut fields = after_email.split_whitespace();
    let ts = fields
        .next()
        .ok_or_else(|| "committer header has no timestamp".to_string())?;
    ts.parse::<i64>()
        .map_err(|_| format!("committer timestamp \"{ts}\" is not a number"))
}

/// Which multi-line header the previous line belonged to.
enum Continuation {
    /// Not inside a signature header.
    None,
    /// Inside `gpgsig` / `gpgsig-sha256`: continuation lines are collected.
    Collect(SignatureHeader),
    /// Inside another `gpgsig…` header: continuation lines are dropped.
    Drop,
}

/// Parses a raw commit object (the bytes git stores, without the
/// `commit <len>\0` prefix).
pub fn parse_commit(raw: &[u8]) -> Result<ParsedCommit, String> {
    let mut payload = Vec::with_capacity(raw.len());
    let mut gpgsig: Option<Vec<u8>> = None;
    let mut gpgsig_sha256: Option<Vec<u8>> = None;
    let mut tree: Option<String> = None;
    let mut parents = Vec::new();
    let mut committer_time: Option<i64> = None;
    let mut message: &[u8] = &[];
    let mut state = Continuation::None;

    let mut rest = raw;
    while !rest.is_empty() {
        let line_len = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(line_len);
        rest = tail;

        if line.first() == Some(&b' ') {
            match state {
                Continuation::Collect(which) => {
                    let target = match which {
                        SignatureHeader::Gpgsig => &mut gpgsig,
                        SignatureHeader::GpgsigSha256 => &mut gpgsig_sha256,
                    };
                    target.get_or_insert_with(Vec::new).extend_from_slice(&line[1..]);
                }
                Continuation::Drop => {}
                // Continuation of a header we keep (e.g. `mergetag`).
                Continuation::None => payload.extend_from_slice(line),
            }
            continue;
        }
        if line == b"\n" {
            // End of the header block: the message follows verbatim.
            payload.extend_from_slice(line);
            payload.extend_from_slice(rest);
            message = rest;
            break;
        }

        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let (name, value) = match body.iter().position(|&b| b == b' ') {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (body, &b""[..]),
        };
        let sig_header = match name {
            b"gpgsig" => Some(SignatureHeader::Gpgsig),
            b"gpgsig-sha256" => Some(SignatureHeader::GpgsigSha256),
            _ => None,
        };
        if let (Some(which), true) = (sig_header, body.len() > name.len()) {
            let target = match which {
                SignatureHeader::Gpgsig => &mut gpgsig,
                SignatureHeader::GpgsigSha256 => &mut gpgsig_sha256,
            };
            let buf = target.get_or_insert_with(Vec::new);
            buf.extend_from_slice(value);
            buf.push(b'\n');
            state = Continuation::Collect(which);
            continue;
        }
        if name.starts_with(b"gpgsig") {
            // Another signature header (git drops these from the payload
            // as well, with their continuation lines).
            state = Continuation::Drop;
            continue;
        }

        state = Continuation::None;
        payload.extend_from_slice(line);
        match name {
            b"tree" => {
                let id = String::from_utf8_lossy(value).into_owned();
                if !is_hex_id(&id) {
                    return Err(format!("invalid tree id \"{id}\""));
                }
                if tree.replace(id).is_some() {
                    return Err("more than one tree header".into());
                }
            }
            b"parent" => {
                let id = String::from_utf8_lossy(value).into_owned();
                if !is_hex_id(&id) {
                    return Err(format!("invalid parent id \"{id}\""));
                }
                parents.push(id);
            }
            b"committer" => {
                let time = parse_committer_time(value)?;
                if committer_time.replace(time).is_some() {
                    return Err("more than one committer header".into());
                }
            }
            _ => {}
        }
    }

    let tree = tree.ok_or_else(|| "missing tree header".to_string())?;
    let committer_time = committer_time.ok_or_else(|| "missing committer header".to_string())?;
    let subject = String::from_utf8_lossy(message)
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");

    Ok(ParsedCommit {
        tree,
        parents,
        committer_time,
        subject,
        gpgsig,
        gpgsig_sha256,
        payload,
    })
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Computes the object id of a commit object (hex), as git does: the hash
/// of `commit <len>\0` followed by the raw bytes. SHA-1 uses collision
/// detection; a detected collision attack is an error.
pub fn commit_object_id(raw: &[u8], format: ObjectFormat) -> Result<String, String> {
    let header = format!("commit {}\0", raw.len());
    match format {
        ObjectFormat::Sha1 => {
            let mut h = sha1_checked::Sha1::new();
            h.update(header.as_bytes());
            h.update(raw);
            let result = h.try_finalize();
            if result.has_collision() {
                return Err("SHA-1 collision attack detected".into());
            }
            Ok(to_hex(result.hash()))
        }
        ObjectFormat::Sha256 => {
            let mut h = sha2::Sha256::new();
            sha2::Digest::update(&mut h, header.as_bytes());
            sha2::Digest::update(&mut h, raw);
            Ok(to_hex(&sha2::Digest::finalize(h)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &[u8] = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
parent 1111111111111111111111111111111111111111\n\
parent 2222222222222222222222222222222222222222\n\
author A U Thor <a@example.com> 1700000000 +0100\n\
committer C O Mitter <c@example.com> 1700000123 -0230\n\
gpgsig -----BEGIN SSH SIGNATURE-----\n \
U1NIU0lH\n \n \
AAAA\n \
-----END SSH SIGNATURE-----\n\
mergetag object 3333333333333333333333333333333333333333\n \
type commit\n \
-----BEGIN PGP SIGNATURE-----\n \
xyz\n \
-----END PGP SIGNATURE-----\n\
\n\
Subject line\n\
continues here\n\
\n\
Body text\n\
\x20indented body line\n";

    const UNSIGNED_EQUIVALENT: &[u8] = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
parent 1111111111111111111111111111111111111111\n\
parent 2222222222222222222222222222222222222222\n\
author A U Thor <a@example.com> 1700000000 +0100\n\
committer C O Mitter <c@example.com> 1700000123 -0230\n\
mergetag object 3333333333333333333333333333333333333333\n \
type commit\n \
-----BEGIN PGP SIGNATURE-----\n \
xyz\n \
-----END PGP SIGNATURE-----\n\
\n\
Subject line\n\
continues here\n\
\n\
Body text\n\
\x20indented body line\n";

    #[test]
    fn extracts_headers_signature_and_payload() {
        let c = parse_commit(SIGNED).expect("parses");
        assert_eq!(c.tree, "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        assert_eq!(
            c.parents,
            vec![
                "1111111111111111111111111111111111111111".to_string(),
                "2222222222222222222222222222222222222222".to_string()
            ]
        );
        assert_eq!(c.committer_time, 1_700_000_123);
        assert_eq!(c.subject, "Subject line continues here");
        assert_eq!(
            c.gpgsig.as_deref(),
            Some(&b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n\nAAAA\n-----END SSH SIGNATURE-----\n"[..])
        );
        assert_eq!(c.gpgsig_sha256, None);
        assert_eq!(c.payload, UNSIGNED_EQUIVALENT);
        assert_eq!(
            c.signature(ObjectFormat::Sha1).map(|s| s.0),
            Some(SignatureHeader::Gpgsig)
        );
    }

    #[test]
    fn unsigned_commit_payload_is_identity() {
        let c = parse_commit(UNSIGNED_EQUIVALENT).expect("parses");
        assert_eq!(c.gpgsig, None);
        assert_eq!(c.signature(ObjectFormat::Sha1), None);
        assert_eq!(c.payload, UNSIGNED_EQUIVALENT);
    }

    #[test]
    fn sha256_header_and_other_gpgsig_headers() {
        let raw = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
committer C <c@x> 5 +0000\n\
gpgsig SIG1\n \
line2\n\
gpgsig-sha256 SIG256\n \
more\n\
gpgsig-future XX\n \
dropped\n\
encoding UTF-8\n\
\n\
msg\n";
        let c = parse_commit(raw).expect("parses");
        assert_eq!(c.gpgsig.as_deref(), Some(&b"SIG1\nline2\n"[..]));
        assert_eq!(c.gpgsig_sha256.as_deref(), Some(&b"SIG256\nmore\n"[..]));
        assert_eq!(
            c.payload,
            b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ncommitter C <c@x> 5 +0000\nencoding UTF-8\n\nmsg\n"
        );
        assert_eq!(
            c.signature(ObjectFormat::Sha256).map(|s| s.0),
            Some(SignatureHeader::GpgsigSha256)
        );
        assert_eq!(
            c.signature(ObjectFormat::Sha1).map(|s| s.0),
            Some(SignatureHeader::Gpgsig)
        );
        assert_eq!(c.parents.len(), 0);
        assert_eq!(c.subject, "msg");
    }

    #[test]
    fn gpgsig_like_lines_in_message_are_kept() {
        let raw = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
committer C <c@x> 5 +0000\n\
\n\
gpgsig not a header\n \
continuation\n";
        let c = parse_commit(raw).expect("parses");
        assert_eq!(c.gpgsig, None);
        assert_eq!(c.payload, raw);
        assert_eq!(c.subject, "gpgsig not a header continuation");
    }

    #[test]
    fn rejects_malformed_commits() {
        let cases: &[(&[u8], &str)] = &[
            (b"committer C <c@x> 5 +0000\n\nm\n", "missing tree"),
            (
                b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nm\n",
                "missing committer",
            ),
            (b"tree xyz\ncommitter C <c@x> 5 +0000\n\nm\n", "invalid tree"),
            (
                b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent 12\ncommitter C <c@x> 5 +0000\n\n",
                "invalid parent",
            ),
            (
                b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ncommitter C <c@x> soon +0000\n\n",
                "not a number",
            ),
            (
                b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ncommitter C c@x 5 +0000\n\n",
                "no <email>",
            ),
        ];
        for (raw, want) in cases {
            let err = parse_commit(raw).expect_err("must be rejected");
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn object_id_matches_git() {
        // `git hash-object -t commit` of this exact content.
        let raw = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
author A <a@example.com> 1700000000 +0000\n\
committer A <a@example.com> 1700000000 +0000\n\
\n\
empty\n";
        let id = commit_object_id(raw, ObjectFormat::Sha1).expect("no collision");
        assert_eq!(id, EMPTY_COMMIT_ID);
        assert_eq!(ObjectFormat::from_id(&id), Some(ObjectFormat::Sha1));
        assert_eq!(ObjectFormat::from_id("abc"), None);
        assert_eq!(ObjectFormat::from_id(&"g".repeat(40)), None);
        let id256 = commit_object_id(raw, ObjectFormat::Sha256).expect("sha256");
        assert_eq!(id256.len(), 64);
    }

    const EMPTY_COMMIT_ID: &str = "4c73ad9eccddf53ee27c5b1ca476f8f97e753f10";
}
