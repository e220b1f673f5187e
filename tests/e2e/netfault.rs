//! Network faults made for real: two network namespaces joined by a veth pair (the agent in
//! one, a Git server in the other), packet loss with nftables (this kernel has no netem), link
//! down/up, a delaying TCP proxy and a server that accepts and never answers — both written
//! here. Every namespace, address and port is this test's own; everything is torn down on drop,
//! panics included. Needs root, iproute2 and nftables (`tests/setup.sh`).
#![allow(dead_code)]

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The server's address inside its namespace (namespaces are private: no clash between tests).
pub const SERVER_IP: &str = "10.77.0.1";
/// The agent's address inside its namespace.
pub const AGENT_IP: &str = "10.77.0.2";

/// Run `cmd`, panic with its output when it fails.
fn sh(args: &[&str]) {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    run_ok(&mut cmd);
}

/// A git smart-HTTP server (lighttpd + git http-backend over the testbed's repositories),
/// optionally with basic authentication on `/auth-git`.
pub struct GitServer {
    child: Child,
    _dir: tempfile::TempDir,
    pub addr: String,
}

impl GitServer {
    /// Start lighttpd on `ip:port`, inside namespace `ns` when given. With `users`
    /// (`user:password` lines), `/auth-git/...` requires basic authentication.
    pub fn start(ns: Option<&str>, ip: &str, port: u16, users: Option<&str>) -> GitServer {
        GitServer::start_with(ns, ip, port, users, None)
    }

    /// The same over HTTPS: `tls` is the server's certificate chain and key (one PEM file) and
    /// the CA that signed it (for the readiness probe).
    pub fn start_tls(ip: &str, port: u16, pem: &Path, ca: &Path) -> GitServer {
        GitServer::start_with(None, ip, port, None, Some((pem, ca)))
    }

    fn start_with(
        ns: Option<&str>,
        ip: &str,
        port: u16,
        users: Option<&str>,
        tls: Option<(&Path, &Path)>,
    ) -> GitServer {
        let tb = testbed();
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = [
            "/usr/local/libexec/git-core/git-http-backend",
            "/usr/lib/git-core/git-http-backend",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("git-http-backend");
        let mut conf = format!(
            "server.modules = ( \"mod_alias\", \"mod_cgi\", \"mod_setenv\", \"mod_auth\", \"mod_authn_file\" )\n\
             server.document-root = \"{srv}\"\nserver.bind = \"{ip}\"\nserver.port = {port}\n\
             server.errorlog = \"{d}/error.log\"\nserver.username = \"\"\n\
             server.max-keep-alive-idle = 60\n\
             alias.url = ( \"/git\" => \"{backend}\", \"/auth-git\" => \"{backend}\" )\n\
             $HTTP[\"url\"] =~ \"^/(auth-)?git\" {{\n  cgi.assign = ( \"\" => \"\" )\n  \
             setenv.add-environment = ( \"GIT_PROJECT_ROOT\" => \"{srv}\", \"GIT_HTTP_EXPORT_ALL\" => \"1\" )\n}}\n",
            srv = tb.srv.display(),
            d = dir.path().display(),
        );
        if let Some((pem, _)) = tls {
            conf.push_str(&format!(
                "server.modules += ( \"mod_openssl\" )\nssl.engine = \"enable\"\nssl.pemfile = \"{}\"\n",
                pem.display()
            ));
        }
        if let Some(users) = users {
            let file = dir.path().join("users");
            std::fs::write(&file, users).expect("users");
            conf.push_str(&format!(
                "auth.backend = \"plain\"\nauth.backend.plain.userfile = \"{}\"\n\
                 $HTTP[\"url\"] =~ \"^/auth-git\" {{\n  auth.require = ( \"\" => ( \"method\" => \"basic\", \"realm\" => \"tend\", \"require\" => \"valid-user\" ) )\n}}\n",
                file.display()
            ));
        }
        let conf_path = dir.path().join("lighttpd.conf");
        std::fs::write(&conf_path, conf).expect("conf");
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "lighttpd"]);
                c
            }
            None => Command::new("lighttpd"),
        };
        let child = cmd
            .arg("-D")
            .arg("-f")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lighttpd");
        let server = GitServer {
            child,
            _dir: dir,
            addr: format!("{ip}:{port}"),
        };
        // Wait until it answers (from inside the namespace).
        let scheme = if tls.is_some() { "https" } else { "http" };
        let probe =
            format!("{scheme}://{ip}:{port}/git/probe.git/info/refs?service=git-upload-pack");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = match ns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, "curl"]);
                    c
                }
                None => Command::new("curl"),
            };
            if let Some((_, ca)) = tls {
                c.arg("--cacert").arg(ca);
            }
            if c.args(["-sf", "-o", "/dev/null", &probe])
                .status()
                .is_ok_and(|s| s.success())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lighttpd on {ip}:{port} does not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback (in the root namespace).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Two namespaces, `agent` (10.77.0.2) and `server` (10.77.0.1), joined by veth, with a Git
