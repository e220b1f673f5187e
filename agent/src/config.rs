//! `/etc/tend/tend.toml`: parsing, defaults and validation. Read once at start.
//!
//! Every key is known: an unknown key or a bad value is an error that names the key, so a typo
//! never silently turns a setting off.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/tend/tend.toml";

/// Errors reading or validating the config file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("config {path}: key `{key}`: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Dotted key, e.g. `source.poll_interval`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages).
    pub path: PathBuf,
    /// Where desired state comes from.
    pub source: Source,
    /// What this host is and which layers it applies.
    pub host: Host,
    /// Where tend keeps its state and runtime files.
    pub paths: Paths,
    /// How changes are applied.
    pub apply: Apply,
    /// Docker engine connection.
    pub docker: Docker,
    /// Which commits may be applied.
    pub trust: Trust,
    /// How SOPS files are decrypted.
    pub secrets: Secrets,
    /// Where systemd units go and how systemd is reached.
    pub systemd: Systemd,
    /// Which host paths `files/` layers may write.
    pub files: Files,
    /// Where Prometheus metrics are published besides the API socket.
    pub metrics: Metrics,
    /// Who is told about each outcome.
    pub hooks: Hooks,
}

/// `[files]`: host files from the layers' `files/` directories.
#[derive(Debug, Clone)]
pub struct Files {
    /// Absolute path prefixes tend may write under (nothing when empty).
    pub allowed_prefixes: Vec<String>,
    /// Where `/` is (for tests and chroots).
    pub root: PathBuf,
}

/// `[systemd]`.
#[derive(Debug, Clone)]
pub struct Systemd {
    /// Directory unit files are written to.
    pub unit_dir: PathBuf,
    /// D-Bus address of systemd's bus; `None` for the system bus.
    pub bus: Option<String>,
    /// Take over units of the same name that tend did not write.
    pub adopt: bool,
    /// Command prefix to read a unit's journal (`journalctl`).
    pub journal_command: Vec<String>,
}

/// `[metrics]`: Prometheus metrics. Always served on the API socket at `/metrics`; these add
/// a TCP listener and a node_exporter textfile. Both off by default.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Serve `GET /metrics` on this TCP address (e.g. `127.0.0.1:9464`).
    pub listen: Option<std::net::SocketAddr>,
    /// Write the metrics to this file after each cycle (atomically), for node_exporter's
    /// textfile collector. Must end in `.prom`.
    pub textfile: Option<PathBuf>,
}

/// `[hooks]`: on each outcome (applied, refused, rolled back, drift corrected, failed), POST a
/// JSON event to `url` and/or run `command` with the event on stdin. Delivered in the
/// background, retried while they fail; the loop never waits for them.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// `http://` or `https://` URL that receives each event as a JSON POST.
    pub url: Option<String>,
    /// A command (argv, no shell) run with the event as JSON on stdin.
    pub command: Vec<String>,
    /// Which outcomes are delivered.
    pub on: Vec<String>,
    /// How long one delivery attempt may take.
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            url: None,
            command: Vec::new(),
            on: crate::events::OUTCOMES.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `[secrets]`.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// age identity files: X25519 key files and SSH private keys (e.g. the host key).
    pub age_identities: Vec<PathBuf>,
}

/// `[trust]`: the host's own trust anchors. Never read from the repository.
#[derive(Debug, Clone)]
pub struct Trust {
    /// SSH allowed-signers file (git's format).
    pub allowed_signers: Option<PathBuf>,
    /// Armored OpenPGP public keys.
    pub openpgp_keys: Option<PathBuf>,
    /// Apply unsigned commits (labs only; `tend status` says so loudly).
    pub allow_unsigned: bool,
    /// Verify only the tip, or every commit since the last applied one.
    pub require: crate::trust::Require,
}

