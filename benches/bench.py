#!/usr/bin/env python3
"""tend's benchmarks, side by side with its peers, in one run.

    python3 benches/bench.py                  # everything but the soak (about 40 minutes)
    python3 benches/bench.py --soak           # ...and the 1,000-cycle soak (about 15 more)
    python3 benches/bench.py --only fetch,idle   # some sections; the others keep their last results
    python3 benches/bench.py --quick          # CI: every section on a tiny size, 1 run (checks the harness)
    BENCH_TEND=path/to/tend python3 benches/bench.py   # an already built binary
    BENCH_PROFILE=release python3 benches/bench.py --quick   # quick, with the release build

Sections: noop, decrypt, fetch, latency, verify, drift, idle, size, soak.

Writes benches/results/bench.md (the table) and benches/results/bench.json (--quick: under
target/bench-quick/, and nothing is judged against the targets there). Each row alternates peer
and tend runs and reports the median and the spread (min..max). Needs what `bash tests/setup.sh`
installs (Docker, the busybox and systemd test images, the Git servers, sops, age, docker-compose,
GNU time).
"""
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benches", "results")
IMAGE = "tend-test/busybox:latest"
TB = os.environ.get("TEND_TB", "/tmp/tend-testbed")
SECTIONS = ["noop", "decrypt", "fetch", "latency", "verify", "drift", "idle", "size", "soak"]
TARGETS = {
    "noop_100_ms": 250,
    "noop_100_speedup": 20,
    "decrypt_speedup": 2,
    "verify_us": 1000,
    "verify_chain_ms": 1000,
    "drift_ms": 20,
    "poll_bytes": 5000,
    "incremental_vs_git": 1.1,
    "idle_rss_mib": 16,
    "sync_peak_rss_mib": 64,
    "idle_cpu_percent": 0.1,
    "binary_mb": 15,
    "soak_growth_mib": 1.0,
}


# --- running things ---------------------------------------------------------------------------

def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True, **kw)


def run_measured(cmd, env=None, cwd=None):
    """Run cmd under GNU time; return (seconds, peak RSS in KiB)."""
    fd, out = tempfile.mkstemp(prefix="tend-bench-time-")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out] + cmd, env=env, cwd=cwd, capture_output=True)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed: {p.stderr.decode(errors='replace')[-800:]}")
        with open(out) as f:
            kib = int(f.read().split()[-1])
        return dt, kib
    finally:
        os.unlink(out)


def timed(cmd, env=None, cwd=None):
    return run_measured(cmd, env=env, cwd=cwd)[0]


def summary(samples, unit="ms", scale=1000.0, digits=2):
    v = [s * scale for s in samples]
    return {f"median_{unit}": round(statistics.median(v), digits), f"min_{unit}": round(min(v), digits),
            f"max_{unit}": round(max(v), digits), "runs": len(v)}


def alternate(a, b, runs):
    """Run a() and b() alternately `runs` times each; return their samples."""
    sa, sb = [], []
    for _ in range(runs):
        sa.append(a())
        sb.append(b())
    return sa, sb


def fmt_ms(s, unit="ms"):
    return f"{s['median_' + unit]:,} {unit} ({s['min_' + unit]:,}..{s['max_' + unit]:,})"


SIGNING_KEY = None  # set by signing_key(): commits are then SSH-signed with it


def git(repo, *args, **kw):
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={SIGNING_KEY}", "-c", "commit.gpgsign=true"] \
        if SIGNING_KEY else ["-c", "commit.gpgsign=false"]
    return sh(["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@example.com"] + sign
              + list(args), **kw)


def signing_key(work):
    """Sign the commits made from now on with a fresh SSH key; the allowed-signers file for it."""
    global SIGNING_KEY
    key = os.path.join(work, "signing_ed25519")
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", key])
    allowed = os.path.join(work, "allowed_signers")
    with open(allowed, "w") as f:
        f.write(f"bench@example.com namespaces=\"git\" {open(key + '.pub').read().strip()}\n")
    SIGNING_KEY = key
    return allowed


def new_repo(path, files, message="bench"):
    """A Git repository at `path` holding `files` ({relative path: text}) in one commit; its id."""
    for rel, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, rel)), exist_ok=True)
        with open(os.path.join(path, rel), "w") as f:
            f.write(text)
    sh(["git", "init", "-q", "-b", "main", path])
    git(path, "add", "-A")
    git(path, "commit", "-qm", message)
    return git(path, "rev-parse", "HEAD").stdout.strip()


def build(quick):
    """The tend binary and the directory of the examples, built as the run needs them."""
    kind = os.environ.get("BENCH_PROFILE", "debug" if quick else "release")
    profile = ["--release"] if kind == "release" else []
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    sh(["cargo", "build", "-q", "-p", "tend", "--examples"] + profile, cwd=ROOT)
    if os.environ.get("BENCH_TEND"):
        return os.environ["BENCH_TEND"], os.path.join(target, kind, "examples")
    sh(["cargo", "build", "-q", "--bin", "tend"] + profile, cwd=ROOT)
    return os.path.join(target, kind, "tend"), os.path.join(target, kind, "examples")


