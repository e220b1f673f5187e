//! Alert hooks: each published [`Event`] is POSTed as JSON to `[hooks] url` and/or given on
//! stdin to `[hooks] command`, by a background thread. A delivery that fails (offline, server
//! down, command exits non-zero) is retried with exponential backoff (2 s doubling to 5 min),
//! in order, and each target gets each event once. The queue is kept in the state directory,
//! so events survive a restart, and holds at most [`QUEUE_MAX`] events (the oldest are dropped
//! and counted). Sending an event never blocks the loop.

use crate::config::Hooks as Config;
use crate::events::Event;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Events kept for delivery at most; older ones are dropped first.
pub const QUEUE_MAX: usize = 200;
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// An event and the targets that still have to get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    event: Event,
    http: bool,
    command: bool,
}

/// The handle the agent sends events to.
#[derive(Debug)]
pub struct Hooks {
    tx: mpsc::Sender<Event>,
    on: Vec<String>,
    progress: Arc<Progress>,
}

/// How far the worker has got, for [`Hooks::flush`].
#[derive(Debug, Default)]
struct Progress {
    /// Events sent to the worker.
    sent: AtomicU64,
    /// Events the worker has taken in and saved to the queue file.
    saved: AtomicU64,
    /// Events waiting for delivery.
    queued: AtomicUsize,
}

impl Hooks {
    /// Start the delivery thread; `queue_file` keeps undelivered events across restarts.
    pub fn start(cfg: Config, queue_file: PathBuf) -> Hooks {
        let (tx, rx) = mpsc::channel();
        let on = cfg.on.clone();
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let spawned = std::thread::Builder::new()
            .name("tend-hooks".into())
            .spawn(move || Worker::new(cfg, queue_file, p).run(rx));
        if let Err(e) = spawned {
            log::error!("cannot start the hook thread: {e}; hooks are off");
        }
        Hooks { tx, on, progress }
    }

