//! Outcomes of cycles, published as events: counted in [`crate::metrics`] and handed to the
//! [`crate::hooks`] (in the background: publishing never waits).
//!
//! The hook point is the history: whatever a cycle records there (applied, refused, failed,
//! drift-corrected, and rolled-back once the health gate records it) is published when the
//! cycle ends ([`cycle_finished`]). [`on_outcome`] publishes one event directly, for an outcome
//! that is not recorded in the history.

use crate::config::Config;
use crate::state::{HistoryEntry, State};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::time::Duration;

/// The outcomes an event can report, as they appear in the history and in `[hooks] on`.
pub const OUTCOMES: [&str; 5] = ["applied", "refused", "rolled-back", "drift-corrected", "failed"];

/// One outcome of a cycle. This is the JSON body a hook receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `applied`, `refused`, `rolled-back`, `drift-corrected` or `failed`.
    pub outcome: String,
    /// The host (`[host] name`).
    pub host: String,
    /// The commit concerned (full id).
    pub revision: String,
    /// Its subject line.
    pub subject: String,
    /// The step that refused or failed (`verify`, `load`, `decrypt`, `apply`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// What happened, one line.
    pub message: String,
    /// Who signed the commit, when verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// When (seconds since the epoch).
    pub at: i64,
    /// How long the cycle had run, in milliseconds.
    pub duration_ms: u64,
}

impl Event {
    /// The event for a history entry of `host`; `step` names the step that refused or failed.
    pub fn from_history(host: &str, entry: &HistoryEntry, step: Option<&str>) -> Event {
        Event {
            outcome: entry.outcome.clone(),
            host: host.to_owned(),
            revision: entry.commit.clone(),
            subject: entry.subject.clone(),
            step: step.map(str::to_owned),
            message: entry.message.clone(),
            signer: entry.signer.clone(),
            at: entry.at,
            duration_ms: entry.duration_ms,
        }
    }
}

static HOOKS: OnceLock<crate::hooks::Hooks> = OnceLock::new();

/// Set up where events go: the hooks of `[hooks]` (a background thread when any is configured)
/// and the metrics outputs of `[metrics]`. Called once by `tend run`; later calls do nothing.
pub fn init(cfg: &Config) {
    crate::metrics::configure(&cfg.metrics);
    if cfg.hooks.url.is_some() || !cfg.hooks.command.is_empty() {
        let queue = cfg.paths.state.join("hooks-queue.json");
        let _ = HOOKS.set(crate::hooks::Hooks::start(cfg.hooks.clone(), queue));
    }
}

/// Before `tend run --once` exits: let the hooks save (and, within `limit`, deliver) what was
/// published.
pub fn flush(limit: std::time::Duration) {
    if let Some(hooks) = HOOKS.get() {
        hooks.flush(limit);
    }
}

/// End of a cycle: publish the history entries recorded since `last_recorded` (the newest entry
/// before the cycle), oldest first, then update the metrics from `state` (`ok`: the cycle met no
/// problem).
pub fn cycle_finished(state: &State, last_recorded: Option<&HistoryEntry>, took: Duration, ok: bool) {
    for event in new_events(state, last_recorded) {
        on_outcome(&event);
    }
    crate::metrics::cycle_finished(state, took, ok);
}

/// The events for the entries recorded after `last_recorded`, oldest first.
pub fn new_events(state: &State, last_recorded: Option<&HistoryEntry>) -> Vec<Event> {
    let mut fresh: Vec<&HistoryEntry> = state.history.iter().take_while(|e| Some(*e) != last_recorded).collect();
    fresh.reverse();
    fresh
        .into_iter()
        .map(|e| {
            let step = match e.outcome.as_str() {
                "refused" => state
                    .refused
                    .as_ref()
                    .filter(|r| r.commit.id == e.commit)
                    .map(|r| r.step.as_str()),
                "failed" => Some("apply"),
                _ => None,
            };
            Event::from_history(&state.host, e, step)
        })
        .collect()
}

/// Publish one outcome: count it and hand it to the hooks. Never blocks.
pub fn on_outcome(event: &Event) {
    crate::metrics::global().outcome(event);
    if let Some(hooks) = HOOKS.get() {
        hooks.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::CommitInfo;

    fn entry(at: i64, commit: &str, outcome: &str) -> HistoryEntry {
        HistoryEntry {
            at,
            commit: commit.into(),
            subject: String::new(),
            outcome: outcome.into(),
            message: String::new(),
            signer: None,
            duration_ms: 0,
        }
    }

    #[test]
    fn only_entries_recorded_by_the_cycle_are_published_oldest_first() {
        let mut st = State {
            host: "h".into(),
            ..State::default()
        };
        st.record(entry(1, "a", "applied"));
        let mark = st.history.front().cloned();
        st.record(entry(2, "b", "refused"));
        st.record(entry(3, "a", "drift-corrected"));
        st.refused = Some(crate::state::Refused {
            commit: CommitInfo {
                id: "b".into(),
                subject: String::new(),
                time: 0,
            },
            step: "verify".into(),
            reason: "r".into(),
            since: 2,
        });
        let events = new_events(&st, mark.as_ref());
        let got: Vec<(&str, &str, Option<&str>)> = events
            .iter()
            .map(|e| (e.outcome.as_str(), e.revision.as_str(), e.step.as_deref()))
            .collect();
        assert_eq!(got, [("refused", "b", Some("verify")), ("drift-corrected", "a", None)]);
        // A fresh state: everything is new; nothing new: nothing.
        assert_eq!(new_events(&st, None).len(), 3);
        assert!(new_events(&st, st.history.front()).is_empty());
    }

    #[test]
    fn event_json_carries_the_history_entry() {
        let entry = HistoryEntry {
            at: 1_700_000_000,
            commit: "1a2b3c4d5e6f".into(),
            subject: "web: nginx 1.27".into(),
            outcome: "refused".into(),
            message: "not signed".into(),
            signer: None,
            duration_ms: 12,
        };
        let e = Event::from_history("edge-017", &entry, Some("verify"));
        let json: serde_json::Value = serde_json::to_value(&e).expect("json");
        assert_eq!(json["outcome"], "refused");
        assert_eq!(json["host"], "edge-017");
        assert_eq!(json["revision"], "1a2b3c4d5e6f");
        assert_eq!(json["step"], "verify");
        assert!(json.get("signer").is_none(), "{json}");
        let back: Event = serde_json::from_value(json).expect("back");
        assert_eq!(back, e);
    }
}
