//! Trust end to end: commits signed (or not) by the real `git`, `ssh-keygen` and `gpg`
//! (`tests/fixtures/make-trust-fixtures.sh`), served over HTTP, applied or refused by
//! `tend run --once`, and checked by `tend verify`.

use crate::support::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

struct Fixtures {
    dir: PathBuf,
    ids: BTreeMap<String, String>,
}

fn fixtures() -> &'static Fixtures {
    static FX: OnceLock<Fixtures> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = std::env::temp_dir().join("tend-e2e-trust-fixtures");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/make-trust-fixtures.sh");
        run_ok(Command::new("bash").arg(&script).arg(&dir));
        let manifest = std::fs::read_to_string(dir.join("manifest.env")).expect("manifest");
        let ids = manifest
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Fixtures { dir, ids }
    })
}

impl Fixtures {
    fn id(&self, name: &str) -> &str {
        self.ids
            .get(name)
            .unwrap_or_else(|| panic!("fixture {name} missing"))
    }

    fn trust_toml(&self, require: &str) -> String {
        format!(
            "allowed_signers = \"{}\"\nopenpgp_keys = \"{}\"\nrequire = \"{require}\"",
            self.dir.join("allowed_signers").display(),
            self.dir.join("keyring.asc").display()
        )
    }

    /// Force the served repo's `main` to the fixture commit `name`.
    fn serve(&self, repo: &GitRepo, name: &str) {
        let id = self.id(name);
        run_ok(
            Command::new("git")
                .arg("-C")
                .arg(self.dir.join("repo"))
                .args(["push", "-q", "--force"])
                .arg(&repo.bare)
                .arg(format!("{id}:refs/heads/main")),
        );
    }

    fn verify(&self, name: &str) -> std::process::Output {
        run(Command::new(env!("CARGO_BIN_EXE_tend"))
            .args(["--config", "/nonexistent/tend.toml", "verify", "--repo"])
            .arg(self.dir.join("repo"))
            .arg("--allowed-signers")
            .arg(self.dir.join("allowed_signers"))
            .arg("--keyring")
            .arg(self.dir.join("keyring.asc"))
            .arg(self.id(name)))
    }
}

/// Every signature case: applied or refused by `tend run --once`, and `tend verify`'s exit code.
#[test]
fn signature_cases_apply_or_refuse_end_to_end() {
    let fx = fixtures();
    let cases: &[(&str, bool, &str)] = &[
        ("ssh_ed25519", true, ""),
        ("ssh_ecdsa", true, ""),
        ("ssh_rsa", true, ""),
        ("pgp_ed25519", true, ""),
        ("pgp_rsa", true, ""),
        ("pgp_subkey", true, ""),
        ("merge", true, ""),
        ("unsigned", false, "not signed"),
        ("ssh_untrusted", false, "unknown SSH key"),
        ("pgp_untrusted", false, "unknown"),
        ("forged_ssh_message", false, "bad SSH signature"),
        ("forged_ssh_tree", false, "bad SSH signature"),
        ("forged_pgp_message", false, "bad"),
        ("pgp_expired", false, "expired"),
        ("pgp_revoked", false, "revoked"),
        ("ssh_outside_validity", false, "valid-before"),
        ("ssh_ns_file", false, "namespace"),
    ];
    let repo = GitRepo::new("trust");
    for (name, ok, why) in cases {
        fx.serve(&repo, name);
        // A fresh agent per case: no applied commit, so only the signature decides.
        let agent = Agent::with_trust(&repo.http_url(), "", &fx.trust_toml("tip"));
        let out = agent.run_once();
        let st = agent.status_json();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if *ok {
            assert!(
                out.status.success(),
                "{name}: expected apply, got: {stderr}"
            );
            assert_eq!(st["applied"]["id"], fx.id(name), "{name}");
            let signer = &st["applied"]["signer"];
            assert!(
                signer["fingerprint"]
                    .as_str()
                    .is_some_and(|f| !f.is_empty()),
                "{name}: {signer}"
            );
            assert!(
                signer["identity"].as_str().is_some_and(|f| !f.is_empty()),
                "{name}: {signer}"
            );
            assert!(agent.status_text().contains("signed  by"), "{name}");
        } else {
            assert!(!out.status.success(), "{name}: expected refusal");
            assert!(
                st["applied"].is_null(),
                "{name}: nothing may be applied: {st}"
            );
            assert_eq!(st["refused"]["step"], "verify", "{name}: {st}");
            let reason = st["refused"]["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains(why),
                "{name}: reason {reason:?} should mention {why:?}"
            );
            assert!(stderr.contains(why), "{name}: {stderr}");
        }
        let v = fx.verify(name);
        assert_eq!(
            v.status.success(),
            *ok,
            "tend verify {name}: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        if *ok {
            let line = String::from_utf8_lossy(&v.stdout);
            assert!(
                line.contains("good") && line.contains(fx.id(name)),
                "{line}"
            );
        } else {
            assert!(v.stdout.is_empty());
            assert!(!v.stderr.is_empty());
        }
    }
}

