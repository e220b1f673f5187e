//! Durable state in `state.json`: what is applied, what was refused and why, what the last
//! cycle saw. Written atomically (temp file, fsync, rename); one agent at a time (flock).

use crate::desired::compose::ServiceSpec;
use crate::plan::ObservedContainer;
use crate::source::CommitInfo;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many history entries are kept.
pub const HISTORY_LEN: usize = 50;

/// How many bundle records are kept.
pub const BUNDLES_LEN: usize = 100;

/// Errors reading, writing or locking state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// I/O on a state file.
    #[error("state {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The state file is not valid.
    #[error("state {path}: {message}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// Another agent holds the lock.
    #[error("another tend agent is running (lock {path} is held)")]
    Locked {
        /// Lock file.
        path: PathBuf,
    },
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The applied revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The commit.
    #[serde(flatten)]
    pub commit: CommitInfo,
    /// Who signed it (absent only with `allow_unsigned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<crate::trust::Signer>,
    /// When it was applied.
    pub applied_at: i64,
}

/// A revision tend will not apply, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// The commit.
    #[serde(flatten)]
    pub commit: CommitInfo,
    /// The step that refused it (`load`, `verify`, ...).
    pub step: String,
    /// The one-line reason.
    pub reason: String,
    /// When it was first refused.
    pub since: i64,
}

/// The last contact with the source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// URL (credentials redacted).
    pub url: String,
    /// Branch.
    pub branch: String,
    /// Last fetch attempt.
    pub last_attempt: Option<i64>,
    /// Last successful fetch.
    pub last_success: Option<i64>,
    /// Error of the last attempt, when it failed.
    pub last_error: Option<String>,
    /// Remote branch tip seen at the last success.
    pub remote_tip: Option<String>,
    /// When the next poll is due.
    pub next_poll: Option<i64>,
    /// Which source answered last (its URL, redacted, or `bundle FILE`), when not the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Each source (the primary URL, then the mirrors), in the order they are tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<RemoteStatus>,
}

/// Contact with one source URL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteStatus {
    /// URL (credentials redacted).
    pub url: String,
    /// `primary` or `mirror`.
    pub role: String,
    /// Last attempt (start).
    pub last_attempt: Option<i64>,
    /// Last time the source answered.
    pub last_contact: Option<i64>,
    /// Error of the last attempt, when it failed.
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    #[serde(default)]
    pub failures: u32,
    /// When it is tried next, when it is backing off (otherwise: at the next poll).
    pub next_attempt: Option<i64>,
    /// Branch tip it answered with last.
    pub tip: Option<String>,
    /// How long the last attempt took, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// Whether the last successful attempt transferred a pack (false: nothing new, no pack requested).
    #[serde(default)]
    pub pack: bool,
}

/// What happened to one offline bundle (from the inbox or `tend import`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleRecord {
    /// The bundle file.
    pub file: String,
    /// Its size in bytes and modification time (seconds), which identify this version of the file.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// The commit the bundle carries for the followed branch, when it could be read.
    pub commit: Option<String>,
    /// `pending`, `applied`, `already-applied`, `refused`, `failed`.
    pub outcome: String,
    /// Why, for anything but `applied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was processed.
    pub at: i64,
}

/// An error the last cycle met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    /// When.
    pub at: i64,
    /// The step (`fetch`, `load`, `apply`, ...).
    pub step: String,
    /// One line.
    pub message: String,
}

/// One line of history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When.
    pub at: i64,
    /// Commit.
    pub commit: String,
    /// Subject.
    pub subject: String,
    /// `applied`, `refused`, `failed`, `drift-corrected`.
    pub outcome: String,
    /// What happened.
    pub message: String,
    /// Who signed the commit, when verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// How long the cycle took, in milliseconds.
    pub duration_ms: u64,
}

