//! `tend`: wiring only. Parse arguments, set up logging, build the real adapters, run.

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use tend::cli::{self, Cli, Command};
use tend::{config, daemon, docker, logging, state};

fn main() -> ExitCode {
    let args = Cli::parse();
    logging::init();
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
                let agent_id = docker::agent_id(&cfg.paths.state);
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
                if once {
                    let report = agent.cycle(true).await;
                    tend::events::flush(hooks_timeout);
                    if let Some(p) = report.first_problem() {
                        anyhow::bail!("{p}");
                    }
                    Ok(ExitCode::SUCCESS)
                } else {
                    // Keep a sender alive for the life of the loop; trigger sources clone it.
                    let _triggers = tx;
                    agent.run_loop(rx).await?;
                    Ok(ExitCode::SUCCESS)
                }
            })
        }
        Command::Status { json } => {
            let cfg = config::Config::load(&args.config)?;
            let st = state::State::load(&cfg.state_file())?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &st).context("writing status")?;
                use std::io::Write;
                writeln!(out).context("writing status")?;
            } else {
                cli::render_status(&st, state::now(), None, &mut out).context("writing status")?;
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
            if !allow_rollback {
                anyhow::bail!("nothing to approve: use --allow-rollback REV to allow one rollback or force-push");
            }
            let cfg = config::Config::load(&args.config)?;
            let repo = tend::source::Repo::open(&cfg.repo_dir())?;
            let id = repo.resolve(&rev)?;
            let file = daemon::rollback_approval_file(&cfg);
            std::fs::write(&file, format!("{id}\n")).with_context(|| format!("cannot write {}", file.display()))?;
            println!("approved: commit {id} may be applied once although it does not descend from the applied commit");
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate { what } => {
            for f in cli::generate(&what).context("generating")? {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { dir, host, layers } => {
            let cfg = config::Config::load(&args.config).ok();
            let mut out = std::io::stdout().lock();
            cli::validate(cfg.as_ref(), dir, host, layers, &mut out).map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
