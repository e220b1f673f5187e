//! The plan: what to do to bring the host's units to what Git declares.
//!
//! Pure: it compares the desired units, what tend installed before
//! ([`OwnedUnit`], persisted by the caller) and what the host shows
//! ([`ObservedUnit`], from D-Bus and the unit directory), and returns an
//! ordered list of [`UnitAction`]s, each with a [`Reason`].
//!
//! Order of a batch: reports, stops, disables, file writes/removals,
//! enables, one daemon-reload (only when files or enablement changed), then
//! restarts/starts ordered by type (mounts, sockets, paths, timers, services,
//! targets) and name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::desired::{DesiredUnit, DesiredUnits};
use super::error::Error;
use super::names::parse_unit_name;

/// What tend installed for a unit, as the caller persists it between cycles.
///
/// [`super::apply::apply`] updates it step by step, so persisting it after
/// `apply` returns (also after a failure) keeps it truthful.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedUnit {
    /// Hash of the unit file tend wrote.
    pub content_hash: String,
    /// Hash of each drop-in tend wrote, by file name.
    #[serde(default)]
    pub dropin_hashes: BTreeMap<String, String>,
    /// Hash of the `[Install]` section of what tend wrote.
    #[serde(default)]
    pub install_hash: String,
    /// tend enabled it.
    #[serde(default)]
    pub enabled: bool,
    /// The last applied intent said `started`.
    #[serde(default)]
    pub started: bool,
    /// Files changed but the restart has not completed yet (a later cycle restarts it).
    #[serde(default)]
    pub restart_pending: bool,
    /// Files changed but no daemon-reload has succeeded since.
    #[serde(default)]
    pub reload_pending: bool,
}

/// What the host shows for a unit.
///
/// The systemd fields come from [`super::UnitManager::observe`], the file
/// fields from [`super::UnitFiles::observe_files`]; [`super::observe`] does both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedUnit {
    /// Unit name.
    pub name: String,
    /// `loaded`, `not-found`, `masked`, `bad-setting`, `error`, ... (empty: unknown).
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, `deactivating`, `reloading`.
    pub active_state: String,
    /// Type-specific sub-state (`running`, `dead`, `exited`, `waiting`, ...).
    pub sub_state: String,
    /// `enabled`, `disabled`, `static`, `masked`, `masked-runtime`,
    /// `enabled-runtime`, `indirect`, `generated`, ... (empty: no unit file found).
    pub unit_file_state: String,
    /// The unit file systemd found for it, if any.
    pub unit_file_path: Option<String>,
    /// Hash of the regular file at `ROOT/NAME`, if there is one.
    pub file_hash_on_disk: Option<String>,
    /// Target of a symlink at `ROOT/NAME` (e.g. `/dev/null` for a mask).
    pub symlink_on_disk: Option<String>,
    /// Hashes of `ROOT/NAME.d/*.conf`, by file name.
    pub dropin_hashes_on_disk: BTreeMap<String, String>,
}

impl ObservedUnit {
    /// Masked by the administrator (in any directory).
    pub fn is_masked(&self) -> bool {
        self.load_state == "masked"
            || self.unit_file_state.starts_with("masked")
            || self.symlink_on_disk.as_deref() == Some("/dev/null")
    }

    /// `active`, `activating` or `reloading`: running or about to.
    pub fn is_running(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "activating" | "reloading")
    }

    /// Enabled (persistently or at runtime).
    pub fn is_enabled(&self) -> bool {
        matches!(self.unit_file_state.as_str(), "enabled" | "enabled-runtime")
    }

    /// As enabled as it can be: enabled, or `indirect` (its `[Install]` only
    /// has `Also=`, which `enable` acts on without making it `enabled`).
    pub fn satisfies_enabled(&self) -> bool {
        self.is_enabled() || self.unit_file_state == "indirect"
    }

    /// Something of this name exists on the host: a file or symlink in the
    /// unit directory, or a unit systemd could load from elsewhere.
    pub fn exists_on_host(&self) -> Option<String> {
        if self.file_hash_on_disk.is_some() || self.symlink_on_disk.is_some() {
            return Some("file in the unit directory".into());
        }
        if let Some(path) = &self.unit_file_path {
            return Some(path.clone());
        }
        match self.load_state.as_str() {
            "" | "not-found" | "stub" => None,
            other => Some(format!("load state {other}")),
        }
    }
}

/// Options of [`plan`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Adopt every same-named unit that tend did not install (per-unit:
    /// `adopt = true` in `units/tend.toml`).
    pub adopt: bool,
}

