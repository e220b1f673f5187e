#!/usr/bin/env python3
"""tend's benchmarks, side by side with its peers, in one run.

    python3 benches/bench.py            # full: 10/100/300 services, 5 runs each
    python3 benches/bench.py --quick    # CI: 3 services, 1 run (checks the harness itself)
    BENCH_SIZES=10,100 python3 benches/bench.py   # other sizes
    BENCH_TEND=path/to/tend python3 benches/bench.py  # an already built binary

Writes benches/results/bench.md (a table) and benches/results/bench.json (--quick: under
target/bench-quick/). Each row alternates
peer and tend runs and reports the median and the spread (min..max). Needs what
`bash tests/setup.sh` installs (Docker, the busybox test image, sops, age, docker-compose).
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benches", "results")
IMAGE = "tend-test/busybox:latest"


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True, **kw)


def timed(cmd, env=None, cwd=None):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr.decode(errors='replace')[-500:]}")
    return dt


def summary(samples):
    return {
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "min_ms": round(min(samples) * 1000, 2),
        "max_ms": round(max(samples) * 1000, 2),
        "runs": len(samples),
    }


def alternate(a, b, runs):
    """Run a() and b() alternately `runs` times each; return their samples."""
    sa, sb = [], []
    for _ in range(runs):
        sa.append(a())
        sb.append(b())
    return summary(sa), summary(sb)


def build(quick):
    if os.environ.get("BENCH_TEND"):
        return os.environ["BENCH_TEND"]
    profile = [] if quick else ["--release"]
    sh(["cargo", "build", "-q", "--bin", "tend"] + profile, cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug" if quick else "release", "tend")


def compose_file(n):
    lines = ["services:"]
    for i in range(n):
        lines += [
            f"  s{i}:",
            f"    image: {IMAGE}",
            "    command: [\"sleep\", \"100000\"]",
            "    stop_grace_period: 1s",
            "    init: true",
        ]
    return "\n".join(lines) + "\n"


def noop_reconcile(tend, n, runs, work):
    """A no-op cycle by tend (`tend run --once`: fetch, verify, load, observe, plan) vs
    `docker-compose up -d` on the same compose file, each with its own converged project."""
    d = os.path.join(work, f"noop{n}")
    repo = os.path.join(d, "repo")
    os.makedirs(repo)
    with open(os.path.join(repo, "compose.yaml"), "w") as f:
        f.write(compose_file(n))
    g = ["git", "-C", repo, "-c", "user.name=b", "-c", "user.email=b@e", "-c", "commit.gpgsign=false"]
    sh(["git", "init", "-q", "-b", "main", repo])
    sh(g + ["add", "-A"])
    sh(g + ["commit", "-qm", "bench"])
    tproj, dproj = f"bt{n}x{os.getpid()}", f"bd{n}x{os.getpid()}"
    cfg = os.path.join(d, "tend.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[source]\nurl = "{repo}"\n[host]\nproject = "{tproj}"\n[paths]\nstate = "{d}/state"\n'
            f'runtime = "/dev/shm/{tproj}"\n[apply]\nsettle = "1s"\n[trust]\nallow_unsigned = true\n'
        )
    dc_dir = os.path.join(d, "dc")
    os.makedirs(dc_dir)
    shutil.copy(os.path.join(repo, "compose.yaml"), os.path.join(dc_dir, "docker-compose.yml"))
    with open(os.path.join(dc_dir, "docker-compose.yml")) as f:
        text = f.read()
    with open(os.path.join(dc_dir, "docker-compose.yml"), "w") as f:
        f.write("version: '3.7'\n" + text)
    env = dict(os.environ, COMPOSE_PROJECT_NAME=dproj)
    tend_cmd = [tend, "--config", cfg, "run", "--once"]
    dc_cmd = ["docker-compose", "up", "-d", "--no-color"]
    try:
        timed(tend_cmd)  # converge (not measured)
        timed(dc_cmd, env=env, cwd=dc_dir)
        before = sh(f"docker ps -q --filter label=io.tend.project={tproj} | sort").stdout
        dc, td = alternate(lambda: timed(dc_cmd, env=env, cwd=dc_dir), lambda: timed(tend_cmd), runs)
        after = sh(f"docker ps -q --filter label=io.tend.project={tproj} | sort").stdout
        recreated = len(set(before.split()) ^ set(after.split())) // 2
        return {"services": n, "docker-compose up -d": dc, "tend run --once": td, "tend recreations": recreated,
                "speedup": round(dc["median_ms"] / td["median_ms"], 1)}
    finally:
        subprocess.run(f"docker ps -aq --filter label=io.tend.project={tproj} | xargs -r docker rm -f", shell=True, capture_output=True)
        subprocess.run(["docker-compose", "down", "--remove-orphans"], env=env, cwd=dc_dir, capture_output=True)
        subprocess.run(["docker", "network", "rm", f"{tproj}_default"], capture_output=True)


def sops_yaml(values):
    lines = []
    for i in range(values):
        lines.append(f"key{i:05d}: value-{i}-{'x' * 16}")
    return "\n".join(lines) + "\n"


def decrypt_bench(tend, values, runs, work):
    d = os.path.join(work, "sops")
    os.makedirs(d)
    key = os.path.join(d, "age.txt")
    sh(["age-keygen", "-o", key])
    pub = [l for l in open(key) if l.startswith("# public key: ")][0].split(": ")[1].strip()
    f = os.path.join(d, "big.yaml")
    with open(f, "w") as fh:
        fh.write(sops_yaml(values))
    sh(["sops", "encrypt", "--age", pub, "-i", f])
    env = dict(os.environ, SOPS_AGE_KEY_FILE=key)
    ours = subprocess.run([tend, "--config", "/nonexistent", "decrypt", f], env=env, capture_output=True).stdout
    theirs = subprocess.run(["sops", "decrypt", f], env=env, capture_output=True).stdout
    if ours != theirs:
        raise RuntimeError("tend decrypt and sops decrypt differ")
    s, t = alternate(lambda: timed(["sops", "decrypt", f], env=env),
                     lambda: timed([tend, "--config", "/nonexistent", "decrypt", f], env=env), runs)
    return {"values": values, "sops decrypt": s, "tend decrypt": t, "speedup": round(s["median_ms"] / t["median_ms"], 1)}


def main():
    quick = "--quick" in sys.argv
    sizes = [3] if quick else [int(n) for n in os.environ.get("BENCH_SIZES", "10,100,300").split(",")]
    runs = 1 if quick else 5
    tend = build(quick)
    results = {"quick": quick, "noop_reconcile": [], "host": os.uname().nodename}
    work = tempfile.mkdtemp(prefix="tend-bench-")
    try:
        for n in sizes:
            print(f"no-op reconcile, {n} services...", flush=True)
            results["noop_reconcile"].append(noop_reconcile(tend, n, runs, work))
        print("decrypt...", flush=True)
        results["decrypt"] = decrypt_bench(tend, 100 if quick else 10000, runs, work)
        stripped = os.path.join(work, "tend-stripped")
        shutil.copy(tend, stripped)
        subprocess.run(["strip", stripped], capture_output=True)
        results["binary_bytes"] = os.path.getsize(stripped)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = os.path.join(ROOT, "target", "bench-quick") if quick else OUT
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(results, f, indent=2)
    md = ["| benchmark | peer (median, min..max) | tend (median, min..max) | ratio |", "|---|---|---|---|"]
    for r in results["noop_reconcile"]:
        dc, td = r["docker-compose up -d"], r["tend run --once"]
        md.append(f"| no-op reconcile, {r['services']} services (tend recreated {r['tend recreations']}) | "
                  f"docker-compose up -d {dc['median_ms']} ms ({dc['min_ms']}..{dc['max_ms']}) | "
                  f"{td['median_ms']} ms ({td['min_ms']}..{td['max_ms']}) | {r['speedup']}x |")
    dd = results["decrypt"]
    md.append(f"| decrypt {dd['values']}-value SOPS YAML | sops decrypt {dd['sops decrypt']['median_ms']} ms "
              f"({dd['sops decrypt']['min_ms']}..{dd['sops decrypt']['max_ms']}) | {dd['tend decrypt']['median_ms']} ms "
              f"({dd['tend decrypt']['min_ms']}..{dd['tend decrypt']['max_ms']}) | {dd['speedup']}x |")
    md.append(f"| binary size (stripped{'' if not quick else ', debug'}) | | {results['binary_bytes'] / 1e6:.1f} MB | |")
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
