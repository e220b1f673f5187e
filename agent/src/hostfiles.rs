//! Host files: each layer's `files/` directory mirrored onto the host (`files/etc/fleet/x.conf`
//! becomes `/etc/fleet/x.conf`), only under the prefixes the host's config allows, with mode and
//! owner from the layer's `files.toml`, written atomically, restored when edited by hand, and
//! removed when no longer declared. tend only ever removes files it wrote.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One declared host file.
#[derive(Clone, PartialEq, Eq)]
pub struct HostFile {
    /// Where it came from in the repository (for messages).
    pub source: String,
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

impl std::fmt::Debug for HostFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HostFile({}, {} bytes, {:o})",
            self.source,
            self.data.len(),
            self.mode
        )
    }
}

impl HostFile {
    /// Hash of content, mode and owner: what tend records as written.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(&self.data);
        h.update(format!("{:o}:{}:{}", self.mode, self.uid, self.gid).as_bytes());
        hex::encode(h.finalize())
    }
}

/// Per-file options in a layer's `files.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// Octal mode, e.g. `"0640"`.
    pub mode: Option<String>,
    /// Owner: a user name or uid.
    pub owner: Option<String>,
    /// Group: a group name or gid.
    pub group: Option<String>,
}

/// What tend wrote: host path -> hash.
pub type Owned = BTreeMap<String, String>;

/// Errors writing host files.
#[derive(Debug, thiserror::Error)]
#[error("host file {path}: {message}")]
pub struct Error {
    /// The host path.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Parse a layer's `files.toml` (keys are absolute host paths).
pub fn parse_manifest(file: &str, text: &str) -> Result<BTreeMap<String, FileOptions>, String> {
    toml::from_str::<BTreeMap<String, FileOptions>>(text)
        .map_err(|e| format!("{file}: {}", e.to_string().replace('\n', " ")))
}

fn resolve_user(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .ok_or_else(|| format!("no user {name:?} on this host"))
}

fn resolve_group(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| format!("no group {name:?} on this host"))
}

/// Build the declared file for host path `path` from its repository content and options.
pub fn declare(
    source: String,
    data: Vec<u8>,
    executable: bool,
    opts: Option<&FileOptions>,
) -> Result<HostFile, String> {
    let mode = match opts.and_then(|o| o.mode.as_deref()) {
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| format!("mode {m:?} is not an octal mode like \"0640\""))?,
        None if executable => 0o755,
        None => 0o644,
    };
    let uid = opts
        .and_then(|o| o.owner.as_deref())
        .map(resolve_user)
        .transpose()?
        .unwrap_or(0);
    let gid = opts
        .and_then(|o| o.group.as_deref())
        .map(resolve_group)
        .transpose()?
        .unwrap_or(0);
    Ok(HostFile {
        source,
        data,
        mode,
        uid,
        gid,
    })
}

/// Whether `path` is under one of `prefixes` (both absolute; no `..`).
pub fn allowed(path: &str, prefixes: &[String]) -> bool {
    !path.split('/').any(|c| c == "..")
        && prefixes.iter().any(|p| {
            let p = p.trim_end_matches('/');
            path == p || path.starts_with(&format!("{p}/"))
        })
}

fn host_path(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn on_disk_hash(p: &Path) -> Option<String> {
    let data = std::fs::read(p).ok()?;
    let meta = std::fs::metadata(p).ok()?;
    let f = HostFile {
        source: String::new(),
        data,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    };
    Some(f.hash())
}

fn write_atomic(p: &Path, f: &HostFile) -> Result<(), Error> {
    let err = |e: std::io::Error| Error {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let dir = p.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(".tend-tmp-{}", std::process::id()));
    {
        let mut out = std::fs::File::create(&tmp).map_err(err)?;
        out.write_all(&f.data).map_err(err)?;
        out.sync_all().map_err(err)?;
    }
    nix::unistd::chown(
        &tmp,
        Some(nix::unistd::Uid::from_raw(f.uid)),
        Some(nix::unistd::Gid::from_raw(f.gid)),
    )
    .map_err(|e| err(std::io::Error::from(e)))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(f.mode)).map_err(err)?;
    std::fs::rename(&tmp, p).map_err(err)?;
    Ok(())
}

