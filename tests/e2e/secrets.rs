//! Secrets end to end: SOPS files written by the reference `sops` with `age` keys, delivered to
//! real containers as environment and as files on tmpfs, and never found in state, logs or
//! `docker inspect`.

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Keys {
    _dir: tempfile::TempDir,
    host_key: PathBuf,
    host_pub: String,
    foreign_pub: String,
}

/// The host's age key, and one the host does not have.
fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        let gen = |name: &str| -> (PathBuf, String) {
            let path = dir.path().join(name);
            run_ok(Command::new("age-keygen").arg("-o").arg(&path));
            let text = std::fs::read_to_string(&path).expect("key");
            let public = text
                .lines()
                .find_map(|l| l.strip_prefix("# public key: "))
                .expect("public key line")
                .to_owned();
            (path, public)
        };
        let (host_key, host_pub) = gen("host.txt");
        let (_, foreign_pub) = gen("foreign.txt");
        Keys {
            _dir: dir,
            host_key,
            host_pub,
            foreign_pub,
        }
    })
}

/// Write `plain` at `path` in the repo and encrypt it in place with the reference sops.
fn sops_file(repo: &GitRepo, path: &str, plain: &str, recipient: &str) {
    repo.write(path, plain);
    run_ok(
        Command::new("sops")
            .current_dir(repo.work.path())
            .args(["encrypt", "--age", recipient, "-i", path]),
    );
}

fn agent_with_key(repo: &GitRepo) -> Agent {
    let agent = Agent::new(&repo.http_url(), "");
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        format!(
            "{cfg}[secrets]\nage_identities = [\"{}\"]\n",
            keys().host_key.display()
        ),
    )
    .expect("config");
    agent
}

fn compose(token_file: &str) -> String {
    let image = &testbed().image;
    format!(
        "services:\n  app:\n    image: {image}\n    command: sleep 100000\n    env_file: secrets/app.env\n    secrets: [token]\n  \
         other:\n    image: {image}\n    command: sleep 100000\nsecrets:\n  token:\n    file: {token_file}\n"
    )
}

fn grep_dir(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn secrets_reach_containers_and_nothing_else() {
    let k = keys();
    let repo = GitRepo::new("secrets");
    sops_file(
        &repo,
        "secrets/app.env",
        "API_KEY=env-secret-91c3\nMODE=prod\n",
        &k.host_pub,
    );
    sops_file(
        &repo,
        "secrets/token.txt",
        "file-secret-57ad\n",
        &k.host_pub,
    );
    repo.write("compose.yaml", &compose("secrets/token.txt"));
    repo.commit("secrets");
    let agent = agent_with_key(&repo);
    let out = agent.run_once();
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{logs}");

    // Delivered: as environment and as a read-only file at /run/secrets/NAME.
    let app = agent.container("app");
    let seen = run_ok(Command::new("docker").args([
        "exec",
        &app,
        "sh",
        "-c",
        "cat /run/secrets/token; echo \"$API_KEY $MODE\"; touch /run/secrets/token 2>/dev/null && echo WRITABLE; true",
    ]));
    assert_eq!(seen, "file-secret-57ad\nenv-secret-91c3 prod\n");
    let other = run_ok(Command::new("docker").args([
        "exec",
        &agent.container("other"),
        "sh",
        "-c",
        "echo \"[$API_KEY]\"; ls /run/secrets 2>&1; true",
    ]));
    assert!(
        other.starts_with("[]\n"),
        "other services get nothing: {other}"
    );

    // On tmpfs, 0700 directory, 0400 file.
    let secret_dir = agent.runtime.path().join("secrets");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&secret_dir), 0o700);
    assert_eq!(mode(&secret_dir.join("token")), 0o400);

    // Never in the state dir, the logs, the status, or docker inspect (the env secret is in
    // the container's Config.Env, where the engine must have it, and nowhere else).
    for needle in ["file-secret-57ad", "env-secret-91c3"] {
        assert!(
            grep_dir(agent.dir.path(), needle).is_empty(),
            "{needle} found in the state dir"
        );
        assert!(!logs.contains(needle), "{needle} in the logs");
        assert!(!agent.status_text().contains(needle));
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new("docker").args(["inspect", &app])))
            .expect("json");
    let mut inspect = inspect[0].clone();
    assert!(!inspect.to_string().contains("file-secret-57ad"));
    inspect["Config"]["Env"] = serde_json::Value::Null;
    assert!(
        !inspect.to_string().contains("env-secret-91c3"),
        "only Config.Env may hold it"
    );
    assert!(inspect["Config"]["Labels"]["io.tend.spec"].is_string());
}