    /// Queue `event` for delivery if `[hooks] on` lists its outcome. Never blocks.
    pub fn send(&self, event: &Event) {
        if self.on.contains(&event.outcome) && self.tx.send(event.clone()).is_ok() {
            self.progress.sent.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Before the process exits (`tend run --once`): wait until every event sent is saved in
    /// the queue file, and up to `limit` for the queue to be delivered. What is not delivered
    /// by then is delivered by the next `tend run`.
    pub fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let p = &self.progress;
        let settled = || p.saved.load(Ordering::SeqCst) >= p.sent.load(Ordering::SeqCst);
        while Instant::now() < deadline && !(settled() && p.queued.load(Ordering::SeqCst) == 0) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Worker {
    cfg: Config,
    queue_file: PathBuf,
    queue: VecDeque<Pending>,
    client: Option<reqwest::blocking::Client>,
    backoff: Duration,
    progress: Arc<Progress>,
}

impl Worker {
    fn new(cfg: Config, queue_file: PathBuf, progress: Arc<Progress>) -> Worker {
        let queue: VecDeque<Pending> = std::fs::read(&queue_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if !queue.is_empty() {
            log::info!("hooks: {} undelivered event(s) from before the restart", queue.len());
        }
        let client = cfg.url.as_ref().and_then(|_| {
            crate::tls::init();
            reqwest::blocking::Client::builder()
                .timeout(cfg.timeout)
                .user_agent(concat!("tend/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| log::error!("hooks: cannot build the HTTP client: {e}"))
                .ok()
        });
        Worker {
            cfg,
            queue_file,
            queue,
            client,
            backoff: BACKOFF_MIN,
            progress,
        }
    }

    fn push(&mut self, event: Event) {
        self.queue.push_back(Pending {
            event,
            http: self.cfg.url.is_some(),
            command: !self.cfg.command.is_empty(),
        });
        let mut dropped = 0;
        while self.queue.len() > QUEUE_MAX {
            self.queue.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            log::warn!("hooks: queue full, dropped {dropped} oldest event(s)");
        }
        self.progress.queued.store(self.queue.len(), Ordering::SeqCst);
        crate::metrics::global().hook_queue(self.queue.len(), dropped);
    }

    fn save(&self) {
        let result = if self.queue.is_empty() {
            match std::fs::remove_file(&self.queue_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            write_atomic(&self.queue_file, &serde_json::to_vec(&self.queue).unwrap_or_default())
        };
        if let Err(e) = result {
            log::warn!("hooks: cannot save the queue {}: {e}", self.queue_file.display());
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Event>) {
        let mut retry_at: Option<Instant> = None;
        loop {
            // Wait for a new event, or for the next retry.
            let got = match (self.queue.is_empty(), retry_at) {
                (true, _) => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                (false, Some(at)) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                (false, None) => rx.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
                }),
            };
            match got {
                Ok(event) => {
                    let mut n = 1;
                    self.push(event);
                    while let Ok(more) = rx.try_recv() {
                        self.push(more);
                        n += 1;
                    }
                    self.save();
                    self.progress.saved.fetch_add(n, Ordering::SeqCst);
                    if retry_at.is_some_and(|at| at > Instant::now()) {
                        continue;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The agent is stopping: what is left stays in the queue file.
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            retry_at = None;
            while let Some(front) = self.queue.front_mut() {
                let ok = deliver(&self.cfg, self.client.as_ref(), front);
                if !ok {
                    retry_at = Some(Instant::now() + self.backoff);
                    log::debug!("hooks: retrying in {}s", self.backoff.as_secs());
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    break;
                }
                self.backoff = BACKOFF_MIN;
                self.queue.pop_front();
                self.progress.queued.store(self.queue.len(), Ordering::SeqCst);
                crate::metrics::global().hook_queue(self.queue.len(), 0);
            }
            self.save();
        }
    }
}

/// Deliver `p` to every target that has not had it yet; true when none is left.
fn deliver(cfg: &Config, client: Option<&reqwest::blocking::Client>, p: &mut Pending) -> bool {
    if p.http {
        if let (Some(url), Some(client)) = (&cfg.url, client) {
            match post(client, url, &p.event) {
                Ok(()) => p.http = false,
                Err(e) => {
                    log::warn!(revision = short(&p.event.revision); "hook POST {}: {e}", crate::source::redact(url))
                }
            }
            crate::metrics::global().hook_delivery("http", !p.http);
        } else {
            p.http = false;
        }
    }
    if p.command {
        match run_command(&cfg.command, &p.event, cfg.timeout) {
            Ok(()) => p.command = false,
            Err(e) => log::warn!(revision = short(&p.event.revision); "hook command {}: {e}", cfg.command.join(" ")),
        }
        crate::metrics::global().hook_delivery("command", !p.command);
    }
    !p.http && !p.command
}

fn post(client: &reqwest::blocking::Client, url: &str, event: &Event) -> Result<(), String> {
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let resp = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .map_err(|e| crate::source::error_chain(&e))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("server answered {}", resp.status()))
    }
}

/// Run the hook command with the event as JSON on stdin and as `TEND_*` environment variables;
/// killed after `timeout`.
pub fn run_command(argv: &[String], event: &Event, timeout: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("no command")?;
    let mut child = Command::new(program)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("TEND_OUTCOME", &event.outcome)
        .env("TEND_HOST", &event.host)
        .env("TEND_REVISION", &event.revision)
        .env("TEND_SUBJECT", &event.subject)
        .env("TEND_MESSAGE", &event.message)
        .env("TEND_STEP", event.step.as_deref().unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let json = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(&json).and_then(|()| stdin.write_all(b"\n"));
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.by_ref().take(4096).read_to_string(&mut err);
                }
                let err = err.trim().replace('\n', " ");
                return Err(if err.is_empty() {
                    format!("{status}")
                } else {
                    format!("{status}: {err}")
                });
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;

    fn event(outcome: &str, rev: &str) -> Event {
        Event {
            outcome: outcome.into(),
            host: "edge-1".into(),
            revision: rev.into(),
            subject: "s".into(),
            step: None,
            message: "m".into(),
            signer: None,
            at: 1,
            duration_ms: 2,
        }
    }

    fn cfg(url: Option<String>, command: Vec<String>) -> Config {
        Config {
            url,
            command,
            timeout: Duration::from_secs(5),
            ..Config::default()
        }
    }

    /// Read one HTTP request from `listener`; answer `status`; return the body.
    fn serve_one(listener: &TcpListener, status: &str) -> String {
        let (stream, _) = listener.accept().expect("accept");
        let mut r = BufReader::new(stream.try_clone().expect("clone"));
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).expect("line");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).expect("body");
        let mut w = stream;
        write!(w, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("answer");
        String::from_utf8(body).expect("utf8")
    }

    #[test]
    fn http_failures_are_retried_in_order_and_survive_in_the_queue_file() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = dir.path().join("hooks-queue.json");
        let hooks = Hooks::start(cfg(Some(url), vec![]), queue.clone());
        hooks.send(&event("applied", "r1"));
        hooks.send(&event("refused", "r2"));
        // The first attempt fails (server error): the event is kept, in order, on disk too.
        let first = serve_one(&listener, "503 Service Unavailable");
        assert!(first.contains("\"revision\":\"r1\""), "{first}");
        let saved = || -> usize {
            std::fs::read(&queue)
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<Pending>>(&b).ok())
                .map_or(0, |q| q.len())
        };
        let start = Instant::now();
        while saved() != 2 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(saved(), 2, "both events kept on disk while undelivered");
        // The retry delivers r1 again, then r2; the queue file goes away.
        let again = serve_one(&listener, "200 OK");
        assert!(again.contains("\"revision\":\"r1\""), "{again}");
        let second = serve_one(&listener, "204 No Content");
        let json: serde_json::Value = serde_json::from_str(&second).expect("json body");
        assert_eq!(json["outcome"], "refused");
        assert_eq!(json["host"], "edge-1");
        let start = Instant::now();
        while queue.exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!queue.exists(), "queue file left after delivery");
    }

    #[test]
    fn outcomes_not_listed_are_not_sent() {
        let (tx, rx) = mpsc::channel();
        let hooks = Hooks {
            tx,
            on: vec!["refused".into()],
            progress: Arc::default(),
        };
        hooks.send(&event("applied", "a"));
        hooks.send(&event("refused", "b"));
        let got: Vec<Event> = rx.try_iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].revision, "b");
    }

    #[test]
    fn command_gets_the_event_on_stdin_and_in_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let script = format!("cat > {0}; echo \"$TEND_OUTCOME $TEND_REVISION\" >> {0}", out.display());
        let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), script];
        run_command(&argv, &event("drift-corrected", "abc"), Duration::from_secs(5)).expect("runs");
        let text = std::fs::read_to_string(&out).expect("output");
        assert!(text.contains("\"outcome\":\"drift-corrected\""), "{text}");
        assert!(text.ends_with("drift-corrected abc\n"), "{text}");
        let failing = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "echo nope >&2; exit 3".to_owned(),
        ];
        let e = run_command(&failing, &event("applied", "x"), Duration::from_secs(5)).expect_err("fails");
        assert!(e.contains("3") && e.contains("nope"), "{e}");
        let slow = vec!["/bin/sleep".to_owned(), "10".to_owned()];
        let t = Instant::now();
        let e = run_command(&slow, &event("applied", "x"), Duration::from_millis(300)).expect_err("killed");
        assert!(e.contains("killed"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_target_that_got_the_event_does_not_get_it_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let count = dir.path().join("count");
        let argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!("echo x >> {}", count.display()),
        ];
        // The URL refuses connections: http stays pending, the command is done after one run.
        let c = cfg(Some("http://127.0.0.1:9/".into()), argv);
        crate::tls::init();
        let client = reqwest::blocking::Client::new();
        let mut p = Pending {
            event: event("applied", "r"),
            http: true,
            command: true,
        };
        assert!(!deliver(&c, Some(&client), &mut p));
        assert!(p.http && !p.command);
        assert!(!deliver(&c, Some(&client), &mut p));
        assert_eq!(std::fs::read_to_string(&count).expect("count").lines().count(), 1);
    }
}
