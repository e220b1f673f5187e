//! [`UnitManager`] over systemd's D-Bus API (`org.freedesktop.systemd1.Manager`)
//! with zbus on tokio.
//!
//! - Observation is two calls whatever the number of units:
//!   `ListUnitsByNames` (load/active/sub state) and `ListUnitFilesByPatterns`
//!   (unit file state and path: enabled, disabled, static, masked, ...).
//!   The second is costly inside systemd (it scans the unit directories for
//!   every unit: ~0.3 ms per unit), so its answer is cached and dropped
//!   when systemd signals `UnitFilesChanged` (enable, disable, mask, ... by
//!   anyone) or `Reloading`, when tend itself enables/disables/reloads, when
//!   other names are asked for, or after [`DbusConfig::file_state_max_age`].
//!   A steady-state drift check is then one `ListUnitsByNames` call.
//! - Jobs (`StartUnit`, `RestartUnit`, `StopUnit`, mode `replace`) are
//!   awaited through the `JobRemoved` signal: the match rule is registered
//!   *before* the call so a fast job cannot be missed, the signal is matched
//!   on the job's object path, and the wait has a timeout.
//! - `journal_tail` runs `journalctl -u NAME -n N --no-pager -o cat -q`
//!   (journald has no D-Bus read API); the command prefix is configurable so
//!   tests can run it inside a container (`docker exec NODE journalctl`).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::connection::Builder;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedObjectPath};

use super::error::Error;
use super::manager::{JobResult, UnitManager};
use super::plan::ObservedUnit;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const IFACE: &str = "org.freedesktop.systemd1.Manager";

/// Settings of [`DbusUnitManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbusConfig {
    /// D-Bus address, e.g. `unix:path=/run/dbus/system_bus_socket`; `None`
    /// for the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or its default).
    pub address: Option<String>,
    /// Program and leading arguments used to read the journal;
    /// `-u NAME -n N --no-pager -o cat -q` is appended. Default `["journalctl"]`.
    pub journal_command: Vec<String>,
    /// Timeout of each method call (not of the jobs, which take their own).
    pub call_timeout: Duration,
    /// Longest time a cached `ListUnitFilesByPatterns` answer is reused
    /// (it is also dropped on systemd's `UnitFilesChanged`/`Reloading`
    /// signals). `Duration::ZERO` disables the cache.
    pub file_state_max_age: Duration,
}

impl Default for DbusConfig {
    fn default() -> Self {
        DbusConfig {
            address: None,
            journal_command: vec!["journalctl".to_string()],
            call_timeout: Duration::from_secs(60),
            file_state_max_age: Duration::from_secs(300),
        }
    }
}

/// systemd over D-Bus.
#[derive(Debug, Clone)]
pub struct DbusUnitManager {
    conn: Connection,
    config: DbusConfig,
    /// Bumped on every `UnitFilesChanged`/`Reloading` signal and by our own
    /// enable/disable/reload.
    generation: Arc<AtomicU64>,
    cache: Arc<Mutex<Option<FileStates>>>,
    _watcher: Arc<Watcher>,
}

/// A cached `ListUnitFilesByPatterns` answer: name -> (state, path), `None`
/// for names systemd has no unit file for.
#[derive(Debug)]
struct FileStates {
    generation: u64,
    fetched: tokio::time::Instant,
    states: BTreeMap<String, Option<(String, String)>>,
}

