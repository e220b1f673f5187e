//! Run a [`Plan`] through the [`Engine`], in order. Every step is idempotent, so a cycle that
//! stops halfway (crash, engine error) is finished by the next one.

use crate::desired::spec::{Condition, ServiceSpec};
use crate::desired::Desired;
use crate::docker::{container_name, Engine, Error};
use crate::plan::{Action, ContainerState, Plan, Step};
use std::time::{Duration, Instant};

/// Seconds a container gets to stop before it is killed, unless it sets `stop_grace_period`
/// (compose's default).
pub const STOP_TIMEOUT_S: i64 = 10;

/// A step that failed, and how many before it succeeded.
#[derive(Debug)]
pub struct Failed {
    /// Steps applied before the failure.
    pub done: usize,
    /// The failed step.
    pub step: Step,
    /// Why.
    pub error: Error,
}

/// Options for one apply.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to wait for a dependency's condition (healthy, completed).
    pub dependency_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dependency_timeout: Duration::from_secs(120),
        }
    }
}

/// Apply `plan` for `desired` at `revision`. Stops at the first failing step.
pub async fn apply<E: Engine>(
    engine: &E,
    desired: &Desired,
    plan: &Plan,
    revision: &str,
    opts: &Options,
) -> Result<usize, Failed> {
    for (i, step) in plan.steps.iter().enumerate() {
        log::info!(
            revision = &revision[..revision.len().min(7)], resource = resource(&step.action), step = "apply";
            "apply: {}: {}", describe(&step.action), step.reason
        );
        if let Err(error) = apply_one(engine, desired, &step.action, revision, opts).await {
            return Err(Failed {
                done: i,
                step: step.clone(),
                error,
            });
        }
    }
    Ok(plan.steps.len())
}

fn stop_timeout(spec: &ServiceSpec) -> i64 {
    spec.stop_grace_period_s.unwrap_or(STOP_TIMEOUT_S)
}

async fn apply_one<E: Engine>(
    engine: &E,
    desired: &Desired,
    action: &Action,
    revision: &str,
    opts: &Options,
) -> Result<(), Error> {
    let project = desired.project.as_str();
    match action {
        Action::CreateNetwork { network } => {
            let spec = desired.networks.get(network).ok_or_else(|| internal(network))?;
            engine.create_network(project, network, spec).await
        }
        Action::RemoveNetwork { name } => engine.remove_network(name).await,
        Action::CreateVolume { volume } => {
            let spec = desired.volumes.get(volume).ok_or_else(|| internal(volume))?;
            engine.create_volume(project, volume, spec).await
        }
        Action::Create { service } => {
            let spec = desired.services.get(service).ok_or_else(|| internal(service))?;
            wait_for_dependencies(engine, desired, spec, opts).await?;
            engine.ensure_image(spec).await?;
            let id = engine
                .create_container(desired, service, &container_name(project, spec), revision)
                .await?;
            engine.start(&id).await
        }
        Action::Replace { service, container_id } => {
            let spec = desired.services.get(service).ok_or_else(|| internal(service))?;
            // Pull first: if the registry is unreachable the old container keeps running.
            engine.ensure_image(spec).await?;
            wait_for_dependencies(engine, desired, spec, opts).await?;
            let name = container_name(project, spec);
            if spec.start_first {
                replace_start_first(engine, desired, spec, container_id, &name, revision).await
            } else {
                engine.stop(container_id, stop_timeout(spec)).await?;
                engine.remove(container_id).await?;
                let id = engine.create_container(desired, service, &name, revision).await?;
                engine.start(&id).await
            }
        }
        Action::Start { container_id, service } => {
            if let Some(spec) = desired.services.get(service) {
                wait_for_dependencies(engine, desired, spec, opts).await?;
            }
            engine.start(container_id).await
        }
        Action::Remove { container_id, .. } => {
            engine.stop(container_id, STOP_TIMEOUT_S).await?;
            engine.remove(container_id).await
        }
    }
}

