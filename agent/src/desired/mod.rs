//! The declared state of one commit: the host's layers, merged in order.
//!
//! Read through [`Tree`], so the same code loads a verified commit's objects (never a checkout)
//! and, for `tend validate`, a directory on disk.

pub mod compose;
pub mod interpolate;
pub mod sops;
pub mod spec;
pub mod yaml;

use compose::{RepoFile, ServiceSpec};
use interpolate::Vars;
pub use sops::SecretsCtx;
use spec::{NetworkSpec, SecretBytes, SecretFile, VolumeSpec};
use std::collections::{BTreeMap, BTreeSet};

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or symlink).
    File,
    /// A directory.
    Dir,
}

/// An entry of a revision's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File or directory.
    pub kind: EntryKind,
    /// An id that changes whenever the content changes (the Git object id).
    pub id: String,
}

/// Read-only access to the files of one revision.
pub trait Tree {
    /// The bytes of the file at `path` (relative to the repository root, `/`-separated), or
    /// `None` when there is no such file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError>;
    /// What is at `path`, if anything.
    fn entry(&self, path: &str) -> Result<Option<Entry>, TreeError>;
    /// Every file at or under `path` (a file gives one entry with an empty relative path).
    fn files_under(&self, path: &str) -> Result<Vec<FileData>, TreeError>;
    /// How to name `path` in messages (the repository path, unless the tree knows better).
    fn display_path(&self, path: &str) -> String {
        path.to_owned()
    }
}

/// One file of a tree, for materializing.
#[derive(Clone, PartialEq, Eq)]
pub struct FileData {
    /// Path relative to the directory asked for (empty for the file itself).
    pub path: String,
    /// Mode 755 in Git.
    pub executable: bool,
    /// A symbolic link; `data` is its target.
    pub symlink: bool,
    /// Content.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for FileData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print content: it may be sensitive.
        write!(f, "FileData({:?}, {} bytes)", self.path, self.data.len())
    }
}

/// A failure to read the revision's files (not a missing file).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {message}")]
pub struct TreeError {
    /// The path.
    pub path: String,
    /// Why.
    pub message: String,
}

/// Why a revision's desired state is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The revision's files could not be read.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A compose file is wrong.
    #[error(transparent)]
    Compose(#[from] compose::Error),
    /// A layer's `.env` is wrong.
    #[error("{file}:{line}: {message}")]
    Dotenv {
        /// The `.env` file.
        file: String,
        /// Line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file is not UTF-8.
    #[error("{file}: not valid UTF-8")]
    Encoding {
        /// The file.
        file: String,
    },
    /// A `depends_on` names a service no layer declares, or the dependencies form a cycle.
    #[error("service {service:?}: {message}")]
    Dependency {
        /// The service.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// A unit file, drop-in or `units/tend.toml` is wrong.
    #[error(transparent)]
    Units(#[from] crate::systemd::Error),
    /// A host file or `files.toml` is wrong.
    #[error("{file}: {message}")]
    HostFile {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A unit reads a secret no layer provides, or the secret cannot be decrypted.
    #[error("{file}: {message}")]
    UnitSecret {
        /// The unit file.
        file: String,
        /// What is wrong.
        message: String,
        /// Whether it is a decryption failure.
        decrypt: bool,
    },
    /// No layer declares anything: almost certainly a misconfigured `host.layers`.
    #[error("none of the layers {layers:?} has a compose.yaml or units/; check host.layers in the config")]
    Empty {
        /// The layers looked at.
        layers: Vec<String>,
    },
}

impl Error {
    /// Whether the error is about decrypting a secret (the cycle's `decrypt` step).
    pub fn is_decrypt(&self) -> bool {
        matches!(self, Error::Compose(e) if e.secret) || matches!(self, Error::UnitSecret { decrypt: true, .. })
    }
}

/// Host facts available to interpolation.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Host name (`TEND_HOST`).
    pub name: String,
    /// Default project name (from config).
    pub project: String,
}

/// The desired state of one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Compose project name.
    pub project: String,
    /// Services by name, after layering.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Named volumes by compose key, engine names resolved.
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Networks by compose key (including `default` when a service uses it), engine names resolved.
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Repository files to materialize for bind mounts, by mount source.
    pub files: BTreeMap<String, RepoFile>,
    /// Declared SOPS secrets by name (plaintext in memory when decrypted).
    pub secret_files: BTreeMap<String, SecretFile>,
    /// Environment values from SOPS `env_file`s, by service then variable (in memory only).
    pub secret_env: BTreeMap<String, BTreeMap<String, SecretBytes>>,
    /// systemd units from the layers' `units/` directories.
    pub units: crate::systemd::DesiredUnits,
    /// Host files from the layers' `files/` directories, by absolute host path.
    pub host_files: BTreeMap<String, crate::hostfiles::HostFile>,
    /// Services in start order (dependencies first).
    pub start_order: Vec<String>,
    /// Non-fatal notes for the operator.
    pub warnings: Vec<String>,
}

fn join(layer: &str, file: &str) -> String {
    if layer == "." || layer.is_empty() {
        file.to_owned()
    } else {
        format!("{layer}/{file}")
    }
}

fn read_text(tree: &dyn Tree, path: &str) -> Result<Option<String>, Error> {
    match tree.read(path)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::Encoding { file: path.to_owned() }),
    }
}

