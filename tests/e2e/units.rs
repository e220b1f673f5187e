//! systemd units end to end: `tend run --once` writes units into a real systemd (a container
//! whose PID 1 is systemd), drives it over D-Bus, and reports what happened.

use crate::sdnode::Node;
use crate::support::*;
use std::process::Command;

/// An agent following `repo` whose systemd is `node`'s; secrets for units go to the node's /run.
fn agent_for(repo: &GitRepo, node: &Node, extra: &str) -> Agent {
    let agent = Agent::new(&repo.http_url(), "");
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    let runtime = format!("/proc/{}/root/run/tend", node.pid);
    let cfg = cfg.replace(
        &format!("runtime = \"{}\"", agent.runtime.path().display()),
        &format!("runtime = \"{runtime}\""),
    );
    std::fs::write(
        &agent.config,
        format!(
            "{cfg}[systemd]\nbus = \"{}\"\nunit_dir = \"{}\"\njournal_command = [\"docker\", \"exec\", \"{}\", \"journalctl\"]\n{extra}",
            node.bus_address(),
            node.unit_dir().display(),
            node.name
        ),
    )
    .expect("config");
    agent
}

const HELLO: &str = "[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/sh -c 'echo hello-v1; exec sleep infinity'\n[Install]\nWantedBy=multi-user.target\n";
const OTHER: &str = "[Unit]\nDescription=other\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
const TIMER: &str = "[Unit]\nDescription=tick\n[Timer]\nOnActiveSec=1\nOnUnitActiveSec=1\nAccuracySec=100ms\n[Install]\nWantedBy=timers.target\n";
const TICK: &str = "[Unit]\nDescription=tick job\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'date >> /run/ticks'\n";

#[test]
fn units_installed_changed_restarted_removed_and_restored() {
    let node = Node::start("e2e-units");
    let repo = GitRepo::new("units");
    repo.write("units/hello.service", HELLO);
    repo.write("units/other.service", OTHER);
    repo.write("units/tick.timer", TIMER);
    repo.write("units/tick.service", TICK);
    repo.commit("units");
    let agent = agent_for(&repo, &node, "");
    agent.run_once_ok();

    // Installed, enabled, started; the timer runs its service.
    for unit in ["hello.service", "other.service", "tick.timer"] {
        assert_eq!(node.prop(unit, "ActiveState"), "active", "{unit}");
        assert_eq!(node.prop(unit, "UnitFileState"), "enabled", "{unit}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while node.sh("cat /run/ticks 2>/dev/null | wc -l").trim() == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the timer never fired its service"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let st = agent.status_json();
    let units = st["units"].as_array().expect("units in status");
    assert!(
        units
            .iter()
            .any(|u| u["name"] == "hello.service" && u["sub"] == "running"),
        "{st}"
    );
    assert!(agent.status_text().contains("units:"));

    // A change restarts only that unit.
    let hello_id = node.prop("hello.service", "InvocationID");
    let other_id = node.prop("other.service", "InvocationID");
    repo.write(
        "units/hello.service",
        &HELLO.replace("hello-v1", "hello-v2"),
    );
    repo.commit("hello v2");
    agent.run_once_ok();
    assert_ne!(
        node.prop("hello.service", "InvocationID"),
        hello_id,
        "hello restarted"
    );
    assert_eq!(
        node.prop("other.service", "InvocationID"),
        other_id,
        "other untouched"
    );

    // A drop-in restarts only its unit and takes effect.
    let other_id = node.prop("other.service", "InvocationID");
    let hello_id = node.prop("hello.service", "InvocationID");
    repo.write(
        "units/other.service.d/env.conf",
        "[Service]\nEnvironment=COLOR=blue\n",
    );
    repo.commit("other drop-in");
    agent.run_once_ok();
    assert_ne!(node.prop("other.service", "InvocationID"), other_id);
    assert_eq!(node.prop("hello.service", "InvocationID"), hello_id);
    assert!(node
        .prop("other.service", "Environment")
        .contains("COLOR=blue"));

    // Edited by hand: restored on the next cycle; stopped by hand: started again.
    node.sh("echo '# edited' >> /etc/systemd/system/hello.service; systemctl stop other.service");
    agent.run_once_ok();
    assert!(!node
        .sh("cat /etc/systemd/system/hello.service")
        .contains("# edited"));
    assert_eq!(node.prop("other.service", "ActiveState"), "active");

    // Removed from Git: stopped, disabled, deleted.
    repo.remove("units/other.service");
    repo.remove("units/other.service.d/env.conf");
    repo.commit("drop other");
    agent.run_once_ok();
    assert_ne!(node.prop("other.service", "ActiveState"), "active");
    assert!(
        !node
            .exec(&["test", "-e", "/etc/systemd/system/other.service"])
            .0
    );
}

#[test]
fn failing_unit_is_reported_and_unowned_unit_refused() {
    let node = Node::start("e2e-unitfail");
    let repo = GitRepo::new("unitfail");
    repo.write("units/ok.service", OTHER);
    repo.write(
        "units/broken.service",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo broken-because-reasons >&2; exit 7'\n",
    );
    repo.commit("broken");
    let agent = agent_for(&repo, &node, "");
    let out = agent.run_once();
    assert!(!out.status.success(), "a failing unit fails the cycle");
    let st = agent.status_json();
    let broken = st["units"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "broken.service").cloned())
        .expect("broken.service in status");
    assert_eq!(broken["active"], "failed", "{broken}");
    assert!(
        broken["journal"]
            .to_string()
            .contains("broken-because-reasons"),
        "{broken}"
    );
    assert!(agent.status_text().contains("broken-because-reasons"));
    assert_eq!(
        node.prop("ok.service", "ActiveState"),
        "active",
        "the rest of the batch applied"
    );

    // A unit of the same name that tend does not own is never overwritten.
    node.sh("printf '[Service]\\nExecStart=/bin/sleep 1000\\n' > /etc/systemd/system/mine.service");
    repo.write("units/mine.service", OTHER);
    repo.commit("take mine");
    let out = agent.run_once();
    assert!(!out.status.success());
    let st = agent.status_json();
    assert_eq!(st["refused"]["step"], "plan", "{st}");
    assert!(node
        .sh("cat /etc/systemd/system/mine.service")
        .contains("sleep 1000"));
}

#[test]
fn units_read_secrets_from_tmpfs() {
    let node = Node::start("e2e-unitsecret");
    let repo = GitRepo::new("unitsecret");
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("age.txt");
    run_ok(Command::new("age-keygen").arg("-o").arg(&key));
    let public = std::fs::read_to_string(&key)
        .expect("key")
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_owned))
        .expect("public key");
    repo.write("secrets/api_key.txt", "unit-secret-7f2\n");
    run_ok(Command::new("sops").current_dir(repo.work.path()).args([
        "encrypt",
        "--age",
        &public,
        "-i",
        "secrets/api_key.txt",
    ]));
    repo.write(
        "units/reader.service",
        "[Service]\nExecStart=/bin/sh -c 'cat /run/tend/secrets/api_key > /run/seen; exec sleep infinity'\n[Install]\nWantedBy=multi-user.target\n",
    );
    repo.commit("reader");
    let agent = agent_for(
        &repo,
        &node,
        &format!("[secrets]\nage_identities = [\"{}\"]\n", key.display()),
    );
    agent.run_once_ok();
    assert_eq!(node.sh("cat /run/seen"), "unit-secret-7f2\n");
    assert_eq!(node.sh("stat -c %a /run/tend/secrets/api_key"), "400\n");

    // A changed secret restarts its reader.
    let id = node.prop("reader.service", "InvocationID");
    repo.write("secrets/api_key.txt", "unit-secret-8e3\n");
    run_ok(Command::new("sops").current_dir(repo.work.path()).args([
        "encrypt",
        "--age",
        &public,
        "-i",
        "secrets/api_key.txt",
    ]));
    repo.commit("rotate");
    agent.run_once_ok();
    assert_ne!(node.prop("reader.service", "InvocationID"), id);
    assert_eq!(node.sh("cat /run/seen"), "unit-secret-8e3\n");
}

