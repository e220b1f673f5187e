//! Where new commits come from, over links that come and go: the primary URL, its mirrors, and
//! offline bundles (an inbox directory such as a USB mount, and `tend import`).
//!
//! One poll: bundles waiting in the inboxes first (they need no network); then the sources in
//! order — the primary URL, then each mirror — skipping any that is backing off; the first that
//! answers with a verifiable commit wins and the rest are not contacted. Every fetch runs on a
//! thread of its own under connect and stall timeouts and a hard deadline, so no poll can hang
//! the loop. A failing source is retried with exponential backoff and jitter (5 s, 10 s, 20 s…
//! up to `backoff_max`, by default the poll interval). Trust is the same for every path: a
//! bundle's commit is verified exactly like a fetched one.

use crate::bundle;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::daemon::Trigger;
use crate::source::{self, Fetched, Repo, Transport};
use crate::state::{self, BundleRecord, RemoteStatus, State};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The ref that always points at the applied commit: it keeps its objects reachable and makes
/// every fetch offer it as a `have`.
pub const APPLIED_REF: &str = "refs/tend/applied";

/// A bundle file must be this old (unchanged) before it is read: it may still be being copied.
const SETTLE: Duration = Duration::from_secs(1);

/// The ref one source is fetched into.
fn source_ref(index: usize) -> String {
    format!("refs/tend/sources/{index}")
}

/// What one poll found.
#[derive(Debug, Default)]
pub struct Polled {
    /// The commit to go on with (verify, load, apply), if any source answered.
    pub tip: Option<String>,
    /// `(step, message)` problems met on the way (failed sources, refused bundles).
    pub problems: Vec<(String, String)>,
    /// Objects were written to the local repository (a pack fetched, a bundle imported): the
    /// caller's long-lived handle should [`Repo::refresh`].
    pub wrote_objects: bool,
}

/// A fetch still running on its own thread.
struct Job {
    rx: std::sync::mpsc::Receiver<Result<Fetched, source::Error>>,
    interrupt: Arc<AtomicBool>,
    started: Instant,
}

struct Remote {
    url: String,
    redacted: String,
    failures: u32,
    next_attempt: Option<Instant>,
    /// A fetch that outlived its deadline and has not finished yet.
    job: Option<Job>,
}

/// The sources of one agent and their schedules.
pub struct Sources {
    branch: String,
    repo_path: PathBuf,
    remotes: Vec<Remote>,
    transport: Transport,
    fetch_timeout: Duration,
    backoff_max: Duration,
    poll_interval: Duration,
    inbox: Option<PathBuf>,
    spool: PathBuf,
    import_only: Option<PathBuf>,
    triggers: Option<tokio::sync::mpsc::Sender<Trigger>>,
    retry_timer: Option<tokio::task::JoinHandle<()>>,
    retry_at: Option<Instant>,
    /// The bundle whose commit this cycle goes on with: `(file, tip)`.
    pending_bundle: Option<(PathBuf, String)>,
    /// Spooled bundles handled this cycle (removed at the end of it).
    spooled_done: Vec<PathBuf>,
    /// More bundles are waiting: poll again right after this cycle.
    more_bundles: bool,
    /// This cycle polled (a drift-only cycle leaves the retry timer alone).
    polled: bool,
}

/// The directory `tend import` hands bundles to a running agent through.
pub fn spool_dir(cfg: &Config) -> PathBuf {
    cfg.paths.state.join("import")
}

/// Exponential backoff with jitter: 5 s (or `max` if smaller), doubling per failure, capped at
/// `max`; jittered down by up to 10% (so never above `max`) and up by up to 10% below the cap.
pub fn backoff(failures: u32, max: Duration, random: f64) -> Duration {
    let base = Duration::from_secs(5).min(max);
    let d = base.saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(max);
    d.mul_f64(0.9 + 0.2 * random.clamp(0.0, 1.0)).min(max)
}