def cleanup_project(project):
    subprocess.run(f"docker ps -aq --filter label=com.docker.compose.project={project} | xargs -r docker rm -f",
                   shell=True, capture_output=True)
    subprocess.run(f"docker network ls -q --filter label=com.docker.compose.project={project} | xargs -r docker network rm",
                   shell=True, capture_output=True)


def compose_file(n, env=None, version=False):
    lines = ["version: '3.7'"] if version else []
    lines.append("services:")
    for i in range(n):
        lines += [f"  s{i}:", f"    image: {IMAGE}", "    command: [\"sleep\", \"100000\"]",
                  "    stop_grace_period: 1s", "    init: true"]
        if env and i in env:
            lines += ["    environment:", f"      V: \"{env[i]}\""]
    return "\n".join(lines) + "\n"


def tend_config(d, url, project, extra="", allowed_signers=None):
    cfg = os.path.join(d, "tend.toml")
    runtime = f"/dev/shm/{os.path.basename(d)}-{os.getpid()}"
    trust = f'allowed_signers = "{allowed_signers}"' if allowed_signers else "allow_unsigned = true"
    with open(cfg, "w") as f:
        f.write(f'[source]\nurl = "{url}"\npoll_interval = "1h"\n[host]\nproject = "{project}"\n'
                f'[paths]\nstate = "{d}/state"\nruntime = "{runtime}"\n[apply]\nsettle = "1s"\n'
                f'[trust]\n{trust}\n{extra}')
    return cfg, runtime


def state_of(d):
    with open(os.path.join(d, "state", "state.json")) as f:
        return json.load(f)


def step_us(state):
    return {s["step"]: s.get("duration_us") for s in state.get("steps", []) if s.get("duration_us") is not None}


def compose_env(project, n):
    # docker-compose 1.29 deadlocks creating hundreds of containers with its default limits.
    return dict(os.environ, COMPOSE_PROJECT_NAME=project, COMPOSE_PARALLEL_LIMIT=str(n + 16),
                COMPOSE_HTTP_TIMEOUT="600")


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("tend", timeout=900)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Daemon:
    """`tend run` in the background, talked to through its local API."""

    def __init__(self, tend, cfg, runtime, log):
        self.tend, self.cfg, self.socket = tend, cfg, os.path.join(runtime, "tend.sock")
        self.log = open(log, "w")
        self.p = subprocess.Popen([tend, "--config", cfg, "run"], stdout=self.log, stderr=subprocess.STDOUT)

    def cli(self, *args, check=True):
        return subprocess.run([self.tend, "--config", self.cfg] + list(args), capture_output=True, text=True,
                              check=check)

    def status(self):
        p = self.cli("status", "--json", check=False)
        try:
            return json.loads(p.stdout)
        except ValueError:
            return {}

    def wait_applied(self, commit, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.p.poll() is not None:
                self.log.flush()
                with open(self.log.name) as f:
                    tail = f.read()[-1500:]
                raise RuntimeError(f"tend run exited with {self.p.returncode}:\n{tail}")
            st = self.status()
            if (st.get("applied") or {}).get("id") == commit:
                return st
            time.sleep(0.5)
        raise RuntimeError(f"tend did not apply {commit[:12]} within {timeout} s; see {self.log.name}")

    def sync(self):
        """`tend sync --wait` through the local API; returns its answer (steps, cycle_us)."""
        conn = UnixHTTP(self.socket)
        conn.request("POST", "/v1/sync?wait=1")
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"{}")
        conn.close()
        if resp.status != 200 or not body.get("ok"):
            raise RuntimeError(f"tend sync --wait failed: {resp.status} {body}")
        return body

    def proc(self, key):
        """A field of /proc/PID/status, in KiB."""
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
        self.log.close()


