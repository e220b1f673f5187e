//! Host files: a layer's `files/` mirrored onto the host under the allowed prefixes only.

use crate::support::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn host_files_are_written_restored_removed_and_confined() {
    let root = tempfile::tempdir().expect("tmp");
    let repo = GitRepo::new("hostfiles");
    repo.write("compose.yaml", "services: {}\n");
    repo.write("files/etc/fleet/app.conf", "level=info\n");
    repo.write("files/etc/fleet/run.sh", "#!/bin/sh\n");
    repo.write("files.toml", "[\"/etc/fleet/app.conf\"]\nmode = \"0600\"\n");
    repo.commit("host files");
    let agent = Agent::new(&repo.http_url(), "");
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        format!(
            "{cfg}[files]\nallowed_prefixes = [\"/etc/fleet/\"]\nroot = \"{}\"\n",
            root.path().display()
        ),
    )
    .expect("config");
    agent.run_once_ok();
    let app = root.path().join("etc/fleet/app.conf");
    assert_eq!(std::fs::read_to_string(&app).expect("read"), "level=info\n");
    assert_eq!(std::fs::metadata(&app).expect("meta").mode() & 0o777, 0o600);
    assert!(agent.status_text().contains("2 host file(s) owned"));

    // Edited by hand: restored on the next cycle.
    std::fs::write(&app, "level=debug\n").expect("edit");
    agent.run_once_ok();
    assert_eq!(std::fs::read_to_string(&app).expect("read"), "level=info\n");

    // No longer declared: removed (a file tend never wrote stays).
    std::fs::write(root.path().join("etc/fleet/local.conf"), "mine\n").expect("write");
    repo.remove("files/etc/fleet/run.sh");
    repo.commit("drop run.sh");
    agent.run_once_ok();
    assert!(!root.path().join("etc/fleet/run.sh").exists());
    assert!(root.path().join("etc/fleet/local.conf").exists());

    // Outside the allowed prefixes: the whole revision is refused, naming the file.
    repo.write("files/etc/passwd", "root::0:0::/:/bin/sh\n");
    repo.write("files/etc/fleet/app.conf", "level=warn\n");
    repo.commit("escape");
    let out = agent.run_once();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("files/etc/passwd") && stderr.contains("allowed_prefixes"),
        "{stderr}"
    );
    assert!(!root.path().join("etc/passwd").exists());
    assert_eq!(
        std::fs::read_to_string(&app).expect("read"),
        "level=info\n",
        "nothing of it applied"
    );
}
