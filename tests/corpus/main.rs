//! Conformance: real compose files written by others (`../shared/corpus/compose/`, beside the
//! repository). Every `awesome-compose/` application passes `tend validate` and yields a plan;
//! every `awesome-compose-build/` file is refused with one error naming file, service and `build`.
//!
//! The corpus is not part of the repository: these tests are `#[ignore]`d (reported as ignored,
//! never as passed) and `tests/run.sh` runs them with `--include-ignored` when the corpus exists.

use std::path::PathBuf;
use std::process::Command;

fn corpus() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/compose");
    assert!(
        dir.is_dir(),
        "corpus not found at {} (run through tests/run.sh)",
        dir.display()
    );
    dir
}

fn validate(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(["--config", "/nonexistent/tend.toml", "validate"])
        .arg(path)
        .output()
        .expect("run tend validate")
}

#[test]
#[ignore = "needs ../shared/corpus; tests/run.sh runs it when present"]
fn awesome_compose_applications_validate_and_plan() {
    let dir = corpus().join("awesome-compose");
    let mut apps: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    apps.sort();
    assert!(
        apps.len() >= 12,
        "expected the twelve applications, found {}",
        apps.len()
    );
    for app in apps {
        let out = validate(&app);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            app.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let services: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("ok: project "))
            .and_then(|l| l.split(" with ").nth(1))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(services > 0, "{}: no services: {stdout}", app.display());
        let creates = stdout
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("create ")
                    && !l.contains("network")
                    && !l.contains("volume")
            })
            .count();
        assert_eq!(
            creates,
            services,
            "{}: one create per service in the plan: {stdout}",
            app.display()
        );
    }
}

#[test]
#[ignore = "needs ../shared/corpus; tests/run.sh runs it when present"]
fn compose_files_that_build_images_are_refused_clearly() {
    let dir = corpus().join("awesome-compose-build");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read corpus")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 27,
        "expected 27 files, found {}",
        files.len()
    );
    for f in files {
        let out = validate(&f);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} must be refused", f.display());
        assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(stderr.contains(name), "names the file: {stderr}");
        assert!(stderr.contains("service \""), "names the service: {stderr}");
        assert!(stderr.contains("key \"build\""), "names build: {stderr}");
        assert!(stderr.contains("publish"), "says what to do: {stderr}");
        assert!(out.stdout.is_empty());
    }
}
