//! The engine: health-gated apply with automatic rollback, manual mode and approval, suspend,
//! the local API with peer-credential checks, and crash safety under kill -9.

use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn web(health: &str, sleep: &str) -> String {
    let image = &testbed().image;
    format!(
        "services:\n  web:\n    image: {image}\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    restart: always\n    \
         healthcheck:\n      test: {health}\n      interval: 1s\n      retries: 2\n  \
         worker:\n    image: {image}\n    command: {sleep}\n    restart: unless-stopped\n    stop_grace_period: 1s\n"
    )
}

const HEALTHY: &str =
    "[\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/\"]";
const SICK: &str = "[\"CMD\", \"false\"]";

fn set_config(agent: &Agent, f: impl Fn(String) -> String) {
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(&agent.config, f(cfg)).expect("config");
}

#[test]
fn an_unhealthy_revision_is_rolled_back_and_not_retried() {
    let repo = GitRepo::new("health");
    repo.write("compose.yaml", &web(HEALTHY, "sleep 100000"));
    let good = repo.commit("healthy");
    let agent = Agent::new(&repo.http_url(), "");
    set_config(&agent, |c| {
        c.replace("health_timeout = \"60s\"", "health_timeout = \"20s\"")
    });
    agent.run_once_ok();
    let before = agent.containers();

    repo.write("compose.yaml", &web(SICK, "sleep 200000"));
    let bad = repo.commit("web: broken healthcheck");
    let out = agent.run_once();
    assert!(
        !out.status.success(),
        "an unhealthy revision fails the cycle"
    );
    let st = agent.status_json();
    assert_eq!(
        st["applied"]["id"],
        good.as_str(),
        "still on the good revision"
    );
    assert_eq!(st["bad"]["id"], bad.as_str());
    assert!(
        st["bad"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("web")),
        "{st}"
    );
    assert_eq!(st["history"][0]["outcome"], "rolled-back");
    assert_eq!(st["revision"]["phase"], "rolled-back");
    // The good revision's containers run again (same specs as before).
    let after = agent.containers();
    for (name, (state, hash, _)) in &before {
        assert_eq!(&after[name].1, hash, "{name} back to the good spec");
        assert_eq!(after[name].0, "running", "{name} ({state})");
    }
    assert!(agent.status_text().contains("BAD"));

    // Not retried while it is the tip.
    let ids: Vec<String> = agent.containers().values().map(|c| c.2.clone()).collect();
    let out = agent.run_once();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting for a newer commit"));
    assert_eq!(
        agent
            .containers()
            .values()
            .map(|c| c.2.clone())
            .collect::<Vec<_>>(),
        ids
    );

    // A newer, healthy commit is applied and supersedes the bad one.
    repo.write("compose.yaml", &web(HEALTHY, "sleep 300000"));
    let fixed = repo.commit("fix");
    agent.run_once_ok();
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], fixed.as_str());
    assert!(st["bad"].is_null());
    assert_eq!(st["revision"]["phase"], "healthy");
    let steps: Vec<String> = st["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        steps,
        ["fetch", "verify", "load", "observe", "plan", "apply", "health"]
    );
}

#[test]
fn a_rollback_restores_the_files_its_containers_mount() {
    let image = &testbed().image;
    let compose = |health: &str| {
        format!(
            "services:\n  web:\n    image: {image}\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    \
             volumes: [\"./site/index.html:/www/index.html:ro\"]\n    healthcheck:\n      test: {health}\n      \
             interval: 1s\n      retries: 2\n"
        )
    };
    let repo = GitRepo::new("rollfiles");
    repo.write("compose.yaml", &compose(HEALTHY));
    repo.write("site/index.html", "site v1\n");
    let good = repo.commit("site v1");
    let agent = Agent::new(&repo.http_url(), "");
    set_config(&agent, |c| {
        c.replace("health_timeout = \"60s\"", "health_timeout = \"15s\"")
    });
    agent.run_once_ok();
    let page = || {
        run_ok(Command::new("docker").args([
            "exec",
            &agent.container("web"),
            "cat",
            "/www/index.html",
        ]))
    };
    assert_eq!(page(), "site v1\n");

    // v2 changes the page and breaks the healthcheck: rolled back, v1's page served again.
    repo.write("compose.yaml", &compose(SICK));
    repo.write("site/index.html", "site v2\n");
    repo.commit("site v2, broken");
    assert!(!agent.run_once().status.success());
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], good.as_str());
    assert_eq!(st["history"][0]["outcome"], "rolled-back", "{st}");
    assert_eq!(
        page(),
        "site v1\n",
        "the rolled-back container mounts the good revision's file"
    );
}

