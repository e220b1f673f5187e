//! End-to-end: real Git servers (HTTP and SSH from `tests/setup.sh`), the real Docker engine,
//! the real `tend` binary.

mod drift;
mod engine;
mod examples;
mod hostfiles;
mod keys;
mod netfault;
mod network;
mod observability;
mod package;
mod registry;
#[path = "../systemd/common/mod.rs"]
mod sdnode;
mod secrets;
mod support;
mod trust;
mod units;

use std::process::Command;
use support::*;

#[test]
fn http_source_create_change_remove_drift_and_refuse() {
    let repo = GitRepo::new("http");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    let first = repo.commit("two services");
    let agent = Agent::new(&repo.http_url(), "");

    // First cycle creates both containers.
    agent.run_once_ok();
    let c = agent.containers();
    assert_eq!(c.len(), 2, "{c:?}");
    let web = c[&agent.container("web")].clone();
    let worker = c[&agent.container("worker")].clone();
    assert_eq!(web.0, "running");
    assert_eq!(worker.0, "running");
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], first.as_str());
    assert_eq!(st["applied"]["subject"], "two services");

    // A no-op cycle recreates nothing.
    agent.run_once_ok();
    assert_eq!(agent.containers(), c);

    // Changing one service replaces only that one.
    repo.write("compose.yaml", &two_services("sleep 200000"));
    let second = repo.commit("worker: longer sleep");
    agent.run_once_ok();
    let c2 = agent.containers();
    assert_eq!(c2[&agent.container("web")].2, web.2, "web must be kept");
    assert_ne!(
        c2[&agent.container("worker")].2,
        worker.2,
        "worker must be replaced"
    );
    assert_ne!(
        c2[&agent.container("worker")].1,
        worker.1,
        "worker spec hash changes"
    );
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], second.as_str());
    let msg = st["history"][0]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("replace worker (spec changed: command)"),
        "{msg}"
    );

    // A container removed by hand is recreated on the next cycle (drift).
    run_ok(Command::new("docker").args(["rm", "-f", &agent.container("web")]));
    agent.run_once_ok();
    let c3 = agent.containers();
    assert_eq!(c3[&agent.container("web")].0, "running");
    assert_eq!(
        agent.status_json()["history"][0]["outcome"],
        "drift-corrected"
    );

    // A container stopped by hand is started again.
    run_ok(Command::new("docker").args(["stop", "-t", "1", &agent.container("worker")]));
    agent.run_once_ok();
    assert_eq!(agent.containers()[&agent.container("worker")].0, "running");

    // A malformed compose file is refused; the previous containers keep running.
    let before = agent.containers();
    repo.write(
        "compose.yaml",
        "services:\n  web:\n    image: x\n    build: .\n",
    );
    let bad = repo.commit("broken compose");
    let out = agent.run_once();
    assert!(
        !out.status.success(),
        "a refused revision must exit non-zero"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("tend: "), "{stderr}");
    assert!(
        last.contains("compose.yaml:4") && last.contains("\"build\""),
        "{last}"
    );
    assert_eq!(
        agent.containers(),
        before,
        "nothing may change on a refused revision"
    );
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], second.as_str());
    assert_eq!(st["refused"]["id"], bad.as_str());
    let text = agent.status_text();
    assert!(text.contains("REFUSED"), "{text}");
    assert!(
        text.contains("the applied revision above keeps running"),
        "{text}"
    );

    // Deleting a service removes its container.
    let web_only = two_services("sleep 200000");
    let web_only = web_only.split("  worker:").next().unwrap_or_default();
    repo.write("compose.yaml", web_only);
    repo.commit("drop worker");
    agent.run_once_ok();
    let c4 = agent.containers();
    assert_eq!(c4.len(), 1, "{c4:?}");
    assert!(c4.contains_key(&agent.container("web")));
    let st = agent.status_json();
    assert_eq!(st["applied"]["subject"], "drop worker");
    assert!(
        st["refused"].is_null(),
        "applying a newer commit clears the old refusal: {st}"
    );
}

