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
}

impl Report {
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
    /// Key of keyed hashes of secret content (per host, kept in the state dir).
    hash_key: [u8; 32],
    /// Primary URL, mirrors and bundle inboxes, with their schedules.
    net: crate::sources::Sources,
}

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
    .map_err(|e| e.to_string())?;
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
            net,
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
        log::error!("refusing commit {}: {reason}", short(tip));
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
        if fetch {
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
            let polled = tokio::task::block_in_place(|| net.poll(repo, state, applied.as_deref(), &check));
            report.problems.extend(polled.problems);
            tip = polled.tip;
        }
        let applied = self.state.applied.as_ref().map(|a| a.commit.id.clone());
        let mut target: Option<(String, Arc<Desired>)> = None;
        if let Some(tip) = tip {
            // A refused tip is not verified again on every poll; an approval changes that.
            let approval = std::fs::read_to_string(rollback_approval_file(&self.cfg)).unwrap_or_default();
            let refused_already = self
                .state
                .refused
                .as_ref()
                .is_some_and(|r| r.commit.id == tip && approval.trim() != tip);
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
                match tokio::task::block_in_place(|| self.verify(&tip, applied.as_deref())) {
                    Err(reason) => self.refuse(&tip, "verify", reason, started, &mut report),
                    Ok(signer) => {
                        if let Some(s) = &signer {
                            log::info!("commit {} verified: signed by {s}", short(&tip));
                        }
                        match tokio::task::block_in_place(|| self.load(&tip)) {
                            Ok(d) => {
                                self.pending_signer = signer;
                                target = Some((tip, d));
                            }
                            Err((step, reason)) => self.refuse(&tip, step, reason, started, &mut report),
                        }
                    }
                }
            }
        }
        if target.is_none() {
            if let Some(a) = applied.clone() {
                match tokio::task::block_in_place(|| self.load(&a)) {
                    Ok(d) => target = Some((a, d)),
                    Err((step, e)) => report.problems.push((step.into(), e)),
                }
            }
        }

        if let Some((rev, desired)) = target {
            self.reconcile(&rev, &desired, applied.as_deref(), started, &mut report)
                .await;
        }
        self.state.last_error = report.problems.last().map(|(step, message)| LastError {
            at: state::now(),
            step: step.clone(),
            message: message.clone(),
        });
        self.state.last_cycle = Some(state::now());
        self.net.finish(&mut self.state);
        self.save(&mut report);
        report
    }

    async fn reconcile(
        &mut self,
        rev: &str,
        desired: &Desired,
        applied: Option<&str>,
        started: Instant,
        report: &mut Report,
    ) {
        let observed = match self.engine.observe().await {
            Ok(o) => o,
            Err(e) => {
                report.problems.push(("observe".into(), e.to_string()));
                return;
            }
        };
        let mut plan = plan::plan(desired, &observed, &self.state.specs);
        let is_new = applied != Some(rev);
        if !is_new {
            self.hold_back_crash_loops(&mut plan, &observed.containers);
        }
        if !desired.files.is_empty() {
            let root = self.cfg.files_dir();
            let written = tokio::task::block_in_place(|| {
                let tree = self.repo.tree(rev).map_err(|e| e.to_string())?;
                files::materialize(&tree, &desired.files, &root).map_err(|e| e.to_string())
            });
            match written {
                Ok(n) if n > 0 => log::info!("materialized {n} repository path(s) for bind mounts"),
                Ok(_) => {}
                Err(e) => {
                    report.problems.push(("files".into(), e));
                    return;
                }
            }
        }
        let roots = self.roots();
        match crate::secretfs::deliver(desired, &roots) {
            Ok(changed) if !changed.is_empty() => {
                log::info!(
                    "secrets delivered to tmpfs: {}",
                    changed.into_iter().collect::<Vec<_>>().join(", ")
                )
            }
            Ok(_) => {}
            Err(e) => {
                report.problems.push(("decrypt".into(), e.to_string()));
                return;
            }
        }
        let opts = apply::Options {
            dependency_timeout: self.cfg.apply.timeout,
        };
        let result = apply::apply(&self.engine, desired, &plan, rev, &opts).await;
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
                let keep = desired.files.keys().cloned().collect();
                if let Err(e) = files::gc(&self.cfg.files_dir(), &keep) {
                    log::warn!("cleaning materialized files: {e}");
                }
                if is_new {
                    log::info!("applied {} \"{}\" ({} changes)", short(rev), commit.subject, done);
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
                    log::warn!("drift corrected: {}", reasons(&plan.steps));
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
                log::error!("apply of {} failed: {msg}", short(rev));
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

    fn save(&mut self, report: &mut Report) {
        if let Err(e) = self.state.save(&self.cfg.state_file()) {
            log::error!("{e}");
            report.problems.push(("state".into(), e.to_string()));
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
        let mut fetch_now = false;
        loop {
            let now = Instant::now();
            let fetch = fetch_now || now >= next_poll;
            fetch_now = false;
            if fetch {
                next_poll = now + jitter(poll);
                self.state.source.next_poll = Some(state::now() + (next_poll - now).as_secs() as i64);
            }
            let report = self.cycle(fetch).await;
            if let Some(p) = report.first_problem() {
                log::debug!("cycle ended with: {p}");
            }
            let wake = next_poll.min(Instant::now() + drift);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                Some(t) = triggers.recv() => {
                    log::debug!("cycle triggered: {t:?}");
                    fetch_now = t.fetch();
                    // Coalesce a burst (e.g. several containers dying at once) into one cycle.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while let Ok(more) = triggers.try_recv() {
                        fetch_now |= more.fetch();
                    }
                }
                _ = term.recv() => { log::info!("SIGTERM: stopping"); return Ok(()); }
                _ = tokio::signal::ctrl_c() => { log::info!("SIGINT: stopping"); return Ok(()); }
            }
        }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Something tend owns changed on the host (e.g. a container died): correct drift.
    Drift(String),
    /// Fetch and apply now (`tend sync`, a new offline bundle).
    Sync(String),
}

impl Trigger {
    /// Whether the cycle should poll the source too.
    pub fn fetch(&self) -> bool {
        matches!(self, Trigger::Sync(_))
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
