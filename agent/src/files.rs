//! Materialize repository files for bind mounts (relative bind mounts and compose `configs`).
//!
//! Each mount source is `ID/NAME` where ID changes with the content (the Git object id, or a hash
//! of inline content and owner): a changed file gets a new directory, so the services mounting it
//! get a new spec hash and are replaced — exactly those, and no others. Directories are written
//! next to their final place and renamed into it, so a container never sees half a tree.

use crate::desired::compose::{FileSource, RepoFile};
use crate::desired::{FileData, Tree};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Errors writing materialized files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the repository.
    #[error("{0}")]
    Tree(#[from] crate::desired::TreeError),
    /// Writing to the host.
    #[error("materialize {path}: {source}")]
    Io {
        /// Host path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Write every file in `files` under `root` that is not there yet. Returns how many were written.
pub fn materialize(tree: &dyn Tree, files: &BTreeMap<String, RepoFile>, root: &Path) -> Result<usize, Error> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let mut written = 0;
    for (source, file) in files {
        let Some((id, name)) = source.split_once('/') else {
            continue;
        };
        let dir = root.join(id);
        if dir.join(name).exists() {
            continue;
        }
        let tmp = root.join(format!(".tmp-{id}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let target = tmp.join(name);
        match &file.source {
            FileSource::Tree { path, .. } => {
                for f in tree.files_under(path)? {
                    write_one(&target, &f)?;
                }
            }
            FileSource::Inline(bytes) => write_one(
                &target,
                &FileData {
                    path: String::new(),
                    executable: false,
                    symlink: false,
                    data: bytes.clone(),
                },
            )?,
        }
        if let Some(owner) = &file.owner {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(owner.mode)).map_err(io(&target))?;
            nix::unistd::chown(
                &target,
                Some(nix::unistd::Uid::from_raw(owner.uid)),
                Some(nix::unistd::Gid::from_raw(owner.gid)),
            )
            .map_err(|e| Error::Io {
                path: target.display().to_string(),
                source: std::io::Error::from(e),
            })?;
        }
        std::fs::File::open(&tmp).and_then(|d| d.sync_all()).map_err(io(&tmp))?;
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => written += 1,
            // Another writer got there first with the same content (same id): fine.
            Err(_) if dir.join(name).exists() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    Ok(written)
}

fn write_one(base: &Path, f: &FileData) -> Result<(), Error> {
    let path = if f.path.is_empty() {
        base.to_owned()
    } else {
        base.join(&f.path)
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if f.symlink {
        let target = String::from_utf8_lossy(&f.data).into_owned();
        return std::os::unix::fs::symlink(target, &path).map_err(io(&path));
    }
    let mut out = std::fs::File::create(&path).map_err(io(&path))?;
    out.write_all(&f.data).map_err(io(&path))?;
    out.sync_all().map_err(io(&path))?;
    let mode = if f.executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io(&path))?;
    Ok(())
}

/// Remove materialized directories no source in `keep` uses any more.
pub fn gc(root: &Path, keep: &BTreeSet<String>) -> Result<usize, Error> {
    let ids: BTreeSet<&str> = keep
        .iter()
        .filter_map(|s| s.split_once('/').map(|(id, _)| id))
        .collect();
    let mut removed = 0;
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(root)(e)),
    };
    for e in entries {
        let e = e.map_err(io(root))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !ids.contains(name.as_str()) {
            std::fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::tree;
    use crate::desired::EntryKind;

    #[test]
    fn materializes_files_and_dirs_then_collects_garbage() {
        let t = tree(&[("conf/a.yml", "a: 1"), ("conf/sub/b.yml", "b: 2"), ("one.txt", "one")]);
        let root = tempfile::tempdir().expect("tmp");
        let files: BTreeMap<String, RepoFile> = [
            (
                "id1/conf".to_owned(),
                RepoFile {
                    source: FileSource::Tree {
                        path: "conf".into(),
                        kind: EntryKind::Dir,
                    },
                    owner: None,
                },
            ),
            (
                "id2/one.txt".to_owned(),
                RepoFile {
                    source: FileSource::Tree {
                        path: "one.txt".into(),
                        kind: EntryKind::File,
                    },
                    owner: None,
                },
            ),
        ]
        .into();
        assert_eq!(materialize(&t, &files, root.path()).expect("materialize"), 2);
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).expect("read");
        assert_eq!(read("id1/conf/a.yml"), "a: 1");
        assert_eq!(read("id1/conf/sub/b.yml"), "b: 2");
        assert_eq!(read("id2/one.txt"), "one");
        // Idempotent.
        assert_eq!(materialize(&t, &files, root.path()).expect("again"), 0);
        // Only what is still used stays.
        let keep: BTreeSet<String> = ["id2/one.txt".to_owned()].into();
        assert_eq!(gc(root.path(), &keep).expect("gc"), 1);
        assert!(!root.path().join("id1").exists());
        assert!(root.path().join("id2/one.txt").exists());
    }
}