/// `[source]`: the Git repository to follow.
#[derive(Debug, Clone)]
pub struct Source {
    /// `https://`, `http://`, `ssh://`, `file://` URL or a local path.
    pub url: String,
    /// Branch to follow.
    pub branch: String,
    /// Time between polls.
    pub poll_interval: Duration,
    /// Private key for `ssh://` sources (a deploy key).
    pub ssh_key: Option<PathBuf>,
    /// Pinned known_hosts for `ssh://` sources.
    pub known_hosts: Option<PathBuf>,
    /// Other URLs serving the same repository, tried in order when the ones before fail.
    pub mirrors: Vec<String>,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// A connection that transfers nothing for this long is dropped.
    pub stall_timeout: Duration,
    /// Hard limit for one fetch from one source, whatever the link does.
    pub fetch_timeout: Duration,
    /// Longest wait between attempts on a failing source (exponential backoff up to this).
    pub backoff_max: Duration,
    /// A directory (e.g. a USB mount) watched for `*.bundle` files.
    pub inbox: Option<PathBuf>,
    /// File with the HTTP(S) credentials (`user:password`, a token, or git-credentials URLs).
    pub https_credentials: Option<PathBuf>,
}

impl Source {
    /// The primary URL followed by the mirrors, in the order they are tried.
    pub fn urls(&self) -> Vec<String> {
        std::iter::once(self.url.clone())
            .chain(self.mirrors.iter().cloned())
            .collect()
    }
}

/// `[host]`: identity and layers.
#[derive(Debug, Clone)]
pub struct Host {
    /// Host name used in `{name}` substitution; defaults to the system hostname.
    pub name: String,
    /// Layer directories in apply order, `{name}` already substituted.
    pub layers: Vec<String>,
    /// Compose project name when the repo does not set `name:`.
    pub project: String,
}

/// `[paths]`.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Bare repository and `state.json`.
    pub state: PathBuf,
    /// Socket and decrypted secrets (tmpfs).
    pub runtime: PathBuf,
}

/// `[apply] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Apply every verified revision.
    Auto,
    /// Fetch, verify and plan; apply only after `tend approve REV`.
    Manual,
}

/// `[apply]`.
#[derive(Debug, Clone)]
pub struct Apply {
    /// `auto` or `manual`.
    pub mode: Mode,
    /// How long a new revision has to become healthy before it is rolled back.
    pub health_timeout: Duration,
    /// How long containers without a healthcheck must run without restarting to count as healthy.
    pub settle: Duration,
    /// How often the host is checked against the last good commit, offline too.
    pub drift_interval: Duration,
    /// How long to wait for an image pull or a container stop.
    pub timeout: Duration,
}

