//! Subcommands and their output. Commands write to an injected writer so they are testable.

use crate::config::Config;
use crate::desired::{self, DirTree, HostFacts};
use crate::state::State;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

/// Files, environment and service, for `tend --help` and the man page.
const AFTER_LONG_HELP: &str = "\
Files:
  /etc/tend/tend.toml  configuration (--config, $TEND_CONFIG)
  /etc/tend/           keys and trust anchors the config names
  /var/lib/tend/       state: bare repository, state.json, hooks queue
  /run/tend/           runtime (tmpfs): decrypted secrets, API socket

Environment:
  TEND_CONFIG          config file (default /etc/tend/tend.toml)
  TEND_LOG             error, warn, info (default), debug or trace
  SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, SOPS_AGE_SSH_PRIVATE_KEY_FILE
                       more age identities, as sops reads them

Service:
  systemctl enable --now tend   start the agent (tend.service)
  systemctl status tend         the applied revision on Status:
  journalctl -u tend TEND_RESOURCE=web
                       one service's story (TEND_REVISION, TEND_STEP)";

/// tend: pull-based GitOps for hosts without Kubernetes.
#[derive(Debug, Parser)]
#[command(
    name = "tend",
    version,
    about,
    long_about = "tend: pull-based GitOps for hosts without Kubernetes. It follows a Git repository, \
                  applies only commits signed by keys this host trusts, decrypts SOPS secrets in \
                  memory, and keeps the host's Docker containers as the repository declares, \
                  repairing drift, offline too.",
    after_long_help = AFTER_LONG_HELP
)]
pub struct Cli {
    /// Config file.
    #[arg(long, global = true, default_value = crate::config::DEFAULT_PATH, env = "TEND_CONFIG")]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: fetch, reconcile, and keep the host there.
    Run {
        /// One cycle, then exit (non-zero if anything went wrong).
        #[arg(long)]
        once: bool,
    },
    /// Show what tend is doing and why.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check that a commit is signed by a key this host trusts; prints the signer.
    Verify {
        /// Repository to read (default: the agent's own, from the config).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// SSH allowed-signers file (default: the config's).
        #[arg(long)]
        allowed_signers: Option<PathBuf>,
        /// Armored OpenPGP public keys (default: the config's).
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// Branch, tag or commit hash.
        rev: String,
    },
    /// Decrypt a SOPS file like `sops decrypt`: plaintext to stdout, nothing on failure.
    Decrypt {
        /// age identity file (X25519 keys or an SSH private key); repeatable. Also read:
        /// SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, SOPS_AGE_SSH_PRIVATE_KEY_FILE and the config's
        /// [secrets] age_identities.
        #[arg(long = "identity", short = 'i')]
        identities: Vec<PathBuf>,
        /// File format (default: from the file name, as sops does).
        #[arg(long, value_parser = ["yaml", "json", "dotenv", "ini", "binary"])]
        input_type: Option<String>,
        /// The encrypted file.
        file: PathBuf,
    },
    /// Approve a revision waiting in manual mode, or (with --allow-rollback) allow one revision
    /// that does not descend from the applied one.
    Approve {
        /// Allow applying REV although it does not descend from the applied commit (a rollback
        /// or a force-push). Used once.
        #[arg(long)]
        allow_rollback: bool,
        /// Branch, tag or commit hash, in the agent's repository.
        rev: String,
    },
    /// Run a cycle now.
    Sync {
        /// Wait for the cycle and print each step; exit with its result.
        #[arg(long)]
        wait: bool,
    },
    /// Stop applying changes (drift is still detected and reported).
    Suspend,
    /// Apply changes again.
    Resume,
    /// What the newest verified revision changes, per resource, and why.
    Diff {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The last revisions: outcome, signer, timing and reason.
    History {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Apply a `git bundle` file (offline updates: USB stick, copied file). Its commit is verified
    /// like a fetched one; the file is only read. Works with the network down. When the agent
    /// is running, the bundle is handed to it and the outcome awaited.
    Import {
        /// Seconds to wait for a running agent to take the bundle.
        #[arg(long, default_value_t = 300)]
        wait: u64,
        /// The bundle (`git bundle create FILE BRANCH`, or `APPLIED..BRANCH` for a small one).
        file: PathBuf,
    },
    /// Check a repository tree offline (for CI before merge); exits non-zero on errors.
    Validate {
        /// The repository checkout, a single layer directory, or a single compose file.
        dir: PathBuf,
        /// Host name for `{name}` in layers (default: from the config if readable, else ".").
        #[arg(long)]
        host: Option<String>,
        /// Layers to check, in order (default: the config's, or "." when no config is readable).
        #[arg(long = "layer")]
        layers: Vec<String>,
    },
    /// Write shell completions or man pages generated from this CLI (for packaging).
    #[command(hide = true)]
    Generate {
        /// What to write.
        #[command(subcommand)]
        what: Generate,
    },
}

/// `tend generate ...`.
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// bash, zsh and fish completions into DIR (`tend.bash`, `_tend`, `tend.fish`).
    Completions {
        /// Output directory (created).
        dir: PathBuf,
    },
    /// Man pages into DIR: tend.1 and one per subcommand (tend-run.1, ...).
    Man {
        /// Output directory (created).
        dir: PathBuf,
    },
}

/// `tend generate`: completions or man pages from the clap definition; returns the files.
pub fn generate(what: &Generate) -> std::io::Result<Vec<PathBuf>> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    match what {
        Generate::Completions { dir } => {
            std::fs::create_dir_all(dir)?;
            let mut written = Vec::new();
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                written.push(clap_complete::generate_to(shell, &mut Cli::command(), "tend", dir)?);
            }
            Ok(written)
        }
        Generate::Man { dir } => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(Cli::command(), dir)?;
            let mut written: Vec<PathBuf> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "1"))
                .collect();
            written.sort();
            Ok(written)
        }
    }
}

