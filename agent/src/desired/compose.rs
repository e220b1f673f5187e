//! The compose model tend understands: parsing a layer's `compose.yaml` into normalised
//! [`ServiceSpec`]s, with errors that name file, line, service and key.
//!
//! Unsupported keys are errors, never silently ignored: an operator must be able to trust that
//! what the file says is what runs.

use super::interpolate::{self, Vars};
use super::yaml::{self, Node, Value};
use serde::{Deserialize, Serialize};
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
}

/// One normalised service: everything that decides how its container is created.
/// Its hash (see [`ServiceSpec::hash`]) decides replace vs keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Service name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `command`, already split into words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `entrypoint`, already split into words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment, sorted by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Restart policy: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub restart: String,
    /// User labels (tend's own labels are added at create time).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Mount>,
    /// Health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Services that start first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// A published port: `[host_ip:][host_port:]container_port[/protocol]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// Host address to bind; empty for all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    /// Host port; empty for an ephemeral port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_port: String,
    /// Container port.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// What a mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named volume (created as `<project>_<name>`).
    Volume,
}

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Bind or named volume.
    pub kind: MountKind,
    /// Absolute host path or volume name (unprefixed).
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A container health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Nanoseconds; 0 = engine default.
    pub interval_ns: i64,
    /// Nanoseconds; 0 = engine default.
    pub timeout_ns: i64,
    /// Nanoseconds; 0 = engine default.
    pub start_period_ns: i64,
    /// 0 = engine default.
    pub retries: i64,
}

impl ServiceSpec {
    /// Stable hash of the normalised spec (hex SHA-256 of its canonical JSON).
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).expect("a ServiceSpec always serialises");
        hex::encode(sha2::Sha256::digest(&json))
    }

    /// A one-line summary of what differs from `old`, for plan reasons.
    pub fn describe_change(&self, old: &ServiceSpec) -> String {
        let mut parts = Vec::new();
        if self.image != old.image {
            parts.push(format!("image {} -> {}", old.image, self.image));
        }
        let fields: [(&str, bool); 9] = [
            ("command", self.command != old.command),
            ("entrypoint", self.entrypoint != old.entrypoint),
            ("environment", self.environment != old.environment),
            ("restart", self.restart != old.restart),
            ("labels", self.labels != old.labels),
            ("ports", self.ports != old.ports),
            ("volumes", self.volumes != old.volumes),
            ("healthcheck", self.healthcheck != old.healthcheck),
            ("depends_on", self.depends_on != old.depends_on),
        ];
        for (name, changed) in fields {
            if changed {
                if name == "environment" {
                    let mut keys: Vec<&str> = self
                        .environment
                        .iter()
                        .filter(|(k, v)| old.environment.get(*k) != Some(v))
                        .map(|(k, _)| k.as_str())
                        .chain(
                            old.environment
                                .keys()
                                .filter(|k| !self.environment.contains_key(*k))
                                .map(String::as_str),
                        )
                        .collect();
                    keys.sort_unstable();
                    keys.dedup();
                    // Names only: values may be secrets.
                    parts.push(format!("environment ({})", keys.join(", ")));
                } else if name == "restart" {
                    parts.push(format!("restart {} -> {}", old.restart, self.restart));
                } else {
                    parts.push(name.to_owned());
                }
            }
        }
        if parts.is_empty() {
            "spec changed".into()
        } else {
            format!("spec changed: {}", parts.join("; "))
        }
    }
}

/// The result of parsing one compose file.
#[derive(Debug, Clone, Default)]
pub struct ComposeFile {
    /// Top-level `name:`.
    pub name: Option<String>,
    /// Services in file order.
    pub services: Vec<ServiceSpec>,
    /// Top-level named volumes (unprefixed names).
    pub volumes: Vec<String>,
    /// Non-fatal notes (obsolete `version:`, unset variables).
    pub warnings: Vec<String>,
}

const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "restart",
    "labels",
    "ports",
    "volumes",
    "healthcheck",
    "depends_on",
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
        }
    }
}

/// Parse a compose file. `file` is its repository path (for messages); `vars` are the layer's
/// `.env` values and host facts used for interpolation.
pub fn parse(file: &str, text: &str, vars: &Vars) -> Result<ComposeFile, Error> {
    parse_layer(file, text, vars, &[])
}