/// Load the desired state from `layers` of `tree`. A later layer replaces an earlier layer's
/// service of the same name.
pub fn load(tree: &dyn Tree, layers: &[String], host: &HostFacts, secrets: SecretsCtx<'_>) -> Result<Desired, Error> {
    let mut services: BTreeMap<String, ServiceSpec> = BTreeMap::new();
    let mut volumes: BTreeMap<String, VolumeSpec> = BTreeMap::new();
    let mut networks: BTreeMap<String, NetworkSpec> = BTreeMap::new();
    let mut files = BTreeMap::new();
    let mut secret_files: BTreeMap<String, SecretFile> = BTreeMap::new();
    let mut secret_env: BTreeMap<String, BTreeMap<String, SecretBytes>> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut project = None;
    let mut found = false;
    let mut unit_files: Vec<(String, BTreeMap<String, Vec<u8>>)> = Vec::new();
    let mut host_files = BTreeMap::new();
    for layer in layers {
        // Host files: `files/PATH` is `/PATH` on the host; `files.toml` sets mode and owner.
        let files_dir = join(layer, "files");
        if tree.entry(&files_dir)?.is_some_and(|e| e.kind == EntryKind::Dir) {
            let manifest_path = join(layer, "files.toml");
            let manifest = match read_text(tree, &manifest_path)? {
                Some(t) => crate::hostfiles::parse_manifest(&manifest_path, &t).map_err(|message| Error::HostFile {
                    file: manifest_path.clone(),
                    message,
                })?,
                None => BTreeMap::new(),
            };
            for f in tree.files_under(&files_dir)? {
                let host = format!("/{}", f.path);
                let source = format!("{files_dir}/{}", f.path);
                let hf = crate::hostfiles::declare(source.clone(), f.data, f.executable, manifest.get(&host))
                    .map_err(|message| Error::HostFile { file: source, message })?;
                host_files.insert(host, hf);
            }
            found = true;
        }
        let units_dir = join(layer, "units");
        if tree.entry(&units_dir)?.is_some_and(|e| e.kind == EntryKind::Dir) {
            let files = tree
                .files_under(&units_dir)?
                .into_iter()
                .filter(|f| !f.symlink)
                .map(|f| (f.path, f.data))
                .collect();
            unit_files.push((layer.clone(), files));
            found = true;
        }
        let mut vars: Vars = BTreeMap::new();
        vars.insert("TEND_HOST".into(), host.name.clone());
        let env_path = join(layer, ".env");
        if let Some(text) = read_text(tree, &env_path)? {
            let env = interpolate::parse_dotenv(&text, &vars).map_err(|(line, message)| Error::Dotenv {
                file: env_path.clone(),
                line,
                message,
            })?;
            vars.extend(env);
        }
        let mut compose_text = None;
        for name in [
            "compose.yaml",
            "compose.yml",
            "docker-compose.yaml",
            "docker-compose.yml",
        ] {
            let p = join(layer, name);
            if let Some(text) = read_text(tree, &p)? {
                compose_text = Some((tree.display_path(&p), text));
                break;
            }
        }
        let Some((path, text)) = compose_text else { continue };
        found = true;
        let inherited_volumes: Vec<String> = volumes.keys().cloned().collect();
        let inherited_networks: Vec<String> = networks.keys().cloned().collect();
        let inherited_secrets: Vec<String> = secret_files.keys().cloned().collect();
        let file = compose::parse_layer(
            &compose::Layer {
                file: &path,
                dir: layer,
                vars: &vars,
                tree,
                inherited_volumes: &inherited_volumes,
                inherited_networks: &inherited_networks,
                inherited_secrets: &inherited_secrets,
                secrets,
            },
            &text,
        )?;
        warnings.extend(file.warnings);
        if file.name.is_some() {
            project = file.name;
        }
        volumes.extend(file.volumes);
        networks.extend(file.networks);
        files.extend(file.files);
        secret_files.extend(file.secret_files);
        for s in file.services {
            // A later layer's service replaces the earlier one, secret environment included.
            match file.secret_env.get(&s.name) {
                Some(env) => {
                    secret_env.insert(s.name.clone(), env.clone());
                }
                None => {
                    secret_env.remove(&s.name);
                }
            }
            services.insert(s.name.clone(), s);
        }
    }
    if !found {
        return Err(Error::Empty {
            layers: layers.to_vec(),
        });
    }
    let unit_layers: Vec<crate::systemd::Layer<'_>> = unit_files
        .iter()
        .map(|(name, files)| crate::systemd::Layer { name, files })
        .collect();
    let units = crate::systemd::desired_units(&unit_layers)?;
    // Units read secrets at /run/tend/secrets/NAME: a compose `secrets:` entry, or a SOPS file
    // `secrets/NAME[.ext]` in a layer (the last layer that has one wins).
    for unit in units.units.values() {
        for name in &unit.secrets {
            if secret_files.contains_key(name) {
                continue;
            }
            let mut found_file = None;
            for layer in layers {
                let dir = join(layer, "secrets");
                if !tree.entry(&dir)?.is_some_and(|e| e.kind == EntryKind::Dir) {
                    continue;
                }
                for f in tree.files_under(&dir)? {
                    if f.path == *name || f.path.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with('.')) {
                        found_file = Some((format!("{dir}/{}", f.path), f.data));
                    }
                }
            }
            let unit_file = format!("units/{}", unit.name);
            let Some((path, bytes)) = found_file else {
                return Err(Error::UnitSecret {
                    file: unit_file,
                    message: format!(
                        "reads /run/tend/secrets/{name}, but no layer declares secret {name:?} (add secrets/{name}.<ext> encrypted with sops, or a compose `secrets:` entry)"
                    ),
                    decrypt: false,
                });
            };
            let opened = sops::open(&path, &bytes, &secrets).map_err(|e| Error::UnitSecret {
                file: unit_file.clone(),
                message: e.to_string(),
                decrypt: true,
            })?;
            match opened {
                sops::Opened::Plain => {
                    return Err(Error::UnitSecret {
                        file: unit_file,
                        message: format!("secret {name:?}: {path} is not encrypted with sops; encrypt it"),
                        decrypt: false,
                    })
                }
                sops::Opened::Sops { hash, doc } => {
                    let plaintext = match doc {
                        Some(d) => Some(SecretBytes(d.to_bytes().map_err(|e| Error::UnitSecret {
                            file: unit_file.clone(),
                            message: e.to_string(),
                            decrypt: true,
                        })?)),
                        None => None,
                    };
                    secret_files.insert(name.clone(), SecretFile { path, hash, plaintext });
                }
            }
        }
    }
    let project = project.unwrap_or_else(|| host.project.clone());
    // Engine names, as compose derives them.
    for (key, v) in volumes.iter_mut() {
        if v.name.is_empty() {
            v.name = format!("{project}_{key}");
        }
    }
    if services
        .values()
        .any(|s| s.network_mode.is_none() && (s.networks.is_empty() || s.networks.contains_key("default")))
    {
        networks.entry("default".into()).or_default();
    }
    for (key, n) in networks.iter_mut() {
        if n.name.is_empty() {
            n.name = format!("{project}_{key}");
        }
    }
    // Only the files some service still mounts (a later layer may have replaced the service).
    let used: BTreeSet<&str> = services
        .values()
        .flat_map(|s| s.volumes.iter())
        .filter(|m| m.kind == spec::MountKind::Repo)
        .map(|m| m.source.as_str())
        .collect();
    files.retain(|k, _| used.contains(k.as_str()));
    // A secret's content hash goes into each user's spec, so a changed secret replaces exactly
    // the containers that use it.
    for s in services.values_mut() {
        for m in s.volumes.iter_mut().filter(|m| m.kind == spec::MountKind::Secret) {
            m.content_hash = secret_files.get(&m.source).map(|f| f.hash.clone());
        }
    }
    let used_secrets: BTreeSet<String> = services
        .values()
        .flat_map(|s| s.volumes.iter())
        .filter(|m| m.kind == spec::MountKind::Secret)
        .map(|m| m.source.clone())
        .collect();
    for name in &used_secrets {
        if !secret_files.contains_key(name) {
            return Err(Error::Dependency {
                service: services
                    .values()
                    .find(|s| {
                        s.volumes
                            .iter()
                            .any(|m| m.kind == spec::MountKind::Secret && m.source == *name)
                    })
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                message: format!("secret {name:?} is not declared in any layer"),
            });
        }
    }
    for s in services.values() {
        if let Some(other) = s.network_mode.as_deref().and_then(|m| m.strip_prefix("service:")) {
            if !services.contains_key(other) {
                return Err(Error::Dependency {
                    service: s.name.clone(),
                    message: format!("network_mode service:{other} names a service no layer declares"),
                });
            }
        }
    }
    let mut names: BTreeMap<String, &str> = BTreeMap::new();
    for s in services.values() {
        if let Some(n) = &s.container_name {
            if let Some(other) = names.insert(n.clone(), &s.name) {
                return Err(Error::Dependency {
                    service: s.name.clone(),
                    message: format!("container_name {n:?} is also used by service {other:?}"),
                });
            }
        }
    }
    let start_order = start_order(&services)?;
    Ok(Desired {
        project,
        services,
        volumes,
        networks,
        files,
        secret_files,
        secret_env,
        units,
        host_files,
        start_order,
        warnings,
    })
}