/// `tend validate`: load the desired state from a directory; print the services or the error.
pub fn validate(
    cfg: Option<&Config>,
    dir: PathBuf,
    host: Option<String>,
    layers: Vec<String>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let name = host
        .or_else(|| cfg.map(|c| c.host.name.clone()))
        .unwrap_or_else(|| "localhost".into());
    let layers = if !layers.is_empty() {
        layers.into_iter().map(|l| l.replace("{name}", &name)).collect()
    } else if let Some(c) = cfg {
        c.host.layers.clone()
    } else {
        vec![".".to_owned()]
    };
    let facts = HostFacts {
        name,
        project: cfg.map(|c| c.host.project.clone()).unwrap_or_else(|| "tend".into()),
    };
    // A single compose file (not a directory) is checked as the only layer.
    let d = if dir.is_file() {
        let tree = desired::FileTree::new(&dir);
        desired::load(&tree, &[".".to_owned()], &facts, desired::SecretsCtx::offline())
    } else {
        desired::load(&DirTree(dir), &layers, &facts, desired::SecretsCtx::offline())
    }
    .map_err(|e| e.to_string())?;
    for w in &d.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(
        out,
        "ok: project {} with {} service(s): {}; {} unit(s)",
        d.project,
        d.services.len(),
        d.start_order.join(", "),
        d.units.units.len()
    );
    // What a host with nothing of this project would do.
    let plan = crate::plan::plan(&d, &crate::plan::Observed::default(), &Default::default());
    let _ = writeln!(out, "plan on an empty host: {} step(s)", plan.steps.len());
    for s in &plan.steps {
        let _ = writeln!(out, "  {:<28} {}", crate::apply::describe(&s.action), s.reason);
    }
    Ok(())
}

/// `tend diff`.
pub fn render_diff(diff: Option<&crate::state::Diff>, out: &mut dyn Write) -> std::io::Result<()> {
    let Some(d) = diff else {
        return writeln!(out, "no revision planned yet");
    };
    if d.steps.is_empty() {
        return writeln!(out, "{}: no changes: the host matches this revision", short(&d.commit));
    }
    writeln!(out, "{}: {} change(s)", short(&d.commit), d.steps.len())?;
    for s in &d.steps {
        writeln!(out, "  {:<28} {}", crate::apply::describe(&s.action), s.reason)?;
    }
    Ok(())
}