/// A number in [0, 1) that differs between calls and hosts (not for cryptography).
fn random() -> f64 {
    use std::sync::atomic::AtomicU64;
    static STATE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x =
        STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ nanos ^ (u64::from(std::process::id()) << 32);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

fn in_secs(at: Instant, now: Instant) -> String {
    crate::cli::ago(at.saturating_duration_since(now).as_secs() as i64)
}

fn wall(at: Instant, now: Instant) -> i64 {
    state::now() + at.saturating_duration_since(now).as_secs() as i64
}

/// Size and modification time (ns) of a file.
fn identity(meta: &std::fs::Metadata) -> (u64, i64) {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    (meta.len(), mtime)
}

/// `*.bundle` files in `dir` (not hidden), oldest first.
fn bundles_in(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, std::fs::Metadata)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".bundle") && !name.starts_with('.')
        })
        .filter_map(|e| {
            let meta = std::fs::metadata(e.path()).ok()?;
            meta.is_file().then(|| (e.path(), meta))
        })
        .collect();
    found.sort_by_key(|(p, m)| (identity(m).1, p.clone()));
    found
}

impl Sources {
    /// The sources of `cfg`. Reads the HTTPS credentials file, if any.
    pub fn new(cfg: &Config) -> Result<Sources, source::Error> {
        let credentials = match &cfg.source.https_credentials {
            Some(path) => Some(Arc::new(Credentials::load(path)?)),
            None => None,
        };
        let urls = cfg.source.urls();
        if credentials.is_some() {
            for url in urls.iter().filter(|u| u.to_ascii_lowercase().starts_with("http://")) {
                log::warn!(
                    "{}: credentials are sent over plain http; prefer https",
                    source::redact(url)
                );
            }
        }
        Ok(Sources {
            branch: cfg.source.branch.clone(),
            repo_path: cfg.repo_dir(),
            remotes: urls
                .into_iter()
                .map(|url| Remote {
                    redacted: source::redact(&url),
                    url,
                    failures: 0,
                    next_attempt: None,
                    job: None,
                })
                .collect(),
            transport: Transport {
                ssh: source::SshOptions {
                    key: cfg.source.ssh_key.clone(),
                    known_hosts: cfg.source.known_hosts.clone(),
                },
                connect_timeout: cfg.source.connect_timeout,
                stall_timeout: cfg.source.stall_timeout,
                credentials,
            },
            fetch_timeout: cfg.source.fetch_timeout,
            backoff_max: cfg.source.backoff_max,
            poll_interval: cfg.source.poll_interval,
            inbox: cfg.source.inbox.clone(),
            spool: spool_dir(cfg),
            import_only: None,
            triggers: None,
            retry_timer: None,
            retry_at: None,
            pending_bundle: None,
            spooled_done: Vec::new(),
            more_bundles: false,
            polled: false,
        })
    }

    /// Send a [`Trigger::Sync`] when a failing source is due again before the next poll, or
    /// when more bundles wait.
    pub fn set_triggers(&mut self, tx: tokio::sync::mpsc::Sender<Trigger>) {
        self.triggers = Some(tx);
    }

    /// The next poll takes only this bundle (for `tend import`), and no network.
    pub fn import_only(&mut self, path: PathBuf) {
        self.import_only = Some(path);
    }