/// Start the new container before stopping the old one; the old one is renamed out of the way
/// and restored if the new one cannot start.
async fn replace_start_first<E: Engine>(
    engine: &E,
    desired: &Desired,
    spec: &ServiceSpec,
    old_id: &str,
    name: &str,
    revision: &str,
) -> Result<(), Error> {
    let parked = format!("{name}-old-{}", &old_id[..old_id.len().min(12)]);
    engine.rename(old_id, &parked).await?;
    let started = async {
        let id = engine.create_container(desired, &spec.name, name, revision).await?;
        if let Err(e) = engine.start(&id).await {
            let _ = engine.remove(&id).await;
            return Err(e);
        }
        Ok(id)
    }
    .await;
    match started {
        Ok(_) => {
            engine.stop(old_id, stop_timeout(spec)).await?;
            engine.remove(old_id).await
        }
        Err(e) => {
            // Put the old one back under its name: it never stopped.
            let _ = engine.rename(old_id, name).await;
            Err(e)
        }
    }
}

/// Wait until every dependency meets its condition (`service_healthy`,
/// `service_completed_successfully`); `service_started` needs no wait (start order suffices).
async fn wait_for_dependencies<E: Engine>(
    engine: &E,
    desired: &Desired,
    spec: &ServiceSpec,
    opts: &Options,
) -> Result<(), Error> {
    for dep in &spec.depends_on {
        if dep.condition == Condition::ServiceStarted {
            continue;
        }
        let Some(dep_spec) = desired.services.get(&dep.service) else {
            continue;
        };
        if dep.condition == Condition::ServiceHealthy && dep_spec.healthcheck.is_none() {
            return Err(Error::Api {
                op: format!("start {}", spec.name),
                message: format!(
                    "depends on {} being healthy, but {} has no healthcheck",
                    dep.service, dep.service
                ),
            });
        }
        let name = container_name(&desired.project, dep_spec);
        let deadline = Instant::now() + opts.dependency_timeout;
        loop {
            // `Running` means healthy (or no healthcheck); `Starting` means not decided yet.
            let state = engine.inspect_state(&name).await?.state;
            let (met, failed) = match (dep.condition, &state) {
                (Condition::ServiceHealthy, ContainerState::Running) => (true, false),
                (
                    Condition::ServiceHealthy,
                    ContainerState::Unhealthy | ContainerState::Exited { .. } | ContainerState::Dead,
                ) => (false, true),
                (Condition::ServiceCompletedSuccessfully, ContainerState::Exited { code: 0 }) => (true, false),
                (Condition::ServiceCompletedSuccessfully, ContainerState::Exited { .. } | ContainerState::Dead) => {
                    (false, true)
                }
                _ => (false, false),
            };
            if met {
                break;
            }
            if failed {
                return Err(Error::Api {
                    op: format!("start {}", spec.name),
                    message: format!("dependency {} is {state}", dep.service),
                });
            }
            if Instant::now() >= deadline {
                let want = match dep.condition {
                    Condition::ServiceHealthy => "healthy",
                    _ => "completed successfully",
                };
                return Err(Error::Api {
                    op: format!("start {}", spec.name),
                    message: format!(
                        "dependency {} not {want} after {}s (it is {state})",
                        dep.service,
                        opts.dependency_timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

fn internal(what: &str) -> Error {
    Error::Api {
        op: format!("plan for {what}"),
        message: "not in the desired state (internal error)".into(),
    }
}

/// The resource an action concerns (service, network or volume name), for log fields.
pub fn resource(action: &Action) -> &str {
    match action {
        Action::CreateNetwork { network } => network,
        Action::RemoveNetwork { name } => name,
        Action::CreateVolume { volume } => volume,
        Action::Create { service } | Action::Replace { service, .. } | Action::Start { service, .. } => service,
        Action::Remove { name, .. } => name,
    }
}

/// A short description of an action for logs and status.
pub fn describe(action: &Action) -> String {
    match action {
        Action::CreateNetwork { network } => format!("create network {network}"),
        Action::RemoveNetwork { name } => format!("remove network {name}"),
        Action::CreateVolume { volume } => format!("create volume {volume}"),
        Action::Create { service } => format!("create {service}"),
        Action::Replace { service, .. } => format!("replace {service}"),
        Action::Start { service, .. } => format!("start {service}"),
        Action::Remove { name, .. } => format!("remove {name}"),
    }
}
