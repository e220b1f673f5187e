//! The Debian package on a real host: `packaging/build-deb.sh` packages the tend under test; a
//! container whose PID 1 is systemd (`tests/fixtures/build-systemd-image.sh`) and which drives this machine's
//! Docker engine is the host. Installed with apt, configured like an operator would (a signed
//! repository on the loopback Git server, the demo age key), started with
//! `systemctl enable --now tend` under the shipped, hardened unit: the declared containers come
//! up, systemd shows the applied revision, the journal carries tend's fields, metrics and hooks
//! work, the watchdog restarts a frozen agent, and removing the package leaves the containers
//! running and the state in place.

use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A systemd "host" container, removed (with the containers its tend created) when dropped.
struct Node {
    name: String,
    /// Compose project of the containers its tend creates on this machine's engine.
    project: String,
}

impl Node {
    fn start(project: &str) -> Node {
        let image = std::fs::read_to_string(
            Path::new(&std::env::var("TEND_TB").unwrap_or_else(|_| "/tmp/tend-testbed".into()))
                .join("env"),
        )
        .ok()
        .and_then(|env| {
            env.lines()
                .find_map(|l| l.strip_prefix("TEND_TB_PKG_IMAGE=").map(str::to_owned))
        })
        .unwrap_or_else(|| "tend-test/systemd-pkg:bookworm".into());
        let node = Node {
            name: unique("tend-pkg-"),
            project: project.to_owned(),
        };
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--name", &node.name, "--network", "host"])
            .args(["--cap-add=ALL", "--cap-drop=SYS_RESOURCE"])
            .args([
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
            ])
            .args([
                "--cgroupns=host",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "--tmpfs",
                "/tmp",
            ])
            .args(["--stop-signal=SIGRTMIN+3"])
            .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"]);
        // Each cgroup hierarchy on its own: never the /sys/fs/cgroup root (systemd would remount
        // this machine's cgroup tmpfs read-only).
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mut hierarchies: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                let fstype = post.split(' ').next()?;
                let point = pre.split(' ').nth(4)?;
                (matches!(fstype, "cgroup" | "cgroup2") && point.starts_with("/sys/fs/cgroup/"))
                    .then_some(point)
            })
            .collect();
        hierarchies.sort();
        hierarchies.dedup();
        for h in hierarchies {
            cmd.arg("-v").arg(format!("{h}:{h}:rw"));
        }
        cmd.arg(&image);
        run_ok(&mut cmd);
        let ok = wait_until(Duration::from_secs(60), || {
            let s = node.exec("systemctl is-system-running");
            let s = String::from_utf8_lossy(&s.stdout);
            s.trim() == "running" || s.trim() == "degraded"
        });
        assert!(ok, "{} did not boot", node.name);
        node
    }

    fn exec(&self, script: &str) -> Output {
        run(Command::new("docker").args(["exec", &self.name, "sh", "-c", script]))
    }

    fn sh(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(
            out.status.success(),
            "in {}: {script}: {}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn put(&self, path: &str, content: &[u8]) {
        let mut child = Command::new("docker")
            .args(["exec", "-i", &self.name, "sh", "-c"])
            .arg(format!("mkdir -p \"$(dirname {path})\" && cat > {path}"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("docker exec");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(content)
            .expect("write");
        assert!(child.wait().expect("wait").success(), "cannot write {path}");
    }

    fn show(&self, prop: &str) -> String {
        self.sh(&format!("systemctl show tend -p {prop} --value"))
            .trim()
            .to_owned()
    }

    /// Containers of the project on this machine's engine: name -> (state, id).
    fn containers(&self) -> std::collections::BTreeMap<String, (String, String)> {
        let out = run_ok(Command::new("docker").args([
            "ps",
            "-a",
            "--filter",
            &format!("label=io.tend.project={}", self.project),
            "--format",
            "{{.Names}}\t{{.State}}\t{{.ID}}",
        ]));
        out.lines()
            .filter_map(|l| {
                let mut p = l.split('\t');
                Some((
                    p.next()?.to_owned(),
                    (p.next()?.to_owned(), p.next()?.to_owned()),
                ))
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let filter = format!("label=io.tend.project={}", self.project);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{}_default", self.project)])
            .output();
    }
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    cond()
}

/// A loopback HTTP server that records the bodies POSTed to it (the alert hook's receiver).
fn hook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/tend-events",
        listener.local_addr().expect("addr")
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok() {
                store
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let mut w = stream;
            let _ = w.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    Some(resp)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn build_deb(out: &Path) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/build-deb.sh");
    let deb = run_ok(
        Command::new("bash")
            .arg(script)
            .args(["--binary", env!("CARGO_BIN_EXE_tend"), "--fast", "--out"])
            .arg(out),
    );
    PathBuf::from(deb.trim())
}

#[test]
fn deb_installs_a_hardened_watched_service_that_converges_and_survives_removal() {
    let top = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(tmp.path());
    let deb_name = deb
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let contents = run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/tend",
        "./usr/lib/systemd/system/tend.service",
        "./etc/tend/tend.toml",
        "./usr/share/man/man1/tend.1.gz",
        "./usr/share/bash-completion/completions/tend",
        "./usr/share/zsh/vendor-completions/_tend",
        "./usr/share/fish/vendor_completions.d/tend.fish",
    ] {
        assert!(
            contents.contains(path),
            "{path} not in the package:\n{contents}"
        );
    }

    // The operator's fleet repository: two services, one with a SOPS env file encrypted to the
    // demo key; the commit signed with the operator's SSH key.
    let image = &testbed().image;
    let project = unique("pkg");
    let repo = GitRepo::new("pkg");
    let env_secret = std::fs::read_to_string(top.join("examples/fleet/common/secrets/web.env"))
        .expect("demo secret");
    repo.write("secrets/web.env", &env_secret);
    repo.write(
        "compose.yaml",
        &format!(
            "name: {project}\nservices:\n  web:\n    image: {image}\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    \
             restart: always\n    env_file: secrets/web.env\n    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/\"]\n      \
             interval: 2s\n  worker:\n    image: {image}\n    command: sleep 100000\n    restart: unless-stopped\n"
        ),
    );
    let key = tmp.path().join("ops_ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "ops@example.invalid",
                "-f",
            ])
            .arg(&key),
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    run_ok(repo.git().args(["add", "-A"]));
    run_ok(
        repo.git()
            .args(["-c", "gpg.format=ssh", "-c"])
            .arg(format!("user.signingkey={}", key.display()))
            .args(["commit", "-q", "-S", "-m", "pkg: web and worker"]),
    );
    run_ok(
        repo.git()
            .arg("push")
            .arg("-q")
            .arg(&repo.bare)
            .arg("HEAD:main"),
    );
    let rev = run_ok(repo.git().args(["rev-parse", "HEAD"]))
        .trim()
        .to_owned();
    let short = &rev[..7];

    let (hook_url, hook_events) = hook_receiver();
    let metrics_addr = format!("127.0.0.1:{}", free_port());

    // The host: install the package like an operator.
    let node = Node::start(&project);
    node.put(
        &format!("/root/{deb_name}"),
        &std::fs::read(&deb).expect("deb"),
    );
    if !node
        .exec("dpkg -s ca-certificates >/dev/null 2>&1")
        .status
        .success()
    {
        // A fresh minimal host: apt resolves the package's dependencies from the mirror.
        node.sh("apt-get update -qq");
    }
    node.sh(&format!(
        "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./{deb_name} >/dev/null"
    ));
    assert!(
        node.sh("getent group tend").starts_with("tend:"),
        "postinst creates the group"
    );
    assert!(
        node.sh("stat -c %U:%G:%a /etc/tend/tend.toml").trim() == "root:tend:640",
        "the example config is root:tend 0640"
    );
    assert_eq!(
        node.show("UnitFileState"),
        "disabled",
        "not enabled before it is configured"
    );
    // The shipped unit, as systemd reads it.
    assert_eq!(node.show("Type"), "notify");
    let unit = node.sh("systemctl cat tend");
    assert!(unit.contains("\nWatchdogSec=30s\n"), "{unit}");
    assert_eq!(node.show("Restart"), "on-failure");
    assert_eq!(node.show("ProtectSystem"), "strict");
    assert_eq!(node.show("NoNewPrivileges"), "yes");
    assert_eq!(node.show("UMask"), "0077");
    // systemd's own review of the sandbox: "Overall exposure level for tend.service: 2.3 OK :-)".
    let exposure = node.sh("systemd-analyze security tend --no-pager 2>&1 | tail -1");
    let level: f64 = exposure
        .split_once("tend.service:")
        .and_then(|(_, l)| l.split_whitespace().next())
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {exposure:?}"));
    assert!(level <= 3.0, "the unit's sandbox got weaker: {exposure}");

    node.put(
        "/etc/tend/allowed_signers",
        format!(
            "ops@example.invalid namespaces=\"git\" {} {}\n",
            public[0], public[1]
        )
        .as_bytes(),
    );
    node.put(
        "/etc/tend/age.key",
        &std::fs::read(top.join("examples/demo-age.key")).expect("demo key"),
    );
    node.sh("chmod 600 /etc/tend/age.key && mkdir -p /var/lib/prometheus/node-exporter");
    let config = format!(
        "[source]\nurl = \"{url}\"\nbranch = \"main\"\npoll_interval = \"3s\"\n\
         [trust]\nallowed_signers = \"/etc/tend/allowed_signers\"\n\
         [secrets]\nage_identities = [\"/etc/tend/age.key\"]\n\
         [host]\nname = \"pkg-host\"\n\
         [metrics]\nlisten = \"{metrics_addr}\"\ntextfile = \"/var/lib/prometheus/node-exporter/tend.prom\"\n\
         [hooks]\nurl = \"{hook_url}\"\ncommand = [\"/bin/sh\", \"-c\", \"cat >> /var/lib/tend/hook-events.jsonl\"]\n",
        url = repo.http_url()
    );
    node.put("/etc/tend/tend.toml", config.as_bytes());
    // A short watchdog so the test need not wait the shipped 30 s.
    node.put(
        "/etc/systemd/system/tend.service.d/test-watchdog.conf",
        b"[Service]\nWatchdogSec=3s\n",
    );
    node.sh("systemctl daemon-reload && systemctl enable --now tend");
    assert_eq!(node.show("WatchdogUSec"), "3s");

    // The containers the repository declares come up through the host's engine.
    let up = wait_until(Duration::from_secs(60), || {
        let c = node.containers();
        c.len() == 2 && c.values().all(|(state, _)| state == "running")
    });
    let journal = node.exec("journalctl -u tend --no-pager -n 40");
    assert!(
        up,
        "containers not up: {:?}\n{}",
        node.containers(),
        String::from_utf8_lossy(&journal.stdout)
    );
    let before = node.containers();
    let web = format!("{project}-web-1");
    let token = run_ok(Command::new("docker").args(["exec", &web, "sh", "-c", "echo $API_TOKEN"]));
    assert_eq!(
        token.trim(),
        "demo-token-6f1c",
        "the SOPS env file was decrypted with /etc/tend/age.key"
    );

    // systemd: active, READY sent, the revision in the status line.
    let has_status = wait_until(Duration::from_secs(20), || {
        node.show("StatusText").contains(short)
    });
    let status = node.sh("systemctl status tend --no-pager || true");
    assert!(has_status, "no revision in the status line:\n{status}");
    assert!(status.contains("Active: active (running)"), "{status}");
    assert!(
        status.contains(&format!("Status: \"applied {short}")),
        "{status}"
    );

    // `tend status` inside shows the converged, signed state.
    let text = node.sh("tend status");
    assert!(
        text.contains(&format!("applied   {short} \"pkg: web and worker\"")),
        "{text}"
    );
    assert!(text.contains("signed  by ops@example.invalid"), "{text}");
    assert!(!text.contains("UNVERIFIED"), "{text}");
    assert!(text.contains(&format!("web      running  {web}")), "{text}");

    // journald: tend's fields, so `journalctl -u tend TEND_RESOURCE=web` works.
    let records = node.sh("journalctl -u tend TEND_RESOURCE=web -o json --no-pager");
    let records: Vec<serde_json::Value> = records
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let create = records
        .iter()
        .find(|r| {
            r["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("create web"))
        })
        .unwrap_or_else(|| panic!("no 'create web' record for TEND_RESOURCE=web: {records:?}"));
    assert_eq!(create["TEND_REVISION"], short);
    assert_eq!(create["TEND_STEP"], "apply");
    assert_eq!(create["PRIORITY"], "6", "info is syslog priority 6");
    assert_eq!(create["SYSLOG_IDENTIFIER"], "tend");
    let applied = node.sh(&format!(
        "journalctl -u tend TEND_REVISION={short} TEND_STEP=apply -o cat --no-pager"
    ));
    assert!(applied.contains(&format!("applied {short}")), "{applied}");

    // Metrics: on the configured TCP address, and as a node_exporter textfile.
    let want = format!("tend_applied_revision_info{{revision=\"{rev}\",short=\"{short}\"}} 1");
    let metrics = http_get(&metrics_addr, "/metrics").unwrap_or_default();
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(metrics.contains(&want), "{metrics}");
    assert!(
        metrics.contains("tend_resources{kind=\"container\",state=\"running\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "tend_source_up{{source=\"{}\"}} 1",
            repo.http_url()
        )),
        "{metrics}"
    );
    let textfile = node.sh("cat /var/lib/prometheus/node-exporter/tend.prom");
    assert!(textfile.contains(&want), "{textfile}");

    // Hooks: the HTTP receiver and the command both got the `applied` event.
    let posted = wait_until(Duration::from_secs(20), || {
        hook_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|b| b.contains("\"outcome\":\"applied\"") && b.contains(&rev))
    });
    assert!(
        posted,
        "hook POSTs: {:?}",
        hook_events.lock().unwrap_or_else(|e| e.into_inner())
    );
    let logged = node.sh("cat /var/lib/tend/hook-events.jsonl");
    let event: serde_json::Value =
        serde_json::from_str(logged.lines().next().unwrap_or_default()).expect("event JSON");
    assert_eq!(event["outcome"], "applied");
    assert_eq!(event["revision"], rev.as_str());
    assert_eq!(event["host"], "pkg-host");

    // The watchdog: a frozen agent (SIGSTOP) is killed and restarted by systemd.
    let pid = node.show("MainPID");
    node.sh("systemctl kill --kill-who=main --signal=SIGSTOP tend");
    let restarted = wait_until(Duration::from_secs(40), || {
        let now = node.show("MainPID");
        now != pid && now != "0" && node.show("ActiveState") == "active"
    });
    let journal = node.sh("journalctl -u tend --no-pager -n 30");
    assert!(restarted, "not restarted after SIGSTOP:\n{journal}");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    assert!(node.show("NRestarts").parse::<u32>().unwrap_or(0) >= 1);
    assert_eq!(
        node.containers(),
        before,
        "the restart left the containers alone"
    );

    // Removing the package: the agent stops, the containers keep running, the state stays.
    node.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq tend >/dev/null");
    assert!(
        !node.exec("test -e /usr/bin/tend").status.success(),
        "binary removed"
    );
    assert_ne!(
        String::from_utf8_lossy(&node.exec("systemctl is-active tend").stdout).trim(),
        "active"
    );
    node.sh("test -s /var/lib/tend/state.json && test -d /var/lib/tend/repo.git && test -f /etc/tend/tend.toml");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        node.containers(),
        before,
        "containers keep running after apt-get remove"
    );
}
