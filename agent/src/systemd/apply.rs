//! Observe and apply: the effectful half, behind [`UnitManager`] and
//! [`UnitFiles`] so it runs the same against D-Bus and against a fake.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::desired::DesiredUnits;
use super::error::Error;
use super::files::UnitFiles;
use super::manager::{JobResult, UnitManager};
use super::plan::{ObservedUnit, OwnedUnit, UnitAction};

/// Every unit a cycle must observe: desired and owned ones.
pub fn units_to_observe(desired: &DesiredUnits, owned: &BTreeMap<String, OwnedUnit>) -> Vec<String> {
    let names: BTreeSet<&String> = desired.units.keys().chain(owned.keys()).collect();
    names.into_iter().cloned().collect()
}

/// Observe `names`: systemd's state in one [`UnitManager::observe`] call,
/// plus the files under the unit directory.
pub async fn observe<M: UnitManager>(
    manager: &M,
    files: &UnitFiles,
    names: &[String],
) -> Result<BTreeMap<String, ObservedUnit>, Error> {
    let mut out: BTreeMap<String, ObservedUnit> = manager
        .observe(names)
        .await?
        .into_iter()
        .map(|o| (o.name.clone(), o))
        .collect();
    for name in names {
        let entry = out.entry(name.clone()).or_insert_with(|| ObservedUnit {
            name: name.clone(),
            ..Default::default()
        });
        files.observe_files(entry)?;
    }
    Ok(out)
}

/// Options of [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    /// How long to wait for each start/restart/stop job.
    pub job_timeout: Duration,
    /// Journal lines to attach to a failure.
    pub journal_lines: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            job_timeout: Duration::from_secs(90),
            journal_lines: 20,
        }
    }
}

/// How one action went.
#[derive(Debug)]
pub enum Outcome {
    /// Done (files, reload, enable/disable).
    Done,
    /// A job ran; see its result (it may have failed).
    Job(JobResult),
    /// It failed; the message is the error's one-line text.
    Failed(String),
}

/// One executed action.
#[derive(Debug)]
pub struct Step {
    /// The action.
    pub action: UnitAction,
    /// How it went.
    pub outcome: Outcome,
}

/// A unit that did not reach the state it should have, with what the
/// operator needs to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFailure {
    /// Unit name.
    pub unit: String,
    /// The action that failed.
    pub action: UnitAction,
    /// systemd's job result (`failed`, `timeout`, `dependency`, ...), when a job ran.
    pub job_result: Option<String>,
    /// The error, when the call itself failed.
    pub error: Option<String>,
    /// Active state after the attempt.
    pub active_state: String,
    /// Sub-state after the attempt.
    pub sub_state: String,
    /// The last journal lines of the unit.
    pub journal: Vec<String>,
}

impl fmt::Display for UnitFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed ({}): unit is {} ({})",
            self.action,
            self.job_result
                .as_deref()
                .or(self.error.as_deref())
                .unwrap_or("unknown"),
            self.active_state,
            self.sub_state
        )?;
        if let Some(last) = self.journal.last() {
            write!(f, "; last log line: {last}")?;
        }
        write!(f, "; see `journalctl -u {}`", self.unit)
    }
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Actions executed, in order.
    pub steps: Vec<Step>,
    /// Units that failed to start, restart or stop (the batch went on).
    pub failures: Vec<UnitFailure>,
    /// A batch-level step (files, reload, enable/disable) failed: the
    /// actions after it were not run. The next cycle retries.
    pub aborted: Option<Error>,
}

impl ApplyReport {
    /// Everything ran and every unit reached its state.
    pub fn is_success(&self) -> bool {
        self.aborted.is_none() && self.failures.is_empty()
    }
}

