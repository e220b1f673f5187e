//! Bytes on the wire: tend's poll and incremental fetch side by side with `git fetch`, against
//! `git http-backend` (the testbed's lighttpd) serving a repository with 10,000 refs.
//!
//! ```sh
//! bash tests/setup.sh                      # the testbed (lighttpd + git http-backend)
//! cargo run -p tend --example fetch_bytes  # prints the table; exits 1 if a target is missed
//! ```
//!
//! Every byte of every TCP connection (HTTP headers and bodies, both ways) goes through a
//! counting proxy in front of lighttpd. tend is measured through the very function the agent
//! polls with ([`tend::source::fetch`]); git is `git -c protocol.version=2 fetch --no-tags` of
//! the same refspec. Targets: a no-op poll ≤ 5 KB with no pack request; an incremental update
//! ≤ 1.1 × git's bytes for the same change.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REFS: usize = 10_000;

#[derive(Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    /// Everything the clients sent, to see which requests were made.
    requests: Mutex<Vec<u8>>,
    /// Everything the server sent.
    responses: Mutex<Vec<u8>>,
}

impl Counters {
    fn reset(&self) {
        self.up.store(0, Ordering::SeqCst);
        self.down.store(0, Ordering::SeqCst);
        if let Ok(mut r) = self.requests.lock() {
            r.clear();
        }
        if let Ok(mut r) = self.responses.lock() {
            r.clear();
        }
    }