class CountingProxy:
    """A TCP proxy in front of the Git server that counts the bytes each way."""

    def __init__(self, port):
        self.target = ("127.0.0.1", port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.up = self.down = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def reset(self):
        with self.lock:
            up, down = self.up, self.down
            self.up = self.down = 0
        return up, down

    def accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            threading.Thread(target=self.pump, args=(c, s, "up"), daemon=True).start()
            threading.Thread(target=self.pump, args=(s, c, "down"), daemon=True).start()

    def pump(self, a, b, way):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def testbed_http_port():
    env = {}
    with open(os.path.join(TB, "env")) as f:
        for line in f:
            if "=" in line:
                k, v = line.strip().split("=", 1)
                env[k] = v
    return int(env["TEND_TB_HTTP"].split(":")[2].split("/")[0])


# --- sections ---------------------------------------------------------------------------------

def noop_reconcile(ctx, n):
    """A no-op cycle by tend (`tend run --once`: fetch, verify, load, observe, plan) vs
    `docker-compose up -d` on the same compose file, each with its own converged project."""
    tend, runs, work = ctx["tend"], ctx["runs"], ctx["work"]
    d = os.path.join(work, f"noop{n}")
    repo = os.path.join(d, "repo")
    new_repo(repo, {"compose.yaml": compose_file(n)})
    tproj, dproj = f"bt{n}x{os.getpid()}", f"bd{n}x{os.getpid()}"
    cfg, _ = tend_config(d, repo, tproj)
    dc_dir = os.path.join(d, "dc")
    os.makedirs(dc_dir)
    with open(os.path.join(dc_dir, "docker-compose.yml"), "w") as f:
        f.write(compose_file(n, version=True))
    env = compose_env(dproj, n)
    tend_cmd = [tend, "--config", cfg, "run", "--once"]
    dc_cmd = ["docker-compose", "up", "-d", "--no-color"]
    try:
        _, converge_kib = run_measured(tend_cmd)  # converge (not timed)
        timed(dc_cmd, env=env, cwd=dc_dir)
        before = sh(f"docker ps -q --filter label=com.docker.compose.project={tproj} | sort").stdout.split()
        if len(before) != n:
            raise RuntimeError(f"tend converged {len(before)} of {n} containers")
        dc, td = alternate(lambda: timed(dc_cmd, env=env, cwd=dc_dir), lambda: timed(tend_cmd), runs)
        after = sh(f"docker ps -q --filter label=com.docker.compose.project={tproj} | sort").stdout.split()
        dcs, tds = summary(dc), summary(td)
        return {"services": n, "docker-compose up -d": dcs, "tend run --once": tds,
                "tend recreations": len(set(before) ^ set(after)) // 2,
                "tend converge peak rss kib": converge_kib,
                "speedup": round(dcs["median_ms"] / tds["median_ms"], 1)}
    finally:
        cleanup_project(tproj)
        subprocess.run(["docker-compose", "down", "--remove-orphans", "-t", "1"], env=env, cwd=dc_dir,
                       capture_output=True)
        cleanup_project(dproj)


def section_noop(ctx):
    return [noop_reconcile(ctx, n) for n in ctx["sizes"]]


def section_decrypt(ctx):
    tend, runs, work = ctx["tend"], ctx["runs"], ctx["work"]
    values = 100 if ctx["quick"] else 10000
    d = os.path.join(work, "sops")
    os.makedirs(d)
    key = os.path.join(d, "age.txt")
    sh(["age-keygen", "-o", key])
    pub = [line for line in open(key) if line.startswith("# public key: ")][0].split(": ")[1].strip()
    f = os.path.join(d, "big.yaml")
    with open(f, "w") as fh:
        fh.write("".join(f"key{i:05d}: value-{i}-{'x' * 16}\n" for i in range(values)))
    sh(["sops", "encrypt", "--age", pub, "-i", f])
    env = dict(os.environ, SOPS_AGE_KEY_FILE=key)
    ours = subprocess.run([tend, "--config", "/nonexistent", "decrypt", f], env=env, capture_output=True).stdout
    theirs = subprocess.run(["sops", "decrypt", f], env=env, capture_output=True).stdout
    if not ours or ours != theirs:
        raise RuntimeError("tend decrypt and sops decrypt differ")
    s, t = alternate(lambda: run_measured(["sops", "decrypt", f], env=env),
                     lambda: run_measured([tend, "--config", "/nonexistent", "decrypt", f], env=env), runs)
    ss, ts = summary([x[0] for x in s]), summary([x[0] for x in t])
    return {"values": values, "sops decrypt": ss, "tend decrypt": ts,
            "sops peak rss kib": max(x[1] for x in s), "tend peak rss kib": max(x[1] for x in t),
            "speedup": round(ss["median_ms"] / ts["median_ms"], 1)}


def history_repo(path, commits, refs):
    """A bare repository with `commits` commits on main (each changing one of 200 files) and
    `refs` other refs (half branches, half tags), written with git fast-import."""
    sh(["git", "init", "-q", "--bare", "-b", "main", path])
    lines = []
    t = 1700000000
    for i in range(commits):
        body = f"file {i % 200} revision {i}\n" + ("payload line\n" * (i % 7))
        lines += [f"commit refs/heads/main", f"mark :{i + 1}",
                  f"committer bench <bench@example.com> {t + i} +0000", "data 12", f"commit {i:05d}"]
        if i == 0:
            lines += ["M 100644 inline compose.yaml", "data 13", "services: {}"]
            for j in range(200):
                c = f"file {j} revision 0\n"
                lines += [f"M 100644 inline f/{j:03d}.txt", f"data {len(c)}", c.rstrip("\n")]
        lines += [f"M 100644 inline f/{i % 200:03d}.txt", f"data {len(body.encode())}", body.rstrip("\n")]
    for r in range(refs):
        kind = f"refs/heads/topic/{r}" if r % 2 == 0 else f"refs/tags/v{r}"
        lines += [f"reset {kind}", f"from :{1 + (r * 7919) % commits}"]
    data = "\n".join(lines) + "\n"
    subprocess.run(["git", "-C", path, "fast-import", "--quiet"], input=data.encode(), check=True)
    sh(["git", "-C", path, "repack", "-adq"])
    sh(["git", "-C", path, "pack-refs", "--all"])


def section_fetch(ctx):
    """First sync and incremental fetch of a long history through a counting proxy in front of
    git http-backend: tend (`tend run --once` on a repository with nothing to apply) vs git."""
    tend, runs, work, quick = ctx["tend"], ctx["runs"], ctx["work"], ctx["quick"]
    commits, refs = (50, 100) if quick else (5000, 10000)
    name = f"bench-history-{os.getpid()}.git"
    bare = os.path.join(TB, "srv", name)
    shutil.rmtree(bare, ignore_errors=True)
    history_repo(bare, commits, refs)
    pusher = os.path.join(work, "pusher")
    sh(["git", "clone", "-q", bare, pusher])
    proxy = CountingProxy(testbed_http_port())
    url = f"http://127.0.0.1:{proxy.port}/git/{name}"
    result = {"commits": commits, "refs": refs}
    try:
        def wire(cmd):
            """(seconds, peak RSS KiB, bytes both ways) of one run of cmd."""
            proxy.reset()
            dt, kib = run_measured(cmd)
            return dt, kib, sum(proxy.reset())

        def tend_once(tdir, steps):
            sample = wire([tend, "--config", os.path.join(tdir, "tend.toml"), "run", "--once"])
            steps.append(step_us(state_of(tdir)).get("fetch", 0) / 1e6)
            return sample

        def side(samples, bytes_, steps=None):
            out = {**summary([x[0] for x in samples]), "bytes": bytes_, "peak_rss_kib": max(x[1] for x in samples)}
            return {**out, "fetch_step": summary(steps)} if steps else out

        git_fetch = ["git", "-C", None, "fetch", "-q", "--no-tags", "origin", "+refs/heads/main:refs/heads/main"]

        # First sync: a fresh clone each run.
        g_first, t_first, t_first_step = [], [], []
        gdir = tdir = None
        for i in range(runs):
            gdir = os.path.join(work, f"gclone{i}")
            g_first.append(wire(["git", "clone", "-q", "--bare", "--single-branch", "--branch", "main",
                                 "--no-tags", url, gdir]))
            tdir = os.path.join(work, f"tend{i}")
            os.makedirs(tdir)
            tend_config(tdir, url, f"bf{os.getpid()}")
            t_first.append(tend_once(tdir, t_first_step))
        result["first sync"] = {"git clone": side(g_first, g_first[-1][2]),
                                "tend": side(t_first, t_first[-1][2], t_first_step)}
        git_fetch[2] = gdir

        # Incremental: the same new commit (one file changed) fetched by both.
        g_inc, t_inc, t_inc_step = [], [], []
        for i in range(runs):
            with open(os.path.join(pusher, "f", f"{i % 200:03d}.txt"), "a") as f:
                f.write(f"incremental change {i}\n")
            git(pusher, "commit", "-qam", f"incremental {i}")
            git(pusher, "push", "-q", "origin", "main")
            g_inc.append(wire(git_fetch))
            t_inc.append(tend_once(tdir, t_inc_step))
        head = git(pusher, "rev-parse", "HEAD").stdout.strip()
        if (state_of(tdir).get("applied") or {}).get("id") != head:
            raise RuntimeError("tend did not apply the last incremental commit")
        gb, tb = statistics.median(x[2] for x in g_inc), statistics.median(x[2] for x in t_inc)
        result["incremental"] = {"git fetch": side(g_inc, gb), "tend": side(t_inc, tb, t_inc_step),
                                 "bytes_ratio": round(tb / gb, 3)}

        # No-op poll: nothing new.
        g_noop, t_noop, t_noop_step = [], [], []
        for _ in range(runs):
            g_noop.append(wire(git_fetch))
            t_noop.append(tend_once(tdir, t_noop_step))
        result["no-op poll"] = {"git fetch": side(g_noop, statistics.median(x[2] for x in g_noop)),
                                "tend": side(t_noop, statistics.median(x[2] for x in t_noop), t_noop_step)}
        return result
    finally:
        shutil.rmtree(bare, ignore_errors=True)


def section_latency(ctx):
    """Commit to converged for a change to one of 10 services: the cycle a sync starts, by step
    (the poll interval is not counted), vs docker-compose up -d after the same edit."""
    tend, runs, work, quick = ctx["tend"], ctx["runs"], ctx["work"], ctx["quick"]
    n = 3 if quick else 10
    d = os.path.join(work, "latency")
    repo = os.path.join(d, "repo")
    os.makedirs(d)
    allowed = signing_key(d)  # signed commits, as on a real host
    head = new_repo(repo, {"compose.yaml": compose_file(n, env={0: "0"})})
    tproj, dproj = f"bl{os.getpid()}", f"bld{os.getpid()}"
    cfg, runtime = tend_config(d, repo, tproj, allowed_signers=allowed)
    dc_dir = os.path.join(d, "dc")
    os.makedirs(dc_dir)
    env = compose_env(dproj, n)
    daemon = Daemon(tend, cfg, runtime, os.path.join(d, "tend.log"))
    try:
        daemon.wait_applied(head, 300)
        with open(os.path.join(dc_dir, "docker-compose.yml"), "w") as f:
            f.write(compose_file(n, env={0: "0"}, version=True))
        timed(["docker-compose", "up", "-d", "--no-color"], env=env, cwd=dc_dir)
        dc, cycles, syncs = [], [], []
        steps = {}
        for i in range(1, runs + 1):
            with open(os.path.join(dc_dir, "docker-compose.yml"), "w") as f:
                f.write(compose_file(n, env={0: str(i)}, version=True))
            dc.append(timed(["docker-compose", "up", "-d", "--no-color"], env=env, cwd=dc_dir))
            with open(os.path.join(repo, "compose.yaml"), "w") as f:
                f.write(compose_file(n, env={0: str(i)}))
            git(repo, "commit", "-qam", f"change {i}")
            t0 = time.perf_counter()
            st = daemon.sync()
            syncs.append(time.perf_counter() - t0)
            if st.get("applied") != git(repo, "rev-parse", "HEAD").stdout.strip() or not st.get("changes"):
                raise RuntimeError(f"the sync did not apply the change: {st}")
            cycles.append(st["cycle_us"] / 1e6)
            for k, v in step_us(st).items():
                steps.setdefault(k, []).append(v / 1e6)
        dcs, cs = summary(dc), summary(cycles)
        return {"services": n, "settle_s": 1, "signed": True, "docker-compose up -d": dcs, "tend cycle": cs,
                "tend sync --wait": summary(syncs), "tend steps": {k: summary(v) for k, v in steps.items()}}
    finally:
        global SIGNING_KEY
        SIGNING_KEY = None
        daemon.stop()
        cleanup_project(tproj)
        subprocess.run(["docker-compose", "down", "-t", "1"], env=env, cwd=dc_dir, capture_output=True)
        cleanup_project(dproj)


def example_json(examples, name, args):
    p = subprocess.run([os.path.join(examples, name)] + args, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"{name} failed: {p.stdout[-800:]} {p.stderr[-800:]}")
    for line in p.stdout.splitlines():
        if line.startswith("json: "):
            return json.loads(line[6:]), p.stdout
    raise RuntimeError(f"{name} printed no json line: {p.stdout[-800:]}")


def section_verify(ctx):
    """Verifying a signed commit in process vs `git verify-commit` (ssh-keygen / gpg)."""
    quick = ctx["quick"]
    iterations, chain = ("50", "20") if quick else ("2000", "1000")
    res, out = example_json(ctx["examples"], "bench_verify", [iterations, chain])
    fixtures = re.search(r"fixtures ready in .* \((.*)\)", out).group(1)
    manifest = dict(line.split("=", 1) for line in open(os.path.join(fixtures, "manifest.env")).read().splitlines()
                    if "=" in line)
    gnupg = tempfile.mkdtemp(prefix="tend-bench-gnupg-")
    try:
        sh(["gpg", "--homedir", gnupg, "--batch", "--quiet", "--import", os.path.join(fixtures, "keyring.asc")])
        repo = os.path.join(fixtures, "repo")
        env = dict(os.environ, GNUPGHOME=gnupg)
        peers = {}
        for kind in ("ssh_ed25519", "pgp_ed25519"):
            cmd = ["git", "-C", repo, "-c", f"gpg.ssh.allowedSignersFile={fixtures}/allowed_signers",
                   "verify-commit", manifest[kind]]
            samples = [timed(cmd, env=env) for _ in range(ctx["runs"] * 4)]
            peers[kind] = summary(samples, "us", 1e6, 0)
        res["git verify-commit"] = peers
        return res
    finally:
        shutil.rmtree(gnupg, ignore_errors=True)


def section_drift(ctx):
    units, iterations = ("5", "5") if ctx["quick"] else ("50", "40")
    res, _ = example_json(ctx["examples"], "drift_bench", [units, iterations])
    return res


def unit_file(i):
    return (f"[Unit]\nDescription=bench {i}\n[Service]\nExecStart=/bin/sleep infinity\n"
            "[Install]\nWantedBy=multi-user.target\n")


class SystemdNode:
    def __init__(self, name):
        self.name = name
        out = subprocess.run([os.path.join(ROOT, "tests", "fixtures", "run-systemd-node.sh"), name],
                             capture_output=True, text=True, env=dict(os.environ, TEND_NODE_WAIT_SECS="120"))
        if out.returncode != 0:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            raise RuntimeError(f"systemd node: {out.stderr[-500:]}")
        self.pid = int(out.stdout.strip())

    def config(self):
        return (f'[systemd]\nbus = "unix:path=/proc/{self.pid}/root/run/dbus/system_bus_socket"\n'
                f'unit_dir = "/proc/{self.pid}/root/etc/systemd/system"\n')

    def active(self, prefix):
        out = subprocess.run(["docker", "exec", self.name, "systemctl", "list-units", "--state=active",
                              "--no-legend", "--plain", f"{prefix}*"], capture_output=True, text=True)
        return len(out.stdout.split("\n")) - 1 if out.stdout.strip() else 0

    def remove(self):
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)