/// server in `server` on port 80 when asked for.
pub struct NetPair {
    pub agent: String,
    pub server: String,
    git: Option<GitServer>,
}

impl NetPair {
    pub fn new(with_git_server: bool) -> NetPair {
        let id = unique("");
        let pair = NetPair {
            agent: format!("tend-a{id}"),
            server: format!("tend-s{id}"),
            git: None,
        };
        sh(&["ip", "netns", "add", &pair.agent]);
        sh(&["ip", "netns", "add", &pair.server]);
        sh(&[
            "ip",
            "-n",
            &pair.agent,
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            &pair.server,
        ]);
        sh(&[
            "ip",
            "-n",
            &pair.agent,
            "addr",
            "add",
            &format!("{AGENT_IP}/24"),
            "dev",
            "veth0",
        ]);
        sh(&[
            "ip",
            "-n",
            &pair.server,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            "veth1",
        ]);
        for (ns, dev) in [(&pair.agent, "veth0"), (&pair.server, "veth1")] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        let mut pair = pair;
        if with_git_server {
            pair.git = Some(GitServer::start(Some(&pair.server), SERVER_IP, 80, None));
        }
        pair
    }

    /// The URL of `repo` on the server, as seen from the agent's namespace.
    pub fn http_url(&self, repo: &GitRepo) -> String {
        format!("http://{SERVER_IP}/git/{}.git", repo.name)
    }

