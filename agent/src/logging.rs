//! Logging: to journald with structured fields when started by systemd (JOURNAL_STREAM set),
//! to stderr otherwise. Level from `TEND_LOG` (error, warn, info, debug, trace; default info).
//!
//! Log calls attach what they concern as key-values (`log::info!(revision = r, resource = s;
//! "...")`); in the journal they become the fields `TEND_REVISION`, `TEND_RESOURCE`,
//! `TEND_STEP`, so `journalctl -u tend TEND_RESOURCE=web` shows one service's story.
//! `PRIORITY` follows syslog: error 3, warn 4, info 6, debug and trace 7.

use log::kv::{self, Key, Source, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
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

/// The journal field a key-value is stored under.
pub fn journal_field(key: &str) -> Option<&'static str> {
    Some(match key {
        "revision" => "TEND_REVISION",
        "resource" => "TEND_RESOURCE",
        "step" => "TEND_STEP",
        "outcome" => "TEND_OUTCOME",
        _ => return None,
    })
}

/// The journal logger, with tend's field names and syslog priorities.
struct Journal(systemd_journal_logger::JournalLog);

/// The key-values of a record under their journal names.
struct Fields<'a>(&'a dyn Source);

struct Rename<'a, 'kvs>(&'a mut dyn VisitSource<'kvs>);

impl<'kvs> VisitSource<'kvs> for Rename<'_, 'kvs> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        match journal_field(key.as_str()) {
            Some(field) => self.0.visit_pair(Key::from_str(field), value),
            None => self.0.visit_pair(key, value),
        }
    }
}

impl Source for Fields<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        self.0.visit(&mut Rename(visitor))
    }
}

/// systemd-journal-logger maps info to NOTICE (5) and debug to INFO (6); shift so that the
/// journal's priorities mean what syslog's do.
fn journal_level(level: Level) -> Level {
    match level {
        Level::Info => Level::Debug,
        Level::Debug => Level::Trace,
        other => other,
    }
}

impl Log for Journal {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let fields = Fields(record.key_values());
        let mut builder = record.to_builder();
        let shifted = builder.level(journal_level(record.level())).key_values(&fields).build();
        self.0.log(&shifted);
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Install the logger once, at start.
pub fn init() {
    let level = std::env::var("TEND_LOG")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Info);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some()
        && systemd_journal_logger::connected_to_journal()
        && systemd_journal_logger::JournalLog::new()
            .map(|j| log::set_boxed_logger(Box::new(Journal(j.with_syslog_identifier("tend".into())))))
            .is_ok_and(|r| r.is_ok());
    if !journald {
        let _ = log::set_logger(&STDERR);
    }
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Collect(BTreeMap<String, String>);

    impl<'kvs> VisitSource<'kvs> for Collect {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
            self.0.insert(key.as_str().to_owned(), value.to_string());
            Ok(())
        }
    }

    #[test]
    fn key_values_get_tend_field_names() {
        let kvs: &[(&str, &str)] = &[
            ("revision", "1a2b3c4"),
            ("resource", "web"),
            ("step", "apply"),
            ("other", "x"),
        ];
        let fields = Fields(&kvs);
        let mut got = Collect(BTreeMap::new());
        fields.visit(&mut got).expect("visit");
        let want: BTreeMap<String, String> = [
            ("TEND_REVISION", "1a2b3c4"),
            ("TEND_RESOURCE", "web"),
            ("TEND_STEP", "apply"),
            ("other", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(got.0, want);
    }

    #[test]
    fn priorities_follow_syslog() {
        // systemd-journal-logger: Error 3, Warn 4, Info 5, Debug 6, Trace 7.
        assert_eq!(journal_level(Level::Error), Level::Error);
        assert_eq!(journal_level(Level::Warn), Level::Warn);
        assert_eq!(journal_level(Level::Info), Level::Debug);
        assert_eq!(journal_level(Level::Debug), Level::Trace);
    }
}
