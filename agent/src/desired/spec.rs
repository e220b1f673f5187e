//! The normalised model of what tend runs: services, networks, volumes. Parsing lives in
//! [`super::compose`]; this is what the planner and the engine adapter see.
//!
//! Every optional field is skipped when empty, so adding a field never changes the hash of a
//! service that does not use it (and so never recreates containers on upgrade).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn is_false(b: &bool) -> bool {
    !*b
}

/// Plaintext held in memory only: zeroized on drop, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(pub zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

/// A SOPS file declared under top-level `secrets:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// Repository path of the encrypted file.
    pub path: String,
    /// Keyed hash of the plaintext.
    pub hash: String,
    /// The plaintext (as `sops decrypt` prints it); `None` when only validated.
    pub plaintext: Option<SecretBytes>,
}

/// One normalised service: everything that decides how its container is created.
/// Its hash (see [`ServiceSpec::hash`]) decides replace vs keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
    /// Environment (from `env_file` then `environment`), sorted by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Environment from SOPS `env_file`s: variable -> keyed hash of its value. The values live
    /// only in memory ([`super::Desired::secret_env`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
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
    /// Services that start first, and what "started" means for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// Fixed container name instead of `<project>-<service>-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Container host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Container domain name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `working_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Exposed (not published) ports, `PORT/proto`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// Networks by compose key; empty with no `network_mode` means the default network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkAttachment>,
    /// `host`, `none`, `bridge`, `service:NAME`, `container:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// Added capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Dropped capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Devices: `HOST[:CONTAINER[:PERMISSIONS]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// `privileged`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// `read_only` root filesystem.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `init`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// `stdin_open`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    /// `tty`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    /// tmpfs mounts: `PATH[:OPTIONS]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// ulimits: name -> (soft, hard).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, (i64, i64)>,
    /// sysctls.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Log driver and options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Seconds to wait after the stop signal before killing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_s: Option<i64>,
    /// `extra_hosts`: `HOST:IP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// DNS options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    /// `/dev/shm` size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    /// `security_opt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Resource limits and reservations.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// When to pull the image.
    #[serde(default, skip_serializing_if = "PullPolicy::is_default")]
    pub pull_policy: PullPolicy,
    /// Replace order (`deploy.update_config.order`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub start_first: bool,
    /// `platform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `pid` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// `ipc` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    /// Extra groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
}

/// A dependency and the condition that counts as "ready".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The service depended on.
    pub service: String,
    /// `service_started`, `service_healthy` or `service_completed_successfully`.
    pub condition: Condition,
}

/// `depends_on` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Started.
    ServiceStarted,
    /// Healthy (needs a healthcheck).
    ServiceHealthy,
    /// Exited 0.
    ServiceCompletedSuccessfully,
}

/// How a service joins a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkAttachment {
    /// Extra aliases (the service name is always one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Static IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    /// Static IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

/// A published port.
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
    /// An absolute host path.
    Bind,
    /// A named volume (declared at top level).
    Volume,
    /// A tmpfs.
    Tmpfs,
    /// A path of the repository, materialized from the verified commit (read from the commit
    /// objects, replaced when its content changes). `source` is `OBJECT_ID/NAME`.
    Repo,
    /// A relative path that is not in the repository: a persistent host directory tend keeps
    /// under its state dir (`data/<project>/<path>`), created empty like compose would.
    Data,
    /// A decrypted secret (compose `secrets:`), on tmpfs under the runtime dir. `source` is the
    /// secret's name.
    Secret,
}

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// What kind.
    pub kind: MountKind,
    /// Host path, volume name (compose key), `OBJECT_ID/NAME` or relative data path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Bind: fail if the host path is missing instead of creating it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_create_host_path: bool,
    /// Volume: do not copy image data into an empty volume.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nocopy: bool,
    /// Tmpfs size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<i64>,
    /// For repo files (configs) and secrets: owner, group and mode of the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_owner: Option<FileOwner>,
    /// For secrets: keyed hash of the content, so a changed secret replaces its users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