/// `[docker]`.
#[derive(Debug, Clone)]
pub struct Docker {
    /// Engine socket; `None` means the default (`DOCKER_HOST` or `/var/run/docker.sock`).
    pub socket: Option<PathBuf>,
    /// Registry credentials in docker's `config.json` format.
    pub registry_auth: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: Option<RawSource>,
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    apply: RawApply,
    #[serde(default)]
    docker: RawDocker,
    #[serde(default)]
    trust: RawTrust,
    #[serde(default)]
    secrets: RawSecrets,
    #[serde(default)]
    systemd: RawSystemd,
    #[serde(default)]
    files: RawFiles,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    hooks: RawHooks,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    allowed_prefixes: Option<Vec<String>>,
    root: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSystemd {
    unit_dir: Option<PathBuf>,
    bus: Option<String>,
    adopt: Option<bool>,
    journal_command: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    textfile: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    url: Option<String>,
    command: Option<Vec<String>>,
    on: Option<Vec<String>>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    age_identities: Option<Vec<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    allowed_signers: Option<PathBuf>,
    openpgp_keys: Option<PathBuf>,
    allow_unsigned: Option<bool>,
    require: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    url: String,
    branch: Option<String>,
    poll_interval: Option<String>,
    ssh_key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    mirrors: Option<Vec<String>>,
    connect_timeout: Option<String>,
    stall_timeout: Option<String>,
    fetch_timeout: Option<String>,
    backoff_max: Option<String>,
    inbox: Option<PathBuf>,
    https_credentials: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Option<String>,
    layers: Option<Vec<String>>,
    project: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    state: Option<PathBuf>,
    runtime: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApply {
    mode: Option<String>,
    health_timeout: Option<String>,
    settle: Option<String>,
    drift_interval: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    socket: Option<PathBuf>,
    registry_auth: Option<PathBuf>,
}

impl Config {
    /// Read and validate the config at `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text, &system_hostname())
    }

    /// Parse config text; `hostname` is the default for `host.name`.
    pub fn parse(path: &Path, text: &str, hostname: &str) -> Result<Config, Error> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        let invalid = |key: &str, message: String| Error::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let source = raw
            .source
            .ok_or_else(|| invalid("source", "missing: set [source] url = \"...\"".into()))?;
        if source.url.trim().is_empty() {
            return Err(invalid("source.url", "must not be empty".into()));
        }
        let branch = source.branch.unwrap_or_else(|| "main".into());
        if branch.is_empty() || branch.contains("..") || branch.starts_with('-') || branch.contains(' ') {
            return Err(invalid(
                "source.branch",
                format!("{branch:?} is not a valid branch name"),
            ));
        }
        let duration = |key: &str, value: Option<String>, default: Duration| -> Result<Duration, Error> {
            match value {
                None => Ok(default),
                Some(v) => {
                    let d = humantime::parse_duration(&v).map_err(|e| {
                        invalid(
                            key,
                            format!("{v:?} is not a duration ({e}); use e.g. \"60s\" or \"5m\""),
                        )
                    })?;
                    if d.is_zero() {
                        return Err(invalid(key, "must be greater than zero".into()));
                    }
                    Ok(d)
                }
            }
        };
        let poll_interval = duration("source.poll_interval", source.poll_interval, Duration::from_secs(60))?;
        let connect_timeout = duration(
            "source.connect_timeout",
            source.connect_timeout,
            Duration::from_secs(10),
        )?;
        let stall_timeout = duration("source.stall_timeout", source.stall_timeout, Duration::from_secs(30))?;
        let fetch_timeout = duration(
            "source.fetch_timeout",
            source.fetch_timeout,
            Duration::from_secs(30 * 60),
        )?;
        if fetch_timeout < connect_timeout {
            return Err(invalid(
                "source.fetch_timeout",
                "must not be shorter than source.connect_timeout".into(),
            ));
        }
        let backoff_max = duration("source.backoff_max", source.backoff_max, poll_interval)?;
        let mirrors = source.mirrors.unwrap_or_default();
        for (key, url) in
            std::iter::once(("source.url", &source.url)).chain(mirrors.iter().map(|m| ("source.mirrors", m)))
        {
            if url.trim().is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
            if has_inline_password(url) {
                return Err(invalid(
                    key,
                    format!(
                        "{}: credentials must not be written in the config; put them in a file named by source.https_credentials",
                        crate::source::redact(url)
                    ),
                ));
            }
        }
        if let Some(dup) = mirrors.iter().find(|m| **m == source.url) {
            return Err(invalid(
                "source.mirrors",
                format!("{dup:?} is already the primary source.url"),
            ));
        }
        for (key, p) in [
            ("source.inbox", &source.inbox),
            ("source.https_credentials", &source.https_credentials),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(invalid(key, format!("{} must be an absolute path", p.display())));
                }
            }
        }
        let drift_interval = duration(
            "apply.drift_interval",
            raw.apply.drift_interval,
            Duration::from_secs(30),
        )?;
        let timeout = duration("apply.timeout", raw.apply.timeout, Duration::from_secs(300))?;
        let health_timeout = duration(
            "apply.health_timeout",
            raw.apply.health_timeout,
            Duration::from_secs(120),
        )?;
        let settle = duration("apply.settle", raw.apply.settle, Duration::from_secs(10))?;
        let mode = match raw.apply.mode.as_deref() {
            None | Some("auto") => Mode::Auto,
            Some("manual") => Mode::Manual,
            Some(other) => return Err(invalid("apply.mode", format!("{other:?}: use \"auto\" or \"manual\""))),
        };

        let name = raw.host.name.unwrap_or_else(|| hostname.to_owned());
        if name.is_empty() || name.contains('/') {
            return Err(invalid("host.name", format!("{name:?} is not a valid host name")));
        }
        let templates = raw.host.layers.unwrap_or_else(|| vec![".".into()]);
        if templates.is_empty() {
            return Err(invalid("host.layers", "must list at least one layer directory".into()));
        }
        let mut layers = Vec::with_capacity(templates.len());
        for t in templates {
            let layer = t.replace("{name}", &name);
            let layer = layer.trim_matches('/').to_owned();
            let layer = if layer.is_empty() { ".".to_owned() } else { layer };
            if layer.split('/').any(|c| c == "..") || layer.contains('{') {
                return Err(invalid(
                    "host.layers",
                    format!("{t:?}: layers are directories inside the repository; only {{name}} is substituted"),
                ));
            }
            layers.push(layer);
        }
        let project = raw.host.project.unwrap_or_else(|| "tend".into());
        if !valid_project_name(&project) {
            return Err(invalid(
                "host.project",
                format!("{project:?}: use lowercase letters, digits, '-' and '_', starting with a letter or digit"),
            ));
        }
        let paths = Paths {
            state: raw.paths.state.unwrap_or_else(|| "/var/lib/tend".into()),
            runtime: raw.paths.runtime.unwrap_or_else(|| "/run/tend".into()),
        };
        for (key, p) in [("paths.state", &paths.state), ("paths.runtime", &paths.runtime)] {
            if !p.is_absolute() {
                return Err(invalid(key, format!("{} must be an absolute path", p.display())));
            }
        }
        let allow_unsigned = raw.trust.allow_unsigned.unwrap_or(false);
        if !allow_unsigned && raw.trust.allowed_signers.is_none() && raw.trust.openpgp_keys.is_none() {
            return Err(invalid(
                "trust",
                "no trust anchors: set [trust] allowed_signers and/or openpgp_keys (or allow_unsigned = true, for labs only)"
                    .into(),
            ));
        }
        let require = match raw.trust.require.as_deref() {
            None | Some("tip") => crate::trust::Require::Tip,
            Some("all") => crate::trust::Require::All,
            Some(other) => return Err(invalid("trust.require", format!("{other:?}: use \"tip\" or \"all\""))),
        };
        let metrics = parse_metrics(raw.metrics).map_err(|(k, m)| invalid(k, m))?;
        let hooks_timeout = duration("hooks.timeout", raw.hooks.timeout.clone(), Duration::from_secs(10))?;
        let hooks = parse_hooks(raw.hooks, hooks_timeout).map_err(|(k, m)| invalid(k, m))?;
        let trust = Trust {
            allowed_signers: raw.trust.allowed_signers,
            openpgp_keys: raw.trust.openpgp_keys,
            allow_unsigned,
            require,
        };
        let systemd = Systemd {
            unit_dir: raw
                .systemd
                .unit_dir
                .unwrap_or_else(|| crate::systemd::DEFAULT_UNIT_DIR.into()),
            bus: raw.systemd.bus,
            adopt: raw.systemd.adopt.unwrap_or(false),
            journal_command: raw.systemd.journal_command.unwrap_or_else(|| vec!["journalctl".into()]),
        };
        if systemd.journal_command.is_empty() {
            return Err(invalid("systemd.journal_command", "must name a command".into()));
        }
        let files = Files {
            allowed_prefixes: raw.files.allowed_prefixes.unwrap_or_default(),
            root: raw.files.root.unwrap_or_else(|| "/".into()),
        };
        for p in &files.allowed_prefixes {
            if !p.starts_with('/') || p.split('/').any(|c| c == "..") || p == "/" {
                return Err(invalid(
                    "files.allowed_prefixes",
                    format!("{p:?}: use absolute directories like \"/etc/fleet/\" (not / itself)"),
                ));
            }
        }
        Ok(Config {
            files,
            systemd,
            secrets: Secrets {
                age_identities: raw.secrets.age_identities.unwrap_or_default(),
            },
            trust,
            path: path.to_owned(),
            source: Source {
                url: source.url,
                branch,
                poll_interval,
                ssh_key: source.ssh_key,
                known_hosts: source.known_hosts,
                mirrors,
                connect_timeout,
                stall_timeout,
                fetch_timeout,
                backoff_max,
                inbox: source.inbox,
                https_credentials: source.https_credentials,
            },
            host: Host { name, layers, project },
            paths,
            apply: Apply {
                mode,
                health_timeout,
                settle,
                drift_interval,
                timeout,
            },
            docker: Docker {
                socket: raw.docker.socket,
                registry_auth: raw.docker.registry_auth,
            },
            metrics,
            hooks,
        })
    }

    /// The bare repository tend fetches into.
    pub fn repo_dir(&self) -> PathBuf {
        self.paths.state.join("repo.git")
    }

    /// Materialized repository files for bind mounts.
    pub fn files_dir(&self) -> PathBuf {
        self.paths.state.join("files")
    }

    /// Persistent data directories (relative bind mounts not in the repository).
    pub fn data_dir(&self) -> PathBuf {
        self.paths.state.join("data")
    }

    /// Decrypted secrets (tmpfs).
    pub fn secrets_dir(&self) -> PathBuf {
        self.paths.runtime.join("secrets")
    }

    /// The per-host key of keyed content hashes of secrets.
    pub fn secret_hash_key_file(&self) -> PathBuf {
        self.paths.state.join("secrets-hash.key")
    }

    /// The operator's approval of one revision in manual mode (`tend approve REV`).
    pub fn approval_file(&self) -> PathBuf {
        self.paths.state.join("approved")
    }

    /// Present while the agent is suspended (`tend suspend`).
    pub fn suspend_file(&self) -> PathBuf {
        self.paths.state.join("suspended")
    }

    /// The local API socket.
    pub fn socket(&self) -> PathBuf {
        self.paths.runtime.join("tend.sock")
    }

    /// The durable state file.
    pub fn state_file(&self) -> PathBuf {
        self.paths.state.join("state.json")
    }
}

