//! Offline bundles: `git bundle` files (v2 and v3) carried on a USB stick or copied by hand.
//!
//! A bundle is a header — `# v2 git bundle` or `# v3 git bundle` with `@capability` lines, then
//! prerequisites (`-OID comment`) and refs (`OID refname`), then an empty line — followed by a
//! pack. tend reads the header itself, checks that the repository has every prerequisite, and
//! indexes the pack into the bare repository with gix (thin packs completed from the objects
//! already there); no `git` is run. The commit it carries for the followed branch then goes
//! through exactly the checks a fetched tip does (signature, anti-rollback) before anything of
//! it is read. The file itself is only ever read.

use crate::source::Repo;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The ref the last imported bundle's tip is kept under (so its objects stay reachable and are
/// offered as `have`s on the next fetch).
pub const BUNDLE_REF: &str = "refs/tend/bundle";

/// Longest header tend reads (a bundle of a whole fleet repository has a few refs).
const MAX_HEADER: usize = 4 << 20;

/// Why a bundle cannot be imported. One line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("bundle {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The header is not a git bundle header tend understands.
    #[error("bundle {path}: {message}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The bundle does not carry the followed branch.
    #[error("bundle {path}: no refs/heads/{branch} in the bundle (it has: {present})")]
    NoBranch {
        /// The file.
        path: PathBuf,
        /// The followed branch.
        branch: String,
        /// The refs it has.
        present: String,
    },
    /// The bundle builds on a commit this host does not have.
    #[error(
        "bundle {path}: needs commit {commit}, which this host does not have; make the bundle from the applied commit (git bundle create FILE APPLIED..BRANCH) or a full one"
    )]
    MissingPrerequisite {
        /// The file.
        path: PathBuf,
        /// The missing prerequisite.
        commit: String,
    },
    /// The pack is damaged, truncated or incomplete.
    #[error("bundle {path}: pack: {message}")]
    Pack {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A parsed bundle header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u8,
    /// Commits the pack builds on (hex).
    pub prerequisites: Vec<String>,
    /// `(object id, ref name)` in file order.
    pub refs: Vec<(String, String)>,
    /// Byte offset of the pack.
    pub pack_offset: u64,
}

impl Header {
    /// The commit the bundle carries for `branch`.
    pub fn tip(&self, branch: &str) -> Option<&str> {
        let want = format!("refs/heads/{branch}");
        self.refs.iter().find(|(_, r)| *r == want).map(|(id, _)| id.as_str())
    }
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Read and check the header; the reader is left at the start of the pack.
pub fn read_header(path: &Path, reader: &mut impl BufRead) -> Result<Header, Error> {
    let bad = |message: String| Error::Header {
        path: path.to_owned(),
        message,
    };
    let mut offset = 0u64;
    let mut line = Vec::new();
    let mut next_line = |reader: &mut dyn BufRead, line: &mut Vec<u8>| -> Result<bool, Error> {
        line.clear();
        let n = std::io::Read::take(&mut *reader, (MAX_HEADER as u64).saturating_sub(offset))
            .read_until(b'\n', line)
            .map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?;
        offset += n as u64;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(false);
        }
        line.pop();
        Ok(true)
    };
    if !next_line(reader, &mut line)? {
        return Err(bad("not a git bundle (empty or no header line)".into()));
    }
    let version = match line.as_slice() {
        b"# v2 git bundle" => 2,
        b"# v3 git bundle" => 3,
        _ => {
            return Err(bad(
                "not a git bundle (the first line is not \"# v2 git bundle\" or \"# v3 git bundle\")".into(),
            ))
        }
    };
    let mut header = Header {
        version,
        prerequisites: Vec::new(),
        refs: Vec::new(),
        pack_offset: 0,
    };
    loop {
        if !next_line(reader, &mut line)? {
            return Err(bad(format!(
                "header ends before the pack (truncated, or longer than {} MiB)",
                MAX_HEADER >> 20
            )));
        }
        if line.is_empty() {
            break;
        }
        let text = std::str::from_utf8(&line).map_err(|_| bad("header line is not UTF-8".into()))?;
        if let Some(cap) = text.strip_prefix('@') {
            if version < 3 {
                return Err(bad(format!("capability line @{cap} in a v2 bundle")));
            }
            match cap.split_once('=') {
                Some(("object-format", "sha1")) => {}
                Some(("object-format", other)) => {
                    return Err(bad(format!("object format {other} is not supported (sha1 only)")))
                }
                Some(("filter", _)) => {
                    return Err(bad(
                        "a filtered (partial) bundle cannot be applied: it lacks objects".into()
                    ))
                }
                _ => return Err(bad(format!("unknown capability @{cap}"))),
            }
        } else if let Some(rest) = text.strip_prefix('-') {
            let id = rest.split(' ').next().unwrap_or_default();
            if !is_hex_id(id) {
                return Err(bad(format!("bad prerequisite line {text:?}")));
            }
            header.prerequisites.push(id.to_owned());
        } else {
            match text.split_once(' ') {
                Some((id, name)) if is_hex_id(id) && !name.is_empty() => {
                    header.refs.push((id.to_owned(), name.to_owned()));
                }
                _ => return Err(bad(format!("bad ref line {text:?}"))),
            }
        }
    }
    if header.refs.is_empty() {
        return Err(bad("the bundle lists no refs".into()));
    }
    header.pack_offset = offset;
    Ok(header)
}

