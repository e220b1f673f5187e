//! Images from real registries (Debian's docker-registry on loopback, one open, one with
//! htpasswd auth): pulls, pinned digests, credentials, a dead registry keeping the old container,
//! pull_policy never; and compose's own tools listing what tend runs.

use crate::support::*;
use std::process::Command;

/// Push the test image under a tag unique to this test, and drop the local copy so tend must pull.
fn push_unique(registry: &str, login: bool) -> String {
    let tb = testbed();
    let image = format!("{registry}/tend/busybox:{}", unique("t"));
    if login {
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "echo tbpass | docker login -u tbuser --password-stdin {registry} >/dev/null 2>&1"
        )));
    }
    run_ok(Command::new("docker").args(["tag", &tb.image, &image]));
    run_ok(Command::new("docker").args(["push", "-q", &image]));
    if login {
        let _ = Command::new("docker").args(["logout", registry]).output();
    }
    run_ok(Command::new("docker").args(["rmi", &image]));
    image
}

fn one_service(image: &str, extra: &str) -> String {
    format!("services:\n  app:\n    image: {image}\n    command: sleep 100000\n    stop_grace_period: 1s\n{extra}")
}

#[test]
fn missing_images_are_pulled_by_tag_and_by_digest() {
    let tb = testbed();
    let image = push_unique(&tb.registry, false);
    let repo = GitRepo::new("pull");
    repo.write("compose.yaml", &one_service(&image, ""));
    repo.commit("by tag");
    let agent = Agent::new(&repo.http_url(), "");
    agent.run_once_ok();
    assert_eq!(agent.containers()[&agent.container("app")].0, "running");

    // Pinned by digest.
    let digest = run_ok(Command::new("docker").args([
        "image",
        "inspect",
        "-f",
        "{{index .RepoDigests 0}}",
        &image,
    ]));
    let pinned = digest.trim().to_owned();
    assert!(pinned.contains("@sha256:"), "{pinned}");
    run_ok(Command::new("docker").args(["rm", "-f", &agent.container("app")]));
    let _ = Command::new("docker")
        .args(["rmi", "-f", &image, &pinned])
        .output();
    repo.write("compose.yaml", &one_service(&pinned, ""));
    repo.commit("by digest");
    agent.run_once_ok();
    let used = run_ok(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.Config.Image}}",
        &agent.container("app"),
    ]));
    assert_eq!(used.trim(), pinned);
}

#[test]
fn registry_credentials_come_from_a_docker_config_file() {
    let tb = testbed();
    let image = push_unique(&tb.registry_auth, true);
    let repo = GitRepo::new("auth");
    repo.write("compose.yaml", &one_service(&image, ""));
    repo.commit("private image");

    // Without credentials: refused by the registry, clearly.
    let agent = Agent::new(&repo.http_url(), "");
    let out = agent.run_once();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("pull {image}")), "{stderr}");

    // With a config.json naming the registry.
    let auth = agent.dir.path().join("docker-config.json");
    std::fs::write(
        &auth,
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"dGJ1c2VyOnRicGFzcw==\"}}}}}}",
            tb.registry_auth
        ),
    )
    .expect("write");
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        format!("{cfg}[docker]\nregistry_auth = \"{}\"\n", auth.display()),
    )
    .expect("config");
    agent.run_once_ok();
    assert_eq!(agent.containers()[&agent.container("app")].0, "running");
    // The password is never logged or stored.
    assert!(!String::from_utf8_lossy(&agent.run_once().stderr).contains("tbpass"));
    assert!(
        !std::fs::read_to_string(agent.dir.path().join("state/state.json"))
            .unwrap_or_default()
            .contains("tbpass")
    );
}

#[test]
fn a_failed_pull_keeps_the_running_container() {
    let tb = testbed();
    let repo = GitRepo::new("deadreg");
    repo.write("compose.yaml", &one_service(&tb.image, ""));
    let good = repo.commit("local image");
    let agent = Agent::new(&repo.http_url(), "");
    agent.run_once_ok();
    let before = agent.containers();

    // The new image's registry does not answer (nothing listens there).
    repo.write("compose.yaml", &one_service("127.0.0.1:9/tend/gone:1", ""));
    repo.commit("image from a dead registry");
    let out = agent.run_once();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pull 127.0.0.1:9/tend/gone:1"), "{stderr}");
    assert_eq!(
        agent.containers(),
        before,
        "the old container keeps running, untouched"
    );
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], good.as_str());
    assert_eq!(st["history"][0]["outcome"], "failed");
    // Retried on the next cycle (still failing, still untouched).
    assert!(!agent.run_once().status.success());
    assert_eq!(agent.containers(), before);
}

#[test]
fn pull_policy_never_refuses_to_pull() {
    let tb = testbed();
    let image = push_unique(&tb.registry, false);
    let repo = GitRepo::new("never");
    repo.write(
        "compose.yaml",
        &one_service(&image, "    pull_policy: never\n"),
    );
    repo.commit("never pull");
    let agent = Agent::new(&repo.http_url(), "");
    let out = agent.run_once();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pull_policy is never"));
    assert!(agent.containers().is_empty());
}

#[test]
fn docker_compose_ps_lists_what_tend_runs() {
    let repo = GitRepo::new("dcps");
    repo.write("compose.yaml", &two_services("sleep 100000"));
    repo.commit("c");
    let agent = Agent::new(&repo.http_url(), "");
    agent.run_once_ok();
    // docker-compose (v1, Debian's) reads its own copy of the file; the project is tend's.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        "version: '3.7'\nservices:\n  web:\n    image: x\n  worker:\n    image: x\n",
    )
    .expect("write");
    let out = run_ok(
        Command::new("docker-compose")
            .current_dir(dir.path())
            .args(["-p", &agent.project, "ps"]),
    );
    assert!(
        out.contains(&agent.container("web")) && out.contains(&agent.container("worker")),
        "{out}"
    );
}