#[test]
fn a_revision_that_changes_nothing_here_is_not_held_for_the_settle_window() {
    let repo = GitRepo::new("settle");
    repo.write("compose.yaml", &web(HEALTHY, "sleep 100000"));
    repo.commit("web");
    let agent = Agent::new(&repo.http_url(), "");
    set_config(&agent, |c| c.replace("settle = \"1s\"", "settle = \"6s\""));
    // A change waits for its containers to settle...
    let t = Instant::now();
    agent.run_once_ok();
    let first = t.elapsed();
    assert!(
        first >= Duration::from_secs(6),
        "applied in {first:?}, settle is 6s"
    );

    // ...a commit that changes nothing on this host (another host's file) is checked once.
    let ids = agent.containers();
    repo.write("hosts/other/compose.yaml", "services: {}\n");
    let rev = repo.commit("another host only");
    let t = Instant::now();
    agent.run_once_ok();
    let second = t.elapsed();
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], rev.as_str());
    assert_eq!(st["history"][0]["outcome"], "applied");
    assert_eq!(agent.containers(), ids, "nothing replaced");
    assert!(
        second < Duration::from_secs(4),
        "a no-change revision took {second:?} (held for the 6s settle window?)"
    );
}

#[test]
fn manual_mode_waits_for_approval_and_suspend_stops_applies() {
    let repo = GitRepo::new("manual");
    repo.write("compose.yaml", &web(HEALTHY, "sleep 100000"));
    let first = repo.commit("first");
    let agent = Agent::new(&repo.http_url(), "");
    set_config(&agent, |c| {
        c.replace("[apply]\n", "[apply]\nmode = \"manual\"\n")
    });

    // Planned, not applied.
    agent.run_once_ok();
    assert!(agent.containers().is_empty());
    let st = agent.status_json();
    assert_eq!(st["pending"]["id"], first.as_str());
    let diff = run_ok(agent.tend().arg("diff"));
    assert!(
        diff.contains("create web") && diff.contains("container missing"),
        "{diff}"
    );
    assert!(agent.status_text().contains("PENDING"));

    // Approved (the daemon is down: the approval waits in the state dir).
    run_ok(agent.tend().args(["approve", &first]));
    agent.run_once_ok();
    assert_eq!(agent.containers().len(), 2);
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], first.as_str());
    assert!(st["pending"].is_null());

    // Suspended: a new commit is planned but not applied, and drift is only reported.
    set_config(&agent, |c| c.replace("mode = \"manual\"\n", ""));
    run_ok(agent.tend().arg("suspend"));
    repo.write("compose.yaml", &web(HEALTHY, "sleep 200000"));
    let second = repo.commit("second");
    run_ok(Command::new("docker").args(["rm", "-f", &agent.container("worker")]));
    agent.run_once_ok();
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], first.as_str());
    assert_eq!(st["suspended"], true);
    assert!(
        !agent.containers().contains_key(&agent.container("worker")),
        "drift not corrected"
    );
    assert!(agent.status_text().contains("SUSPENDED"));
    let diff = run_ok(agent.tend().args(["diff", "--json"]));
    assert!(
        diff.contains(&second),
        "the diff is for the newest verified revision: {diff}"
    );

    run_ok(agent.tend().arg("resume"));
    agent.run_once_ok();
    assert_eq!(agent.status_json()["applied"]["id"], second.as_str());
    assert_eq!(agent.containers().len(), 2);
    let history = run_ok(agent.tend().arg("history"));
    assert!(
        history.contains("applied") && history.contains("\"second\""),
        "{history}"
    );
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(agent: &Agent) -> Daemon {
    Daemon(
        agent
            .tend()
            .arg("run")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tend run"),
    )
}

fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_api_serves_status_and_checks_peer_credentials() {
    let repo = GitRepo::new("api");
    repo.write("compose.yaml", &web(HEALTHY, "sleep 100000"));
    let head = repo.commit("c");
    let agent = Agent::new(&repo.http_url(), "");
    set_config(&agent, |c| {
        c.replace("poll_interval = \"2s\"", "poll_interval = \"10m\"")
    });
    // Other users must be able to read the config and reach the socket's directory.
    use std::os::unix::fs::PermissionsExt;
    for p in [
        agent.dir.path(),
        agent.runtime.path(),
        agent.config.as_path(),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let _d = spawn(&agent);
    let socket = agent.runtime.path().join("tend.sock");
    wait_for("the API socket", Duration::from_secs(30), || {
        socket.exists()
    });
    wait_for("first apply", Duration::from_secs(40), || {
        agent.containers().len() == 2
    });

    // Root: status comes from the daemon (no "not running" note), sync --wait runs a cycle.
    let text = run_ok(agent.tend().arg("status"));
    assert!(!text.contains("not running"), "{text}");
    let sync = run(agent.tend().args(["sync", "--wait"]));
    let out = String::from_utf8_lossy(&sync.stdout);
    assert!(sync.status.success(), "{out}");
    assert!(
        out.contains("fetch    ok") && out.contains("plan     ok"),
        "{out}"
    );
    let curl = run_ok(
        Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(&socket)
            .arg("http://tend/v1/status"),
    );
    let st: serde_json::Value = serde_json::from_str(&curl).expect("json");
    assert_eq!(st["applied"]["id"], head.as_str());
    // Where the cycle's time went: each step that ran has its duration, within the cycle's.
    assert!(
        out.lines().any(|l| l.starts_with("fetch    ok (")),
        "no duration for fetch: {out}"
    );
    let steps = st["steps"].as_array().expect("steps");
    let spent: u64 = steps
        .iter()
        .map(|s| {
            s["duration_us"]
                .as_u64()
                .unwrap_or_else(|| panic!("no duration_us: {s}"))
        })
        .sum();
    let cycle = st["last_cycle_us"].as_u64().expect("last_cycle_us");
    assert!(
        spent > 0 && spent <= cycle,
        "steps {spent} µs, cycle {cycle} µs: {st}"
    );
    let metrics = run_ok(
        Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(&socket)
            .arg("http://tend/metrics"),
    );
    assert!(
        metrics.contains("tend_resources{kind=\"container\",state=\"running\"} 2"),
        "{metrics}"
    );

    // Unprivileged: nobody gets nothing; sync/approve/suspend need root even for readers.
    let as_nobody = |args: &[&str]| {
        run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_tend"))
            .arg("--config")
            .arg(&agent.config)
            .args(args))
    };
    let denied = as_nobody(&["sync"]);
    assert!(!denied.status.success());
    let curl = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--unix-socket",
        ])
        .arg(&socket)
        .arg("http://tend/v1/suspend"));
    let code = String::from_utf8_lossy(&curl.stdout).to_string();
    assert!(
        code == "403" || code == "000",
        "nobody may not suspend: {code}"
    );
    assert!(!agent.dir.path().join("state/suspended").exists());
}

#[test]
fn kill_9_during_applies_always_converges() {
    let repo = GitRepo::new("kill9");
    let image = &testbed().image;
    let compose = |n: u32| {
        let mut s = String::from("services:\n");
        for i in 0..6 {
            s.push_str(&format!(
                "  s{i}:\n    image: {image}\n    command: sleep {}\n    restart: unless-stopped\n    stop_grace_period: 1s\n",
                100000 + n
            ));
        }
        s
    };
    repo.write("compose.yaml", &compose(0));
    repo.commit("v0");
    let agent = Agent::new(&repo.http_url(), "");
    agent.run_once_ok();
    let mut last = String::new();
    for round in 1..=4u32 {
        repo.write("compose.yaml", &compose(round));
        last = repo.commit(&format!("v{round}"));
        // Kill the agent somewhere in the middle of replacing containers.
        let mut child = agent
            .tend()
            .args(["run", "--once"])
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(300 + 400 * u64::from(round)));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Restart: converged on the intended revision, no duplicates, no orphans.
    agent.run_once_ok();
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], last.as_str());
    let containers = agent.containers();
    assert_eq!(
        containers.len(),
        6,
        "exactly one container per service: {containers:?}"
    );
    for i in 0..6 {
        let c = &containers[&agent.container(&format!("s{i}"))];
        assert_eq!(c.0, "running");
    }
    let all = run_ok(Command::new("docker").args(["ps", "-a", "--format", "{{.Names}}"]));
    assert!(
        !all.lines()
            .any(|n| n.starts_with(&agent.project) && n.contains("-old-")),
        "{all}"
    );
}