#[test]
fn a_unit_that_dies_after_starting_rolls_the_revision_back_units_included() {
    let node = Node::start("e2e-unitgate");
    let repo = GitRepo::new("unitgate");
    let unit = |body: &str| {
        format!("[Unit]\nDescription=gated\n[Service]\nExecStart=/bin/sh -c '{body}'\n[Install]\nWantedBy=multi-user.target\n")
    };
    repo.write(
        "units/gated.service",
        &unit("echo gated-v1; exec sleep infinity"),
    );
    let good = repo.commit("gated v1");
    let agent = agent_for(&repo, &node, "");
    // Long enough a settle window for the unit below to die within it.
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        cfg.replace("settle = \"1s\"", "settle = \"6s\""),
    )
    .expect("config");
    agent.run_once_ok();
    assert_eq!(node.prop("gated.service", "ActiveState"), "active");

    // v2 starts fine (its start job succeeds), then exits 3 after two seconds.
    repo.write(
        "units/gated.service",
        &unit("echo gated-v2; sleep 2; exit 3"),
    );
    let bad = repo.commit("gated v2 dies");
    let out = agent.run_once();
    assert!(
        !out.status.success(),
        "a revision whose unit dies must fail its gate"
    );
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], good.as_str(), "{st}");
    assert_eq!(st["bad"]["id"], bad.as_str(), "{st}");
    assert!(
        st["bad"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("gated.service")),
        "{st}"
    );
    assert_eq!(st["history"][0]["outcome"], "rolled-back", "{st}");
    // The rollback put v1's unit file back and started it again.
    assert!(node
        .sh("cat /etc/systemd/system/gated.service")
        .contains("gated-v1"));
    assert_eq!(node.prop("gated.service", "ActiveState"), "active");
}
