//! The examples the README walks through stay valid: every host config in `examples/` parses,
//! and `tend validate` accepts the example fleet for each host, with the services the README
//! lists.

use crate::support::*;
use std::path::PathBuf;
use std::process::Command;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn validate(config: &str) -> String {
    let ex = examples();
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_tend"))
            .arg("--config")
            .arg(ex.join(config))
            .arg("validate")
            .arg(ex.join("fleet")),
    )
}

#[test]
fn every_example_host_config_validates_the_fleet() {
    for (config, services) in [
        ("tend.toml", "web, collector, heartbeat"),
        ("hosts/edge-017.toml", "web, collector, heartbeat"),
        ("hosts/gw-01.toml", "web, collector, heartbeat, proxy"),
        ("hosts/stage-01.toml", "toolbox, web, collector, heartbeat"),
    ] {
        let out = validate(config);
        assert!(
            out.contains(&format!(
                "ok: project edge with {} service(s): {services};",
                services.split(", ").count()
            )),
            "{config}: {out}"
        );
    }
    let listed: Vec<String> = std::fs::read_dir(examples().join("hosts"))
        .expect("examples/hosts")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed.len(),
        3,
        "a new host config needs a line above: {listed:?}"
    );
}

#[test]
fn example_secrets_decrypt_with_the_demo_key_only() {
    let ex = examples();
    for file in [
        "common/secrets/web.env",
        "common/secrets/site_token.txt",
        "hosts/gw-01/secrets/httpd.conf",
    ] {
        let path = ex.join("fleet").join(file);
        let plain = run_ok(
            Command::new(env!("CARGO_BIN_EXE_tend"))
                .env_remove("SOPS_AGE_KEY_FILE")
                .env_remove("SOPS_AGE_KEY")
                .args(["--config", "/nonexistent", "decrypt", "-i"])
                .arg(ex.join("demo-age.key"))
                .arg(&path),
        );
        assert!(!plain.is_empty(), "{file}");
        let raw = std::fs::read_to_string(&path).expect("read");
        assert!(
            raw.contains("ENC[AES256_GCM"),
            "{file} must be SOPS-encrypted"
        );
        let without = run(Command::new(env!("CARGO_BIN_EXE_tend"))
            .env_remove("SOPS_AGE_KEY_FILE")
            .env_remove("SOPS_AGE_KEY")
            .args(["--config", "/nonexistent", "decrypt"])
            .arg(&path));
        assert!(!without.status.success(), "{file} decrypted without a key");
    }
}
