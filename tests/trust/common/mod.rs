//! Shared helpers: builds the fixtures once per test process with the real
//! tools and reads commits through `git cat-file`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tend::trust::{CommitSource, Error, TrustStore};

pub struct Fixtures {
    pub dir: PathBuf,
    manifest: HashMap<String, String>,
}

impl Fixtures {
    /// A manifest value (commit id, fingerprint, …).
    pub fn get(&self, name: &str) -> &str {
        self.manifest
            .get(name)
            .unwrap_or_else(|| panic!("fixture manifest has no {name}"))
    }

    pub fn allowed_signers(&self) -> PathBuf {
        self.dir.join("allowed_signers")
    }

    pub fn keyring(&self) -> PathBuf {
        self.dir.join("keyring.asc")
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    pub fn git(&self) -> GitSource {
        GitSource { repo: self.repo() }
    }

    /// Raw commit by manifest name.
    pub fn raw(&self, name: &str) -> Vec<u8> {
        self.git()
            .raw_commit(self.get(name))
            .unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    pub fn ssh_pub(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join("keys").join(format!("{key}.pub")))
            .expect("public key file");
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Runs `tests/fixtures/make-trust-fixtures.sh` into `OUTDIR` once per
/// process (the script itself is idempotent across runs).
pub fn build_fixtures(outdir: &Path, extra: &[&str]) -> Fixtures {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/make-trust-fixtures.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(outdir)
        .args(extra)
        .output()
        .expect("run fixture script");
    assert!(
        out.status.success(),
        "fixture script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(outdir.join("manifest.env")).expect("manifest");
    let manifest = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Fixtures {
        dir: outdir.to_path_buf(),
        manifest,
    }
}

pub fn fixtures() -> &'static Fixtures {
    static FX: OnceLock<Fixtures> = OnceLock::new();
    FX.get_or_init(|| {
        build_fixtures(
            &Path::new(env!("CARGO_TARGET_TMPDIR")).join("trust-fixtures"),
            &[],
        )
    })
}

/// The store over both trust files, loaded once.
pub fn store() -> &'static TrustStore {
    static STORE: OnceLock<TrustStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let fx = fixtures();
        TrustStore::load(Some(&fx.allowed_signers()), Some(&fx.keyring())).expect("load store")
    })
}

/// Reads commits with `git cat-file commit`.
pub struct GitSource {
    pub repo: PathBuf,
}

impl CommitSource for GitSource {
    fn raw_commit(&self, id: &str) -> Result<Vec<u8>, Error> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["cat-file", "commit", id])
            .output()
            .map_err(|e| Error::commit_read(id, e))?;
        if !out.status.success() {
            return Err(Error::commit_read(
                id,
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(out.stdout)
    }
}
