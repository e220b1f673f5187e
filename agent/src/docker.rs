//! Docker Engine adapter: observe and change what tend owns, through bollard.
//!
//! The rest of tend speaks [`Engine`], in tend's own types; bollard's types stop here.

use crate::desired::spec::{MountKind, NetworkSpec, PullPolicy, ServiceSpec, VolumeSpec};
use crate::desired::Desired;
use crate::plan::{ContainerState, Observed, ObservedContainer};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, DeviceMapping, EndpointIpamConfig, EndpointSettings, HealthConfig,
    HostConfig, HostConfigLogConfig, Ipam, IpamConfig, Mount, MountTmpfsOptions, MountType, MountVolumeOptions,
    NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig, PortBinding, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Label marking everything tend creates.
pub const LABEL_MANAGED: &str = "io.tend.managed";
/// Label naming the compose service.
pub const LABEL_SERVICE: &str = "io.tend.service";
/// Label naming the project.
pub const LABEL_PROJECT: &str = "io.tend.project";
/// Label holding the spec hash (containers and networks).
pub const LABEL_SPEC: &str = "io.tend.spec";
/// Label holding the revision that created the container.
pub const LABEL_REVISION: &str = "io.tend.revision";
/// Label naming the agent instance that owns a resource (see [`agent_id`]).
pub const LABEL_AGENT: &str = "io.tend.agent";

/// The identity of one agent: derived from its host name and state directory, so it survives
/// restarts and a wiped `state.json`, while two agents (two configs on one host, or two hosts
/// sharing one engine) never touch each other's resources.
pub fn agent_id(host: &str, state_dir: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(host.as_bytes());
    h.update([0]);
    h.update(state_dir.as_os_str().as_encoded_bytes());
    hex::encode(&h.finalize()[..6])
}

/// Errors talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be reached at all.
    #[error("cannot reach the Docker engine at {socket}: {source}")]
    Connect {
        /// Socket path.
        socket: String,
        /// Cause.
        source: bollard::errors::Error,
    },
    /// An API call failed.
    #[error("docker: {op}: {message}")]
    Api {
        /// What tend was doing, e.g. `create container tend-web-1`.
        op: String,
        /// The engine's message.
        message: String,
    },
    /// A name tend needs is used by something tend does not own.
    #[error("{what} {name} already exists and is not managed by this tend agent; rename or remove it")]
    NameTaken {
        /// `container` or `network`.
        what: &'static str,
        /// The name.
        name: String,
    },
}

impl Error {
    /// Whether a later retry could succeed without any change (engine restarting, registry down).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::NameTaken { .. })
    }
}

fn api(op: impl Into<String>, e: bollard::errors::Error) -> Error {
    let message = match &e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    Error::Api { op: op.into(), message }
}

/// What tend needs from a container engine.
#[allow(async_fn_in_trait)]
pub trait Engine {
    /// Everything this agent owns: containers (all states), networks and volumes.
    async fn observe(&self) -> Result<Observed, Error>;
    /// Make sure `spec`'s image is present, pulling per its pull policy.
    async fn ensure_image(&self, spec: &ServiceSpec) -> Result<(), Error>;
    /// Create a network owned by this agent.
    async fn create_network(&self, project: &str, key: &str, spec: &NetworkSpec) -> Result<(), Error>;
    /// Remove a network this agent owns.
    async fn remove_network(&self, name: &str) -> Result<(), Error>;
    /// Create a named volume owned by this agent.
    async fn create_volume(&self, project: &str, key: &str, spec: &VolumeSpec) -> Result<(), Error>;
    /// Create (not start) the container for `service` of `desired`, under `name`; returns its id.
    async fn create_container(
        &self,
        desired: &Desired,
        service: &str,
        name: &str,
        revision: &str,
    ) -> Result<String, Error>;
    /// Start a container.
    async fn start(&self, id: &str) -> Result<(), Error>;
    /// Stop a container (its stop signal, then SIGKILL after `timeout_s`).
    async fn stop(&self, id: &str, timeout_s: i64) -> Result<(), Error>;
    /// Remove a container (never its named volumes).
    async fn remove(&self, id: &str) -> Result<(), Error>;
    /// Rename a container.
    async fn rename(&self, id: &str, name: &str) -> Result<(), Error>;
    /// Health and running state of a container, and how often the engine restarted it (its
    /// restart policy at work): for `depends_on` conditions and the health gate. One inspect.
    async fn inspect_state(&self, id: &str) -> Result<Inspected, Error>;
}

