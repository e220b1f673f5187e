//! The one error type of the systemd module.
//!
//! Every variant carries the structured fields an operator (or the caller's
//! logging) needs: the unit, the file and line in Git, the D-Bus method. The
//! `Display` text is one line and ends with what to do about it.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while reading, planning or applying units.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file under `units/` whose name is not a valid unit name.
    #[error("{file}: invalid unit name `{name}`: {reason}; rename the file in Git")]
    InvalidUnitName {
        /// File as given in Git (layer and path under `units/`).
        file: String,
        /// The offending name.
        name: String,
        /// Why it was refused.
        reason: String,
    },

    /// A file under `units/` that is neither a unit, a drop-in nor the manifest.
    #[error("{file}: not a unit file, a `NAME.d/*.conf` drop-in or `tend.toml`; move or remove it in Git")]
    UnexpectedFile {
        /// File as given in Git.
        file: String,
    },

    /// A syntax error in a unit file or drop-in.
    #[error("{file}:{line}: {message}; fix the unit file in Git")]
    Syntax {
        /// File as given in Git.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// A unit whose content systemd would refuse to load (checked without systemd).
    #[error("{file}: unit {unit}: {message}; fix the unit in Git")]
    InvalidUnit {
        /// File as given in Git.
        file: String,
        /// Unit name.
        unit: String,
        /// What is wrong.
        message: String,
    },

    /// A drop-in for a unit that no layer declares.
    #[error("{file}: drop-in for {unit}, which no layer up to this one declares; add units/{unit} to Git (drop-ins for vendor units are not supported)")]
    DropInWithoutUnit {
        /// File as given in Git.
        file: String,
        /// The unit the drop-in belongs to.
        unit: String,
    },

    /// `units/tend.toml` could not be parsed or has an unknown key.
    #[error(
        "{file}:{line}: {message}; fix the manifest in Git (allowed keys: units.\"NAME\".enabled, .started, .adopt)"
    )]
    Manifest {
        /// File as given in Git.
        file: String,
        /// 1-based line number (1 when unknown).
        line: usize,
        /// Parser message; names the unknown key when there is one.
        message: String,
    },

    /// The manifest mentions a unit that no layer declares.
    #[error("{file}: manifest entry for {unit}, which no layer declares; add the unit file or remove the entry")]
    ManifestUnknownUnit {
        /// The manifest file.
        file: String,
        /// The unit named in the manifest.
        unit: String,
    },

    /// A unit of the same name exists on the host and was not installed by tend.
    #[error("unit {unit} already exists on this host ({location}) and was not installed by tend; remove it, rename the unit in Git, or set adopt = true for it in units/tend.toml")]
    UnownedUnit {
        /// Unit name.
        unit: String,
        /// Where it was found (file path or systemd's load state).
        location: String,
    },

    /// `systemd-analyze verify` refused a unit.
    #[error("{file}:{line}: systemd-analyze verify: {message}{more}; fix the unit in Git", more = if *others > 0 { format!(" (and {others} more messages)") } else { String::new() })]
    Verify {
        /// File as given in Git (or the unit name when systemd gave no file).
        file: String,
        /// 1-based line (0 when systemd gave no line).
        line: usize,
        /// systemd's message.
        message: String,
        /// How many further messages were printed.
        others: usize,
    },

    /// A file operation under the unit directory failed.
    #[error("cannot {op} {}: {source}; check that tend runs as root and the unit directory is writable", path.display())]
    Io {
        /// What was attempted (`write`, `read`, `remove`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// Connecting to the bus failed.
    #[error("cannot connect to D-Bus at {address}: {source}; check that dbus and systemd run and tend runs as root")]
    Connect {
        /// The bus address (`system` for the default system bus).
        address: String,
        /// zbus' error.
        source: zbus::Error,
    },

    /// A systemd D-Bus method call failed.
    #[error("systemd {method}({unit}) failed: {source}; see `systemctl status {unit}` and `journalctl -u {unit}`")]
    Dbus {
        /// The `org.freedesktop.systemd1.Manager` method.
        method: &'static str,
        /// The unit(s) it was called for (comma separated; empty for Reload).
        unit: String,
        /// zbus' error (carries systemd's error name and message).
        source: zbus::Error,
    },

    /// A job did not finish (no `JobRemoved` signal) within the timeout.
    #[error("systemd {method}({unit}) did not finish within {timeout:?}; see `systemctl status {unit}` (the job may still be running)")]
    JobTimeout {
        /// The method that queued the job.
        method: &'static str,
        /// The unit.
        unit: String,
        /// How long tend waited.
        timeout: Duration,
    },

    /// A helper program (`journalctl`, `systemd-analyze`) could not be run.
    #[error("cannot run {program}: {message}; install it or check PATH")]
    Command {
        /// The program.
        program: String,
        /// What went wrong.
        message: String,
    },
}