/// Dependencies first; ties broken by name so the order is stable.
fn start_order(services: &BTreeMap<String, ServiceSpec>) -> Result<Vec<String>, Error> {
    // `network_mode: service:X` needs X first, like a dependency.
    let deps = |s: &ServiceSpec| -> Vec<String> {
        let mut d: Vec<String> = s.dependency_names().map(str::to_owned).collect();
        if let Some(x) = s.network_mode.as_deref().and_then(|m| m.strip_prefix("service:")) {
            d.push(x.to_owned());
        }
        d
    };
    for s in services.values() {
        for d in &deps(s) {
            if !services.contains_key(d) {
                return Err(Error::Dependency {
                    service: s.name.clone(),
                    message: format!("depends_on {d:?}, which no layer declares"),
                });
            }
        }
    }
    let mut order = Vec::with_capacity(services.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while order.len() < services.len() {
        let ready: Vec<&str> = services
            .values()
            .filter(|s| !done.contains(s.name.as_str()))
            .filter(|s| deps(s).iter().all(|d| done.contains(d.as_str())))
            .map(|s| s.name.as_str())
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = services
                .keys()
                .map(String::as_str)
                .filter(|n| !done.contains(n))
                .collect();
            return Err(Error::Dependency {
                service: stuck.first().copied().unwrap_or_default().to_owned(),
                message: format!("depends_on forms a cycle among {}", stuck.join(", ")),
            });
        }
        for r in ready {
            done.insert(r);
            order.push(r.to_owned());
        }
    }
    Ok(order)
}

