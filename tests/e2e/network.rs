//! Intermittent connectivity, for real: a silent server, a dead primary with a live mirror,
//! a link that goes down, flaps and comes back, 30% packet loss with 2 s of latency, HTTPS
//! credentials, and offline bundles with the network down.

use crate::netfault::*;
use crate::support::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Two services that stop at once (SIGKILL), so a change is applied in about a second; `rev`
/// changes one of them.
fn quick_services(rev: &str) -> String {
    let image = &testbed().image;
    format!(
        "services:\n  app:\n    image: {image}\n    command: [\"sleep\", \"100000\"]\n    stop_signal: SIGKILL\n    \
         environment: [\"REV={rev}\"]\n  side:\n    image: {image}\n    command: [\"sleep\", \"100000\"]\n    \
         stop_signal: SIGKILL\n"
    )
}

fn state_of(agent: &Agent) -> serde_json::Value {
    std::fs::read_to_string(agent.dir.path().join("state/state.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn applied(agent: &Agent) -> Option<String> {
    state_of(agent)["applied"]["id"].as_str().map(str::to_owned)
}

/// All `count` containers of the agent's project run, and `app` (the service every change in
/// these tests touches) carries revision `rev`.
fn all_at(agent: &Agent, rev: &str, count: usize) -> bool {
    let out = run_ok(Command::new("docker").args([
        "ps",
        "-a",
        "--filter",
        &format!("label=io.tend.project={}", agent.project),
        "--format",
        "{{.State}} {{.Label \"io.tend.service\"}} {{.Label \"io.tend.revision\"}}",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    lines.len() == count
        && lines.iter().all(|l| l.starts_with("running "))
        && lines.iter().any(|l| *l == format!("running app {rev}"))
}

/// The agent's bare repository is complete and consistent (no half-written pack, no dangling
/// ref), as `git fsck` sees it.
fn assert_repo_sound(agent: &Agent) {
    let repo = agent.dir.path().join("state/repo.git");
    run_ok(Command::new("git").arg("-C").arg(&repo).args([
        "fsck",
        "--connectivity-only",
        "--no-dangling",
    ]));
    let leftovers: Vec<_> = std::fs::read_dir(repo.join("objects/pack"))
        .expect("pack dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !(n.ends_with(".pack") || n.ends_with(".idx") || n.ends_with(".rev")))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left in the pack dir: {leftovers:?}"
    );
}

fn set_poll_and_drift(agent: &Agent, poll: &str, drift: &str) {
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        cfg.replace(
            "poll_interval = \"2s\"",
            &format!("poll_interval = \"{poll}\""),
        )
        .replace(
            "[apply]\n",
            &format!("[apply]\ndrift_interval = \"{drift}\"\n"),
        ),
    )
    .expect("config");
}

#[test]
fn a_silent_primary_times_out_and_the_mirror_wins() {
    let repo = GitRepo::new("mirror");
    repo.write("compose.yaml", &quick_services("1"));
    let head = repo.commit("c1");
    // Accepts connections, never sends a byte.
    let hole = FaultServer::start(None, "127.0.0.1", None, Duration::ZERO);
    let primary = format!("http://127.0.0.1:{}/git/{}.git", hole.port, repo.name);
    let agent = Agent::new(
        &primary,
        &format!(
            "mirrors = [\"{}\"]\nconnect_timeout = \"2s\"\nstall_timeout = \"2s\"",
            repo.http_url()
        ),
    );
    let start = Instant::now();
    agent.run_once_ok();
    let took = start.elapsed();
    assert!(
        hole.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the primary was tried"
    );
    let st = agent.status_json();
    assert_eq!(st["applied"]["id"], head.as_str());
    let primary_st = &st["source"]["sources"][0];
    let mirror_st = &st["source"]["sources"][1];
    let waited = primary_st["last_duration_ms"].as_u64().unwrap_or(0);
    assert!(
        (1500..4500).contains(&waited),
        "the silent primary must be given up after the 2 s stall timeout, took {waited} ms"
    );
    assert!(took < Duration::from_secs(15), "run --once took {took:?}");
    assert!(
        primary_st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&primary)),
        "{primary_st}"
    );
    assert_eq!(primary_st["failures"], 1);
    assert!(primary_st["last_contact"].is_null(), "{primary_st}");
    assert_eq!(mirror_st["tip"], head.as_str());
    assert!(mirror_st["last_contact"].is_i64(), "{mirror_st}");
    assert!(mirror_st["last_error"].is_null(), "{mirror_st}");
    assert_eq!(st["source"]["via"], repo.http_url().as_str());
    let text = agent.status_text();
    assert!(
        text.contains("primary http://127.0.0.1") && text.contains("FAILED"),
        "{text}"
    );
    assert!(
        text.contains(&format!("mirror  {}: ok", repo.http_url())),
        "{text}"
    );
    assert!(all_at(&agent, &head, 2));

    // Without the mirror: the poll fails within its timeout, one line, and drift is still
    // corrected from the last verified commit.
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        cfg.replace(&format!("mirrors = [\"{}\"]", repo.http_url()), ""),
    )
    .expect("config");
    run_ok(Command::new("docker").args(["rm", "-f", &agent.container("side")]));
    let start = Instant::now();
    let out = agent.run_once();
    let took = start.elapsed();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("tend: fetch: fetch from"), "{stderr}");
    assert!(
        took < Duration::from_secs(12),
        "a silent server must not hold the cycle: {took:?}"
    );
    assert!(all_at(&agent, &head, 2), "drift corrected offline");
}

