//! systemd units declared in Git, reconciled through systemd's D-Bus API.
//!
//! One reconcile cycle:
//!
//! 1. [`desired_units`] — pure: merge the layers' `units/` directories,
//!    validate names, syntax (file:line) and `units/tend.toml`.
//!    Optionally [`verify_with_systemd_analyze`] for a deep check.
//! 2. [`observe`] — systemd's state of every desired and owned unit in two
//!    D-Bus calls, plus the files in the unit directory.
//! 3. [`plan()`] — pure: the ordered [`UnitAction`]s, each with a [`Reason`].
//! 4. [`apply`] — executes them through a [`UnitManager`]
//!    ([`DbusUnitManager`] in production) and [`UnitFiles`], updating the
//!    caller's [`OwnedUnit`] map, which the caller persists.

mod apply;
mod dbus;
mod desired;
mod error;
mod files;
mod manager;
mod names;
mod plan;
mod unitfile;
mod verify;

pub use self::apply::{apply, observe, units_to_observe, ApplyOptions, ApplyReport, Outcome, Step, UnitFailure};
pub use self::dbus::{DbusConfig, DbusUnitManager};
pub use self::desired::{
    content_hash, desired_units, DesiredDropIn, DesiredUnit, DesiredUnits, Intent, Layer, MANIFEST,
};
pub use self::error::Error;
pub use self::files::{UnitFiles, DEFAULT_UNIT_DIR};
pub use self::manager::{JobResult, UnitManager};
pub use self::names::{escape_path, parse_unit_name, UnitKind, UnitName};
pub use self::plan::{plan, ObservedUnit, OwnedUnit, PlanOptions, Reason, UnitAction};
pub use self::unitfile::{parse as parse_unit_file, referenced_secrets, ParsedUnit, SECRETS_DIR};
pub use self::verify::{systemd_analyze_available, verify_with_systemd_analyze, VerifyMessage};