/// Why an action is planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Declared in Git, not installed by tend yet.
    NewUnit,
    /// Declared in Git; a same-named unit existed and is adopted.
    Adopted {
        /// Where the existing unit was.
        location: String,
    },
    /// The unit file in Git differs from what tend installed.
    ContentChanged,
    /// The file on disk differs from what tend wrote (edited by hand).
    EditedOnDisk,
    /// The file tend wrote is missing on disk.
    MissingOnDisk,
    /// A new drop-in.
    DropInAdded {
        /// Drop-in file name.
        dropin: String,
    },
    /// A drop-in's content changed in Git.
    DropInChanged {
        /// Drop-in file name.
        dropin: String,
    },
    /// A drop-in was edited by hand (or removed) on disk.
    DropInEditedOnDisk {
        /// Drop-in file name.
        dropin: String,
    },
    /// A drop-in is no longer declared.
    DropInRemoved {
        /// Drop-in file name.
        dropin: String,
    },
    /// A secret the unit references (`/run/tend/secrets/NAME`) changed.
    SecretChanged {
        /// Secret name.
        secret: String,
    },
    /// An earlier cycle changed files but did not complete the restart.
    RestartPending,
    /// An earlier cycle changed files but did not complete the daemon-reload.
    ReloadPending,
    /// The unit is no longer declared in Git.
    NoLongerDeclared,
    /// Unit files or enablement changed in this batch.
    FilesChanged,
    /// Declared enabled, but the unit file state is not `enabled`.
    DeclaredEnabled {
        /// Observed unit file state.
        state: String,
    },
    /// Declared not enabled, but the unit file state is `enabled`.
    DeclaredDisabled {
        /// Observed unit file state.
        state: String,
    },
    /// The `[Install]` section changed: re-enable to move the symlinks.
    InstallChanged,
    /// Declared `started = false` while it was started before.
    DeclaredStopped,
    /// Should run but is not running. The caller should apply a backoff to
    /// this reason (see [`UnitAction::is_recovery`]).
    NotRunning {
        /// Observed active state.
        active_state: String,
        /// Observed sub-state.
        sub_state: String,
    },
    /// Masked on the host: tend reports it and leaves it alone.
    Masked {
        /// Observed unit file state.
        state: String,
    },
    /// A drop-in in the unit's `.d/` directory that tend did not write.
    ForeignDropIn {
        /// Drop-in file name.
        dropin: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NewUnit => write!(f, "new unit"),
            Reason::Adopted { location } => write!(f, "adopting the existing unit ({location})"),
            Reason::ContentChanged => write!(f, "unit file changed in Git"),
            Reason::EditedOnDisk => write!(f, "unit file edited on disk, restoring"),
            Reason::MissingOnDisk => write!(f, "unit file missing on disk, restoring"),
            Reason::DropInAdded { dropin } => write!(f, "new drop-in {dropin}"),
            Reason::DropInChanged { dropin } => write!(f, "drop-in {dropin} changed in Git"),
            Reason::DropInEditedOnDisk { dropin } => {
                write!(f, "drop-in {dropin} edited or removed on disk, restoring")
            }
            Reason::DropInRemoved { dropin } => write!(f, "drop-in {dropin} no longer declared"),
            Reason::SecretChanged { secret } => write!(f, "secret {secret} changed"),
            Reason::RestartPending => write!(f, "restart pending from an earlier cycle"),
            Reason::ReloadPending => write!(f, "daemon-reload pending from an earlier cycle"),
            Reason::NoLongerDeclared => write!(f, "no longer declared in Git"),
            Reason::FilesChanged => write!(f, "unit files or enablement changed"),
            Reason::DeclaredEnabled { state } => write!(
                f,
                "declared enabled, unit file state is {}",
                if state.is_empty() { "unknown" } else { state }
            ),
            Reason::DeclaredDisabled { state } => {
                write!(f, "declared not enabled, unit file state is {state}")
            }
            Reason::InstallChanged => write!(f, "[Install] section changed, re-enabling"),
            Reason::DeclaredStopped => write!(f, "declared started = false"),
            Reason::NotRunning {
                active_state,
                sub_state,
            } => write!(f, "should run but is {active_state} ({sub_state})"),
            Reason::Masked { state } => write!(
                f,
                "masked on this host ({state}); tend leaves it alone, unmask it to let tend manage it"
            ),
            Reason::ForeignDropIn { dropin } => write!(
                f,
                "drop-in {dropin} was not written by tend; it changes the unit, move it to Git or remove it"
            ),
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitAction {
    /// Write (or restore) the unit file.
    WriteUnit {
        /// Unit.
        unit: String,
        /// Why.
        reason: Reason,
    },
    /// Write (or restore) a drop-in.
    WriteDropIn {
        /// Unit.
        unit: String,
        /// Drop-in file name.
        dropin: String,
        /// Why.
        reason: Reason,
    },
    /// Remove a drop-in tend wrote.
    RemoveDropIn {
        /// Unit.
        unit: String,
        /// Drop-in file name.
        dropin: String,
        /// Why.
        reason: Reason,
    },
    /// Remove the unit file tend wrote (and forget the unit).
    RemoveUnit {
        /// Unit.
        unit: String,
        /// Why.
        reason: Reason,
    },
    /// `systemctl daemon-reload`, once per batch.
    Reload {
        /// Why.
        reason: Reason,
    },
    /// `systemctl enable` (batched into one call).
    Enable {
        /// Unit.
        unit: String,
        /// Why.
        reason: Reason,
    },
    /// `systemctl disable` (batched into one call).
    Disable {
        /// Unit.
        unit: String,
        /// Why.
        reason: Reason,
    },
    /// Stop the unit.
    Stop {
        /// Unit.
        unit: String,
        /// Why.
        reason: Reason,
    },
    /// Start the unit.
    Start {
        /// Unit.
        unit: String,
        /// Why.
        reason: Reason,
    },
    /// Restart the unit.
    Restart {
        /// Unit.
        unit: String,
        /// Why.
        reason: Reason,
    },
    /// Nothing is done; the operator should know.
    Report {
        /// Unit.
        unit: String,
        /// What.
        reason: Reason,
    },
}

impl UnitAction {
    /// The unit the action is about (`None` for a reload).
    pub fn unit(&self) -> Option<&str> {
        match self {
            UnitAction::Reload { .. } => None,
            UnitAction::WriteUnit { unit, .. }
            | UnitAction::WriteDropIn { unit, .. }
            | UnitAction::RemoveDropIn { unit, .. }
            | UnitAction::RemoveUnit { unit, .. }
            | UnitAction::Enable { unit, .. }
            | UnitAction::Disable { unit, .. }
            | UnitAction::Stop { unit, .. }
            | UnitAction::Start { unit, .. }
            | UnitAction::Restart { unit, .. }
            | UnitAction::Report { unit, .. } => Some(unit),
        }
    }

    /// Why the action is planned.
    pub fn reason(&self) -> &Reason {
        match self {
            UnitAction::WriteUnit { reason, .. }
            | UnitAction::WriteDropIn { reason, .. }
            | UnitAction::RemoveDropIn { reason, .. }
            | UnitAction::RemoveUnit { reason, .. }
            | UnitAction::Reload { reason }
            | UnitAction::Enable { reason, .. }
            | UnitAction::Disable { reason, .. }
            | UnitAction::Stop { reason, .. }
            | UnitAction::Start { reason, .. }
            | UnitAction::Restart { reason, .. }
            | UnitAction::Report { reason, .. } => reason,
        }
    }

    /// A start of a unit that should run but was found inactive or failed.
    /// The caller should apply a backoff (e.g. drop such actions for a unit
    /// until its backoff expires) so a crashing unit is not hammered.
    pub fn is_recovery(&self) -> bool {
        matches!(
            self,
            UnitAction::Start {
                reason: Reason::NotRunning { .. },
                ..
            }
        )
    }

    /// Writes or removes files under the unit directory.
    pub fn touches_files(&self) -> bool {
        matches!(
            self,
            UnitAction::WriteUnit { .. }
                | UnitAction::WriteDropIn { .. }
                | UnitAction::RemoveDropIn { .. }
                | UnitAction::RemoveUnit { .. }
        )
    }
}

impl fmt::Display for UnitAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitAction::WriteUnit { unit, reason } => write!(f, "write {unit}: {reason}"),
            UnitAction::WriteDropIn { unit, dropin, reason } => write!(f, "write {unit}.d/{dropin}: {reason}"),
            UnitAction::RemoveDropIn { unit, dropin, reason } => write!(f, "remove {unit}.d/{dropin}: {reason}"),
            UnitAction::RemoveUnit { unit, reason } => write!(f, "remove {unit}: {reason}"),
            UnitAction::Reload { reason } => write!(f, "daemon-reload: {reason}"),
            UnitAction::Enable { unit, reason } => write!(f, "enable {unit}: {reason}"),
            UnitAction::Disable { unit, reason } => write!(f, "disable {unit}: {reason}"),
            UnitAction::Stop { unit, reason } => write!(f, "stop {unit}: {reason}"),
            UnitAction::Start { unit, reason } => write!(f, "start {unit}: {reason}"),
            UnitAction::Restart { unit, reason } => write!(f, "restart {unit}: {reason}"),
            UnitAction::Report { unit, reason } => write!(f, "report {unit}: {reason}"),
        }
    }
}

