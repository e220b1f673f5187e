//! The compose files tend understands: parsing a layer's `compose.yaml` into normalised
//! [`ServiceSpec`]s, networks and volumes, with errors that name file, line, service and key.
//!
//! Unsupported keys are errors, never silently ignored: an operator must be able to trust that
//! what the file says is what runs.

use super::interpolate::{self, Vars};
use super::sops::{self, Opened, SecretsCtx};
pub use super::spec::*;
use super::yaml::{self, Node, Value};
use super::{EntryKind, Tree};
use std::collections::BTreeMap;

/// A compose file error with its location.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {}{}{message}", service.as_ref().map(|s| format!("service {s:?}: ")).unwrap_or_default(), key.as_ref().map(|k| format!("key {k:?}: ")).unwrap_or_default())]
pub struct Error {
    /// Repository path of the file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The service, when the error is inside one.
    pub service: Option<String>,
    /// The key, when the error is about one.
    pub key: Option<String>,
    /// What is wrong and, where possible, what to do.
    pub message: String,
    /// The error is about decrypting a secret (the cycle's `decrypt` step).
    pub secret: bool,
}

/// Where a materialized file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A path in the commit (file or directory).
    Tree {
        /// Repository path.
        path: String,
        /// File or directory.
        kind: EntryKind,
    },
    /// Inline content (compose `configs` with `content:` or `environment:`).
    Inline(Vec<u8>),
}

/// A file or directory tend writes from the commit for a bind mount (relative bind mounts and
/// `configs`), keyed in [`ComposeFile::files`] by the mount source `ID/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// Where the content comes from.
    pub source: FileSource,
    /// Owner and mode of the copy (configs long syntax).
    pub owner: Option<FileOwner>,
}

/// The result of parsing one compose file.
#[derive(Debug, Clone, Default)]
pub struct ComposeFile {
    /// Top-level `name:`.
    pub name: Option<String>,
    /// Services in file order.
    pub services: Vec<ServiceSpec>,
    /// Top-level named volumes by compose key (engine names not yet resolved).
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Top-level networks by compose key (engine names not yet resolved).
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Files to materialize, by mount source.
    pub files: BTreeMap<String, RepoFile>,
    /// Non-fatal notes (obsolete `version:`, unset variables).
    pub warnings: Vec<String>,
    /// Top-level `secrets:` (SOPS files), decrypted when identities were given.
    pub secret_files: BTreeMap<String, SecretFile>,
    /// Values from SOPS `env_file`s, by service then variable (in memory only).
    pub secret_env: BTreeMap<String, BTreeMap<String, SecretBytes>>,
}

/// What a layer's compose file may refer to from earlier layers, and where it lives.
pub struct Layer<'a> {
    /// Repository path of the compose file (for messages).
    pub file: &'a str,
    /// The layer directory (`.` for the repository root).
    pub dir: &'a str,
    /// Interpolation variables.
    pub vars: &'a Vars,
    /// The revision's files (for `env_file`, relative bind mounts and `configs`).
    pub tree: &'a dyn Tree,
    /// Volume keys declared by earlier layers.
    pub inherited_volumes: &'a [String],
    /// Network keys declared by earlier layers.
    pub inherited_networks: &'a [String],
    /// Secret names declared by earlier layers.
    pub inherited_secrets: &'a [String],
    /// How to decrypt SOPS files.
    pub secrets: SecretsCtx<'a>,
}

const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "restart",
    "labels",
    "ports",
    "volumes",
    "healthcheck",
    "depends_on",
    "container_name",
    "hostname",
    "domainname",
    "user",
    "working_dir",
    "expose",
    "networks",
    "network_mode",
    "cap_add",
    "cap_drop",
    "devices",
    "privileged",
    "read_only",
    "init",
    "stdin_open",
    "tty",
    "tmpfs",
    "ulimits",
    "sysctls",
    "logging",
    "stop_signal",
    "stop_grace_period",
    "extra_hosts",
    "dns",
    "dns_search",
    "dns_opt",
    "shm_size",
    "security_opt",
    "mem_limit",
    "memswap_limit",
    "mem_reservation",
    "cpus",
    "cpu_shares",
    "cpuset",
    "pids_limit",
    "deploy",
    "pull_policy",
    "platform",
    "pid",
    "ipc",
    "group_add",
    "configs",
    "secrets",
];

struct Ctx<'a> {
    file: &'a str,
    service: Option<&'a str>,
}

impl Ctx<'_> {
    fn err(&self, node: &Node, key: Option<&str>, message: impl Into<String>) -> Error {
        Error {
            file: self.file.to_owned(),
            line: node.line,
            service: self.service.map(str::to_owned),
            key: key.map(str::to_owned),
            message: message.into(),
            secret: false,
        }
    }

    fn secret_err(&self, node: &Node, key: &str, e: crate::secrets::Error) -> Error {
        Error {
            secret: true,
            ..self.err(node, Some(key), e.to_string())
        }
    }
}

/// A tree with no files, for parsing a compose file on its own.
struct NoFiles;

impl Tree for NoFiles {
    fn read(&self, _: &str) -> Result<Option<Vec<u8>>, super::TreeError> {
        Ok(None)
    }
    fn entry(&self, _: &str) -> Result<Option<super::Entry>, super::TreeError> {
        Ok(None)
    }
    fn files_under(&self, path: &str) -> Result<Vec<super::FileData>, super::TreeError> {
        Err(super::TreeError {
            path: path.to_owned(),
            message: "no files".into(),
        })
    }
}

/// Parse a compose file on its own (no other layers, no repository files).
pub fn parse(file: &str, text: &str, vars: &Vars) -> Result<ComposeFile, Error> {
    parse_layer(
        &Layer {
            file,
            dir: ".",
            vars,
            tree: &NoFiles,
            inherited_volumes: &[],
            inherited_networks: &[],
            inherited_secrets: &[],
            secrets: SecretsCtx::offline(),
        },
        text,
    )
}

/// Parse one layer's compose file.
pub fn parse_layer(layer: &Layer<'_>, text: &str) -> Result<ComposeFile, Error> {
    let file = layer.file;
    let root = yaml::parse(text).map_err(|e| Error {
        file: file.to_owned(),
        line: e.line,
        service: None,
        key: None,
        message: format!("invalid YAML: {}", e.message),
        secret: false,
    })?;
    let top = Ctx { file, service: None };
    // `build:` first: a file that builds images is refused for that reason, whatever else it has.
    if let Some(services) = root.get("services").and_then(Node::as_map) {
        for (k, v) in services {
            if let Some((bk, _)) = v
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("build")))
            {
                let ctx = Ctx {
                    file,
                    service: k.as_str(),
                };
                return Err(ctx.err(
                    bk,
                    Some("build"),
                    "tend does not build images; build and publish the image to a registry, then set `image:` instead",
                ));
            }
        }
    }
    let mut unset = Vec::new();
    let root = interpolate_tree(root, layer.vars, &mut unset, &top)?;
    let entries = root.as_map().ok_or_else(|| {
        top.err(
            &root,
            None,
            format!("the file must be a mapping, found {}", root.kind()),
        )
    })?;
    let mut out = ComposeFile::default();
    for name in &unset {
        out.warnings.push(format!(
            "{file}: variable {name} is not set (not in the layer's .env nor a host fact); using an empty string"
        ));
    }
    let mut configs: BTreeMap<String, RepoFile> = BTreeMap::new();
    for (k, v) in entries {
        let key = k.as_str().unwrap_or_default();
        match key {
            "services" => {}
            "version" => out.warnings.push(format!(
                "{file}:{}: the top-level `version` key is obsolete and ignored",
                k.line
            )),
            "name" => {
                let n = scalar(v, &top, "name")?;
                if !crate::config::valid_project_name(&n) {
                    return Err(top.err(
                        v,
                        Some("name"),
                        format!("{n:?} is not a valid project name (lowercase letters, digits, '-', '_')"),
                    ));
                }
                out.name = Some(n);
            }
            "volumes" => out.volumes = parse_top_volumes(v, &top)?,
            "networks" => out.networks = parse_top_networks(v, &top)?,
            "configs" => configs = parse_top_configs(v, &top, layer)?,
            "secrets" => out.secret_files = parse_top_secrets(v, &top, layer)?,
            k if k.starts_with("x-") => {}
            other => {
                let hint = match other {
                    "include" => "include is not supported; list the directories as layers in tend.toml",
                    _ => "supported: services, volumes, networks, configs, name, version, x-*",
                };
                return Err(top.err(k, Some(other), format!("this top-level key is not supported ({hint})")));
            }
        }
    }
    let Some(services) = root.get("services") else {
        return Err(top.err(
            &root,
            Some("services"),
            "missing: a compose file needs a `services:` mapping",
        ));
    };
    let services = services.as_map().ok_or_else(|| {
        top.err(
            services,
            Some("services"),
            format!("must be a mapping, found {}", services.kind()),
        )
    })?;
    let mut known_volumes: Vec<String> = out.volumes.keys().cloned().collect();
    known_volumes.extend(layer.inherited_volumes.iter().cloned());
    let mut known_networks: Vec<String> = out.networks.keys().cloned().collect();
    known_networks.extend(layer.inherited_networks.iter().cloned());
    let mut known_secrets: Vec<String> = out.secret_files.keys().cloned().collect();
    known_secrets.extend(layer.inherited_secrets.iter().cloned());
    let known = Known {
        volumes: &known_volumes,
        networks: &known_networks,
        configs: &configs,
        secrets: &known_secrets,
    };
    for (k, v) in services {
        let name = k.as_str().unwrap_or_default();
        if !valid_service_name(name) {
            return Err(top.err(
                k,
                None,
                format!("{name:?} is not a valid service name (letters, digits, '.', '-', '_')"),
            ));
        }
        let ctx = Ctx {
            file,
            service: Some(name),
        };
        let mut secret_env = BTreeMap::new();
        let spec = parse_service(&ctx, name, v, &known, layer, &mut out.files, &mut secret_env)?;
        if !secret_env.is_empty() {
            out.secret_env.insert(name.to_owned(), secret_env);
        }
        out.services.push(spec);
    }
    Ok(out)
}

