//! Test support: the testbed made by `tests/setup.sh`, Git repositories served by it, a tend
//! agent in a temp dir, and the real `docker` CLI to look at what tend did.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Values written by `tests/setup.sh` to `$TEND_TB/env`.
pub struct Testbed {
    pub srv: PathBuf,
    pub http: String,
    pub ssh: String,
    pub ssh_key: PathBuf,
    pub known_hosts: PathBuf,
    pub image: String,
    pub registry: String,
    pub registry_auth: String,
}

pub fn testbed() -> &'static Testbed {
    static TB: OnceLock<Testbed> = OnceLock::new();
    TB.get_or_init(|| {
        let dir = std::env::var("TEND_TB").unwrap_or_else(|_| "/tmp/tend-testbed".into());
        let path = Path::new(&dir).join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "testbed not ready ({}: {e}): run `bash tests/setup.sh` first",
                path.display()
            )
        });
        let vars: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| {
            vars.get(k)
                .map(|v| v.to_string())
                .unwrap_or_else(|| panic!("{k} missing in {}", path.display()))
        };
        Testbed {
            srv: get("TEND_TB_SRV").into(),
            http: get("TEND_TB_HTTP"),
            ssh: get("TEND_TB_SSH"),
            ssh_key: get("TEND_TB_SSH_KEY").into(),
            known_hosts: get("TEND_TB_KNOWN_HOSTS").into(),
            image: get("TEND_TB_IMAGE"),
            registry: get("TEND_TB_REGISTRY"),
            registry_auth: get("TEND_TB_REGISTRY_AUTH"),
        }
    })
}

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare repository served by the testbed, and a work tree to commit into.
pub struct GitRepo {
    pub name: String,
    pub bare: PathBuf,
    pub work: tempfile::TempDir,
}

impl GitRepo {
    pub fn new(prefix: &str) -> GitRepo {
        let tb = testbed();
        let name = unique(prefix);
        let bare = tb.srv.join(format!("{name}.git"));
        run_ok(
            Command::new("git")
                .args(["init", "-q", "--bare", "-b", "main"])
                .arg(&bare),
        );
        run_ok(Command::new("git").arg("-C").arg(&bare).args([
            "config",
            "http.receivepack",
            "true",
        ]));
        let work = tempfile::tempdir().expect("tempdir");
        run_ok(
            Command::new("git")
                .args(["init", "-q", "-b", "main"])
                .arg(work.path()),
        );
        GitRepo { name, bare, work }
    }

    pub fn http_url(&self) -> String {
        format!("{}/{}.git", testbed().http, self.name)
    }

    pub fn ssh_url(&self) -> String {
        format!("{}/{}.git", testbed().ssh, self.name)
    }

    pub fn git(&self) -> Command {
        let mut c = Command::new("git");
        c.arg("-C").arg(self.work.path()).args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ]);
        c
    }

    pub fn write(&self, path: &str, content: &str) -> &Self {
        let p = self.work.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
        self
    }

    pub fn remove(&self, path: &str) -> &Self {
        std::fs::remove_file(self.work.path().join(path)).expect("remove");
        self
    }

    /// Like [`GitRepo::commit`], signed with the SSH private key `key`.
    pub fn commit_signed(&self, msg: &str, key: &Path) -> String {
        run_ok(self.git().args(["add", "-A"]));
        run_ok(
            self.git()
                .args(["-c", "gpg.format=ssh", "-c"])
                .arg(format!("user.signingkey={}", key.display()))
                .args(["commit", "-q", "-S", "--allow-empty", "-m", msg]),
        );
        run_ok(
            self.git()
                .arg("push")
                .arg("-q")
                .arg(&self.bare)
                .arg("HEAD:main"),
        );
        run_ok(self.git().args(["rev-parse", "HEAD"]))
            .trim()
            .to_owned()
    }

    /// Commit everything and push to the served bare repo; returns the commit id.
    pub fn commit(&self, msg: &str) -> String {
        run_ok(self.git().args(["add", "-A"]));
        run_ok(
            self.git()
                .args(["commit", "-q", "--allow-empty", "-m", msg]),
        );
        run_ok(
            self.git()
                .arg("push")
                .arg("-q")
                .arg(&self.bare)
                .arg("HEAD:main"),
        );
        run_ok(self.git().args(["rev-parse", "HEAD"]))
            .trim()
            .to_owned()
    }
}