/// What one inspect of a container says about its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// Running, healthy, exited...
    pub state: ContainerState,
    /// Restarts by the engine since the container was created.
    pub restarts: i64,
}

/// Where materialized repository files and data directories live on the host.
#[derive(Debug, Clone)]
pub struct Roots {
    /// Materialized repository files (`<state>/files`).
    pub files: PathBuf,
    /// Persistent data directories for relative paths not in the repository (`<state>/data`).
    pub data: PathBuf,
    /// Decrypted secrets on tmpfs (`<runtime>/secrets`).
    pub secrets: PathBuf,
}

/// Where a service's copy of a secret lives: the shared file, or a per-service copy when the
/// service asks for its own owner and mode.
pub fn secret_path(roots: &Roots, service: &str, m: &crate::desired::spec::Mount) -> PathBuf {
    match &m.file_owner {
        None => roots.secrets.join(&m.source),
        Some(_) => roots.secrets.join(".services").join(service).join(&m.source),
    }
}

/// The real engine, through bollard.
pub struct DockerEngine {
    docker: bollard::Docker,
    agent: String,
    roots: Roots,
    credentials: BTreeMap<String, bollard::auth::DockerCredentials>,
}

/// Container name compose would use, or the service's `container_name`.
pub fn container_name(project: &str, spec: &ServiceSpec) -> String {
    spec.container_name
        .clone()
        .unwrap_or_else(|| format!("{project}-{}-1", spec.name))
}

impl DockerEngine {
    /// Connect to `socket` (or the default) and negotiate the API version. `agent` is the
    /// owning agent's [`agent_id`].
    pub async fn connect(socket: Option<&Path>, agent: &str, roots: Roots) -> Result<DockerEngine, Error> {
        let path = match socket {
            Some(p) => p.display().to_string(),
            None => std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
        };
        let connect = |e| Error::Connect {
            socket: path.clone(),
            source: e,
        };
        let docker = bollard::Docker::connect_with_socket(&path, 120, bollard::API_DEFAULT_VERSION).map_err(connect)?;
        let docker = docker.negotiate_version().await.map_err(connect)?;
        Ok(DockerEngine {
            docker,
            agent: agent.to_owned(),
            roots,
            credentials: BTreeMap::new(),
        })
    }

    /// Registry credentials by registry host (from a docker `config.json`).
    pub fn with_credentials(mut self, credentials: BTreeMap<String, bollard::auth::DockerCredentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Watch the engine's events for containers this agent owns (die, destroy, oom, stop,
    /// pause) and send a drift [`crate::daemon::Trigger`] for each, so a container killed or
    /// removed by hand is put back within seconds, not at the next drift tick. Reconnects with
    /// backoff when the engine goes away.
    pub fn spawn_event_watch(&self, tx: tokio::sync::mpsc::Sender<crate::daemon::Trigger>) {
        let docker = self.docker.clone();
        let agent = self.agent.clone();
        tokio::spawn(async move {
            let mut backoff = std::time::Duration::from_secs(1);
            loop {
                let filters = HashMap::from([
                    ("type".to_owned(), vec!["container".to_owned()]),
                    ("label".to_owned(), vec![format!("{LABEL_AGENT}={agent}")]),
                    (
                        "event".to_owned(),
                        ["die", "destroy", "oom", "stop", "pause", "kill"]
                            .map(str::to_owned)
                            .to_vec(),
                    ),
                ]);
                let mut events = docker.events(Some(bollard::query_parameters::EventsOptions {
                    filters: Some(filters),
                    ..Default::default()
                }));
                while let Some(item) = events.next().await {
                    match item {
                        Ok(ev) => {
                            backoff = std::time::Duration::from_secs(1);
                            let name = ev
                                .actor
                                .and_then(|a| a.attributes)
                                .and_then(|a| a.get("name").cloned())
                                .unwrap_or_default();
                            let what = format!("{} {name}", ev.action.unwrap_or_default());
                            if tx.send(crate::daemon::Trigger::Drift(what)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            log::debug!("docker events: {e}");
                            break;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
            }
        });
    }

    fn managed_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_AGENT}={}", self.agent)],
        )])
    }