    /// Directories watched for bundles: the configured inbox and the `tend import` spool.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        self.inbox.iter().cloned().chain(Some(self.spool.clone())).collect()
    }

    fn sync_status(&self, state: &mut State) {
        let st = &mut state.source.sources;
        st.truncate(self.remotes.len());
        for (i, r) in self.remotes.iter().enumerate() {
            let role = if i == 0 { "primary" } else { "mirror" };
            match st.get_mut(i) {
                Some(s) if s.url == r.redacted => s.role = role.into(),
                Some(s) => {
                    *s = RemoteStatus {
                        url: r.redacted.clone(),
                        role: role.into(),
                        ..RemoteStatus::default()
                    }
                }
                None => st.push(RemoteStatus {
                    url: r.redacted.clone(),
                    role: role.into(),
                    ..RemoteStatus::default()
                }),
            }
        }
    }

    /// One poll. `check` says whether a commit may be applied (signature, anti-rollback); a
    /// source whose tip fails it does not win, and the next source is asked.
    pub fn poll(
        &mut self,
        repo: &Repo,
        state: &mut State,
        applied: Option<&str>,
        check: &dyn Fn(&str) -> Result<(), String>,
    ) -> Polled {
        self.sync_status(state);
        self.polled = true;
        self.pending_bundle = None;
        self.more_bundles = false;
        self.retry_at = None;
        if let Some(a) = applied {
            if let Err(e) = repo.set_ref(APPLIED_REF, a) {
                log::warn!("{e}");
            }
        }
        let mut polled = Polled::default();
        let only = self.import_only.take();
        let offline = only.is_some();
        if let Some(tip) = self.poll_bundles(repo, state, applied, check, only, &mut polled) {
            polled.tip = Some(tip);
            return polled;
        }
        if offline {
            return polled;
        }
        self.poll_remotes(repo, state, applied, check, &mut polled);
        polled
    }

    fn record_bundle(state: &mut State, record: BundleRecord) {
        state.bundles.retain(|b| b.file != record.file);
        state.bundles.insert(0, record);
        state.bundles.truncate(state::BUNDLES_LEN);
    }

    /// Import waiting bundles, oldest first, until one carries a commit to go on with.
    fn poll_bundles(
        &mut self,
        repo: &Repo,
        state: &mut State,
        applied: Option<&str>,
        check: &dyn Fn(&str) -> Result<(), String>,
        only: Option<PathBuf>,
        polled: &mut Polled,
    ) -> Option<String> {
        let explicit = only.is_some();
        let files: Vec<(PathBuf, std::fs::Metadata)> = match only {
            Some(p) => match std::fs::metadata(&p) {
                Ok(m) => vec![(p, m)],
                Err(e) => {
                    polled
                        .problems
                        .push(("bundle".into(), format!("bundle {}: {e}", p.display())));
                    return None;
                }
            },
            None => self.watch_dirs().iter().flat_map(|d| bundles_in(d)).collect(),
        };
        let settled = SystemTime::now()
            .checked_sub(SETTLE)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(i64::MAX);
        let mut found = None;
        for (path, meta) in files {
            let (size, mtime_ns) = identity(&meta);
            let file = path.display().to_string();
            if !explicit {
                let seen = state
                    .bundles
                    .iter()
                    .any(|b| b.file == file && b.size == size && b.mtime_ns == mtime_ns);
                if seen || mtime_ns > settled {
                    continue;
                }
            }
            if found.is_some() {
                self.more_bundles = true;
                break;
            }
            let spooled = path.starts_with(&self.spool);
            let mut record = BundleRecord {
                file: file.clone(),
                size,
                mtime_ns,
                commit: None,
                outcome: "refused".into(),
                reason: None,
                at: state::now(),
            };
            match bundle::import(repo, &path, &self.branch) {
                Err(e) => {
                    log::error!("{e}; the file is left as it is");
                    let msg = e.to_string();
                    let prefix = format!("bundle {file}: ");
                    record.reason = Some(msg.strip_prefix(&prefix).unwrap_or(&msg).to_owned());
                    polled.problems.push(("bundle".into(), msg));
                }
                Ok(imported) => {
                    polled.wrote_objects = true;
                    let tip = imported.tip;
                    record.commit = Some(tip.clone());
                    let contained = match applied {
                        Some(a) => repo.is_ancestor(&tip, a).unwrap_or(false),
                        None => false,
                    };
                    if contained {
                        log::info!(
                            "bundle {file}: commit {} is already part of the applied history",
                            short(&tip)
                        );
                        record.outcome = "already-applied".into();
                        record.reason = Some(format!("commit {} is already part of the applied history", short(&tip)));
                    } else {
                        match check(&tip) {
                            Ok(()) => {
                                log::info!(
                                    "bundle {file}: commit {} verified ({})",
                                    short(&tip),
                                    if imported.indexed {
                                        "pack indexed"
                                    } else {
                                        "objects already here"
                                    }
                                );
                                record.outcome = "pending".into();
                                self.pending_bundle = Some((path.clone(), tip.clone()));
                                state.source.via = Some(format!("bundle {file}"));
                                state.source.remote_tip = Some(tip.clone());
                                found = Some(tip);
                            }
                            Err(reason) => {
                                let msg = format!("bundle {file}: commit {} refused: {reason}", short(&tip));
                                log::error!("{msg}; the file is left as it is");
                                record.reason = Some(format!("commit {} refused: {reason}", short(&tip)));
                                polled.problems.push(("verify".into(), msg));
                            }
                        }
                    }
                }
            }
            if spooled {
                self.spooled_done.push(path);
            }
            Self::record_bundle(state, record);
        }
        found
    }

    fn poll_remotes(
        &mut self,
        repo: &Repo,
        state: &mut State,
        applied: Option<&str>,
        check: &dyn Fn(&str) -> Result<(), String>,
        polled: &mut Polled,
    ) {
        let started = state::now();
        state.source.last_attempt = Some(started);
        let mut errors: Vec<String> = Vec::new();
        let mut first_refused: Option<String> = None;
        let mut winner: Option<(usize, String)> = None;
        let mut attempted = 0;
        for i in 0..self.remotes.len() {
            let now = Instant::now();
            let r = &mut self.remotes[i];
            let st = &mut state.source.sources[i];
            if let Some(job) = &r.job {
                match job.rx.try_recv() {
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        let msg = format!(
                            "fetch from {}: the previous attempt is still running after {}s (interrupted)",
                            r.redacted,
                            job.started.elapsed().as_secs()
                        );
                        job.interrupt.store(true, Ordering::Relaxed);
                        st.last_error = Some(msg.clone());
                        errors.push(msg);
                        continue;
                    }
                    // Finished late (or died): its result is stale; start afresh.
                    _ => r.job = None,
                }
            }
            // A source is due at a poll when its backoff ends before it or within the poll's jitter.
            let tolerance = self.poll_interval / 10;
            if let Some(at) = r.next_attempt.filter(|at| *at > now + tolerance) {
                st.next_attempt = Some(wall(at, now));
                errors.push(format!(
                    "{} (backing off after {} failures; next attempt in {})",
                    st.last_error
                        .clone()
                        .unwrap_or_else(|| format!("fetch from {}: failing", r.redacted)),
                    r.failures,
                    in_secs(at, now)
                ));
                continue;
            }
            attempted += 1;
            let more = i + 1 < self.remotes.len();
            st.last_attempt = Some(state::now());
            let result = self.fetch_one(i);
            let r = &mut self.remotes[i];
            let st = &mut state.source.sources[i];
            st.last_duration_ms = Some(now.elapsed().as_millis() as u64);
            match result {
                Ok(fetched) => {
                    log::debug!(
                        "{}: tip {} ({}) in {} ms",
                        r.redacted,
                        short(&fetched.tip),
                        if fetched.pack {
                            "pack received"
                        } else {
                            "no pack needed"
                        },
                        now.elapsed().as_millis()
                    );
                    r.failures = 0;
                    r.next_attempt = None;
                    st.failures = 0;
                    st.next_attempt = None;
                    st.last_contact = Some(state::now());
                    st.last_error = None;
                    st.tip = Some(fetched.tip.clone());
                    st.pack = fetched.pack;
                    polled.wrote_objects |= fetched.pack;
                    let verdict = if applied == Some(fetched.tip.as_str()) {
                        Ok(())
                    } else {
                        check(&fetched.tip)
                    };
                    match verdict {
                        Ok(()) => {
                            winner = Some((i, fetched.tip));
                            break;
                        }
                        Err(reason) => {
                            let msg = format!("serves commit {}, refused: {reason}", short(&fetched.tip));
                            if more {
                                log::warn!("{}: {msg}; trying the next source", r.redacted);
                            }
                            st.last_error = Some(msg);
                            first_refused.get_or_insert(fetched.tip);
                        }
                    }
                }
                Err(e) => {
                    r.failures += 1;
                    // Counted from the start of the attempt: a slow failure does not push the
                    // next one past the next poll.
                    let wait = backoff(r.failures, self.backoff_max, random());
                    let at = now + wait;
                    r.next_attempt = Some(at);
                    let msg = e.to_string();
                    let after = Instant::now();
                    log::warn!(
                        "{msg} (failure {} in a row; next attempt {})",
                        r.failures,
                        if at > after {
                            format!("in {}", in_secs(at, after))
                        } else {
                            "at the next poll".into()
                        }
                    );
                    st.failures = r.failures;
                    st.next_attempt = Some(wall(at, Instant::now()));
                    st.last_error = Some(msg.clone());
                    errors.push(msg);
                }
            }
        }
        let answered = winner.is_some() || first_refused.is_some();
        if let Some((i, tip)) = winner.or_else(|| first_refused.map(|t| (usize::MAX, t))) {
            state.source.last_success = Some(state::now());
            state.source.last_error = None;
            state.source.remote_tip = Some(tip.clone());
            state.source.via = (i != 0 && i != usize::MAX).then(|| self.remotes[i].redacted.clone());
            if let Err(e) = repo.set_ref(source::FETCHED_REF, &tip) {
                log::warn!("{e}");
            }
            polled.tip = Some(tip);
        }
        if answered {
            return;
        }
        let message = if errors.is_empty() {
            "no source configured".to_owned()
        } else {
            errors.join("; ")
        };
        if attempted > 0 {
            state.source.last_error = Some(message.clone());
        }
        polled.problems.push(("fetch".into(), message));
        let now = Instant::now();
        self.retry_at = self
            .remotes
            .iter()
            .filter_map(|r| r.next_attempt)
            .filter(|at| *at > now)
            .min();
    }

    /// Fetch from source `i` on a thread of its own, waiting at most `fetch_timeout`.
    fn fetch_one(&mut self, i: usize) -> Result<Fetched, source::Error> {
        let r = &mut self.remotes[i];
        let (tx, rx) = std::sync::mpsc::channel();
        let interrupt = Arc::new(AtomicBool::new(false));
        let job = {
            let (path, url, branch, local, transport, interrupt) = (
                self.repo_path.clone(),
                r.url.clone(),
                self.branch.clone(),
                source_ref(i),
                self.transport.clone(),
                interrupt.clone(),
            );
            std::thread::Builder::new()
                .name(format!("tend-fetch-{i}"))
                .spawn(move || {
                    let _ = tx.send(source::fetch(&path, &url, &branch, &local, &transport, &interrupt));
                })
        };
        if let Err(e) = job {
            return Err(source::Error::Fetch {
                url: r.redacted.clone(),
                message: format!("cannot start a fetch thread: {e}"),
            });
        }
        let started = Instant::now();
        match rx.recv_timeout(self.fetch_timeout) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                interrupt.store(true, Ordering::Relaxed);
                r.job = Some(Job { rx, interrupt, started });
                Err(source::Error::Fetch {
                    url: r.redacted.clone(),
                    message: format!(
                        "no complete answer within fetch_timeout ({}s); gave up",
                        self.fetch_timeout.as_secs()
                    ),
                })
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(source::Error::Fetch {
                url: r.redacted.clone(),
                message: "the fetch thread died".into(),
            }),
        }
    }

    /// Whether a fetch that outlived its poll is still running (it may be writing a pack).
    pub fn fetch_running(&self) -> bool {
        self.remotes.iter().any(|r| r.job.is_some())
    }

    /// End of a cycle: settle the outcome of this cycle's bundle, remove handled spool files,
    /// and arrange the next early poll (a source due again before the next poll, more bundles).
    pub fn finish(&mut self, state: &mut State) {
        if let Some((path, tip)) = self.pending_bundle.take() {
            let file = path.display().to_string();
            if let Some(rec) = state.bundles.iter_mut().find(|b| b.file == file) {
                if state.applied.as_ref().is_some_and(|a| a.commit.id == tip) {
                    rec.outcome = "applied".into();
                    rec.reason = None;
                } else if let Some(r) = state.refused.as_ref().filter(|r| r.commit.id == tip) {
                    rec.outcome = "refused".into();
                    rec.reason = Some(format!("commit {} refused ({}): {}", short(&tip), r.step, r.reason));
                } else {
                    rec.outcome = "failed".into();
                    rec.reason = Some(
                        state
                            .last_error
                            .as_ref()
                            .map(|e| format!("{}: {}", e.step, e.message))
                            .unwrap_or_else(|| "not applied".into()),
                    );
                }
            }
        }
        for p in self.spooled_done.drain(..) {
            let _ = std::fs::remove_file(p);
        }
        if !std::mem::take(&mut self.polled) {
            return;
        }
        let Some(tx) = self.triggers.clone() else { return };
        if let Some(t) = self.retry_timer.take() {
            t.abort();
        }
        let now = Instant::now();
        if self.more_bundles {
            let _ = tx.try_send(Trigger::Sync("more bundles waiting".into()));
        } else if let Some(at) = self.retry_at.take() {
            // Only when the source is due before the next regular poll would take it.
            let next_tick = match state.source.next_poll {
                Some(t) => now + Duration::from_secs((t - state::now()).max(0) as u64),
                None => now + self.poll_interval,
            };
            if at + self.poll_interval / 10 < next_tick {
                self.retry_timer = Some(tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let _ = tx.send(Trigger::Sync("a failing source is due again".into())).await;
                }));
            }
        }
    }
}