/// A single compose file on disk as a one-layer tree: `compose.yaml` is that file; other paths
/// are relative to its directory.
pub struct FileTree {
    file: std::path::PathBuf,
    dir: DirTree,
}

impl FileTree {
    /// A tree for `file`.
    pub fn new(file: &std::path::Path) -> FileTree {
        FileTree {
            file: file.to_owned(),
            dir: DirTree(file.parent().map(std::path::Path::to_owned).unwrap_or_default()),
        }
    }
}

impl Tree for FileTree {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        match path {
            "compose.yaml" => std::fs::read(&self.file).map(Some).map_err(|e| TreeError {
                path: self.file.display().to_string(),
                message: e.to_string(),
            }),
            "compose.yml" | "docker-compose.yaml" | "docker-compose.yml" | ".env" | "units" => Ok(None),
            _ => self.dir.read(path),
        }
    }

    fn entry(&self, path: &str) -> Result<Option<Entry>, TreeError> {
        if path == "units" {
            return Ok(None);
        }
        self.dir.entry(path)
    }

    fn files_under(&self, path: &str) -> Result<Vec<FileData>, TreeError> {
        self.dir.files_under(path)
    }

    fn display_path(&self, path: &str) -> String {
        if path == "compose.yaml" {
            self.file.display().to_string()
        } else {
            path.to_owned()
        }
    }
}