/// `tend history`.
pub fn render_history(state: &State, now: i64, out: &mut dyn Write) -> std::io::Result<()> {
    if state.history.is_empty() {
        return writeln!(out, "no history yet");
    }
    for h in &state.history {
        writeln!(
            out,
            "{:>5} ago  {}  {:<15} {:>6}ms  \"{}\"{}",
            ago(now - h.at),
            short(&h.commit),
            h.outcome,
            h.duration_ms,
            h.subject,
            h.signer.as_ref().map(|s| format!(" signed by {s}")).unwrap_or_default()
        )?;
        if !h.message.is_empty() {
            writeln!(out, "                  {}", h.message)?;
        }
    }
    Ok(())
}

/// ", 412 ms (fetch 12 ms, load 3.1 ms, ...)": where the last cycle's time went, when known.
fn cycle_took(state: &State) -> String {
    let Some(total) = state.last_cycle_us else {
        return String::new();
    };
    let steps: Vec<String> = state
        .steps
        .iter()
        .filter_map(|s| s.duration_us.map(|us| format!("{} {}", s.step, micros(us))))
        .collect();
    if steps.is_empty() {
        format!(", {}", micros(total))
    } else {
        format!(", {} ({})", micros(total), steps.join(", "))
    }
}

/// Microseconds as "76 µs", "3.1 ms", "412 ms", "2.5 s".
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 10_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else if us < 1_000_000 {
        format!("{} ms", us / 1_000)
    } else {
        format!("{:.1} s", us as f64 / 1e6)
    }
}