#[derive(Default)]
struct Buckets {
    reports: Vec<UnitAction>,
    stops: Vec<UnitAction>,
    disables: Vec<UnitAction>,
    files: Vec<UnitAction>,
    enables: Vec<UnitAction>,
    reload: Option<Reason>,
    // (start rank, unit, action)
    starts: Vec<(usize, String, UnitAction)>,
}

fn rank(unit: &str) -> usize {
    parse_unit_name(unit).map(|u| u.kind.start_rank()).unwrap_or(usize::MAX)
}

/// Compute the actions for one batch.
///
/// `observed` should hold every desired and owned unit (a missing entry is
/// treated as "unknown": the files are restored and the unit started).
/// `changed_secrets` are the secret names whose content changed since the
/// last successful apply; units referencing them are restarted.
///
/// Fails with [`Error::UnownedUnit`] (the first, by name) when a declared
/// unit exists on the host, was not installed by tend, and neither
/// `opts.adopt` nor the unit's `adopt` intent is set. Nothing is planned then:
/// the caller should surface the error and retry next cycle.
pub fn plan(
    desired: &DesiredUnits,
    owned: &BTreeMap<String, OwnedUnit>,
    observed: &BTreeMap<String, ObservedUnit>,
    changed_secrets: &BTreeSet<String>,
    opts: &PlanOptions,
) -> Result<Vec<UnitAction>, Error> {
    let unknown = ObservedUnit::default();
    let mut b = Buckets::default();

    for (name, d) in &desired.units {
        let s = observed.get(name).unwrap_or(&unknown);
        let o = owned.get(name);
        if s.is_masked() {
            b.reports.push(UnitAction::Report {
                unit: name.clone(),
                reason: Reason::Masked {
                    state: if s.unit_file_state.is_empty() {
                        s.load_state.clone()
                    } else {
                        s.unit_file_state.clone()
                    },
                },
            });
            continue;
        }
        let adopt_from = match (o, s.exists_on_host()) {
            (None, Some(location)) => {
                if !(opts.adopt || d.intent.adopt) {
                    return Err(Error::UnownedUnit {
                        unit: name.clone(),
                        location,
                    });
                }
                Some(location)
            }
            _ => None,
        };
        plan_desired(&mut b, d, o, s, adopt_from, changed_secrets);
    }

    for (name, o) in owned {
        if desired.units.contains_key(name) {
            continue;
        }
        let s = observed.get(name).unwrap_or(&unknown);
        plan_removed(&mut b, name, o, s);
    }

    if b.reload.is_none() && owned.values().any(|o| o.reload_pending) {
        b.reload = Some(Reason::ReloadPending);
    }

    let mut out = Vec::new();
    out.append(&mut b.reports);
    out.append(&mut b.stops);
    out.append(&mut b.disables);
    out.append(&mut b.files);
    out.append(&mut b.enables);
    if let Some(reason) = b.reload {
        out.push(UnitAction::Reload { reason });
    }
    b.starts.sort_by(|a, c| (a.0, &a.1).cmp(&(c.0, &c.1)));
    out.extend(b.starts.into_iter().map(|(_, _, a)| a));
    Ok(out)
}

