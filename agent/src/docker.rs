//! Docker Engine adapter: observe and change what tend owns, through bollard.
//!
//! The rest of tend speaks [`Engine`], in tend's own types; bollard's types stop here.

use crate::desired::compose::{MountKind, ServiceSpec};
use crate::plan::{ContainerState, Observed, ObservedContainer};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, HealthConfig, HostConfig,
    Mount, MountType, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use std::collections::{BTreeSet, HashMap};

/// Label marking everything tend creates.
pub const LABEL_MANAGED: &str = "io.tend.managed";
/// Label naming the compose service.
pub const LABEL_SERVICE: &str = "io.tend.service";
/// Label naming the project.
pub const LABEL_PROJECT: &str = "io.tend.project";
/// Label holding the spec hash.
pub const LABEL_SPEC: &str = "io.tend.spec";
/// Label holding the revision that created the container.
pub const LABEL_REVISION: &str = "io.tend.revision";
/// Label naming the agent instance that owns a resource (see [`agent_id`]).
pub const LABEL_AGENT: &str = "io.tend.agent";

/// The identity of one agent: derived from its state directory, so it survives restarts and a
/// wiped `state.json`, while two agents with different state dirs never touch each other's
/// resources.
pub fn agent_id(state_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..6])
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
    /// A container name tend needs is used by a container tend does not own.
    #[error("container name {name} is already used by a container tend does not manage; rename or remove it")]
    NameTaken {
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
    Error::Api {
        op: op.into(),
        message,
    }
}

/// What tend needs from a container engine.
#[allow(async_fn_in_trait)]
pub trait Engine {
    /// Everything tend owns: containers (all states), networks and volumes.
    async fn observe(&self) -> Result<Observed, Error>;
    /// Make sure `image` is present, pulling it when missing.
    async fn ensure_image(&self, image: &str) -> Result<(), Error>;
    /// Create a network owned by tend.
    async fn create_network(&self, project: &str, name: &str) -> Result<(), Error>;
    /// Create a named volume owned by tend.
    async fn create_volume(&self, project: &str, volume: &str) -> Result<(), Error>;
    /// Create (not start) the container for `spec`; returns its id.
    async fn create_container(
        &self,
        project: &str,
        spec: &ServiceSpec,
        revision: &str,
    ) -> Result<String, Error>;
    /// Start a container.
    async fn start(&self, id: &str) -> Result<(), Error>;
    /// Stop a container (SIGTERM, then SIGKILL after `timeout_s`).
    async fn stop(&self, id: &str, timeout_s: i32) -> Result<(), Error>;
    /// Remove a container (never its named volumes).
    async fn remove(&self, id: &str) -> Result<(), Error>;
}

/// The real engine, through bollard.
pub struct DockerEngine {
    docker: bollard::Docker,
    agent: String,
}

/// Container name compose would use.
pub fn container_name(project: &str, service: &str) -> String {
    format!("{project}-{service}-1")
}

/// The default network compose would create.
pub fn default_network(project: &str) -> String {
    format!("{project}_default")
}

/// A named volume's engine name.
pub fn volume_name(project: &str, volume: &str) -> String {
    format!("{project}_{volume}")
}

