//! `plan(&Desired, &Observed) -> Plan`: the pure decision of what to change. No I/O here, so
//! every rule is a table test.

use crate::desired::compose::ServiceSpec;
use crate::desired::Desired;
use crate::docker::{container_name, default_network, volume_name};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A container's state as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ContainerState {
    /// Running (and not reported unhealthy).
    Running,
    /// Running but its health check fails.
    Unhealthy,
    /// Exited with a code.
    Exited {
        /// Exit code.
        code: i64,
    },
    /// Created, never started.
    Created,
    /// Restarting (crash loop or restart policy).
    Restarting,
    /// Paused.
    Paused,
    /// Dead or being removed.
    Dead,
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerState::Running => f.write_str("running"),
            ContainerState::Unhealthy => f.write_str("unhealthy"),
            ContainerState::Exited { code } => write!(f, "exited ({code})"),
            ContainerState::Created => f.write_str("created"),
            ContainerState::Restarting => f.write_str("restarting"),
            ContainerState::Paused => f.write_str("paused"),
            ContainerState::Dead => f.write_str("dead"),
        }
    }
}

/// A container tend owns, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedContainer {
    /// Engine id.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// `io.tend.project`.
    pub project: String,
    /// `io.tend.service`.
    pub service: String,
    /// `io.tend.spec`.
    pub spec_hash: String,
    /// `io.tend.revision`.
    pub revision: String,
    /// State.
    pub state: ContainerState,
    /// The engine's human status, e.g. `Up 5 minutes`.
    pub status: String,
}

/// Everything tend owns on the host right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Owned containers, any state.
    pub containers: Vec<ObservedContainer>,
    /// Owned networks by name.
    pub networks: BTreeSet<String>,
    /// Owned volumes by engine name.
    pub volumes: BTreeSet<String>,
}

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create the project's default network.
    CreateNetwork {
        /// Network name.
        name: String,
    },
    /// Create a named volume.
    CreateVolume {
        /// Volume name as declared (unprefixed).
        volume: String,
    },
    /// Create and start a service's container.
    Create {
        /// Service.
        service: String,
    },
    /// Replace a service's container (stop, remove, create, start).
    Replace {
        /// Service.
        service: String,
        /// The container being replaced.
        container_id: String,
    },
    /// Start a service's existing container.
    Start {
        /// Service.
        service: String,
        /// Container.
        container_id: String,
    },
    /// Stop and remove a container tend owns that is no longer declared.
    Remove {
        /// Container name (for messages).
        name: String,
        /// Container.
        container_id: String,
    },
}

/// An action and why it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
    /// Why, for status, logs and `tend diff`.
    pub reason: String,
}