struct Known<'a> {
    volumes: &'a [String],
    networks: &'a [String],
    configs: &'a BTreeMap<String, RepoFile>,
    secrets: &'a [String],
}

/// Top-level `secrets:`: each names a SOPS file in the repository, decrypted in memory. A secret
/// file that is not SOPS-encrypted is refused: plaintext secrets do not belong in Git.
fn parse_top_secrets(node: &Node, ctx: &Ctx<'_>, layer: &Layer<'_>) -> Result<BTreeMap<String, SecretFile>, Error> {
    let key = "secrets";
    let mut out = BTreeMap::new();
    if node.is_null() {
        return Ok(out);
    }
    for (k, v) in map(node, ctx, key)? {
        let name = k.as_str().unwrap_or_default().to_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ctx.err(k, Some(key), format!("{name:?} is not a valid secret name")));
        }
        check_keys(v, ctx, key, &["file", "environment", "external", "name"])?;
        let Some(f) = v.get("file") else {
            return Err(ctx.err(
                v,
                Some(key),
                format!("secret {name:?}: needs `file:` naming a SOPS-encrypted file in the repository"),
            ));
        };
        let rel = scalar(f, ctx, key)?;
        let path = resolve_repo_path(layer.dir, &rel).map_err(|m| ctx.err(f, Some(key), m))?;
        let bytes = layer
            .tree
            .read(&path)
            .map_err(|e| ctx.err(f, Some(key), e.to_string()))?
            .ok_or_else(|| {
                ctx.err(
                    f,
                    Some(key),
                    format!("secret {name:?}: {rel} does not exist in the repository"),
                )
            })?;
        let (hash, plaintext) = match sops::open(&path, &bytes, &layer.secrets)
            .map_err(|e| ctx.secret_err(f, key, e))?
        {
            Opened::Plain => {
                return Err(ctx.err(
                    f,
                    Some(key),
                    format!("secret {name:?}: {path} is not encrypted with sops; encrypt it (sops encrypt -i {path})"),
                ))
            }
            Opened::Sops { hash, doc } => {
                let plaintext = match doc {
                    Some(d) => Some(SecretBytes(d.to_bytes().map_err(|e| ctx.secret_err(f, key, e))?)),
                    None => None,
                };
                (hash, plaintext)
            }
        };
        out.insert(name, SecretFile { path, hash, plaintext });
    }
    Ok(out)
}

/// A service's `configs:`/`secrets:` entry, short (`NAME`) or long syntax (`source`, `target`,
/// `uid`, `gid`, `mode`): the name, the target if given, and the owner and mode of the copy if any
/// is set (`default_mode` for the unset mode).
fn file_reference(
    node: &Node,
    ctx: &Ctx<'_>,
    key: &str,
    default_mode: u32,
) -> Result<(String, Option<String>, Option<FileOwner>), Error> {
    if !matches!(&node.value, Value::Map(_)) {
        return Ok((scalar(node, ctx, key)?, None, None));
    }
    check_keys(node, ctx, key, &["source", "target", "uid", "gid", "mode"])?;
    let name = node
        .get("source")
        .map(|s| scalar(s, ctx, key))
        .transpose()?
        .ok_or_else(|| ctx.err(node, Some(key), "source: missing"))?;
    let target = node.get("target").map(|t| scalar(t, ctx, key)).transpose()?;
    let num = |k: &str| -> Result<Option<u32>, Error> {
        node.get(k)
            .map(|n| {
                let s = scalar(n, ctx, key)?;
                let parsed = if k == "mode" {
                    u32::from_str_radix(s.trim_start_matches("0o"), 8).ok()
                } else {
                    s.parse().ok()
                };
                parsed.ok_or_else(|| ctx.err(n, Some(key), format!("{k}: {s:?} is not a number")))
            })
            .transpose()
    };
    let (uid, gid, mode) = (num("uid")?, num("gid")?, num("mode")?);
    let owner = (uid.is_some() || gid.is_some() || mode.is_some()).then(|| FileOwner {
        uid: uid.unwrap_or(0),
        gid: gid.unwrap_or(0),
        mode: mode.unwrap_or(default_mode),
    });
    Ok((name, target, owner))
}