/// Watch `dirs` for `*.bundle` files and ask for a poll when one appears or changes (once it
/// has stopped changing).
pub fn spawn_inbox_watch(dirs: Vec<PathBuf>, tx: tokio::sync::mpsc::Sender<Trigger>) {
    tokio::spawn(async move {
        let mut last: std::collections::HashMap<PathBuf, (u64, i64)> = Default::default();
        let mut announced: std::collections::HashMap<PathBuf, (u64, i64)> = Default::default();
        loop {
            let dirs2 = dirs.clone();
            // A hung mount must not block the runtime.
            let scan = tokio::task::spawn_blocking(move || {
                dirs2
                    .iter()
                    .flat_map(|d| bundles_in(d))
                    .map(|(p, m)| (p, identity(&m)))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let mut now_seen = std::collections::HashMap::new();
            for (path, id) in scan {
                let stable = last.get(&path) == Some(&id);
                if stable && announced.get(&path) != Some(&id) {
                    announced.insert(path.clone(), id);
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if tx
                        .send(Trigger::Sync(format!("bundle {name} in the inbox")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                now_seen.insert(path, id);
            }
            announced.retain(|p, _| now_seen.contains_key(p));
            last = now_seen;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let max = Duration::from_secs(60);
        let mid = |n| backoff(n, max, 0.5);
        assert_eq!(mid(1), Duration::from_secs(5));
        assert_eq!(mid(2), Duration::from_secs(10));
        assert_eq!(mid(3), Duration::from_secs(20));
        assert_eq!(mid(4), Duration::from_secs(40));
        assert_eq!(mid(5), Duration::from_secs(60));
        assert_eq!(mid(40), Duration::from_secs(60));
        for n in 1..10 {
            let lo = backoff(n, max, 0.0);
            let hi = backoff(n, max, 0.999);
            assert!(lo <= hi && hi <= max, "{n}: {lo:?} {hi:?}");
            assert!(lo >= mid(n).mul_f64(0.89), "{n}: {lo:?}");
        }
        // A short cap (a short poll interval) bounds the first retry too.
        assert_eq!(backoff(1, Duration::from_secs(2), 1.0), Duration::from_secs(2));
    }

    #[test]
    fn random_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..100).map(|_| random()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn bundles_are_listed_oldest_first_without_hidden_files() {
        let dir = tempfile::tempdir().expect("tmp");
        for (name, age) in [("b.bundle", 10), ("a.bundle", 20), (".c.bundle", 30), ("d.txt", 40)] {
            let p = dir.path().join(name);
            std::fs::write(&p, b"x").expect("write");
            let t = SystemTime::now() - Duration::from_secs(age);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_modified(t))
                .expect("mtime");
        }
        let names: Vec<String> = bundles_in(dir.path())
            .into_iter()
            .map(|(p, _)| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, vec!["a.bundle", "b.bundle"]);
        assert!(bundles_in(Path::new("/nonexistent/inbox")).is_empty());
    }
}