fn parse_metrics(raw: RawMetrics) -> Result<Metrics, (&'static str, String)> {
    let listen = match raw.listen {
        None => None,
        Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|_| {
            (
                "metrics.listen",
                format!("{a:?} is not an address:port; use e.g. \"127.0.0.1:9464\""),
            )
        })?),
    };
    if let Some(t) = &raw.textfile {
        if !t.is_absolute() || t.extension().is_none_or(|e| e != "prom") {
            return Err((
                "metrics.textfile",
                format!(
                    "{}: must be an absolute path ending in .prom (node_exporter reads only *.prom)",
                    t.display()
                ),
            ));
        }
    }
    Ok(Metrics {
        listen,
        textfile: raw.textfile,
    })
}

fn parse_hooks(raw: RawHooks, timeout: Duration) -> Result<Hooks, (&'static str, String)> {
    if let Some(url) = &raw.url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(("hooks.url", format!("{url:?}: use an http:// or https:// URL")));
        }
    }
    let command = raw.command.unwrap_or_default();
    if command.first().is_some_and(|c| c.is_empty()) {
        return Err(("hooks.command", "the program (first element) must not be empty".into()));
    }
    let on = match raw.on {
        None => Hooks::default().on,
        Some(on) => {
            for o in &on {
                if !crate::events::OUTCOMES.contains(&o.as_str()) {
                    return Err((
                        "hooks.on",
                        format!(
                            "{o:?} is not an outcome; use any of {}",
                            crate::events::OUTCOMES.join(", ")
                        ),
                    ));
                }
            }
            on
        }
    };
    Ok(Hooks {
        url: raw.url,
        command,
        on,
        timeout,
    })
}

