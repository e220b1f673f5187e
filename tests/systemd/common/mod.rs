//! Shared fixtures: a systemd "node" container per test, driven from the host
//! through its D-Bus socket and unit directory under `/proc/PID/root`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tend::systemd::{
    apply, desired_units, observe, plan, units_to_observe, ApplyOptions, ApplyReport, DbusConfig,
    DbusUnitManager, DesiredUnits, Error, Layer, OwnedUnit, PlanOptions, UnitAction, UnitFiles,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Build the image once (cached by docker; serialised across test processes
/// with flock so parallel runners do not debootstrap twice).
fn ensure_image() {
    let script = fixtures().join("build-systemd-image.sh");
    let status = Command::new("flock")
        .arg("/tmp/tend-test-systemd-image.lock")
        .arg(&script)
        .status()
        .expect("run flock + build-systemd-image.sh");
    assert!(status.success(), "building the systemd test image failed");
}

/// A running systemd container, removed on drop (also on panic).
pub struct Node {
    pub name: String,
    pub pid: u32,
}

impl Node {
    pub fn start(test: &str) -> Node {
        ensure_image();
        let name = format!("tend-sd-{test}-{}", std::process::id());
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        let out = Command::new(fixtures().join("run-systemd-node.sh"))
            .arg(&name)
            .output()
            .expect("run run-systemd-node.sh");
        // Guard first, so a failed boot still removes the container.
        let mut node = Node { name, pid: 0 };
        assert!(
            out.status.success(),
            "node did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        node.pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("pid printed by run-systemd-node.sh");
        node
    }

    pub fn bus_address(&self) -> String {
        format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.pid
        )
    }

    pub fn unit_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/etc/systemd/system", self.pid))
    }

    /// `docker exec NODE ARGS...`, returning (success, stdout).
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            .arg("exec")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("docker exec");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn sh(&self, script: &str) -> String {
        let (ok, out) = self.exec(&["sh", "-c", script]);
        assert!(ok, "`{script}` failed in {}", self.name);
        out
    }

    /// `systemctl show -p PROPS UNIT` as a map, read inside the node.
    pub fn show(&self, unit: &str, props: &[&str]) -> BTreeMap<String, String> {
        let (ok, out) = self.exec(&["systemctl", "show", "-p", &props.join(","), unit]);
        assert!(ok, "systemctl show {unit}");
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn prop(&self, unit: &str, prop: &str) -> String {
        self.show(unit, &[prop]).remove(prop).unwrap_or_default()
    }

    pub async fn manager(&self) -> DbusUnitManager {
        DbusUnitManager::connect(DbusConfig {
            address: Some(self.bus_address()),
            journal_command: vec![
                "docker".into(),
                "exec".into(),
                self.name.clone(),
                "journalctl".into(),
            ],
            call_timeout: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("connect to the node's bus")
    }

    pub async fn agent(&self) -> Agent {
        Agent {
            manager: self.manager().await,
            files: UnitFiles::new(self.unit_dir()),
            owned: BTreeMap::new(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// What an agent keeps between cycles.
pub struct Agent {
    pub manager: DbusUnitManager,
    pub files: UnitFiles,
    pub owned: BTreeMap<String, OwnedUnit>,
}

impl Agent {
    /// One reconcile cycle: observe, plan, apply.
    pub async fn cycle_with(
        &mut self,
        desired: &DesiredUnits,
        secrets: &BTreeSet<String>,
    ) -> Result<(Vec<UnitAction>, ApplyReport), Error> {
        let names = units_to_observe(desired, &self.owned);
        let observed = observe(&self.manager, &self.files, &names).await?;
        let actions = plan(
            desired,
            &self.owned,
            &observed,
            secrets,
            &PlanOptions::default(),
        )?;
        let opts = ApplyOptions {
            job_timeout: Duration::from_secs(30),
            journal_lines: 10,
        };
        let report = apply(
            &self.manager,
            &self.files,
            desired,
            &actions,
            &mut self.owned,
            &opts,
        )
        .await;
        Ok((actions, report))
    }

    pub async fn cycle(&mut self, desired: &DesiredUnits) -> (Vec<String>, ApplyReport) {
        let (actions, report) = self
            .cycle_with(desired, &BTreeSet::new())
            .await
            .expect("cycle");
        (actions.iter().map(ToString::to_string).collect(), report)
    }
}

pub fn desired(files: &[(&str, &str)]) -> DesiredUnits {
    let map: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    desired_units(&[Layer {
        name: "test",
        files: &map,
    }])
    .expect("valid desired units")
}