/// Aborts the signal watcher task when the last manager clone is dropped.
#[derive(Debug)]
struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn manager_signal(member: &'static str) -> zbus::Result<MatchRule<'static>> {
    MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(DEST)
        .path(PATH)
        .interface(IFACE)
        .member(member)
        .build()
}

/// One row of `ListUnitsByNames`: name, description, load state, active
/// state, sub state, followed unit, object path, job id, job type, job path.
type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

impl DbusUnitManager {
    /// Connect and `Subscribe` to the manager's signals. Must be called within
    /// a tokio runtime.
    pub async fn connect(config: DbusConfig) -> Result<Self, Error> {
        let address = config.address.clone().unwrap_or_else(|| "system".into());
        let builder = match &config.address {
            None => Builder::system(),
            Some(a) => Builder::address(a.as_str()),
        };
        let conn = builder.build().await.map_err(|source| Error::Connect {
            address: address.clone(),
            source,
        })?;
        let signals_err = |source| Error::Dbus {
            method: "AddMatch",
            unit: String::new(),
            source,
        };
        let changed =
            MessageStream::for_match_rule(manager_signal("UnitFilesChanged").map_err(signals_err)?, &conn, None)
                .await
                .map_err(signals_err)?;
        let reloading = MessageStream::for_match_rule(manager_signal("Reloading").map_err(signals_err)?, &conn, None)
            .await
            .map_err(signals_err)?;
        let generation = Arc::new(AtomicU64::new(0));
        let gen = generation.clone();
        let watcher = tokio::spawn(async move {
            let mut signals = futures_util::stream::select(changed, reloading);
            while signals.next().await.is_some() {
                let _ = gen.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |g| {
                    (g != u64::MAX).then_some(g.saturating_add(1))
                });
            }
            // Connection gone: make every later observation ask systemd.
            gen.store(u64::MAX, Ordering::SeqCst);
        });
        let me = DbusUnitManager {
            conn,
            config,
            generation,
            cache: Arc::new(Mutex::new(None)),
            _watcher: Arc::new(Watcher(watcher)),
        };
        // Subscribed clients get the manager's signals: UnitFilesChanged and
        // Reloading for the cache, JobRemoved for jobs queued by others (the
        // jobs we queue are reported to us either way).
        me.call("Subscribe", "", &()).await?;
        Ok(me)
    }

    fn invalidate_file_states(&self) {
        // u64::MAX marks a dead watcher for good; never wrap past it.
        let _ = self.generation.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |g| {
            (g != u64::MAX).then_some(g.saturating_add(1))
        });
    }

    /// The bus connection is gone (dbus restarted, ...): every call fails;
    /// the caller should connect a new manager.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Unit file state and path per name, from the cache when still valid.
    async fn file_states(&self, names: &[String]) -> Result<BTreeMap<String, Option<(String, String)>>, Error> {
        let generation = self.generation.load(Ordering::SeqCst);
        if !self.config.file_state_max_age.is_zero() && generation != u64::MAX {
            // A cache: a panic elsewhere cannot leave it in a harmful state.
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.as_ref() {
                if c.generation == generation
                    && c.fetched.elapsed() < self.config.file_state_max_age
                    && names.iter().all(|n| c.states.contains_key(n))
                {
                    return Ok(names
                        .iter()
                        .map(|n| (n.clone(), c.states.get(n).cloned().flatten()))
                        .collect());
                }
            }
        }
        // Unit names contain no fnmatch metacharacters except `\` in escapes,
        // which systemd matches literally (FNM_NOESCAPE).
        let no_states: Vec<&str> = Vec::new();
        let label = names.join(",");
        let reply = self
            .call("ListUnitFilesByPatterns", &label, &(no_states, names))
            .await?;
        let files: Vec<(String, String)> = reply.body().deserialize().map_err(|source| Error::Dbus {
            method: "ListUnitFilesByPatterns",
            unit: label.clone(),
            source,
        })?;
        let mut states: BTreeMap<String, Option<(String, String)>> = names.iter().map(|n| (n.clone(), None)).collect();
        for (path, state) in files {
            let file_name = path.rsplit('/').next().unwrap_or(&path).to_string();
            if let Some(slot) = states.get_mut(&file_name) {
                *slot = Some((state, path));
            }
        }
        if !self.config.file_state_max_age.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            *cache = Some(FileStates {
                generation,
                fetched: tokio::time::Instant::now(),
                states: states.clone(),
            });
        }
        Ok(states)
    }

    /// The underlying connection (e.g. to read more properties).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    async fn call<B>(&self, method: &'static str, unit: &str, body: &B) -> Result<Message, Error>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        let fut = self.conn.call_method(Some(DEST), PATH, Some(IFACE), method, body);
        match tokio::time::timeout(self.config.call_timeout, fut).await {
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(source)) => Err(Error::Dbus {
                method,
                unit: unit.to_string(),
                source,
            }),
            Err(_) => Err(Error::JobTimeout {
                method,
                unit: unit.to_string(),
                timeout: self.config.call_timeout,
            }),
        }
    }

    async fn run_job(&self, method: &'static str, name: &str, timeout: Duration) -> Result<JobResult, Error> {
        let dbus_err = |source| Error::Dbus {
            method,
            unit: name.to_string(),
            source,
        };
        let rule = manager_signal("JobRemoved").map_err(dbus_err)?;
        // Registered before the call: the signal cannot be missed.
        let mut stream = MessageStream::for_match_rule(rule, &self.conn, NonZeroUsize::new(1024))
            .await
            .map_err(dbus_err)?;
        let reply = self.call(method, name, &(name, "replace")).await?;
        let job: OwnedObjectPath = reply.body().deserialize().map_err(dbus_err)?;

        let deadline = tokio::time::Instant::now() + timeout;
        let result = loop {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            let msg = match next {
                Err(_) => {
                    return Err(Error::JobTimeout {
                        method,
                        unit: name.to_string(),
                        timeout,
                    })
                }
                Ok(None) => {
                    return Err(dbus_err(zbus::Error::InputOutput(
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "bus connection closed while waiting for the job",
                        )
                        .into(),
                    )))
                }
                Ok(Some(msg)) => msg.map_err(dbus_err)?,
            };
            // JobRemoved(u id, o job, s unit, s result)
            let Ok((_id, path, _unit, result)) = msg.body().deserialize::<(u32, OwnedObjectPath, String, String)>()
            else {
                continue;
            };
            if path == job {
                break result;
            }
        };
        let state = self.observe_states(&[name.to_string()], method).await?;
        let (active_state, sub_state) = state
            .into_iter()
            .next()
            .map(|o| (o.active_state, o.sub_state))
            .unwrap_or_default();
        Ok(JobResult {
            unit: name.to_string(),
            result,
            active_state,
            sub_state,
        })
    }

    async fn observe_states(&self, names: &[String], method: &'static str) -> Result<Vec<ObservedUnit>, Error> {
        let label = names.join(",");
        let reply = self.call("ListUnitsByNames", &label, &(names,)).await?;
        let rows: Vec<UnitRow> = reply.body().deserialize().map_err(|source| Error::Dbus {
            method,
            unit: label.clone(),
            source,
        })?;
        Ok(rows
            .into_iter()
            .map(|r| ObservedUnit {
                name: r.0,
                load_state: r.2,
                active_state: r.3,
                sub_state: r.4,
                ..Default::default()
            })
            .collect())
    }
}