#[test]
fn a_changed_secret_replaces_only_its_users_and_undeclared_ones_are_removed() {
    let k = keys();
    let repo = GitRepo::new("secrot");
    sops_file(&repo, "secrets/app.env", "API_KEY=one\n", &k.host_pub);
    sops_file(&repo, "secrets/token.txt", "first\n", &k.host_pub);
    repo.write("compose.yaml", &compose("secrets/token.txt"));
    repo.commit("v1");
    let agent = agent_with_key(&repo);
    agent.run_once_ok();
    let before = agent.containers();

    // Rotate the file secret: app is replaced, other is kept.
    sops_file(&repo, "secrets/token.txt", "second\n", &k.host_pub);
    repo.commit("rotate token");
    agent.run_once_ok();
    let after = agent.containers();
    assert_ne!(
        after[&agent.container("app")].2,
        before[&agent.container("app")].2,
        "app replaced"
    );
    assert_eq!(
        after[&agent.container("other")].2,
        before[&agent.container("other")].2,
        "other kept"
    );
    let seen = run_ok(Command::new("docker").args([
        "exec",
        &agent.container("app"),
        "cat",
        "/run/secrets/token",
    ]));
    assert_eq!(seen, "second\n");
    let msg = agent.status_json()["history"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("replace app") && !msg.contains("other"),
        "{msg}"
    );
    assert!(!msg.contains("second"));

    // Re-encrypting the same plaintext (new data key, new ciphertext) changes nothing.
    sops_file(&repo, "secrets/token.txt", "second\n", &k.host_pub);
    repo.commit("re-encrypt");
    agent.run_once_ok();
    assert_eq!(agent.containers(), after, "same plaintext: no replacement");

    // The secret is no longer declared: removed from tmpfs.
    let image = &testbed().image;
    repo.write(
        "compose.yaml",
        &format!("services:\n  other:\n    image: {image}\n    command: sleep 100000\n"),
    );
    repo.commit("drop app");
    agent.run_once_ok();
    assert!(!agent.runtime.path().join("secrets/token").exists());
}

#[test]
fn a_secret_the_host_cannot_decrypt_refuses_the_whole_revision() {
    let k = keys();
    let repo = GitRepo::new("secbad");
    sops_file(&repo, "secrets/app.env", "API_KEY=one\n", &k.host_pub);
    sops_file(&repo, "secrets/token.txt", "first\n", &k.host_pub);
    repo.write("compose.yaml", &compose("secrets/token.txt"));
    repo.commit("v1");
    let agent = agent_with_key(&repo);
    agent.run_once_ok();
    let before = agent.containers();

    // A new revision changes a service AND adds a secret only another host can read.
    sops_file(&repo, "secrets/foreign.txt", "nope\n", &k.foreign_pub);
    repo.write(
        "compose.yaml",
        &compose("secrets/foreign.txt").replace("sleep 100000\nsecrets", "sleep 200000\nsecrets"),
    );
    repo.commit("foreign secret");
    let out = agent.run_once();
    assert!(!out.status.success());
    let st = agent.status_json();
    assert_eq!(st["refused"]["step"], "decrypt", "{st}");
    let reason = st["refused"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("secrets/foreign.txt") && reason.contains(&k.foreign_pub),
        "{reason}"
    );
    assert!(
        reason.contains(&k.host_pub),
        "names the host's key: {reason}"
    );
    assert_eq!(
        agent.containers(),
        before,
        "nothing applied, not even the other change"
    );

    // A tampered file is refused the same way.
    let tampered =
        std::fs::read_to_string(repo.work.path().join("secrets/token.txt")).expect("read");
    repo.write("compose.yaml", &compose("secrets/token.txt"));
    repo.write(
        "secrets/token.txt",
        &tampered.replace("\"lastmodified\": \"", "\"lastmodified\": \"1"),
    );
    repo.commit("tampered");
    assert!(!agent.run_once().status.success());
    assert_eq!(agent.status_json()["refused"]["step"], "decrypt");
    assert_eq!(agent.containers(), before);
}

#[test]
fn plaintext_secret_files_are_refused() {
    let repo = GitRepo::new("secplain");
    repo.write("secrets/token.txt", "oops\n");
    repo.write(
        "compose.yaml",
        &compose("secrets/token.txt").replace("    env_file: secrets/app.env\n", ""),
    );
    repo.commit("plain");
    let agent = agent_with_key(&repo);
    let out = agent.run_once();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not encrypted with sops"), "{stderr}");
    assert!(agent.containers().is_empty());
}

#[test]
fn decrypt_cli_matches_sops_and_fails_silently_on_stdout() {
    let k = keys();
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        ("a.yaml", "db:\n    user: app # the user\n    port: 5432\nlist:\n    - one\n    - 2.5\nunicode: héllo ✓\n"),
        ("b.json", "{\n\t\"a\": 1,\n\t\"b\": [true, null]\n}"),
        ("c.env", "A=1\nB=two words\n"),
        ("d.ini", "[s]\nk = v\n"),
        ("e.bin", "raw \u{1} bytes\n"),
    ];
    for (name, plain) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, plain).expect("write");
        run_ok(
            Command::new("sops")
                .args(["encrypt", "--age", &k.host_pub, "-i"])
                .arg(&p),
        );
        let ours = run(Command::new(env!("CARGO_BIN_EXE_tend"))
            .args(["--config", "/nonexistent", "decrypt", "--identity"])
            .arg(&k.host_key)
            .arg(&p));
        assert!(
            ours.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        let theirs = run_ok(
            Command::new("sops")
                .env("SOPS_AGE_KEY_FILE", &k.host_key)
                .arg("decrypt")
                .arg(&p),
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            theirs,
            "{name}: byte for byte like sops decrypt"
        );
        // Identities from the environment, as sops reads them.
        let via_env = run(Command::new(env!("CARGO_BIN_EXE_tend"))
            .env("SOPS_AGE_KEY_FILE", &k.host_key)
            .args(["--config", "/nonexistent", "decrypt"])
            .arg(&p));
        assert_eq!(via_env.stdout, ours.stdout, "{name}");
        // Without the key: nothing on stdout, the reason on stderr, non-zero.
        let denied = run(Command::new(env!("CARGO_BIN_EXE_tend"))
            .args(["--config", "/nonexistent", "decrypt"])
            .arg(&p));
        assert!(!denied.status.success());
        assert!(denied.stdout.is_empty());
        assert!(String::from_utf8_lossy(&denied.stderr).contains("no identity can decrypt"));
    }
}