/// A managed container as last observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Service.
    pub service: String,
    /// Container name.
    pub name: String,
    /// Short id.
    pub id: String,
    /// `running`, `exited (1)`, `missing`...
    pub state: String,
    /// The engine's status text.
    pub status: String,
    /// Image.
    pub image: String,
    /// Why tend is holding back (crash loop), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Everything in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Host name.
    pub host: String,
    /// True when `[trust] allow_unsigned` is set: nothing is verified.
    #[serde(default)]
    pub unverified: bool,
    /// Source contact.
    pub source: SourceStatus,
    /// The applied (last good) revision.
    pub applied: Option<Applied>,
    /// The newest refused revision.
    pub refused: Option<Refused>,
    /// The last error, cleared by a clean cycle.
    pub last_error: Option<LastError>,
    /// When the last cycle ended.
    pub last_cycle: Option<i64>,
    /// How long the last cycle took, in microseconds (each step's share is in `steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cycle_us: Option<u64>,
    /// Specs of applied services by hash (to explain later changes).
    #[serde(default)]
    pub specs: BTreeMap<String, ServiceSpec>,
    /// Managed containers as last observed.
    #[serde(default)]
    pub containers: Vec<ContainerStatus>,
    /// Notes about the applied revision (obsolete keys, unset variables).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Newest first.
    #[serde(default)]
    pub history: VecDeque<HistoryEntry>,
    /// Units tend owns: what it wrote, for change detection and cleanup.
    #[serde(default)]
    pub units_owned: BTreeMap<String, crate::systemd::OwnedUnit>,
    /// Owned units as last observed.
    #[serde(default)]
    pub units: Vec<UnitStatus>,
    /// Host files tend wrote: path -> hash of content, mode and owner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files_owned: BTreeMap<String, String>,
    /// `auto` or `manual`.
    #[serde(default)]
    pub mode: Option<crate::config::Mode>,
    /// No applies; drift is only reported.
    #[serde(default)]
    pub suspended: bool,
    /// A verified revision waiting for `tend approve` (manual mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// A revision that failed its health gate and was rolled back: not retried until a newer
    /// commit arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad: Option<Refused>,
    /// What the newest verified revision would change, per resource (`tend diff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
    /// The lifecycle of the newest revision tend worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionStatus>,
    /// Each step of the last cycle and its condition.
    #[serde(default)]
    pub steps: Vec<StepCondition>,
    /// Offline bundles seen, newest first (at most [`BUNDLES_LEN`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundles: Vec<BundleRecord>,
}

/// A revision waiting for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The commit.
    #[serde(flatten)]
    pub commit: CommitInfo,
    /// Since when it waits.
    pub since: i64,
    /// Who signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// The plan for a revision against the host as last observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// The revision.
    pub commit: String,
    /// When it was computed.
    pub at: i64,
    /// Per resource: the action and its reason.
    pub steps: Vec<crate::plan::Step>,
}

/// Where a revision is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Fetched from a source.
    Fetched,
    /// Signature and policy checked.
    Verified,
    /// Loaded, decrypted and planned (in manual mode: waiting for approval).
    Planned,
    /// Being applied.
    Applying,
    /// Applied and healthy.
    Healthy,
    /// Refused or failed.
    Failed,
    /// Failed its health gate; the previous revision was restored.
    RolledBack,
}

/// The lifecycle of one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionStatus {
    /// The commit.
    pub commit: String,
    /// Phase.
    pub phase: Phase,
    /// Since when.
    pub since: i64,
    /// Why, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One step of a cycle and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCondition {
    /// `fetch`, `verify`, `load`, `decrypt`, `observe`, `plan`, `apply`, `health`.
    pub step: String,
    /// True when it succeeded.
    pub ok: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long it took, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
}

/// An owned systemd unit as last observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// Unit name.
    pub name: String,
    /// `active`, `inactive`, `failed`...
    pub active: String,
    /// `running`, `exited`, `dead`...
    pub sub: String,
    /// `enabled`, `disabled`, `masked`...
    pub file_state: String,
    /// Why it needs attention, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The last journal lines of a failed unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<String>,
}

impl State {
    /// Read `path`; a missing file is a fresh state.
    pub fn load(path: &Path) -> Result<State, Error> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: path.to_owned(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: 1,
                ..State::default()
            }),
            Err(source) => Err(Error::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Write atomically: a temp file in the same directory, fsync, rename, fsync the directory.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).expect("state always serialises");
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode_0640()
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&json).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }

    /// A hash of what lasts in the state: everything but the clocks (when things were last
    /// attempted, how long they took, containers' "Up 5 minutes"). Two states with the same
    /// hash differ only in what the next cycle will write anyway.
    pub fn lasting_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut v = serde_json::to_value(self).expect("state always serialises");
        let blank = |v: &mut serde_json::Value, keys: &[&str]| {
            if let Some(o) = v.as_object_mut() {
                for k in keys {
                    o.remove(*k);
                }
            }
        };
        let each = |v: &mut serde_json::Value, list: &str, keys: &[&str]| {
            for item in v.get_mut(list).and_then(|l| l.as_array_mut()).into_iter().flatten() {
                blank(item, keys);
            }
        };
        blank(&mut v, &["last_cycle", "last_cycle_us"]);
        // Which steps the last cycle ran alternates (polls, drift checks); failures last.
        if let Some(steps) = v.get_mut("steps").and_then(|l| l.as_array_mut()) {
            steps.retain(|s| s["ok"] == false);
        }
        each(&mut v, "steps", &["duration_us"]);
        each(&mut v, "containers", &["status"]);
        for key in ["last_error", "diff"] {
            if let Some(inner) = v.get_mut(key) {
                blank(inner, &["at"]);
            }
        }
        if let Some(src) = v.get_mut("source") {
            blank(src, &["last_attempt", "last_success", "next_poll"]);
            each(
                src,
                "sources",
                &["last_attempt", "last_contact", "next_attempt", "last_duration_ms"],
            );
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        v.to_string().hash(&mut h);
        h.finish()
    }

    /// Add a history entry, newest first, keeping [`HISTORY_LEN`].
    pub fn record(&mut self, entry: HistoryEntry) {
        self.history.push_front(entry);
        self.history.truncate(HISTORY_LEN);
    }

    /// Record the observed containers.
    pub fn set_containers(&mut self, observed: &[ObservedContainer], images: &BTreeMap<String, String>) {
        self.containers = observed
            .iter()
            .map(|c| ContainerStatus {
                service: c.service.clone(),
                name: c.name.clone(),
                id: c.id.chars().take(12).collect(),
                state: c.state.to_string(),
                status: c.status.clone(),
                image: images.get(&c.service).cloned().unwrap_or_default(),
                note: None,
            })
            .collect();
    }
}