def section_idle(ctx):
    """The daemon at rest with 50 containers and 20 units, polling over HTTP every 10 s."""
    tend, work, quick = ctx["tend"], ctx["work"], ctx["quick"]
    containers, units, duration = (3, 2, 30) if quick else (50, 20, 600)
    d = os.path.join(work, "idle")
    name = f"bench-idle-{os.getpid()}.git"
    bare = os.path.join(TB, "srv", name)
    seed = os.path.join(d, "seed")
    files = {f"units/bench-{i:02d}.service": unit_file(i) for i in range(units)}
    head = new_repo(seed, {"compose.yaml": compose_file(containers), **files}, "idle")
    sh(["git", "clone", "-q", "--bare", seed, bare])
    proj = f"bi{os.getpid()}"
    node = SystemdNode(f"tend-bench-node-{os.getpid()}")
    daemon = None
    try:
        cfg, runtime = tend_config(d, f"http://127.0.0.1:{testbed_http_port()}/git/{name}", proj, node.config())
        with open(cfg) as f:
            text = f.read().replace('poll_interval = "1h"', 'poll_interval = "10s"')
        with open(cfg, "w") as f:
            f.write(text)
        daemon = Daemon(tend, cfg, runtime, os.path.join(d, "tend.log"))
        daemon.wait_applied(head, 600)
        running = len(sh(f"docker ps -q --filter label=com.docker.compose.project={proj}").stdout.split())
        active = node.active("bench-")
        if running != containers or active != units:
            raise RuntimeError(f"not converged: {running} containers, {active} units")
        time.sleep(5)
        cpu0, t0 = daemon.cpu_seconds(), time.time()
        rss_samples = []
        while time.time() - t0 < duration:
            time.sleep(min(30, duration / 10))
            rss_samples.append(daemon.proc("VmRSS"))
        cpu, elapsed = daemon.cpu_seconds() - cpu0, time.time() - t0
        st = daemon.status()
        return {"containers": containers, "units": units, "poll_s": 10, "duration_s": round(elapsed),
                "rss_kib": daemon.proc("VmRSS"), "rss_anon_kib": daemon.proc("RssAnon"),
                "rss_file_kib": daemon.proc("RssFile"), "peak_rss_kib": daemon.proc("VmHWM"),
                "rss_samples_kib": rss_samples,
                "cpu_s": round(cpu, 3), "cpu_s_per_hour": round(cpu / elapsed * 3600, 2),
                "cpu_percent": round(cpu / elapsed * 100, 4),
                "still_applied": (st.get("applied") or {}).get("id") == head}
    finally:
        if daemon:
            daemon.stop()
        node.remove()
        cleanup_project(proj)
        shutil.rmtree(bare, ignore_errors=True)