/// A service's `secrets:` entry: the decrypted file bind-mounted read-only at
/// `/run/secrets/NAME` (or `target`).
fn parse_service_secret(node: &Node, ctx: &Ctx<'_>, known: &Known<'_>) -> Result<Mount, Error> {
    let key = "secrets";
    let (name, target, owner) = file_reference(node, ctx, key, 0o400)?;
    if !known.secrets.contains(&name) {
        return Err(ctx.err(
            node,
            Some(key),
            format!("secret {name:?} is not declared in the top-level `secrets:` section"),
        ));
    }
    let target = match target {
        Some(t) if t.starts_with('/') => t,
        Some(t) => format!("/run/secrets/{t}"),
        None => format!("/run/secrets/{name}"),
    };
    Ok(Mount {
        kind: MountKind::Secret,
        source: name,
        target,
        read_only: true,
        no_create_host_path: false,
        nocopy: false,
        tmpfs_size: None,
        file_owner: owner,
        // Filled in by `desired::load` once every layer's secrets are known.
        content_hash: None,
    })
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn interpolate_tree(node: Node, vars: &Vars, unset: &mut Vec<String>, ctx: &Ctx<'_>) -> Result<Node, Error> {
    let line = node.line;
    let value = match node.value {
        Value::Scalar { text, plain } => {
            let text = interpolate::interpolate(&text, vars, unset).map_err(|e| Error {
                file: ctx.file.to_owned(),
                line,
                service: None,
                key: None,
                message: e.to_string(),
                secret: false,
            })?;
            Value::Scalar { text, plain }
        }
        Value::Seq(items) => Value::Seq(
            items
                .into_iter()
                .map(|n| interpolate_tree(n, vars, unset, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    // Extension fields are never used by tend, so they are not interpolated.
                    if k.as_str().is_some_and(|s| s.starts_with("x-")) {
                        Ok((k, v))
                    } else {
                        Ok((k, interpolate_tree(v, vars, unset, ctx)?))
                    }
                })
                .collect::<Result<_, Error>>()?,
        ),
    };
    Ok(Node { line, value })
}

/// Check a mapping's keys against `allowed`.
fn check_keys(node: &Node, ctx: &Ctx<'_>, key: &str, allowed: &[&str]) -> Result<(), Error> {
    if let Some(entries) = node.as_map() {
        for (k, _) in entries {
            let name = k.as_str().unwrap_or_default();
            if !allowed.contains(&name) && !name.starts_with("x-") {
                return Err(ctx.err(
                    k,
                    Some(key),
                    format!("{name:?} is not supported here (supported: {})", allowed.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

fn map<'n>(node: &'n Node, ctx: &Ctx<'_>, key: &str) -> Result<&'n [(Node, Node)], Error> {
    node.as_map()
        .ok_or_else(|| ctx.err(node, Some(key), format!("expected a mapping, found {}", node.kind())))
}

fn parse_top_volumes(node: &Node, ctx: &Ctx<'_>) -> Result<BTreeMap<String, VolumeSpec>, Error> {
    let mut out = BTreeMap::new();
    if node.is_null() {
        return Ok(out);
    }
    for (k, v) in map(node, ctx, "volumes")? {
        let key = k.as_str().unwrap_or_default().to_owned();
        let mut spec = VolumeSpec::default();
        if !v.is_null() {
            check_keys(
                v,
                ctx,
                "volumes",
                &["driver", "driver_opts", "external", "name", "labels"],
            )?;
            map(v, ctx, "volumes")?;
            if let Some(d) = v.get("driver") {
                spec.driver = Some(scalar(d, ctx, "volumes")?);
            }
            if let Some(o) = v.get("driver_opts") {
                spec.driver_opts = string_map(o, ctx, "volumes")?;
            }
            if let Some(e) = v.get("external") {
                spec.external = boolean(e, ctx, "volumes")?;
            }
            if let Some(n) = v.get("name") {
                spec.name = scalar(n, ctx, "volumes")?;
            }
            if let Some(l) = v.get("labels") {
                spec.labels = string_map(l, ctx, "volumes")?;
            }
        }
        out.insert(key, spec);
    }
    Ok(out)
}

fn parse_top_networks(node: &Node, ctx: &Ctx<'_>) -> Result<BTreeMap<String, NetworkSpec>, Error> {
    let mut out = BTreeMap::new();
    if node.is_null() {
        return Ok(out);
    }
    for (k, v) in map(node, ctx, "networks")? {
        let key = k.as_str().unwrap_or_default().to_owned();
        let mut spec = NetworkSpec::default();
        if !v.is_null() {
            check_keys(
                v,
                ctx,
                "networks",
                &[
                    "driver",
                    "driver_opts",
                    "ipam",
                    "external",
                    "name",
                    "internal",
                    "attachable",
                    "enable_ipv6",
                    "labels",
                ],
            )?;
            map(v, ctx, "networks")?;
            if let Some(d) = v.get("driver") {
                spec.driver = Some(scalar(d, ctx, "networks")?);
            }
            if let Some(o) = v.get("driver_opts") {
                spec.driver_opts = string_map(o, ctx, "networks")?;
            }
            for (flag, field) in [
                ("external", &mut spec.external),
                ("internal", &mut spec.internal),
                ("attachable", &mut spec.attachable),
                ("enable_ipv6", &mut spec.enable_ipv6),
            ] {
                if let Some(b) = v.get(flag) {
                    *field = boolean(b, ctx, "networks")?;
                }
            }
            if let Some(n) = v.get("name") {
                spec.name = scalar(n, ctx, "networks")?;
            }
            if let Some(l) = v.get("labels") {
                spec.labels = string_map(l, ctx, "networks")?;
            }
            if let Some(ipam) = v.get("ipam") {
                check_keys(ipam, ctx, "networks", &["driver", "config", "options"])?;
                if let Some(d) = ipam.get("driver") {
                    spec.ipam_driver = Some(scalar(d, ctx, "networks")?);
                }
                if let Some(cfgs) = ipam.get("config") {
                    for c in list(cfgs, ctx, "networks")? {
                        check_keys(c, ctx, "networks", &["subnet", "ip_range", "gateway", "aux_addresses"])?;
                        if c.get("aux_addresses").is_some() {
                            return Err(ctx.err(c, Some("networks"), "ipam aux_addresses is not supported"));
                        }
                        let get = |k: &str| c.get(k).map(|n| scalar(n, ctx, "networks")).transpose();
                        spec.ipam.push(IpamConfig {
                            subnet: get("subnet")?,
                            ip_range: get("ip_range")?,
                            gateway: get("gateway")?,
                        });
                    }
                }
            }
        }
        out.insert(key, spec);
    }
    Ok(out)
}

fn parse_top_configs(node: &Node, ctx: &Ctx<'_>, layer: &Layer<'_>) -> Result<BTreeMap<String, RepoFile>, Error> {
    let mut out = BTreeMap::new();
    if node.is_null() {
        return Ok(out);
    }
    for (k, v) in map(node, ctx, "configs")? {
        let key = k.as_str().unwrap_or_default().to_owned();
        check_keys(
            v,
            ctx,
            "configs",
            &["file", "content", "environment", "external", "name"],
        )?;
        let source = if let Some(f) = v.get("file") {
            let rel = scalar(f, ctx, "configs")?;
            let path = resolve_repo_path(layer.dir, &rel).map_err(|m| ctx.err(f, Some("configs"), m))?;
            match layer
                .tree
                .entry(&path)
                .map_err(|e| ctx.err(f, Some("configs"), e.to_string()))?
            {
                Some(e) if e.kind == EntryKind::File => FileSource::Tree {
                    path,
                    kind: EntryKind::File,
                },
                Some(_) => {
                    return Err(ctx.err(
                        f,
                        Some("configs"),
                        format!("config {key:?}: {rel} is a directory, not a file"),
                    ))
                }
                None => {
                    return Err(ctx.err(
                        f,
                        Some("configs"),
                        format!("config {key:?}: {rel} does not exist in the repository (looked for {path})"),
                    ))
                }
            }
        } else if let Some(c) = v.get("content") {
            FileSource::Inline(scalar(c, ctx, "configs")?.into_bytes())
        } else if let Some(e) = v.get("environment") {
            let var = scalar(e, ctx, "configs")?;
            match layer.vars.get(&var) {
                Some(val) => FileSource::Inline(val.clone().into_bytes()),
                None => return Err(ctx.err(e, Some("configs"), format!("config {key:?}: variable {var} is not set"))),
            }
        } else {
            return Err(ctx.err(
                v,
                Some("configs"),
                format!(
                    "config {key:?}: needs `file:`, `content:` or `environment:` (external configs are not supported)"
                ),
            ));
        };
        out.insert(key, RepoFile { source, owner: None });
    }
    Ok(out)
}

/// Normalise `rel` (relative to the layer dir) to a repository path; `..` may not leave the
/// repository.
pub fn resolve_repo_path(layer_dir: &str, rel: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = if layer_dir == "." {
        Vec::new()
    } else {
        layer_dir.split('/').collect()
    };
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("{rel}: the path leaves the repository"));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn parse_service(
    ctx: &Ctx<'_>,
    name: &str,
    node: &Node,
    known: &Known<'_>,
    layer: &Layer<'_>,
    files: &mut BTreeMap<String, RepoFile>,
    secret_env: &mut BTreeMap<String, SecretBytes>,
) -> Result<ServiceSpec, Error> {
    let entries = node.as_map().ok_or_else(|| {
        ctx.err(
            node,
            None,
            format!("a service must be a mapping, found {}", node.kind()),
        )
    })?;
    for (k, _) in entries {
        let key = k.as_str().unwrap_or_default();
        if key.starts_with("x-") || SERVICE_KEYS.contains(&key) {
            continue;
        }
        let msg = match key {
            "profiles" => "profiles are not supported: use layers to choose what a host runs".to_owned(),
            "extends" => "extends is not supported: use layers (a later layer replaces a service)".to_owned(),
            "links" | "external_links" => {
                "links are obsolete: services reach each other by name on their networks".to_owned()
            }
            "scale" => "scale is not supported: tend runs one container per service".to_owned(),
            "start_interval" => "not supported by the Docker API version tend targets".to_owned(),
            _ => "not supported by tend".to_owned(),
        };
        return Err(ctx.err(k, Some(key), msg));
    }
    let mut s = ServiceSpec {
        name: name.to_owned(),
        restart: "no".into(),
        ..ServiceSpec::default()
    };
    s.image = match node.get("image") {
        Some(v) => scalar(v, ctx, "image")?,
        None => return Err(ctx.err(node, Some("image"), "missing: every service needs an image")),
    };
    if s.image.is_empty() || s.image.contains(char::is_whitespace) {
        return Err(ctx.err(
            node.get("image").unwrap_or(node),
            Some("image"),
            format!("{:?} is not an image reference", s.image),
        ));
    }
    for (k, v) in entries {
        let key = k.as_str().unwrap_or_default();
        match key {
            "image" => {}
            "command" => s.command = Some(words(v, ctx, key)?),
            "entrypoint" => s.entrypoint = Some(words(v, ctx, key)?),
            "env_file" => {
                for (k2, v2) in env_files(v, ctx, layer)? {
                    match v2 {
                        EnvValue::Plain(v2) => {
                            s.secret_env.remove(&k2);
                            secret_env.remove(&k2);
                            s.environment.insert(k2, v2);
                        }
                        EnvValue::Secret { hash, value } => {
                            s.environment.remove(&k2);
                            s.secret_env.insert(k2.clone(), hash);
                            if let Some(value) = value {
                                secret_env.insert(k2, value);
                            }
                        }
                    }
                }
            }
            "environment" => {}
            "restart" => {
                let r = scalar(v, ctx, key)?;
                check_restart(&r).map_err(|m| ctx.err(v, Some(key), m))?;
                s.restart = r;
            }
            "labels" => {
                let kv = key_values(v, ctx, key)?;
                for k in kv.keys() {
                    if k.starts_with("io.tend.") || k.starts_with("com.docker.compose.") {
                        return Err(ctx.err(v, Some(key), format!("label {k:?} is reserved for tend")));
                    }
                }
                s.labels = kv.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
            }
            "ports" => {
                for p in list(v, ctx, key)? {
                    s.ports.extend(parse_ports(p, ctx)?);
                }
            }
            "volumes" => {
                for m in list(v, ctx, key)? {
                    s.volumes.push(parse_mount(m, ctx, known, layer, files)?);
                }
            }
            "configs" => {
                for c in list(v, ctx, key)? {
                    s.volumes.push(parse_service_config(c, ctx, known, files)?);
                }
            }
            "secrets" => {
                for c in list(v, ctx, key)? {
                    s.volumes.push(parse_service_secret(c, ctx, known)?);
                }
            }
            "healthcheck" => s.healthcheck = Some(parse_healthcheck(v, ctx)?),
            "depends_on" => s.depends_on = parse_depends_on(v, ctx)?,
            "container_name" => {
                let n = scalar(v, ctx, key)?;
                if !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                    || !n.starts_with(|c: char| c.is_ascii_alphanumeric())
                {
                    return Err(ctx.err(v, Some(key), format!("{n:?} is not a valid container name")));
                }
                s.container_name = Some(n);
            }
            "hostname" => s.hostname = Some(scalar(v, ctx, key)?),
            "domainname" => s.domainname = Some(scalar(v, ctx, key)?),
            "user" => s.user = Some(scalar(v, ctx, key)?),
            "working_dir" => s.working_dir = Some(scalar(v, ctx, key)?),
            "expose" => {
                for e in list(v, ctx, key)? {
                    s.expose.extend(parse_expose(e, ctx)?);
                }
            }
            "networks" => s.networks = parse_service_networks(v, ctx, known)?,
            "network_mode" => {
                let m = scalar(v, ctx, key)?;
                let ok = matches!(m.as_str(), "host" | "none" | "bridge")
                    || m.strip_prefix("service:").is_some_and(|x| !x.is_empty())
                    || m.strip_prefix("container:").is_some_and(|x| !x.is_empty());
                if !ok {
                    return Err(ctx.err(
                        v,
                        Some(key),
                        format!("{m:?}: use host, none, bridge, service:NAME or container:NAME"),
                    ));
                }
                s.network_mode = Some(m);
            }
            "cap_add" => s.cap_add = strings(v, ctx, key)?,
            "cap_drop" => s.cap_drop = strings(v, ctx, key)?,
            "devices" => {
                s.devices = strings(v, ctx, key)?;
                for d in &s.devices {
                    if !d.starts_with('/') {
                        return Err(ctx.err(
                            v,
                            Some(key),
                            format!("{d:?}: expected HOST_PATH[:CONTAINER_PATH[:PERMISSIONS]]"),
                        ));
                    }
                }
            }
            "privileged" => s.privileged = boolean(v, ctx, key)?,
            "read_only" => s.read_only = boolean(v, ctx, key)?,
            "init" => s.init = Some(boolean(v, ctx, key)?),
            "stdin_open" => s.stdin_open = boolean(v, ctx, key)?,
            "tty" => s.tty = boolean(v, ctx, key)?,
            "tmpfs" => s.tmpfs = string_or_list(v, ctx, key)?,
            "ulimits" => s.ulimits = parse_ulimits(v, ctx)?,
            "sysctls" => {
                s.sysctls = key_values(v, ctx, key)?
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect()
            }
            "logging" => {
                check_keys(v, ctx, key, &["driver", "options"])?;
                s.logging = Some(Logging {
                    driver: v
                        .get("driver")
                        .map(|d| scalar(d, ctx, key))
                        .transpose()?
                        .unwrap_or_default(),
                    options: v
                        .get("options")
                        .map(|o| string_map(o, ctx, key))
                        .transpose()?
                        .unwrap_or_default(),
                });
            }
            "stop_signal" => s.stop_signal = Some(scalar(v, ctx, key)?),
            "stop_grace_period" => {
                let d = scalar(v, ctx, key)?;
                let ns = parse_compose_duration(&d).map_err(|m| ctx.err(v, Some(key), format!("{d:?}: {m}")))?;
                s.stop_grace_period_s = Some((ns + 999_999_999) / 1_000_000_000);
            }
            "extra_hosts" => {
                s.extra_hosts = match &v.value {
                    Value::Map(_) => string_map(v, ctx, key)?
                        .into_iter()
                        .map(|(h, ip)| format!("{h}:{ip}"))
                        .collect(),
                    _ => strings(v, ctx, key)?
                        .into_iter()
                        .map(|e| match e.split_once('=') {
                            Some((h, ip)) => format!("{h}:{ip}"),
                            None => e,
                        })
                        .collect(),
                };
                for e in &s.extra_hosts {
                    if !e.contains(':') {
                        return Err(ctx.err(v, Some(key), format!("{e:?}: expected HOST:IP")));
                    }
                }
            }
            "dns" => s.dns = string_or_list(v, ctx, key)?,
            "dns_search" => s.dns_search = string_or_list(v, ctx, key)?,
            "dns_opt" => s.dns_opt = strings(v, ctx, key)?,
            "shm_size" => s.shm_size = Some(bytes(v, ctx, key)?),
            "security_opt" => s.security_opt = strings(v, ctx, key)?,
            "mem_limit" => s.resources.memory = Some(bytes(v, ctx, key)?),
            "memswap_limit" => s.resources.memswap = Some(bytes(v, ctx, key)?),
            "mem_reservation" => s.resources.memory_reservation = Some(bytes(v, ctx, key)?),
            "cpus" => s.resources.nano_cpus = Some(cpus(v, ctx, key)?),
            "cpu_shares" => s.resources.cpu_shares = Some(integer(v, ctx, key)?),
            "cpuset" => s.resources.cpuset = Some(scalar(v, ctx, key)?),
            "pids_limit" => s.resources.pids_limit = Some(integer(v, ctx, key)?),
            "deploy" => parse_deploy(v, ctx, &mut s)?,
            "pull_policy" => {
                let p = scalar(v, ctx, key)?;
                s.pull_policy = match p.as_str() {
                    "missing" | "if_not_present" => PullPolicy::Missing,
                    "always" => PullPolicy::Always,
                    "never" => PullPolicy::Never,
                    "build" => return Err(ctx.err(v, Some(key), "tend does not build images; publish the image")),
                    _ => return Err(ctx.err(v, Some(key), format!("{p:?}: use missing, always or never"))),
                };
            }
            "platform" => s.platform = Some(scalar(v, ctx, key)?),
            "pid" => s.pid = Some(scalar(v, ctx, key)?),
            "ipc" => s.ipc = Some(scalar(v, ctx, key)?),
            "group_add" => s.group_add = strings(v, ctx, key)?,
            _ => {}
        }
    }
    // `environment` wins over `env_file`, as in compose.
    if let Some(v) = node.get("environment") {
        for (k, val) in key_values(v, ctx, "environment")? {
            match val {
                Some(val) => {
                    s.secret_env.remove(&k);
                    secret_env.remove(&k);
                    s.environment.insert(k, val);
                }
                None => {
                    // A bare NAME takes the value from the layer's variables, or stays unset.
                    if let Some(val) = layer.vars.get(&k) {
                        s.environment.insert(k, val.clone());
                    }
                }
            }
        }
    }
    if s.network_mode.is_some() && !s.networks.is_empty() {
        return Err(ctx.err(node, Some("network_mode"), "cannot be combined with `networks`"));
    }
    if s.depends_on.iter().any(|d| d.service == name) {
        return Err(ctx.err(node, Some("depends_on"), "a service cannot depend on itself"));
    }
    Ok(s)
}

fn check_restart(r: &str) -> Result<(), String> {
    let ok = matches!(r, "no" | "always" | "unless-stopped" | "on-failure")
        || r.strip_prefix("on-failure:").is_some_and(|n| n.parse::<u32>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{r:?} is not a restart policy (no, always, unless-stopped, on-failure[:N])"
        ))
    }
}

fn parse_deploy(node: &Node, ctx: &Ctx<'_>, s: &mut ServiceSpec) -> Result<(), Error> {
    let key = "deploy";
    check_keys(
        node,
        ctx,
        key,
        &["resources", "update_config", "restart_policy", "replicas", "mode"],
    )?;
    if let Some(r) = node.get("replicas") {
        if integer(r, ctx, key)? != 1 {
            return Err(ctx.err(r, Some(key), "replicas: tend runs exactly one container per service"));
        }
    }
    if let Some(m) = node.get("mode") {
        if scalar(m, ctx, key)? != "replicated" {
            return Err(ctx.err(m, Some(key), "mode: only `replicated` (one replica) is supported"));
        }
    }
    if let Some(res) = node.get("resources") {
        check_keys(res, ctx, key, &["limits", "reservations"])?;
        if let Some(l) = res.get("limits") {
            check_keys(l, ctx, key, &["cpus", "memory", "pids"])?;
            if let Some(c) = l.get("cpus") {
                s.resources.nano_cpus = Some(cpus(c, ctx, key)?);
            }
            if let Some(m) = l.get("memory") {
                s.resources.memory = Some(bytes(m, ctx, key)?);
            }
            if let Some(p) = l.get("pids") {
                s.resources.pids_limit = Some(integer(p, ctx, key)?);
            }
        }
        if let Some(r) = res.get("reservations") {
            check_keys(r, ctx, key, &["cpus", "memory"])?;
            if let Some(m) = r.get("memory") {
                s.resources.memory_reservation = Some(bytes(m, ctx, key)?);
            }
            if let Some(c) = r.get("cpus") {
                // The engine has no CPU reservation outside swarm; the closest is a share weight.
                let nano = cpus(c, ctx, key)?;
                s.resources.cpu_shares = Some((nano * 1024 / 1_000_000_000).max(2));
            }
        }
    }
    if let Some(u) = node.get("update_config") {
        check_keys(u, ctx, key, &["order"])?;
        if let Some(o) = u.get("order") {
            s.start_first = match scalar(o, ctx, key)?.as_str() {
                "start-first" => true,
                "stop-first" => false,
                other => {
                    return Err(ctx.err(
                        o,
                        Some(key),
                        format!("update_config.order {other:?}: use stop-first or start-first"),
                    ))
                }
            };
        }
    }
    if let Some(rp) = node.get("restart_policy") {
        check_keys(rp, ctx, key, &["condition", "max_attempts"])?;
        let cond = rp
            .get("condition")
            .map(|c| scalar(c, ctx, key))
            .transpose()?
            .unwrap_or_else(|| "any".into());
        let max = rp.get("max_attempts").map(|m| integer(m, ctx, key)).transpose()?;
        s.restart = match (cond.as_str(), max) {
            ("none", _) => "no".into(),
            ("any", _) => "always".into(),
            ("on-failure", Some(n)) => format!("on-failure:{n}"),
            ("on-failure", None) => "on-failure".into(),
            (other, _) => {
                return Err(ctx.err(
                    rp,
                    Some(key),
                    format!("restart_policy.condition {other:?}: use none, on-failure or any"),
                ))
            }
        };
    }
    Ok(())
}

fn parse_depends_on(v: &Node, ctx: &Ctx<'_>) -> Result<Vec<Dependency>, Error> {
    let key = "depends_on";
    let mut out = match &v.value {
        Value::Seq(items) => items
            .iter()
            .map(|i| {
                Ok(Dependency {
                    service: scalar(i, ctx, key)?,
                    condition: Condition::ServiceStarted,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?,
        Value::Map(entries) => {
            let mut out = Vec::new();
            for (k, cond) in entries {
                check_keys(cond, ctx, key, &["condition", "required", "restart"])?;
                let condition = match cond.get("condition").map(|c| scalar(c, ctx, key)).transpose()?.as_deref() {
                    None | Some("service_started") => Condition::ServiceStarted,
                    Some("service_healthy") => Condition::ServiceHealthy,
                    Some("service_completed_successfully") => Condition::ServiceCompletedSuccessfully,
                    Some(other) => {
                        return Err(ctx.err(
                            cond,
                            Some(key),
                            format!("condition {other:?}: use service_started, service_healthy or service_completed_successfully"),
                        ))
                    }
                };
                if let Some(r) = cond.get("required") {
                    if !boolean(r, ctx, key)? {
                        return Err(ctx.err(r, Some(key), "required: false is not supported"));
                    }
                }
                if let Some(r) = cond.get("restart") {
                    if boolean(r, ctx, key)? {
                        return Err(ctx.err(r, Some(key), "restart: true is not supported yet"));
                    }
                }
                out.push(Dependency {
                    service: k.as_str().unwrap_or_default().to_owned(),
                    condition,
                });
            }
            out
        }
        _ => return Err(ctx.err(v, Some(key), format!("must be a list or a mapping, found {}", v.kind()))),
    };
    out.sort_by(|a, b| a.service.cmp(&b.service));
    out.dedup_by(|a, b| a.service == b.service);
    Ok(out)
}

fn parse_service_networks(
    v: &Node,
    ctx: &Ctx<'_>,
    known: &Known<'_>,
) -> Result<BTreeMap<String, NetworkAttachment>, Error> {
    let key = "networks";
    let mut out = BTreeMap::new();
    let check = |n: &Node, name: &str| -> Result<(), Error> {
        if name != "default" && !known.networks.iter().any(|k| k == name) {
            return Err(ctx.err(
                n,
                Some(key),
                format!("network {name:?} is not declared in the top-level `networks:` section"),
            ));
        }
        Ok(())
    };
    match &v.value {
        Value::Seq(items) => {
            for i in items {
                let name = scalar(i, ctx, key)?;
                check(i, &name)?;
                out.insert(name, NetworkAttachment::default());
            }
        }
        Value::Map(entries) => {
            for (k, a) in entries {
                let name = k.as_str().unwrap_or_default().to_owned();
                check(k, &name)?;
                let mut att = NetworkAttachment::default();
                if !a.is_null() {
                    check_keys(a, ctx, key, &["aliases", "ipv4_address", "ipv6_address"])?;
                    if let Some(al) = a.get("aliases") {
                        att.aliases = strings(al, ctx, key)?;
                    }
                    if let Some(ip) = a.get("ipv4_address") {
                        let ip4 = scalar(ip, ctx, key)?;
                        if ip4.parse::<std::net::Ipv4Addr>().is_err() {
                            return Err(ctx.err(ip, Some(key), format!("{ip4:?} is not an IPv4 address")));
                        }
                        att.ipv4_address = Some(ip4);
                    }
                    if let Some(ip) = a.get("ipv6_address") {
                        let ip6 = scalar(ip, ctx, key)?;
                        if ip6.parse::<std::net::Ipv6Addr>().is_err() {
                            return Err(ctx.err(ip, Some(key), format!("{ip6:?} is not an IPv6 address")));
                        }
                        att.ipv6_address = Some(ip6);
                    }
                }
                out.insert(name, att);
            }
        }
        _ => return Err(ctx.err(v, Some(key), format!("must be a list or a mapping, found {}", v.kind()))),
    }
    Ok(out)
}

fn parse_ulimits(v: &Node, ctx: &Ctx<'_>) -> Result<BTreeMap<String, (i64, i64)>, Error> {
    let key = "ulimits";
    let mut out = BTreeMap::new();
    for (k, val) in map(v, ctx, key)? {
        let name = k.as_str().unwrap_or_default().to_owned();
        let limits = match &val.value {
            Value::Scalar { .. } => {
                let n = integer(val, ctx, key)?;
                (n, n)
            }
            Value::Map(_) => {
                check_keys(val, ctx, key, &["soft", "hard"])?;
                let soft = val.get("soft").map(|s| integer(s, ctx, key)).transpose()?;
                let hard = val.get("hard").map(|s| integer(s, ctx, key)).transpose()?;
                match (soft, hard) {
                    (Some(s), Some(h)) => (s, h),
                    _ => return Err(ctx.err(val, Some(key), format!("{name}: needs both soft and hard"))),
                }
            }
            _ => return Err(ctx.err(val, Some(key), format!("{name}: expected a number or soft/hard"))),
        };
        out.insert(name, limits);
    }
    Ok(out)
}

/// A value from an `env_file`.
enum EnvValue {
    /// From a plain dotenv file.
    Plain(String),
    /// From a SOPS file: keyed hash, and the value when decrypted.
    Secret { hash: String, value: Option<SecretBytes> },
}

/// `env_file`: plain dotenv files, or SOPS files (dotenv, YAML or JSON) decrypted in memory.
fn env_files(v: &Node, ctx: &Ctx<'_>, layer: &Layer<'_>) -> Result<Vec<(String, EnvValue)>, Error> {
    let key = "env_file";
    let items: Vec<(&Node, String, bool)> = match &v.value {
        Value::Scalar { .. } => vec![(v, scalar(v, ctx, key)?, true)],
        Value::Seq(items) => {
            let mut out = Vec::new();
            for i in items {
                match &i.value {
                    Value::Map(_) => {
                        check_keys(i, ctx, key, &["path", "required", "format"])?;
                        let path = i
                            .get("path")
                            .map(|p| scalar(p, ctx, key))
                            .transpose()?
                            .ok_or_else(|| ctx.err(i, Some(key), "path: missing"))?;
                        let required = i
                            .get("required")
                            .map(|r| boolean(r, ctx, key))
                            .transpose()?
                            .unwrap_or(true);
                        out.push((i, path, required));
                    }
                    _ => out.push((i, scalar(i, ctx, key)?, true)),
                }
            }
            out
        }
        _ => return Err(ctx.err(v, Some(key), format!("expected a path or a list, found {}", v.kind()))),
    };
    let mut env = Vec::new();
    for (node, rel, required) in items {
        let path = resolve_repo_path(layer.dir, &rel).map_err(|m| ctx.err(node, Some(key), m))?;
        let bytes = layer
            .tree
            .read(&path)
            .map_err(|e| ctx.err(node, Some(key), e.to_string()))?;
        let Some(bytes) = bytes else {
            if required {
                return Err(ctx.err(
                    node,
                    Some(key),
                    format!("{rel} does not exist in the repository (looked for {path})"),
                ));
            }
            continue;
        };
        match sops::open(&path, &bytes, &layer.secrets).map_err(|e| ctx.secret_err(node, key, e))? {
            Opened::Sops { hash, doc: Some(doc) } => {
                for (k, value) in doc.to_env().map_err(|e| ctx.secret_err(node, key, e))? {
                    use hmac::Mac;
                    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(layer.secrets.hash_key)
                        .expect("HMAC accepts keys of any length");
                    mac.update(hash.as_bytes());
                    mac.update(k.as_bytes());
                    mac.update(value.as_bytes());
                    let value_hash = hex::encode(mac.finalize().into_bytes());
                    let bytes = SecretBytes(zeroize::Zeroizing::new(value.as_bytes().to_vec()));
                    env.push((
                        k,
                        EnvValue::Secret {
                            hash: value_hash,
                            value: Some(bytes),
                        },
                    ));
                }
            }
            Opened::Sops { hash, doc: None } => {
                // Validation without keys: the file is a well-formed SOPS file; the variable names
                // are its top-level keys, readable without decrypting.
                let _ = hash;
            }
            Opened::Plain => {
                let text =
                    String::from_utf8(bytes).map_err(|_| ctx.err(node, Some(key), format!("{path} is not UTF-8")))?;
                let vars = interpolate::parse_dotenv(&text, &Vars::new())
                    .map_err(|(line, m)| ctx.err(node, Some(key), format!("{path}:{line}: {m}")))?;
                env.extend(vars.into_iter().map(|(k, v)| (k, EnvValue::Plain(v))));
            }
        }
    }
    Ok(env)
}

fn scalar(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<String, Error> {
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => Ok(text.clone()),
        _ => Err(ctx.err(node, Some(key), format!("expected a value, found {}", node.kind()))),
    }
}

fn boolean(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<bool, Error> {
    match scalar(node, ctx, key)?.as_str() {
        "true" | "True" | "TRUE" | "yes" | "on" => Ok(true),
        "false" | "False" | "FALSE" | "no" | "off" => Ok(false),
        other => Err(ctx.err(node, Some(key), format!("{other:?}: expected true or false"))),
    }
}

fn integer(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<i64, Error> {
    let s = scalar(node, ctx, key)?;
    s.parse()
        .map_err(|_| ctx.err(node, Some(key), format!("{s:?}: expected a whole number")))
}

fn cpus(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<i64, Error> {
    let s = scalar(node, ctx, key)?;
    match s.parse::<f64>() {
        Ok(c) if c > 0.0 => Ok((c * 1e9).round() as i64),
        _ => Err(ctx.err(node, Some(key), format!("{s:?}: expected a positive number of CPUs"))),
    }
}

fn bytes(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<i64, Error> {
    let s = scalar(node, ctx, key)?;
    parse_bytes(&s).ok_or_else(|| ctx.err(node, Some(key), format!("{s:?}: expected a size like 512m or 1g")))
}

/// Compose byte sizes: `1024`, `512k`, `64m`, `1g`, `1gb` (case-insensitive).
pub fn parse_bytes(s: &str) -> Option<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1i64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n >= 0.0).then_some((n * mult as f64) as i64)
}

fn list<'n>(node: &'n Node, ctx: &Ctx<'_>, key: &str) -> Result<&'n [Node], Error> {
    node.as_seq()
        .ok_or_else(|| ctx.err(node, Some(key), format!("expected a list, found {}", node.kind())))
}

fn strings(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<Vec<String>, Error> {
    list(node, ctx, key)?.iter().map(|i| scalar(i, ctx, key)).collect()
}

fn string_or_list(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<Vec<String>, Error> {
    match &node.value {
        Value::Scalar { .. } => Ok(vec![scalar(node, ctx, key)?]),
        _ => strings(node, ctx, key),
    }
}

fn string_map(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<BTreeMap<String, String>, Error> {
    Ok(key_values(node, ctx, key)?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// `command`/`entrypoint`: a list of words, or a string split like a shell would.
fn words(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<Vec<String>, Error> {
    match &node.value {
        Value::Seq(items) => items.iter().map(|i| scalar(i, ctx, key)).collect(),
        Value::Scalar { text, .. } if !node.is_null() => {
            split_shell_words(text).map_err(|m| ctx.err(node, Some(key), m))
        }
        _ => Err(ctx.err(
            node,
            Some(key),
            format!("expected a string or a list, found {}", node.kind()),
        )),
    }
}

/// Split a command line into words with POSIX shell quoting rules (no expansion).
pub fn split_shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// `environment`/`labels`/`sysctls`: a list of `KEY=VALUE` (or `KEY`) or a mapping. A value of
/// `None` means "unset" (a bare `KEY` or a null mapping value).
fn key_values(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<BTreeMap<String, Option<String>>, Error> {
    let mut out = BTreeMap::new();
    match &node.value {
        Value::Seq(items) => {
            for item in items {
                let s = scalar(item, ctx, key)?;
                let (k, v) = match s.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (s.clone(), None),
                };
                if k.is_empty() {
                    return Err(ctx.err(item, Some(key), format!("{s:?}: expected NAME=VALUE")));
                }
                if out.insert(k.clone(), v).is_some() {
                    return Err(ctx.err(item, Some(key), format!("{k:?} is set twice")));
                }
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                let name = k.as_str().unwrap_or_default().to_owned();
                let value = match &v.value {
                    _ if v.is_null() => None,
                    Value::Scalar { text, .. } => Some(text.clone()),
                    _ => {
                        return Err(ctx.err(
                            v,
                            Some(key),
                            format!("{name:?}: expected a string, number or boolean, found {}", v.kind()),
                        ))
                    }
                };
                out.insert(name, value);
            }
        }
        _ if node.is_null() => {}
        _ => {
            return Err(ctx.err(
                node,
                Some(key),
                format!("expected a list or a mapping, found {}", node.kind()),
            ))
        }
    }
    Ok(out)
}

fn port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().ok()?;
    let b: u16 = b.trim().parse().ok()?;
    (a > 0 && b >= a).then_some((a, b))
}

/// `expose`: `PORT[-PORT][/PROTO]`.
fn parse_expose(node: &Node, ctx: &Ctx<'_>) -> Result<Vec<String>, Error> {
    let raw = scalar(node, ctx, "expose")?;
    let (ports, proto) = raw.split_once('/').unwrap_or((&raw, "tcp"));
    let (a, b) = port_range(ports).ok_or_else(|| {
        ctx.err(
            node,
            Some("expose"),
            format!("{raw:?}: expected PORT[-PORT][/PROTOCOL]"),
        )
    })?;
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(ctx.err(
            node,
            Some("expose"),
            format!("{raw:?}: protocol must be tcp, udp or sctp"),
        ));
    }
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

/// Ports, short syntax (`[ip:][host[-host]:]container[-container][/proto]`) or long syntax.
fn parse_ports(node: &Node, ctx: &Ctx<'_>) -> Result<Vec<Port>, Error> {
    let key = "ports";
    if let Value::Map(_) = &node.value {
        check_keys(
            node,
            ctx,
            key,
            &[
                "target",
                "published",
                "host_ip",
                "protocol",
                "mode",
                "name",
                "app_protocol",
            ],
        )?;
        let target = node
            .get("target")
            .map(|t| integer(t, ctx, key))
            .transpose()?
            .ok_or_else(|| ctx.err(node, Some(key), "target: missing"))?;
        let target = u16::try_from(target)
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| ctx.err(node, Some(key), "target: ports are numbers from 1 to 65535"))?;
        if let Some(m) = node.get("mode") {
            if scalar(m, ctx, key)? != "host" && scalar(m, ctx, key)? != "ingress" {
                return Err(ctx.err(m, Some(key), "mode: use host or ingress"));
            }
        }
        let published = node
            .get("published")
            .map(|p| scalar(p, ctx, key))
            .transpose()?
            .unwrap_or_default();
        if !published.is_empty() && port_range(&published).is_none() {
            return Err(ctx.err(
                node,
                Some(key),
                format!("published {published:?}: expected a port or a range"),
            ));
        }
        let protocol = node
            .get("protocol")
            .map(|p| scalar(p, ctx, key))
            .transpose()?
            .unwrap_or_else(|| "tcp".into());
        if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
            return Err(ctx.err(node, Some(key), "protocol must be tcp, udp or sctp"));
        }
        let host_ip = node
            .get("host_ip")
            .map(|p| scalar(p, ctx, key))
            .transpose()?
            .unwrap_or_default();
        if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(ctx.err(node, Some(key), format!("host_ip {host_ip:?} is not an IP address")));
        }
        return Ok(vec![Port {
            host_ip,
            host_port: published,
            container_port: target,
            protocol,
        }]);
    }
    let raw = match &node.value {
        Value::Scalar { .. } => scalar(node, ctx, key)?,
        _ => return Err(ctx.err(node, Some(key), format!("expected a port, found {}", node.kind()))),
    };
    let bad = |why: &str| ctx.err(node, Some(key), format!("{raw:?}: {why}"));
    let (spec, protocol) = match raw.rsplit_once('/') {
        Some((s, p)) => (s, p.to_owned()),
        None => (raw.as_str(), "tcp".to_owned()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad("protocol must be tcp, udp or sctp"));
    }
    // An IPv6 host address is written in brackets: [::1]:8080:80
    let (host_ip, rest) = if let Some(r) = spec.strip_prefix('[') {
        let (ip, after) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        (
            ip.to_owned(),
            after
                .strip_prefix(':')
                .ok_or_else(|| bad("expected ':' after the address"))?,
        )
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), spec),
            3 => (parts[0].to_owned(), &spec[parts[0].len() + 1..]),
            _ => return Err(bad("expected [IP:][HOST:]CONTAINER")),
        }
    };
    if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad("the host address is not an IP address"));
    }
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let (c0, c1) = port_range(container).ok_or_else(|| bad("ports are numbers from 1 to 65535 (or ranges)"))?;
    let count = c1 - c0;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(port_range(host).ok_or_else(|| bad("ports are numbers from 1 to 65535 (or ranges)"))?)
    };
    if let Some((h0, h1)) = host_range {
        if h1 - h0 != count && h0 != h1 {
            return Err(bad("host and container port ranges differ in length"));
        }
    }
    Ok((0..=count)
        .map(|i| Port {
            host_ip: host_ip.clone(),
            host_port: match host_range {
                None => String::new(),
                Some((h0, h1)) if h0 == h1 && count > 0 => h0.to_string(),
                Some((h0, _)) => (h0 + i).to_string(),
            },
            container_port: c0 + i,
            protocol: protocol.clone(),
        })
        .collect())
}

/// A relative path: a repository path materialized from the commit when it exists there,
/// otherwise a persistent data directory (compose would create it next to the project).
fn relative_mount_source(
    rel: &str,
    node: &Node,
    ctx: &Ctx<'_>,
    layer: &Layer<'_>,
    files: &mut BTreeMap<String, RepoFile>,
) -> Result<(MountKind, String), Error> {
    let path = resolve_repo_path(layer.dir, rel).map_err(|m| ctx.err(node, Some("volumes"), m))?;
    if path.is_empty() {
        return Err(ctx.err(
            node,
            Some("volumes"),
            format!("{rel}: mounting the whole layer directory is not supported"),
        ));
    }
    match layer
        .tree
        .entry(&path)
        .map_err(|e| ctx.err(node, Some("volumes"), e.to_string()))?
    {
        Some(entry) => {
            let base = path.rsplit('/').next().unwrap_or(&path);
            let source = format!("{}/{base}", entry.id);
            files.insert(
                source.clone(),
                RepoFile {
                    source: FileSource::Tree { path, kind: entry.kind },
                    owner: None,
                },
            );
            Ok((MountKind::Repo, source))
        }
        None => Ok((MountKind::Data, path)),
    }
}

/// Volumes, short syntax (`SOURCE:TARGET[:MODE]`) or long syntax.
fn parse_mount(
    node: &Node,
    ctx: &Ctx<'_>,
    known: &Known<'_>,
    layer: &Layer<'_>,
    files: &mut BTreeMap<String, RepoFile>,
) -> Result<Mount, Error> {
    let key = "volumes";
    let check_volume = |n: &Node, name: &str| -> Result<(), Error> {
        if !known.volumes.iter().any(|v| v == name) {
            return Err(ctx.err(
                n,
                Some(key),
                format!(
                    "volume {name:?} is not declared in the top-level `volumes:` section of this or an earlier layer"
                ),
            ));
        }
        Ok(())
    };
    if let Value::Map(_) = &node.value {
        check_keys(
            node,
            ctx,
            key,
            &[
                "type",
                "source",
                "target",
                "read_only",
                "bind",
                "volume",
                "tmpfs",
                "consistency",
            ],
        )?;
        let typ = node
            .get("type")
            .map(|t| scalar(t, ctx, key))
            .transpose()?
            .unwrap_or_else(|| "volume".into());
        let target = node
            .get("target")
            .map(|t| scalar(t, ctx, key))
            .transpose()?
            .ok_or_else(|| ctx.err(node, Some(key), "target: missing"))?;
        if !target.starts_with('/') {
            return Err(ctx.err(node, Some(key), format!("target {target:?} must be an absolute path")));
        }
        let source = node
            .get("source")
            .map(|t| scalar(t, ctx, key))
            .transpose()?
            .unwrap_or_default();
        let read_only = node
            .get("read_only")
            .map(|b| boolean(b, ctx, key))
            .transpose()?
            .unwrap_or(false);
        let mut m = Mount {
            kind: MountKind::Volume,
            source: source.clone(),
            target,
            read_only,
            no_create_host_path: false,
            nocopy: false,
            tmpfs_size: None,
            file_owner: None,
            content_hash: None,
        };
        match typ.as_str() {
            "bind" => {
                if let Some(b) = node.get("bind") {
                    check_keys(b, ctx, key, &["create_host_path", "propagation", "selinux"])?;
                    if b.get("propagation").is_some() || b.get("selinux").is_some() {
                        return Err(ctx.err(b, Some(key), "bind propagation and selinux options are not supported"));
                    }
                    if let Some(c) = b.get("create_host_path") {
                        m.no_create_host_path = !boolean(c, ctx, key)?;
                    }
                }
                if source.starts_with('/') {
                    m.kind = MountKind::Bind;
                } else if source.is_empty() {
                    return Err(ctx.err(node, Some(key), "source: missing for a bind mount"));
                } else {
                    let (kind, src) = relative_mount_source(&source, node, ctx, layer, files)?;
                    m.kind = kind;
                    m.source = src;
                }
            }
            "volume" => {
                if source.is_empty() {
                    return Err(ctx.err(node, Some(key), "anonymous volumes are not supported; name the volume"));
                }
                check_volume(node, &source)?;
                if let Some(v) = node.get("volume") {
                    check_keys(v, ctx, key, &["nocopy"])?;
                    if let Some(n) = v.get("nocopy") {
                        m.nocopy = boolean(n, ctx, key)?;
                    }
                }
            }
            "tmpfs" => {
                m.kind = MountKind::Tmpfs;
                m.source = String::new();
                if let Some(t) = node.get("tmpfs") {
                    check_keys(t, ctx, key, &["size", "mode"])?;
                    if t.get("mode").is_some() {
                        return Err(ctx.err(t, Some(key), "tmpfs mode is not supported; use `tmpfs: PATH:mode=...`"));
                    }
                    if let Some(s) = t.get("size") {
                        m.tmpfs_size = Some(bytes(s, ctx, key)?);
                    }
                }
            }
            other => return Err(ctx.err(node, Some(key), format!("type {other:?}: use bind, volume or tmpfs"))),
        }
        return Ok(m);
    }
    let raw = scalar(node, ctx, key)?;
    let bad = |why: String| ctx.err(node, Some(key), format!("{raw:?}: {why}"));
    let parts: Vec<&str> = raw.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        [_] => {
            return Err(bad(
                "anonymous volumes are not supported; name the volume (NAME:TARGET)".into(),
            ))
        }
        _ => return Err(bad("expected SOURCE:TARGET[:MODE]".into())),
    };
    let mut read_only = false;
    for opt in mode.unwrap_or("rw").split(',') {
        match opt {
            "rw" => {}
            "ro" => read_only = true,
            "z" | "Z" | "cached" | "delegated" | "consistent" => {}
            other => return Err(bad(format!("mode {other:?} is not supported (ro or rw)"))),
        }
    }
    if !target.starts_with('/') {
        return Err(bad("the target must be an absolute path in the container".into()));
    }
    let (kind, source) = if source.starts_with('/') {
        (MountKind::Bind, source.to_owned())
    } else if source.starts_with('.') {
        relative_mount_source(source, node, ctx, layer, files)?
    } else if let Some(rest) = source.strip_prefix("~/") {
        // As compose does: the home of the user running it (tend runs as root).
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        (MountKind::Bind, format!("{}/{rest}", home.trim_end_matches('/')))
    } else if source.starts_with('~') {
        return Err(bad(
            "only ~/PATH (the home of the user tend runs as) is supported; use an absolute path".into(),
        ));
    } else {
        check_volume(node, source)?;
        (MountKind::Volume, source.to_owned())
    };
    Ok(Mount {
        kind,
        source,
        target: target.to_owned(),
        read_only,
        no_create_host_path: false,
        nocopy: false,
        tmpfs_size: None,
        file_owner: None,
        content_hash: None,
    })
}

/// A service's `configs` entry: mounted read-only, like compose does with file-based configs.
fn parse_service_config(
    node: &Node,
    ctx: &Ctx<'_>,
    known: &Known<'_>,
    files: &mut BTreeMap<String, RepoFile>,
) -> Result<Mount, Error> {
    let key = "configs";
    let (name, target, owner) = file_reference(node, ctx, key, 0o444)?;
    let config = known.configs.get(&name).ok_or_else(|| {
        ctx.err(
            node,
            Some(key),
            format!("config {name:?} is not declared in the top-level `configs:` section"),
        )
    })?;
    let id = match &config.source {
        FileSource::Tree { path, .. } => hash_of(&("tree", path, &owner)),
        FileSource::Inline(bytes) => hash_of(&("inline", bytes, &owner)),
    };
    let target = target.unwrap_or_else(|| format!("/{name}"));
    if !target.starts_with('/') {
        return Err(ctx.err(node, Some(key), format!("target {target:?} must be an absolute path")));
    }
    let source = format!("{}/{name}", &id[..16]);
    files.insert(
        source.clone(),
        RepoFile {
            source: config.source.clone(),
            owner: owner.clone(),
        },
    );
    Ok(Mount {
        kind: MountKind::Repo,
        source,
        target,
        read_only: true,
        no_create_host_path: false,
        nocopy: false,
        tmpfs_size: None,
        file_owner: owner,
        content_hash: None,
    })
}

fn parse_healthcheck(node: &Node, ctx: &Ctx<'_>) -> Result<Healthcheck, Error> {
    let key = "healthcheck";
    let entries = map(node, ctx, key)?;
    let mut hc = Healthcheck {
        test: Vec::new(),
        interval_ns: 0,
        timeout_ns: 0,
        start_period_ns: 0,
        retries: 0,
    };
    let mut disable = false;
    for (k, v) in entries {
        let name = k.as_str().unwrap_or_default();
        let dur = |v: &Node| -> Result<i64, Error> {
            let s = scalar(v, ctx, key)?;
            parse_compose_duration(&s)
                .map_err(|m| ctx.err(v, Some(key), format!("{name}: {s:?} is not a duration ({m})")))
        };
        match name {
            "test" => {
                hc.test = match &v.value {
                    Value::Seq(items) => items
                        .iter()
                        .map(|i| scalar(i, ctx, key))
                        .collect::<Result<Vec<_>, _>>()?,
                    Value::Scalar { text, .. } => vec!["CMD-SHELL".into(), text.clone()],
                    _ => return Err(ctx.err(v, Some(key), "test: expected a string or a list")),
                };
                if !matches!(hc.test.first().map(String::as_str), Some("CMD" | "CMD-SHELL" | "NONE")) {
                    return Err(ctx.err(v, Some(key), "test: a list must start with CMD, CMD-SHELL or NONE"));
                }
            }
            "interval" => hc.interval_ns = dur(v)?,
            "timeout" => hc.timeout_ns = dur(v)?,
            "start_period" => hc.start_period_ns = dur(v)?,
            "retries" => hc.retries = integer(v, ctx, key)?,
            "disable" => disable = boolean(v, ctx, key)?,
            "start_interval" => {
                return Err(ctx.err(
                    k,
                    Some(key),
                    "start_interval needs Docker API 1.44; tend targets 1.41 engines",
                ))
            }
            other => {
                return Err(ctx.err(
                    k,
                    Some(key),
                    format!("{other:?} is not supported (test, interval, timeout, start_period, retries, disable)"),
                ))
            }
        }
    }
    if disable {
        hc.test = vec!["NONE".into()];
    } else if hc.test.is_empty() {
        return Err(ctx.err(node, Some(key), "test: missing"));
    }
    Ok(hc)
}

/// Compose durations: `1m30s`, `10s`, `500ms`, `1h`, `2us`; returned in nanoseconds.
pub fn parse_compose_duration(s: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty".into());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err("expected a number".into());
        }
        let num: f64 = rest[..num_len].parse().map_err(|_| "bad number".to_owned())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor: f64 = match unit {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            "" => return Err("missing unit (h, m, s, ms, us, ns)".into()),
            u => return Err(format!("unknown unit {u:?}")),
        };
        total = total.saturating_add((num * factor) as i64);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::tree;

    fn parse_ok(text: &str) -> ComposeFile {
        parse("compose.yaml", text, &Vars::new()).expect("valid compose")
    }

    fn parse_err(text: &str) -> Error {
        parse("compose.yaml", text, &Vars::new()).expect_err("invalid compose")
    }

    #[test]
    fn full_subset() {
        let f = parse_ok(
            r#"
services:
  web:
    image: nginx:1.27
    command: nginx -g "daemon off;"
    entrypoint: ["/docker-entrypoint.sh"]
    environment:
      A: 1
      B: "two"
      C:
    restart: unless-stopped
    labels: ["team=edge"]
    ports: ["8080:80", "127.0.0.1:9000-9001:9000-9001/udp", "443", {target: 53, published: "5353", protocol: udp, host_ip: 127.0.0.1}]
    volumes: ["data:/var/lib/x", "/etc/hosts:/etc/hosts:ro", {type: tmpfs, target: /cache, tmpfs: {size: 64m}}]
    healthcheck:
      test: ["CMD", "nc", "-z", "localhost", "80"]
      interval: 1m30s
      retries: 3
    depends_on: [db]
  db:
    image: postgres
    environment: ["POSTGRES_PASSWORD=x", "EMPTY="]
volumes:
  data: {}
"#,
        );
        assert_eq!(f.services.len(), 2);
        let web = &f.services[0];
        assert_eq!(
            web.command.as_deref(),
            Some(&["nginx".to_owned(), "-g".into(), "daemon off;".into()][..])
        );
        assert_eq!(web.environment.get("A").map(String::as_str), Some("1"));
        assert!(!web.environment.contains_key("C"));
        assert_eq!(web.labels.get("team").map(String::as_str), Some("edge"));
        assert_eq!(web.ports.len(), 5);
        assert_eq!(web.ports[1].host_ip, "127.0.0.1");
        assert_eq!(web.ports[2].host_port, "9001");
        assert_eq!(web.ports[2].protocol, "udp");
        assert_eq!(web.ports[3].host_port, "");
        assert_eq!(web.ports[4].container_port, 53);
        assert_eq!(web.volumes[0].kind, MountKind::Volume);
        assert!(web.volumes[1].read_only);
        assert_eq!(web.volumes[2].kind, MountKind::Tmpfs);
        assert_eq!(web.volumes[2].tmpfs_size, Some(64 << 20));
        let hc = web.healthcheck.as_ref().expect("healthcheck");
        assert_eq!(hc.interval_ns, 90_000_000_000);
        assert_eq!(web.dependency_names().collect::<Vec<_>>(), vec!["db"]);
        assert_eq!(f.services[1].environment.get("EMPTY").map(String::as_str), Some(""));
    }

    #[test]
    fn every_other_key() {
        let f = parse_ok(
            r#"
services:
  a:
    image: x
    container_name: my-a
    hostname: ha
    domainname: example.org
    user: "1000:1000"
    working_dir: /srv
    expose: [3000, "53/udp", "8000-8001"]
    networks:
      front: {aliases: [www], ipv4_address: 172.20.0.5}
      back:
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    devices: ["/dev/null:/dev/mynull:rwm"]
    privileged: false
    read_only: true
    init: true
    stdin_open: true
    tty: true
    tmpfs: /run
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 512}
    sysctls: {net.core.somaxconn: 1024}
    logging: {driver: json-file, options: {max-size: 10m}}
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    extra_hosts: ["db.local:10.0.0.2", "gw=10.0.0.1"]
    dns: 1.1.1.1
    dns_search: [example.org]
    shm_size: 128m
    security_opt: ["no-new-privileges:true"]
    mem_limit: 512m
    mem_reservation: 256m
    cpus: 0.5
    pids_limit: 100
    pull_policy: never
    platform: linux/amd64
    pid: host
    ipc: shareable
    group_add: [audio]
    deploy:
      update_config: {order: start-first}
      resources: {limits: {memory: 1g}}
  b:
    image: x
    network_mode: "service:a"
    depends_on:
      a: {condition: service_healthy}
networks:
  front:
    ipam: {config: [{subnet: 172.20.0.0/24}]}
  back: {}
"#,
        );
        let a = &f.services[0];
        assert_eq!(a.container_name.as_deref(), Some("my-a"));
        assert_eq!(a.expose, vec!["3000/tcp", "53/udp", "8000/tcp", "8001/tcp"]);
        assert_eq!(a.networks["front"].ipv4_address.as_deref(), Some("172.20.0.5"));
        assert!(a.networks.contains_key("back"));
        assert_eq!(a.ulimits["nofile"], (1024, 2048));
        assert_eq!(a.ulimits["nproc"], (512, 512));
        assert_eq!(a.stop_grace_period_s, Some(90));
        assert_eq!(a.extra_hosts, vec!["db.local:10.0.0.2", "gw:10.0.0.1"]);
        assert_eq!(a.dns, vec!["1.1.1.1"]);
        assert_eq!(a.shm_size, Some(128 << 20));
        assert_eq!(a.resources.memory, Some(1 << 30), "deploy limits win (later key)");
        assert_eq!(a.resources.nano_cpus, Some(500_000_000));
        assert_eq!(a.pull_policy, PullPolicy::Never);
        assert!(a.start_first && a.read_only && a.tty && a.stdin_open);
        assert_eq!(a.init, Some(true));
        assert_eq!(f.services[1].network_mode.as_deref(), Some("service:a"));
        assert_eq!(f.services[1].depends_on[0].condition, Condition::ServiceHealthy);
        assert_eq!(f.networks["front"].ipam[0].subnet.as_deref(), Some("172.20.0.0/24"));
    }

    #[test]
    fn build_is_refused_with_location() {
        let e = parse_err("services:\n  app:\n    image: x\n    build: .\n    secrets: [s]\nsecrets: {s: {file: x}}\n");
        assert_eq!(e.line, 4);
        assert_eq!(e.service.as_deref(), Some("app"));
        assert_eq!(e.key.as_deref(), Some("build"));
        let msg = e.to_string();
        assert!(
            msg.starts_with("compose.yaml:4: service \"app\": key \"build\":"),
            "{msg}"
        );
        assert!(msg.contains("publish"), "{msg}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let e = parse_err("services:\n  app:\n    image: x\n    privileged_mode: true\n");
        assert_eq!((e.line, e.key.as_deref()), (4, Some("privileged_mode")));
        let e = parse_err("services:\n  app:\n    image: x\n    deploy: {placement: {}}\n");
        assert_eq!(e.key.as_deref(), Some("deploy"));
        assert!(e.message.contains("placement"));
    }

    #[test]
    fn errors_name_location() {
        let cases = [
            ("services:\n  a:\n    image: x\n    command: [1, [2]]\n", 4, "command"),
            ("services:\n  a:\n    image: x\n    ports: [\"99999:80\"]\n", 4, "ports"),
            ("services:\n  a:\n    image: x\n    restart: sometimes\n", 4, "restart"),
            (
                "services:\n  a:\n    image: x\n    volumes: [\"undeclared:/x\"]\n",
                4,
                "volumes",
            ),
            (
                "services:\n  a:\n    image: x\n    labels: {io.tend.spec: x}\n",
                4,
                "labels",
            ),
            (
                "services:\n  a:\n    image: x\n    healthcheck: {interval: 5}\n",
                4,
                "healthcheck",
            ),
            ("services:\n  a:\n    image: x\n    networks: [nope]\n", 4, "networks"),
            ("services:\n  a:\n    image: x\n    mem_limit: lots\n", 4, "mem_limit"),
            (
                "services:\n  a:\n    image: x\n    deploy: {replicas: 3}\n",
                4,
                "deploy",
            ),
            (
                "services:\n  a:\n    image: x\n    network_mode: bogus\n",
                4,
                "network_mode",
            ),
            (
                "services:\n  a:\n    image: x\n    env_file: missing.env\n",
                4,
                "env_file",
            ),
            ("services:\n  a:\n    image: x\n    configs: [nope]\n", 4, "configs"),
            ("services:\n  a:\n    image: x\n    secrets: [s]\n", 4, "secrets"),
        ];
        for (text, line, key) in cases {
            let e = parse_err(text);
            assert_eq!((e.line, e.key.as_deref()), (line, Some(key)), "{text}: {e}");
        }
        assert!(parse_err("services:\n  a:\n    command: x\n").message.contains("image"));
    }

    #[test]
    fn top_level_keys() {
        let f = parse_ok("version: '3.8'\nname: demo\nx-common: &c {a: 1}\nservices:\n  a: {image: x}\n");
        assert_eq!(f.name.as_deref(), Some("demo"));
        assert_eq!(f.warnings.len(), 1);
        let e = parse_err("services:\n  a: {image: x}\ninclude: [x.yaml]\n");
        assert_eq!(e.key.as_deref(), Some("include"));
        assert!(parse_err("servics: {}\n").to_string().contains("servics"));
    }

    #[test]
    fn interpolation_with_vars() {
        let vars: Vars = [
            ("TAG".to_owned(), "1.2".to_owned()),
            ("FROM_ENV".to_owned(), "v".to_owned()),
        ]
        .into();
        let f = parse(
            "f.yaml",
            "services:\n  a:\n    image: \"app:${TAG}\"\n    environment: [\"X=${MISSING:-d}\", \"Y=$$HOME\", FROM_ENV]\n",
            &vars,
        )
        .expect("valid");
        assert_eq!(f.services[0].image, "app:1.2");
        assert_eq!(f.services[0].environment["X"], "d");
        assert_eq!(f.services[0].environment["Y"], "$HOME");
        assert_eq!(f.services[0].environment["FROM_ENV"], "v");
        let e = parse("f.yaml", "services:\n  a:\n    image: \"${NEED:?set it}\"\n", &vars).expect_err("required");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("NEED"));
    }

    #[test]
    fn repo_paths_env_files_and_configs_come_from_the_tree() {
        let t = tree(&[
            ("app/compose.yaml", ""),
            ("app/conf/nginx.conf", "server {}"),
            ("app/web.env", "A=1\nB=2\n"),
            ("shared/ca.pem", "pem"),
        ]);
        let vars = Vars::new();
        let layer = Layer {
            file: "app/compose.yaml",
            dir: "app",
            vars: &vars,
            tree: &t,
            inherited_volumes: &[],
            inherited_networks: &[],
            inherited_secrets: &[],
            secrets: SecretsCtx::offline(),
        };
        let f = parse_layer(
            &layer,
            "services:\n  w:\n    image: x\n    env_file: web.env\n    environment: {B: override}\n    volumes:\n      - ./conf/nginx.conf:/etc/nginx/nginx.conf:ro\n      - ./data:/data\n    configs:\n      - source: ca\n        target: /etc/ca.pem\n        mode: 0440\nconfigs:\n  ca: {file: ../shared/ca.pem}\n",
        )
        .expect("valid");
        let w = &f.services[0];
        assert_eq!(w.environment["A"], "1");
        assert_eq!(w.environment["B"], "override");
        assert_eq!(w.volumes[0].kind, MountKind::Repo);
        assert!(w.volumes[0].source.ends_with("/nginx.conf"));
        assert_eq!(w.volumes[1].kind, MountKind::Data);
        assert_eq!(w.volumes[1].source, "app/data");
        assert_eq!(w.volumes[2].kind, MountKind::Repo);
        assert_eq!(w.volumes[2].file_owner.as_ref().map(|o| o.mode), Some(0o440));
        assert!(w.volumes[2].read_only);
        assert_eq!(f.files.len(), 2);
        let nginx = &f.files[&w.volumes[0].source];
        assert_eq!(
            nginx.source,
            FileSource::Tree {
                path: "app/conf/nginx.conf".into(),
                kind: EntryKind::File
            }
        );
    }

    #[test]
    fn repo_path_resolution() {
        assert_eq!(resolve_repo_path("hosts/a", "./conf"), Ok("hosts/a/conf".into()));
        assert_eq!(resolve_repo_path("hosts/a", "../../common/x"), Ok("common/x".into()));
        assert_eq!(resolve_repo_path(".", "./x/"), Ok("x".into()));
        assert!(resolve_repo_path("a", "../../x").is_err());
    }

    #[test]
    fn hash_changes_with_spec_and_describes_change() {
        let a = parse_ok("services:\n  a: {image: \"nginx:1.25\"}\n").services.remove(0);
        let b = parse_ok("services:\n  a: {image: \"nginx:1.27\"}\n").services.remove(0);
        let a2 = parse_ok("services:\n  a:\n    image: nginx:1.25\n").services.remove(0);
        assert_eq!(a.hash(), a2.hash());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(b.describe_change(&a), "spec changed: image nginx:1.25 -> nginx:1.27");
        let c = parse_ok("services:\n  a: {image: \"nginx:1.25\", environment: {K: v}}\n")
            .services
            .remove(0);
        assert_eq!(c.describe_change(&a), "spec changed: environment (K)");
        let d = parse_ok("services:\n  a: {image: \"nginx:1.25\", command: x, tty: true}\n")
            .services
            .remove(0);
        assert_eq!(d.describe_change(&a), "spec changed: command; tty");
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            split_shell_words("a 'b c' \"d \\\"e\\\"\" f\\ g").expect("ok"),
            ["a", "b c", "d \"e\"", "f g"]
        );
        assert!(split_shell_words("'open").is_err());
        assert_eq!(split_shell_words("").expect("ok"), Vec::<String>::new());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_compose_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_compose_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_compose_duration("1.5s"), Ok(1_500_000_000));
        assert!(parse_compose_duration("10").is_err());
        assert!(parse_compose_duration("5d").is_err());
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_bytes("1GB"), Some(1 << 30));
        assert_eq!(parse_bytes("1.5k"), Some(1536));
        assert_eq!(parse_bytes("lots"), None);
    }
}