/// Execute `actions` (from [`super::plan::plan`]) in order.
///
/// File steps, the reload and enable/disable (each batched into one call)
/// abort the batch on error; a failing start/restart/stop is recorded in
/// [`ApplyReport::failures`] with the unit's state and journal lines, and the
/// batch goes on. `owned` is updated as steps succeed (written hashes,
/// enablement, pending reload/restart, removal), so the caller should persist
/// it after every call, successful or not.
pub async fn apply<M: UnitManager>(
    manager: &M,
    files: &UnitFiles,
    desired: &DesiredUnits,
    actions: &[UnitAction],
    owned: &mut BTreeMap<String, OwnedUnit>,
    opts: &ApplyOptions,
) -> ApplyReport {
    let mut report = ApplyReport::default();

    // Units whose change must be followed by a (re)start; recorded up front so
    // an interrupted batch finishes the job next cycle.
    let restart_planned: BTreeSet<&str> = actions
        .iter()
        .filter_map(|a| match a {
            UnitAction::Restart { unit, .. } => Some(unit.as_str()),
            UnitAction::Start { unit, .. } if !a.is_recovery() => Some(unit.as_str()),
            _ => None,
        })
        .collect();
    for unit in &restart_planned {
        if let Some(o) = owned.get_mut(*unit) {
            o.restart_pending = true;
        }
    }

    let mut i = 0;
    while i < actions.len() {
        let action = &actions[i];
        match action {
            UnitAction::Enable { .. } | UnitAction::Disable { .. } => {
                let enable = matches!(action, UnitAction::Enable { .. });
                let mut j = i;
                let mut names: Vec<String> = Vec::new();
                while j < actions.len() {
                    match (&actions[j], enable) {
                        (UnitAction::Enable { unit, .. }, true) | (UnitAction::Disable { unit, .. }, false) => {
                            if !names.contains(unit) {
                                names.push(unit.clone());
                            }
                            j += 1;
                        }
                        _ => break,
                    }
                }
                let result = if enable {
                    manager.enable(&names).await
                } else {
                    manager.disable(&names).await
                };
                let failed = result.as_ref().err().map(ToString::to_string);
                for a in &actions[i..j] {
                    report.steps.push(Step {
                        action: a.clone(),
                        outcome: match &failed {
                            None => Outcome::Done,
                            Some(e) => Outcome::Failed(e.clone()),
                        },
                    });
                }
                if let Err(e) = result {
                    report.aborted = Some(e);
                    return report;
                }
                for n in &names {
                    if let Some(o) = owned.get_mut(n) {
                        o.enabled = enable;
                    }
                }
                i = j;
                continue;
            }
            UnitAction::WriteUnit { unit, .. } => {
                let result = match desired.units.get(unit) {
                    Some(d) => files.write_unit(unit, &d.content).map(|()| {
                        let o = owned.entry(unit.clone()).or_default();
                        o.content_hash = d.content_hash.clone();
                        o.install_hash = d.install_hash.clone();
                        o.reload_pending = true;
                        o.restart_pending = restart_planned.contains(unit.as_str());
                    }),
                    None => Err(not_desired(unit)),
                };
                if finish_batch_step(&mut report, action, result) {
                    return report;
                }
            }
            UnitAction::WriteDropIn { unit, dropin, .. } => {
                let result = match desired.units.get(unit).and_then(|d| d.dropins.get(dropin)) {
                    Some(dd) => files.write_dropin(unit, dropin, &dd.content).map(|()| {
                        let o = owned.entry(unit.clone()).or_default();
                        o.dropin_hashes.insert(dropin.clone(), dd.hash.clone());
                        o.reload_pending = true;
                    }),
                    None => Err(not_desired(&format!("{unit}.d/{dropin}"))),
                };
                if finish_batch_step(&mut report, action, result) {
                    return report;
                }
            }
            UnitAction::RemoveDropIn { unit, dropin, .. } => {
                let result = files.remove_dropin(unit, dropin).map(|()| {
                    if let Some(o) = owned.get_mut(unit) {
                        o.dropin_hashes.remove(dropin);
                        o.reload_pending = true;
                    }
                });
                if finish_batch_step(&mut report, action, result) {
                    return report;
                }
            }
            UnitAction::RemoveUnit { unit, .. } => {
                let result = files.remove_unit(unit).map(|()| {
                    owned.remove(unit);
                });
                if finish_batch_step(&mut report, action, result) {
                    return report;
                }
            }
            UnitAction::Reload { .. } => {
                let result = manager.reload().await.map(|()| {
                    for o in owned.values_mut() {
                        o.reload_pending = false;
                    }
                });
                if finish_batch_step(&mut report, action, result) {
                    return report;
                }
            }
            UnitAction::Start { unit, .. } | UnitAction::Restart { unit, .. } | UnitAction::Stop { unit, .. } => {
                let result = match action {
                    UnitAction::Start { .. } => manager.start(unit, opts.job_timeout).await,
                    UnitAction::Restart { .. } => manager.restart(unit, opts.job_timeout).await,
                    _ => manager.stop(unit, opts.job_timeout).await,
                };
                let is_stop = matches!(action, UnitAction::Stop { .. });
                match result {
                    Ok(job) => {
                        if !is_stop {
                            if let Some(o) = owned.get_mut(unit) {
                                o.restart_pending = false;
                            }
                        }
                        let ok = if is_stop { job.result == "done" } else { job.succeeded() };
                        if !ok {
                            let failure = UnitFailure {
                                unit: unit.clone(),
                                action: action.clone(),
                                job_result: Some(job.result.clone()),
                                error: None,
                                active_state: job.active_state.clone(),
                                sub_state: job.sub_state.clone(),
                                journal: journal(manager, unit, opts.journal_lines).await,
                            };
                            report.failures.push(failure);
                        }
                        report.steps.push(Step {
                            action: action.clone(),
                            outcome: Outcome::Job(job),
                        });
                    }
                    Err(e) => {
                        let state = manager
                            .observe(std::slice::from_ref(unit))
                            .await
                            .ok()
                            .and_then(|v| v.into_iter().next())
                            .unwrap_or_default();
                        report.failures.push(UnitFailure {
                            unit: unit.clone(),
                            action: action.clone(),
                            job_result: None,
                            error: Some(e.to_string()),
                            active_state: state.active_state,
                            sub_state: state.sub_state,
                            journal: journal(manager, unit, opts.journal_lines).await,
                        });
                        report.steps.push(Step {
                            action: action.clone(),
                            outcome: Outcome::Failed(e.to_string()),
                        });
                    }
                }
            }
            UnitAction::Report { .. } => {
                report.steps.push(Step {
                    action: action.clone(),
                    outcome: Outcome::Done,
                });
            }
        }
        i += 1;
    }

    for (name, d) in &desired.units {
        if let Some(o) = owned.get_mut(name) {
            o.started = d.intent.started;
        }
    }
    report
}