/// Like [`parse`], for a layer: `inherited_volumes` are named volumes declared by earlier layers,
/// which this file's services may mount.
pub fn parse_layer(
    file: &str,
    text: &str,
    vars: &Vars,
    inherited_volumes: &[String],
) -> Result<ComposeFile, Error> {
    let root = yaml::parse(text).map_err(|e| Error {
        file: file.to_owned(),
        line: e.line,
        service: None,
        key: None,
        message: format!("invalid YAML: {}", e.message),
    })?;
    let top = Ctx {
        file,
        service: None,
    };
    let mut unset = Vec::new();
    let root = interpolate_tree(root, vars, &mut unset, &top)?;
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
            "volumes" => {
                if !v.is_null() {
                    let m = v
                        .as_map()
                        .ok_or_else(|| top.err(v, Some("volumes"), format!("must be a mapping, found {}", v.kind())))?;
                    for (vk, vv) in m {
                        let vname = vk.as_str().unwrap_or_default().to_owned();
                        if !vv.is_null() && vv.as_map().is_some_and(|m| !m.is_empty()) {
                            return Err(top.err(
                                vv,
                                Some("volumes"),
                                format!("volume {vname:?}: volume options are not supported yet; declare it as `{vname}: {{}}`"),
                            ));
                        }
                        out.volumes.push(vname);
                    }
                }
            }
            k if k.starts_with("x-") => {}
            other => {
                return Err(top.err(
                    k,
                    Some(other),
                    "this top-level key is not supported (supported: services, volumes, name, version, x-*)",
                ))
            }
        }
    }
    let services = root.get("services");
    let Some(services) = services else {
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
        let mut known = out.volumes.clone();
        known.extend(inherited_volumes.iter().cloned());
        out.services.push(parse_service(&ctx, name, v, &known)?);
    }
    Ok(out)
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn interpolate_tree(
    node: Node,
    vars: &Vars,
    unset: &mut Vec<String>,
    ctx: &Ctx<'_>,
) -> Result<Node, Error> {
    let line = node.line;
    let value = match node.value {
        Value::Scalar { text, plain } => {
            let text = interpolate::interpolate(&text, vars, unset).map_err(|e| Error {
                file: ctx.file.to_owned(),
                line,
                service: None,
                key: None,
                message: e.to_string(),
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
                    // Extension fields are not interpolated by tend: they are never used.
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

fn parse_service(
    ctx: &Ctx<'_>,
    name: &str,
    node: &Node,
    top_volumes: &[String],
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
        let msg = if key == "build" {
            "tend does not build images; publish the image to a registry and set `image:` instead"
                .to_owned()
        } else {
            format!(
                "not supported by tend (supported: {})",
                SERVICE_KEYS.join(", ")
            )
        };
        return Err(ctx.err(k, Some(key), msg));
    }
    let image = match node.get("image") {
        Some(v) => scalar(v, ctx, "image")?,
        None => return Err(ctx.err(node, Some("image"), "missing: every service needs an image")),
    };
    if image.is_empty() || image.contains(char::is_whitespace) {
        return Err(ctx.err(
            node.get("image").unwrap_or(node),
            Some("image"),
            format!("{image:?} is not an image reference"),
        ));
    }
    let command = node
        .get("command")
        .map(|v| words(v, ctx, "command"))
        .transpose()?;
    let entrypoint = node
        .get("entrypoint")
        .map(|v| words(v, ctx, "entrypoint"))
        .transpose()?;
    let environment = match node.get("environment") {
        Some(v) => key_values(v, ctx, "environment")?
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
        None => BTreeMap::new(),
    };
    let restart = match node.get("restart") {
        Some(v) => {
            let r = scalar(v, ctx, "restart")?;
            let ok = matches!(
                r.as_str(),
                "no" | "always" | "unless-stopped" | "on-failure"
            ) || r
                .strip_prefix("on-failure:")
                .is_some_and(|n| n.parse::<u32>().is_ok());
            if !ok {
                return Err(ctx.err(
                    v,
                    Some("restart"),
                    format!("{r:?} is not a restart policy (no, always, unless-stopped, on-failure[:N])"),
                ));
            }
            r
        }
        None => "no".into(),
    };
    let labels = match node.get("labels") {
        Some(v) => {
            let kv = key_values(v, ctx, "labels")?;
            for k in kv.keys() {
                if k.starts_with("io.tend.") || k.starts_with("com.docker.compose.") {
                    return Err(ctx.err(
                        v,
                        Some("labels"),
                        format!("label {k:?} is reserved for tend"),
                    ));
                }
            }
            kv.into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect()
        }
        None => BTreeMap::new(),
    };
    let ports = match node.get("ports") {
        Some(v) => list(v, ctx, "ports")?
            .iter()
            .map(|p| parse_ports(p, ctx))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect(),
        None => Vec::new(),
    };
    let volumes = match node.get("volumes") {
        Some(v) => list(v, ctx, "volumes")?
            .iter()
            .map(|m| parse_mount(m, ctx, top_volumes))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let healthcheck = node
        .get("healthcheck")
        .map(|v| parse_healthcheck(v, ctx))
        .transpose()?
        .flatten();
    let depends_on = match node.get("depends_on") {
        Some(v) => {
            match &v.value {
                Value::Seq(items) => items
                    .iter()
                    .map(|i| scalar(i, ctx, "depends_on"))
                    .collect::<Result<Vec<_>, _>>()?,
                Value::Map(entries) => {
                    let mut out = Vec::new();
                    for (k, cond) in entries {
                        if let Some(c) = cond.get("condition") {
                            let c = scalar(c, ctx, "depends_on")?;
                            if c != "service_started" {
                                return Err(ctx.err(
                                cond,
                                Some("depends_on"),
                                format!("condition {c:?} is not supported yet (only service_started)"),
                            ));
                            }
                        }
                        out.push(k.as_str().unwrap_or_default().to_owned());
                    }
                    out
                }
                _ => {
                    return Err(ctx.err(
                        v,
                        Some("depends_on"),
                        format!("must be a list or a mapping, found {}", v.kind()),
                    ))
                }
            }
        }
        None => Vec::new(),
    };
    if depends_on.iter().any(|d| d == name) {
        return Err(ctx.err(
            node,
            Some("depends_on"),
            "a service cannot depend on itself",
        ));
    }
    let mut depends_on = depends_on;
    depends_on.sort();
    depends_on.dedup();
    Ok(ServiceSpec {
        name: name.to_owned(),
        image,
        command,
        entrypoint,
        environment,
        restart,
        labels,
        ports,
        volumes,
        healthcheck,
        depends_on,
    })
}

fn scalar(node: &Node, ctx: &Ctx<'_>, key: &str) -> Result<String, Error> {
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => Ok(text.clone()),
        _ => Err(ctx.err(
            node,
            Some(key),
            format!("expected a value, found {}", node.kind()),
        )),
    }
}

fn list<'n>(node: &'n Node, ctx: &Ctx<'_>, key: &str) -> Result<&'n [Node], Error> {
    node.as_seq().ok_or_else(|| {
        ctx.err(
            node,
            Some(key),
            format!("expected a list, found {}", node.kind()),
        )
    })
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

/// `environment`/`labels`: a list of `KEY=VALUE` (or `KEY`) or a mapping. A value of `None` means
/// "unset" (a bare `KEY` or a null mapping value).
fn key_values(
    node: &Node,
    ctx: &Ctx<'_>,
    key: &str,
) -> Result<BTreeMap<String, Option<String>>, Error> {
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
                            format!(
                                "{name:?}: expected a string, number or boolean, found {}",
                                v.kind()
                            ),
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

/// Short port syntax, including ranges: `[ip:][host[-host]:]container[-container][/proto]`.
fn parse_ports(node: &Node, ctx: &Ctx<'_>) -> Result<Vec<Port>, Error> {
    let raw = match &node.value {
        Value::Scalar { .. } => scalar(node, ctx, "ports")?,
        Value::Map(_) => {
            return Err(ctx.err(
                node,
                Some("ports"),
                "the long port syntax is not supported yet; use \"HOST:CONTAINER\"",
            ))
        }
        _ => {
            return Err(ctx.err(
                node,
                Some("ports"),
                format!("expected a port, found {}", node.kind()),
            ))
        }
    };
    let bad = |why: &str| ctx.err(node, Some("ports"), format!("{raw:?}: {why}"));
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
    let range = |s: &str| -> Result<(u16, u16), Error> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a
            .parse()
            .map_err(|_| bad("ports are numbers from 1 to 65535"))?;
        let b: u16 = b
            .parse()
            .map_err(|_| bad("ports are numbers from 1 to 65535"))?;
        if a == 0 || b < a {
            return Err(bad("invalid port range"));
        }
        Ok((a, b))
    };
    let (c0, c1) = range(container)?;
    let count = c1 - c0;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(range(host)?)
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

/// Short volume syntax: `SOURCE:TARGET[:ro|rw]` where SOURCE is an absolute path (bind) or a
/// declared volume name; or just `TARGET` (an anonymous volume, not supported).
fn parse_mount(node: &Node, ctx: &Ctx<'_>, top_volumes: &[String]) -> Result<Mount, Error> {
    let raw = match &node.value {
        Value::Scalar { .. } => scalar(node, ctx, "volumes")?,
        Value::Map(_) => {
            return Err(ctx.err(
                node,
                Some("volumes"),
                "the long volume syntax is not supported yet; use \"SOURCE:TARGET[:ro]\"",
            ))
        }
        _ => {
            return Err(ctx.err(
                node,
                Some("volumes"),
                format!("expected a volume, found {}", node.kind()),
            ))
        }
    };
    let bad = |why: String| ctx.err(node, Some("volumes"), format!("{raw:?}: {why}"));
    let parts: Vec<&str> = raw.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        [_] => {
            return Err(bad(
                "anonymous volumes are not supported; name the volume (NAME:TARGET)".into(),
            ))
        }
        _ => return Err(bad("expected SOURCE:TARGET[:ro|rw]".into())),
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => return Err(bad(format!("mode {m:?} is not supported (ro or rw)"))),
    };
    if !target.starts_with('/') {
        return Err(bad(
            "the target must be an absolute path in the container".into()
        ));
    }
    let kind = if source.starts_with('/') {
        MountKind::Bind
    } else if source.starts_with('.') || source.starts_with('~') {
        return Err(bad(
            "relative bind mounts are not supported yet; use an absolute host path or a named volume".into(),
        ));
    } else {
        if !top_volumes.iter().any(|v| v == source) {
            return Err(bad(format!(
                "volume {source:?} is not declared in the top-level `volumes:` section of this or an earlier layer"
            )));
        }
        MountKind::Volume
    };
    Ok(Mount {
        kind,
        source: source.to_owned(),
        target: target.to_owned(),
        read_only,
    })
}

fn parse_healthcheck(node: &Node, ctx: &Ctx<'_>) -> Result<Option<Healthcheck>, Error> {
    let entries = node.as_map().ok_or_else(|| {
        ctx.err(
            node,
            Some("healthcheck"),
            format!("expected a mapping, found {}", node.kind()),
        )
    })?;
    let mut hc = Healthcheck {
        test: Vec::new(),
        interval_ns: 0,
        timeout_ns: 0,
        start_period_ns: 0,
        retries: 0,
    };
    let mut disable = false;
    for (k, v) in entries {
        let key = k.as_str().unwrap_or_default();
        let dur = |v: &Node| -> Result<i64, Error> {
            let s = scalar(v, ctx, "healthcheck")?;
            parse_compose_duration(&s).map_err(|m| {
                ctx.err(
                    v,
                    Some("healthcheck"),
                    format!("{key}: {s:?} is not a duration ({m})"),
                )
            })
        };
        match key {
            "test" => {
                hc.test = match &v.value {
                    Value::Seq(items) => items
                        .iter()
                        .map(|i| scalar(i, ctx, "healthcheck"))
                        .collect::<Result<Vec<_>, _>>()?,
                    Value::Scalar { text, .. } => vec!["CMD-SHELL".into(), text.clone()],
                    _ => return Err(ctx.err(v, Some("healthcheck"), "test: expected a string or a list")),
                };
                if !matches!(hc.test.first().map(String::as_str), Some("CMD" | "CMD-SHELL" | "NONE")) {
                    return Err(ctx.err(v, Some("healthcheck"), "test: a list must start with CMD, CMD-SHELL or NONE"));
                }
            }
            "interval" => hc.interval_ns = dur(v)?,
            "timeout" => hc.timeout_ns = dur(v)?,
            "start_period" => hc.start_period_ns = dur(v)?,
            "retries" => {
                hc.retries = scalar(v, ctx, "healthcheck")?
                    .parse()
                    .map_err(|_| ctx.err(v, Some("healthcheck"), "retries: expected a number"))?
            }
            "disable" => disable = scalar(v, ctx, "healthcheck")? == "true",
            other => {
                return Err(ctx.err(
                    k,
                    Some("healthcheck"),
                    format!("{other:?} is not supported (test, interval, timeout, start_period, retries, disable)"),
                ))
            }
        }
    }
    if disable {
        hc.test = vec!["NONE".into()];
    } else if hc.test.is_empty() {
        return Err(ctx.err(node, Some("healthcheck"), "test: missing"));
    }
    Ok(Some(hc))
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
        let num: f64 = rest[..num_len]
            .parse()
            .map_err(|_| "bad number".to_owned())?;
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
    ports: ["8080:80", "127.0.0.1:9000-9001:9000-9001/udp", "443"]
    volumes: ["data:/var/lib/x", "/etc/hosts:/etc/hosts:ro"]
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
        assert_eq!(web.ports.len(), 4);
        assert_eq!(web.ports[1].host_ip, "127.0.0.1");
        assert_eq!(web.ports[2].host_port, "9001");
        assert_eq!(web.ports[2].protocol, "udp");
        assert_eq!(web.ports[3].host_port, "");
        assert_eq!(web.volumes[0].kind, MountKind::Volume);
        assert!(web.volumes[1].read_only);
        let hc = web.healthcheck.as_ref().expect("healthcheck");
        assert_eq!(hc.interval_ns, 90_000_000_000);
        assert_eq!(web.depends_on, vec!["db"]);
        assert_eq!(
            f.services[1].environment.get("EMPTY").map(String::as_str),
            Some("")
        );
    }

    #[test]
    fn build_is_refused_with_location() {
        let e = parse_err("services:\n  app:\n    build: .\n    image: x\n");
        assert_eq!(e.line, 3);
        assert_eq!(e.service.as_deref(), Some("app"));
        assert_eq!(e.key.as_deref(), Some("build"));
        let msg = e.to_string();
        assert!(
            msg.starts_with("compose.yaml:3: service \"app\": key \"build\":"),
            "{msg}"
        );
        assert!(msg.contains("publish"), "{msg}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let e = parse_err("services:\n  app:\n    image: x\n    privileged_mode: true\n");
        assert_eq!((e.line, e.key.as_deref()), (4, Some("privileged_mode")));
    }

    #[test]
    fn errors_name_location() {
        let cases = [
            (
                "services:\n  a:\n    image: x\n    command: [1, [2]]\n",
                4,
                "command",
            ),
            (
                "services:\n  a:\n    image: x\n    ports: [\"99999:80\"]\n",
                4,
                "ports",
            ),
            (
                "services:\n  a:\n    image: x\n    restart: sometimes\n",
                4,
                "restart",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: [\"undeclared:/x\"]\n",
                4,
                "volumes",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: [\"./rel:/x\"]\n",
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
        ];
        for (text, line, key) in cases {
            let e = parse_err(text);
            assert_eq!((e.line, e.key.as_deref()), (line, Some(key)), "{text}: {e}");
        }
        assert!(parse_err("services:\n  a:\n    command: x\n")
            .message
            .contains("image"));
    }

    #[test]
    fn top_level_keys() {
        let f = parse_ok(
            "version: '3.8'\nname: demo\nx-common: &c {a: 1}\nservices:\n  a: {image: x}\n",
        );
        assert_eq!(f.name.as_deref(), Some("demo"));
        assert_eq!(f.warnings.len(), 1);
        let e = parse_err("services:\n  a: {image: x}\nnetworks: {}\n");
        assert_eq!(e.key.as_deref(), Some("networks"));
        assert!(parse_err("servics: {}\n").to_string().contains("servics"));
    }

    #[test]
    fn interpolation_with_vars() {
        let vars: Vars = [("TAG".to_owned(), "1.2".to_owned())].into();
        let f = parse(
            "f.yaml",
            "services:\n  a:\n    image: \"app:${TAG}\"\n    environment: [\"X=${MISSING:-d}\", \"Y=$$HOME\"]\n",
            &vars,
        )
        .expect("valid");
        assert_eq!(f.services[0].image, "app:1.2");
        assert_eq!(f.services[0].environment["X"], "d");
        assert_eq!(f.services[0].environment["Y"], "$HOME");
        let e = parse(
            "f.yaml",
            "services:\n  a:\n    image: \"${NEED:?set it}\"\n",
            &vars,
        )
        .expect_err("required");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("NEED"));
    }

    #[test]
    fn hash_changes_with_spec_and_describes_change() {
        let a = parse_ok("services:\n  a: {image: \"nginx:1.25\"}\n")
            .services
            .remove(0);
        let b = parse_ok("services:\n  a: {image: \"nginx:1.27\"}\n")
            .services
            .remove(0);
        let a2 = parse_ok("services:\n  a:\n    image: nginx:1.25\n")
            .services
            .remove(0);
        assert_eq!(a.hash(), a2.hash());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(
            b.describe_change(&a),
            "spec changed: image nginx:1.25 -> nginx:1.27"
        );
        let c = parse_ok("services:\n  a: {image: \"nginx:1.25\", environment: {K: v}}\n")
            .services
            .remove(0);
        assert_eq!(c.describe_change(&a), "spec changed: environment (K)");
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
    fn durations() {
        assert_eq!(parse_compose_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_compose_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_compose_duration("1.5s"), Ok(1_500_000_000));
        assert!(parse_compose_duration("10").is_err());
        assert!(parse_compose_duration("5d").is_err());
    }
}