fn plan_desired(
    b: &mut Buckets,
    d: &DesiredUnit,
    o: Option<&OwnedUnit>,
    s: &ObservedUnit,
    adopt_from: Option<String>,
    changed_secrets: &BTreeSet<String>,
) {
    let name = &d.name;
    let new = o.is_none();
    // The first reason that makes a restart necessary.
    let mut restart_reason: Option<Reason> = None;
    let mut files_changed = false;
    let note = |r: &Reason, slot: &mut Option<Reason>| {
        if slot.is_none() {
            *slot = Some(r.clone());
        }
    };

    // Unit file.
    let unit_reason = match o {
        None => Some(match &adopt_from {
            Some(location) => Reason::Adopted {
                location: location.clone(),
            },
            None => Reason::NewUnit,
        }),
        Some(o) if o.content_hash != d.content_hash => Some(Reason::ContentChanged),
        Some(_) => match &s.file_hash_on_disk {
            Some(h) if *h == d.content_hash => None,
            Some(_) => Some(Reason::EditedOnDisk),
            None => Some(Reason::MissingOnDisk),
        },
    };
    if let Some(reason) = unit_reason {
        note(&reason, &mut restart_reason);
        files_changed = true;
        b.files.push(UnitAction::WriteUnit {
            unit: name.clone(),
            reason,
        });
    }

    // Drop-ins.
    for (file, dd) in &d.dropins {
        let owned_hash = o.and_then(|o| o.dropin_hashes.get(file));
        let disk_hash = s.dropin_hashes_on_disk.get(file);
        let reason = match owned_hash {
            None => Some(Reason::DropInAdded { dropin: file.clone() }),
            Some(h) if *h != dd.hash => Some(Reason::DropInChanged { dropin: file.clone() }),
            Some(_) if disk_hash != Some(&dd.hash) => Some(Reason::DropInEditedOnDisk { dropin: file.clone() }),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            note(&reason, &mut restart_reason);
            files_changed = true;
            b.files.push(UnitAction::WriteDropIn {
                unit: name.clone(),
                dropin: file.clone(),
                reason,
            });
        }
    }
    if let Some(o) = o {
        for file in o.dropin_hashes.keys() {
            if !d.dropins.contains_key(file) {
                let reason = Reason::DropInRemoved { dropin: file.clone() };
                note(&reason, &mut restart_reason);
                files_changed = true;
                b.files.push(UnitAction::RemoveDropIn {
                    unit: name.clone(),
                    dropin: file.clone(),
                    reason,
                });
            }
        }
    }
    for file in s.dropin_hashes_on_disk.keys() {
        let ours = d.dropins.contains_key(file) || o.is_some_and(|o| o.dropin_hashes.contains_key(file));
        if !ours {
            b.reports.push(UnitAction::Report {
                unit: name.clone(),
                reason: Reason::ForeignDropIn { dropin: file.clone() },
            });
        }
    }

    if let Some(secret) = d.secrets.iter().find(|s| changed_secrets.contains(*s)) {
        note(&Reason::SecretChanged { secret: secret.clone() }, &mut restart_reason);
    }
    if o.is_some_and(|o| o.restart_pending) {
        note(&Reason::RestartPending, &mut restart_reason);
    }
    if files_changed {
        b.reload.get_or_insert(Reason::FilesChanged);
    }

    // Enablement.
    if d.intent.enabled {
        if !s.satisfies_enabled() {
            b.enables.push(UnitAction::Enable {
                unit: name.clone(),
                reason: Reason::DeclaredEnabled {
                    state: s.unit_file_state.clone(),
                },
            });
        } else if o.is_some_and(|o| o.install_hash != d.install_hash) {
            b.disables.push(UnitAction::Disable {
                unit: name.clone(),
                reason: Reason::InstallChanged,
            });
            b.enables.push(UnitAction::Enable {
                unit: name.clone(),
                reason: Reason::InstallChanged,
            });
        }
    } else if s.is_enabled() {
        b.disables.push(UnitAction::Disable {
            unit: name.clone(),
            reason: Reason::DeclaredDisabled {
                state: s.unit_file_state.clone(),
            },
        });
    }
    if !b.enables.is_empty() || !b.disables.is_empty() {
        b.reload.get_or_insert(Reason::FilesChanged);
    }

    // Running state.
    let want_running = d.intent.started && !d.template;
    let running = s.is_running();
    let start = |reason: Reason| UnitAction::Start {
        unit: name.clone(),
        reason,
    };
    let restart = |reason: Reason| UnitAction::Restart {
        unit: name.clone(),
        reason,
    };
    let action = if want_running {
        match restart_reason {
            Some(r) if new && !running => Some(start(r)),
            Some(r) if running => Some(restart(r)),
            Some(r) => Some(start(r)),
            None if running => None,
            // A oneshot that ran to completion is done, not down.
            None if d.runs_to_completion && s.active_state == "inactive" => None,
            None => Some(start(Reason::NotRunning {
                active_state: s.active_state.clone(),
                sub_state: s.sub_state.clone(),
            })),
        }
    } else if running && o.is_some_and(|o| o.started) {
        Some(UnitAction::Stop {
            unit: name.clone(),
            reason: Reason::DeclaredStopped,
        })
    } else if running && !d.template {
        // E.g. a socket-activated service that is running: pick up the change.
        restart_reason.map(restart)
    } else {
        None
    };
    match action {
        Some(a @ UnitAction::Stop { .. }) => b.stops.push(a),
        Some(a) => b.starts.push((rank(name), name.clone(), a)),
        None => {}
    }
}

