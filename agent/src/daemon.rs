//! The agent: one cycle (fetch, load, observe, plan, apply, record) and the loop around it.
//!
//! Two clocks drive the loop: the poll (is there a new commit?) and the drift check (is the host
//! still what the applied commit says?). Drift correction needs no network: the applied
//! commit's objects are in the local bare repository.

use crate::apply::{self, describe};
use crate::config::Config;
use crate::desired::{self, Desired, HostFacts};
use crate::docker::{container_name, Engine};
use crate::files;
use crate::plan::{self, ObservedContainer};
use crate::source::{self, Repo};
use crate::state::{self, Applied, HistoryEntry, LastError, Refused, State};
use crate::trust::{self, Signer, TrustStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// State could not be read, written or locked.
    #[error(transparent)]
    State(#[from] state::Error),
    /// The local repository could not be opened.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The trust anchors could not be loaded.
    #[error(transparent)]
    Trust(#[from] crate::trust::Error),
    /// The age identities could not be loaded.
    #[error(transparent)]
    Secrets(#[from] crate::secrets::Error),
    /// The state directory could not be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// Directory.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// What one cycle found: the problems it recorded, in step order.
#[derive(Debug, Default)]
pub struct Report {
    /// `(step, message)` for each problem.
    pub problems: Vec<(String, String)>,
    /// Number of changes applied.
    pub changes: usize,
    /// Steps that ran, in order.
    pub steps: Vec<&'static str>,
    /// How long each step took this cycle (summed when a step runs more than once).
    pub took: Vec<(&'static str, Duration)>,
    /// The diff of this cycle's newest revision is recorded.
    diff_recorded: bool,
}

/// The cycle's steps, in order.
pub const STEPS: [&str; 8] = [
    "fetch", "verify", "load", "decrypt", "observe", "plan", "apply", "health",
];

/// Each step that ran (or failed) this cycle, with its condition.
fn conditions(report: &Report) -> Vec<state::StepCondition> {
    STEPS
        .iter()
        .filter(|s| report.steps.contains(s) || report.problems.iter().any(|(p, _)| p == *s))
        .map(|s| {
            let failure = report.problems.iter().find(|(p, _)| p == s).map(|(_, m)| m.clone());
            let took = report.took.iter().find(|(t, _)| t == s).map(|(_, d)| *d);
            state::StepCondition {
                step: (*s).to_owned(),
                ok: failure.is_none(),
                message: failure,
                duration_us: took.map(|d| d.as_micros() as u64),
            }
        })
        .collect()
}

impl Report {
    /// Note that `step` ran.
    pub fn ran(&mut self, step: &'static str) {
        if !self.steps.contains(&step) {
            self.steps.push(step);
        }
    }

    /// `step` took `d` (added to its time so far this cycle, and to the step's histogram).
    pub fn took(&mut self, step: &'static str, d: Duration) {
        crate::metrics::global().step(step, d);
        match self.took.iter_mut().find(|(s, _)| *s == step) {
            Some((_, total)) => *total += d,
            None => self.took.push((step, d)),
        }
    }

    /// The first problem as one line, if any.
    pub fn first_problem(&self) -> Option<String> {
        self.problems.first().map(|(step, msg)| format!("{step}: {msg}"))
    }
}

/// The agent and everything it holds between cycles.
pub struct Agent<E: Engine> {
    cfg: Config,
    repo: Repo,
    engine: E,
    state: State,
    /// The desired state of the last loaded commit, so drift checks don't re-parse.
    cache: Option<(String, Arc<Desired>)>,
    /// Trust anchors from the host config; `None` with `allow_unsigned`.
    trust: Option<TrustStore>,
    /// The signer of the revision being applied.
    pending_signer: Option<Signer>,
    /// Age identities for SOPS files.
    identities: crate::secrets::Identities,
    /// Services tend keeps putting back, with their backoff.
    backoff: std::collections::HashMap<String, Backoff>,
    /// systemd over D-Bus, connected on first use.
    units_mgr: Option<crate::systemd::DbusUnitManager>,
    /// The state as the API sees it.
    shared: Option<crate::api::Shared>,
    /// Key of keyed hashes of secret content (per host, kept in the state dir).
    hash_key: [u8; 32],
    /// Primary URL, mirrors and bundle inboxes, with their schedules.
    net: crate::sources::Sources,
    /// When the host was last compared with the desired state (observe + plan).
    drift_checked: Option<Instant>,
    /// Polls that find nothing new leave drift to the drift clock (the daemon's loop); one-shot
    /// cycles always check.
    cheap_polls: bool,
    /// What was last written to the state file (a hash of its lasting part) and when.
    persisted: Option<(u64, Instant)>,
}

/// How many packs the local repository may collect (one per fetch) before they are rewritten
/// into one.
const CONSOLIDATE_AT: usize = 32;

/// How long the state file may lag behind the state when only clocks moved (the API always
/// serves the live state; the file is what `tend status` reads while the daemon is down).
const LAZY_SAVE: Duration = Duration::from_secs(300);

/// Read the host's secret-hash key, creating it (32 random bytes, 0600) the first time.
pub fn secret_hash_key(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(&key)?;
    f.sync_all()?;
    Ok(key)
}

/// Check `tip` against the host's trust policy (see [`Agent`]'s `verify`): `None` signer with
/// `allow_unsigned`.
fn verify_commit(
    cfg: &Config,
    trust: Option<&TrustStore>,
    repo: &Repo,
    tip: &str,
    applied: Option<&str>,
) -> Result<Option<Signer>, String> {
    let Some(store) = trust else { return Ok(None) };
    let approved = std::fs::read_to_string(rollback_approval_file(cfg))
        .ok()
        .map(|s| s.trim().to_owned());
    let verdict = trust::check(
        store,
        repo,
        tip,
        applied,
        cfg.trust.require,
        approved.as_deref().filter(|a| *a == tip),
    )
    .map_err(|e| crate::source::error_chain(&e))?;
    Ok(Some(verdict.signer))
}

/// The file `tend approve --allow-rollback` writes: one commit id allowed once to be applied
/// although it does not descend from the applied commit.
pub fn rollback_approval_file(cfg: &Config) -> std::path::PathBuf {
    cfg.paths.state.join("approved-rollback")
}

fn host_facts(cfg: &Config) -> HostFacts {
    HostFacts {
        name: cfg.host.name.clone(),
        project: cfg.host.project.clone(),
    }
}

impl<E: Engine> Agent<E> {
    /// Open (or create) the state dir and repository. The caller holds the [`state::Lock`].
    pub fn new(cfg: Config, engine: E) -> Result<Agent<E>, Error> {
        std::fs::create_dir_all(&cfg.paths.state).map_err(|source| Error::Dir {
            path: cfg.paths.state.clone(),
            source,
        })?;
        let repo = Repo::open_or_init(&cfg.repo_dir())?;
        let net = crate::sources::Sources::new(&cfg)?;
        let trust = if cfg.trust.allow_unsigned {
            log::warn!("[trust] allow_unsigned = true: commits are applied WITHOUT signature verification");
            None
        } else {
            Some(TrustStore::load(
                cfg.trust.allowed_signers.as_deref(),
                cfg.trust.openpgp_keys.as_deref(),
            )?)
        };
        let mut identities = crate::secrets::Identities::load(&cfg.secrets.age_identities)?;
        identities.merge(crate::secrets::Identities::from_env()?);
        let hash_key = secret_hash_key(&cfg.secret_hash_key_file()).map_err(|source| Error::Dir {
            path: cfg.secret_hash_key_file(),
            source,
        })?;
        let mut state = State::load(&cfg.state_file())?;
        state.unverified = cfg.trust.allow_unsigned;
        state.version = 1;
        state.host = cfg.host.name.clone();
        state.source.url = source::redact(&cfg.source.url);
        state.source.branch = cfg.source.branch.clone();
        Ok(Agent {
            cfg,
            repo,
            engine,
            state,
            cache: None,
            trust,
            pending_signer: None,
            identities,
            hash_key,
            backoff: std::collections::HashMap::new(),
            units_mgr: None,
            shared: None,
            net,
            drift_checked: None,
            cheap_polls: false,
            persisted: None,
        })
    }

    /// Check `tip` against the trust policy: a trusted signature, descent from the applied
    /// commit (unless the operator approved a rollback to exactly this commit), and with
    /// `require = "all"` every commit in between.
    fn verify(&self, tip: &str, applied: Option<&str>) -> Result<Option<Signer>, String> {
        verify_commit(&self.cfg, self.trust.as_ref(), &self.repo, tip, applied)
    }

    /// The sources (to hand them a trigger sender, or a bundle to import).
    pub fn sources_mut(&mut self) -> &mut crate::sources::Sources {
        &mut self.net
    }

    /// Record `tip` as refused by `step`.
    fn refuse(&mut self, tip: &str, step: &str, reason: String, started: Instant, report: &mut Report) {
        log::error!(revision = short(tip), step = step; "refusing commit {}: {reason}", short(tip));
        self.set_phase(tip, state::Phase::Failed, Some(format!("{step}: {reason}")));
        let commit = self.commit_info(tip);
        self.state.record(HistoryEntry {
            at: state::now(),
            commit: tip.to_owned(),
            subject: commit.subject.clone(),
            outcome: "refused".into(),
            message: reason.clone(),
            signer: None,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        self.state.refused = Some(Refused {
            commit,
            step: step.into(),
            reason: reason.clone(),
            since: state::now(),
        });
        report
            .problems
            .push((step.into(), format!("commit {} refused: {reason}", short(tip))));
    }

    /// Carry out an operator's command (intents are files in the state dir, so they survive a
    /// restart and work the same with and without the daemon).
    pub fn command(&mut self, cmd: &Command) -> serde_json::Value {
        let result: Result<String, String> = match cmd {
            Command::Sync => Ok("cycle started".into()),
            Command::Suspend => std::fs::write(self.cfg.suspend_file(), b"suspended\n")
                .map(|()| "suspended: no applies; drift is only reported".into())
                .map_err(|e| e.to_string()),
            Command::Resume => match std::fs::remove_file(self.cfg.suspend_file()) {
                Ok(()) => Ok("resumed".into()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("not suspended".into()),
                Err(e) => Err(e.to_string()),
            },
            Command::Approve { rev, rollback } => match self.repo.resolve(rev) {
                Err(e) => Err(e.to_string()),
                Ok(id) => {
                    let file = if *rollback {
                        rollback_approval_file(&self.cfg)
                    } else {
                        self.cfg.approval_file()
                    };
                    std::fs::write(&file, format!("{id}\n"))
                        .map(|()| format!("approved {id}"))
                        .map_err(|e| e.to_string())
                }
            },
        };
        log::info!("command {cmd:?}: {result:?}");
        match result {
            Ok(m) => serde_json::json!({ "ok": true, "message": m }),
            Err(e) => serde_json::json!({ "ok": false, "error": e }),
        }
    }

    /// Share the state with the API after every save.
    pub fn share(&mut self, shared: crate::api::Shared) {
        if let Ok(mut s) = shared.lock() {
            *s = self.state.clone();
        }
        self.shared = Some(shared);
    }

    /// The current state (for tests and the status API).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Load (and decrypt) the desired state of `commit`. The error says which step refused it.
    fn load(&mut self, commit: &str) -> Result<Arc<Desired>, (&'static str, String)> {
        if let Some((c, d)) = &self.cache {
            if c == commit {
                return Ok(d.clone());
            }
        }
        let tree = self.repo.tree(commit).map_err(|e| ("load", e.to_string()))?;
        let ctx = desired::SecretsCtx {
            identities: Some(&self.identities),
            hash_key: &self.hash_key,
        };
        let d = desired::load(&tree, &self.cfg.host.layers, &host_facts(&self.cfg), ctx)
            .map_err(|e| (if e.is_decrypt() { "decrypt" } else { "load" }, e.to_string()))?;
        // Host files only where this host's config allows them.
        for (path, f) in &d.host_files {
            if !crate::hostfiles::allowed(path, &self.cfg.files.allowed_prefixes) {
                return Err((
                    "load",
                    format!(
                        "{}: {path} is outside the host's [files] allowed_prefixes ({})",
                        f.source,
                        if self.cfg.files.allowed_prefixes.is_empty() {
                            "none are allowed".to_owned()
                        } else {
                            self.cfg.files.allowed_prefixes.join(", ")
                        }
                    ),
                ));
            }
        }
        let d = Arc::new(d);
        self.cache = Some((commit.to_owned(), d.clone()));
        Ok(d)
    }

    fn commit_info(&self, id: &str) -> source::CommitInfo {
        self.repo.commit_info(id).unwrap_or_else(|_| source::CommitInfo {
            id: id.to_owned(),
            subject: String::new(),
            time: 0,
        })
    }

    /// Run one cycle. With `fetch`, poll the source first; otherwise only correct drift.
    pub async fn cycle(&mut self, fetch: bool) -> Report {
        let started = Instant::now();
        let mut report = Report::default();
        let mut tip = None;
        let last_recorded = self.state.history.front().cloned();
        if fetch {
            report.ran("fetch");
            // Primary, mirrors, bundles: the first verifiable commit wins (see `sources`).
            let applied = self.state.applied.as_ref().map(|a| a.commit.id.clone());
            let approval = std::fs::read_to_string(rollback_approval_file(&self.cfg)).unwrap_or_default();
            let refused = self
                .state
                .refused
                .as_ref()
                .filter(|r| approval.trim() != r.commit.id)
                .map(|r| (r.commit.id.clone(), r.reason.clone()));
            let Agent {
                net,
                repo,
                state,
                cfg,
                trust,
                ..
            } = self;
            let (repo, cfg, trust) = (&*repo, &*cfg, trust.as_ref());
            let check = |t: &str| -> Result<(), String> {
                match &refused {
                    // A refused tip is not verified again on every poll.
                    Some((id, reason)) if id == t => Err(reason.clone()),
                    _ => verify_commit(cfg, trust, repo, t, applied.as_deref()).map(|_| ()),
                }
            };
            let t = Instant::now();
            let polled = tokio::task::block_in_place(|| net.poll(repo, state, applied.as_deref(), &check));
            report.took("fetch", t.elapsed());
            report.problems.extend(polled.problems);
            if polled.wrote_objects {
                // One pack per fetch adds up: past a few dozen, they are rewritten into one.
                if !self.net.fetch_running() {
                    let path = self.repo.path().to_owned();
                    match tokio::task::block_in_place(|| crate::repack::consolidate(&path, CONSOLIDATE_AT)) {
                        Ok(Some(c)) => log::info!(
                            step = "fetch";
                            "repository: {} packs ({} KiB) rewritten into one ({} objects, {} KiB)",
                            c.packs,
                            c.bytes_before / 1024,
                            c.objects,
                            c.bytes_after / 1024
                        ),
                        Ok(None) => {}
                        Err(e) => log::warn!("{e}"),
                    }
                }
                if let Err(e) = self.repo.refresh() {
                    report.problems.push(("fetch".into(), e.to_string()));
                }
            }
            tip = polled.tip;
        }

        // Without a fetch, the last fetched tip still counts (an approval or a resume can make it
        // applicable); it is in the local repository.
        if tip.is_none() && !fetch {
            tip = self
                .state
                .source
                .remote_tip
                .clone()
                .filter(|t| self.repo.resolve(t).is_ok());
        }
        self.state.mode = Some(self.cfg.apply.mode);
        self.state.suspended = self.cfg.suspend_file().exists();
        let applied = self.state.applied.as_ref().map(|a| a.commit.id.clone());
        let mut target: Option<(String, Arc<Desired>)> = None;
        let bad_tip = tip
            .as_ref()
            .is_some_and(|t| self.state.bad.as_ref().is_some_and(|b| &b.commit.id == t));
        if bad_tip {
            let reason = self.state.bad.as_ref().map(|b| b.reason.clone()).unwrap_or_default();
            report.problems.push((
                "health".into(),
                format!(
                    "commit {} was rolled back ({reason}); waiting for a newer commit",
                    short(tip.as_deref().unwrap_or_default())
                ),
            ));
        }
        if let Some(tip) = tip.filter(|_| !bad_tip) {
            // A refused tip is not verified again on every poll; an approval changes that.
            let approval = std::fs::read_to_string(rollback_approval_file(&self.cfg)).unwrap_or_default();
            let refused_already = self
                .state
                .refused
                .as_ref()
                .is_some_and(|r| r.commit.id == tip && approval.trim() != tip && r.step != "plan");
            if applied.as_deref() == Some(tip.as_str()) {
                // Nothing new.
            } else if refused_already {
                let (step, r) = self
                    .state
                    .refused
                    .as_ref()
                    .map(|r| (r.step.clone(), r.reason.clone()))
                    .unwrap_or_default();
                report
                    .problems
                    .push((step, format!("commit {} refused: {r}", short(&tip))));
            } else {
                // Verify before anything of the commit is read.
                report.ran("verify");
                report.ran("load");
                let t = Instant::now();
                let verified = tokio::task::block_in_place(|| self.verify(&tip, applied.as_deref()));
                report.took("verify", t.elapsed());
                match verified {
                    Err(reason) => self.refuse(&tip, "verify", reason, started, &mut report),
                    Ok(signer) => {
                        if let Some(s) = &signer {
                            log::info!(revision = short(&tip), step = "verify"; "commit {} verified: signed by {s}", short(&tip));
                        }
                        self.set_phase(&tip, state::Phase::Verified, None);
                        let t = Instant::now();
                        let loaded = tokio::task::block_in_place(|| self.load(&tip));
                        report.took("load", t.elapsed());
                        match loaded {
                            Ok(d) => {
                                self.pending_signer = signer;
                                self.set_phase(&tip, state::Phase::Planned, None);
                                target = Some((tip, d));
                            }
                            Err((step, reason)) => self.refuse(&tip, step, reason, started, &mut report),
                        }
                    }
                }
            }
        }
        // Manual mode and suspension: the new revision is planned (for `tend diff`) but waits.
        let suspended = self.state.suspended;
        let approved = std::fs::read_to_string(self.cfg.approval_file()).unwrap_or_default();
        let mut waiting: Option<(String, Arc<Desired>)> = None;
        if let Some((rev, d)) = target.take() {
            if suspended {
                waiting = Some((rev, d));
            } else if self.cfg.apply.mode == crate::config::Mode::Manual && approved.trim() != rev {
                if self.state.pending.as_ref().is_none_or(|p| p.commit.id != rev) {
                    log::info!(
                        "commit {} is waiting for approval (tend approve {})",
                        short(&rev),
                        short(&rev)
                    );
                    self.state.pending = Some(state::Pending {
                        commit: self.commit_info(&rev),
                        since: state::now(),
                        signer: self.pending_signer.as_ref().map(|s| s.to_string()),
                    });
                }
                waiting = Some((rev, d));
            } else {
                target = Some((rev, d));
            }
        }
        if let Some((rev, d)) = &waiting {
            self.reconcile(rev, d, applied.as_deref(), started, &mut report, false)
                .await;
        }
        if target.is_none() {
            if let Some(a) = applied.clone() {
                match tokio::task::block_in_place(|| self.load(&a)) {
                    Ok(d) => target = Some((a, d)),
                    Err((step, e)) => report.problems.push((step.into(), e)),
                }
            }
        }

        // A poll that found nothing new is only a poll: the drift clock compares the host with
        // the applied revision (a poll every 10 s need not observe everything every 10 s).
        let drift_due = self
            .drift_checked
            .is_none_or(|t| t.elapsed() + Duration::from_millis(500) >= self.cfg.apply.drift_interval);
        let nothing_new = fetch && self.cheap_polls && waiting.is_none() && !drift_due;
        let only_a_poll = nothing_new && target.as_ref().is_none_or(|(rev, _)| applied.as_deref() == Some(rev));
        if let Some((rev, desired)) = target.filter(|_| !only_a_poll) {
            let apply = !suspended;
            self.reconcile(&rev, &desired, applied.as_deref(), started, &mut report, apply)
                .await;
        }
        if !only_a_poll {
            // The drift clock ticked (even with nothing applied yet to compare with).
            self.drift_checked = Some(Instant::now());
        }
        self.state.steps = conditions(&report);
        self.state.last_error = report.problems.last().map(|(step, message)| LastError {
            at: state::now(),
            step: step.clone(),
            message: message.clone(),
        });
        self.state.last_cycle = Some(state::now());
        self.state.last_cycle_us = Some(started.elapsed().as_micros() as u64);
        self.net.finish(&mut self.state);
        self.publish(&mut report);
        // Outcomes recorded by this cycle go to metrics and hooks.
        crate::events::cycle_finished(
            &self.state,
            last_recorded.as_ref(),
            started.elapsed(),
            report.problems.is_empty(),
        );
        report
    }

    async fn reconcile(
        &mut self,
        rev: &str,
        desired: &Desired,
        applied: Option<&str>,
        started: Instant,
        report: &mut Report,
        apply: bool,
    ) {
        report.ran("observe");
        let t = Instant::now();
        let observed = self.engine.observe().await;
        report.took("observe", t.elapsed());
        let observed = match observed {
            Ok(o) => o,
            Err(e) => {
                report.problems.push(("observe".into(), e.to_string()));
                return;
            }
        };
        report.ran("plan");
        let t = Instant::now();
        let mut plan = plan::plan(desired, &observed, &self.state.specs);
        report.took("plan", t.elapsed());
        let is_new = applied != Some(rev);
        if !report.diff_recorded {
            self.state.diff = Some(state::Diff {
                commit: rev.to_owned(),
                at: state::now(),
                steps: plan.steps.clone(),
            });
            report.diff_recorded = true;
        }
        if !apply {
            if !is_new && !plan.is_empty() {
                let what: Vec<String> = plan
                    .steps
                    .iter()
                    .map(|s| format!("{} ({})", describe(&s.action), s.reason))
                    .collect();
                log::warn!("suspended: drift not corrected: {}", what.join("; "));
            }
            if !is_new {
                if let Ok(o) = self.engine.observe().await {
                    self.record_containers(desired, &o.containers);
                }
            }
            return;
        }
        report.ran("apply");
        if is_new {
            self.set_phase(rev, state::Phase::Applying, None);
            // Persist the intent before touching anything: a crash mid-apply resumes here.
            self.save(report);
        }
        if !is_new {
            self.hold_back_crash_loops(&mut plan, &observed.containers);
        }
        if !desired.files.is_empty() {
            match self.materialize_files(desired, rev) {
                Ok(n) if n > 0 => log::info!(step = "files"; "materialized {n} repository path(s) for bind mounts"),
                Ok(_) => {}
                Err(e) => {
                    report.problems.push(("files".into(), e));
                    return;
                }
            }
        }
        let roots = self.roots();
        let t = Instant::now();
        let delivered = crate::secretfs::deliver(desired, &roots);
        report.took("decrypt", t.elapsed());
        let changed_secrets = match delivered {
            Ok(changed) => {
                if !changed.is_empty() {
                    log::info!(
                        step = "decrypt";
                        "secrets delivered to tmpfs: {}",
                        changed.iter().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
                changed
            }
            Err(e) => {
                report.problems.push(("decrypt".into(), e.to_string()));
                return;
            }
        };
        // Host files, then units, then containers: together, the apply step's time.
        let apply_started = Instant::now();
        // Changes to the host besides containers: they make the health gate wait to settle.
        let mut host_changes = 0;
        if let Some(synced) = self.sync_host_files(desired) {
            match synced {
                Ok(o) => {
                    host_changes += o.written.len() + o.removed.len();
                    for p in &o.written {
                        log::info!(step = "apply", resource = p.as_str(); "host file {p} written");
                    }
                    for p in &o.removed {
                        log::info!(step = "apply", resource = p.as_str(); "host file {p} removed (no longer declared)");
                    }
                }
                Err(e) => {
                    report.took("apply", apply_started.elapsed());
                    report.problems.push(("apply".into(), e.to_string()));
                    return;
                }
            }
        }
        // Units before containers (containers may need what units provide); a revision whose
        // units cannot be planned is not applied at all.
        match self
            .reconcile_units(desired, &changed_secrets, rev, is_new, started, report)
            .await
        {
            Some(n) => host_changes += n,
            None => {
                report.took("apply", apply_started.elapsed());
                return;
            }
        }
        let opts = apply::Options {
            dependency_timeout: self.cfg.apply.timeout,
        };
        let result = apply::apply(&self.engine, desired, &plan, rev, &opts).await;
        report.took("apply", apply_started.elapsed());
        let after = if plan.is_empty() {
            Ok(observed)
        } else {
            self.engine.observe().await
        };
        match after {
            Ok(o) => {
                self.record_containers(desired, &o.containers);
                for c in self.state.containers.iter_mut() {
                    if let Some(b) = self.backoff.get(&c.service) {
                        if b.attempts >= 2 {
                            let wait = b.next.saturating_duration_since(Instant::now()).as_secs();
                            c.note = Some(format!(
                                "crash-looping: put back {} times; next attempt in {wait}s",
                                b.attempts
                            ));
                        }
                    }
                }
            }
            Err(e) => report.problems.push(("observe".into(), e.to_string())),
        }
        let commit = self.commit_info(rev);
        let reasons = |steps: &[plan::Step]| {
            steps
                .iter()
                .map(|s| format!("{} ({})", describe(&s.action), s.reason))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match result {
            Ok(done) => {
                report.changes = done;
                // Applied: nothing of this revision's plan is left to do.
                if let Some(d) = self.state.diff.as_mut().filter(|d| d.commit == rev) {
                    d.steps.clear();
                    d.at = state::now();
                }
                let keep = desired.files.keys().cloned().collect();
                if let Err(e) = files::gc(&self.cfg.files_dir(), &keep) {
                    log::warn!("cleaning materialized files: {e}");
                }
                if is_new {
                    report.ran("health");
                    let t = Instant::now();
                    let gate = self.health_gate(desired, done + host_changes > 0).await;
                    report.took("health", t.elapsed());
                    if let Err(why) = gate {
                        self.roll_back(rev, &why, applied, started, report).await;
                        return;
                    }
                    self.set_phase(rev, state::Phase::Healthy, None);
                    // What the host looks like now that it is healthy.
                    if let Ok(o) = self.engine.observe().await {
                        self.record_containers(desired, &o.containers);
                    }
                    self.state.pending = None;
                    // An older bad revision is superseded.
                    self.state.bad = None;
                    let _ = std::fs::remove_file(self.cfg.approval_file());
                    log::info!(revision = short(rev), step = "apply"; "applied {} \"{}\" ({} changes)", short(rev), commit.subject, done);
                    self.state.record(HistoryEntry {
                        at: state::now(),
                        commit: rev.to_owned(),
                        subject: commit.subject.clone(),
                        outcome: "applied".into(),
                        signer: self.pending_signer.as_ref().map(|s| s.to_string()),
                        message: if done == 0 {
                            "no changes".into()
                        } else {
                            reasons(&plan.steps)
                        },
                        duration_ms: started.elapsed().as_millis() as u64,
                    });
                    self.state.applied = Some(Applied {
                        commit,
                        applied_at: state::now(),
                        signer: self.pending_signer.take(),
                    });
                    // An approved rollback is used up once applied.
                    let approval = rollback_approval_file(&self.cfg);
                    if std::fs::read_to_string(&approval).is_ok_and(|a| a.trim() == rev) {
                        let _ = std::fs::remove_file(&approval);
                    }
                    // A refusal of an older tip is history now.
                    self.state.refused = None;
                    self.state.warnings = desired.warnings.clone();
                    self.state.specs = desired.services.values().map(|s| (s.hash(), s.clone())).collect();
                } else if done > 0 {
                    log::warn!(revision = short(rev), step = "apply"; "drift corrected: {}", reasons(&plan.steps));
                    self.state.record(HistoryEntry {
                        at: state::now(),
                        commit: rev.to_owned(),
                        subject: commit.subject,
                        outcome: "drift-corrected".into(),
                        signer: None,
                        message: reasons(&plan.steps),
                        duration_ms: started.elapsed().as_millis() as u64,
                    });
                }
            }
            Err(failed) => {
                report.changes = failed.done;
                let msg = format!("{}: {}", describe(&failed.step.action), failed.error);
                let resource = apply::resource(&failed.step.action);
                log::error!(revision = short(rev), resource = resource, step = "apply"; "apply of {} failed: {msg}", short(rev));
                self.state.record(HistoryEntry {
                    at: state::now(),
                    commit: rev.to_owned(),
                    subject: commit.subject,
                    outcome: "failed".into(),
                    signer: None,
                    message: msg.clone(),
                    duration_ms: started.elapsed().as_millis() as u64,
                });
                report.problems.push(("apply".into(), msg));
            }
        }
    }

    /// Drift correction must not fight a crash-looping container in a tight loop: a service put
    /// back again within a few minutes waits exponentially longer (5 s, 10 s, ... up to 5 min)
    /// and is reported; a service that stays up for two minutes is forgiven.
    fn hold_back_crash_loops(&mut self, plan: &mut plan::Plan, observed: &[ObservedContainer]) {
        let now = Instant::now();
        self.backoff.retain(|svc, b| {
            let running = observed
                .iter()
                .any(|c| &c.service == svc && c.state == plan::ContainerState::Running);
            !(running && now.duration_since(b.last) > Duration::from_secs(120))
        });
        plan.steps.retain(|step| {
            let service = match &step.action {
                plan::Action::Start { service, .. }
                | plan::Action::Create { service }
                | plan::Action::Replace { service, .. } => service,
                _ => return true,
            };
            match self.backoff.get_mut(service) {
                Some(b) if b.next > now => {
                    log::warn!(
                        resource = service.as_str(), step = "apply";
                        "{service} is crash-looping ({} attempts); next attempt in {}s",
                        b.attempts,
                        (b.next - now).as_secs()
                    );
                    false
                }
                Some(b) => {
                    b.attempts += 1;
                    b.last = now;
                    let secs = 5u64.saturating_mul(1 << (b.attempts - 1).min(6)).min(300);
                    b.next = now + Duration::from_secs(secs);
                    true
                }
                None => {
                    self.backoff.insert(
                        service.clone(),
                        Backoff {
                            attempts: 1,
                            last: now,
                            next: now,
                        },
                    );
                    true
                }
            }
        });
    }

    async fn unit_manager(&mut self) -> Result<&crate::systemd::DbusUnitManager, crate::systemd::Error> {
        if self.units_mgr.as_ref().is_none_or(|m| m.is_closed()) {
            let cfg = crate::systemd::DbusConfig {
                address: self.cfg.systemd.bus.clone(),
                journal_command: self.cfg.systemd.journal_command.clone(),
                ..Default::default()
            };
            self.units_mgr = Some(crate::systemd::DbusUnitManager::connect(cfg).await?);
        }
        Ok(self.units_mgr.as_ref().expect("connected just above"))
    }

    /// Reconcile systemd units. Returns how many unit changes were made, or `None` when the rest
    /// of the revision must not be applied.
    async fn reconcile_units(
        &mut self,
        desired: &Desired,
        changed_secrets: &std::collections::BTreeSet<String>,
        rev: &str,
        is_new: bool,
        started: Instant,
        report: &mut Report,
    ) -> Option<usize> {
        use crate::systemd;
        if desired.units.units.is_empty() && self.state.units_owned.is_empty() {
            self.state.units.clear();
            return Some(0);
        }
        let files = systemd::UnitFiles::new(&self.cfg.systemd.unit_dir);
        let mut owned = self.state.units_owned.clone();
        let adopt = self.cfg.systemd.adopt;
        let names = systemd::units_to_observe(&desired.units, &owned);
        let mgr = match self.unit_manager().await {
            Ok(m) => m,
            Err(e) => {
                report.problems.push(("units".into(), e.to_string()));
                return None;
            }
        };
        let observed = match systemd::observe(mgr, &files, &names).await {
            Ok(o) => o,
            Err(e) => {
                report.problems.push(("units".into(), e.to_string()));
                return None;
            }
        };
        let actions = match systemd::plan(
            &desired.units,
            &owned,
            &observed,
            changed_secrets,
            &systemd::PlanOptions { adopt },
        ) {
            Ok(a) => a,
            Err(e) => {
                let msg = e.to_string();
                if is_new {
                    // Refused, but retried on the next poll: the fix may be on the host.
                    self.refuse(rev, "plan", msg, started, report);
                } else {
                    report.problems.push(("units".into(), msg));
                }
                return None;
            }
        };
        let now = Instant::now();
        let mut held = Vec::new();
        let actions: Vec<systemd::UnitAction> = actions
            .into_iter()
            .filter(|a| {
                if let systemd::UnitAction::Report { .. } = a {
                    log::warn!("{a}");
                }
                if !a.is_recovery() {
                    return true;
                }
                let unit = a.unit().unwrap_or_default().to_owned();
                let key = format!("unit:{unit}");
                let b = self.backoff.entry(key).or_insert(Backoff {
                    attempts: 0,
                    last: now,
                    next: now,
                });
                if b.next > now {
                    held.push((unit, b.attempts, (b.next - now).as_secs()));
                    return false;
                }
                b.attempts += 1;
                b.last = now;
                b.next = now + Duration::from_secs(5u64.saturating_mul(1 << (b.attempts - 1).min(6)).min(300));
                true
            })
            .collect();
        for a in &actions {
            if !matches!(a, systemd::UnitAction::Report { .. }) {
                log::info!("apply: {a}");
            }
        }
        let mgr = self.units_mgr.as_ref().expect("connected above");
        let result = systemd::apply(
            mgr,
            &files,
            &desired.units,
            &actions,
            &mut owned,
            &systemd::ApplyOptions::default(),
        )
        .await;
        // Always keep what was written, even after a failure: the next cycle finishes the job.
        self.state.units_owned = owned;
        let mut failed: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for f in &result.failures {
            log::error!("{f}");
            report.problems.push(("units".into(), f.to_string()));
            failed.insert(f.unit.clone(), (f.to_string(), f.journal.clone()));
        }
        let ok = result.aborted.is_none();
        let changes = actions
            .iter()
            .filter(|a| !matches!(a, systemd::UnitAction::Report { .. }))
            .count();
        if let Some(e) = &result.aborted {
            report.problems.push(("units".into(), e.to_string()));
        }
        // Record each owned unit's state (one D-Bus call).
        let names: Vec<String> = self.state.units_owned.keys().cloned().collect();
        let reports: BTreeMap<String, String> = actions
            .iter()
            .filter_map(|a| match a {
                systemd::UnitAction::Report { unit, .. } => Some((unit.clone(), a.to_string())),
                _ => None,
            })
            .collect();
        if let Ok(obs) = systemd::observe(mgr, &files, &names).await {
            self.state.units = obs
                .values()
                .map(|o| {
                    let (note, journal) = match failed.get(&o.name) {
                        Some((msg, journal)) => (Some(msg.clone()), journal.clone()),
                        None => (reports.get(&o.name).cloned(), Vec::new()),
                    };
                    let note = note.or_else(|| {
                        held.iter()
                            .find(|(u, _, _)| *u == o.name)
                            .map(|(_, n, wait)| format!("keeps failing: started {n} times; next attempt in {wait}s"))
                    });
                    state::UnitStatus {
                        name: o.name.clone(),
                        active: o.active_state.clone(),
                        sub: o.sub_state.clone(),
                        file_state: o.unit_file_state.clone(),
                        note,
                        journal,
                    }
                })
                .collect();
        }
        ok.then_some(changes)
    }

    fn set_phase(&mut self, commit: &str, phase: state::Phase, message: Option<String>) {
        let changed = self
            .state
            .revision
            .as_ref()
            .is_none_or(|r| r.commit != commit || r.phase != phase);
        if changed {
            self.state.revision = Some(state::RevisionStatus {
                commit: commit.to_owned(),
                phase,
                since: state::now(),
                message,
            });
        }
    }

    /// After a new revision is applied: containers with a healthcheck must become healthy,
    /// the others must run without restarting for the settle time, and no owned unit may have
    /// failed — all within `health_timeout`. A revision that changed nothing on the host (a
    /// commit touching only other hosts' layers, say) has nothing to settle: one check decides.
    async fn health_gate(&mut self, desired: &Desired, changed: bool) -> Result<(), String> {
        let timeout = self.cfg.apply.health_timeout;
        let settle = if changed { self.cfg.apply.settle } else { Duration::ZERO };
        let deadline = Instant::now() + timeout;
        let mut baseline: BTreeMap<String, i64> = BTreeMap::new();
        let mut stable_since: Option<Instant> = None;
        let units: Vec<String> = self.state.units_owned.keys().cloned().collect();
        loop {
            if let Some(u) = self.state.units.iter().find(|u| u.active == "failed") {
                return Err(format!("unit {} failed", u.name));
            }
            // Units as they are now (one D-Bus call): a service that starts, then dies a few
            // seconds later, fails the gate like a container that does.
            if let (false, Some(mgr)) = (units.is_empty(), self.units_mgr.as_ref()) {
                use crate::systemd::UnitManager;
                let now = mgr.observe(&units).await.map_err(|e| e.to_string())?;
                if let Some(u) = now.iter().find(|u| u.active_state == "failed") {
                    return Err(format!("unit {} failed", u.name));
                }
            }
            let mut waiting_for = None;
            for spec in desired.services.values() {
                let name = container_name(&desired.project, spec);
                let crate::docker::Inspected { state: st, restarts } =
                    self.engine.inspect_state(&name).await.map_err(|e| e.to_string())?;
                let base = *baseline.entry(spec.name.clone()).or_insert(restarts);
                match st {
                    plan::ContainerState::Running if restarts > base => {
                        return Err(format!(
                            "{} restarted {} time(s) since the change",
                            spec.name,
                            restarts - base
                        ))
                    }
                    plan::ContainerState::Running => {}
                    plan::ContainerState::Exited { code: 0 } if spec.restart == "no" => {}
                    plan::ContainerState::Starting | plan::ContainerState::Created => {
                        waiting_for.get_or_insert_with(|| format!("{} is {st}", spec.name));
                    }
                    other => return Err(format!("{} is {other}", spec.name)),
                }
            }
            let now = Instant::now();
            match waiting_for {
                None => {
                    let since = *stable_since.get_or_insert(now);
                    if now.duration_since(since) >= settle {
                        return Ok(());
                    }
                }
                Some(w) => {
                    stable_since = None;
                    if now >= deadline {
                        return Err(format!("not healthy after {}s: {w}", timeout.as_secs()));
                    }
                }
            }
            if now >= deadline && stable_since.is_none() {
                return Err(format!("not healthy after {}s", timeout.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A new revision failed its health gate: mark it bad (not retried until a newer commit)
    /// and put the last good revision's desired state back.
    async fn roll_back(&mut self, rev: &str, why: &str, previous: Option<&str>, started: Instant, report: &mut Report) {
        log::error!("commit {} failed its health gate: {why}; rolling back", short(rev));
        let commit = self.commit_info(rev);
        self.state.bad = Some(Refused {
            commit: commit.clone(),
            step: "health".into(),
            reason: why.to_owned(),
            since: state::now(),
        });
        self.state.pending = None;
        report
            .problems
            .push(("health".into(), format!("commit {} is unhealthy: {why}", short(rev))));
        let Some(prev) = previous else {
            self.set_phase(
                rev,
                state::Phase::Failed,
                Some(format!("{why}; no earlier revision to roll back to")),
            );
            self.state.record(HistoryEntry {
                at: state::now(),
                commit: rev.to_owned(),
                subject: commit.subject,
                outcome: "failed".into(),
                signer: self.pending_signer.take().map(|s| s.to_string()),
                message: format!("unhealthy: {why}; no earlier revision to roll back to"),
                duration_ms: started.elapsed().as_millis() as u64,
            });
            return;
        };
        let restored = match tokio::task::block_in_place(|| self.load(prev)) {
            Ok(d) => d,
            Err((_, e)) => {
                report
                    .problems
                    .push(("health".into(), format!("rollback to {}: {e}", short(prev))));
                return;
            }
        };
        // Everything the bad revision changed goes back: the files its containers mount (the
        // good revision's were cleaned up after the apply), secrets, host files, units, then
        // containers.
        // Unlike an apply, a rollback goes on past a part that fails: as much as possible back.
        if let Err(e) = self.materialize_files(&restored, prev) {
            report
                .problems
                .push(("health".into(), format!("rollback to {}: {e}", short(prev))));
        }
        let changed_secrets = crate::secretfs::deliver(&restored, &self.roots()).unwrap_or_default();
        if let Some(Err(e)) = self.sync_host_files(&restored) {
            report
                .problems
                .push(("health".into(), format!("rollback to {}: {e}", short(prev))));
        }
        // Not a new revision: a unit plan that fails is reported, never a refusal.
        self.reconcile_units(&restored, &changed_secrets, prev, false, started, report)
            .await;
        let outcome = async {
            let observed = self.engine.observe().await.map_err(|e| e.to_string())?;
            let plan = plan::plan(&restored, &observed, &self.state.specs);
            let opts = apply::Options {
                dependency_timeout: self.cfg.apply.timeout,
            };
            apply::apply(&self.engine, &restored, &plan, prev, &opts)
                .await
                .map_err(|f| format!("{}: {}", describe(&f.step.action), f.error))?;
            self.engine.observe().await.map_err(|e| e.to_string())
        }
        .await;
        match outcome {
            Ok(o) => self.record_containers(&restored, &o.containers),
            Err(e) => report
                .problems
                .push(("health".into(), format!("rollback to {}: {e}", short(prev)))),
        }
        self.set_phase(rev, state::Phase::RolledBack, Some(why.to_owned()));
        self.state.record(HistoryEntry {
            at: state::now(),
            commit: rev.to_owned(),
            subject: commit.subject,
            outcome: "rolled-back".into(),
            signer: self.pending_signer.take().map(|s| s.to_string()),
            message: format!("unhealthy: {why}; restored {}", short(prev)),
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }

    fn roots(&self) -> crate::docker::Roots {
        crate::docker::Roots {
            files: self.cfg.files_dir(),
            data: self.cfg.data_dir(),
            secrets: self.cfg.secrets_dir(),
        }
    }

    fn record_containers(&mut self, desired: &Desired, observed: &[ObservedContainer]) {
        let images: BTreeMap<String, String> = desired
            .services
            .values()
            .map(|s| (s.name.clone(), s.image.clone()))
            .collect();
        self.state.set_containers(observed, &images);
        for (s, spec) in &desired.services {
            if !observed.iter().any(|c| &c.service == s && c.project == desired.project) {
                self.state.containers.push(state::ContainerStatus {
                    service: s.clone(),
                    name: container_name(&desired.project, spec),
                    id: String::new(),
                    state: "missing".into(),
                    status: String::new(),
                    image: images.get(s).cloned().unwrap_or_default(),
                    note: None,
                });
            }
        }
    }

    /// Put the repository paths `desired`'s containers bind-mount in place, from `rev`'s tree;
    /// how many were written.
    fn materialize_files(&self, desired: &Desired, rev: &str) -> Result<usize, String> {
        let root = self.cfg.files_dir();
        tokio::task::block_in_place(|| {
            let tree = self.repo.tree(rev).map_err(|e| e.to_string())?;
            files::materialize(&tree, &desired.files, &root).map_err(|e| e.to_string())
        })
    }

    /// Mirror `desired`'s host files to the host, recording what tend owns; `None` when there
    /// is nothing declared and nothing owned.
    fn sync_host_files(
        &mut self,
        desired: &Desired,
    ) -> Option<Result<crate::hostfiles::Outcome, crate::hostfiles::Error>> {
        if desired.host_files.is_empty() && self.state.files_owned.is_empty() {
            return None;
        }
        let mut owned = self.state.files_owned.clone();
        let synced = crate::hostfiles::sync(&self.cfg.files.root, &desired.host_files, &mut owned);
        self.state.files_owned = owned;
        Some(synced)
    }

    /// Write the state file now (and show the state to the API).
    fn save(&mut self, report: &mut Report) {
        let hash = self.state.lasting_hash();
        self.write_state(hash, report);
    }

    /// [`Agent::save`] with the state's [`State::lasting_hash`] already known.
    fn write_state(&mut self, hash: u64, report: &mut Report) {
        self.show_api();
        match self.state.save(&self.cfg.state_file()) {
            Ok(()) => self.persisted = Some((hash, Instant::now())),
            Err(e) => {
                log::error!("{e}");
                report.problems.push(("state".into(), e.to_string()));
            }
        }
    }

    /// The end of a cycle: the API sees the state at once; the file is written when something
    /// lasting changed, or every [`LAZY_SAVE`] when only clocks moved (a poll every 10 s would
    /// otherwise rewrite and fsync it 8,640 times a day, on hosts whose storage is often flash).
    fn publish(&mut self, report: &mut Report) {
        let hash = self.state.lasting_hash();
        let due = match self.persisted {
            Some((saved, at)) => saved != hash || at.elapsed() >= LAZY_SAVE,
            None => true,
        };
        if due {
            self.write_state(hash, report);
        } else {
            self.show_api();
        }
    }

    /// The API serves this state from now on.
    fn show_api(&self) {
        if let Some(shared) = &self.shared {
            if let Ok(mut s) = shared.lock() {
                *s = self.state.clone();
            }
        }
    }

    /// Run until SIGTERM/SIGINT: poll on the poll interval, check drift on the drift interval,
    /// and run a cycle at once when something sends a [`Trigger`] (Docker events, `tend sync`,
    /// an offline bundle...).
    pub async fn run_loop(&mut self, mut triggers: tokio::sync::mpsc::Receiver<Trigger>) -> Result<(), Error> {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|source| Error::Dir {
                path: "signal handler".into(),
                source,
            })?;
        let poll = self.cfg.source.poll_interval;
        let drift = self.cfg.apply.drift_interval;
        let mut next_poll = Instant::now();
        self.cheap_polls = true;
        let mut fetch_now = false;
        // systemd: ready now that the state is loaded; a watchdog while the loop lives.
        let live = Arc::new(crate::notify::Liveness::default());
        crate::notify::spawn_watchdog(live.clone(), (self.cfg.apply.timeout * 4).max(Duration::from_secs(600)));
        crate::notify::ready(&crate::notify::status_line(&self.state));
        loop {
            let now = Instant::now();
            let fetch = fetch_now || now >= next_poll;
            fetch_now = false;
            if fetch {
                next_poll = now + jitter(poll);
                self.state.source.next_poll = Some(state::now() + (next_poll - now).as_secs() as i64);
            }
            live.busy();
            let report = self.cycle(fetch).await;
            live.idle();
            crate::notify::status(&crate::notify::status_line(&self.state));
            if let Some(p) = report.first_problem() {
                log::debug!("cycle ended with: {p}");
            }
            // The next poll, or the next drift check when that comes first.
            let wake = next_poll.min(self.drift_checked.map_or_else(Instant::now, |t| t + drift));
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                Some(t) = triggers.recv() => {
                    log::debug!("cycle triggered: {t:?}");
                    let mut batch = vec![t];
                    // Coalesce a burst (e.g. several containers dying at once) into one cycle.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while let Ok(more) = triggers.try_recv() {
                        batch.push(more);
                    }
                    let mut replies = Vec::new();
                    for t in batch {
                        fetch_now |= t.fetch();
                        if let Trigger::Command(cmd, reply) = t {
                            let outcome = self.command(&cmd);
                            let ok = outcome.get("ok").and_then(|v| v.as_bool()).unwrap_or(false);
                            match (cmd, reply) {
                                // `sync --wait` answers after the cycle.
                                (Command::Sync, Some(r)) => replies.push(r),
                                (_, Some(r)) => {
                                    let _ = r.send(outcome);
                                }
                                _ => {}
                            }
                            let _ = ok;
                        }
                    }
                    if !replies.is_empty() {
                        // `tend sync` runs the whole cycle, drift check included.
                        self.drift_checked = None;
                        let now = Instant::now();
                        if fetch_now {
                            next_poll = now + jitter(poll);
                            self.state.source.next_poll = Some(state::now() + (next_poll - now).as_secs() as i64);
                        }
                        let report = self.cycle(fetch_now).await;
                        fetch_now = false;
                        let outcome = serde_json::json!({
                            "ok": report.problems.is_empty(),
                            "changes": report.changes,
                            "steps": self.state.steps,
                            "cycle_us": self.state.last_cycle_us,
                            "applied": self.state.applied.as_ref().map(|a| a.commit.id.clone()),
                            "problems": report.problems.iter().map(|(s, m)| format!("{s}: {m}")).collect::<Vec<_>>(),
                        });
                        for r in replies {
                            let _ = r.send(outcome.clone());
                        }
                        continue;
                    }
                }
                _ = term.recv() => { log::info!("SIGTERM: stopping"); break; }
                _ = tokio::signal::ctrl_c() => { log::info!("SIGINT: stopping"); break; }
            }
        }
        crate::notify::stopping();
        // What only the clocks changed since the last write is kept too.
        let mut report = Report::default();
        self.save(&mut report);
        Ok(())
    }
}

/// How often and when next a service may be put back by drift correction.
#[derive(Debug, Clone)]
struct Backoff {
    attempts: u32,
    last: Instant,
    next: Instant,
}

/// Why a cycle should run now rather than at the next tick.
#[derive(Debug)]
pub enum Trigger {
    /// Something tend owns changed on the host (e.g. a container died): correct drift.
    Drift(String),
    /// Fetch and apply now (a new offline bundle, ...).
    Sync(String),
    /// An operator's command through the API; the reply goes back on the channel.
    Command(Command, Option<tokio::sync::oneshot::Sender<serde_json::Value>>),
}

/// An operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run a cycle now.
    Sync,
    /// Approve a revision (manual mode), or allow a rollback to it.
    Approve {
        /// Branch, tag or hash.
        rev: String,
        /// Allow a revision that does not descend from the applied one.
        rollback: bool,
    },
    /// Stop applying; drift is only reported.
    Suspend,
    /// Apply again.
    Resume,
}

impl Trigger {
    /// Whether the cycle should poll the source too.
    pub fn fetch(&self) -> bool {
        matches!(self, Trigger::Sync(_) | Trigger::Command(Command::Sync, _))
    }
}

/// ±10% jitter, so a fleet does not poll in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let frac = (nanos % 2001) as f64 / 10_000.0 - 0.1; // -0.1 ..= 0.1
    d.mul_f64(1.0 + frac)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(100));
            assert!(j >= Duration::from_secs(90) && j <= Duration::from_secs(110), "{j:?}");
        }
    }
}