    fn labels(&self, project: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_AGENT.to_owned(), self.agent.clone()),
            (LABEL_PROJECT.to_owned(), project.to_owned()),
            ("com.docker.compose.project".to_owned(), project.to_owned()),
        ])
    }

    async fn image_present(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    async fn pull(&self, image: &str) -> Result<(), Error> {
        let (repo, tag) = split_image(image);
        let credentials = self.credentials.get(registry_of(repo)).cloned();
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
                ..Default::default()
            }),
            None,
            credentials,
        );
        while let Some(item) = stream.next().await {
            item.map_err(|e| api(format!("pull {image}"), e))?;
        }
        Ok(())
    }
}

impl Engine for DockerEngine {
    async fn observe(&self) -> Result<Observed, Error> {
        let list = self.docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(self.managed_filter()),
            ..Default::default()
        }));
        let nets = self.docker.list_networks(Some(ListNetworksOptions {
            filters: Some(self.managed_filter()),
        }));
        let vols = self.docker.list_volumes(Some(ListVolumesOptions {
            filters: Some(self.managed_filter()),
        }));
        let (list, nets, vols) = tokio::join!(list, nets, vols);
        let list = list.map_err(|e| api("list containers", e))?;
        let mut containers = Vec::with_capacity(list.len());
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let name = c
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            let status = c.status.unwrap_or_default();
            let state = match c.state {
                Some(ContainerSummaryStateEnum::RUNNING) => {
                    if status.contains("(unhealthy)") {
                        ContainerState::Unhealthy
                    } else {
                        ContainerState::Running
                    }
                }
                Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited {
                    code: exit_code_from_status(&status),
                },
                Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
                Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
                Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
                _ => ContainerState::Dead,
            };
            containers.push(ObservedContainer {
                id: c.id.unwrap_or_default(),
                name,
                project: labels.get(LABEL_PROJECT).cloned().unwrap_or_default(),
                service: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
                spec_hash: labels.get(LABEL_SPEC).cloned().unwrap_or_default(),
                revision: labels.get(LABEL_REVISION).cloned().unwrap_or_default(),
                image_id: c.image_id.unwrap_or_default(),
                state,
                status,
            });
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        let networks = nets
            .map_err(|e| api("list networks", e))?
            .into_iter()
            .filter_map(|n| {
                let hash = n
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_SPEC))
                    .cloned()
                    .unwrap_or_default();
                n.name.map(|name| (name, hash))
            })
            .collect();
        let volumes = vols
            .map_err(|e| api("list volumes", e))?
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        Ok(Observed {
            containers,
            networks,
            volumes,
        })
    }

    async fn ensure_image(&self, spec: &ServiceSpec) -> Result<(), Error> {
        let image = spec.image.as_str();
        match spec.pull_policy {
            PullPolicy::Always => self.pull(image).await,
            PullPolicy::Missing => {
                if self.image_present(image).await {
                    Ok(())
                } else {
                    self.pull(image).await
                }
            }
            PullPolicy::Never => {
                if self.image_present(image).await {
                    Ok(())
                } else {
                    Err(Error::Api {
                        op: format!("image {image}"),
                        message: "not present on this host and pull_policy is never".into(),
                    })
                }
            }
        }
    }

    async fn create_network(&self, project: &str, key: &str, spec: &NetworkSpec) -> Result<(), Error> {
        let name = spec.name.as_str();
        // The engine allows several networks with one name; never add a second one.
        if let Ok(existing) = self
            .docker
            .inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
        {
            let labels = existing.labels.unwrap_or_default();
            if labels.get(LABEL_AGENT) == Some(&self.agent) && labels.get(LABEL_SPEC) == Some(&spec.hash()) {
                return Ok(());
            }
            return Err(Error::NameTaken {
                what: "network",
                name: name.to_owned(),
            });
        }
        let mut labels = self.labels(project);
        labels.insert("com.docker.compose.network".to_owned(), key.to_owned());
        labels.insert(LABEL_SPEC.to_owned(), spec.hash());
        labels.extend(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let ipam = (!spec.ipam.is_empty() || spec.ipam_driver.is_some()).then(|| Ipam {
            driver: spec.ipam_driver.clone(),
            config: Some(
                spec.ipam
                    .iter()
                    .map(|c| IpamConfig {
                        subnet: c.subnet.clone(),
                        ip_range: c.ip_range.clone(),
                        gateway: c.gateway.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        self.docker
            .create_network(NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some(spec.driver.clone().unwrap_or_else(|| "bridge".into())),
                internal: spec.internal.then_some(true),
                attachable: spec.attachable.then_some(true),
                enable_ipv6: spec.enable_ipv6.then_some(true),
                options: (!spec.driver_opts.is_empty())
                    .then(|| spec.driver_opts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                ipam,
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| api(format!("create network {name}"), e))
    }

    async fn remove_network(&self, name: &str) -> Result<(), Error> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(api(format!("remove network {name}"), e)),
        }
    }

    async fn create_volume(&self, project: &str, key: &str, spec: &VolumeSpec) -> Result<(), Error> {
        let mut labels = self.labels(project);
        labels.insert("com.docker.compose.volume".to_owned(), key.to_owned());
        labels.extend(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(spec.name.clone()),
                driver: spec.driver.clone(),
                driver_opts: (!spec.driver_opts.is_empty())
                    .then(|| spec.driver_opts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| api(format!("create volume {}", spec.name), e))
    }

    async fn create_container(
        &self,
        desired: &Desired,
        service: &str,
        name: &str,
        revision: &str,
    ) -> Result<String, Error> {
        let spec = desired.services.get(service).ok_or_else(|| Error::Api {
            op: format!("create {service}"),
            message: "service not in the desired state (internal error)".into(),
        })?;
        for m in &spec.volumes {
            if m.kind == MountKind::Data {
                let dir = self.roots.data.join(&desired.project).join(&m.source);
                std::fs::create_dir_all(&dir).map_err(|e| Error::Api {
                    op: format!("create data directory {}", dir.display()),
                    message: e.to_string(),
                })?;
            }
        }
        let (mut body, extra_networks) = container_body(desired, spec, revision, &self.roots);
        if let Some(labels) = body.labels.as_mut() {
            labels.insert(LABEL_AGENT.to_owned(), self.agent.clone());
        }
        let platform = spec.platform.clone().unwrap_or_default();
        let id = match self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    platform,
                }),
                body,
            )
            .await
        {
            Ok(r) => r.id,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                return Err(Error::NameTaken {
                    what: "container",
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(api(format!("create container {name}"), e)),
        };
        // API 1.41 takes one network at create time; the others are connected before start.
        for (network, endpoint) in extra_networks {
            self.docker
                .connect_network(
                    &network,
                    NetworkConnectRequest {
                        container: id.clone(),
                        endpoint_config: Some(endpoint),
                    },
                )
                .await
                .map_err(|e| api(format!("connect {name} to network {network}"), e))?;
        }
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| api(format!("start container {}", short(id)), e))
    }

    async fn stop(&self, id: &str, timeout_s: i64) -> Result<(), Error> {
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(i32::try_from(timeout_s).unwrap_or(i32::MAX)),
                    signal: None,
                }),
            )
            .await
        {
            // 304: already stopped; 404: already gone.
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("stop container {}", short(id)), e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: false,
                    link: false,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(api(format!("remove container {}", short(id)), e)),
        }
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), Error> {
        self.docker
            .rename_container(
                id,
                bollard::query_parameters::RenameContainerOptions { name: name.to_owned() },
            )
            .await
            .map_err(|e| api(format!("rename container {} to {name}", short(id)), e))
    }

    async fn inspect_state(&self, id: &str) -> Result<Inspected, Error> {
        let c = self
            .docker
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(|e| api(format!("inspect container {}", short(id)), e))?;
        let restarts = c.restart_count.unwrap_or(0);
        let st = c.state.unwrap_or_default();
        let health = st
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let state = if st.running == Some(true) {
            if health == "unhealthy" {
                ContainerState::Unhealthy
            } else if health == "starting" {
                ContainerState::Starting
            } else {
                ContainerState::Running
            }
        } else if st.restarting == Some(true) {
            ContainerState::Restarting
        } else if st.status.map(|s| s.to_string()).as_deref() == Some("created") {
            ContainerState::Created
        } else {
            ContainerState::Exited {
                code: st.exit_code.unwrap_or(0),
            }
        };
        Ok(Inspected { state, restarts })
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Split `repo[:tag][@digest]` into what the pull API wants.
fn split_image(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        let repo = repo
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map_or(repo, |(r, _)| r);
        return (repo, digest);
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// The registry host of a repository (`docker.io` when none is named).
pub fn registry_of(repo: &str) -> &str {
    match repo.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// `Exited (137) 5 seconds ago` -> 137.
fn exit_code_from_status(status: &str) -> i64 {
    status
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(code, _)| code.trim().parse().ok())
        .unwrap_or(0)
}

/// The labels tend puts on a container.
pub fn container_labels(project: &str, spec: &ServiceSpec, revision: &str) -> HashMap<String, String> {
    let hash = spec.hash();
    let mut labels: HashMap<String, String> = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.extend([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_PROJECT.to_owned(), project.to_owned()),
        (LABEL_SERVICE.to_owned(), spec.name.clone()),
        (LABEL_SPEC.to_owned(), hash.clone()),
        (LABEL_REVISION.to_owned(), revision.to_owned()),
        ("com.docker.compose.project".to_owned(), project.to_owned()),
        ("com.docker.compose.service".to_owned(), spec.name.clone()),
        ("com.docker.compose.container-number".to_owned(), "1".to_owned()),
        ("com.docker.compose.oneoff".to_owned(), "False".to_owned()),
        ("com.docker.compose.config-hash".to_owned(), hash),
        ("com.docker.compose.version".to_owned(), "1.29.2".to_owned()),
    ]);
    labels
}

/// The host path of a mount source.
fn mount_source(
    project: &str,
    kind: MountKind,
    source: &str,
    volumes: &BTreeMap<String, VolumeSpec>,
    roots: &Roots,
) -> String {
    match kind {
        MountKind::Bind => source.to_owned(),
        MountKind::Volume => volumes
            .get(source)
            .map(|v| v.name.clone())
            .unwrap_or_else(|| format!("{project}_{source}")),
        MountKind::Tmpfs => String::new(),
        MountKind::Repo => roots.files.join(source).display().to_string(),
        MountKind::Data => roots.data.join(project).join(source).display().to_string(),
        MountKind::Secret => roots.secrets.join(source).display().to_string(),
    }
}

/// The Engine API create body for a service, and the networks to connect after create.
pub fn container_body(
    desired: &Desired,
    spec: &ServiceSpec,
    revision: &str,
    roots: &Roots,
) -> (ContainerCreateBody, Vec<(String, EndpointSettings)>) {
    let project = desired.project.as_str();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed: Vec<String> = Vec::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: (!p.host_ip.is_empty()).then(|| p.host_ip.clone()),
                host_port: Some(p.host_port.clone()),
            });
    }
    for e in &spec.expose {
        if !exposed.contains(e) {
            exposed.push(e.clone());
        }
    }
    let mounts: Vec<Mount> = spec
        .volumes
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: (m.kind != MountKind::Tmpfs).then(|| match m.kind {
                MountKind::Secret => secret_path(roots, &spec.name, m).display().to_string(),
                _ => mount_source(project, m.kind, &m.source, &desired.volumes, roots),
            }),
            typ: Some(match m.kind {
                MountKind::Bind | MountKind::Repo | MountKind::Data | MountKind::Secret => MountType::BIND,
                MountKind::Volume => MountType::VOLUME,
                MountKind::Tmpfs => MountType::TMPFS,
            }),
            read_only: Some(m.read_only),
            bind_options: (m.kind == MountKind::Bind && m.no_create_host_path).then(|| {
                bollard::models::MountBindOptions {
                    create_mountpoint: Some(false),
                    ..Default::default()
                }
            }),
            volume_options: (m.kind == MountKind::Volume && m.nocopy).then(|| MountVolumeOptions {
                no_copy: Some(true),
                ..Default::default()
            }),
            tmpfs_options: m.tmpfs_size.map(|size| MountTmpfsOptions {
                size_bytes: Some(size),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let (policy, retries) = match spec.restart.as_str() {
        "always" => (RestartPolicyNameEnum::ALWAYS, None),
        "unless-stopped" => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        r if r.starts_with("on-failure") => (
            RestartPolicyNameEnum::ON_FAILURE,
            r.strip_prefix("on-failure:").and_then(|n| n.parse().ok()),
        ),
        _ => (RestartPolicyNameEnum::NO, None),
    };
    let healthcheck = spec.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: (h.interval_ns > 0).then_some(h.interval_ns),
        timeout: (h.timeout_ns > 0).then_some(h.timeout_ns),
        start_period: (h.start_period_ns > 0).then_some(h.start_period_ns),
        retries: (h.retries > 0).then_some(h.retries),
        ..Default::default()
    });
    // Networks: `network_mode`, or the declared networks (the first at create time).
    let endpoint = |key: &str| -> (String, EndpointSettings) {
        let att = spec.networks.get(key).cloned().unwrap_or_default();
        let name = desired
            .networks
            .get(key)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("{project}_{key}"));
        let mut aliases = vec![spec.name.clone()];
        aliases.extend(att.aliases.iter().cloned());
        let ipam = (att.ipv4_address.is_some() || att.ipv6_address.is_some()).then(|| EndpointIpamConfig {
            ipv4_address: att.ipv4_address.clone(),
            ipv6_address: att.ipv6_address.clone(),
            ..Default::default()
        });
        (
            name,
            EndpointSettings {
                aliases: Some(aliases),
                ipam_config: ipam,
                ..Default::default()
            },
        )
    };
    let mut network_keys: Vec<&str> = if spec.network_mode.is_some() {
        Vec::new()
    } else if spec.networks.is_empty() {
        vec!["default"]
    } else {
        spec.networks.keys().map(String::as_str).collect()
    };
    network_keys.sort_unstable();
    let mut endpoints: Vec<(String, EndpointSettings)> = network_keys.iter().map(|k| endpoint(k)).collect();
    let network_mode = match spec.network_mode.as_deref() {
        Some(m) => Some(match m.strip_prefix("service:") {
            Some(svc) => format!(
                "container:{}",
                desired
                    .services
                    .get(svc)
                    .map(|s| container_name(project, s))
                    .unwrap_or_default()
            ),
            None => m.to_owned(),
        }),
        None => endpoints.first().map(|(n, _)| n.clone()),
    };
    let first = (!endpoints.is_empty()).then(|| endpoints.remove(0));
    let devices: Vec<DeviceMapping> = spec
        .devices
        .iter()
        .map(|d| {
            let mut parts = d.splitn(3, ':');
            let host = parts.next().unwrap_or_default().to_owned();
            let container = parts.next().map(str::to_owned).unwrap_or_else(|| host.clone());
            let perms = parts.next().unwrap_or("rwm").to_owned();
            DeviceMapping {
                path_on_host: Some(host),
                path_in_container: Some(container),
                cgroup_permissions: Some(perms),
            }
        })
        .collect();
    let tmpfs: HashMap<String, String> = spec
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((p, o)) => (p.to_owned(), o.to_owned()),
            None => (t.clone(), String::new()),
        })
        .collect();
    let opt_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let r = &spec.resources;
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(
            spec.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(desired.secret_env.get(&spec.name).into_iter().flatten().map(|(k, v)| {
                    // The engine API needs the value in the create request; it never reaches
                    // tend's logs, state or labels (those hold a keyed hash).
                    format!("{k}={}", String::from_utf8_lossy(&v.0))
                }))
                .collect(),
        ),
        labels: Some(container_labels(project, spec, revision)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        hostname: spec.hostname.clone(),
        domainname: spec.domainname.clone(),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        tty: spec.tty.then_some(true),
        open_stdin: spec.stdin_open.then_some(true),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec.stop_grace_period_s,
        host_config: Some(HostConfig {
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            restart_policy: Some(RestartPolicy {
                name: Some(policy),
                maximum_retry_count: retries,
            }),
            network_mode,
            cap_add: opt_vec(&spec.cap_add),
            cap_drop: opt_vec(&spec.cap_drop),
            devices: (!devices.is_empty()).then_some(devices),
            privileged: spec.privileged.then_some(true),
            readonly_rootfs: spec.read_only.then_some(true),
            init: spec.init,
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            ulimits: (!spec.ulimits.is_empty()).then(|| {
                spec.ulimits
                    .iter()
                    .map(|(name, (soft, hard))| ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(*soft),
                        hard: Some(*hard),
                    })
                    .collect()
            }),
            sysctls: (!spec.sysctls.is_empty())
                .then(|| spec.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            log_config: spec.logging.as_ref().map(|l| HostConfigLogConfig {
                typ: (!l.driver.is_empty()).then(|| l.driver.clone()),
                config: (!l.options.is_empty())
                    .then(|| l.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            }),
            extra_hosts: opt_vec(&spec.extra_hosts),
            dns: opt_vec(&spec.dns),
            dns_search: opt_vec(&spec.dns_search),
            dns_options: opt_vec(&spec.dns_opt),
            shm_size: spec.shm_size,
            security_opt: opt_vec(&spec.security_opt),
            memory: r.memory,
            memory_reservation: r.memory_reservation,
            memory_swap: r.memswap,
            nano_cpus: r.nano_cpus,
            cpu_shares: r.cpu_shares,
            cpuset_cpus: r.cpuset.clone(),
            pids_limit: r.pids_limit,
            pid_mode: spec.pid.clone(),
            ipc_mode: spec.ipc.clone(),
            group_add: opt_vec(&spec.group_add),
            ..Default::default()
        }),
        networking_config: first.map(|(name, ep)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(name, ep)])),
        }),
        ..Default::default()
    };
    (body, endpoints)
}