fn plan_removed(b: &mut Buckets, name: &str, o: &OwnedUnit, s: &ObservedUnit) {
    let reason = Reason::NoLongerDeclared;
    // A masked unit is left as the operator set it: tend only forgets it and
    // removes its own drop-ins (the mask symlink is never removed).
    let masked = s.is_masked();
    if !masked && !matches!(s.active_state.as_str(), "inactive" | "failed" | "") {
        b.stops.push(UnitAction::Stop {
            unit: name.to_string(),
            reason: reason.clone(),
        });
    }
    // Only when systemd says so: disabling a unit whose file is gone fails.
    if !masked && s.is_enabled() {
        b.disables.push(UnitAction::Disable {
            unit: name.to_string(),
            reason: reason.clone(),
        });
    }
    for file in o.dropin_hashes.keys() {
        b.files.push(UnitAction::RemoveDropIn {
            unit: name.to_string(),
            dropin: file.clone(),
            reason: reason.clone(),
        });
    }
    b.files.push(UnitAction::RemoveUnit {
        unit: name.to_string(),
        reason,
    });
    b.reload.get_or_insert(Reason::FilesChanged);
}

#[cfg(test)]
mod tests {
    use super::super::desired::{content_hash, desired_units, Layer};
    use super::*;

    const WEB: &str = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
    const WEB2: &str = "[Service]\nExecStart=/bin/sleep 1000\n[Install]\nWantedBy=multi-user.target\n";
    const DB: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

    fn desired(files: &[(&str, &str)]) -> DesiredUnits {
        let map: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        desired_units(&[Layer { name: "", files: &map }]).expect("valid desired")
    }

    /// Owned + observed as they are right after tend applied `d`, with every
    /// unit running and enabled per intent.
    fn converged(d: &DesiredUnits) -> (BTreeMap<String, OwnedUnit>, BTreeMap<String, ObservedUnit>) {
        let mut owned = BTreeMap::new();
        let mut observed = BTreeMap::new();
        for (n, u) in &d.units {
            let dropins: BTreeMap<String, String> =
                u.dropins.iter().map(|(f, dd)| (f.clone(), dd.hash.clone())).collect();
            owned.insert(
                n.clone(),
                OwnedUnit {
                    content_hash: u.content_hash.clone(),
                    dropin_hashes: dropins.clone(),
                    install_hash: u.install_hash.clone(),
                    enabled: u.intent.enabled,
                    started: u.intent.started,
                    restart_pending: false,
                    reload_pending: false,
                },
            );
            let running = u.intent.started;
            observed.insert(
                n.clone(),
                ObservedUnit {
                    name: n.clone(),
                    load_state: "loaded".into(),
                    active_state: if running { "active" } else { "inactive" }.into(),
                    sub_state: if running { "running" } else { "dead" }.into(),
                    unit_file_state: if u.intent.enabled {
                        "enabled"
                    } else if u.has_install {
                        "disabled"
                    } else {
                        "static"
                    }
                    .into(),
                    unit_file_path: Some(format!("/etc/systemd/system/{n}")),
                    file_hash_on_disk: Some(u.content_hash.clone()),
                    symlink_on_disk: None,
                    dropin_hashes_on_disk: dropins,
                },
            );
        }
        (owned, observed)
    }

