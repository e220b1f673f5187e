//! Decrypted secrets on tmpfs: `<runtime>/secrets/NAME` (0400, in a 0700 directory), where
//! containers bind-mount them read-only and units read them. Never written anywhere else: the
//! directory must be a tmpfs (or ramfs), or nothing is written.

use crate::desired::spec::MountKind;
use crate::desired::Desired;
use crate::docker::{secret_path, Roots};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Errors delivering secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime directory is on persistent storage.
    #[error(
        "refusing to write secrets to {path}: it is not a tmpfs (set [paths] runtime to a tmpfs such as /run/tend)"
    )]
    NotTmpfs {
        /// The directory.
        path: PathBuf,
    },
    /// I/O.
    #[error("secrets in {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `path` is on a memory file system.
pub fn is_tmpfs(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    // ramfs has no constant in nix; its magic is 0x858458f6.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    statfs(path).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC || s.filesystem_type() == RAMFS_MAGIC)
}

fn mkdir_private(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Write `data` to `path` atomically with `mode`, unless it already holds exactly that.
fn write_secret(path: &Path, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<bool, Error> {
    if let Ok(existing) = std::fs::read(path) {
        let same = existing == data;
        drop(zeroize::Zeroizing::new(existing));
        let meta = std::fs::metadata(path).map_err(io(path))?;
        use std::os::unix::fs::MetadataExt;
        let owner_ok = owner.is_none_or(|(u, g)| meta.uid() == u && meta.gid() == g);
        if same && meta.mode() & 0o7777 == mode && owner_ok {
            return Ok(false);
        }
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(
            &tmp,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| Error::Io {
            path: tmp.clone(),
            source: std::io::Error::from(e),
        })?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(true)
}

/// Write every decrypted secret of `desired` under `roots.secrets`, and remove what is no longer
/// declared. Returns the names of the secrets whose content changed.
pub fn deliver(desired: &Desired, roots: &Roots) -> Result<BTreeSet<String>, Error> {
    let root = &roots.secrets;
    let mut changed = BTreeSet::new();
    let mut keep: BTreeSet<PathBuf> = BTreeSet::new();
    if desired.secret_files.is_empty() {
        remove_undeclared(root, &keep)?;
        return Ok(changed);
    }
    mkdir_private(root)?;
    if !is_tmpfs(root) {
        return Err(Error::NotTmpfs { path: root.clone() });
    }
    for (name, file) in &desired.secret_files {
        let Some(plain) = &file.plaintext else { continue };
        let path = root.join(name);
        if write_secret(&path, &plain.0, 0o400, None)? {
            changed.insert(name.clone());
        }
        keep.insert(path);
    }
    for spec in desired.services.values() {
        for m in spec.volumes.iter().filter(|m| m.kind == MountKind::Secret) {
            let Some(owner) = &m.file_owner else { continue };
            let Some(plain) = desired.secret_files.get(&m.source).and_then(|f| f.plaintext.as_ref()) else {
                continue;
            };
            let path = secret_path(roots, &spec.name, m);
            if let Some(parent) = path.parent() {
                mkdir_private(parent)?;
                // The service's user must be able to reach its own copy.
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711)).map_err(io(parent))?;
                if let Some(services) = parent.parent() {
                    std::fs::set_permissions(services, std::fs::Permissions::from_mode(0o711)).map_err(io(services))?;
                }
                std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).map_err(io(root))?;
            }
            write_secret(&path, &plain.0, owner.mode, Some((owner.uid, owner.gid)))?;
            keep.insert(path);
        }
    }
    remove_undeclared(root, &keep)?;
    Ok(changed)
}

/// Remove secret files under `root` that are not in `keep` (and empty service directories).
fn remove_undeclared(root: &Path, keep: &BTreeSet<PathBuf>) -> Result<(), Error> {
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir)(e)),
        };
        for e in entries {
            let e = e.map_err(io(&dir))?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !keep.contains(&p) {
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_persistent_disk() {
        // The crate's target dir is on the build disk, not a tmpfs.
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        assert!(!is_tmpfs(&dir));
        if Path::new("/dev/shm").exists() {
            assert!(is_tmpfs(Path::new("/dev/shm")));
        }
    }

    #[test]
    fn writes_atomically_with_mode_and_reports_changes() {
        let base = ["/dev/shm", "/run"]
            .iter()
            .map(Path::new)
            .find(|p| is_tmpfs(p))
            .expect("a tmpfs at /dev/shm or /run");
        let dir = tempfile::tempdir_in(base).expect("tmp");
        let p = dir.path().join("s");
        assert!(write_secret(&p, b"one", 0o400, None).expect("write"));
        assert!(!write_secret(&p, b"one", 0o400, None).expect("same"));
        assert!(write_secret(&p, b"two", 0o400, None).expect("changed"));
        let meta = std::fs::metadata(&p).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        remove_undeclared(dir.path(), &BTreeSet::new()).expect("gc");
        assert!(!p.exists());
    }
}