/// A [`Tree`] over a directory on disk (for `tend validate`).
pub struct DirTree(pub std::path::PathBuf);

impl Tree for DirTree {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        let full = self.0.join(path);
        match std::fs::read(&full) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => {
                Ok(None)
            }
            Err(e) => Err(TreeError {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    fn entry(&self, path: &str) -> Result<Option<Entry>, TreeError> {
        let full = self.0.join(path);
        match std::fs::metadata(&full) {
            Ok(m) => Ok(Some(Entry {
                kind: if m.is_dir() { EntryKind::Dir } else { EntryKind::File },
                // Offline validation only needs existence; the path stands in for an id.
                id: spec::hash_of(&path)[..16].to_owned(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => {
                Ok(None)
            }
            Err(e) => Err(TreeError {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    fn files_under(&self, path: &str) -> Result<Vec<FileData>, TreeError> {
        use std::os::unix::fs::PermissionsExt;
        let err = |e: std::io::Error| TreeError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let root = self.0.join(path);
        let mut out = Vec::new();
        let mut stack = vec![(root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let meta = std::fs::symlink_metadata(&dir).map_err(err)?;
            if !meta.is_dir() {
                let symlink = meta.file_type().is_symlink();
                let data = if symlink {
                    std::fs::read_link(&dir)
                        .map_err(err)?
                        .into_os_string()
                        .into_encoded_bytes()
                } else {
                    std::fs::read(&dir).map_err(err)?
                };
                out.push(FileData {
                    path: rel,
                    executable: meta.permissions().mode() & 0o111 != 0,
                    symlink,
                    data,
                });
                continue;
            }
            for e in std::fs::read_dir(&dir).map_err(err)? {
                let e = e.map_err(err)?;
                let name = e.file_name().to_string_lossy().into_owned();
                let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                stack.push((e.path(), child_rel));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An in-memory tree for tests.
    pub struct MapTree(pub BTreeMap<String, String>);

    impl Tree for MapTree {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
            Ok(self.0.get(path).map(|s| s.as_bytes().to_vec()))
        }

        fn entry(&self, path: &str) -> Result<Option<Entry>, TreeError> {
            if let Some(content) = self.0.get(path) {
                return Ok(Some(Entry {
                    kind: EntryKind::File,
                    id: spec::hash_of(content)[..16].to_owned(),
                }));
            }
            let prefix = format!("{path}/");
            let inside: Vec<(&String, &String)> = self.0.iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
            Ok((!inside.is_empty()).then(|| Entry {
                kind: EntryKind::Dir,
                id: spec::hash_of(&inside)[..16].to_owned(),
            }))
        }

        fn files_under(&self, path: &str) -> Result<Vec<FileData>, TreeError> {
            if let Some(content) = self.0.get(path) {
                return Ok(vec![FileData {
                    path: String::new(),
                    executable: false,
                    symlink: false,
                    data: content.as_bytes().to_vec(),
                }]);
            }
            let prefix = format!("{path}/");
            Ok(self
                .0
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(&prefix).map(|rel| FileData {
                        path: rel.to_owned(),
                        executable: false,
                        symlink: false,
                        data: v.as_bytes().to_vec(),
                    })
                })
                .collect())
        }
    }

    pub fn tree(files: &[(&str, &str)]) -> MapTree {
        MapTree(files.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    fn host() -> HostFacts {
        HostFacts {
            name: "edge-1".into(),
            project: "tend".into(),
        }
    }

    #[test]
    fn later_layer_replaces_service() {
        let t = tree(&[
            (
                "common/compose.yaml",
                "services:\n  a: {image: \"x:1\"}\n  b: {image: y}\n",
            ),
            ("hosts/edge-1/compose.yaml", "services:\n  a: {image: \"x:2\"}\n"),
        ]);
        let d = load(
            &t,
            &["common".into(), "hosts/edge-1".into()],
            &host(),
            SecretsCtx::offline(),
        )
        .expect("valid");
        assert_eq!(d.services["a"].image, "x:2");
        assert_eq!(d.services["b"].image, "y");
        assert_eq!(d.project, "tend");
    }

    #[test]
    fn missing_layers_are_skipped_but_not_all() {
        let t = tree(&[("common/compose.yaml", "services:\n  a: {image: x}\n")]);
        assert!(load(
            &t,
            &["common".into(), "hosts/none".into()],
            &host(),
            SecretsCtx::offline()
        )
        .is_ok());
        assert!(matches!(
            load(&t, &["nope".into()], &host(), SecretsCtx::offline()),
            Err(Error::Empty { .. })
        ));
    }

    #[test]
    fn dotenv_and_host_facts_interpolate() {
        let t = tree(&[
            (".env", "TAG=3\n"),
            (
                "compose.yaml",
                "name: demo\nservices:\n  a:\n    image: \"x:${TAG}\"\n    environment: [\"H=${TEND_HOST}\"]\n",
            ),
        ]);
        let d = load(&t, &[".".into()], &host(), SecretsCtx::offline()).expect("valid");
        assert_eq!(d.services["a"].image, "x:3");
        assert_eq!(d.services["a"].environment["H"], "edge-1");
        assert_eq!(d.project, "demo");
    }

    #[test]
    fn start_order_follows_depends_on() {
        let t = tree(&[(
            "compose.yaml",
            "services:\n  web: {image: x, depends_on: [api]}\n  api: {image: x, depends_on: [db]}\n  db: {image: x}\n  aaa: {image: x}\n",
        )]);
        let d = load(&t, &[".".into()], &host(), SecretsCtx::offline()).expect("valid");
        assert_eq!(d.start_order, vec!["aaa", "db", "api", "web"]);
    }

    #[test]
    fn dependency_errors() {
        let t = tree(&[("compose.yaml", "services:\n  web: {image: x, depends_on: [nope]}\n")]);
        assert!(matches!(
            load(&t, &[".".into()], &host(), SecretsCtx::offline()),
            Err(Error::Dependency { .. })
        ));
        let t = tree(&[(
            "compose.yaml",
            "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n",
        )]);
        let e = load(&t, &[".".into()], &host(), SecretsCtx::offline()).expect_err("cycle");
        assert!(e.to_string().contains("cycle"), "{e}");
    }

    #[test]
    fn bad_dotenv_names_file_and_line() {
        let t = tree(&[("l/.env", "A=1\nbroken\n"), ("l/compose.yaml", "services: {}\n")]);
        let e = load(&t, &["l".into()], &host(), SecretsCtx::offline()).expect_err("bad env");
        assert_eq!(e.to_string(), "l/.env:2: expected KEY=VALUE, found \"broken\"");
    }
}