    fn not_found(n: &str) -> ObservedUnit {
        ObservedUnit {
            name: n.into(),
            load_state: "not-found".into(),
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            ..Default::default()
        }
    }

    fn render(actions: &[UnitAction]) -> Vec<String> {
        actions.iter().map(ToString::to_string).collect()
    }

    fn run(
        d: &DesiredUnits,
        owned: &BTreeMap<String, OwnedUnit>,
        observed: &BTreeMap<String, ObservedUnit>,
    ) -> Vec<String> {
        render(&plan(d, owned, observed, &BTreeSet::new(), &PlanOptions::default()).expect("plan"))
    }

    #[test]
    fn fresh_install_writes_enables_reloads_and_starts_in_type_order() {
        let d = desired(&[
            ("web.service", WEB),
            ("web.service.d/10-env.conf", "[Service]\nEnvironment=A=1\n"),
            ("db.service", DB),
            (
                "tick.timer",
                "[Timer]\nOnActiveSec=1h\n[Install]\nWantedBy=timers.target\n",
            ),
            ("tick.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n"),
        ]);
        let observed: BTreeMap<_, _> = d.units.keys().map(|n| (n.clone(), not_found(n))).collect();
        assert_eq!(
            run(&d, &BTreeMap::new(), &observed),
            vec![
                "write db.service: new unit",
                "write tick.service: new unit",
                "write tick.timer: new unit",
                "write web.service: new unit",
                "write web.service.d/10-env.conf: new drop-in 10-env.conf",
                "enable tick.timer: declared enabled, unit file state is unknown",
                "enable web.service: declared enabled, unit file state is unknown",
                "daemon-reload: unit files or enablement changed",
                "start tick.timer: new unit",
                "start db.service: new unit",
                "start web.service: new unit",
            ]
        );
    }

