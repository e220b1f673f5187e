//! Logging: to journald with structured fields when started by systemd (JOURNAL_STREAM set),
//! to stderr otherwise. Level from `TEND_LOG` (error, warn, info, debug, trace; default info).

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{:<5} {}", record.level(), record.args());
    }

    fn flush(&self) {}
}

static STDERR: Stderr = Stderr;

/// Install the logger once, at start.
pub fn init() {
    let level = std::env::var("TEND_LOG")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Info);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some()
        && systemd_journal_logger::connected_to_journal()
        && systemd_journal_logger::JournalLog::new()
            .map(|j| j.with_syslog_identifier("tend".into()).install())
            .is_ok_and(|r| r.is_ok());
    if !journald {
        let _ = log::set_logger(&STDERR);
    }
    log::set_max_level(level);
}