/// Read only the header of the bundle file at `path`.
pub fn read_header_file(path: &Path) -> Result<Header, Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    read_header(path, &mut BufReader::new(file))
}

/// What [`import`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The commit the bundle carries for the branch.
    pub tip: String,
    /// Whether its pack was indexed (false: every object was already in the repository).
    pub indexed: bool,
}

/// Import the bundle at `path` into `repo`: check the header and prerequisites, index the pack
/// (unless the tip is already in the repository) and point [`BUNDLE_REF`] at the tip. Nothing is
/// verified or applied here; the caller verifies the tip like any fetched one.
pub fn import(repo: &Repo, path: &Path, branch: &str) -> Result<Imported, Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let header = read_header(path, &mut reader)?;
    let tip = header
        .tip(branch)
        .ok_or_else(|| Error::NoBranch {
            path: path.to_owned(),
            branch: branch.to_owned(),
            present: header
                .refs
                .iter()
                .take(5)
                .map(|(_, r)| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?
        .to_owned();
    let indexed = if repo.has_object(&tip) {
        false
    } else {
        if let Some(missing) = header.prerequisites.iter().find(|p| !repo.has_object(p)) {
            return Err(Error::MissingPrerequisite {
                path: path.to_owned(),
                commit: missing.clone(),
            });
        }
        let pack_err = |message: String| Error::Pack {
            path: path.to_owned(),
            message,
        };
        let gix_repo = repo.gix();
        let pack_dir = gix_repo.objects.store_ref().path().join("pack");
        std::fs::create_dir_all(&pack_dir).map_err(|e| pack_err(e.to_string()))?;
        let outcome = gix::odb::pack::Bundle::write_to_directory(
            &mut reader,
            Some(&pack_dir),
            &mut gix::progress::Discard,
            &AtomicBool::new(false),
            Some(gix_repo.objects.clone()),
            gix_repo.object_hash(),
            gix::odb::pack::bundle::write::Options {
                thread_limit: Some(1),
                ..Default::default()
            },
        )
        .map_err(|e| pack_err(format!("{e:#}").replace('\n', ": ")))?;
        if let Some(keep) = &outcome.keep_path {
            let _ = std::fs::remove_file(keep);
        }
        if !repo.has_object(&tip) {
            return Err(pack_err(format!("the pack does not contain the commit {tip} it names")));
        }
        true
    };
    repo.set_ref(BUNDLE_REF, &tip).map_err(|e| Error::Pack {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Imported { tip, indexed })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn parse(text: &[u8]) -> Result<Header, Error> {
        read_header(Path::new("t.bundle"), &mut std::io::Cursor::new(text))
    }

    #[test]
    fn v2_header_with_prerequisite_and_refs() {
        let text = format!("# v2 git bundle\n-{A} base commit\n{B} refs/heads/main\n{A} refs/tags/v1\n\nPACK...");
        let h = parse(text.as_bytes()).expect("valid");
        assert_eq!(h.version, 2);
        assert_eq!(h.prerequisites, vec![A.to_owned()]);
        assert_eq!(h.tip("main"), Some(B));
        assert_eq!(h.tip("prod"), None);
        assert_eq!(&text.as_bytes()[h.pack_offset as usize..], b"PACK...");
    }

    #[test]
    fn v3_capabilities() {
        let ok = format!("# v3 git bundle\n@object-format=sha1\n{B} refs/heads/main\n\nPACK");
        assert_eq!(parse(ok.as_bytes()).expect("valid").version, 3);
        for (text, why) in [
            (
                format!("# v3 git bundle\n@object-format=sha256\n{B} refs/heads/main\n\n"),
                "sha256",
            ),
            (
                format!("# v3 git bundle\n@filter=blob:none\n{B} refs/heads/main\n\n"),
                "partial",
            ),
            (
                format!("# v3 git bundle\n@frobnicate\n{B} refs/heads/main\n\n"),
                "unknown capability",
            ),
            (
                format!("# v2 git bundle\n@object-format=sha1\n{B} refs/heads/main\n\n"),
                "v2",
            ),
        ] {
            let e = parse(text.as_bytes()).expect_err(why);
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        for (text, why) in [
            ("", "not a git bundle"),
            ("PACK\0\0\0\x02", "not a git bundle"),
            ("# v4 git bundle\n", "not a git bundle"),
            ("# v2 git bundle\n", "truncated"),
            ("# v2 git bundle\nzzz refs/heads/main\n\n", "bad ref line"),
            ("# v2 git bundle\n-xyz\n\n", "bad prerequisite"),
            ("# v2 git bundle\n\n", "no refs"),
        ] {
            let e = parse(text.as_bytes()).expect_err(why);
            let msg = e.to_string();
            assert!(
                msg.contains(why) && msg.starts_with("bundle t.bundle: "),
                "{why}: {msg}"
            );
        }
    }
}