    #[test]
    fn converged_state_plans_nothing() {
        let d = desired(&[("web.service", WEB), ("db.service", DB)]);
        let (owned, observed) = converged(&d);
        assert!(run(&d, &owned, &observed).is_empty());
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            files: Vec<(&'static str, &'static str)>,
            tweak: fn(&mut BTreeMap<String, OwnedUnit>, &mut BTreeMap<String, ObservedUnit>),
            secrets: &'static [&'static str],
            want: Vec<&'static str>,
        }
        let base = vec![
            ("web.service", WEB),
            ("db.service", DB),
            ("db.service.d/10-a.conf", "[Service]\nEnvironment=A=1\n"),
        ];
        let cases = vec![
            Case {
                name: "content change restarts only that unit",
                files: vec![
                    ("web.service", WEB2),
                    ("db.service", DB),
                    ("db.service.d/10-a.conf", "[Service]\nEnvironment=A=1\n"),
                ],
                tweak: |_, _| {},
                secrets: &[],
                want: vec![
                    "write web.service: unit file changed in Git",
                    "daemon-reload: unit files or enablement changed",
                    "restart web.service: unit file changed in Git",
                ],
            },
            Case {
                name: "drop-in change, addition and removal",
                files: vec![
                    ("web.service", WEB),
                    ("db.service", DB),
                    ("db.service.d/10-a.conf", "[Service]\nEnvironment=A=2\n"),
                    ("db.service.d/20-b.conf", "[Service]\nEnvironment=B=2\n"),
                ],
                tweak: |owned, _| {
                    if let Some(o) = owned.get_mut("db.service") {
                        o.dropin_hashes.insert("05-old.conf".into(), "x".into());
                    }
                },
                secrets: &[],
                want: vec![
                    "write db.service.d/10-a.conf: drop-in 10-a.conf changed in Git",
                    "write db.service.d/20-b.conf: new drop-in 20-b.conf",
                    "remove db.service.d/05-old.conf: drop-in 05-old.conf no longer declared",
                    "daemon-reload: unit files or enablement changed",
                    "restart db.service: drop-in 10-a.conf changed in Git",
                ],
            },
            Case {
                name: "removal stops, disables, deletes",
                files: vec![("db.service", DB), ("db.service.d/10-a.conf", "[Service]\nEnvironment=A=1\n")],
                tweak: |_, _| {},
                secrets: &[],
                want: vec![
                    "stop web.service: no longer declared in Git",
                    "disable web.service: no longer declared in Git",
                    "remove web.service: no longer declared in Git",
                    "daemon-reload: unit files or enablement changed",
                ],
            },
            Case {
                name: "hand-edited unit file is restored and restarted",
                files: base.clone(),
                tweak: |_, obs| {
                    if let Some(s) = obs.get_mut("web.service") {
                        s.file_hash_on_disk = Some("edited".into());
                    }
                },
                secrets: &[],
                want: vec![
                    "write web.service: unit file edited on disk, restoring",
                    "daemon-reload: unit files or enablement changed",
                    "restart web.service: unit file edited on disk, restoring",
                ],
            },
            Case {
                name: "deleted drop-in is restored",
                files: base.clone(),
                tweak: |_, obs| {
                    if let Some(s) = obs.get_mut("db.service") {
                        s.dropin_hashes_on_disk.clear();
                    }
                },
                secrets: &[],
                want: vec![
                    "write db.service.d/10-a.conf: drop-in 10-a.conf edited or removed on disk, restoring",
                    "daemon-reload: unit files or enablement changed",
                    "restart db.service: drop-in 10-a.conf edited or removed on disk, restoring",
                ],
            },
            Case {
                name: "failed unit is started again (recovery)",
                files: base.clone(),
                tweak: |_, obs| {
                    if let Some(s) = obs.get_mut("db.service") {
                        s.active_state = "failed".into();
                        s.sub_state = "failed".into();
                    }
                },
                secrets: &[],
                want: vec!["start db.service: should run but is failed (failed)"],
            },
            Case {
                name: "masked unit is reported, not fought",
                files: vec![
                    ("web.service", WEB2),
                    ("db.service", DB),
                    ("db.service.d/10-a.conf", "[Service]\nEnvironment=A=1\n"),
                ],
                tweak: |_, obs| {
                    if let Some(s) = obs.get_mut("web.service") {
                        s.load_state = "masked".into();
                        s.unit_file_state = "masked".into();
                        s.active_state = "inactive".into();
                        s.file_hash_on_disk = None;
                        s.symlink_on_disk = Some("/dev/null".into());
                    }
                },
                secrets: &[],
                want: vec![
                    "report web.service: masked on this host (masked); tend leaves it alone, unmask it to let tend manage it",
                ],
            },
            Case {
                name: "enable drift and intent change",
                files: vec![
                    ("web.service", WEB),
                    ("db.service", DB),
                    ("db.service.d/10-a.conf", "[Service]\nEnvironment=A=1\n"),
                ],
                tweak: |_, obs| {
                    if let Some(s) = obs.get_mut("web.service") {
                        s.unit_file_state = "disabled".into();
                    }
                },
                secrets: &[],
                want: vec![
                    "enable web.service: declared enabled, unit file state is disabled",
                    "daemon-reload: unit files or enablement changed",
                ],
            },
            Case {
                name: "install section change re-enables",
                files: vec![
                    ("web.service", "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n"),
                    ("db.service", DB),
                    ("db.service.d/10-a.conf", "[Service]\nEnvironment=A=1\n"),
                ],
                tweak: |_, _| {},
                secrets: &[],
                want: vec![
                    "disable web.service: [Install] section changed, re-enabling",
                    "write web.service: unit file changed in Git",
                    "enable web.service: [Install] section changed, re-enabling",
                    "daemon-reload: unit files or enablement changed",
                    "restart web.service: unit file changed in Git",
                ],
            },
            Case {
                name: "pending restart and reload from an interrupted cycle",
                files: base.clone(),
                tweak: |owned, _| {
                    if let Some(o) = owned.get_mut("db.service") {
                        o.restart_pending = true;
                        o.reload_pending = true;
                    }
                },
                secrets: &[],
                want: vec![
                    "daemon-reload: daemon-reload pending from an earlier cycle",
                    "restart db.service: restart pending from an earlier cycle",
                ],
            },
            Case {
                name: "foreign drop-in is reported",
                files: base.clone(),
                tweak: |_, obs| {
                    if let Some(s) = obs.get_mut("web.service") {
                        s.dropin_hashes_on_disk.insert("override.conf".into(), "h".into());
                    }
                },
                secrets: &[],
                want: vec![
                    "report web.service: drop-in override.conf was not written by tend; it changes the unit, move it to Git or remove it",
                ],
            },
        ];
        for c in cases {
            let d0 = desired(&base);
            let (mut owned, mut observed) = converged(&d0);
            (c.tweak)(&mut owned, &mut observed);
            let d = desired(&c.files);
            let secrets: BTreeSet<String> = c.secrets.iter().map(|s| s.to_string()).collect();
            let got = render(
                &plan(&d, &owned, &observed, &secrets, &PlanOptions::default())
                    .unwrap_or_else(|e| panic!("{}: {e}", c.name)),
            );
            assert_eq!(got, c.want, "case: {}", c.name);
        }
    }

    #[test]
    fn secret_change_restarts_its_users_only() {
        let d = desired(&[
            (
                "web.service",
                "[Service]\nExecStart=/bin/sleep infinity\nEnvironmentFile=/run/tend/secrets/web.env\n",
            ),
            ("api.service", "[Service]\nExecStart=/bin/sleep infinity\n"),
            (
                "api.service.d/tok.conf",
                "[Service]\nLoadCredential=tok:/run/tend/secrets/api-token\n",
            ),
            ("db.service", DB),
        ]);
        let (owned, observed) = converged(&d);
        let secrets: BTreeSet<String> = ["web.env", "api-token", "unused"].map(String::from).into();
        let got = render(&plan(&d, &owned, &observed, &secrets, &PlanOptions::default()).expect("plan"));
        assert_eq!(
            got,
            vec![
                "restart api.service: secret api-token changed",
                "restart web.service: secret web.env changed",
            ]
        );
    }

    #[test]
    fn intent_started_false_stops_once_and_oneshot_is_not_restarted() {
        let d = desired(&[
            ("web.service", WEB),
            ("tend.toml", "[units.\"web.service\"]\nstarted = false\n"),
            ("job.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n"),
        ]);
        let d_before = desired(&[
            ("web.service", WEB),
            ("job.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n"),
        ]);
        let (owned, mut observed) = converged(&d_before);
        if let Some(s) = observed.get_mut("job.service") {
            // A oneshot that ran to completion.
            s.active_state = "inactive".into();
            s.sub_state = "dead".into();
        }
        assert_eq!(
            run(&d, &owned, &observed),
            vec!["stop web.service: declared started = false"]
        );
        // Once the intent is recorded, a stopped unit stays stopped.
        let (owned2, mut observed2) = converged(&d);
        if let Some(s) = observed2.get_mut("job.service") {
            s.active_state = "inactive".into();
        }
        assert!(run(&d, &owned2, &observed2).is_empty());
        // A failed oneshot is retried.
        if let Some(s) = observed2.get_mut("job.service") {
            s.active_state = "failed".into();
            s.sub_state = "failed".into();
        }
        let actions = plan(&d, &owned2, &observed2, &BTreeSet::new(), &PlanOptions::default()).expect("plan");
        assert_eq!(actions.len(), 1);
        assert!(actions[0].is_recovery());
    }

    #[test]
    fn removal_of_masked_or_vanished_units_only_forgets_them() {
        let d0 = desired(&[("web.service", WEB), ("db.service", DB)]);
        let (owned, mut observed) = converged(&d0);
        if let Some(s) = observed.get_mut("web.service") {
            s.load_state = "masked".into();
            s.unit_file_state = "masked".into();
            s.active_state = "inactive".into();
            s.file_hash_on_disk = None;
            s.symlink_on_disk = Some("/dev/null".into());
        }
        // db.service's file was deleted by hand and systemd reloaded.
        observed.insert("db.service".into(), not_found("db.service"));
        let got = run(&DesiredUnits::default(), &owned, &observed);
        assert_eq!(
            got,
            vec![
                "remove db.service: no longer declared in Git",
                "remove web.service: no longer declared in Git",
                "daemon-reload: unit files or enablement changed",
            ]
        );
    }

    #[test]
    fn unowned_unit_is_refused_unless_adopted() {
        let d = desired(&[("web.service", WEB)]);
        let mut observed = BTreeMap::new();
        let mut s = not_found("web.service");
        s.file_hash_on_disk = Some(content_hash(b"someone else's"));
        s.load_state = "loaded".into();
        s.active_state = "active".into();
        s.unit_file_path = Some("/etc/systemd/system/web.service".into());
        observed.insert("web.service".to_string(), s);
        let err = plan(
            &d,
            &BTreeMap::new(),
            &observed,
            &BTreeSet::new(),
            &PlanOptions::default(),
        )
        .expect_err("refused");
        match &err {
            Error::UnownedUnit { unit, .. } => assert_eq!(unit, "web.service"),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("adopt = true"), "{err}");

        // A vendor unit elsewhere (not in the unit directory) counts too.
        let mut vendor = not_found("web.service");
        vendor.load_state = "loaded".into();
        vendor.unit_file_path = Some("/lib/systemd/system/web.service".into());
        let observed2 = BTreeMap::from([("web.service".to_string(), vendor)]);
        assert!(plan(
            &d,
            &BTreeMap::new(),
            &observed2,
            &BTreeSet::new(),
            &PlanOptions::default()
        )
        .is_err());

        let adopted = plan(
            &d,
            &BTreeMap::new(),
            &observed,
            &BTreeSet::new(),
            &PlanOptions { adopt: true },
        )
        .expect("adopt");
        assert_eq!(
            render(&adopted),
            vec![
                "write web.service: adopting the existing unit (file in the unit directory)",
                "enable web.service: declared enabled, unit file state is unknown",
                "daemon-reload: unit files or enablement changed",
                "restart web.service: adopting the existing unit (file in the unit directory)",
            ]
        );
    }

    #[test]
    fn templates_are_written_and_enabled_but_never_started() {
        let d = desired(&[(
            "worker@.service",
            "[Service]\nExecStart=/bin/echo %i\n[Install]\nWantedBy=multi-user.target\nDefaultInstance=a\n",
        )]);
        let observed = BTreeMap::from([("worker@.service".to_string(), not_found("worker@.service"))]);
        assert_eq!(
            run(&d, &BTreeMap::new(), &observed),
            vec![
                "write worker@.service: new unit",
                "enable worker@.service: declared enabled, unit file state is unknown",
                "daemon-reload: unit files or enablement changed",
            ]
        );
    }
}