/// A tend agent with its own config, state dir and compose project.
pub struct Agent {
    pub dir: tempfile::TempDir,
    /// The runtime dir, on tmpfs like `/run/tend` (decrypted secrets go there).
    pub runtime: tempfile::TempDir,
    pub project: String,
    pub config: PathBuf,
}

impl Agent {
    /// An agent following `url` with `extra` TOML appended to `[source]`, applying unsigned
    /// commits (lab mode: these tests are about Git and Docker, not trust).
    pub fn new(url: &str, source_extra: &str) -> Agent {
        Agent::with_trust(url, source_extra, "allow_unsigned = true")
    }

    /// An agent with `trust` as the body of its `[trust]` section.
    pub fn with_trust(url: &str, source_extra: &str, trust: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
        let project = unique("t");
        let config = dir.path().join("tend.toml");
        let toml = format!(
            "[source]\nurl = \"{url}\"\nbranch = \"main\"\npoll_interval = \"2s\"\n{source_extra}\n\
             [host]\nname = \"edge-1\"\nproject = \"{project}\"\n\
             [paths]\nstate = \"{state}\"\nruntime = \"{runtime}\"\n[apply]\nsettle = \"1s\"\nhealth_timeout = \"60s\"\n[trust]\n{trust}\n",
            state = dir.path().join("state").display(),
            runtime = runtime.path().display(),
        );
        std::fs::write(&config, toml).expect("write config");
        Agent {
            dir,
            runtime,
            project,
            config,
        }
    }

    pub fn tend(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tend"));
        c.arg("--config").arg(&self.config);
        c
    }

    pub fn run_once(&self) -> Output {
        run(self.tend().args(["run", "--once"]))
    }

    pub fn run_once_ok(&self) {
        let out = self.run_once();
        assert!(
            out.status.success(),
            "tend run --once failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = run_ok(self.tend().args(["status", "--json"]));
        serde_json::from_str(&out).expect("status --json is JSON")
    }

    pub fn status_text(&self) -> String {
        run_ok(self.tend().arg("status"))
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.project)
    }

    /// Containers of this agent's project: name -> (state, spec hash, id).
    pub fn containers(&self) -> BTreeMap<String, (String, String, String)> {
        let out = run_ok(Command::new("docker").args([
            "ps",
            "-a",
            "--filter",
            &format!("label=io.tend.project={}", self.project),
            "--format",
            "{{.Names}}\t{{.State}}\t{{.Label \"io.tend.spec\"}}\t{{.ID}}",
        ]));
        out.lines()
            .filter_map(|l| {
                let mut p = l.split('\t');
                Some((
                    p.next()?.to_owned(),
                    (
                        p.next()?.to_owned(),
                        p.next()?.to_owned(),
                        p.next()?.to_owned(),
                    ),
                ))
            })
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
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
        if let Ok(out) = Command::new("docker")
            .args(["volume", "ls", "-q", "--filter", &filter])
            .output()
        {
            for v in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["volume", "rm", v]).output();
            }
        }
    }
}

/// A two-service compose file using the testbed image.
pub fn two_services(worker_cmd: &str) -> String {
    let image = &testbed().image;
    format!(
        "services:\n  web:\n    image: {image}\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    restart: always\n    \
         healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/\"]\n      interval: 2s\n  \
         worker:\n    image: {image}\n    command: {worker_cmd}\n    restart: unless-stopped\n    stop_grace_period: 1s\n    depends_on: [web]\n"
    )
}
