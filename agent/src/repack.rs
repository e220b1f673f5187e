//! Keeping the local repository compact: every fetch adds a pack, and a host that follows a busy
//! branch for years would otherwise collect thousands. Each pack costs an index lookup per object
//! read, a mapping (memory) and files on disk.
//!
//! [`consolidate`] rewrites all packs into one, the way `git repack -a -d` does, with gix: every
//! object of the packs is copied into a new pack (deltas kept as they are, no new delta search),
//! which is then indexed — indexing decodes every entry, so a pack that indexes with exactly the
//! expected objects is sound. Only then are the old packs removed. Loose objects are left alone.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::odb::pack;

/// What [`consolidate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consolidated {
    /// Packs before.
    pub packs: usize,
    /// Objects in the one pack after.
    pub objects: usize,
    /// Bytes of pack data before and after.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
}

/// Why the repository could not be consolidated (it is left as it was).
#[derive(Debug, thiserror::Error)]
#[error("consolidating the packs of {}: {message}", path.display())]
pub struct Error {
    /// The repository.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The pack indices (`*.idx`) of `repo`, sorted.
pub fn pack_indices(repo: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo.join("objects/pack"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    v.sort();
    v
}

/// Rewrite the packs of the bare repository at `repo` into one when there are at least
/// `min_packs` of them. `Ok(None)`: nothing to do.
pub fn consolidate(repo: &Path, min_packs: usize) -> Result<Option<Consolidated>, Error> {
    let err = |message: String| Error {
        path: repo.to_owned(),
        message,
    };
    let old = pack_indices(repo);
    if old.len() < min_packs.max(2) {
        return Ok(None);
    }
    let pack_dir = repo.join("objects/pack");
    let kind = gix::hash::Kind::Sha1;

    // Every object of those packs (and no other: a pack a fetch adds meanwhile stays as it is).
    let mut ids = BTreeSet::new();
    let mut bytes_before = 0;
    for idx in &old {
        let index = pack::index::File::at(idx, kind).map_err(|e| err(format!("{}: {e}", idx.display())))?;
        ids.extend(index.iter().map(|e| e.oid));
        bytes_before += std::fs::metadata(idx.with_extension("pack"))
            .map(|m| m.len())
            .unwrap_or(0);
    }

    let opened = gix::open_opts(repo, gix::open::Options::isolated()).map_err(|e| err(e.to_string()))?;
    let mut handle = opened.into_sync().objects.into_shared_arc().to_cache_arc();
    handle.prevent_pack_unload();
    handle.ignore_replacements = true;
    let never = AtomicBool::new(false);
    let (counts, _) = pack::data::output::count::objects_unthreaded(
        &handle,
        &mut ids.iter().map(|id| Ok(*id)),
        &gix::progress::Discard,
        &never,
        pack::data::output::count::objects::ObjectExpansion::AsIs,
    )
    .map_err(|e| err(format!("counting objects: {e}")))?;
    let count = counts.len();
    let entries = gix::parallel::InOrderIter::from(
        pack::data::output::entry::iter_from_counts(
            counts,
            handle,
            Box::new(gix::progress::Discard),
            pack::data::output::entry::iter_from_counts::Options {
                thread_limit: Some(1),
                mode: pack::data::output::entry::iter_from_counts::Mode::PackCopyAndBaseObjects,
                allow_thin_pack: false,
                chunk_size: 1000,
                version: Default::default(),
                compression: Default::default(),
            },
        )
        .map_err(|e| err(format!("preparing the new pack: {e}")))?,
    );

    // The new pack, written to a temporary file, then indexed into place by gix.
    let tmp = pack_dir.join(format!("tmp_tend_repack_{}.pack", std::process::id()));
    let written = (|| -> Result<(), String> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| e.to_string())?);
        let mut out = pack::data::output::bytes::FromEntriesIter::new(
            entries,
            &mut file,
            count as u32,
            pack::data::Version::default(),
            kind,
        );
        for chunk in out.by_ref() {
            chunk.map_err(|e| e.to_string())?;
        }
        file.flush().map_err(|e| e.to_string())?;
        file.get_ref().sync_all().map_err(|e| e.to_string())
    })();
    let indexed = written.and_then(|()| {
        let mut input = std::io::BufReader::new(std::fs::File::open(&tmp).map_err(|e| e.to_string())?);
        pack::Bundle::write_to_directory(
            &mut input,
            Some(&pack_dir),
            &mut gix::progress::Discard,
            &never,
            None::<gix::objs::find::Never>,
            kind,
            pack::bundle::write::Options {
                thread_limit: Some(1),
                ..Default::default()
            },
        )
        .map_err(|e| format!("indexing the new pack: {e}"))
    });
    let _ = std::fs::remove_file(&tmp);
    let outcome = indexed.map_err(err)?;
    if let Some(keep) = &outcome.keep_path {
        let _ = std::fs::remove_file(keep);
    }
    let (Some(new_idx), Some(new_pack)) = (outcome.index_path, outcome.data_path) else {
        return Err(err("the new pack was not written".into()));
    };

    // Sound only if it holds exactly the objects it was made of.
    let index = pack::index::File::at(&new_idx, kind).map_err(|e| err(format!("{}: {e}", new_idx.display())))?;
    let missing = ids.iter().filter(|id| index.lookup(id).is_none()).count();
    if index.num_objects() as usize != ids.len() || missing > 0 {
        if !old.contains(&new_idx) {
            let _ = std::fs::remove_file(&new_idx);
            let _ = std::fs::remove_file(&new_pack);
        }
        return Err(err(format!(
            "the new pack holds {} objects, {missing} of the {} expected missing; the old packs are kept",
            index.num_objects(),
            ids.len()
        )));
    }
    for idx in old.iter().filter(|p| **p != new_idx) {
        for ext in ["pack", "rev", "bitmap", "keep", "promisor", "mtimes"] {
            let _ = std::fs::remove_file(idx.with_extension(ext));
        }
        let _ = std::fs::remove_file(idx);
    }
    Ok(Some(Consolidated {
        packs: old.len(),
        objects: ids.len(),
        bytes_before,
        bytes_after: std::fs::metadata(&new_pack).map(|m| m.len()).unwrap_or(0),
    }))
}