/// Read registry credentials from a docker `config.json` (`auths.HOST.auth` = base64
/// `user:password`, or `username`/`password`). The file's content is never logged.
pub fn load_credentials(path: &Path) -> Result<BTreeMap<String, bollard::auth::DockerCredentials>, String> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a docker config.json ({e})", path.display()))?;
    let mut out = BTreeMap::new();
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Err(format!("{}: no `auths` section", path.display()));
    };
    for (host, entry) in auths {
        let (mut user, mut pass) = (
            entry.get("username").and_then(|v| v.as_str()).map(str::to_owned),
            entry.get("password").and_then(|v| v.as_str()).map(str::to_owned),
        );
        if let Some(auth) = entry.get("auth").and_then(|v| v.as_str()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .map_err(|_| format!("{}: auths.{host}.auth is not base64", path.display()))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| format!("{}: auths.{host}.auth is not UTF-8", path.display()))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| format!("{}: auths.{host}.auth is not user:password", path.display()))?;
            user = Some(u.to_owned());
            pass = Some(p.to_owned());
        }
        let host = host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let host = if host == "index.docker.io" {
            "docker.io".to_owned()
        } else {
            host
        };
        out.insert(
            host.clone(),
            bollard::auth::DockerCredentials {
                username: user,
                password: pass,
                serveraddress: Some(host),
                ..Default::default()
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::tree;
    use crate::desired::{load, HostFacts};

    #[test]
    fn image_split() {
        assert_eq!(split_image("nginx"), ("nginx", "latest"));
        assert_eq!(split_image("nginx:1.27"), ("nginx", "1.27"));
        assert_eq!(split_image("localhost:5000/app"), ("localhost:5000/app", "latest"));
        assert_eq!(split_image("localhost:5000/app:2"), ("localhost:5000/app", "2"));
        assert_eq!(split_image("app@sha256:abc"), ("app", "sha256:abc"));
        assert_eq!(split_image("app:1@sha256:abc"), ("app", "sha256:abc"));
        assert_eq!(registry_of("localhost:5000/app"), "localhost:5000");
        assert_eq!(registry_of("library/nginx"), "docker.io");
        assert_eq!(registry_of("ghcr.io/x/y"), "ghcr.io");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code_from_status("Exited (137) 5 seconds ago"), 137);
        assert_eq!(exit_code_from_status("Exited (0) About a minute ago"), 0);
        assert_eq!(exit_code_from_status("Created"), 0);
    }

    fn desired(compose: &str) -> Desired {
        load(
            &tree(&[("compose.yaml", compose)]),
            &[".".into()],
            &HostFacts {
                name: "h".into(),
                project: "p".into(),
            },
            crate::desired::SecretsCtx::offline(),
        )
        .expect("valid")
    }

    fn roots() -> Roots {
        Roots {
            files: "/var/lib/tend/files".into(),
            data: "/var/lib/tend/data".into(),
            secrets: "/run/tend/secrets".into(),
        }
    }

    #[test]
    fn body_maps_networks_and_modes() {
        let d = desired(
            "services:\n  a:\n    image: x\n    networks: {front: {ipv4_address: 10.5.0.9, aliases: [www]}, back: {}}\n  b:\n    image: x\n    network_mode: service:a\n  c:\n    image: x\nnetworks:\n  front: {ipam: {config: [{subnet: 10.5.0.0/24}]}}\n  back: {}\n",
        );
        let (body, extra) = container_body(&d, &d.services["a"], "r", &roots());
        let hc = body.host_config.as_ref().expect("host config");
        assert_eq!(hc.network_mode.as_deref(), Some("p_back"));
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].0, "p_front");
        assert_eq!(
            extra[0].1.ipam_config.as_ref().and_then(|c| c.ipv4_address.as_deref()),
            Some("10.5.0.9")
        );
        assert_eq!(
            extra[0].1.aliases.as_deref(),
            Some(&["a".to_owned(), "www".to_owned()][..])
        );
        let (b, extra) = container_body(&d, &d.services["b"], "r", &roots());
        assert_eq!(
            b.host_config.and_then(|h| h.network_mode).as_deref(),
            Some("container:p-a-1")
        );
        assert!(extra.is_empty() && b.networking_config.is_none());
        let (c, _) = container_body(&d, &d.services["c"], "r", &roots());
        assert_eq!(c.host_config.and_then(|h| h.network_mode).as_deref(), Some("p_default"));
        assert!(d.networks.contains_key("default"));
    }

    #[test]
    fn body_maps_mounts_and_limits() {
        let d = desired(
            "services:\n  a:\n    image: x\n    volumes: [\"data:/d\", \"./rel:/r\"]\n    mem_limit: 1g\n    cpus: 1.5\n    devices: [\"/dev/fuse\"]\n    ulimits: {nofile: 10}\n    expose: [9000]\n    ports: [\"80:8080\"]\nvolumes: {data: {}}\n",
        );
        let (body, _) = container_body(&d, &d.services["a"], "r", &roots());
        let hc = body.host_config.as_ref().expect("host config");
        let mounts = hc.mounts.as_ref().expect("mounts");
        assert_eq!(mounts[0].source.as_deref(), Some("p_data"));
        assert_eq!(mounts[1].source.as_deref(), Some("/var/lib/tend/data/p/rel"));
        assert_eq!(hc.memory, Some(1 << 30));
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        let dev = &hc.devices.as_ref().expect("devices")[0];
        assert_eq!(dev.path_in_container.as_deref(), Some("/dev/fuse"));
        let exposed = body.exposed_ports.expect("exposed");
        assert!(exposed.contains(&"9000/tcp".to_owned()) && exposed.contains(&"8080/tcp".to_owned()));
    }

    #[test]
    fn credentials_from_docker_config() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("config.json");
        std::fs::write(&p, r#"{"auths": {"localhost:5001": {"auth": "dXNlcjpwYXNz"}, "https://index.docker.io/v1/": {"username": "u", "password": "p"}}}"#).expect("write");
        let c = load_credentials(&p).expect("valid");
        assert_eq!(c["localhost:5001"].username.as_deref(), Some("user"));
        assert_eq!(c["localhost:5001"].password.as_deref(), Some("pass"));
        assert_eq!(c["docker.io"].username.as_deref(), Some("u"));
        std::fs::write(&p, "{}").expect("write");
        assert!(load_credentials(&p).is_err());
    }
}
