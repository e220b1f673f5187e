//! Compares decryption with the real `sops` on fixtures made by
//! `tests-fixtures/make-sops-fixtures.sh` (run once per test binary).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tend::secrets::{decrypt, parse, recipients, Error, Format, Identities};

struct Fixture {
    name: String,
    expect: String,
    identity: String,
    roundtrip: bool,
}

fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = option_env!("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = target.join("sops-fixtures");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/make-sops-fixtures.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .status()
            .expect("bash runs the fixture script");
        assert!(status.success(), "fixture script failed");
        dir
    })
}

fn manifest() -> Vec<Fixture> {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.tsv")).expect("manifest");
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Fixture {
                name: f[0].to_string(),
                expect: f[1].to_string(),
                identity: f[2].to_string(),
                roundtrip: f.get(3) == Some(&"yes"),
            }
        })
        .collect()
}

fn identities(which: &str) -> Identities {
    let keys = fixtures_dir().join("keys");
    let file = match which {
        "keys" => "keys.txt",
        "key1" => "key1.txt",
        "key2" => "key2.txt",
        "ssh_ed25519" => "ssh_ed25519",
        "ssh_rsa" => "ssh_rsa",
        other => panic!("unknown identity {other}"),
    };
    Identities::load(&[keys.join(file)]).expect("identities load")
}

fn run(f: &Fixture) -> Result<Vec<u8>, Error> {
    let path = fixtures_dir().join("enc").join(&f.name);
    let bytes = std::fs::read(&path).expect("encrypted fixture");
    let doc = decrypt(
        &f.name,
        &bytes,
        Format::from_path(&path),
        &identities(&f.identity),
    )?;
    Ok(doc.to_bytes()?.to_vec())
}

#[test]
fn fixture_set_is_complete() {
    let m = manifest();
    assert!(m.len() >= 30, "only {} fixtures", m.len());
    for kind in [
        "ok",
        "bad_value",
        "mac_mismatch",
        "no_identity",
        "unsupported_key",
    ] {
        assert!(m.iter().any(|f| f.expect == kind), "no fixture for {kind}");
    }
}