/// Owner and mode of a materialized file (compose `configs` long syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOwner {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
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

/// Log driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logging {
    /// Driver name; empty for the engine default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Resource limits (`mem_limit`, `cpus`, ... and `deploy.resources`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// Memory reservation in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
    /// Memory + swap limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memswap: Option<i64>,
    /// CPUs in billionths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// Relative CPU weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<i64>,
    /// Allowed CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Process limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
}

impl Resources {
    /// No limit set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// When to pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull when not present (compose's default).
    #[default]
    Missing,
    /// Pull on every new revision; replace the container when the image changed.
    Always,
    /// Never pull; fail when missing.
    Never,
}

impl PullPolicy {
    fn is_default(&self) -> bool {
        *self == PullPolicy::Missing
    }
}

/// A network the project declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkSpec {
    /// Name in the engine (`<project>_<key>` unless `name:` is set).
    pub name: String,
    /// Created elsewhere; tend only attaches to it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    /// Driver (default bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Driver options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// IPAM configs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipam: Vec<IpamConfig>,
    /// IPAM driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_driver: Option<String>,
    /// `internal`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    /// `attachable`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub attachable: bool,
    /// `enable_ipv6`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_ipv6: bool,
    /// User labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One IPAM pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IpamConfig {
    /// Subnet (CIDR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Range for dynamic addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A named volume the project declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VolumeSpec {
    /// Name in the engine (`<project>_<key>` unless `name:` is set).
    pub name: String,
    /// Created elsewhere.
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    /// Driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Driver options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// User labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Hex SHA-256 of a value's canonical JSON.
pub fn hash_of<T: Serialize>(value: &T) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(value).expect("specs always serialise");
    hex::encode(sha2::Sha256::digest(&json))
}

impl NetworkSpec {
    /// Hash of the network's config: a change means the network must be recreated.
    pub fn hash(&self) -> String {
        hash_of(self)
    }
}

impl ServiceSpec {
    /// Stable hash of the normalised spec (hex SHA-256 of its canonical JSON).
    pub fn hash(&self) -> String {
        hash_of(self)
    }

    /// A one-line summary of what differs from `old`, for plan reasons. Never includes
    /// environment values (they may be secrets).
    pub fn describe_change(&self, old: &ServiceSpec) -> String {
        let mut parts = Vec::new();
        if self.image != old.image {
            parts.push(format!("image {} -> {}", old.image, self.image));
        }
        if self.restart != old.restart {
            parts.push(format!("restart {} -> {}", old.restart, self.restart));
        }
        if self.secret_env != old.secret_env {
            let mut keys: Vec<&str> = self
                .secret_env
                .iter()
                .filter(|(k, v)| old.secret_env.get(*k) != Some(v))
                .map(|(k, _)| k.as_str())
                .chain(
                    old.secret_env
                        .keys()
                        .filter(|k| !self.secret_env.contains_key(*k))
                        .map(String::as_str),
                )
                .collect();
            keys.sort_unstable();
            keys.dedup();
            parts.push(format!("secret environment ({})", keys.join(", ")));
        }
        if self.environment != old.environment {
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
            parts.push(format!("environment ({})", keys.join(", ")));
        }
        // Every other field by name, generically: compare the JSON objects key by key.
        let (new_json, old_json) = (serde_json::to_value(self), serde_json::to_value(old));
        if let (Ok(serde_json::Value::Object(n)), Ok(serde_json::Value::Object(o))) = (new_json, old_json) {
            let mut keys: Vec<&String> = n.keys().chain(o.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                if matches!(k.as_str(), "image" | "restart" | "environment" | "secret_env" | "name") {
                    continue;
                }
                if n.get(k) != o.get(k) {
                    parts.push(k.clone());
                }
            }
        }
        if parts.is_empty() {
            "spec changed".into()
        } else {
            format!("spec changed: {}", parts.join("; "))
        }
    }

    /// The services this one depends on.
    pub fn dependency_names(&self) -> impl Iterator<Item = &str> {
        self.depends_on.iter().map(|d| d.service.as_str())
    }
}
