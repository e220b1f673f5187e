//! `tend`: wiring only. Parse arguments, set up logging, build the real adapters, run.

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use tend::cli::{self, Cli, Command};
use tend::{config, daemon, docker, logging, state};

fn main() -> ExitCode {
    let args = Cli::parse();
    logging::init();
    tend::tls::init();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            // One clear line: the whole chain, outermost first.
            eprintln!("tend: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Keep plaintext secrets out of core dumps: no dumps at all, and not ptrace-attachable by
/// other users.
fn no_core_dumps() {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let _ = nix::sys::prctl::set_dumpable(false);
}

/// The daemon's state through the API, or the state file when the daemon is down (and a note
/// saying so).
fn read_state(cfg: &config::Config) -> anyhow::Result<(state::State, Option<String>)> {
    match tend::api::request(&cfg.socket(), "GET", "/v1/status") {
        Ok((200, body)) => Ok((
            serde_json::from_str(&body).context("the daemon's status is not valid JSON")?,
            None,
        )),
        Ok((403, _)) => anyhow::bail!("permission denied: tend status needs root or membership in the tend group"),
        _ => Ok((
            state::State::load(&cfg.state_file())?,
            Some("the daemon is not running: showing the last saved state".into()),
        )),
    }
}

fn run(args: Cli) -> anyhow::Result<ExitCode> {
    if matches!(args.command, Command::Run { .. } | Command::Decrypt { .. }) {
        no_core_dumps();
    }
    match args.command {
        Command::Run { once } => {
            let cfg = config::Config::load(&args.config)?;
            std::fs::create_dir_all(&cfg.paths.state)
                .with_context(|| format!("cannot create state dir {}", cfg.paths.state.display()))?;
            let _lock = state::Lock::acquire(&cfg.paths.state)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                let agent_id = docker::agent_id(&cfg.host.name, &cfg.paths.state);
                let socket = cfg.socket();
                let roots = docker::Roots {
                    files: cfg.files_dir(),
                    data: cfg.data_dir(),
                    secrets: cfg.secrets_dir(),
                };
                let mut engine = docker::DockerEngine::connect(cfg.docker.socket.as_deref(), &agent_id, roots).await?;
                if let Some(path) = &cfg.docker.registry_auth {
                    engine = engine.with_credentials(docker::load_credentials(path).map_err(anyhow::Error::msg)?);
                }
                let (tx, rx) = tokio::sync::mpsc::channel(64);
                if !once {
                    engine.spawn_event_watch(tx.clone());
                }
                tend::events::init(&cfg);
                let hooks_timeout = cfg.hooks.timeout;
                if let (false, Some(addr)) = (once, cfg.metrics.listen) {
                    let listener = tend::metrics::bind(addr)
                        .await
                        .with_context(|| format!("[metrics] listen = \"{addr}\": cannot listen"))?;
                    tokio::spawn(tend::metrics::serve(listener));
                }
                let mut agent = daemon::Agent::new(cfg, engine)?;
                if !once {
                    agent.sources_mut().set_triggers(tx.clone());
                    tend::sources::spawn_inbox_watch(agent.sources_mut().watch_dirs(), tx.clone());
                }
                if once {
                    let report = agent.cycle(true).await;
                    tend::events::flush(hooks_timeout);
                    if let Some(p) = report.first_problem() {
                        anyhow::bail!("{p}");
                    }
                    Ok(ExitCode::SUCCESS)
                } else {
                    let shared: tend::api::Shared = Default::default();
                    agent.share(shared.clone());
                    let listener = tend::api::bind(&socket)?;
                    tend::api::spawn(listener, shared, tx.clone());
                    // Keep a sender alive for the life of the loop; trigger sources clone it.
                    let _triggers = tx;
                    agent.run_loop(rx).await?;
                    Ok(ExitCode::SUCCESS)
                }
            })
        }
        Command::Status { json } => {
            let cfg = config::Config::load(&args.config)?;
            let (st, note) = read_state(&cfg)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &st).context("writing status")?;
                use std::io::Write;
                writeln!(out).context("writing status")?;
            } else {
                cli::render_status(&st, state::now(), note.as_deref(), &mut out).context("writing status")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { json } => {
            let cfg = config::Config::load(&args.config)?;
            let (st, _) = read_state(&cfg)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &st.history).context("writing history")?;
                println!();
            } else {
                cli::render_history(&st, state::now(), &mut out).context("writing history")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { json } => {
            let cfg = config::Config::load(&args.config)?;
            let (st, _) = read_state(&cfg)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &st.diff).context("writing diff")?;
                println!();
            } else {
                cli::render_diff(st.diff.as_ref(), &mut out).context("writing diff")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { wait } => {
            let cfg = config::Config::load(&args.config)?;
            let target = if wait { "/v1/sync?wait=1" } else { "/v1/sync" };
            let (code, body) = tend::api::request(&cfg.socket(), "POST", target).map_err(|e| {
                anyhow::anyhow!(
                    "the daemon is not running ({}: {e}); use `tend run --once` instead",
                    cfg.socket().display()
                )
            })?;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if code == 403 {
                anyhow::bail!("{}", v["error"].as_str().unwrap_or("forbidden"));
            }
            if !wait {
                println!("sync requested");
                return Ok(ExitCode::SUCCESS);
            }
            for s in v["steps"].as_array().into_iter().flatten() {
                let mark = if s["ok"] == true { "ok" } else { "FAILED" };
                let took = s["duration_us"]
                    .as_u64()
                    .map(|us| format!(" ({})", cli::micros(us)))
                    .unwrap_or_default();
                println!(
                    "{:<8} {mark}{took}{}",
                    s["step"].as_str().unwrap_or_default(),
                    s["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default()
                );
            }
            let took = v["cycle_us"]
                .as_u64()
                .map(|us| format!(" in a {} cycle", cli::micros(us)))
                .unwrap_or_default();
            println!("{} change(s) applied{took}", v["changes"].as_u64().unwrap_or(0));
            if v["ok"] == true {
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Suspend | Command::Resume => {
            let cfg = config::Config::load(&args.config)?;
            let suspend = matches!(args.command, Command::Suspend);
            let path = if suspend { "/v1/suspend" } else { "/v1/resume" };
            match tend::api::request(&cfg.socket(), "POST", path) {
                Ok((code, body)) => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    if code != 200 {
                        anyhow::bail!("{}", v["error"].as_str().unwrap_or("refused"));
                    }
                    println!("{}", v["message"].as_str().unwrap_or_default());
                }
                Err(_) => {
                    // The daemon is down: the intent is a file it reads when it starts.
                    if suspend {
                        std::fs::write(cfg.suspend_file(), b"suspended\n")
                            .with_context(|| format!("cannot write {}", cfg.suspend_file().display()))?;
                        println!("suspended (the daemon is not running; it will start suspended)");
                    } else {
                        let _ = std::fs::remove_file(cfg.suspend_file());
                        println!("resumed (the daemon is not running)");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            repo,
            allowed_signers,
            keyring,
            rev,
        } => {
            let cfg = config::Config::load(&args.config);
            let repo_path = match (&repo, &cfg) {
                (Some(r), _) => r.clone(),
                (None, Ok(c)) => c.repo_dir(),
                (None, Err(e)) => anyhow::bail!("no --repo given and {e}"),
            };
            let (signers, keys) = if allowed_signers.is_some() || keyring.is_some() {
                (allowed_signers, keyring)
            } else {
                match &cfg {
                    Ok(c) => (c.trust.allowed_signers.clone(), c.trust.openpgp_keys.clone()),
                    Err(e) => anyhow::bail!("no --allowed-signers/--keyring given and {e}"),
                }
            };
            let store = tend::trust::TrustStore::load(signers.as_deref(), keys.as_deref())?;
            let repo = tend::source::Repo::open(&repo_path)?;
            let id = repo.resolve(&rev)?;
            use tend::trust::CommitSource;
            let raw = repo.raw_commit(&id)?;
            let signer = store.verify_commit(&id, &raw)?;
            println!(
                "{id}: good {} signature by {} (key {})",
                signer.kind, signer.identity, signer.fingerprint
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Decrypt {
            identities,
            input_type,
            file,
        } => {
            use std::io::Write;
            use tend::secrets::{Format, Identities};
            let mut ids = Identities::load(&identities)?;
            ids.merge(Identities::from_env()?);
            if let Ok(cfg) = config::Config::load(&args.config) {
                // The host's own identities, when this runs on an agent's host.
                if let Ok(host_ids) = Identities::load(&cfg.secrets.age_identities) {
                    ids.merge(host_ids);
                }
            }
            let format = match input_type.as_deref() {
                Some(name) => Format::from_name(name).context("unknown --input-type")?,
                None => Format::from_path(&file),
            };
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let doc = tend::secrets::decrypt(&file.display().to_string(), &bytes, format, &ids)?;
            let plain = doc.to_bytes()?;
            let mut out = std::io::stdout().lock();
            out.write_all(&plain)
                .and_then(|()| out.flush())
                .context("writing to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve { allow_rollback, rev } => {
            let cfg = config::Config::load(&args.config)?;
            let target = format!(
                "/v1/approve?rev={rev}&allow_rollback={}",
                if allow_rollback { 1 } else { 0 }
            );
            if let Ok((code, body)) = tend::api::request(&cfg.socket(), "POST", &target) {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if code != 200 {
                    anyhow::bail!("{}", v["error"].as_str().unwrap_or("refused"));
                }
                println!("{}", v["message"].as_str().unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            // The daemon is down: record the approval where it will find it.
            let repo = tend::source::Repo::open(&cfg.repo_dir())?;
            let id = repo.resolve(&rev)?;
            let file = if allow_rollback {
                daemon::rollback_approval_file(&cfg)
            } else {
                cfg.approval_file()
            };
            std::fs::write(&file, format!("{id}\n")).with_context(|| format!("cannot write {}", file.display()))?;
            if allow_rollback {
                println!(
                    "approved: commit {id} may be applied once although it does not descend from the applied commit"
                );
            } else {
                println!("approved: commit {id} will be applied by the next cycle");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate { what } => {
            for f in cli::generate(&what).context("generating")? {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { wait, file } => import(&args.config, &file, wait),
        Command::Validate { dir, host, layers } => {
            let cfg = config::Config::load(&args.config).ok();
            let mut out = std::io::stdout().lock();
            cli::validate(cfg.as_ref(), dir, host, layers, &mut out).map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `tend import FILE`: run one offline cycle with the bundle when no agent runs; otherwise hand
/// the bundle to the running agent (through its spool directory) and wait for the outcome.
fn import(config: &std::path::Path, file: &std::path::Path, wait: u64) -> anyhow::Result<ExitCode> {
    let cfg = config::Config::load(config)?;
    let file = std::path::absolute(file).with_context(|| format!("bundle {}", file.display()))?;
    // Read the header now: a file that is not a bundle is refused before anything else.
    tend::bundle::read_header_file(&file)?;
    std::fs::create_dir_all(&cfg.paths.state)
        .with_context(|| format!("cannot create state dir {}", cfg.paths.state.display()))?;
    match state::Lock::acquire(&cfg.paths.state) {
        Ok(_lock) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                let agent_id = docker::agent_id(&cfg.host.name, &cfg.paths.state);
                let roots = docker::Roots {
                    files: cfg.files_dir(),
                    data: cfg.data_dir(),
                    secrets: cfg.secrets_dir(),
                };
                let mut engine = docker::DockerEngine::connect(cfg.docker.socket.as_deref(), &agent_id, roots).await?;
                if let Some(path) = &cfg.docker.registry_auth {
                    engine = engine.with_credentials(docker::load_credentials(path).map_err(anyhow::Error::msg)?);
                }
                let mut agent = daemon::Agent::new(cfg, engine)?;
                agent.sources_mut().import_only(file.clone());
                let report = agent.cycle(true).await;
                let name = file.display().to_string();
                match bundle_outcome(agent.state(), &name, &file) {
                    Some(Err(e)) => Err(e),
                    Some(Ok(code)) => match report.first_problem() {
                        Some(p) => anyhow::bail!("{p}"),
                        None => Ok(code),
                    },
                    None => match report.first_problem() {
                        Some(p) => anyhow::bail!("{p}"),
                        None => anyhow::bail!("bundle {name}: no outcome recorded"),
                    },
                }
            })
        }
        Err(state::Error::Locked { .. }) => {
            // A running agent: hand the bundle over through its spool directory.
            let spool = tend::sources::spool_dir(&cfg);
            std::fs::create_dir_all(&spool).with_context(|| format!("cannot create {}", spool.display()))?;
            let base = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "import".into());
            let target = spool.join(format!("{}-{base}.bundle", std::process::id()));
            let tmp = spool.join(format!(".{}-{base}.tmp", std::process::id()));
            std::fs::copy(&file, &tmp)
                .with_context(|| format!("cannot copy {} to {}", file.display(), tmp.display()))?;
            std::fs::rename(&tmp, &target).with_context(|| format!("cannot move {} into place", tmp.display()))?;
            let name = target.display().to_string();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
            loop {
                if let Ok(st) = state::State::load(&cfg.state_file()) {
                    if let Some(result) = bundle_outcome(&st, &name, &file) {
                        return result;
                    }
                }
                if std::time::Instant::now() > deadline {
                    anyhow::bail!(
                        "the running agent did not take bundle {} within {wait}s; it stays queued as {name}",
                        file.display()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The recorded outcome of bundle `name` (as the agent saw it; `file` is what the user gave).
fn bundle_outcome(st: &state::State, name: &str, file: &std::path::Path) -> Option<anyhow::Result<ExitCode>> {
    let rec = st.bundles.iter().find(|b| b.file == name && b.outcome != "pending")?;
    let commit = rec.commit.as_deref().map(|c| &c[..c.len().min(7)]).unwrap_or("?");
    Some(match rec.outcome.as_str() {
        "applied" => {
            println!("imported {}: commit {commit} applied", file.display());
            Ok(ExitCode::SUCCESS)
        }
        "already-applied" => {
            println!(
                "imported {}: commit {commit} is already part of the applied history; nothing to do",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        other => Err(anyhow::anyhow!(
            "bundle {} {other}: {}",
            file.display(),
            rec.reason.as_deref().unwrap_or("no reason recorded")
        )),
    })
}