/// A duration in seconds as "5s", "3m", "2h", "4d".
pub fn ago(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

/// The one screen an operator needs.
pub fn render_status(state: &State, now: i64, daemon_note: Option<&str>, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "tend on {}", if state.host.is_empty() { "?" } else { &state.host })?;
    if state.unverified {
        writeln!(
            out,
            "!! UNVERIFIED: [trust] allow_unsigned = true — commits are applied without checking any signature"
        )?;
    }
    if let Some(note) = daemon_note {
        writeln!(out, "  note: {note}")?;
    }
    let mode = match state.mode {
        Some(crate::config::Mode::Manual) => "manual (tend approve REV applies a planned revision)",
        _ => "auto",
    };
    if state.suspended {
        writeln!(
            out,
            "mode      {mode}; SUSPENDED: nothing is applied, drift is only reported (tend resume)"
        )?;
    } else {
        writeln!(out, "mode      {mode}")?;
    }
    let src = &state.source;
    writeln!(out, "source    {} (branch {})", src.url, src.branch)?;
    match (src.last_attempt, src.last_success) {
        (None, _) => writeln!(out, "  fetch   never attempted")?,
        (Some(_), Some(ok)) if src.last_error.is_none() => writeln!(
            out,
            "  fetch   ok {} ago, remote tip {}",
            ago(now - ok),
            src.remote_tip.as_deref().map(short).unwrap_or("?")
        )?,
        (Some(at), last_ok) => {
            writeln!(
                out,
                "  fetch   FAILED {} ago: {}",
                ago(now - at),
                src.last_error.as_deref().unwrap_or("unknown error")
            )?;
            match last_ok {
                Some(ok) => writeln!(out, "          last success {} ago", ago(now - ok))?,
                None => writeln!(out, "          never succeeded")?,
            }
        }
    }
    if let Some(via) = &src.via {
        if src.last_error.is_none() {
            writeln!(out, "  via     {via}")?;
        }
    }
    if let Some(next) = src.next_poll {
        if next >= now {
            writeln!(out, "  next    poll in {}", ago(next - now))?;
        }
    }
    let backing_off = src.sources.iter().any(|s| s.next_attempt.is_some_and(|t| t >= now));
    if src.sources.len() > 1 || backing_off {
        for s in &src.sources {
            render_remote(s, now, out)?;
        }
    }
    match &state.applied {
        Some(a) => writeln!(
            out,
            "applied   {} \"{}\" (committed {} ago, applied {} ago)",
            short(&a.commit.id),
            a.commit.subject,
            ago(now - a.commit.time),
            ago(now - a.applied_at)
        )?,
        None => writeln!(out, "applied   nothing yet")?,
    }
    if let Some(signer) = state.applied.as_ref().and_then(|a| a.signer.as_ref()) {
        writeln!(
            out,
            "  signed  by {} ({} key {})",
            signer.identity, signer.kind, signer.fingerprint
        )?;
    }
    if let Some(r) = &state.refused {
        writeln!(
            out,
            "REFUSED   {} \"{}\" since {} ago ({}): {}",
            short(&r.commit.id),
            r.commit.subject,
            ago(now - r.since),
            r.step,
            r.reason
        )?;
        if state.applied.is_some() {
            writeln!(out, "          the applied revision above keeps running")?;
        }
    }
    if let Some(p) = &state.pending {
        writeln!(
            out,
            "PENDING   {} \"{}\" waiting for approval since {} ago: tend approve {}",
            short(&p.commit.id),
            p.commit.subject,
            ago(now - p.since),
            short(&p.commit.id)
        )?;
    }
    if let Some(b) = &state.bad {
        writeln!(
            out,
            "BAD       {} \"{}\" rolled back {} ago: {} (waiting for a newer commit)",
            short(&b.commit.id),
            b.commit.subject,
            ago(now - b.since),
            b.reason
        )?;
    }
    if let Some(d) = &state.diff {
        if !d.steps.is_empty() {
            let what = if state.applied.as_ref().is_some_and(|a| a.commit.id == d.commit) {
                "drift"
            } else {
                "to apply"
            };
            writeln!(out, "{what:<9} {} change(s) (tend diff):", d.steps.len())?;
            for s in d.steps.iter().take(5) {
                writeln!(out, "  {:<28} {}", crate::apply::describe(&s.action), s.reason)?;
            }
        }
    }
    if state.containers.is_empty() {
        writeln!(out, "containers: none")?;
    } else {
        writeln!(out, "containers:")?;
        let rows: Vec<[String; 5]> = state
            .containers
            .iter()
            .map(|c| {
                [
                    c.service.clone(),
                    c.state.clone(),
                    c.name.clone(),
                    c.image.clone(),
                    c.status.clone(),
                ]
            })
            .collect();
        table(out, &["SERVICE", "STATE", "CONTAINER", "IMAGE", "STATUS"], &rows)?;
        for c in state.containers.iter().filter(|c| c.note.is_some()) {
            writeln!(out, "  ! {}: {}", c.service, c.note.as_deref().unwrap_or_default())?;
        }
    }
    if !state.files_owned.is_empty() {
        writeln!(out, "files     {} host file(s) owned", state.files_owned.len())?;
    }
    if !state.units.is_empty() {
        writeln!(out, "units:")?;
        let rows: Vec<[String; 5]> = state
            .units
            .iter()
            .map(|u| {
                [
                    u.name.clone(),
                    u.active.clone(),
                    u.sub.clone(),
                    u.file_state.clone(),
                    String::new(),
                ]
            })
            .collect();
        table(out, &["UNIT", "ACTIVE", "SUB", "FILE", ""], &rows)?;
        for u in state.units.iter().filter(|u| u.note.is_some()) {
            writeln!(out, "  ! {}", u.note.as_deref().unwrap_or_default())?;
            for line in u.journal.iter().rev().take(5).rev() {
                writeln!(out, "      | {line}")?;
            }
        }
    }
    for w in &state.warnings {
        writeln!(out, "warning   {w}")?;
    }
    if !state.bundles.is_empty() {
        writeln!(out, "bundles:")?;
        for b in state.bundles.iter().take(5) {
            let commit = b.commit.as_deref().map(short).unwrap_or("-");
            let when = ago(now - b.at);
            match b.outcome.as_str() {
                "applied" => writeln!(out, "  {}  applied {commit} {when} ago", b.file)?,
                "pending" => writeln!(out, "  {}  {commit} being applied", b.file)?,
                "already-applied" => writeln!(out, "  {}  {commit} already applied ({when} ago)", b.file)?,
                other => writeln!(
                    out,
                    "  {}  {} {when} ago: {} (file left as it is)",
                    b.file,
                    other.to_uppercase(),
                    b.reason.as_deref().unwrap_or("no reason recorded")
                )?,
            }
        }
    }
    match &state.last_error {
        Some(e) => writeln!(out, "last error {} ago in {}: {}", ago(now - e.at), e.step, e.message)?,
        None => {
            if let Some(c) = state.last_cycle {
                writeln!(out, "last cycle {} ago: ok{}", ago(now - c), cycle_took(state))?;
            }
        }
    }
    Ok(())
}

