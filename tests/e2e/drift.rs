//! Drift in the daemon: Docker events trigger a correction within seconds (not at the next
//! drift tick), and a crash-looping container is not fought in a tight loop.

use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

fn start_daemon(agent: &Agent, poll: &str, drift: &str) -> Daemon {
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        cfg.replace(
            "poll_interval = \"2s\"",
            &format!("poll_interval = \"{poll}\""),
        )
        .replace(
            "[apply]\n",
            &format!("[apply]\ndrift_interval = \"{drift}\"\n"),
        ),
    )
    .expect("config");
    Daemon(
        agent
            .tend()
            .arg("run")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tend run"),
    )
}

fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn docker_events_trigger_repair_within_seconds() {
    let repo = GitRepo::new("events");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    repo.commit("c");
    let agent = Agent::new(&repo.http_url(), "");
    // Poll and drift ticks far away: only events can explain a quick repair.
    let _d = start_daemon(&agent, "10m", "10m");
    // Applied means healthy: the health gate is over, so a removal now is drift.
    let state = agent.dir.path().join("state/state.json");
    wait_for("first apply (healthy)", Duration::from_secs(40), || {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"applied_at\""))
    });
    let worker = agent.container("worker");
    let before = agent.containers()[&worker].2.clone();

    run_ok(Command::new("docker").args(["rm", "-f", &worker]));
    let took = wait_for(
        "removed container put back",
        Duration::from_secs(15),
        || {
            agent
                .containers()
                .get(&worker)
                .is_some_and(|c| c.0 == "running" && c.2 != before)
        },
    );
    assert!(took < Duration::from_secs(10), "repair took {took:?}");

    run_ok(Command::new("docker").args(["kill", &worker]));
    wait_for(
        "killed container started again",
        Duration::from_secs(15),
        || {
            agent
                .containers()
                .get(&worker)
                .is_some_and(|c| c.0 == "running")
        },
    );
}

#[test]
fn a_crash_looping_container_is_backed_off_and_reported() {
    let repo = GitRepo::new("crash");
    let image = &testbed().image;
    repo.write(
        "compose.yaml",
        &format!("services:\n  flaky:\n    image: {image}\n    command: [\"sh\", \"-c\", \"sleep 2; exit 3\"]\n"),
    );
    repo.commit("flaky");
    let agent = Agent::new(&repo.http_url(), "");
    let _d = start_daemon(&agent, "10m", "1s");
    let state = agent.dir.path().join("state/state.json");
    let read = || std::fs::read_to_string(&state).unwrap_or_default();
    wait_for("crash loop reported", Duration::from_secs(40), || {
        read().contains("crash-looping")
    });
    // Count how often tend put it back over a few seconds: with backoff, rarely.
    let count = || {
        let st: serde_json::Value = serde_json::from_str(&read()).unwrap_or_default();
        st["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter(|e| e["outcome"] == "drift-corrected")
                    .count()
            })
            .unwrap_or(0)
    };
    let before = count();
    std::thread::sleep(Duration::from_secs(6));
    let after = count();
    assert!(
        after - before <= 2,
        "tend fought the crash loop: {before} -> {after} restarts in 6 s"
    );
    let text = agent.status_text();
    assert!(text.contains("! flaky: crash-looping"), "{text}");
}