    /// `program` run inside the agent's namespace.
    pub fn in_agent(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.agent]).arg(program);
        c
    }

    /// `tend --config CFG` inside the agent's namespace.
    pub fn tend(&self, agent: &Agent) -> Command {
        let mut c = self.in_agent(env!("CARGO_BIN_EXE_tend"));
        c.arg("--config").arg(&agent.config);
        c
    }

    /// The server's end of the link goes dark (the agent's SYNs go nowhere) or comes back.
    pub fn set_link(&self, up: bool) {
        sh(&[
            "ip",
            "-n",
            &self.server,
            "link",
            "set",
            "veth1",
            if up { "up" } else { "down" },
        ]);
    }

    /// Drop `percent`% of the packets each end sends over the link (so about that much each
    /// way; loopback inside the namespaces is not affected).
    pub fn loss(&self, percent: u32) {
        for (ns, dev) in [(&self.agent, "veth0"), (&self.server, "veth1")] {
            let rules = format!(
                "table inet tendloss {{\n chain out {{ type filter hook output priority 0; policy accept; \
                 oifname \"{dev}\" numgen random mod 100 < {percent} drop; }}\n}}\n"
            );
            let mut child = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .expect("nft");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(rules.as_bytes())
                .expect("write rules");
            assert!(child.wait().expect("nft").success(), "nft rules in {ns}");
        }
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        self.git = None;
        for ns in [&self.agent, &self.server] {
            // Anything still running in the namespace (a daemon left by a failed test).
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Enter the network namespace `ns` on this thread (threads it spawns inherit it).
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("namespace file");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// A TCP fault server on its own thread: a delaying proxy or a black hole.
pub struct FaultServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Bytes forwarded client → server and server → client.
    pub up: Arc<AtomicU64>,
    pub down: Arc<AtomicU64>,
    /// Connections accepted.
    pub accepted: Arc<AtomicU64>,
}

impl FaultServer {
    /// Listen on `ip:0` (in `ns` when given). `target: None` makes a black hole that accepts
    /// connections and never answers; `Some(addr)` a proxy to `addr` that delays every byte by
    /// `delay` in each direction.
    pub fn start(
        ns: Option<&str>,
        ip: &str,
        target: Option<SocketAddr>,
        delay: Duration,
    ) -> FaultServer {
        FaultServer::spawn(ns, ip, target, delay, false)
    }

    /// A server that answers an HTTP request with a git advertisement that never ends: one byte
    /// every 300 ms, so no stall timeout ever fires.
    pub fn trickle(ip: &str) -> FaultServer {
        FaultServer::spawn(None, ip, None, Duration::ZERO, true)
    }

    fn spawn(
        ns: Option<&str>,
        ip: &str,
        target: Option<SocketAddr>,
        delay: Duration,
        trickle: bool,
    ) -> FaultServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (up, down, accepted) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (port_tx, port_rx) = mpsc::channel();
        let thread = {
            let (ns, ip, stop, up, down, accepted) = (
                ns.map(str::to_owned),
                ip.to_owned(),
                stop.clone(),
                up.clone(),
                down.clone(),
                accepted.clone(),
            );
            std::thread::spawn(move || {
                if let Some(ns) = &ns {
                    enter(ns);
                }
                let listener = TcpListener::bind((ip.as_str(), 0)).expect("bind fault server");
                listener.set_nonblocking(true).expect("nonblocking");
                let _ = port_tx.send(listener.local_addr().expect("addr").port());
                let mut held = Vec::new();
                let mut workers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let _ = client.set_nonblocking(false);
                            match target {
                                None if trickle => {
                                    let stop = stop.clone();
                                    workers.push(std::thread::spawn(move || drip(client, &stop)));
                                }
                                None => held.push(client),
                                Some(addr) => {
                                    let Ok(server) =
                                        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                                    else {
                                        continue;
                                    };
                                    workers.extend(pipe(&client, &server, delay, &stop, &up));
                                    workers.extend(pipe(&server, &client, delay, &stop, &down));
                                }
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                drop(held);
                for w in workers {
                    let _ = w.join();
                }
            })
        };
        let port = port_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("fault server port");
        FaultServer {
            port,
            stop,
            thread: Some(thread),
            up,
            down,
            accepted,
        }
    }
}

/// Read the request, then send headers and a pkt-line that announces 65,520 bytes and delivers
/// them one every 300 ms.
fn drip(mut client: TcpStream, stop: &AtomicBool) {
    let _ = client.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4096];
    let _ = client.read(&mut buf);
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n\
                Cache-Control: no-cache\r\n\r\nfff0";
    if client.write_all(head.as_bytes()).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(300));
        if client.write_all(b"a").is_err() {
            return;
        }
    }
}

/// Copy `from` → `to`, each chunk held back by `delay` (latency, not a bandwidth limit).
fn pipe(
    from: &TcpStream,
    to: &TcpStream,
    delay: Duration,
    stop: &Arc<AtomicBool>,
    count: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    let (Ok(mut reader), Ok(mut writer)) = (from.try_clone(), to.try_clone()) else {
        return Vec::new();
    };
    let _ = reader.set_read_timeout(Some(Duration::from_millis(100)));
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let stop_r = stop.clone();
    let read = std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while !stop_r.load(Ordering::Relaxed) {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send((Instant::now() + delay, Vec::new()));
    });
    let (stop_w, count) = (stop.clone(), count.clone());
    let write = std::thread::spawn(move || {
        while let Ok((due, data)) = rx.recv() {
            loop {
                let now = Instant::now();
                if now >= due || stop_w.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(100)));
            }
            if data.is_empty() || stop_w.load(Ordering::Relaxed) {
                let _ = writer.shutdown(std::net::Shutdown::Write);
                break;
            }
            if writer.write_all(&data).is_err() {
                break;
            }
            count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    });
    vec![read, write]
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A daemon (`tend run`) whose stderr goes to a file; SIGTERM and wait on drop.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(mut cmd: Command, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .arg("run")
            .env("TEND_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn tend run");
        Daemon { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Wait until `cond` holds, at most `limit`; returns how long it took.
pub fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}
