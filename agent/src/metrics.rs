//! Prometheus metrics: a small registry fed by the daemon (cycle and step durations, outcomes)
//! and by the state after each cycle (applied revision, resources by state, source contact),
//! rendered in the Prometheus text format (0.0.4).
//!
//! Published three ways: [`render`] for the API socket's `GET /metrics`; a TCP listener when
//! `[metrics] listen` is set ([`bind`], [`serve`]); a node_exporter textfile when
//! `[metrics] textfile` is set (written atomically at the end of each cycle).

use crate::events::Event;
use crate::state::State;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds of the duration histograms, in seconds.
const BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Cumulative counts per bucket of [`BUCKETS`].
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// What the state said at the end of the last cycle.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    host: String,
    applied: Option<(String, i64, i64)>,
    refused: Option<(String, String, i64)>,
    /// `(kind, state)` -> count.
    resources: BTreeMap<(String, String), u64>,
    /// url -> (last attempt, last success, last attempt failed).
    sources: BTreeMap<String, (Option<i64>, Option<i64>, bool)>,
    last_cycle: Option<i64>,
    unverified: bool,
}

#[derive(Debug, Default)]
struct Inner {
    cycles: BTreeMap<&'static str, u64>,
    cycle_duration: Histogram,
    step_duration: BTreeMap<String, Histogram>,
    outcomes: BTreeMap<String, u64>,
    refusals: BTreeMap<String, u64>,
    drift_corrections: u64,
    hook_deliveries: BTreeMap<(String, &'static str), u64>,
    hook_dropped: u64,
    hook_queue: u64,
    snapshot: Snapshot,
}

/// A metrics registry. The agent uses [`global`]; tests make their own.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// A cycle ended after `took`; `ok` when it met no problem.
    pub fn cycle(&self, took: Duration, ok: bool) {
        self.with(|m| {
            *m.cycles.entry(if ok { "ok" } else { "problem" }).or_default() += 1;
            m.cycle_duration.observe(took.as_secs_f64());
        });
    }

    /// A step of a cycle (`fetch`, `verify`, `load`, `observe`, `apply`, ...) took `took`.
    pub fn step(&self, step: &str, took: Duration) {
        self.with(|m| {
            m.step_duration
                .entry(step.to_owned())
                .or_default()
                .observe(took.as_secs_f64())
        });
    }

    /// An outcome was published.
    pub fn outcome(&self, e: &Event) {
        self.with(|m| {
            *m.outcomes.entry(e.outcome.clone()).or_default() += 1;
            match e.outcome.as_str() {
                "refused" => *m.refusals.entry(e.step.clone().unwrap_or_default()).or_default() += 1,
                "drift-corrected" => m.drift_corrections += 1,
                _ => {}
            }
        });
    }

    /// A hook delivery attempt to `target` (`http`, `command`) succeeded or not.
    pub fn hook_delivery(&self, target: &str, ok: bool) {
        self.with(|m| {
            *m.hook_deliveries
                .entry((target.to_owned(), if ok { "ok" } else { "error" }))
                .or_default() += 1
        });
    }

    /// The hook queue now holds `len` events; `dropped` more were dropped because it was full.
    pub fn hook_queue(&self, len: usize, dropped: u64) {
        self.with(|m| {
            m.hook_queue = len as u64;
            m.hook_dropped += dropped;
        });
    }

    /// Take the gauges from the state (end of each cycle).
    pub fn update_from_state(&self, state: &State) {
        let mut resources: BTreeMap<(String, String), u64> = BTreeMap::new();
        for c in &state.containers {
            // "exited (1)" counts as "exited".
            let st = c.state.split(' ').next().unwrap_or_default().to_owned();
            *resources.entry(("container".into(), st)).or_default() += 1;
        }
        let src = &state.source;
        let mut sources = BTreeMap::new();
        if !src.url.is_empty() {
            sources.insert(
                src.url.clone(),
                (src.last_attempt, src.last_success, src.last_error.is_some()),
            );
        }
        let snap = Snapshot {
            host: state.host.clone(),
            applied: state
                .applied
                .as_ref()
                .map(|a| (a.commit.id.clone(), a.applied_at, a.commit.time)),
            refused: state
                .refused
                .as_ref()
                .map(|r| (r.commit.id.clone(), r.step.clone(), r.since)),
            resources,
            sources,
            last_cycle: state.last_cycle,
            unverified: state.unverified,
        };
        self.with(|m| m.snapshot = snap);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.with(|m| render_inner(m))
    }
}

