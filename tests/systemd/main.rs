//! The systemd module against a real systemd (PID 1 in a container), asserted
//! through `docker exec NODE systemctl show ...`.
//!
//! Needs docker; builds `tend-test/systemd:bookworm` on first use
//! (tests/fixtures/build-systemd-image.sh, ~1-2 min, then cached).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{desired, Node};
use tend::systemd::{Error, UnitAction, UnitManager};

const WEB: &str = "[Unit]\nDescription=tend test web\n[Service]\nExecStart=/bin/sleep infinity\nEnvironmentFile=-/run/tend/secrets/web.env\n[Install]\nWantedBy=multi-user.target\n";
const API: &str = "[Unit]\nDescription=tend test api\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
const API2: &str = "[Unit]\nDescription=tend test api v2\n[Service]\nExecStart=/bin/sleep 100000\n[Install]\nWantedBy=multi-user.target\n";
const WORKER: &str = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\nDefaultInstance=a\n";
const SLOW: &str = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 1\n";

fn identity(node: &Node, unit: &str) -> (String, String) {
    let m = node.show(unit, &["InvocationID", "ExecMainStartTimestampMonotonic"]);
    (
        m["InvocationID"].clone(),
        m["ExecMainStartTimestampMonotonic"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_enable_start_then_change_restarts_only_that_unit() {
    let node = Node::start("install");
    let mut agent = node.agent().await;

    let d1 = desired(&[
        ("web.service", WEB),
        ("api.service", API),
        ("slow.service", SLOW),
        ("worker@.service", WORKER),
    ]);
    let (actions, report) = agent.cycle(&d1).await;
    assert!(report.is_success(), "{report:?}");
    assert!(
        actions.contains(
            &"enable web.service: declared enabled, unit file state is unknown".to_string()
        ),
        "{actions:?}"
    );
    for unit in ["web.service", "api.service"] {
        let m = node.show(
            unit,
            &["ActiveState", "SubState", "UnitFileState", "FragmentPath"],
        );
        assert_eq!(m["ActiveState"], "active", "{unit}: {m:?}");
        assert_eq!(m["SubState"], "running", "{unit}");
        assert_eq!(m["UnitFileState"], "enabled", "{unit}");
        assert_eq!(m["FragmentPath"], format!("/etc/systemd/system/{unit}"));
    }
    // StartUnit waited for the job (JobRemoved), not just for the call: the
    // oneshot's 1 s start is over when apply returns.
    let slow = node.show("slow.service", &["ActiveState", "SubState"]);
    assert_eq!(
        (slow["ActiveState"].as_str(), slow["SubState"].as_str()),
        ("active", "exited")
    );
    assert_eq!(
        node.sh("stat -c %a /etc/systemd/system/web.service").trim(),
        "644"
    );
    // A template is installed and enabled (DefaultInstance=a) but not started.
    assert_eq!(
        node.exec(&["systemctl", "is-enabled", "worker@.service"]),
        (true, "enabled\n".to_string())
    );
    assert!(
        node.exec(&[
            "test",
            "-L",
            "/etc/systemd/system/multi-user.target.wants/worker@a.service"
        ])
        .0
    );
    assert_eq!(node.prop("worker@a.service", "ActiveState"), "inactive");

    // Converged: nothing to do.
    let (actions, _) = agent.cycle(&d1).await;
    assert!(actions.is_empty(), "{actions:?}");

    // Change api.service only.
    let web_before = identity(&node, "web.service");
    let api_before = identity(&node, "api.service");
    let d2 = desired(&[
        ("web.service", WEB),
        ("api.service", API2),
        ("slow.service", SLOW),
        ("worker@.service", WORKER),
    ]);
    let (actions, report) = agent.cycle(&d2).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        actions,
        vec![
            "write api.service: unit file changed in Git",
            "daemon-reload: unit files or enablement changed",
            "restart api.service: unit file changed in Git",
        ]
    );
    assert_eq!(
        identity(&node, "web.service"),
        web_before,
        "web must not restart"
    );
    assert_ne!(
        identity(&node, "api.service").0,
        api_before.0,
        "api must restart"
    );
    assert_eq!(node.prop("api.service", "Description"), "tend test api v2");
    assert_eq!(node.prop("api.service", "NeedDaemonReload"), "no");

    // A drop-in restarts its unit only.
    let api_before = identity(&node, "api.service");
    let web_before = identity(&node, "web.service");
    let d3 = desired(&[
        ("web.service", WEB),
        (
            "web.service.d/10-env.conf",
            "[Service]\nEnvironment=TEND_TEST=1\n",
        ),
        ("api.service", API2),
        ("slow.service", SLOW),
        ("worker@.service", WORKER),
    ]);
    let (actions, report) = agent.cycle(&d3).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        actions.last().map(String::as_str),
        Some("restart web.service: new drop-in 10-env.conf")
    );
    assert_eq!(node.prop("web.service", "Environment"), "TEND_TEST=1");
    assert_ne!(identity(&node, "web.service").0, web_before.0);
    assert_eq!(identity(&node, "api.service"), api_before);

    // A changed secret restarts its users (web references web.env) only.
    let api_before = identity(&node, "api.service");
    let web_before = identity(&node, "web.service");
    let secrets: BTreeSet<String> = ["web.env".to_string()].into();
    let (actions, report) = agent.cycle_with(&d3, &secrets).await.expect("cycle");
    assert!(report.is_success(), "{report:?}");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(matches!(&actions[0], UnitAction::Restart { unit, .. } if unit == "web.service"));
    assert_ne!(identity(&node, "web.service").0, web_before.0);
    assert_eq!(identity(&node, "api.service"), api_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_stops_disables_and_deletes() {
    let node = Node::start("removal");
    let mut agent = node.agent().await;
    let d1 = desired(&[
        ("web.service", WEB),
        ("web.service.d/10-env.conf", "[Service]\nEnvironment=A=1\n"),
        ("api.service", API),
    ]);
    assert!(agent.cycle(&d1).await.1.is_success());
    assert_eq!(node.prop("web.service", "ActiveState"), "active");
    assert!(
        node.exec(&[
            "test",
            "-L",
            "/etc/systemd/system/multi-user.target.wants/web.service"
        ])
        .0
    );

    let d2 = desired(&[("api.service", API)]);
    let (actions, report) = agent.cycle(&d2).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        actions,
        vec![
            "stop web.service: no longer declared in Git",
            "disable web.service: no longer declared in Git",
            "remove web.service.d/10-env.conf: no longer declared in Git",
            "remove web.service: no longer declared in Git",
            "daemon-reload: unit files or enablement changed",
        ]
    );
    let m = node.show(
        "web.service",
        &["LoadState", "ActiveState", "UnitFileState"],
    );
    assert_eq!(m["LoadState"], "not-found", "{m:?}");
    assert_eq!(m["ActiveState"], "inactive");
    assert!(
        !node
            .exec(&["test", "-e", "/etc/systemd/system/web.service"])
            .0
    );
    assert!(
        !node
            .exec(&["test", "-e", "/etc/systemd/system/web.service.d"])
            .0
    );
    assert!(
        !node
            .exec(&[
                "test",
                "-L",
                "/etc/systemd/system/multi-user.target.wants/web.service"
            ])
            .0
    );
    assert!(!agent.owned.contains_key("web.service"));
    assert_eq!(node.prop("api.service", "ActiveState"), "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_is_enabled_active_and_triggers_its_service() {
    let node = Node::start("timer");
    let mut agent = node.agent().await;
    let d = desired(&[
        (
            "tick.timer",
            "[Timer]\nOnActiveSec=1s\nOnUnitActiveSec=1h\nAccuracySec=10ms\n[Install]\nWantedBy=timers.target\n",
        ),
        (
            "tick.service",
            "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo tick >> /run/tend-tick.log'\n",
        ),
    ]);
    let (actions, report) = agent.cycle(&d).await;
    assert!(report.is_success(), "{report:?}");
    // tend starts the timer, not the service it activates.
    assert!(
        actions.contains(&"start tick.timer: new unit".to_string()),
        "{actions:?}"
    );
    assert!(
        !actions.iter().any(|a| a.starts_with("start tick.service")),
        "{actions:?}"
    );
    let m = node.show("tick.timer", &["ActiveState", "UnitFileState"]);
    assert_eq!(m["ActiveState"], "active");
    assert_eq!(m["UnitFileState"], "enabled");
    assert!(
        node.exec(&[
            "test",
            "-L",
            "/etc/systemd/system/timers.target.wants/tick.timer"
        ])
        .0
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = node.show(
            "tick.service",
            &["Result", "ExecMainExitTimestampMonotonic"],
        );
        if m["ExecMainExitTimestampMonotonic"] != "0" {
            assert_eq!(m["Result"], "success");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timer did not trigger tick.service: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(node.sh("cat /run/tend-tick.log").trim(), "tick");
    // The oneshot ran to completion: inactive is its normal state, no action.
    let (actions, _) = agent.cycle(&d).await;
    assert!(actions.is_empty(), "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_unit_is_reported_with_state_and_journal() {
    let node = Node::start("failing");
    let mut agent = node.agent().await;
    let d = desired(&[
        (
            "broken.service",
            "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo tend-test-boom; exit 3'\n",
        ),
        ("api.service", API),
    ]);
    let (_, report) = agent.cycle(&d).await;
    assert!(report.aborted.is_none(), "{report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    let f = &report.failures[0];
    assert_eq!(f.unit, "broken.service");
    assert_eq!(f.job_result.as_deref(), Some("failed"));
    assert_eq!(
        (f.active_state.as_str(), f.sub_state.as_str()),
        ("failed", "failed")
    );
    assert!(
        f.journal.iter().any(|l| l.contains("tend-test-boom")),
        "journal: {:?}",
        f.journal
    );
    let m = node.show(
        "broken.service",
        &["ActiveState", "Result", "ExecMainStatus"],
    );
    assert_eq!(m["ActiveState"], "failed");
    assert_eq!(m["Result"], "exit-code");
    assert_eq!(m["ExecMainStatus"], "3");
    // The rest of the batch went on.
    assert_eq!(node.prop("api.service", "ActiveState"), "active");

    // Next cycle proposes a recovery start, which the caller may back off.
    let (actions, _) = agent.cycle(&d).await;
    assert_eq!(
        actions,
        vec!["start broken.service: should run but is failed (failed)"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edit_is_restored_and_stopped_unit_started_again() {
    let node = Node::start("drift");
    let mut agent = node.agent().await;
    let d = desired(&[("web.service", WEB), ("api.service", API)]);
    assert!(agent.cycle(&d).await.1.is_success());

    node.sh("sed -i '/^\\[Service\\]/a Environment=HACKED=1' /etc/systemd/system/web.service && systemctl daemon-reload && systemctl restart web.service");
    assert_eq!(node.prop("web.service", "Environment"), "HACKED=1");
    node.sh("systemctl stop api.service && systemctl disable api.service");
    assert_eq!(node.prop("api.service", "ActiveState"), "inactive");
    // The cached unit-file states are dropped on systemd's UnitFilesChanged
    // signal: the manual disable shows up (the signal is asynchronous, so
    // allow it a moment to arrive).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let obs = agent
            .manager
            .observe(&["api.service".to_string()])
            .await
            .expect("observe");
        if obs[0].unit_file_state == "disabled" {
            break;
        }
        assert!(Instant::now() < deadline, "stale unit file state: {obs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (actions, report) = agent.cycle(&d).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        actions,
        vec![
            "write web.service: unit file edited on disk, restoring",
            "enable api.service: declared enabled, unit file state is disabled",
            "daemon-reload: unit files or enablement changed",
            "start api.service: should run but is inactive (dead)",
            "restart web.service: unit file edited on disk, restoring",
        ]
    );
    assert_eq!(node.prop("api.service", "UnitFileState"), "enabled");
    assert_eq!(node.sh("cat /etc/systemd/system/web.service"), WEB);
    assert_eq!(node.prop("web.service", "Environment"), "");
    assert_eq!(node.prop("web.service", "ActiveState"), "active");
    assert_eq!(node.prop("api.service", "ActiveState"), "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_unit_is_reported_not_fought() {
    let node = Node::start("masked");
    let mut agent = node.agent().await;
    let d = desired(&[("web.service", WEB)]);
    assert!(agent.cycle(&d).await.1.is_success());

    // The operator takes the unit away from tend by masking it.
    node.sh("systemctl stop web.service && rm /etc/systemd/system/web.service && systemctl mask web.service");
    let (actions, report) = agent.cycle(&d).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(
        actions[0].starts_with("report web.service: masked on this host"),
        "{actions:?}"
    );
    assert_eq!(
        node.sh("readlink /etc/systemd/system/web.service").trim(),
        "/dev/null"
    );
    let m = node.show(
        "web.service",
        &["LoadState", "ActiveState", "UnitFileState"],
    );
    assert_eq!(m["LoadState"], "masked");
    assert_eq!(m["ActiveState"], "inactive");

    // Unmasked: tend takes over again.
    node.sh("systemctl unmask web.service");
    let (_, report) = agent.cycle(&d).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(node.prop("web.service", "ActiveState"), "active");
    assert_eq!(node.sh("cat /etc/systemd/system/web.service"), WEB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unowned_unit_is_refused_unless_adopted() {
    let node = Node::start("unowned");
    let mut agent = node.agent().await;
    let theirs = "[Service]\nExecStart=/bin/sleep 12345\n";
    node.sh(&format!(
        "printf '{}' > /etc/systemd/system/legacy.service && systemctl daemon-reload && systemctl start legacy.service",
        theirs.replace('\n', "\\n")
    ));
    let d = desired(&[("legacy.service", WEB)]);
    match agent.cycle_with(&d, &BTreeSet::new()).await {
        Err(Error::UnownedUnit { unit, location }) => {
            assert_eq!(unit, "legacy.service");
            assert!(location.contains("unit directory"), "{location}");
        }
        Err(other) => panic!("expected UnownedUnit, got {other}"),
        Ok((actions, _)) => panic!("expected a refusal, got {actions:?}"),
    }
    assert_eq!(node.sh("cat /etc/systemd/system/legacy.service"), theirs);

    // A vendor unit (not in the unit directory) is refused as well.
    let d_vendor = desired(&[("dbus.service", API)]);
    assert!(matches!(
        agent.cycle_with(&d_vendor, &BTreeSet::new()).await,
        Err(Error::UnownedUnit { .. })
    ));

    let d_adopt = desired(&[
        ("legacy.service", WEB),
        ("tend.toml", "[units.\"legacy.service\"]\nadopt = true\n"),
    ]);
    let (actions, report) = agent.cycle(&d_adopt).await;
    assert!(report.is_success(), "{report:?}");
    assert!(
        actions[0].starts_with("write legacy.service: adopting"),
        "{actions:?}"
    );
    assert_eq!(node.sh("cat /etc/systemd/system/legacy.service"), WEB);
    assert_eq!(node.prop("legacy.service", "UnitFileState"), "enabled");
    assert!(node
        .prop("legacy.service", "ExecStart")
        .contains("infinity"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_reports_states_in_two_calls_and_journal_tail_reads_the_node() {
    let node = Node::start("observe");
    let mgr = node.manager().await;
    let names = vec![
        "dbus.service".to_string(),
        "nope.service".to_string(),
        "getty@tty1.service".to_string(),
    ];
    let obs = mgr.observe(&names).await.expect("observe");
    assert_eq!(obs.len(), 3);
    assert_eq!(
        (
            obs[0].load_state.as_str(),
            obs[0].active_state.as_str(),
            obs[0].unit_file_state.as_str()
        ),
        ("loaded", "active", "static")
    );
    assert_eq!(obs[1].load_state, "not-found");
    assert_eq!(obs[1].unit_file_state, "");
    assert_eq!(obs[2].load_state, "masked");
    // Unit-file states are cached until systemd signals a change: a symlink
    // made by hand is not seen (systemd itself ignores it until a reload)...
    node.sh("printf '[Service]\\nExecStart=/bin/sleep 1\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/c.service && systemctl daemon-reload");
    let c = vec!["c.service".to_string()];
    let deadline = Instant::now() + Duration::from_secs(3);
    while mgr.observe(&c).await.expect("observe")[0].unit_file_state != "disabled" {
        assert!(
            Instant::now() < deadline,
            "c.service never showed up as disabled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.sh(
        "ln -s /etc/systemd/system/c.service /etc/systemd/system/multi-user.target.wants/c.service",
    );
    assert_eq!(
        mgr.observe(&c).await.expect("observe")[0].unit_file_state,
        "disabled"
    );
    // ...until the Reloading signal drops the cache.
    node.sh("systemctl daemon-reload");
    let deadline = Instant::now() + Duration::from_secs(3);
    while mgr.observe(&c).await.expect("observe")[0].unit_file_state != "enabled" {
        assert!(Instant::now() < deadline, "cache not dropped on Reloading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let lines = mgr.journal_tail("dbus.service", 5).await.expect("journal");
    assert!(!lines.is_empty());

    // A job that systemd refuses to queue is a D-Bus error naming the call.
    let job = mgr.start("nope.service", Duration::from_secs(10)).await;
    match job {
        Err(Error::Dbus { method, unit, .. }) => {
            assert_eq!((method, unit.as_str()), ("StartUnit", "nope.service"));
        }
        other => panic!("starting a missing unit must fail with a D-Bus error, got {other:?}"),
    }
}

/// Compile-time check: the apply/observe futures over the real manager are
/// `Send`, so the main crate can run them in a task spawned on the
/// multi-thread runtime. (Never called; it only has to compile.)
#[allow(dead_code)]
fn apply_future_is_send(mgr: &tend::systemd::DbusUnitManager) {
    fn assert_send<T: Send>(_: &T) {}
    let files = tend::systemd::UnitFiles::default();
    let d = tend::systemd::DesiredUnits::default();
    let mut owned = std::collections::BTreeMap::new();
    let opts = tend::systemd::ApplyOptions::default();
    let fut = tend::systemd::apply(mgr, &files, &d, &[], &mut owned, &opts);
    assert_send(&fut);
    let names: Vec<String> = Vec::new();
    let obs = tend::systemd::observe(mgr, &files, &names);
    assert_send(&obs);
}