def section_size(ctx):
    stripped = os.path.join(ctx["work"], "tend-stripped")
    shutil.copy(ctx["tend"], stripped)
    sh(["strip", stripped])
    return {"bytes": os.path.getsize(stripped), "profile": ctx["profile"]}


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx, my = sum(p[0] for p in points) / n, sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else 0.0


def section_soak(ctx):
    """1,000 cycles that each apply a change (an environment value, and every 10th cycle a service
    added or removed), RSS sampled; the growth past the first 100 cycles is what counts."""
    tend, work, quick = ctx["tend"], ctx["work"], ctx["quick"]
    cycles = 10 if quick else 1000
    every = 2 if quick else 50
    d = os.path.join(work, "soak")
    name = f"bench-soak-{os.getpid()}.git"
    bare = os.path.join(TB, "srv", name)
    repo = os.path.join(d, "repo")

    def compose(i):
        return compose_file(3 + (i // 10) % 2, env={i % 3: str(i)})

    head = new_repo(repo, {"compose.yaml": compose(0)}, "soak 0")
    sh(["git", "clone", "-q", "--bare", repo, bare])
    git(repo, "remote", "add", "origin", bare)
    proj = f"bs{os.getpid()}"
    cfg, runtime = tend_config(d, f"http://127.0.0.1:{testbed_http_port()}/git/{name}", proj)
    with open(cfg) as f:
        text = f.read().replace('settle = "1s"', 'settle = "200ms"')
    with open(cfg, "w") as f:
        f.write(text)
    daemon = Daemon(tend, cfg, runtime, os.path.join(d, "tend.log"))
    try:
        daemon.wait_applied(head, 300)
        def sample(i):
            return [i, daemon.proc("VmRSS"), daemon.proc("RssAnon"), daemon.proc("RssFile")]

        samples, failed = [sample(0)], 0
        t0 = time.time()
        for i in range(1, cycles + 1):
            with open(os.path.join(repo, "compose.yaml"), "w") as f:
                f.write(compose(i))
            git(repo, "commit", "-qam", f"soak {i}")
            git(repo, "push", "-q", "origin", "main")
            try:
                daemon.sync()
            except RuntimeError:
                failed += 1
            if i % every == 0:
                samples.append(sample(i))
                print(f"  soak: {i} cycles, RSS {samples[-1][1] / 1024:.1f} MiB (anon {samples[-1][2] / 1024:.1f})",
                      flush=True)
        st = daemon.status()
        applied = (st.get("applied") or {}).get("id") == git(repo, "rev-parse", "HEAD").stdout.strip()
        # RSS moves up and down by a few hundred KiB (pack mappings come and go with each fetch
        # and consolidation), so growth is the least-squares line through the samples after
        # the first 100 cycles (the warm-up: pools, caches), extrapolated to 1,000 cycles.
        warm = [x for x in samples if x[0] >= min(100, cycles // 2)]
        packs = len([p for p in os.listdir(os.path.join(d, "state", "repo.git", "objects", "pack"))
                     if p.endswith(".pack")]) if os.path.isdir(os.path.join(d, "state", "repo.git")) else None
        return {"cycles": cycles, "failed": failed, "last_applied": applied, "minutes": round((time.time() - t0) / 60, 1),
                "rss_samples_kib": samples, "rss_start_kib": samples[0][1], "rss_end_kib": samples[-1][1],
                "rss_warm_kib": warm[0][1], "warm_cycle": warm[0][0],
                "growth_per_1000_cycles_kib": round(slope([(x[0], x[1]) for x in warm]) * 1000),
                "anon_growth_per_1000_cycles_kib": round(slope([(x[0], x[2]) for x in warm]) * 1000),
                "peak_rss_kib": daemon.proc("VmHWM"),
                "packs": packs}
    finally:
        daemon.stop()
        cleanup_project(proj)
        shutil.rmtree(bare, ignore_errors=True)


# --- the table --------------------------------------------------------------------------------

def verdict(ok, quick):
    if quick:
        return "not judged (quick)"
    return "met" if ok else "**missed**"


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def table(r):
    q = r.get("quick", False)
    at = {}
    for sec, c in r.get("section_commits", {}).items():
        at.setdefault(c, []).append(sec)
    built = "; ".join(f"{c} ({', '.join(secs)})" for c, secs in at.items()) if len(at) > 1 else r.get("commit", "?")
    md = [f"tend {built}; {r.get('machine', '')}; {r.get('date', '')}", "",
          "| benchmark | peer (median, min..max) | tend (median, min..max) | ratio | target | verdict |",
          "|---|---|---|---|---|---|"]
    for x in r.get("noop", []):
        dc, td = x["docker-compose up -d"], x["tend run --once"]
        row = f"| no-op reconcile, {x['services']} services (tend recreated {x['tend recreations']}) | " \
              f"docker-compose up -d {fmt_ms(dc)} | {fmt_ms(td)} | {x['speedup']}x |"
        if x["services"] == 100:
            ok = td["median_ms"] < TARGETS["noop_100_ms"] and x["speedup"] >= TARGETS["noop_100_speedup"]
            row += f" < 250 ms, >= 20x | {verdict(ok, q)} |"
        else:
            row += " | |"
        md.append(row)
    if "decrypt" in r:
        x = r["decrypt"]
        md.append(f"| decrypt a {x['values']:,}-value SOPS YAML (peak RSS {mib(x['sops peak rss kib'])} vs "
                  f"{mib(x['tend peak rss kib'])}) | sops decrypt {fmt_ms(x['sops decrypt'])} | "
                  f"{fmt_ms(x['tend decrypt'])} | {x['speedup']}x | >= 2x | "
                  f"{verdict(x['speedup'] >= TARGETS['decrypt_speedup'], q)} |")
    if "fetch" in r:
        x = r["fetch"]
        fs, inc, noop = x["first sync"], x["incremental"], x["no-op poll"]
        g, t = fs["git clone"], fs["tend"]
        md.append(f"| first sync, {x['commits']:,} commits, {x['refs']:,} refs (bytes; peak RSS) | git clone "
                  f"{fmt_ms(g)}; {g['bytes']:,} B; {mib(g['peak_rss_kib'])} | {fmt_ms(t)} (fetch step "
                  f"{t['fetch_step']['median_ms']} ms); {t['bytes']:,} B; {mib(t['peak_rss_kib'])} | "
                  f"{g['median_ms'] / t['median_ms']:.2f}x | peak RSS <= 64 MiB | "
                  f"{verdict(t['peak_rss_kib'] <= TARGETS['sync_peak_rss_mib'] * 1024, q)} |")
        g, t = inc["git fetch"], inc["tend"]
        md.append(f"| incremental fetch, one file changed (bytes) | git fetch {fmt_ms(g)}; {g['bytes']:,.0f} B | "
                  f"{fmt_ms(t)} (fetch step {t['fetch_step']['median_ms']} ms); {t['bytes']:,.0f} B | "
                  f"bytes {inc['bytes_ratio']}x git's | <= 1.1x git's bytes | "
                  f"{verdict(inc['bytes_ratio'] <= TARGETS['incremental_vs_git'], q)} |")
        g, t = noop["git fetch"], noop["tend"]
        md.append(f"| no-op poll (bytes) | git fetch {fmt_ms(g)}; {g['bytes']:,.0f} B | {fmt_ms(t)} "
                  f"(fetch step {t['fetch_step']['median_ms']} ms); {t['bytes']:,.0f} B, no pack | | <= 5 KB | "
                  f"{verdict(t['bytes'] <= TARGETS['poll_bytes'], q)} |")
    if "latency" in r:
        x = r["latency"]
        steps = ", ".join(f"{k} {v['median_ms']:.0f} ms" if v["median_ms"] >= 100 else f"{k} {v['median_ms']:.3g} ms"
                          for k, v in x["tend steps"].items())
        md.append(f"| commit to converged, one of {x['services']} services changed, signed commits "
                  f"(settle {x['settle_s']} s) | "
                  f"docker-compose up -d {fmt_ms(x['docker-compose up -d'])} | cycle {fmt_ms(x['tend cycle'])}: "
                  f"{steps} | | | |")
    if "verify" in r:
        x = r["verify"]
        gv = x.get("git verify-commit", {})
        for kind, label in (("ssh_ed25519", "SSH ed25519"), ("pgp_ed25519", "OpenPGP ed25519")):
            us = x[f"{kind}_us"]
            peer = gv.get(kind)
            md.append(f"| verify one commit, {label} | git verify-commit {fmt_ms(peer, 'us') if peer else '-'} | "
                      f"{us:.1f} us (in process) | {peer['median_us'] / us:.0f}x | < 1 ms | "
                      f"{verdict(us < TARGETS['verify_us'], q)} |")
        for kind in ("ssh", "pgp"):
            ms_ = x[f"chain_{kind}_ms"]
            md.append(f"| require = \"all\" over {x['chain']:,} commits, {kind} | | {ms_:.1f} ms | | < 1 s | "
                      f"{verdict(ms_ < TARGETS['verify_chain_ms'], q)} |")
    if "drift" in r:
        x = r["drift"]
        for label, key in (("steady state", "steady_ms"), ("cold, after systemd signals a change", "cold_ms")):
            med = x[key]["median"]
            md.append(f"| no-op drift check, {x['units']} units, {label} | nsenter systemctl show per unit "
                      f"{x['nsenter_ms']['median']:.0f} ms | {med:.2f} ms (p95 {x[key]['p95']:.2f}) | "
                      f"{x['nsenter_ms']['median'] / med:.0f}x | < 20 ms | "
                      f"{verdict(med < TARGETS['drift_ms'], q)} |")
    if "idle" in r:
        x = r["idle"]
        took = f"{x['duration_s'] // 60} min" if x["duration_s"] >= 120 else f"{x['duration_s']} s"
        md.append(f"| idle daemon RSS after {took}, {x['containers']} containers + "
                  f"{x['units']} units, {x['poll_s']} s polls | | {mib(x['rss_kib'])} (anon {mib(x['rss_anon_kib'])}, "
                  f"file {mib(x['rss_file_kib'])}) | | <= 16 MiB | "
                  f"{verdict(x['rss_kib'] <= TARGETS['idle_rss_mib'] * 1024, q)} |")
        md.append(f"| peak RSS of the daemon (first sync and apply of the above) | | {mib(x['peak_rss_kib'])} | | "
                  f"<= 64 MiB | {verdict(x['peak_rss_kib'] <= TARGETS['sync_peak_rss_mib'] * 1024, q)} |")
        md.append(f"| idle CPU | | {x['cpu_s_per_hour']} s per hour = {x['cpu_percent']:.3f}% of a core | | "
                  f"<= 0.1% | {verdict(x['cpu_percent'] <= TARGETS['idle_cpu_percent'], q)} |")
    if "size" in r:
        x = r["size"]
        md.append(f"| binary size ({x['profile']}, stripped) | | {x['bytes'] / 1e6:.2f} MB | | <= 15 MB | "
                  f"{verdict(x['bytes'] <= TARGETS['binary_mb'] * 1e6, q or x['profile'] != 'release')} |")
    if "soak" in r:
        x = r["soak"]
        flat = x["growth_per_1000_cycles_kib"] < TARGETS["soak_growth_mib"] * 1024 and x["failed"] == 0
        md.append(f"| soak: {x['cycles']:,} cycles with changes ({x['failed']} failed, {x['minutes']} min) | | "
                  f"RSS {mib(x['rss_start_kib'])} at start, {mib(x['rss_warm_kib'])} after {x.get('warm_cycle', 100)} cycles, "
                  f"{mib(x['rss_end_kib'])} at the end; fitted growth {mib(x['growth_per_1000_cycles_kib'])} "
                  f"per 1,000 cycles (anon {mib(x['anon_growth_per_1000_cycles_kib'])}); peak "
                  f"{mib(x['peak_rss_kib'])} | | flat (< 1 MiB per 1,000 cycles) | {verdict(flat, q)} |")
    return "\n".join(md) + "\n"


def main():
    args = sys.argv[1:]
    quick = "--quick" in args
    only = None
    if "--only" in args:
        only = args[args.index("--only") + 1].split(",")
        unknown = set(only) - set(SECTIONS)
        if unknown:
            sys.exit(f"unknown sections: {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    chosen = only or [s for s in SECTIONS if s != "soak" or "--soak" in args or quick]
    out = os.path.join(ROOT, "target", "bench-quick") if quick else OUT
    os.makedirs(out, exist_ok=True)
    results = {}
    if only and os.path.exists(os.path.join(out, "bench.json")):
        with open(os.path.join(out, "bench.json")) as f:
            results = json.load(f)
    tend, examples = build(quick)
    profile = os.path.basename(os.path.dirname(examples))
    work = tempfile.mkdtemp(prefix="tend-bench-")
    ctx = {"tend": tend, "examples": examples, "profile": profile, "work": work, "quick": quick, "runs": 1 if quick else 5,
           "sizes": [3] if quick else [int(n) for n in os.environ.get("BENCH_SIZES", "10,100,300").split(",")]}
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "agent"], capture_output=True,
                           text=True).stdout.strip()
    results.update({"quick": quick, "commit": commit + ("+changes" if dirty else ""),
                    "machine": f"{os.cpu_count()} cores, {os.uname().release}", "date": time.strftime("%Y-%m-%d")})
    results.setdefault("section_commits", {})
    try:
        for s in chosen:
            print(f"{s}...", flush=True)
            t0 = time.time()
            results[s] = globals()[f"section_{s}"](ctx)
            results["section_commits"][s] = results["commit"]
            print(f"  {s} done in {time.time() - t0:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with open(os.path.join(out, "bench.json"), "w") as f:
            json.dump(results, f, indent=2)
    md = table(results)
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