fn render_inner(m: &Inner) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    let s = &m.snapshot;
    family(o, "tend_build_info", "gauge", "Version of the running tend.");
    sample(
        o,
        "tend_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("host", &s.host)],
        1.0,
    );

    family(
        o,
        "tend_applied_revision_info",
        "gauge",
        "The applied (last good) revision; absent before the first apply.",
    );
    if let Some((id, _, _)) = &s.applied {
        sample(
            o,
            "tend_applied_revision_info",
            &[("revision", id), ("short", &id[..id.len().min(7)])],
            1.0,
        );
    }
    family(
        o,
        "tend_applied_timestamp_seconds",
        "gauge",
        "When the applied revision was applied.",
    );
    family(
        o,
        "tend_applied_commit_timestamp_seconds",
        "gauge",
        "Commit time of the applied revision.",
    );
    if let Some((_, at, time)) = &s.applied {
        sample(o, "tend_applied_timestamp_seconds", &[], *at as f64);
        sample(o, "tend_applied_commit_timestamp_seconds", &[], *time as f64);
    }
    family(
        o,
        "tend_refused_revision_info",
        "gauge",
        "The newest refused revision and the step that refused it; absent when none.",
    );
    family(
        o,
        "tend_refused_since_timestamp_seconds",
        "gauge",
        "Since when the refused revision is refused.",
    );
    if let Some((id, step, since)) = &s.refused {
        sample(
            o,
            "tend_refused_revision_info",
            &[("revision", id), ("step", step)],
            1.0,
        );
        sample(o, "tend_refused_since_timestamp_seconds", &[], *since as f64);
    }
    family(
        o,
        "tend_unverified",
        "gauge",
        "1 when [trust] allow_unsigned is set: commits are applied without verification.",
    );
    sample(o, "tend_unverified", &[], if s.unverified { 1.0 } else { 0.0 });

    family(
        o,
        "tend_resources",
        "gauge",
        "Managed resources by kind and observed state.",
    );
    for ((kind, state), n) in &s.resources {
        sample(o, "tend_resources", &[("kind", kind), ("state", state)], *n as f64);
    }

    family(
        o,
        "tend_source_last_success_timestamp_seconds",
        "gauge",
        "Last successful contact with each source.",
    );
    for (url, (_, ok, _)) in &s.sources {
        if let Some(ok) = ok {
            sample(
                o,
                "tend_source_last_success_timestamp_seconds",
                &[("source", url)],
                *ok as f64,
            );
        }
    }
    family(
        o,
        "tend_source_last_attempt_timestamp_seconds",
        "gauge",
        "Last attempt to contact each source.",
    );
    for (url, (at, _, _)) in &s.sources {
        if let Some(at) = at {
            sample(
                o,
                "tend_source_last_attempt_timestamp_seconds",
                &[("source", url)],
                *at as f64,
            );
        }
    }
    family(
        o,
        "tend_source_up",
        "gauge",
        "1 when the last attempt to contact the source succeeded.",
    );
    for (url, (at, _, failed)) in &s.sources {
        if at.is_some() {
            sample(o, "tend_source_up", &[("source", url)], if *failed { 0.0 } else { 1.0 });
        }
    }

    family(o, "tend_cycles_total", "counter", "Cycles run, by result.");
    for (result, n) in &m.cycles {
        sample(o, "tend_cycles_total", &[("result", result)], *n as f64);
    }
    family(
        o,
        "tend_last_cycle_timestamp_seconds",
        "gauge",
        "When the last cycle ended.",
    );
    if let Some(t) = s.last_cycle {
        sample(o, "tend_last_cycle_timestamp_seconds", &[], t as f64);
    }
    family(
        o,
        "tend_cycle_duration_seconds",
        "histogram",
        "Duration of whole cycles.",
    );
    histogram(o, "tend_cycle_duration_seconds", &[], &m.cycle_duration);
    family(
        o,
        "tend_step_duration_seconds",
        "histogram",
        "Duration of the steps of a cycle.",
    );
    for (step, h) in &m.step_duration {
        histogram(o, "tend_step_duration_seconds", &[("step", step)], h);
    }

    family(
        o,
        "tend_outcomes_total",
        "counter",
        "Published outcomes: applied, refused, rolled-back, drift-corrected, failed.",
    );
    for (outcome, n) in &m.outcomes {
        sample(o, "tend_outcomes_total", &[("outcome", outcome)], *n as f64);
    }
    family(
        o,
        "tend_refusals_total",
        "counter",
        "Revisions refused, by the step that refused them.",
    );
    for (step, n) in &m.refusals {
        sample(o, "tend_refusals_total", &[("step", step)], *n as f64);
    }
    family(
        o,
        "tend_drift_corrections_total",
        "counter",
        "Cycles that put the host back to the applied revision.",
    );
    sample(o, "tend_drift_corrections_total", &[], m.drift_corrections as f64);

    family(
        o,
        "tend_hook_deliveries_total",
        "counter",
        "Hook delivery attempts, by target and result.",
    );
    for ((target, result), n) in &m.hook_deliveries {
        sample(
            o,
            "tend_hook_deliveries_total",
            &[("target", target), ("result", result)],
            *n as f64,
        );
    }
    family(
        o,
        "tend_hook_queue_length",
        "gauge",
        "Events waiting for delivery to the hooks.",
    );
    sample(o, "tend_hook_queue_length", &[], m.hook_queue as f64);
    family(
        o,
        "tend_hook_dropped_total",
        "counter",
        "Events dropped because the hook queue was full.",
    );
    sample(o, "tend_hook_dropped_total", &[], m.hook_dropped as f64);
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let bucket = format!("{name}_bucket");
    for (i, le) in BUCKETS.iter().enumerate() {
        let le = number(*le);
        let mut l = labels.to_vec();
        l.push(("le", &le));
        sample(out, &bucket, &l, h.buckets[i] as f64);
    }
    let mut l = labels.to_vec();
    l.push(("le", "+Inf"));
    sample(out, &bucket, &l, h.count as f64);
    sample(out, &format!("{name}_sum"), labels, h.sum);
    sample(out, &format!("{name}_count"), labels, h.count as f64);
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The agent's registry.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}