impl DockerEngine {
    /// Connect to `socket` (or the default) and negotiate the API version. `agent` is the
    /// owning agent's [`agent_id`].
    pub async fn connect(
        socket: Option<&std::path::Path>,
        agent: &str,
    ) -> Result<DockerEngine, Error> {
        let path = match socket {
            Some(p) => p.display().to_string(),
            None => std::env::var("DOCKER_HOST")
                .unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
        };
        let connect = |e| Error::Connect {
            socket: path.clone(),
            source: e,
        };
        let docker = bollard::Docker::connect_with_socket(&path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(connect)?;
        let docker = docker.negotiate_version().await.map_err(connect)?;
        Ok(DockerEngine {
            docker,
            agent: agent.to_owned(),
        })
    }

    fn managed_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_AGENT}={}", self.agent),
            ],
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
                state,
                status,
            });
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        let networks: BTreeSet<String> = nets
            .map_err(|e| api("list networks", e))?
            .into_iter()
            .filter_map(|n| n.name)
            .collect();
        let volumes: BTreeSet<String> = vols
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

    async fn ensure_image(&self, image: &str) -> Result<(), Error> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (repo, tag) = split_image(image);
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(item) = stream.next().await {
            item.map_err(|e| api(format!("pull {image}"), e))?;
        }
        Ok(())
    }

    async fn create_network(&self, project: &str, name: &str) -> Result<(), Error> {
        // The engine allows several networks with one name; never add a second one.
        if let Ok(existing) = self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            let labels = existing.labels.unwrap_or_default();
            if labels.get(LABEL_AGENT) == Some(&self.agent) {
                return Ok(());
            }
            return Err(Error::Api {
                op: format!("create network {name}"),
                message: "a network of that name exists and is not managed by this agent; remove or rename it".into(),
            });
        }
        let mut labels = self.labels(project);
        labels.insert(
            "com.docker.compose.network".to_owned(),
            "default".to_owned(),
        );
        match self
            .docker
            .create_network(NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
        {
            Ok(_) => Ok(()),
            // Created concurrently or left by a crash: fine if it exists now.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("create network {name}"), e)),
        }
    }

    async fn create_volume(&self, project: &str, volume: &str) -> Result<(), Error> {
        let name = volume_name(project, volume);
        let mut labels = self.labels(project);
        labels.insert("com.docker.compose.volume".to_owned(), volume.to_owned());
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| api(format!("create volume {name}"), e))
    }

    async fn create_container(
        &self,
        project: &str,
        spec: &ServiceSpec,
        revision: &str,
    ) -> Result<String, Error> {
        let name = container_name(project, &spec.name);
        let mut body = container_body(project, spec, revision);
        if let Some(labels) = body.labels.as_mut() {
            labels.insert(LABEL_AGENT.to_owned(), self.agent.clone());
        }
        match self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
        {
            Ok(r) => Ok(r.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Err(Error::NameTaken { name }),
            Err(e) => Err(api(format!("create container {name}"), e)),
        }
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| api(format!("start container {}", short(id)), e))
    }

    async fn stop(&self, id: &str, timeout_s: i32) -> Result<(), Error> {
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(timeout_s),
                    signal: None,
                }),
            )
            .await
        {
            // 304: already stopped; 404: already gone.
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
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
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("remove container {}", short(id)), e)),
        }
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

/// `Exited (137) 5 seconds ago` -> 137.
fn exit_code_from_status(status: &str) -> i64 {
    status
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(code, _)| code.trim().parse().ok())
        .unwrap_or(0)
}

/// The labels tend puts on a container.
pub fn container_labels(
    project: &str,
    spec: &ServiceSpec,
    revision: &str,
) -> HashMap<String, String> {
    let hash = spec.hash();
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_PROJECT.to_owned(), project.to_owned()),
        (LABEL_SERVICE.to_owned(), spec.name.clone()),
        (LABEL_SPEC.to_owned(), hash.clone()),
        (LABEL_REVISION.to_owned(), revision.to_owned()),
        ("com.docker.compose.project".to_owned(), project.to_owned()),
        ("com.docker.compose.service".to_owned(), spec.name.clone()),
        (
            "com.docker.compose.container-number".to_owned(),
            "1".to_owned(),
        ),
        ("com.docker.compose.oneoff".to_owned(), "False".to_owned()),
        ("com.docker.compose.config-hash".to_owned(), hash),
    ]);
    labels
}

/// The Engine API create body for a service.
pub fn container_body(project: &str, spec: &ServiceSpec, revision: &str) -> ContainerCreateBody {
    let network = default_network(project);
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
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
    let mounts: Vec<Mount> = spec
        .volumes
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(match m.kind {
                MountKind::Bind => m.source.clone(),
                MountKind::Volume => volume_name(project, &m.source),
            }),
            typ: Some(match m.kind {
                MountKind::Bind => MountType::BIND,
                MountKind::Volume => MountType::VOLUME,
            }),
            read_only: Some(m.read_only),
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
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(
            spec.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        labels: Some(container_labels(project, spec, revision)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        host_config: Some(HostConfig {
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            restart_policy: Some(RestartPolicy {
                name: Some(policy),
                maximum_retry_count: retries,
            }),
            network_mode: Some(network.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network,
                EndpointSettings {
                    aliases: Some(vec![spec.name.clone()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_split() {
        assert_eq!(split_image("nginx"), ("nginx", "latest"));
        assert_eq!(split_image("nginx:1.27"), ("nginx", "1.27"));
        assert_eq!(
            split_image("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/app:2"),
            ("localhost:5000/app", "2")
        );
        assert_eq!(split_image("app@sha256:abc"), ("app", "sha256:abc"));
        assert_eq!(split_image("app:1@sha256:abc"), ("app", "sha256:abc"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code_from_status("Exited (137) 5 seconds ago"), 137);
        assert_eq!(exit_code_from_status("Exited (0) About a minute ago"), 0);
        assert_eq!(exit_code_from_status("Created"), 0);
    }

    #[test]
    fn names_follow_compose() {
        assert_eq!(container_name("demo", "web"), "demo-web-1");
        assert_eq!(default_network("demo"), "demo_default");
        assert_eq!(volume_name("demo", "data"), "demo_data");
    }
}