    fn snapshot(&self) -> Measure {
        let requests = self.requests.lock().map(|r| r.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&requests);
        let responses = self.responses.lock().map(|r| r.clone()).unwrap_or_default();
        let progress = String::from_utf8_lossy(&responses)
            .split('\n')
            .filter(|l| l.contains("objects:") || l.contains("Total "))
            .map(|l| l.len() + 1)
            .sum();
        Measure {
            progress,
            up: self.up.load(Ordering::SeqCst),
            down: self.down.load(Ordering::SeqCst),
            http_requests: text.matches("HTTP/1.1\r\n").count(),
            ls_refs: text.contains("command=ls-refs"),
            pack_request: text.contains("command=fetch"),
            haves: text
                .match_indices("have ")
                .map(|(i, _)| text[i + 5..].chars().take(40).collect())
                .collect(),
            prefixes: text
                .match_indices("ref-prefix ")
                .map(|(i, _)| text[i + 11..].split('\n').next().unwrap_or_default().to_owned())
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Measure {
    /// Bytes of the server's progress messages ("Counting objects...") in the response.
    progress: usize,
    up: u64,
    down: u64,
    http_requests: usize,
    ls_refs: bool,
    pack_request: bool,
    haves: Vec<String>,
    prefixes: Vec<String>,
}

impl Measure {
    fn total(&self) -> u64 {
        self.up + self.down
    }
}

fn proxy(target: String, counters: Arc<Counters>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to, up) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    true,
                ),
                (server, client, false),
            ] {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if up {
                            counters.up.fetch_add(n as u64, Ordering::SeqCst);
                            if let Ok(mut r) = counters.requests.lock() {
                                r.extend_from_slice(&buf[..n]);
                            }
                        } else {
                            counters.down.fetch_add(n as u64, Ordering::SeqCst);
                            if let Ok(mut r) = counters.responses.lock() {
                                r.extend_from_slice(&buf[..n]);
                            }
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn testbed() -> (PathBuf, String) {
    let dir = std::env::var("TEND_TB").unwrap_or_else(|_| "/tmp/tend-testbed".into());
    let env =
        std::fs::read_to_string(Path::new(&dir).join("env")).expect("testbed env: run `bash tests/setup.sh` first");
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing"))
            .to_owned()
    };
    (PathBuf::from(get("TEND_TB_SRV")), get("TEND_TB_HTTP"))
}

fn tend_fetch(repo: &Path, url: &str) -> tend::source::Fetched {
    tend::source::fetch(
        repo,
        url,
        "main",
        tend::source::FETCHED_REF,
        &tend::source::Transport::default(),
        &AtomicBool::new(false),
    )
    .expect("tend fetch")
}

fn main() {
    let (srv, http) = testbed();
    let name = format!("bench-{}", std::process::id());
    let bare = srv.join(format!("{name}.git"));
    let work = tempfile_dir("work");
    let local = tempfile_dir("local");

    // The served repository: 40 commits of a small fleet, then 10,000 branches.
    git(
        Path::new("/"),
        &["init", "-q", "--bare", "-b", "main", &bare.display().to_string()],
    );
    git(
        Path::new("/"),
        &["init", "-q", "-b", "main", &work.display().to_string()],
    );
    let mut commits = Vec::new();
    for i in 0..40 {
        for f in 0..8 {
            std::fs::create_dir_all(work.join(format!("hosts/edge-{f:03}"))).expect("mkdir");
            std::fs::write(
                work.join(format!("hosts/edge-{f:03}/compose.yaml")),
                format!(
                    "services:\n  web:\n    image: nginx:1.{}\n    environment: [\"N={i}\"]\n",
                    20 + f
                ),
            )
            .expect("write");
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", &format!("change {i}")]);
        commits.push(git(&work, &["rev-parse", "HEAD"]));
    }
    git(&work, &["push", "-q", &bare.display().to_string(), "HEAD:main"]);
    let mut input = String::new();
    for i in 0..REFS {
        input.push_str(&format!(
            "create refs/heads/feature/{i:05} {}\n",
            commits[i % commits.len()]
        ));
    }
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&bare)
        .args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("update-ref");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success());
    git(&bare, &["pack-refs", "--all"]);
    let refs = git(&bare, &["for-each-ref", "--format=x"]).lines().count();

    let counters = Arc::new(Counters::default());
    let upstream = http
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .expect("http base")
        .to_owned();
    let port = proxy(upstream, counters.clone());
    let url = format!("http://127.0.0.1:{port}/git/{name}.git");

    let tend_repo = local.join("tend.git");
    tend::source::Repo::open_or_init(&tend_repo).expect("tend repo");
    let git_repo = local.join("git.git");
    git(
        Path::new("/"),
        &["init", "-q", "--bare", &git_repo.display().to_string()],
    );
    let git_fetch = || {
        git(
            &git_repo,
            &[
                "-c",
                "protocol.version=2",
                "fetch",
                "-q",
                "--no-tags",
                &url,
                "+refs/heads/main:refs/remotes/origin/main",
            ],
        );
    };
    let measure = |f: &dyn Fn()| {
        counters.reset();
        f();
        std::thread::sleep(Duration::from_millis(100));
        counters.snapshot()
    };

    let tend_clone = measure(&|| {
        tend_fetch(&tend_repo, &url);
    });
    let git_clone = measure(&git_fetch);
    let mut noop_pack = true;
    let tend_noop = measure(&|| {
        let f = tend_fetch(&tend_repo, &url);
        assert!(!f.pack);
    });
    noop_pack &= tend_noop.pack_request;
    let git_noop = measure(&git_fetch);

    // The same change for both: one host's compose file.
    std::fs::write(
        work.join("hosts/edge-003/compose.yaml"),
        "services:\n  web:\n    image: nginx:1.27\n    environment: [\"N=update\"]\n",
    )
    .expect("write");
    git(&work, &["commit", "-q", "-am", "edge-003: nginx 1.27"]);
    let previous = commits.last().cloned().unwrap_or_default();
    git(&work, &["push", "-q", &bare.display().to_string(), "HEAD:main"]);
    let new_tip = git(&work, &["rev-parse", "HEAD"]);
    let tend_update = measure(&|| {
        let f = tend_fetch(&tend_repo, &url);
        assert_eq!(f.tip, new_tip);
        assert!(f.pack);
    });
    let git_update = measure(&git_fetch);

    println!("repository: {refs} refs (10,000 branches + main), 41 commits; server: git http-backend behind lighttpd");
    println!("bytes = TCP payload both ways (HTTP headers + bodies), through a counting proxy;");
    println!("progress = bytes of the server's progress messages within the download\n");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>5} {:>8} {:>5} {:>9}",
        "", "up", "down", "total", "reqs", "ls-refs", "pack", "progress"
    );
    for (label, m) in [
        ("tend initial fetch", &tend_clone),
        ("git fetch (initial)", &git_clone),
        ("tend no-op poll", &tend_noop),
        ("git fetch (no-op)", &git_noop),
        ("tend incremental update", &tend_update),
        ("git fetch (same update)", &git_update),
    ] {
        println!(
            "{label:<28} {:>9} {:>9} {:>9} {:>5} {:>8} {:>5} {:>9}",
            m.up,
            m.down,
            m.total(),
            m.http_requests,
            if m.ls_refs { "yes" } else { "no" },
            if m.pack_request { "yes" } else { "no" },
            m.progress
        );
    }
    println!();
    println!("tend ls-refs prefixes (no-op poll): {:?}", tend_noop.prefixes);
    println!(
        "tend haves in the update: {} (the previous tip {} among them: {})",
        tend_update.haves.len(),
        &previous[..7],
        tend_update.haves.contains(&previous)
    );
    let ratio = tend_update.total() as f64 / git_update.total() as f64;
    let noop_ok = tend_noop.total() <= 5_000 && !noop_pack;
    let update_ok = ratio <= 1.1;
    println!(
        "\nno-op poll: {} bytes, pack requested: {} (target <= 5000 bytes, no pack): {}",
        tend_noop.total(),
        noop_pack,
        if noop_ok { "PASS" } else { "FAIL" }
    );
    println!(
        "incremental update: tend {} bytes vs git {} bytes = {ratio:.2}x (target <= 1.10x): {}",
        tend_update.total(),
        git_update.total(),
        if update_ok { "PASS" } else { "FAIL" }
    );
    let _ = std::fs::remove_dir_all(&bare);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&local);
    if !(noop_ok && update_ok) {
        std::process::exit(1);
    }
}

fn tempfile_dir(what: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tend-bench-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("mkdir");
    p
}