#[test]
fn ssh_source_with_deploy_key_and_pinned_host_key() {
    let tb = testbed();
    let repo = GitRepo::new("ssh");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    let head = repo.commit("over ssh");
    let extra = format!(
        "ssh_key = \"{}\"\nknown_hosts = \"{}\"",
        tb.ssh_key.display(),
        tb.known_hosts.display()
    );
    let agent = Agent::new(&repo.ssh_url(), &extra);
    agent.run_once_ok();
    assert_eq!(agent.containers().len(), 2);
    assert_eq!(agent.status_json()["applied"]["id"], head.as_str());

    // An incremental fetch picks up the next commit.
    repo.write("compose.yaml", &two_services("sleep 300000"));
    let next = repo.commit("next");
    agent.run_once_ok();
    assert_eq!(agent.status_json()["applied"]["id"], next.as_str());
}

#[test]
fn ssh_source_with_unknown_host_key_is_refused() {
    let tb = testbed();
    let repo = GitRepo::new("sshkh");
    repo.write("compose.yaml", &two_services("sleep 1"));
    repo.commit("c");
    let empty_kh = tempfile::NamedTempFile::new().expect("tmp");
    let extra = format!(
        "ssh_key = \"{}\"\nknown_hosts = \"{}\"",
        tb.ssh_key.display(),
        empty_kh.path().display()
    );
    let agent = Agent::new(&repo.ssh_url(), &extra);
    let out = agent.run_once();
    assert!(!out.status.success());
    assert!(agent.containers().is_empty());
    let st = agent.status_json();
    assert!(
        st["source"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("fetch from")),
        "{st}"
    );
}

#[test]
fn path_and_file_url_sources() {
    let repo = GitRepo::new("file");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    let head = repo.commit("local");
    for url in [
        repo.bare.display().to_string(),
        format!("file://{}", repo.bare.display()),
    ] {
        let agent = Agent::new(&url, "");
        agent.run_once_ok();
        assert_eq!(agent.status_json()["applied"]["id"], head.as_str(), "{url}");
        assert_eq!(agent.containers().len(), 2, "{url}");
    }
}

#[test]
fn layers_replace_services_by_name() {
    let repo = GitRepo::new("layers");
    let image = &testbed().image;
    repo.write(
        "common/compose.yaml",
        &format!("services:\n  a:\n    image: {image}\n    command: sleep 1000\n  b:\n    image: {image}\n    command: sleep 1000\n"),
    );
    repo.write(
        "hosts/edge-1/compose.yaml",
        &format!("services:\n  a:\n    image: {image}\n    command: sleep 2000\n    environment: [\"HOST=${{TEND_HOST}}\"]\n"),
    );
    repo.commit("layers");
    let agent = Agent::new(&repo.http_url(), "");
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        cfg.replace(
            "[host]\n",
            "[host]\nlayers = [\"common\", \"hosts/{name}\"]\n",
        ),
    )
    .expect("config");
    agent.run_once_ok();
    let inspect = run_ok(Command::new("docker").args([
        "inspect",
        "-f",
        "{{json .Config.Cmd}} {{json .Config.Env}}",
        &agent.container("a"),
    ]));
    assert!(inspect.contains("[\"sleep\",\"2000\"]"), "{inspect}");
    assert!(inspect.contains("HOST=edge-1"), "{inspect}");
    assert_eq!(agent.containers().len(), 2);
}

