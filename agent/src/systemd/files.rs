//! Unit files under a root directory (default `/etc/systemd/system`).
//!
//! Writes are atomic: a hidden temporary file in the same directory
//! (systemd ignores hidden files), `fsync`, `rename`, `fsync` of the
//! directory; mode 0644 (directories 0755). The I/O is synchronous: the files
//! are small and local, so the caller's async runtime is blocked for
//! microseconds, not worth a thread hop.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::desired::content_hash;
use super::error::Error;
use super::plan::ObservedUnit;

/// Default directory for unit files written by tend.
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";

/// The unit directory tend writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFiles {
    root: PathBuf,
}

impl Default for UnitFiles {
    fn default() -> Self {
        UnitFiles::new(DEFAULT_UNIT_DIR)
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A single path component that cannot escape the directory.
fn safe_component(name: &str) -> Result<&str, Error> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0') {
        return Err(Error::Io {
            op: "use",
            path: PathBuf::from(name),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
        });
    }
    Ok(name)
}

impl UnitFiles {
    /// Unit files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        UnitFiles { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a unit file.
    pub fn unit_path(&self, unit: &str) -> Result<PathBuf, Error> {
        Ok(self.root.join(safe_component(unit)?))
    }

    /// Path of a unit's drop-in directory.
    pub fn dropin_dir(&self, unit: &str) -> Result<PathBuf, Error> {
        Ok(self.root.join(format!("{}.d", safe_component(unit)?)))
    }

    /// Fill the file fields of `obs` (`file_hash_on_disk`, `symlink_on_disk`,
    /// `dropin_hashes_on_disk`) from the directory.
    pub fn observe_files(&self, obs: &mut ObservedUnit) -> Result<(), Error> {
        let path = self.unit_path(&obs.name)?;
        obs.file_hash_on_disk = None;
        obs.symlink_on_disk = None;
        obs.dropin_hashes_on_disk.clear();
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&path).map_err(io_err("read link", &path))?;
                obs.symlink_on_disk = Some(target.to_string_lossy().into_owned());
            }
            Ok(meta) if meta.is_file() => {
                let bytes = fs::read(&path).map_err(io_err("read", &path))?;
                obs.file_hash_on_disk = Some(content_hash(&bytes));
            }
            Ok(_) => obs.symlink_on_disk = Some(String::from("(not a regular file)")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &path)(e)),
        }
        let dir = self.dropin_dir(&obs.name)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".conf") {
                continue;
            }
            let p = entry.path();
            // Follows symlinks: a symlinked drop-in still changes the unit.
            match fs::read(&p) {
                Ok(bytes) => {
                    obs.dropin_hashes_on_disk.insert(name, content_hash(&bytes));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("read", &p)(e)),
            }
        }
        Ok(())
    }

    /// Atomically write a unit file.
    pub fn write_unit(&self, unit: &str, content: &[u8]) -> Result<(), Error> {
        let path = self.unit_path(unit)?;
        atomic_write(&self.root, &path, content)
    }

    /// Atomically write a drop-in, creating `NAME.d/` if needed.
    pub fn write_dropin(&self, unit: &str, dropin: &str, content: &[u8]) -> Result<(), Error> {
        let dir = self.dropin_dir(unit)?;
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => sync_dir(&self.root)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
        let path = dir.join(safe_component(dropin)?);
        atomic_write(&dir, &path, content)
    }

    /// Remove a unit file. Missing is fine; a symlink (e.g. a mask) is left
    /// alone, as tend never writes symlinks.
    pub fn remove_unit(&self, unit: &str) -> Result<(), Error> {
        let path = self.unit_path(unit)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("inspect", &path)(e)),
        }
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Remove a drop-in, and `NAME.d/` when it is left empty. Missing is fine.
    pub fn remove_dropin(&self, unit: &str, dropin: &str) -> Result<(), Error> {
        let dir = self.dropin_dir(unit)?;
        let path = dir.join(safe_component(dropin)?);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        // Only succeeds when empty; anything else (not empty, missing) is fine.
        if fs::remove_dir(&dir).is_ok() {
            sync_dir(&self.root)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

fn atomic_write(dir: &Path, path: &Path, content: &[u8]) -> Result<(), Error> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".#{file_name}.tend-{}.tmp", std::process::id()));
    let result = (|| -> Result<(), Error> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        // The umask may have narrowed the mode.
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err("chmod", &tmp))?;
        f.write_all(content).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn obs(name: &str) -> ObservedUnit {
        ObservedUnit {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn write_observe_remove_roundtrip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = UnitFiles::new(tmp.path());
        files
            .write_unit("web.service", b"[Service]\nExecStart=/bin/true\n")
            .expect("write");
        files
            .write_dropin("web.service", "10-a.conf", b"[Service]\nEnvironment=A=1\n")
            .expect("write drop-in");
        let meta = fs::metadata(tmp.path().join("web.service")).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let leftovers: Vec<_> = fs::read_dir(tmp.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temp files left behind");

        let mut o = obs("web.service");
        files.observe_files(&mut o).expect("observe");
        assert_eq!(
            o.file_hash_on_disk.as_deref(),
            Some(content_hash(b"[Service]\nExecStart=/bin/true\n").as_str())
        );
        assert_eq!(o.dropin_hashes_on_disk.len(), 1);

        files.remove_dropin("web.service", "10-a.conf").expect("rm drop-in");
        assert!(!tmp.path().join("web.service.d").exists(), "empty dir removed");
        files.remove_unit("web.service").expect("rm");
        files.remove_unit("web.service").expect("rm twice is fine");
        files.observe_files(&mut o).expect("observe");
        assert_eq!(o.file_hash_on_disk, None);
        assert!(o.dropin_hashes_on_disk.is_empty());
    }

    #[test]
    fn masks_are_seen_and_left_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = UnitFiles::new(tmp.path());
        symlink("/dev/null", tmp.path().join("web.service")).expect("symlink");
        let mut o = obs("web.service");
        files.observe_files(&mut o).expect("observe");
        assert_eq!(o.symlink_on_disk.as_deref(), Some("/dev/null"));
        assert!(o.is_masked());
        files.remove_unit("web.service").expect("rm");
        assert!(fs::symlink_metadata(tmp.path().join("web.service")).is_ok());
    }

    #[test]
    fn refuses_path_escapes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = UnitFiles::new(tmp.path());
        assert!(files.write_unit("../evil.service", b"x").is_err());
        assert!(files.write_dropin("web.service", "../../x.conf", b"x").is_err());
        assert!(files.write_unit(".hidden.service", b"x").is_err());
    }
}