fn not_desired(what: &str) -> Error {
    Error::Io {
        op: "write",
        path: what.into(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the action does not match the desired units (plan and apply got different inputs)",
        ),
    }
}

/// Record a batch-level step; returns true when the batch must stop.
fn finish_batch_step(report: &mut ApplyReport, action: &UnitAction, result: Result<(), Error>) -> bool {
    match result {
        Ok(()) => {
            report.steps.push(Step {
                action: action.clone(),
                outcome: Outcome::Done,
            });
            false
        }
        Err(e) => {
            report.steps.push(Step {
                action: action.clone(),
                outcome: Outcome::Failed(e.to_string()),
            });
            report.aborted = Some(e);
            true
        }
    }
}

/// The unit's last journal lines; journald may lag a little behind the
/// failure, so an empty answer is retried briefly. Errors become a line.
async fn journal<M: UnitManager>(manager: &M, unit: &str, lines: usize) -> Vec<String> {
    if lines == 0 {
        return Vec::new();
    }
    for attempt in 0..4 {
        match manager.journal_tail(unit, lines).await {
            Ok(v) if !v.is_empty() => return v,
            Ok(_) if attempt < 3 => tokio::time::sleep(Duration::from_millis(150)).await,
            Ok(_) => return Vec::new(),
            Err(e) => return vec![format!("(journal unavailable: {e})")],
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::super::desired::{desired_units, Layer};
    use super::super::plan::{plan, PlanOptions};
    use super::*;
    use std::sync::Mutex;

    /// A fake systemd: records calls, keeps unit states in memory.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        states: Mutex<BTreeMap<String, (String, String, String)>>,
        fail_start: BTreeSet<String>,
        fail_reload: bool,
    }

    impl Fake {
        fn log(&self, s: String) {
            self.calls.lock().expect("lock").push(s);
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("lock").clone()
        }
        fn set(&self, name: &str, active: &str, file_state: &str) {
            self.states
                .lock()
                .expect("lock")
                .insert(name.into(), (active.into(), "x".into(), file_state.into()));
        }
    }

    impl Fake {
        fn job(&self, name: &str) -> JobResult {
            let failed = self.fail_start.contains(name);
            JobResult {
                unit: name.into(),
                result: if failed { "failed" } else { "done" }.into(),
                active_state: if failed { "failed" } else { "active" }.into(),
                sub_state: if failed { "failed" } else { "running" }.into(),
            }
        }
    }

    impl UnitManager for Fake {
        async fn observe(&self, names: &[String]) -> Result<Vec<ObservedUnit>, Error> {
            self.log(format!("observe {}", names.join(",")));
            let states = self.states.lock().expect("lock");
            Ok(names
                .iter()
                .map(|n| {
                    let (a, s, f) = states
                        .get(n)
                        .cloned()
                        .unwrap_or_else(|| ("inactive".into(), "dead".into(), String::new()));
                    ObservedUnit {
                        name: n.clone(),
                        load_state: if f.is_empty() { "not-found" } else { "loaded" }.into(),
                        active_state: a,
                        sub_state: s,
                        unit_file_state: f,
                        ..Default::default()
                    }
                })
                .collect())
        }
        async fn reload(&self) -> Result<(), Error> {
            self.log("reload".into());
            if self.fail_reload {
                return Err(Error::Command {
                    program: "fake".into(),
                    message: "reload refused".into(),
                });
            }
            Ok(())
        }
        async fn enable(&self, names: &[String]) -> Result<(), Error> {
            self.log(format!("enable {}", names.join(",")));
            Ok(())
        }
        async fn disable(&self, names: &[String]) -> Result<(), Error> {
            self.log(format!("disable {}", names.join(",")));
            Ok(())
        }
        async fn start(&self, name: &str, _t: Duration) -> Result<JobResult, Error> {
            self.log(format!("start {name}"));
            Ok(self.job(name))
        }
        async fn restart(&self, name: &str, _t: Duration) -> Result<JobResult, Error> {
            self.log(format!("restart {name}"));
            Ok(self.job(name))
        }

        async fn stop(&self, name: &str, _t: Duration) -> Result<JobResult, Error> {
            self.log(format!("stop {name}"));
            Ok(JobResult {
                unit: name.into(),
                result: "done".into(),
                active_state: "inactive".into(),
                sub_state: "dead".into(),
            })
        }
        async fn journal_tail(&self, name: &str, lines: usize) -> Result<Vec<String>, Error> {
            self.log(format!("journal {name} {lines}"));
            Ok(vec![format!("{name}: boom")])
        }
    }

    fn desired(files: &[(&str, &str)]) -> DesiredUnits {
        let map: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        desired_units(&[Layer { name: "", files: &map }]).expect("valid")
    }

    const WEB: &str = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
    const API: &str = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";

    async fn cycle(
        fake: &Fake,
        files: &UnitFiles,
        d: &DesiredUnits,
        owned: &mut BTreeMap<String, OwnedUnit>,
    ) -> ApplyReport {
        let names = units_to_observe(d, owned);
        let observed = observe(fake, files, &names).await.expect("observe");
        let actions = plan(d, owned, &observed, &BTreeSet::new(), &PlanOptions::default()).expect("plan");
        apply(fake, files, d, &actions, owned, &ApplyOptions::default()).await
    }

    #[tokio::test]
    async fn install_then_noop_then_change_batches_calls() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = UnitFiles::new(tmp.path());
        let fake = Fake::default();
        let mut owned = BTreeMap::new();
        let d = desired(&[("web.service", WEB), ("api.service", API)]);

        let r = cycle(&fake, &files, &d, &mut owned).await;
        assert!(r.is_success(), "{r:?}");
        assert_eq!(
            fake.calls(),
            vec![
                "observe api.service,web.service",
                "enable api.service,web.service",
                "reload",
                "start api.service",
                "start web.service",
            ]
        );
        assert_eq!(owned.len(), 2);
        assert!(owned.values().all(|o| !o.reload_pending && !o.restart_pending));
        assert!(tmp.path().join("web.service").is_file());

        // Converged: only the observation call.
        fake.set("web.service", "active", "enabled");
        fake.set("api.service", "active", "enabled");
        fake.calls.lock().expect("lock").clear();
        let r = cycle(&fake, &files, &d, &mut owned).await;
        assert!(r.steps.is_empty());
        assert_eq!(fake.calls(), vec!["observe api.service,web.service"]);

        // Change one unit: only it restarts.
        fake.calls.lock().expect("lock").clear();
        let d2 = desired(&[
            ("web.service", WEB),
            (
                "api.service",
                "[Service]\nExecStart=/bin/sleep 99\n[Install]\nWantedBy=multi-user.target\n",
            ),
        ]);
        let r = cycle(&fake, &files, &d2, &mut owned).await;
        assert!(r.is_success());
        assert_eq!(
            fake.calls(),
            vec!["observe api.service,web.service", "reload", "restart api.service",]
        );
        assert_eq!(
            std::fs::read(tmp.path().join("api.service")).expect("read"),
            d2.units["api.service"].content
        );
    }

    #[tokio::test]
    async fn failure_is_reported_with_journal_and_batch_continues() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = UnitFiles::new(tmp.path());
        let fake = Fake {
            fail_start: BTreeSet::from(["api.service".to_string()]),
            ..Default::default()
        };
        let mut owned = BTreeMap::new();
        let d = desired(&[("web.service", WEB), ("api.service", API)]);
        let r = cycle(&fake, &files, &d, &mut owned).await;
        assert!(!r.is_success());
        assert_eq!(r.failures.len(), 1);
        let f = &r.failures[0];
        assert_eq!(f.unit, "api.service");
        assert_eq!(f.job_result.as_deref(), Some("failed"));
        assert_eq!(f.journal, vec!["api.service: boom"]);
        assert!(f.to_string().contains("last log line: api.service: boom"), "{f}");
        assert!(fake.calls().contains(&"start web.service".to_string()));
    }

    #[tokio::test]
    async fn aborted_reload_leaves_pending_marks_for_next_cycle() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = UnitFiles::new(tmp.path());
        let mut fake = Fake {
            fail_reload: true,
            ..Default::default()
        };
        let mut owned = BTreeMap::new();
        let d = desired(&[("web.service", WEB)]);
        let r = cycle(&fake, &files, &d, &mut owned).await;
        assert!(r.aborted.is_some());
        let o = &owned["web.service"];
        assert!(o.reload_pending && o.restart_pending, "{o:?}");
        assert!(!fake.calls().iter().any(|c| c.starts_with("start")));

        // Next cycle: files already right, but reload and start still happen.
        fake.fail_reload = false;
        fake.set("web.service", "inactive", "enabled");
        fake.calls.lock().expect("lock").clear();
        let r = cycle(&fake, &files, &d, &mut owned).await;
        assert!(r.is_success(), "{r:?}");
        assert_eq!(fake.calls(), vec!["observe web.service", "reload", "start web.service"]);
        assert!(!owned["web.service"].restart_pending);
    }

    #[tokio::test]
    async fn removal_forgets_the_unit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = UnitFiles::new(tmp.path());
        let fake = Fake::default();
        let mut owned = BTreeMap::new();
        let d = desired(&[
            ("web.service", WEB),
            ("web.service.d/a.conf", "[Service]\nEnvironment=A=1\n"),
        ]);
        assert!(cycle(&fake, &files, &d, &mut owned).await.is_success());
        fake.set("web.service", "active", "enabled");
        fake.calls.lock().expect("lock").clear();
        let r = cycle(&fake, &files, &DesiredUnits::default(), &mut owned).await;
        assert!(r.is_success(), "{r:?}");
        assert_eq!(
            fake.calls(),
            vec![
                "observe web.service",
                "stop web.service",
                "disable web.service",
                "reload"
            ]
        );
        assert!(owned.is_empty());
        assert!(!tmp.path().join("web.service").exists());
        assert!(!tmp.path().join("web.service.d").exists());
    }
}