#[test]
fn a_trickling_server_is_cut_off_at_fetch_timeout() {
    // Bytes keep coming (so the stall timeout never fires) but the answer never ends.
    let drip = FaultServer::trickle("127.0.0.1");
    let agent = Agent::new(
        &format!("http://127.0.0.1:{}/fleet.git", drip.port),
        "connect_timeout = \"2s\"\nstall_timeout = \"2s\"\nfetch_timeout = \"4s\"",
    );
    let start = Instant::now();
    let out = agent.run_once();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("fetch_timeout (4s)"), "{stderr}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "the poll must end at its hard timeout: {took:?}"
    );
    let st = agent.status_json();
    let ms = st["source"]["sources"][0]["last_duration_ms"]
        .as_u64()
        .unwrap_or(0);
    assert!((4000..5000).contains(&ms), "{ms} ms");
}

#[test]
fn link_down_flapping_and_recovery() {
    let net = NetPair::new(true);
    let repo = GitRepo::new("flap");
    repo.write("compose.yaml", &quick_services("1"));
    let c1 = repo.commit("c1");
    let poll = Duration::from_secs(3);
    let agent = Agent::new(
        &net.http_url(&repo),
        "connect_timeout = \"1s\"\nstall_timeout = \"2s\"\nfetch_timeout = \"5s\"",
    );
    set_poll_and_drift(&agent, "3s", "1s");
    let daemon = Daemon::start(net.tend(&agent), agent.dir.path().join("daemon.log"));
    wait_for("first apply", Duration::from_secs(30), || {
        applied(&agent).as_deref() == Some(c1.as_str()) && all_at(&agent, &c1, 2)
    });

    // The server goes dark for several poll intervals.
    net.set_link(false);
    let down = Instant::now();
    repo.write("compose.yaml", &quick_services("2"));
    let c2 = repo.commit("c2");
    run_ok(Command::new("docker").args(["rm", "-f", &agent.container("side")]));
    wait_for(
        "drift corrected with the link down",
        Duration::from_secs(10),
        || all_at(&agent, &c1, 2),
    );
    wait_for("failed polls recorded", Duration::from_secs(15), || {
        state_of(&agent)["source"]["sources"][0]["failures"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    while down.elapsed() < poll * 3 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = state_of(&agent);
    assert_eq!(
        st["applied"]["id"],
        c1.as_str(),
        "nothing new without the link"
    );
    assert!(st["source"]["last_error"].is_string(), "{st}");
    let took = st["source"]["sources"][0]["last_duration_ms"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        took <= 5_500,
        "a poll over a dead link must end within its timeout, took {took} ms"
    );
    assert!(
        st["source"]["sources"][0]["next_attempt"].is_i64(),
        "backing off: {}",
        st["source"]["sources"][0]
    );

    // The link returns: converged within two poll intervals.
    net.set_link(true);
    let took = wait_for(
        "c2 after the link returns",
        poll * 2 + Duration::from_secs(2),
        || applied(&agent).as_deref() == Some(c2.as_str()),
    );
    assert!(
        took <= poll * 2,
        "converged {took:?} after the link returned (poll {poll:?})"
    );
    wait_for("c2 everywhere", Duration::from_secs(10), || {
        all_at(&agent, &c2, 2)
    });

    // Flapping every 1.5 s while a new commit waits: never anything but c2 or c3 applied.
    repo.write("compose.yaml", &quick_services("3"));
    let c3 = repo.commit("c3");
    let flap_start = Instant::now();
    let mut up = true;
    let mut seen = std::collections::BTreeSet::new();
    while flap_start.elapsed() < Duration::from_secs(9) {
        up = !up;
        net.set_link(up);
        let step = Instant::now();
        while step.elapsed() < Duration::from_millis(1500) {
            seen.insert(applied(&agent).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    net.set_link(true);
    let took = wait_for(
        "c3 after flapping",
        poll * 2 + Duration::from_secs(2),
        || applied(&agent).as_deref() == Some(c3.as_str()),
    );
    assert!(
        took <= poll * 2 + Duration::from_secs(1),
        "converged {took:?} after flapping"
    );
    wait_for("c3 everywhere", Duration::from_secs(10), || {
        all_at(&agent, &c3, 2)
    });
    seen.insert(applied(&agent).unwrap_or_default());
    assert!(
        seen.iter().all(|s| *s == c2 || *s == c3),
        "only whole commits are ever applied: {seen:?}"
    );
    let log = daemon.log_text();
    drop(daemon);
    assert_repo_sound(&agent);
    assert!(
        log.contains("failure"),
        "the daemon logged the failed polls"
    );
}

#[test]
fn loss_and_latency_slow_polls_but_never_hang_or_apply_half() {
    let net = NetPair::new(true);
    let repo = GitRepo::new("lossy");
    repo.write("compose.yaml", &quick_services("1"));
    let c1 = repo.commit("c1");
    // 2 s each way through a proxy inside the agent's namespace, 30% of TCP packets dropped on
    // the link behind it.
    let proxy = FaultServer::start(
        Some(&net.agent),
        "127.0.0.1",
        Some(format!("{SERVER_IP}:80").parse().expect("addr")),
        Duration::from_secs(2),
    );
    net.loss(30);
    let url = format!("http://127.0.0.1:{}/git/{}.git", proxy.port, repo.name);
    let fetch_timeout = Duration::from_secs(40);
    let agent = Agent::new(
        &url,
        "connect_timeout = \"5s\"\nstall_timeout = \"15s\"\nfetch_timeout = \"40s\"",
    );
    let converge = |want: &str, count: usize| {
        for attempt in 1..=4 {
            let start = Instant::now();
            let out = run(net.tend(&agent).args(["run", "--once"]));
            let took = start.elapsed();
            assert!(
                took < fetch_timeout + Duration::from_secs(15),
                "attempt {attempt}: a poll must end within its timeout, took {took:?}"
            );
            let now = applied(&agent);
            assert!(
                now.is_none()
                    || now.as_deref() == Some(c1.as_str())
                    || now.as_deref() == Some(want),
                "only whole commits: {now:?}"
            );
            if out.status.success() && now.as_deref() == Some(want) {
                assert!(all_at(&agent, want, count), "all containers at {want}");
                return attempt;
            }
            eprintln!(
                "attempt {attempt} failed after {took:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        panic!("no convergence to {want} through 30% loss and 2 s latency in 4 polls");
    };
    converge(&c1, 2);
    assert!(
        proxy.down.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "traffic went through the delaying proxy"
    );
    // A bigger change: a pack of many segments under loss.
    let noise: String = (0..4000)
        .map(|i| {
            format!(
                "{:08x}\n",
                (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
            )
        })
        .collect();
    repo.write("data/noise.txt", &noise);
    repo.write("compose.yaml", &quick_services("2"));
    let c2 = repo.commit("c2");
    converge(&c2, 2);
    assert_repo_sound(&agent);
}

#[test]
fn https_credentials_come_from_a_file_and_never_show() {
    let port = free_port();
    let _server = GitServer::start(None, "127.0.0.1", port, Some("fleet:s3cret-pw-4471\n"));
    let repo = GitRepo::new("auth");
    repo.write("compose.yaml", &quick_services("1"));
    let head = repo.commit("c1");
    let url = format!("http://127.0.0.1:{port}/auth-git/{}.git", repo.name);

    // No credentials: refused by the server, one line, no prompt.
    let agent = Agent::new(&url, "");
    let out = agent.run_once();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("tend: fetch:")),
        "{stderr}"
    );

    // A wrong password, then the right one, from the file named in the config.
    let creds = agent.dir.path().join("git-credentials");
    std::fs::write(&creds, "fleet:wrong\n").expect("write");
    let cfg = std::fs::read_to_string(&agent.config).expect("config");
    std::fs::write(
        &agent.config,
        cfg.replace(
            "poll_interval = \"2s\"",
            &format!(
                "poll_interval = \"2s\"\nhttps_credentials = \"{}\"",
                creds.display()
            ),
        ),
    )
    .expect("config");
    assert!(
        !agent.run_once().status.success(),
        "a wrong password is refused"
    );
    std::fs::write(&creds, "# deploy token\nfleet:s3cret-pw-4471\n").expect("write");
    let out = run(agent
        .tend()
        .args(["run", "--once"])
        .env("TEND_LOG", "debug"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.status_json()["applied"]["id"], head.as_str());
    let everything = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stderr),
        agent.status_text(),
        std::fs::read_to_string(agent.dir.path().join("state/state.json")).unwrap_or_default()
    );
    assert!(
        !everything.contains("s3cret"),
        "the password leaked into logs or state"
    );

    // Inline credentials in the config are refused, naming the key, without echoing them.
    std::fs::write(
        &agent.config,
        cfg.replace(
            &url,
            &url.replace("http://", "http://fleet:s3cret-pw-4471@"),
        ),
    )
    .expect("config");
    let out = agent.run_once();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("source.url") && !stderr.contains("s3cret"),
        "{stderr}"
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the real openssl:
/// `(server.pem with chain and key, ca.pem)`.
fn test_ca(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let ossl = |args: &[&str]| {
        run_ok(Command::new("openssl").current_dir(dir).args(args));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    )
    .expect("ext");
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    let pem = [
        std::fs::read_to_string(dir.join("server.crt")).expect("crt"),
        std::fs::read_to_string(dir.join("server.key")).expect("key"),
    ]
    .concat();
    std::fs::write(dir.join("server.pem"), pem).expect("pem");
    (dir.join("server.pem"), dir.join("ca.pem"))
}

#[test]
fn https_sources_are_verified_against_the_hosts_trust_store() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (pem, ca) = test_ca(certs.path(), "tend test CA");
    let port = free_port();
    let _server = GitServer::start_tls("127.0.0.1", port, &pem, &ca);
    let repo = GitRepo::new("https");
    repo.write("compose.yaml", &quick_services("1"));
    let head = repo.commit("c1");
    let agent = Agent::new(
        &format!("https://127.0.0.1:{port}/git/{}.git", repo.name),
        "",
    );

    // A certificate from a CA the host does not trust (its store holds another CA only):
    // refused, one line saying why.
    let other = tempfile::tempdir().expect("tempdir");
    let (_, other_ca) = test_ca(other.path(), "another CA");
    let out = run(agent
        .tend()
        .args(["run", "--once"])
        .env("SSL_CERT_FILE", &other_ca));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an untrusted certificate was accepted"
    );
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("tend: fetch:") && l.contains("UnknownIssuer")),
        "{stderr}"
    );
    assert!(applied(&agent).is_none());

    // The CA in the host's trust store (SSL_CERT_FILE, as update-ca-certificates would): fetched
    // over TLS and applied.
    let out = run(agent
        .tend()
        .args(["run", "--once"])
        .env("SSL_CERT_FILE", &ca));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(applied(&agent).as_deref(), Some(head.as_str()));
    assert!(all_at(&agent, &head, 2));
}

/// An SSH signing key and the allowed-signers file that trusts it.
fn signing_key(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("signer");
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
    let signers = dir.join("allowed_signers");
    std::fs::write(
        &signers,
        format!("ops@example.invalid namespaces=\"git\" {}", public.trim()),
    )
    .expect("signers");
    (key, format!("allowed_signers = \"{}\"", signers.display()))
}

fn bundle(repo: &GitRepo, out: &Path, range: &str) {
    run_ok(
        repo.git()
            .args(["bundle", "create", "-q"])
            .arg(out)
            .arg(range),
    );
}

fn file_fingerprint(p: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (
        std::fs::read(p).expect("read"),
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .expect("mtime"),
    )
}

#[test]
fn bundles_apply_with_the_network_down_and_bad_ones_are_refused_untouched() {
    let net = NetPair::new(false);
    net.set_link(false);
    let keys = tempfile::tempdir().expect("tmp");
    let (key, trust) = signing_key(keys.path());
    let repo = GitRepo::new("bundle");
    let bundles = tempfile::tempdir().expect("tmp");
    let b = |n: &str| bundles.path().join(n);
    repo.write("compose.yaml", &quick_services("1"));
    let c1 = repo.commit_signed("c1", &key);
    bundle(&repo, &b("b1.bundle"), "main");
    repo.write("compose.yaml", &quick_services("2"));
    let c2 = repo.commit_signed("c2", &key);
    bundle(&repo, &b("b2.bundle"), &format!("{c1}..main"));
    repo.write("compose.yaml", &quick_services("3"));
    let c3 = repo.commit("c3 unsigned");
    bundle(&repo, &b("b3.bundle"), &format!("{c2}..main"));
    repo.write("compose.yaml", &quick_services("4"));
    let c4 = repo.commit_signed("c4", &key);
    bundle(&repo, &b("b4.bundle"), &format!("{c3}..main"));
    let full = std::fs::read(b("b4.bundle")).expect("read");
    std::fs::write(b("truncated.bundle"), &full[..full.len() - 40]).expect("write");

    let inbox = tempfile::tempdir().expect("inbox");
    // The only URL is on the far side of a dead link.
    let agent = Agent::with_trust(
        &net.http_url(&repo),
        &format!(
            "inbox = \"{}\"\nconnect_timeout = \"1s\"\nstall_timeout = \"1s\"",
            inbox.path().display()
        ),
        &trust,
    );
    let import = |file: &Path| run(net.tend(&agent).arg("import").arg(file));

    // A bundle that builds on a commit this host does not have.
    let out = import(&b("b2.bundle"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("needs commit {c1}")), "{stderr}");

    // `tend import` with the network down: verified and applied.
    let out = import(&b("b1.bundle"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied"));
    assert_eq!(applied(&agent).as_deref(), Some(c1.as_str()));
    assert!(all_at(&agent, &c1, 2));
    assert_eq!(
        state_of(&agent)["applied"]["signer"]["identity"],
        "ops@example.invalid"
    );

    // The inbox, watched by the running agent.
    set_poll_and_drift(&agent, "1m", "1m");
    let daemon = Daemon::start(net.tend(&agent), agent.dir.path().join("daemon.log"));
    std::fs::copy(b("b2.bundle"), inbox.path().join("b2.bundle")).expect("copy");
    wait_for("b2 applied from the inbox", Duration::from_secs(15), || {
        applied(&agent).as_deref() == Some(c2.as_str())
    });
    wait_for("b2 everywhere", Duration::from_secs(10), || {
        all_at(&agent, &c2, 2)
    });
    assert!(
        inbox.path().join("b2.bundle").exists(),
        "a good bundle is left in place too"
    );

    // An unsigned tip: refused, with the reason, the file untouched.
    let bad = inbox.path().join("b3.bundle");
    std::fs::copy(b("b3.bundle"), &bad).expect("copy");
    let before = file_fingerprint(&bad);
    wait_for("b3 refused", Duration::from_secs(15), || {
        state_of(&agent)["bundles"].as_array().is_some_and(|b| {
            b.iter().any(|r| {
                r["file"] == bad.display().to_string().as_str() && r["outcome"] == "refused"
            })
        })
    });
    let st = state_of(&agent);
    let rec = st["bundles"]
        .as_array()
        .and_then(|b| {
            b.iter()
                .find(|r| r["file"] == bad.display().to_string().as_str())
        })
        .cloned()
        .unwrap_or_default();
    assert!(
        rec["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not signed")),
        "{rec}"
    );
    assert_eq!(rec["commit"], c3.as_str());
    assert_eq!(st["applied"]["id"], c2.as_str());
    assert_eq!(
        file_fingerprint(&bad),
        before,
        "a refused bundle is left untouched"
    );
    assert!(
        agent.status_text().contains("REFUSED"),
        "status shows the refusal"
    );

    // `tend import` while the agent runs: handed over; a damaged bundle is refused untouched.
    let before = file_fingerprint(&b("truncated.bundle"));
    let out = import(&b("truncated.bundle"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a truncated bundle must be refused");
    assert!(stderr.contains("pack"), "{stderr}");
    assert_eq!(file_fingerprint(&b("truncated.bundle")), before);
    assert_eq!(applied(&agent).as_deref(), Some(c2.as_str()));

    // The intact one (signed tip, require = "tip"): applied through the running agent.
    let out = import(&b("b4.bundle"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(applied(&agent).as_deref(), Some(c4.as_str()));
    // An old bundle again: nothing to do, no rollback.
    let out = import(&b("b2.bundle"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("already part of the applied history"));
    assert_eq!(applied(&agent).as_deref(), Some(c4.as_str()));
    drop(daemon);
    wait_for("c4 everywhere", Duration::from_secs(10), || {
        all_at(&agent, &c4, 2)
    });
    assert_repo_sound(&agent);
}

/// gix sizes a repository handle's table of pack indices when it opens it, and every fetch adds
/// a pack: a daemon's long-lived handle must still read the 300th fetched commit.
#[test]
fn a_long_lived_repository_handle_reads_every_fetched_commit() {
    let repo = GitRepo::new("manypacks");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut local = tend::source::Repo::open_or_init(&dir.path().join("repo.git")).expect("init");
    let ssh = tend::source::SshOptions::default();
    for i in 0..300 {
        repo.write("value.txt", &format!("{i}\n"));
        let head = repo.commit(&format!("change {i}"));
        let tip = local
            .fetch(&repo.http_url(), "main", &ssh)
            .unwrap_or_else(|e| panic!("fetch {i}: {e}"));
        assert_eq!(tip, head);
        let info = local
            .commit_info(&tip)
            .unwrap_or_else(|e| panic!("fetch {i}: the fetched commit cannot be read: {e}"));
        assert_eq!(info.subject, format!("change {i}"));
    }
    let packs = std::fs::read_dir(dir.path().join("repo.git/objects/pack"))
        .expect("pack dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "idx"))
        })
        .count();
    assert!(packs >= 300, "one pack per fetch expected, found {packs}");

    // Rewritten into one pack: git finds the repository sound, every commit still reads, and
    // fetching goes on from there.
    let path = dir.path().join("repo.git");
    let done = tend::repack::consolidate(&path, 32)
        .expect("consolidate")
        .expect("300 packs are consolidated");
    assert_eq!(done.packs, packs);
    assert_eq!(tend::repack::pack_indices(&path).len(), 1);
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(&path)
            .args(["fsck", "--strict", "--no-dangling"]),
    );
    local.refresh().expect("refresh");
    let log = run_ok(Command::new("git").arg("-C").arg(&path).args([
        "rev-list",
        "--count",
        "refs/tend/fetched",
    ]));
    assert_eq!(log.trim(), "300");
    repo.write("value.txt", "after\n");
    let head = repo.commit("after the repack");
    assert_eq!(
        local.fetch(&repo.http_url(), "main", &ssh).expect("fetch"),
        head
    );
    assert_eq!(
        local.commit_info(&head).expect("read").subject,
        "after the repack"
    );
    assert!(
        tend::repack::consolidate(&path, 32)
            .expect("consolidate")
            .is_none(),
        "2 packs: nothing to do"
    );
}