/// Whether a URL carries a password (`scheme://user:password@host/...`).
fn has_inline_password(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Compose's rule for project names.
pub fn valid_project_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '|' || c == '^' || c.is_whitespace()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The kernel's host name, or "localhost" when it cannot be read.
pub fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Error> {
        let text = if text.contains("[trust]") {
            text.to_owned()
        } else {
            format!("{text}\n[trust]\nallowed_signers = \"/etc/tend/allowed_signers\"\n")
        };
        Config::parse(Path::new("/t/tend.toml"), &text, "edge-1")
    }

    #[test]
    fn trust_anchors_are_required() {
        let e = Config::parse(Path::new("/t"), "[source]\nurl = \"x\"\n", "h").expect_err("no trust");
        assert!(e.to_string().contains("allowed_signers"), "{e}");
        let c = parse("[source]\nurl = \"x\"\n[trust]\nallow_unsigned = true\n").expect("lab");
        assert!(c.trust.allow_unsigned);
        let c = parse("[source]\nurl = \"x\"\n[trust]\nopenpgp_keys = \"/k.asc\"\nrequire = \"all\"\n").expect("all");
        assert_eq!(c.trust.require, crate::trust::Require::All);
        let e = parse("[source]\nurl = \"x\"\n[trust]\nallow_unsigned = true\nrequire = \"most\"\n").expect_err("bad");
        assert!(e.to_string().contains("trust.require"), "{e}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[source]\nurl = \"/srv/fleet.git\"\n").expect("valid");
        assert_eq!(c.source.branch, "main");
        assert_eq!(c.source.poll_interval, Duration::from_secs(60));
        assert_eq!(c.host.name, "edge-1");
        assert_eq!(c.host.layers, vec!["."]);
        assert_eq!(c.paths.state, PathBuf::from("/var/lib/tend"));
        assert_eq!(c.repo_dir(), PathBuf::from("/var/lib/tend/repo.git"));
    }

    #[test]
    fn layers_substitute_host_name() {
        let c = parse("[source]\nurl = \"x\"\n[host]\nname = \"edge-017\"\nlayers = [\"common\", \"hosts/{name}/\"]\n")
            .expect("valid");
        assert_eq!(c.host.layers, vec!["common", "hosts/edge-017"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[source]\nurl = \"x\"\npoll_intervall = \"5s\"\n").expect_err("unknown key");
        let msg = e.to_string();
        assert!(msg.contains("poll_intervall"), "{msg}");
        assert!(msg.contains("/t/tend.toml"), "{msg}");
    }

    #[test]
    fn unknown_section_is_named() {
        let e = parse("[source]\nurl = \"x\"\n[sorce]\n").expect_err("unknown section");
        assert!(e.to_string().contains("sorce"), "{e}");
    }

    #[test]
    fn bad_duration_names_key() {
        let e = parse("[source]\nurl = \"x\"\npoll_interval = \"soon\"\n").expect_err("bad duration");
        assert!(e.to_string().contains("source.poll_interval"), "{e}");
        let e = parse("[source]\nurl = \"x\"\n[apply]\ndrift_interval = \"0s\"\n").expect_err("zero");
        assert!(e.to_string().contains("apply.drift_interval"), "{e}");
    }

    #[test]
    fn missing_source_is_an_error() {
        let e = Config::parse(Path::new("/t"), "[host]\nname = \"a\"\n", "h").expect_err("no source");
        assert!(e.to_string().contains("source"), "{e}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let e = parse("[source]\nurl = 5\n").expect_err("wrong type");
        assert!(e.to_string().contains("url"), "{e}");
    }

    #[test]
    fn layer_escaping_repo_is_refused() {
        let e = parse("[source]\nurl = \"x\"\n[host]\nlayers = [\"../etc\"]\n").expect_err("escape");
        assert!(e.to_string().contains("host.layers"), "{e}");
    }

    #[test]
    fn relative_state_path_is_refused() {
        let e = parse("[source]\nurl = \"x\"\n[paths]\nstate = \"var/lib\"\n").expect_err("relative");
        assert!(e.to_string().contains("paths.state"), "{e}");
    }

    #[test]
    fn metrics_and_hooks_are_off_by_default_and_checked() {
        let c = parse("[source]\nurl = \"x\"\n").expect("valid");
        assert!(c.metrics.listen.is_none() && c.metrics.textfile.is_none());
        assert!(c.hooks.url.is_none() && c.hooks.command.is_empty());
        assert_eq!(c.hooks.on.len(), crate::events::OUTCOMES.len());
        let c = parse(
            "[source]\nurl = \"x\"\n[metrics]\nlisten = \"127.0.0.1:9464\"\n\
             textfile = \"/var/lib/prometheus/node-exporter/tend.prom\"\n\
             [hooks]\nurl = \"https://hooks.example/tend\"\ncommand = [\"/usr/local/bin/page\", \"-q\"]\n\
             on = [\"refused\", \"rolled-back\"]\ntimeout = \"3s\"\n",
        )
        .expect("valid");
        assert_eq!(c.metrics.listen.map(|a| a.port()), Some(9464));
        assert_eq!(c.hooks.command, vec!["/usr/local/bin/page", "-q"]);
        assert_eq!(c.hooks.on, vec!["refused", "rolled-back"]);
        assert_eq!(c.hooks.timeout, Duration::from_secs(3));
        for (text, key) in [
            ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
            ("[metrics]\ntextfile = \"/tmp/tend.txt\"\n", "metrics.textfile"),
            ("[hooks]\nurl = \"ftp://x\"\n", "hooks.url"),
            ("[hooks]\non = [\"deployed\"]\n", "hooks.on"),
            ("[hooks]\ncommand = [\"\"]\n", "hooks.command"),
            ("[hooks]\ntimeout = \"0s\"\n", "hooks.timeout"),
        ] {
            let e = parse(&format!("[source]\nurl = \"x\"\n{text}")).expect_err(key);
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn network_keys_have_defaults_and_are_checked() {
        let c = parse("[source]\nurl = \"https://h/x.git\"\n").expect("valid");
        assert_eq!(c.source.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.source.stall_timeout, Duration::from_secs(30));
        assert_eq!(c.source.backoff_max, c.source.poll_interval);
        assert!(c.source.mirrors.is_empty());
        assert_eq!(c.source.urls(), vec!["https://h/x.git"]);
        let c = parse(
            "[source]\nurl = \"https://h/x.git\"\nmirrors = [\"http://10.0.0.5/x.git\", \"/srv/x.git\"]\n\
             connect_timeout = \"3s\"\nstall_timeout = \"5s\"\nbackoff_max = \"10m\"\ninbox = \"/media/usb\"\n\
             https_credentials = \"/etc/tend/git-credentials\"\n",
        )
        .expect("valid");
        assert_eq!(c.source.urls().len(), 3);
        assert_eq!(c.source.backoff_max, Duration::from_secs(600));
        assert_eq!(c.source.inbox, Some(PathBuf::from("/media/usb")));
        for (text, key) in [
            ("connect_timeout = \"never\"", "source.connect_timeout"),
            ("stall_timeout = \"0s\"", "source.stall_timeout"),
            ("backoff_max = \"x\"", "source.backoff_max"),
            ("inbox = \"usb\"", "source.inbox"),
            ("https_credentials = \"creds\"", "source.https_credentials"),
            ("mirrors = [\"https://h/x.git\"]", "source.mirrors"),
            ("mirrors = [\"\"]", "source.mirrors"),
            ("fetch_timeout = \"1s\"", "source.fetch_timeout"),
        ] {
            let e = parse(&format!("[source]\nurl = \"https://h/x.git\"\n{text}\n")).expect_err(text);
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn inline_credentials_are_refused() {
        let e = parse("[source]\nurl = \"https://u:s3cret@h/x.git\"\n").expect_err("inline");
        let msg = e.to_string();
        assert!(msg.contains("source.url") && msg.contains("https_credentials"), "{msg}");
        assert!(!msg.contains("s3cret"), "the password must not be echoed: {msg}");
        let e = parse("[source]\nurl = \"/x\"\nmirrors = [\"https://u:p@m/x.git\"]\n").expect_err("inline");
        assert!(e.to_string().contains("source.mirrors"), "{e}");
        // A user name alone (ssh://git@host) is not a credential.
        parse("[source]\nurl = \"ssh://git@h:22/x.git\"\n").expect("ssh user");
    }

    #[test]
    fn project_name_is_checked() {
        assert!(valid_project_name("tend"));
        assert!(valid_project_name("edge_1-a"));
        assert!(!valid_project_name("Edge"));
        assert!(!valid_project_name("-x"));
        let e = parse("[source]\nurl = \"x\"\n[host]\nproject = \"My App\"\n").expect_err("bad");
        assert!(e.to_string().contains("host.project"), "{e}");
    }
}