/// The ordered list of changes. Empty means the host matches the revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Steps in apply order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Decide what to change so the host matches `desired`.
///
/// `previous` maps spec hashes of earlier applied services to their specs, only to explain
/// replacements ("image a -> b"); the decision never depends on it.
pub fn plan(
    desired: &Desired,
    observed: &Observed,
    previous: &BTreeMap<String, ServiceSpec>,
) -> Plan {
    let mut steps = Vec::new();
    let project = desired.project.as_str();

    // Containers tend owns that this revision does not declare (other project, removed service,
    // or an extra copy of a declared one): removed first, so their names and ports are free.
    let mut keep: BTreeMap<&str, &ObservedContainer> = BTreeMap::new();
    for c in &observed.containers {
        let declared = c.project == project && desired.services.contains_key(&c.service);
        let canonical = declared && c.name == container_name(project, &c.service);
        if canonical && !keep.contains_key(c.service.as_str()) {
            keep.insert(c.service.as_str(), c);
            continue;
        }
        let reason = if !declared {
            if c.project != project {
                format!("project {:?} is no longer declared", c.project)
            } else {
                format!("service {:?} is no longer declared", c.service)
            }
        } else {
            format!("duplicate container for service {:?}", c.service)
        };
        steps.push(Step {
            action: Action::Remove {
                name: c.name.clone(),
                container_id: c.id.clone(),
            },
            reason,
        });
    }

    if !desired.services.is_empty() {
        let network = default_network(project);
        if !observed.networks.contains(&network) {
            steps.push(Step {
                action: Action::CreateNetwork { name: network },
                reason: "project network missing".into(),
            });
        }
    }
    for v in &desired.volumes {
        if !observed.volumes.contains(&volume_name(project, v)) {
            steps.push(Step {
                action: Action::CreateVolume { volume: v.clone() },
                reason: "declared volume missing".into(),
            });
        }
    }

    for service in &desired.start_order {
        let Some(spec) = desired.services.get(service) else {
            continue;
        };
        let hash = spec.hash();
        match keep.get(service.as_str()) {
            None => steps.push(Step {
                action: Action::Create {
                    service: service.clone(),
                },
                reason: if observed
                    .containers
                    .iter()
                    .any(|c| c.service == *service && c.project == project)
                {
                    "container has a non-standard name".into()
                } else {
                    "container missing".into()
                },
            }),
            Some(c) if c.spec_hash != hash => steps.push(Step {
                action: Action::Replace {
                    service: service.clone(),
                    container_id: c.id.clone(),
                },
                reason: match previous.get(&c.spec_hash) {
                    Some(old) => spec.describe_change(old),
                    None => "spec changed".into(),
                },
            }),
            Some(c) => match &c.state {
                ContainerState::Running
                | ContainerState::Unhealthy
                | ContainerState::Restarting => {}
                ContainerState::Exited { code: 0 } if spec.restart == "no" => {
                    // A one-shot service that finished: done, not drift.
                }
                ContainerState::Paused => steps.push(Step {
                    action: Action::Replace {
                        service: service.clone(),
                        container_id: c.id.clone(),
                    },
                    reason: "container was paused".into(),
                }),
                ContainerState::Dead => steps.push(Step {
                    action: Action::Replace {
                        service: service.clone(),
                        container_id: c.id.clone(),
                    },
                    reason: "container is dead".into(),
                }),
                state => steps.push(Step {
                    action: Action::Start {
                        service: service.clone(),
                        container_id: c.id.clone(),
                    },
                    reason: format!("container is {state}"),
                }),
            },
        }
    }
    Plan { steps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::tree;
    use crate::desired::{load, HostFacts};

    fn desired(compose: &str) -> Desired {
        let t = tree(&[("compose.yaml", compose)]);
        load(
            &t,
            &[".".into()],
            &HostFacts {
                name: "h".into(),
                project: "p".into(),
            },
        )
        .expect("valid desired state")
    }

    fn running(d: &Desired, service: &str) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{service}"),
            name: container_name(&d.project, service),
            project: d.project.clone(),
            service: service.into(),
            spec_hash: d.services[service].hash(),
            revision: "r1".into(),
            state: ContainerState::Running,
            status: "Up".into(),
        }
    }

    fn converged(d: &Desired) -> Observed {
        Observed {
            containers: d.services.keys().map(|s| running(d, s)).collect(),
            networks: [default_network(&d.project)].into(),
            volumes: d
                .volumes
                .iter()
                .map(|v| volume_name(&d.project, v))
                .collect(),
        }
    }

    const TWO: &str = "services:\n  web: {image: \"nginx:1.25\", depends_on: [db], volumes: [\"data:/d\"]}\n  db: {image: pg}\nvolumes: {data: {}}\n";

    #[test]
    fn empty_host_creates_everything_in_order() {
        let d = desired(TWO);
        let p = plan(&d, &Observed::default(), &BTreeMap::new());
        let actions: Vec<&Action> = p.steps.iter().map(|s| &s.action).collect();
        assert_eq!(
            actions,
            vec![
                &Action::CreateNetwork {
                    name: "p_default".into()
                },
                &Action::CreateVolume {
                    volume: "data".into()
                },
                &Action::Create {
                    service: "db".into()
                },
                &Action::Create {
                    service: "web".into()
                },
            ]
        );
        assert_eq!(p.steps[2].reason, "container missing");
    }

    #[test]
    fn converged_host_is_a_no_op() {
        let d = desired(TWO);
        assert!(plan(&d, &converged(&d), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn changed_spec_replaces_only_that_service_with_reason() {
        let old = desired(TWO);
        let new = desired(&TWO.replace("nginx:1.25", "nginx:1.27"));
        let previous: BTreeMap<String, ServiceSpec> = old
            .services
            .values()
            .map(|s| (s.hash(), s.clone()))
            .collect();
        let p = plan(&new, &converged(&old), &previous);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(
            p.steps[0].action,
            Action::Replace {
                service: "web".into(),
                container_id: "id-web".into()
            }
        );
        assert_eq!(
            p.steps[0].reason,
            "spec changed: image nginx:1.25 -> nginx:1.27"
        );
        // Without history the reason is still given.
        assert_eq!(
            plan(&new, &converged(&old), &BTreeMap::new()).steps[0].reason,
            "spec changed"
        );
    }

    #[test]
    fn undeclared_service_is_removed_first() {
        let old = desired(TWO);
        let new = desired("services:\n  db: {image: pg}\n");
        let p = plan(&new, &converged(&old), &BTreeMap::new());
        assert_eq!(
            p.steps,
            vec![Step {
                action: Action::Remove {
                    name: "p-web-1".into(),
                    container_id: "id-web".into()
                },
                reason: "service \"web\" is no longer declared".into()
            }]
        );
    }

    #[test]
    fn drift_cases() {
        let d = desired(TWO);
        let cases: Vec<(ContainerState, Option<&str>)> = vec![
            (ContainerState::Running, None),
            (ContainerState::Unhealthy, None),
            (ContainerState::Exited { code: 137 }, Some("start")),
            (ContainerState::Exited { code: 0 }, None),
            (ContainerState::Created, Some("start")),
            (ContainerState::Paused, Some("replace")),
            (ContainerState::Dead, Some("replace")),
        ];
        for (state, want) in cases {
            let mut o = converged(&d);
            o.containers
                .iter_mut()
                .filter(|c| c.service == "db")
                .for_each(|c| c.state = state.clone());
            let p = plan(&d, &o, &BTreeMap::new());
            let got = p.steps.first().map(|s| match s.action {
                Action::Start { .. } => "start",
                Action::Replace { .. } => "replace",
                _ => "other",
            });
            assert_eq!(got, want, "state {state:?}");
        }
    }

    #[test]
    fn exited_zero_with_restart_policy_is_restarted() {
        let d = desired("services:\n  a: {image: x, restart: always}\n");
        let mut o = converged(&d);
        o.containers[0].state = ContainerState::Exited { code: 0 };
        let p = plan(&d, &o, &BTreeMap::new());
        assert!(matches!(p.steps[0].action, Action::Start { .. }));
        assert_eq!(p.steps[0].reason, "container is exited (0)");
    }

    #[test]
    fn removed_container_is_recreated() {
        let d = desired(TWO);
        let mut o = converged(&d);
        o.containers.retain(|c| c.service != "web");
        let p = plan(&d, &o, &BTreeMap::new());
        assert_eq!(p.steps.len(), 1);
        assert_eq!(
            p.steps[0].action,
            Action::Create {
                service: "web".into()
            }
        );
    }

    #[test]
    fn duplicates_and_other_projects_are_removed() {
        let d = desired(TWO);
        let mut o = converged(&d);
        let mut dup = running(&d, "db");
        dup.id = "id-dup".into();
        dup.name = "p-db-2".into();
        let mut other = running(&d, "db");
        other.id = "id-other".into();
        other.project = "old".into();
        other.name = "old-db-1".into();
        o.containers.push(dup);
        o.containers.push(other);
        let p = plan(&d, &o, &BTreeMap::new());
        let removed: Vec<&str> = p
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Remove { container_id, .. } => Some(container_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec!["id-dup", "id-other"]);
        assert_eq!(p.steps.len(), 2);
    }

    #[test]
    fn missing_network_and_volume_are_created() {
        let d = desired(TWO);
        let mut o = converged(&d);
        o.networks.clear();
        o.volumes.clear();
        let p = plan(&d, &o, &BTreeMap::new());
        assert_eq!(p.steps.len(), 2);
        assert!(matches!(p.steps[0].action, Action::CreateNetwork { .. }));
        assert!(matches!(p.steps[1].action, Action::CreateVolume { .. }));
    }
}