#[test]
fn rollback_and_force_push_are_refused_until_approved() {
    let fx = fixtures();
    let repo = GitRepo::new("rollback");
    let agent = Agent::with_trust(&repo.http_url(), "", &fx.trust_toml("tip"));
    fx.serve(&repo, "c2");
    agent.run_once_ok();
    assert_eq!(agent.status_json()["applied"]["id"], fx.id("c2"));

    // Rollback to an ancestor (signed, but older): refused.
    fx.serve(&repo, "c1");
    let out = agent.run_once();
    assert!(!out.status.success());
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], fx.id("c2"));
    assert!(
        st["refused"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a descendant")),
        "{st}"
    );
    // The same refused tip is not verified again on the next poll; still refused.
    assert!(!agent.run_once().status.success());
    assert_eq!(agent.status_json()["history"][0]["outcome"], "refused");

    // The operator allows exactly this rollback, once.
    run_ok(
        agent
            .tend()
            .args(["approve", "--allow-rollback", fx.id("c1")]),
    );
    agent.run_once_ok();
    assert_eq!(agent.status_json()["applied"]["id"], fx.id("c1"));
    assert!(
        !agent.dir.path().join("state/approved-rollback").exists(),
        "approval is used up"
    );

    // Force-push to unrelated history: refused.
    fx.serve(&repo, "orphan");
    assert!(!agent.run_once().status.success());
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], fx.id("c1"));
    assert_eq!(st["refused"]["step"], "verify");
}

#[test]
fn require_all_refuses_an_unsigned_commit_in_the_range() {
    let fx = fixtures();
    for (require, ok) in [("all", false), ("tip", true)] {
        let repo = GitRepo::new("reqall");
        let agent = Agent::with_trust(&repo.http_url(), "", &fx.trust_toml(require));
        fx.serve(&repo, "c1");
        agent.run_once_ok();
        // c1 - c2 - c3 (unsigned) - c4 (signed tip)
        fx.serve(&repo, "c4");
        let out = agent.run_once();
        assert_eq!(
            out.status.success(),
            ok,
            "require = {require}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = agent.status_json();
        if ok {
            assert_eq!(st["applied"]["id"], fx.id("c4"));
        } else {
            assert_eq!(st["applied"]["id"], fx.id("c1"));
            let reason = st["refused"]["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains(&fx.id("c3")[..12]),
                "names the unsigned commit: {reason}"
            );
        }
    }
}

#[test]
fn verify_uses_the_config_and_resolves_branches() {
    let fx = fixtures();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("tend.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"/x\"\n[trust]\n{}\n",
            fx.trust_toml("tip")
        ),
    )
    .expect("config");
    let out = run(Command::new(env!("CARGO_BIN_EXE_tend"))
        .arg("--config")
        .arg(&cfg)
        .args(["verify", "--repo"])
        .arg(fx.dir.join("repo"))
        .arg("good"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(fx.id("merge")));
    // `main` points at c4, which is signed; `orphan` too. An unknown rev fails clearly.
    let out = run(Command::new(env!("CARGO_BIN_EXE_tend"))
        .arg("--config")
        .arg(&cfg)
        .args(["verify", "--repo"])
        .arg(fx.dir.join("repo"))
        .arg("no-such-branch"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-branch"));
}

#[test]
fn unverified_mode_is_loud() {
    let repo = GitRepo::new("lab");
    repo.write("compose.yaml", "services: {}\n");
    repo.commit("lab");
    let agent = Agent::new(&repo.http_url(), "");
    agent.run_once_ok();
    let text = agent.status_text();
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.contains("UNVERIFIED")),
        "{text}"
    );
    assert_eq!(agent.status_json()["unverified"], true);
}
