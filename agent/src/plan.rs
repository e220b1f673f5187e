//! `plan(&Desired, &Observed) -> Plan`: the pure decision of what to change. No I/O here, so
//! every rule is a table test.

use crate::desired::spec::ServiceSpec;
use crate::desired::Desired;
use crate::docker::container_name;
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
    /// Running, health check not decided yet.
    Starting,
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
            ContainerState::Starting => f.write_str("starting"),
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
    /// The image the container runs (`sha256:...`).
    pub image_id: String,
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
    /// Owned networks: name -> spec hash.
    pub networks: BTreeMap<String, String>,
    /// Owned volumes by engine name.
    pub volumes: BTreeSet<String>,
}

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create a declared network.
    CreateNetwork {
        /// Compose key.
        network: String,
    },
    /// Remove a network this agent owns (no longer declared, or about to be recreated).
    RemoveNetwork {
        /// Engine name.
        name: String,
    },
    /// Create a declared volume.
    CreateVolume {
        /// Compose key.
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

/// The compose keys of the networks a service joins.
fn attached(s: &ServiceSpec) -> Vec<&str> {
    if s.network_mode.is_some() {
        Vec::new()
    } else if s.networks.is_empty() {
        vec!["default"]
    } else {
        s.networks.keys().map(String::as_str).collect()
    }
}

/// Decide what to change so the host matches `desired`.
///
/// `previous` maps spec hashes of earlier applied services to their specs, only to explain
/// replacements ("image a -> b"); the decision never depends on it.
pub fn plan(desired: &Desired, observed: &Observed, previous: &BTreeMap<String, ServiceSpec>) -> Plan {
    let mut steps = Vec::new();
    let project = desired.project.as_str();

    // Networks whose config changed must be recreated, which needs their containers gone first.
    let mut recreated: BTreeSet<&str> = BTreeSet::new();
    for (key, net) in &desired.networks {
        if let Some(hash) = observed.networks.get(&net.name) {
            if !net.external && *hash != net.hash() {
                recreated.insert(key.as_str());
            }
        }
    }
    let on_recreated = |s: &ServiceSpec| attached(s).iter().any(|k| recreated.contains(k));

    // Containers this agent owns that this revision does not declare (other project, removed
    // service, or an extra copy of a declared one) are removed first, so names and ports are
    // free; so are the containers on a network that is recreated.
    let mut keep: BTreeMap<&str, &ObservedContainer> = BTreeMap::new();
    let mut recreate_services: BTreeSet<&str> = BTreeSet::new();
    for c in &observed.containers {
        let spec = (c.project == project)
            .then(|| desired.services.get(&c.service))
            .flatten();
        let canonical = spec.is_some_and(|s| c.name == container_name(project, s));
        if let (Some(s), true) = (spec, canonical) {
            if on_recreated(s) {
                recreate_services.insert(s.name.as_str());
                steps.push(Step {
                    action: Action::Remove {
                        name: c.name.clone(),
                        container_id: c.id.clone(),
                    },
                    reason: "its network's config changed; the network is recreated".into(),
                });
                continue;
            }
            if !keep.contains_key(c.service.as_str()) {
                keep.insert(c.service.as_str(), c);
                continue;
            }
        }
        let reason = if spec.is_none() {
            if c.project != project {
                format!("project {:?} is no longer declared", c.project)
            } else {
                format!("service {:?} is no longer declared", c.service)
            }
        } else if !canonical {
            format!(
                "container name differs from {:?}",
                spec.map(|s| container_name(project, s)).unwrap_or_default()
            )
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

    // Networks: remove what is no longer declared or must be recreated, then create.
    let declared: BTreeSet<&str> = desired.networks.values().map(|n| n.name.as_str()).collect();
    for name in observed.networks.keys() {
        if !declared.contains(name.as_str()) {
            steps.push(Step {
                action: Action::RemoveNetwork { name: name.clone() },
                reason: "network no longer declared".into(),
            });
        }
    }
    for (key, net) in &desired.networks {
        if net.external {
            continue;
        }
        if recreated.contains(key.as_str()) {
            steps.push(Step {
                action: Action::RemoveNetwork { name: net.name.clone() },
                reason: "network config changed".into(),
            });
            steps.push(Step {
                action: Action::CreateNetwork { network: key.clone() },
                reason: "network config changed".into(),
            });
        } else if !observed.networks.contains_key(&net.name) {
            steps.push(Step {
                action: Action::CreateNetwork { network: key.clone() },
                reason: "network missing".into(),
            });
        }
    }
    for (key, vol) in &desired.volumes {
        if !vol.external && !observed.volumes.contains(&vol.name) {
            steps.push(Step {
                action: Action::CreateVolume { volume: key.clone() },
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
                reason: if recreate_services.contains(service.as_str()) {
                    "its network was recreated".into()
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
                | ContainerState::Starting
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
            crate::desired::SecretsCtx::offline(),
        )
        .expect("valid desired state")
    }

    fn running(d: &Desired, service: &str) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{service}"),
            name: container_name(&d.project, &d.services[service]),
            project: d.project.clone(),
            service: service.into(),
            spec_hash: d.services[service].hash(),
            revision: "r1".into(),
            image_id: "sha256:1".into(),
            state: ContainerState::Running,
            status: "Up".into(),
        }
    }

    fn converged(d: &Desired) -> Observed {
        Observed {
            containers: d.services.keys().map(|s| running(d, s)).collect(),
            networks: d.networks.values().map(|n| (n.name.clone(), n.hash())).collect(),
            volumes: d.volumes.values().map(|v| v.name.clone()).collect(),
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
                    network: "default".into()
                },
                &Action::CreateVolume { volume: "data".into() },
                &Action::Create { service: "db".into() },
                &Action::Create { service: "web".into() },
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
        let previous: BTreeMap<String, ServiceSpec> = old.services.values().map(|s| (s.hash(), s.clone())).collect();
        let p = plan(&new, &converged(&old), &previous);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(
            p.steps[0].action,
            Action::Replace {
                service: "web".into(),
                container_id: "id-web".into()
            }
        );
        assert_eq!(p.steps[0].reason, "spec changed: image nginx:1.25 -> nginx:1.27");
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
        assert_eq!(p.steps[0].action, Action::Create { service: "web".into() });
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

    #[test]
    fn changed_network_config_recreates_network_and_its_containers() {
        let old = desired("services:\n  a: {image: x, networks: [n]}\n  b: {image: x}\nnetworks:\n  n: {}\n");
        let new =
            desired("services:\n  a: {image: x, networks: [n]}\n  b: {image: x}\nnetworks:\n  n: {internal: true}\n");
        let p = plan(&new, &converged(&old), &BTreeMap::new());
        let got: Vec<String> = p.steps.iter().map(|s| format!("{:?}", s.action)).collect();
        assert_eq!(
            got,
            vec![
                "Remove { name: \"p-a-1\", container_id: \"id-a\" }",
                "RemoveNetwork { name: \"p_n\" }",
                "CreateNetwork { network: \"n\" }",
                "Create { service: \"a\" }",
            ],
            "b stays: its network is unchanged"
        );
    }

    #[test]
    fn undeclared_network_is_removed_and_external_never_created() {
        let old = desired("services:\n  a: {image: x, networks: [n]}\nnetworks:\n  n: {}\n");
        let new =
            desired("services:\n  a: {image: x, networks: [ext]}\nnetworks:\n  ext: {external: true, name: shared}\n");
        let p = plan(&new, &converged(&old), &BTreeMap::new());
        assert!(p
            .steps
            .iter()
            .any(|s| s.action == Action::RemoveNetwork { name: "p_n".into() }));
        assert!(!p.steps.iter().any(|s| matches!(s.action, Action::CreateNetwork { .. })));
    }

    #[test]
    fn container_name_change_replaces_the_container() {
        let old = desired("services:\n  a: {image: x}\n");
        let new = desired("services:\n  a: {image: x, container_name: fixed}\n");
        let p = plan(&new, &converged(&old), &BTreeMap::new());
        assert!(matches!(&p.steps[0].action, Action::Remove { name, .. } if name == "p-a-1"));
        assert_eq!(p.steps[1].action, Action::Create { service: "a".into() });
    }
}