trait Mode0640 {
    fn mode_0640(&mut self) -> &mut Self;
}

impl Mode0640 for std::fs::OpenOptions {
    fn mode_0640(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o640)
    }
}

/// The agent lock: held for the life of `tend run`.
pub struct Lock {
    _flock: nix::fcntl::Flock<std::fs::File>,
}

impl Lock {
    /// Take the lock in `dir` without waiting.
    pub fn acquire(dir: &Path) -> Result<Lock, Error> {
        let path = dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(Lock { _flock: flock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::Locked { path }),
            Err((_, errno)) => Err(Error::Io {
                path,
                source: std::io::Error::from(errno),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let mut s = State::load(&path).expect("fresh");
        assert_eq!(s.version, 1);
        s.host = "h".into();
        s.applied = Some(Applied {
            commit: CommitInfo {
                id: "abc".into(),
                subject: "first".into(),
                time: 5,
            },
            applied_at: 6,
            signer: None,
        });
        s.save(&path).expect("save");
        let back = State::load(&path).expect("load");
        assert_eq!(back, s);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn only_clocks_leave_the_lasting_hash_alone() {
        let mut s = State::default();
        s.containers.push(ContainerStatus {
            service: "web".into(),
            name: "p-web-1".into(),
            id: "abc".into(),
            state: "running".into(),
            status: "Up 5 seconds".into(),
            image: "nginx".into(),
            note: None,
        });
        s.source.sources.push(RemoteStatus::default());
        let h = s.lasting_hash();
        s.last_cycle = Some(5);
        s.last_cycle_us = Some(900);
        s.source.last_attempt = Some(5);
        s.source.last_success = Some(5);
        s.source.sources[0].last_contact = Some(5);
        s.source.sources[0].last_duration_ms = Some(12);
        s.containers[0].status = "Up 6 minutes".into();
        s.steps = vec![StepCondition {
            step: "fetch".into(),
            ok: true,
            message: None,
            duration_us: Some(4),
        }];
        assert_eq!(s.lasting_hash(), h, "only clocks moved");
        s.steps[0].ok = false;
        s.steps[0].message = Some("unreachable".into());
        assert_ne!(s.lasting_hash(), h, "a step failed");
        s.steps.clear();
        s.containers[0].state = "exited (1)".into();
        assert_ne!(s.lasting_hash(), h, "a container changed");
        s.containers[0].state = "running".into();
        s.source.remote_tip = Some("abc".into());
        assert_ne!(s.lasting_hash(), h, "a new tip");
        s.source.remote_tip = None;
        s.source.sources[0].failures = 1;
        assert_ne!(s.lasting_hash(), h, "a source failed");
    }

    #[test]
    fn history_is_bounded_newest_first() {
        let mut s = State::default();
        for i in 0..(HISTORY_LEN + 5) {
            s.record(HistoryEntry {
                at: i as i64,
                commit: format!("c{i}"),
                subject: String::new(),
                outcome: "applied".into(),
                message: String::new(),
                signer: None,
                duration_ms: 0,
            });
        }
        assert_eq!(s.history.len(), HISTORY_LEN);
        assert_eq!(s.history[0].commit, format!("c{}", HISTORY_LEN + 4));
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").expect("write");
        assert!(matches!(State::load(&path), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Lock::acquire(dir.path()).expect("first lock");
        assert!(matches!(Lock::acquire(dir.path()), Err(Error::Locked { .. })));
        drop(first);
        assert!(Lock::acquire(dir.path()).is_ok());
    }
}