#[test]
fn decrypted_output_matches_sops_byte_for_byte() {
    let mut checked = 0;
    for f in manifest().iter().filter(|f| f.expect == "ok") {
        let ours = run(f).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let reference =
            std::fs::read(fixtures_dir().join("expected").join(&f.name)).expect("expected output");
        assert!(
            ours == reference,
            "{}: output differs from sops decrypt\n--- ours ---\n{}\n--- sops ---\n{}",
            f.name,
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&reference)
        );
        if f.roundtrip {
            let plain =
                std::fs::read(fixtures_dir().join("plain").join(&f.name)).expect("plaintext");
            assert!(
                ours == plain,
                "{}: output differs from the original plaintext",
                f.name
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} files compared");
}

#[test]
fn refusals_have_the_right_error() {
    for f in manifest().iter().filter(|f| f.expect != "ok") {
        let err = match run(f) {
            Ok(_) => panic!("{} decrypted but must be refused", f.name),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(
            msg.contains(&f.name),
            "{}: error does not name the file: {msg}",
            f.name
        );
        match (f.expect.as_str(), &err) {
            ("bad_value", Error::BadValue { key, .. }) => assert!(!key.is_empty()),
            ("mac_mismatch", Error::MacMismatch { .. }) => {}
            ("unsupported_key", Error::UnsupportedKeyType { key_types, .. }) => {
                assert_eq!(key_types, &vec!["pgp".to_string()])
            }
            (
                "no_identity",
                Error::NoMatchingIdentity {
                    recipients,
                    host_keys,
                    ..
                },
            ) => {
                assert!(!recipients.is_empty());
                assert!(!host_keys.is_empty());
                assert!(msg.contains("add the host's key as a recipient"));
                for r in recipients {
                    assert!(msg.contains(r.as_str()));
                }
            }
            (want, got) => panic!("{}: expected {want}, got {got:?}", f.name),
        }
    }
}

#[test]
fn tampered_value_error_names_key_and_hides_plaintext() {
    let f = Fixture {
        name: "tampered-value.yaml".into(),
        expect: "bad_value".into(),
        identity: "keys".into(),
        roundtrip: false,
    };
    match run(&f) {
        Err(Error::BadValue { key, .. }) => assert_eq!(key, "database:password"),
        other => panic!("expected BadValue, got {other:?}"),
    }
    let err = run(&f).expect_err("refused");
    assert!(!format!("{err} {err:?}").contains("w0rd"));
}

#[test]
fn ssh_public_keys_and_recipients_are_listed() {
    let dir = fixtures_dir();
    let ids = identities("ssh_ed25519");
    let pub_line = std::fs::read_to_string(dir.join("keys/ssh_ed25519.pub")).expect("pub");
    let core: Vec<&str> = pub_line.split_whitespace().take(2).collect();
    assert_eq!(ids.public_keys(), vec![core.join(" ")]);
    let bytes = std::fs::read(dir.join("enc/complex.yaml")).expect("enc");
    let r = recipients(&bytes, Format::Yaml).expect("recipients");
    assert_eq!(r.len(), 3);
    assert!(r.iter().any(|x| x.starts_with("ssh-ed25519 ")));
    assert_eq!(identities("keys").len(), 2);
}

#[test]
fn env_and_hash_from_real_dotenv() {
    let f = Fixture {
        name: "app.env".into(),
        expect: "ok".into(),
        identity: "keys".into(),
        roundtrip: true,
    };
    let path = fixtures_dir().join("enc").join(&f.name);
    let bytes = std::fs::read(&path).expect("enc");
    let doc = decrypt("app.env", &bytes, Format::Dotenv, &identities("keys")).expect("decrypts");
    let env = doc.to_env().expect("flat");
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string());
    assert_eq!(get("DB_PASSWORD").as_deref(), Some("p@ss=w0rd#1"));
    assert_eq!(
        get("CERT").as_deref(),
        Some("-----BEGIN-----\nline2\n-----END-----")
    );
    assert_eq!(get("EMPTY").as_deref(), Some(""));
    let h1 = doc.content_hash(&[7; 32]);
    let other = decrypt(
        "rsa.env",
        &std::fs::read(fixtures_dir().join("enc/rsa.env")).expect("enc"),
        Format::Dotenv,
        &identities("ssh_rsa"),
    )
    .expect("decrypts");
    assert_eq!(
        h1,
        other.content_hash(&[7; 32]),
        "same plaintext, same hash"
    );
    let yaml = decrypt(
        "complex.yaml",
        &std::fs::read(fixtures_dir().join("enc/complex.yaml")).expect("enc"),
        Format::Yaml,
        &identities("keys"),
    )
    .expect("decrypts");
    match yaml.to_env() {
        Err(Error::NotFlat { key, .. }) => assert_eq!(key, "database"),
        other => panic!("expected NotFlat, got {other:?}"),
    }
}

#[test]
fn parse_needs_no_keys_and_small_files_are_fast() {
    let bytes = std::fs::read(fixtures_dir().join("enc/app.env")).expect("enc");
    let parsed = parse(&bytes, Format::Dotenv).expect("parses");
    assert_eq!(parsed.recipients().len(), 3);
    let ids = identities("key1");
    let start = std::time::Instant::now();
    let n = 20;
    for _ in 0..n {
        let doc = decrypt("app.env", &bytes, Format::Dotenv, &ids).expect("decrypts");
        assert!(!doc.to_bytes().expect("emits").is_empty());
    }
    let per = start.elapsed() / n;
    // Generous bound for unoptimized test builds on a loaded machine; release is far below 5 ms.
    assert!(per.as_millis() < 50, "small file took {per:?}");
}

#[test]
fn env_identities_are_read() {
    // SOPS_AGE_KEY holds keys inline; the variables are process-global, so
    // this is the only test touching them.
    let text = std::fs::read_to_string(fixtures_dir().join("keys/key2.txt")).expect("key");
    std::env::set_var("SOPS_AGE_KEY", &text);
    std::env::remove_var("SOPS_AGE_KEY_FILE");
    std::env::set_var(
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE",
        fixtures_dir().join("keys/ssh_rsa"),
    );
    let ids = Identities::from_env().expect("from env");
    std::env::remove_var("SOPS_AGE_KEY");
    std::env::remove_var("SOPS_AGE_SSH_PRIVATE_KEY_FILE");
    assert_eq!(ids.len(), 2);
    let bytes = std::fs::read(fixtures_dir().join("enc/complex-key2.yaml")).expect("enc");
    decrypt("complex-key2.yaml", &bytes, Format::Yaml, &ids).expect("decrypts with SOPS_AGE_KEY");
}

#[test]
fn parser_survives_mutated_inputs() {
    // A cheap stand-in for fuzzing: deterministic byte flips, insertions and
    // truncations of every fixture must yield Ok or Err, never a panic.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let interesting = b"-:#'\"|>[]{}\n =;`\\&*!?%@";
    let mut runs = 0;
    for f in manifest() {
        let path = fixtures_dir().join("enc").join(&f.name);
        let original = std::fs::read(&path).expect("fixture");
        if original.len() > 200_000 {
            continue;
        }
        let format = Format::from_path(&path);
        for _ in 0..60 {
            let mut bytes = original.clone();
            for _ in 0..(1 + next() % 4) {
                let pos = (next() as usize) % bytes.len().max(1);
                match next() % 4 {
                    0 => bytes.truncate(pos),
                    1 => bytes.insert(
                        pos.min(bytes.len()),
                        interesting[(next() as usize) % interesting.len()],
                    ),
                    2 if !bytes.is_empty() => {
                        bytes[pos] = interesting[(next() as usize) % interesting.len()]
                    }
                    _ if !bytes.is_empty() => {
                        bytes.remove(pos);
                    }
                    _ => {}
                }
            }
            let result = std::panic::catch_unwind(|| {
                let _ = parse(&bytes, format);
            });
            assert!(
                result.is_ok(),
                "{}: parser panicked on a mutated input",
                f.name
            );
            runs += 1;
        }
    }
    assert!(runs > 1000);
}
