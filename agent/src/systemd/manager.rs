//! The narrow interface to systemd that apply needs, so plan/apply can be
//! tested without D-Bus. [`super::DbusUnitManager`] is the real one.

use std::time::Duration;

use super::error::Error;
use super::plan::ObservedUnit;

/// How a start/restart/stop job ended, and the unit's state right after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// Unit name.
    pub unit: String,
    /// systemd's job result: `done`, `canceled`, `timeout`, `failed`,
    /// `dependency`, `skipped`, ...
    pub result: String,
    /// The unit's active state after the job.
    pub active_state: String,
    /// The unit's sub-state after the job.
    pub sub_state: String,
}

impl JobResult {
    /// The job finished with `done` and the unit is not `failed`.
    pub fn succeeded(&self) -> bool {
        self.result == "done" && self.active_state != "failed"
    }
}

/// What apply needs from systemd.
#[allow(async_fn_in_trait)]
pub trait UnitManager {
    /// systemd's view of the units (`load_state`, `active_state`, `sub_state`,
    /// `unit_file_state`, `unit_file_path`), one entry per name, in order.
    /// The file fields are left empty (see [`super::UnitFiles::observe_files`]).
    async fn observe(&self, names: &[String]) -> Result<Vec<ObservedUnit>, Error>;
    /// `daemon-reload`.
    async fn reload(&self) -> Result<(), Error>;
    /// Enable the units (one call).
    async fn enable(&self, names: &[String]) -> Result<(), Error>;
    /// Disable the units (one call).
    async fn disable(&self, names: &[String]) -> Result<(), Error>;
    /// Start, waiting for the job up to `timeout`.
    async fn start(&self, name: &str, timeout: Duration) -> Result<JobResult, Error>;
    /// Restart (starts it if stopped), waiting for the job up to `timeout`.
    async fn restart(&self, name: &str, timeout: Duration) -> Result<JobResult, Error>;
    /// Stop, waiting for the job up to `timeout`.
    async fn stop(&self, name: &str, timeout: Duration) -> Result<JobResult, Error>;
    /// The last `lines` journal lines of the unit (messages only).
    async fn journal_tail(&self, name: &str, lines: usize) -> Result<Vec<String>, Error>;
}