/// One source line: role, URL, last contact, last error, next attempt.
fn render_remote(s: &crate::state::RemoteStatus, now: i64, out: &mut dyn Write) -> std::io::Result<()> {
    let contact = match s.last_contact {
        Some(t) => format!("last contact {} ago", ago(now - t)),
        None => "never reached".into(),
    };
    let next = match s.next_attempt {
        Some(t) if t >= now => format!("next attempt in {}", ago(t - now)),
        _ => "next attempt at the next poll".into(),
    };
    match &s.last_error {
        None => writeln!(
            out,
            "  {:<7} {}: ok, {contact}, tip {}",
            s.role,
            s.url,
            s.tip.as_deref().map(short).unwrap_or("?")
        ),
        Some(e) => {
            let failures = if s.failures > 1 {
                format!(" ({} failures in a row)", s.failures)
            } else {
                String::new()
            };
            writeln!(out, "  {:<7} {}: FAILED{failures}: {e}", s.role, s.url)?;
            writeln!(out, "          {contact}; {next}")
        }
    }
}

fn table(out: &mut dyn Write, header: &[&str], rows: &[[String; 5]]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::CommitInfo;
    use crate::state::{Applied, ContainerStatus, LastError, Refused, SourceStatus};

    fn sample() -> State {
        State {
            version: 1,
            host: "edge-017".into(),
            source: SourceStatus {
                url: "https://git.example/fleet.git".into(),
                branch: "main".into(),
                last_attempt: Some(990),
                last_success: Some(990),
                last_error: None,
                remote_tip: Some("9f8e7d6c5b4a".into()),
                next_poll: Some(1050),
                ..SourceStatus::default()
            },
            applied: Some(Applied {
                commit: CommitInfo {
                    id: "1a2b3c4d5e6f".into(),
                    subject: "web: nginx 1.27".into(),
                    time: 400,
                },
                applied_at: 700,
                signer: Some(crate::trust::Signer {
                    kind: crate::trust::SignatureKind::Ssh,
                    identity: "ops@example.org".into(),
                    fingerprint: "SHA256:abc".into(),
                    signing_key: "SHA256:abc".into(),
                }),
            }),
            refused: Some(Refused {
                commit: CommitInfo {
                    id: "9f8e7d6c5b4a".into(),
                    subject: "oops".into(),
                    time: 900,
                },
                step: "load".into(),
                reason: "compose.yaml:3: service \"web\": key \"build\": not supported".into(),
                since: 950,
            }),
            last_error: Some(LastError {
                at: 990,
                step: "load".into(),
                message: "commit 9f8e7d6 refused".into(),
            }),
            last_cycle: Some(990),
            containers: vec![ContainerStatus {
                service: "web".into(),
                name: "tend-web-1".into(),
                id: "abc".into(),
                state: "running".into(),
                status: "Up 5 minutes".into(),
                image: "nginx:1.27".into(),
                note: None,
            }],
            ..State::default()
        }
    }

    #[test]
    fn status_snapshot() {
        let mut out = Vec::new();
        render_status(&sample(), 1000, None, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        let want = "\
tend on edge-017
mode      auto
source    https://git.example/fleet.git (branch main)
  fetch   ok 10s ago, remote tip 9f8e7d6
  next    poll in 50s
applied   1a2b3c4 \"web: nginx 1.27\" (committed 10m ago, applied 5m ago)
  signed  by ops@example.org (SSH key SHA256:abc)
REFUSED   9f8e7d6 \"oops\" since 50s ago (load): compose.yaml:3: service \"web\": key \"build\": not supported
          the applied revision above keeps running
containers:
  SERVICE  STATE    CONTAINER   IMAGE       STATUS
  web      running  tend-web-1  nginx:1.27  Up 5 minutes
last error 10s ago in load: commit 9f8e7d6 refused
";
        assert_eq!(text, want);
    }

    #[test]
    fn status_snapshot_manual_suspended_bad_units() {
        use crate::plan::{Action, Step};
        use crate::state::{Diff, Pending, UnitStatus};
        let mut st = sample();
        st.refused = None;
        st.last_error = None;
        st.mode = Some(crate::config::Mode::Manual);
        st.suspended = true;
        st.last_cycle_us = Some(1_412_000);
        let step = |name: &str, us| crate::state::StepCondition {
            step: name.into(),
            ok: true,
            message: None,
            duration_us: Some(us),
        };
        st.steps = vec![
            step("fetch", 12_345),
            step("verify", 76),
            step("apply", 1_234_000),
            step("health", 3_100),
        ];
        st.pending = Some(Pending {
            commit: CommitInfo {
                id: "5e5e5e5e5e".into(),
                subject: "web: 1.28".into(),
                time: 950,
            },
            since: 940,
            signer: None,
        });
        st.bad = Some(Refused {
            commit: CommitInfo {
                id: "badbadbad".into(),
                subject: "broken healthcheck".into(),
                time: 800,
            },
            step: "health".into(),
            reason: "web is unhealthy".into(),
            since: 900,
        });
        st.diff = Some(Diff {
            commit: "5e5e5e5e5e".into(),
            at: 990,
            steps: vec![Step {
                action: Action::Replace {
                    service: "web".into(),
                    container_id: "x".into(),
                },
                reason: "spec changed: image nginx:1.27 -> nginx:1.28".into(),
            }],
        });
        st.units = vec![
            UnitStatus {
                name: "agent.service".into(),
                active: "active".into(),
                sub: "running".into(),
                file_state: "enabled".into(),
                note: None,
                journal: vec![],
            },
            UnitStatus {
                name: "backup.service".into(),
                active: "failed".into(),
                sub: "failed".into(),
                file_state: "static".into(),
                note: Some("start backup.service failed (failed): unit is failed (failed)".into()),
                journal: vec!["backup: disk full".into()],
            },
        ];
        let mut out = Vec::new();
        render_status(&st, 1000, None, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        let want = "\
tend on edge-017
mode      manual (tend approve REV applies a planned revision); SUSPENDED: nothing is applied, drift is only reported (tend resume)
source    https://git.example/fleet.git (branch main)
  fetch   ok 10s ago, remote tip 9f8e7d6
  next    poll in 50s
applied   1a2b3c4 \"web: nginx 1.27\" (committed 10m ago, applied 5m ago)
  signed  by ops@example.org (SSH key SHA256:abc)
PENDING   5e5e5e5 \"web: 1.28\" waiting for approval since 60s ago: tend approve 5e5e5e5
BAD       badbadb \"broken healthcheck\" rolled back 100s ago: web is unhealthy (waiting for a newer commit)
to apply  1 change(s) (tend diff):
  replace web                  spec changed: image nginx:1.27 -> nginx:1.28
containers:
  SERVICE  STATE    CONTAINER   IMAGE       STATUS
  web      running  tend-web-1  nginx:1.27  Up 5 minutes
units:
  UNIT            ACTIVE  SUB      FILE
  agent.service   active  running  enabled
  backup.service  failed  failed   static
  ! start backup.service failed (failed): unit is failed (failed)
      | backup: disk full
last cycle 10s ago: ok, 1.4 s (fetch 12 ms, verify 76 µs, apply 1.2 s, health 3.1 ms)
";
        assert_eq!(text, want);
    }

    #[test]
    fn status_fresh_host_with_fetch_error() {
        let mut s = State {
            host: "h".into(),
            ..State::default()
        };
        s.source.last_attempt = Some(5);
        s.source.last_error = Some("fetch from x: connection refused".into());
        let mut out = Vec::new();
        render_status(&s, 10, Some("daemon not running; showing the state file"), &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("FAILED 5s ago: fetch from x: connection refused"),
            "{text}"
        );
        assert!(text.contains("never succeeded"), "{text}");
        assert!(text.contains("applied   nothing yet"), "{text}");
        assert!(text.contains("note: daemon not running"), "{text}");
        assert!(!text.contains("UNVERIFIED"), "{text}");
        s.unverified = true;
        let mut out = Vec::new();
        render_status(&s, 10, None, &mut out).expect("render");
        assert!(String::from_utf8_lossy(&out)
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("!! UNVERIFIED")));
    }

    #[test]
    fn completions_and_man_pages_come_from_the_cli() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = generate(&Generate::Completions {
            dir: dir.path().join("completions"),
        })
        .expect("completions");
        let names: Vec<String> = files
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, ["tend.bash", "_tend", "tend.fish"]);
        let bash = std::fs::read_to_string(&files[0]).expect("bash");
        assert!(bash.contains("validate") && bash.contains("--allow-rollback"), "{bash}");
        assert!(!bash.contains("tend__generate"), "hidden subcommand completed");
        let man = generate(&Generate::Man {
            dir: dir.path().join("man"),
        })
        .expect("man");
        let names: Vec<String> = man
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert!(names.contains(&"tend.1".to_owned()), "{names:?}");
        assert!(names.contains(&"tend-status.1".to_owned()), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        let page = std::fs::read_to_string(dir.path().join("man/tend.1")).expect("page");
        assert!(page.contains(".TH tend 1"), "{page}");
        assert!(page.contains("/etc/tend/tend.toml"), "FILES in the man page: {page}");
    }

    #[test]
    fn status_with_mirrors_and_bundles() {
        use crate::state::{BundleRecord, RemoteStatus};
        let mut s = sample();
        s.refused = None;
        s.last_error = None;
        s.source.via = Some("http://10.0.0.5/fleet.git".into());
        s.source.sources = vec![
            RemoteStatus {
                url: "https://git.example/fleet.git".into(),
                role: "primary".into(),
                last_attempt: Some(990),
                last_contact: Some(400),
                last_error: Some("fetch from https://git.example/fleet.git: connection timed out".into()),
                failures: 3,
                next_attempt: Some(1020),
                tip: Some("1a2b3c4d".into()),
                last_duration_ms: Some(2000),
                pack: false,
            },
            RemoteStatus {
                url: "http://10.0.0.5/fleet.git".into(),
                role: "mirror".into(),
                last_attempt: Some(990),
                last_contact: Some(990),
                last_error: None,
                failures: 0,
                next_attempt: None,
                tip: Some("9f8e7d6c5b4a".into()),
                last_duration_ms: Some(40),
                pack: true,
            },
        ];
        s.bundles = vec![
            BundleRecord {
                file: "/media/usb/bad.bundle".into(),
                size: 10,
                mtime_ns: 0,
                commit: Some("abcdef012345".into()),
                outcome: "refused".into(),
                reason: Some("commit abcdef0 refused: not signed".into()),
                at: 940,
            },
            BundleRecord {
                file: "/media/usb/fleet.bundle".into(),
                size: 10,
                mtime_ns: 0,
                commit: Some("1a2b3c4d5e6f".into()),
                outcome: "applied".into(),
                reason: None,
                at: 700,
            },
        ];
        let mut out = Vec::new();
        render_status(&s, 1000, None, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        let want = "\
tend on edge-017
mode      auto
source    https://git.example/fleet.git (branch main)
  fetch   ok 10s ago, remote tip 9f8e7d6
  via     http://10.0.0.5/fleet.git
  next    poll in 50s
  primary https://git.example/fleet.git: FAILED (3 failures in a row): fetch from https://git.example/fleet.git: connection timed out
          last contact 10m ago; next attempt in 20s
  mirror  http://10.0.0.5/fleet.git: ok, last contact 10s ago, tip 9f8e7d6
applied   1a2b3c4 \"web: nginx 1.27\" (committed 10m ago, applied 5m ago)
  signed  by ops@example.org (SSH key SHA256:abc)
containers:
  SERVICE  STATE    CONTAINER   IMAGE       STATUS
  web      running  tend-web-1  nginx:1.27  Up 5 minutes
bundles:
  /media/usb/bad.bundle  REFUSED 60s ago: commit abcdef0 refused: not signed (file left as it is)
  /media/usb/fleet.bundle  applied 1a2b3c4 5m ago
last cycle 10s ago: ok
";
        assert_eq!(text, want);
    }

    #[test]
    fn micros_units() {
        assert_eq!(micros(76), "76 µs");
        assert_eq!(micros(3_140), "3.1 ms");
        assert_eq!(micros(412_900), "412 ms");
        assert_eq!(micros(2_500_000), "2.5 s");
    }

    #[test]
    fn ago_units() {
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(300), "5m");
        assert_eq!(ago(10_800), "3h");
        assert_eq!(ago(400_000), "4d");
        assert_eq!(ago(-3), "0s");
    }
}
