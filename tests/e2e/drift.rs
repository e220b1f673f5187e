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

/// The steps of the daemon's last cycle, as its API reports them.
fn last_steps(agent: &Agent) -> Vec<String> {
    let out = run(agent.tend().args(["status", "--json"]));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    st["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["step"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn polls_that_find_nothing_new_leave_drift_to_the_drift_clock() {
    let repo = GitRepo::new("clocks");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    let head = repo.commit("c");
    let agent = Agent::new(&repo.http_url(), "");
    let _d = start_daemon(&agent, "1s", "4s");
    wait_for("first apply", Duration::from_secs(40), || {
        agent.status_json()["applied"]["id"] == head.as_str()
    });
    // Over 12 s: polls every second that only fetch, and drift checks (observe, plan) every 4 s.
    std::thread::sleep(Duration::from_secs(2));
    let file = agent.dir.path().join("state/state.json");
    let mtime = || {
        std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .expect("state file")
    };
    let written = mtime();
    let (mut polls, mut checks) = (0, 0);
    let mut last = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        let steps = last_steps(&agent);
        if steps != last {
            if steps == ["fetch"] {
                polls += 1;
            } else if steps.iter().any(|s| s == "observe") {
                checks += 1;
            }
            last = steps;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        polls >= 2,
        "no cheap poll seen ({polls} polls, {checks} drift checks)"
    );
    assert!(
        checks >= 2,
        "the drift clock stopped ({polls} polls, {checks} drift checks)"
    );
    // Only clocks moved: the API is live, the state file was not rewritten for each cycle.
    assert_eq!(
        mtime(),
        written,
        "state.json rewritten although nothing lasting changed"
    );
    let live = agent.status_json()["last_cycle"]
        .as_i64()
        .expect("last_cycle");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    assert!(saved["last_cycle"].as_i64().expect("saved last_cycle") < live);

    // A new commit is still applied at the next poll, whatever the drift clock says.
    repo.write("compose.yaml", &two_services("sleep 200000"));
    let next = repo.commit("c2");
    wait_for(
        "the new commit applied by a poll",
        Duration::from_secs(20),
        || agent.status_json()["applied"]["id"] == next.as_str(),
    );
    // A change is written at once.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    assert_eq!(saved["applied"]["id"], next.as_str());

    // Stopping writes the clocks too.
    let live = agent.status_json()["last_cycle"]
        .as_i64()
        .expect("last_cycle");
    drop(_d);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    assert!(saved["last_cycle"].as_i64().expect("saved last_cycle") >= live);
}
