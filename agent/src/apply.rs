//! Run a [`Plan`] through the [`Engine`], in order. Every step is idempotent, so a cycle that
//! stops halfway (crash, engine error) is finished by the next one.

use crate::desired::Desired;
use crate::docker::{Engine, Error};
use crate::plan::{Action, Plan, Step};

/// Seconds a container gets to stop before it is killed (compose's default).
pub const STOP_TIMEOUT_S: i32 = 10;

/// What one applied step did.
#[derive(Debug, Clone)]
pub struct Done {
    /// The step.
    pub step: Step,
}

/// A step that failed, and the steps before it that succeeded.
#[derive(Debug)]
pub struct Failed {
    /// Steps applied before the failure.
    pub done: Vec<Done>,
    /// The failed step.
    pub step: Step,
    /// Why.
    pub error: Error,
}

/// Apply `plan` for `desired` at `revision`. Stops at the first failing step.
pub async fn apply<E: Engine>(
    engine: &E,
    desired: &Desired,
    plan: &Plan,
    revision: &str,
) -> Result<Vec<Done>, Failed> {
    let mut done = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        log::info!("apply: {}: {}", describe(&step.action), step.reason);
        if let Err(error) = apply_one(engine, desired, &step.action, revision).await {
            return Err(Failed {
                done,
                step: step.clone(),
                error,
            });
        }
        done.push(Done { step: step.clone() });
    }
    Ok(done)
}

async fn apply_one<E: Engine>(
    engine: &E,
    desired: &Desired,
    action: &Action,
    revision: &str,
) -> Result<(), Error> {
    let project = desired.project.as_str();
    match action {
        Action::CreateNetwork { name } => engine.create_network(project, name).await,
        Action::CreateVolume { volume } => engine.create_volume(project, volume).await,
        Action::Create { service } => {
            let spec = spec(desired, service)?;
            engine.ensure_image(&spec.image).await?;
            let id = engine.create_container(project, spec, revision).await?;
            engine.start(&id).await
        }
        Action::Replace {
            service,
            container_id,
        } => {
            let spec = spec(desired, service)?;
            // Pull first: if the registry is unreachable the old container keeps running.
            engine.ensure_image(&spec.image).await?;
            engine.stop(container_id, STOP_TIMEOUT_S).await?;
            engine.remove(container_id).await?;
            let id = engine.create_container(project, spec, revision).await?;
            engine.start(&id).await
        }
        Action::Start { container_id, .. } => engine.start(container_id).await,
        Action::Remove { container_id, .. } => {
            engine.stop(container_id, STOP_TIMEOUT_S).await?;
            engine.remove(container_id).await
        }
    }
}

fn spec<'d>(
    desired: &'d Desired,
    service: &str,
) -> Result<&'d crate::desired::compose::ServiceSpec, Error> {
    desired.services.get(service).ok_or_else(|| Error::Api {
        op: format!("plan for {service}"),
        message: "service not in the desired state (internal error)".into(),
    })
}

/// A short description of an action for logs and status.
pub fn describe(action: &Action) -> String {
    match action {
        Action::CreateNetwork { name } => format!("create network {name}"),
        Action::CreateVolume { volume } => format!("create volume {volume}"),
        Action::Create { service } => format!("create {service}"),
        Action::Replace { service, .. } => format!("replace {service}"),
        Action::Start { service, .. } => format!("start {service}"),
        Action::Remove { name, .. } => format!("remove {name}"),
    }
}
