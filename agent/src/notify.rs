//! systemd's notify protocol (`Type=notify`): READY=1 once the state is loaded, STATUS= with
//! the applied revision after every cycle (shown by `systemctl status tend`), STOPPING=1, and
//! WATCHDOG=1 while the loop is alive. Everything is a no-op when not started by systemd
//! (`$NOTIFY_SOCKET` unset).
//!
//! The watchdog: a task pings at half of `WatchdogSec=` as long as the loop is either waiting
//! for its next tick or inside a cycle that has not run longer than a budget (a cycle may wait
//! minutes for an image pull). A frozen process (nothing runs), a wedged runtime (the task does
//! not run) or a cycle stuck past the budget stops the pings, and systemd restarts tend.

use crate::state::State;
use sd_notify::NotifyState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tell systemd that tend is up, with a first status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Update the status line of `systemctl status tend`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tell systemd that tend is stopping on purpose.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify: {e}");
    }
}

/// The one-line status: applied revision, refusal, containers, last problem.
pub fn status_line(state: &State) -> String {
    let mut parts = Vec::new();
    match &state.applied {
        Some(a) => parts.push(format!("applied {} \"{}\"", short(&a.commit.id), a.commit.subject)),
        None => parts.push("nothing applied yet".to_owned()),
    }
    if let Some(r) = &state.refused {
        parts.push(format!("REFUSED {} at {}", short(&r.commit.id), r.step));
    }
    if !state.containers.is_empty() {
        let running = state.containers.iter().filter(|c| c.state == "running").count();
        parts.push(format!("{running}/{} containers running", state.containers.len()));
    }
    match &state.last_error {
        Some(e) => parts.push(format!("last cycle: {} failed", e.step)),
        None if state.last_cycle.is_some() => parts.push("last cycle ok".to_owned()),
        None => {}
    }
    if state.unverified {
        parts.push("UNVERIFIED".to_owned());
    }
    parts.join("; ")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

/// Whether the loop is alive: idle, or busy in a cycle since when.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Milliseconds since `origin` at which the current cycle started, plus one; 0 when idle.
    busy_since: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            origin: Instant::now(),
            busy_since: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    /// A cycle starts.
    pub fn busy(&self) {
        let ms = self.origin.elapsed().as_millis() as u64 + 1;
        self.busy_since.store(ms, Ordering::SeqCst);
    }

    /// The cycle ended; the loop waits for its next tick.
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::SeqCst);
    }

    /// True unless a cycle has been running for longer than `budget`.
    pub fn alive(&self, budget: Duration) -> bool {
        match self.busy_since.load(Ordering::SeqCst) {
            0 => true,
            since => {
                let now = self.origin.elapsed().as_millis() as u64 + 1;
                now.saturating_sub(since) <= budget.as_millis() as u64
            }
        }
    }
}

/// When systemd asks for a watchdog (`WatchdogSec=`), ping it at half the interval while
/// `live` says the loop is alive with `budget` per cycle. Returns the interval, if any.
pub fn spawn_watchdog(live: Arc<Liveness>, budget: Duration) -> Option<Duration> {
    let interval = sd_notify::watchdog_enabled()?;
    let every = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            if live.alive(budget) {
                send(&[NotifyState::Watchdog]);
                warned = false;
            } else if !warned {
                log::error!(
                    "a cycle has run for more than {}s: not pinging the watchdog, systemd will restart tend",
                    budget.as_secs()
                );
                warned = true;
            }
            tokio::time::sleep(every).await;
        }
    });
    Some(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::CommitInfo;
    use crate::state::{Applied, ContainerStatus, LastError, Refused};

    #[test]
    fn status_line_names_the_applied_revision() {
        let mut s = State::default();
        assert_eq!(status_line(&s), "nothing applied yet");
        s.applied = Some(Applied {
            commit: CommitInfo {
                id: "1a2b3c4d5e6f".into(),
                subject: "web: nginx 1.27".into(),
                time: 1,
            },
            applied_at: 2,
            signer: None,
        });
        s.last_cycle = Some(3);
        s.containers = ["running", "exited (1)"]
            .iter()
            .map(|st| ContainerStatus {
                service: "x".into(),
                name: "x".into(),
                id: String::new(),
                state: (*st).into(),
                status: String::new(),
                image: String::new(),
                note: None,
            })
            .collect();
        assert_eq!(
            status_line(&s),
            "applied 1a2b3c4 \"web: nginx 1.27\"; 1/2 containers running; last cycle ok"
        );
        s.refused = Some(Refused {
            commit: CommitInfo {
                id: "9f8e7d6c".into(),
                subject: String::new(),
                time: 4,
            },
            step: "verify".into(),
            reason: "unknown key".into(),
            since: 5,
        });
        s.last_error = Some(LastError {
            at: 6,
            step: "verify".into(),
            message: "m".into(),
        });
        let line = status_line(&s);
        assert!(line.contains("REFUSED 9f8e7d6 at verify"), "{line}");
        assert!(line.ends_with("last cycle: verify failed"), "{line}");
    }

    #[test]
    fn liveness_expires_only_for_a_long_cycle() {
        let live = Liveness::default();
        assert!(live.alive(Duration::ZERO), "idle is alive");
        live.busy();
        assert!(live.alive(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!live.alive(Duration::from_millis(10)), "stuck cycle");
        live.idle();
        assert!(live.alive(Duration::from_millis(10)));
    }
}
