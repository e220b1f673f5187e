//! Benchmark: a no-op drift check over N owned units (default 50) on a
//! systemd node container, through D-Bus (2 calls + reading the unit files),
//! against the per-unit process approach
//! (`nsenter -t PID -m -p systemctl show -p ActiveState,SubState,UnitFileState UNIT`,
//! and one round of `docker exec NODE systemctl show ...`).
//!
//! Run: `cargo run --release --example drift_bench [-- UNITS ITERATIONS]`
//! (needs docker and the image from tests/fixtures/build-systemd-image.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tend::systemd::{
    apply, desired_units, observe, plan, units_to_observe, ApplyOptions, DbusConfig, DbusUnitManager, Layer,
    PlanOptions, UnitFiles,
};

struct Node(String);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (v[0], p(0.5), p(0.95))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let units: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let iterations: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let built = Command::new(fixtures.join("build-systemd-image.sh")).status()?;
    if !built.success() {
        return Err("building the image failed".into());
    }
    let name = format!("tend-sd-bench-{}", std::process::id());
    let out = Command::new(fixtures.join("run-systemd-node.sh")).arg(&name).output()?;
    let node = Node(name);
    if !out.status.success() {
        return Err(format!("node: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse()?;

    // Install N units through the module.
    let files_map: BTreeMap<String, Vec<u8>> = (0..units)
        .map(|i| {
            (
                format!("bench-{i:03}.service"),
                format!(
                    "[Unit]\nDescription=bench {i}\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"
                )
                .into_bytes(),
            )
        })
        .collect();
    let desired = desired_units(&[Layer {
        name: "bench",
        files: &files_map,
    }])?;
    let mgr = DbusUnitManager::connect(DbusConfig {
        address: Some(format!("unix:path=/proc/{pid}/root/run/dbus/system_bus_socket")),
        ..Default::default()
    })
    .await?;
    let files = UnitFiles::new(format!("/proc/{pid}/root/etc/systemd/system"));
    let mut owned = BTreeMap::new();
    let names = units_to_observe(&desired, &owned);
    let observed = observe(&mgr, &files, &names).await?;
    let actions = plan(&desired, &owned, &observed, &BTreeSet::new(), &PlanOptions::default())?;
    let t = Instant::now();
    let report = apply(&mgr, &files, &desired, &actions, &mut owned, &ApplyOptions::default()).await;
    if !report.is_success() {
        return Err(format!("install failed: {report:?}").into());
    }
    println!(
        "installed {units} units ({} actions) in {:.0} ms",
        actions.len(),
        ms(t.elapsed())
    );

    // Let the node settle (50 fresh processes, journald) before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The same check with the unit-file-state cache off: always 2 D-Bus calls.
    let cold_mgr = DbusUnitManager::connect(DbusConfig {
        address: Some(format!("unix:path=/proc/{pid}/root/run/dbus/system_bus_socket")),
        file_state_max_age: Duration::ZERO,
        ..Default::default()
    })
    .await?;

    let names = units_to_observe(&desired, &owned);
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    // Per-unit processes (nsenter + systemctl show), interleaved with the D-Bus checks.
    let nsenter_rounds = 3.min(iterations).max(1);
    let mut nsenter = Vec::new();
    for i in 0..iterations + 3 {
        if i >= 3 && nsenter.len() < nsenter_rounds {
            let t = Instant::now();
            for n in &names {
                let out = Command::new("nsenter")
                    .args(["-t", &pid.to_string(), "-m", "-p", "systemctl", "show"])
                    .args(["-p", "ActiveState,SubState,UnitFileState", n])
                    .output()?;
                if !String::from_utf8_lossy(&out.stdout).contains("ActiveState=active") {
                    return Err(format!("nsenter systemctl show {n}: unexpected output").into());
                }
            }
            nsenter.push(t.elapsed());
        }
        for (mgr, out) in [(&mgr, &mut warm), (&cold_mgr, &mut cold)] {
            let t = Instant::now();
            let observed = observe(mgr, &files, &names).await?;
            let actions = plan(&desired, &owned, &observed, &BTreeSet::new(), &PlanOptions::default())?;
            let took = t.elapsed();
            let enabled = observed
                .values()
                .filter(|o| o.unit_file_state == "enabled" && o.active_state == "active")
                .count();
            if !actions.is_empty() || enabled != units {
                return Err(format!("not converged ({enabled} enabled+active): {actions:?}").into());
            }
            if i >= 3 {
                out.push(took);
            }
        }
    }

    // And one round of docker exec.
    let t = Instant::now();
    for n in &names {
        let out = Command::new("docker")
            .args(["exec", &node.0, "systemctl", "show"])
            .args(["-p", "ActiveState,SubState,UnitFileState", n])
            .output()?;
        if !String::from_utf8_lossy(&out.stdout).contains("ActiveState=active") {
            return Err(format!("docker exec systemctl show {n}: unexpected output").into());
        }
    }
    let docker = t.elapsed();

    let (wmin, wmed, wp95) = stats(warm);
    let (cmin, cmed, cp95) = stats(cold);
    let (nmin, nmed, _) = stats(nsenter);
    println!("no-op drift check over {units} owned units ({iterations} iterations; each = observe states + read/hash {units} unit files + plan):");
    println!(
        "  D-Bus, steady state (ListUnitsByNames; file states cached): min {:.2} ms, median {:.2} ms, p95 {:.2} ms",
        ms(wmin),
        ms(wmed),
        ms(wp95)
    );
    println!(
        "  D-Bus, cold (ListUnitsByNames + ListUnitFilesByPatterns):  min {:.2} ms, median {:.2} ms, p95 {:.2} ms",
        ms(cmin),
        ms(cmed),
        ms(cp95)
    );
    println!(
        "  nsenter -t PID -m -p systemctl show, one process per unit ({nsenter_rounds} rounds): min {:.0} ms, median {:.0} ms",
        ms(nmin), ms(nmed)
    );
    println!(
        "  docker exec NODE systemctl show, one process per unit (1 round): {:.0} ms",
        ms(docker)
    );
    println!(
        "  ratio (median): nsenter / steady = {:.0}x, nsenter / cold = {:.0}x, docker exec / steady = {:.0}x",
        nmed.as_secs_f64() / wmed.as_secs_f64(),
        nmed.as_secs_f64() / cmed.as_secs_f64(),
        docker.as_secs_f64() / wmed.as_secs_f64()
    );
    println!(
        "json: {}",
        serde_json::json!({
            "units": units,
            "iterations": iterations,
            "steady_ms": {"min": ms(wmin), "median": ms(wmed), "p95": ms(wp95)},
            "cold_ms": {"min": ms(cmin), "median": ms(cmed), "p95": ms(cp95)},
            "nsenter_ms": {"min": ms(nmin), "median": ms(nmed), "rounds": nsenter_rounds},
            "docker_exec_ms": ms(docker),
        })
    );
    Ok(())
}