impl UnitManager for DbusUnitManager {
    async fn observe(&self, names: &[String]) -> Result<Vec<ObservedUnit>, Error> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // systemd refuses templates (`foo@.service`) in ListUnitsByNames
        // (they cannot be loaded); they only have a unit file state.
        let loadable: Vec<String> = names.iter().filter(|n| !is_template(n)).cloned().collect();
        let mut loaded: BTreeMap<String, ObservedUnit> = if loadable.is_empty() {
            BTreeMap::new()
        } else {
            self.observe_states(&loadable, "ListUnitsByNames")
                .await?
                .into_iter()
                .map(|o| (o.name.clone(), o))
                .collect()
        };
        let mut units: Vec<ObservedUnit> = names
            .iter()
            .map(|n| {
                loaded.remove(n).unwrap_or_else(|| ObservedUnit {
                    name: n.clone(),
                    ..Default::default()
                })
            })
            .collect();
        let states = self.file_states(names).await?;
        for u in &mut units {
            if let Some(Some((state, path))) = states.get(&u.name) {
                u.unit_file_state = state.clone();
                u.unit_file_path = Some(path.clone());
            }
        }
        Ok(units)
    }

    async fn reload(&self) -> Result<(), Error> {
        self.invalidate_file_states();
        let result = self.call("Reload", "", &()).await.map(|_| ());
        self.invalidate_file_states();
        result
    }

    async fn enable(&self, names: &[String]) -> Result<(), Error> {
        if names.is_empty() {
            return Ok(());
        }
        // (files, runtime, force) -> (carries_install_info, changes)
        let result = self
            .call("EnableUnitFiles", &names.join(","), &(names, false, false))
            .await
            .map(|_| ());
        self.invalidate_file_states();
        result
    }

    async fn disable(&self, names: &[String]) -> Result<(), Error> {
        if names.is_empty() {
            return Ok(());
        }
        // (files, runtime) -> changes
        let result = self
            .call("DisableUnitFiles", &names.join(","), &(names, false))
            .await
            .map(|_| ());
        self.invalidate_file_states();
        result
    }

    async fn start(&self, name: &str, timeout: Duration) -> Result<JobResult, Error> {
        self.run_job("StartUnit", name, timeout).await
    }

    async fn restart(&self, name: &str, timeout: Duration) -> Result<JobResult, Error> {
        self.run_job("RestartUnit", name, timeout).await
    }

    async fn stop(&self, name: &str, timeout: Duration) -> Result<JobResult, Error> {
        self.run_job("StopUnit", name, timeout).await
    }

    async fn journal_tail(&self, name: &str, lines: usize) -> Result<Vec<String>, Error> {
        let Some((program, args)) = self.config.journal_command.split_first() else {
            return Err(Error::Command {
                program: String::new(),
                message: "empty journal command".into(),
            });
        };
        let out = tokio::process::Command::new(program)
            .args(args)
            .args(["-u", name, "-n", &lines.to_string(), "--no-pager", "-o", "cat", "-q"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::Command {
                program: program.clone(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(Error::Command {
                program: program.clone(),
                message: format!(
                    "exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }
}

/// `foo@.service`: a template, which systemd cannot load by that name.
fn is_template(name: &str) -> bool {
    name.contains("@.")
}