/// What one sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Paths written (new, changed in Git, or restored after a hand edit).
    pub written: Vec<String>,
    /// Paths removed (no longer declared).
    pub removed: Vec<String>,
}

/// Make the host match `desired` under `root`; `owned` is updated as files are written/removed.
pub fn sync(root: &Path, desired: &BTreeMap<String, HostFile>, owned: &mut Owned) -> Result<Outcome, Error> {
    let mut out = Outcome::default();
    for (path, f) in desired {
        let p = host_path(root, path);
        let want = f.hash();
        if on_disk_hash(&p).as_deref() != Some(want.as_str()) {
            write_atomic(&p, f)?;
            out.written.push(path.clone());
        }
        owned.insert(path.clone(), want);
    }
    let gone: Vec<String> = owned.keys().filter(|k| !desired.contains_key(*k)).cloned().collect();
    for path in gone {
        let p = host_path(root, &path);
        match std::fs::remove_file(&p) {
            Ok(()) => out.removed.push(path.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error {
                    path,
                    message: e.to_string(),
                })
            }
        }
        owned.remove(&path);
    }
    Ok(out)
}

/// What the shape of tend's record of host files is in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Paths and hashes tend wrote.
    pub owned: Owned,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = vec!["/etc/fleet/".to_owned(), "/opt/app".to_owned()];
        assert!(allowed("/etc/fleet/a.conf", &p));
        assert!(allowed("/opt/app/x/y", &p));
        assert!(!allowed("/etc/passwd", &p));
        assert!(!allowed("/etc/fleetx/a", &p));
        assert!(!allowed("/etc/fleet/../passwd", &p));
    }

    #[test]
    fn sync_writes_restores_and_removes() {
        let root = tempfile::tempdir().expect("tmp");
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let f = HostFile {
            source: "common/files/etc/fleet/a.conf".into(),
            data: b"a=1\n".to_vec(),
            mode: 0o640,
            uid,
            gid,
        };
        let mut desired = BTreeMap::from([("/etc/fleet/a.conf".to_owned(), f)]);
        let mut owned = Owned::new();
        let o = sync(root.path(), &desired, &mut owned).expect("sync");
        assert_eq!(o.written, vec!["/etc/fleet/a.conf"]);
        let p = root.path().join("etc/fleet/a.conf");
        assert_eq!(std::fs::read(&p).expect("read"), b"a=1\n");
        assert_eq!(std::fs::metadata(&p).expect("meta").mode() & 0o777, 0o640);
        // No-op.
        assert_eq!(
            sync(root.path(), &desired, &mut owned).expect("sync"),
            Outcome::default()
        );
        // A hand edit is restored.
        std::fs::write(&p, b"edited").expect("edit");
        assert_eq!(sync(root.path(), &desired, &mut owned).expect("sync").written.len(), 1);
        assert_eq!(std::fs::read(&p).expect("read"), b"a=1\n");
        // Undeclared: removed; a file tend never wrote is left alone.
        std::fs::write(root.path().join("etc/fleet/other"), b"x").expect("write");
        desired.clear();
        let o = sync(root.path(), &desired, &mut owned).expect("sync");
        assert_eq!(o.removed, vec!["/etc/fleet/a.conf"]);
        assert!(!p.exists());
        assert!(root.path().join("etc/fleet/other").exists());
        assert!(owned.is_empty());
    }

    #[test]
    fn manifest_and_modes() {
        let m = parse_manifest(
            "l/files.toml",
            "[\"/etc/fleet/a.conf\"]\nmode = \"0600\"\nowner = \"0\"\n",
        )
        .expect("valid");
        let f = declare("x".into(), vec![], false, m.get("/etc/fleet/a.conf")).expect("ok");
        assert_eq!((f.mode, f.uid), (0o600, 0));
        assert_eq!(declare("x".into(), vec![], true, None).expect("ok").mode, 0o755);
        assert!(declare(
            "x".into(),
            vec![],
            false,
            Some(&FileOptions {
                mode: Some("rw".into()),
                ..Default::default()
            })
        )
        .is_err());
        assert!(parse_manifest("l/files.toml", "[\"/a\"]\nmod = \"0600\"\n").is_err());
    }
}