#[test]
fn unreachable_remote_fails_cleanly_and_keeps_state() {
    let repo = GitRepo::new("gone");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    let head = repo.commit("c");
    let agent = Agent::new(&repo.http_url(), "");
    agent.run_once_ok();
    let before = agent.containers();

    // Point the agent at a port nothing listens on: the poll fails, drift correction goes on.
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        cfg.replace(&repo.http_url(), "http://127.0.0.1:9/nothing.git"),
    )
    .expect("config");
    run_ok(Command::new("docker").args(["rm", "-f", &agent.container("worker")]));
    let out = agent.run_once();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("tend: fetch:")),
        "{stderr}"
    );
    let after = agent.containers();
    assert_eq!(
        after.len(),
        before.len(),
        "drift corrected offline: {after:?}"
    );
    assert_eq!(after[&agent.container("worker")].0, "running");
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], head.as_str());
    assert!(st["source"]["last_error"].is_string());
    assert!(agent.status_text().contains("fetch   FAILED"));
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("tend.toml");
    std::fs::write(&cfg, "[source]\nurl = \"/x\"\npoll_interval = \"often\"\n").expect("write");
    let out = run(Command::new(env!("CARGO_BIN_EXE_tend"))
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--once"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("source.poll_interval"), "{stderr}");
}

#[test]
fn containers_tend_does_not_own_are_never_touched() {
    let repo = GitRepo::new("foreign");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    repo.commit("c");
    let agent = Agent::new(&repo.http_url(), "");
    // A foreign container squatting on the name tend wants, and an unrelated one.
    let squatter = agent.container("web");
    let bystander = unique("bystander");
    let image = &testbed().image;
    run_ok(
        Command::new("docker").args(["run", "-d", "--name", &squatter, image, "sleep", "100000"]),
    );
    run_ok(
        Command::new("docker").args(["run", "-d", "--name", &bystander, image, "sleep", "100000"]),
    );
    let out = agent.run_once();
    let running = |n: &str| {
        run_ok(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.State.Running}} {{index .Config.Labels \"io.tend.managed\"}}",
            n,
        ]))
    };
    let s = running(&squatter);
    let b = running(&bystander);
    let _ = Command::new("docker")
        .args(["rm", "-f", &squatter, &bystander])
        .output();
    assert!(!out.status.success(), "a name conflict must be reported");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not manage"), "{stderr}");
    assert_eq!(s.trim(), "true", "the squatter keeps running, unlabelled");
    assert_eq!(b.trim(), "true");
}

#[test]
fn validate_checks_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  a:\n    image: x\n    ports: [\"http\"]\n",
    )
    .expect("write");
    let out = run(Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["--config", "/nonexistent", "validate"])
        .arg(dir.path()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("compose.yaml:4: service \"a\": key \"ports\""),
        "{stderr}"
    );
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  a:\n    image: x\n",
    )
    .expect("write");
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_tend"))
            .args(["--config", "/nonexistent", "validate"])
            .arg(dir.path()),
    );
    assert!(
        out.contains("ok: project tend with 1 service(s): a"),
        "{out}"
    );
}

#[test]
fn daemon_loop_follows_new_commits_and_stops_on_sigterm() {
    let repo = GitRepo::new("loop");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    repo.commit("first");
    let agent = Agent::new(&repo.http_url(), "");
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        cfg.replace("poll_interval = \"2s\"", "poll_interval = \"1s\"")
            .replace("[apply]\n", "[apply]\ndrift_interval = \"1s\"\n"),
    )
    .expect("config");
    let mut child = agent
        .tend()
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn tend run");
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    wait_for("first apply", &|| agent.containers().len() == 2);

    // Only one agent per state dir.
    let second = agent.run_once();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another tend agent is running"));

    let next = repo.commit("second");
    wait_for("second commit applied", &|| {
        std::fs::read_to_string(agent.dir.path().join("state/state.json"))
            .is_ok_and(|s| s.contains(&next))
    });
    run_ok(Command::new("docker").args(["rm", "-f", &agent.container("worker")]));
    wait_for("drift repaired", &|| {
        agent
            .containers()
            .get(&agent.container("worker"))
            .is_some_and(|c| c.0 == "running")
    });

    nix_kill_term(child.id());
    let status = child.wait().expect("wait");
    assert!(status.success(), "tend run exits 0 on SIGTERM: {status:?}");
}

fn nix_kill_term(pid: u32) {
    run_ok(Command::new("kill").arg("-TERM").arg(pid.to_string()));
}