/// The agent's metrics in the Prometheus text format ([`CONTENT_TYPE`]): what `GET /metrics`
/// answers, on the API socket and on `[metrics] listen`.
pub fn render() -> String {
    global().render()
}

static TEXTFILE: OnceLock<PathBuf> = OnceLock::new();

/// Where the metrics go besides the API socket (from `[metrics]`). Once, at start.
pub fn configure(cfg: &crate::config::Metrics) {
    if let Some(p) = &cfg.textfile {
        let _ = TEXTFILE.set(p.clone());
    }
}

/// End of a cycle: count it, take the gauges from `state`, and write the textfile if configured.
pub fn cycle_finished(state: &State, took: Duration, ok: bool) {
    let reg = global();
    reg.cycle(took, ok);
    reg.update_from_state(state);
    if let Some(path) = TEXTFILE.get() {
        if let Err(e) = write_textfile(path, &reg.render()) {
            log::warn!("cannot write metrics textfile {}: {e}", path.display());
        }
    }
}

/// Write `text` to `path` atomically (a temp file that node_exporter ignores, then rename),
/// readable by node_exporter's user (0644) whatever the umask.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("prom.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Bind the `[metrics] listen` address (at start, so a bad address stops `tend run` at once).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Answer `GET /metrics` on `listener` until the process ends: a minimal HTTP/1.1 responder, one
/// request per connection.
pub async fn serve(listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream)).await;
                });
            }
            Err(e) => {
                log::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn answer(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let (status, ctype, body) = respond(head.lines().next().unwrap_or_default());
    let head_only = head.starts_with("HEAD ");
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        resp.push_str(&body);
    }
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

/// Status, content type and body for a request line.
fn respond(request_line: &str) -> (&'static str, &'static str, String) {
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", CONTENT_TYPE, render()),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "tend serves only /metrics here\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "use GET /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::CommitInfo;
    use crate::state::{Applied, ContainerStatus, HistoryEntry, Refused};

    fn container(service: &str, state: &str) -> ContainerStatus {
        ContainerStatus {
            service: service.into(),
            name: format!("p-{service}-1"),
            id: "abc".into(),
            state: state.into(),
            status: String::new(),
            image: "i".into(),
            note: None,
        }
    }

    fn event(outcome: &str, step: Option<&str>) -> Event {
        let entry = HistoryEntry {
            at: 1,
            commit: "c".into(),
            subject: String::new(),
            outcome: outcome.into(),
            message: String::new(),
            signer: None,
            duration_ms: 0,
        };
        Event::from_history("h", &entry, step)
    }

    #[test]
    fn renders_state_outcomes_and_durations() {
        let reg = Registry::default();
        let mut st = State {
            host: "edge-017".into(),
            ..State::default()
        };
        st.source.url = "https://git.example/fleet.git".into();
        st.source.last_attempt = Some(200);
        st.source.last_success = Some(190);
        st.source.last_error = Some("timeout".into());
        st.applied = Some(Applied {
            commit: CommitInfo {
                id: "1a2b3c4d5e6f7a8b".into(),
                subject: "s".into(),
                time: 100,
            },
            applied_at: 150,
            signer: None,
        });
        st.refused = Some(Refused {
            commit: CommitInfo {
                id: "ffff".into(),
                subject: "bad \"quote\"".into(),
                time: 160,
            },
            step: "verify".into(),
            reason: "unknown key".into(),
            since: 170,
        });
        st.containers = vec![
            container("web", "running"),
            container("db", "running"),
            container("job", "exited (1)"),
        ];
        st.last_cycle = Some(200);
        reg.update_from_state(&st);
        reg.cycle(Duration::from_millis(300), true);
        reg.cycle(Duration::from_secs(2), false);
        reg.step("fetch", Duration::from_millis(40));
        reg.outcome(&event("refused", Some("verify")));
        reg.outcome(&event("drift-corrected", None));
        reg.outcome(&event("drift-corrected", None));
        let text = reg.render();
        for line in [
            "tend_build_info{version=\"",
            "tend_applied_revision_info{revision=\"1a2b3c4d5e6f7a8b\",short=\"1a2b3c4\"} 1",
            "tend_applied_timestamp_seconds 150",
            "tend_refused_revision_info{revision=\"ffff\",step=\"verify\"} 1",
            "tend_resources{kind=\"container\",state=\"exited\"} 1",
            "tend_resources{kind=\"container\",state=\"running\"} 2",
            "tend_source_last_success_timestamp_seconds{source=\"https://git.example/fleet.git\"} 190",
            "tend_source_up{source=\"https://git.example/fleet.git\"} 0",
            "tend_cycles_total{result=\"ok\"} 1",
            "tend_cycles_total{result=\"problem\"} 1",
            "tend_cycle_duration_seconds_bucket{le=\"0.25\"} 0",
            "tend_cycle_duration_seconds_bucket{le=\"0.5\"} 1",
            "tend_cycle_duration_seconds_bucket{le=\"+Inf\"} 2",
            "tend_cycle_duration_seconds_sum 2.3",
            "tend_cycle_duration_seconds_count 2",
            "tend_step_duration_seconds_bucket{step=\"fetch\",le=\"0.05\"} 1",
            "tend_refusals_total{step=\"verify\"} 1",
            "tend_drift_corrections_total 2",
            "tend_outcomes_total{outcome=\"drift-corrected\"} 2",
            "tend_last_cycle_timestamp_seconds 200",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Every sample belongs to a family declared just before it, and parses.
        let mut declared = std::collections::BTreeSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap_or_default().to_owned());
                continue;
            }
            if l.starts_with('#') {
                continue;
            }
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .filter(|b| declared.contains(*b))
                .unwrap_or(name);
            assert!(declared.contains(base), "undeclared {name} in {l}");
            let value = l.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad value in {l}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = String::new();
        sample(&mut out, "m", &[("k", "x\"y")], 1.5);
        assert_eq!(out, "m{k=\"x\\\"y\"} 1.5\n");
    }

    #[test]
    fn textfile_is_replaced_atomically_and_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tend.prom");
        write_textfile(&path, "a 1\n").expect("write");
        write_textfile(&path, "a 2\n").expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a 2\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn responder_serves_only_metrics() {
        assert_eq!(respond("GET /metrics HTTP/1.1").0, "200 OK");
        assert_eq!(respond("GET /metrics?x=1 HTTP/1.1").1, CONTENT_TYPE);
        assert_eq!(respond("GET / HTTP/1.1").0, "404 Not Found");
        assert_eq!(respond("POST /metrics HTTP/1.1").0, "405 Method Not Allowed");
    }

    #[tokio::test]
    async fn tcp_listener_answers_get_metrics() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener));
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.expect("read");
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("# TYPE tend_cycles_total counter"), "{resp}");
    }
}
