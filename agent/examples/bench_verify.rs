//! Times commit verification on fixtures made by the real tools.
//!
//! ```text
//! cargo run --release --example bench_verify [-- ITERATIONS [CHAIN_LEN]]
//! ```
//!
//! Builds (once, cached under the workspace's target/tmp) the fixture repository plus two
//! chains of CHAIN_LEN signed commits (SSH ed25519 and OpenPGP ed25519),
//! loads all commits into memory, then reports:
//! * trust store load time,
//! * per-commit `verify_commit` time for each key type,
//! * `check(Require::All)` over each chain,
//! * and prints the verdict for every fixture commit (error messages as an
//!   operator sees them).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tend::trust::{check, CommitSource, Error, Require, TrustStore};

struct Mem(HashMap<String, Vec<u8>>);

impl CommitSource for Mem {
    fn raw_commit(&self, id: &str) -> Result<Vec<u8>, Error> {
        self.0
            .get(id)
            .cloned()
            .ok_or_else(|| Error::commit_read(id, "not in memory"))
    }
}

fn die(msg: &str) -> ! {
    eprintln!("bench_verify: {msg}");
    std::process::exit(1)
}

/// All commits of the repository, read with one `git cat-file --batch`.
fn load_all(repo: &Path) -> HashMap<String, Vec<u8>> {
    let list = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname) %(objecttype)",
        ])
        .output()
        .unwrap_or_else(|e| die(&format!("git: {e}")));
    let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(" commit").map(str::to_string))
        .collect();
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| die(&format!("git: {e}")));
    let mut stdin = child.stdin.take().unwrap_or_else(|| die("no stdin"));
    let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap_or_else(|e| die(&format!("git: {e}")));
    let _ = writer.join();
    let mut map = HashMap::new();
    let mut rest = &out.stdout[..];
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
        let mut parts = header.split(' ');
        let (Some(id), Some(_), Some(size)) = (parts.next(), parts.next(), parts.next()) else {
            die("bad cat-file header")
        };
        let size: usize = size.parse().unwrap_or_else(|_| die("bad size"));
        let body = &rest[nl + 1..nl + 1 + size];
        map.insert(id.to_string(), body.to_vec());
        rest = &rest[nl + 1 + size + 1..];
    }
    map
}

fn per_iter(total: Duration, n: u32) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / f64::from(n))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iterations: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let chain: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The workspace's target directory (not agent/target, which nothing ignores).
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("../target"), PathBuf::from);
    let dir = target.join(format!("tmp/trust-bench-fixtures-{chain}"));
    let t = Instant::now();
    let status = Command::new("bash")
        .arg(root.join("../tests/fixtures/make-trust-fixtures.sh"))
        .arg(&dir)
        .args(["--bench", &chain.to_string()])
        .status()
        .unwrap_or_else(|e| die(&format!("fixture script: {e}")));
    if !status.success() {
        die("fixture script failed");
    }
    println!("fixtures ready in {:.1?} ({})", t.elapsed(), dir.display());

    let manifest: HashMap<String, String> = std::fs::read_to_string(dir.join("manifest.env"))
        .unwrap_or_else(|e| die(&format!("manifest: {e}")))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = |k: &str| {
        manifest
            .get(k)
            .cloned()
            .unwrap_or_else(|| die(&format!("manifest lacks {k}")))
    };

    let t = Instant::now();
    let mut store = None;
    for _ in 0..10 {
        store = Some(
            TrustStore::load(Some(&dir.join("allowed_signers")), Some(&dir.join("keyring.asc")))
                .unwrap_or_else(|e| die(&e.to_string())),
        );
    }
    let store = store.unwrap_or_else(|| die("no store"));
    println!(
        "trust store load ({} SSH lines, {} OpenPGP keys): {:.2} ms",
        store.allowed_signers().map_or(0, |s| s.entries().len()),
        store.openpgp_keyring().map_or(0, |k| k.len()),
        t.elapsed().as_secs_f64() * 1e3 / 10.0
    );

    let commits = load_all(&dir.join("repo"));
    println!("{} commits loaded into memory", commits.len());
    let src = Mem(commits);

    let mut json = serde_json::Map::new();
    println!("\nverify_commit, {iterations} iterations each:");
    for name in [
        "ssh_ed25519",
        "ssh_ecdsa",
        "ssh_ecdsa384",
        "ssh_rsa",
        "pgp_ed25519",
        "pgp_rsa",
        "pgp_subkey",
        "unsigned",
        "ssh_untrusted",
    ] {
        let id = get(name);
        let raw = src.raw_commit(&id).unwrap_or_else(|e| die(&e.to_string()));
        let t = Instant::now();
        let mut ok = 0u32;
        for _ in 0..iterations {
            if std::hint::black_box(store.verify_commit(&id, &raw)).is_ok() {
                ok += 1;
            }
        }
        json.insert(
            format!("{name}_us"),
            serde_json::json!(t.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)),
        );
        println!(
            "  {name:<14} {:>10} per commit ({})",
            per_iter(t.elapsed(), iterations),
            if ok == iterations { "accepted" } else { "refused" }
        );
    }

    println!("\ncheck(Require::All) over a chain of {chain} signed commits (in-memory source):");
    for kind in ["ssh", "pgp"] {
        let base = get(&format!("bench_{kind}_base"));
        let tip = get(&format!("bench_{kind}_tip"));
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let v = check(&store, &src, &tip, Some(&base), Require::All, None).unwrap_or_else(|e| die(&e.to_string()));
            times.push(t.elapsed());
            assert_eq!(v.checked_commits, chain as usize);
        }
        times.sort();
        json.insert(
            format!("chain_{kind}_ms"),
            serde_json::json!(times[2].as_secs_f64() * 1e3),
        );
        println!(
            "  {kind}: median {:.1} ms, min {:.1} ms ({} commits verified)",
            times[2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            chain
        );
    }

    json.insert("chain".into(), serde_json::json!(chain));
    println!("json: {}", serde_json::Value::Object(json));

    println!("\nverdicts for the fixture commits:");
    let mut names: Vec<&String> = manifest
        .keys()
        .filter(|k| manifest[*k].len() == 40 && !k.contains("fpr") && !k.starts_with("bench_"))
        .collect();
    names.sort();
    for name in names {
        let id = &manifest[name];
        let raw = src.raw_commit(id).unwrap_or_else(|e| die(&e.to_string()));
        match store.verify_commit(id, &raw) {
            Ok(s) => println!("  {name:<22} OK   {s}"),
            Err(e) => println!("  {name:<22} FAIL {e}"),
        }
    }
}
