//! Optional deep check with `systemd-analyze verify`.
//!
//! The desired units are written to a private temporary directory and
//! verified there (`--man=no --generators=no`; the directory of the files
//! is on the unit search path, so units find each other, and the host's own
//! units resolve dependencies such as `multi-user.target`). systemd's
//! messages `DIR/NAME:LINE: text` are mapped back to the Git file and line.
//! A non-zero exit status refuses the set; messages of a successful run
//! (unknown keys, unparsable values, which systemd ignores) come back as
//! warnings, or refuse the set too when `strict` is set. Note that systemd
//! checks that `ExecStart=` binaries exist *on this host*, which is what an
//! agent wants before installing units here. (`--recursive-errors=` is not
//! used: systemd 252 then fails on mere warnings when several units are
//! verified together.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::desired::DesiredUnits;
use super::error::Error;

/// One message of `systemd-analyze verify`, mapped to Git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyMessage {
    /// Git file (e.g. `base/units/web.service`), or the unit name when
    /// systemd named only the unit.
    pub file: String,
    /// 1-based line, 0 when systemd gave none.
    pub line: usize,
    /// systemd's text, with temporary paths replaced by Git paths.
    pub message: String,
}

/// Whether `systemd-analyze` is on `PATH`.
pub fn systemd_analyze_available() -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("systemd-analyze").is_file()))
        .unwrap_or(false)
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_temp_dir() -> Result<TempDir, Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!(
        "tend-verify-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|source| Error::Io {
            op: "create",
            path: path.clone(),
            source,
        })?;
    Ok(TempDir(path))
}

fn write(path: &Path, content: &[u8]) -> Result<(), Error> {
    std::fs::write(path, content).map_err(|source| Error::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Run `systemd-analyze verify` on the desired units. `Ok` carries the
/// warnings of a passing run; [`Error::Verify`] names the first message of a
/// failing one (with file:line when systemd gave one) and counts the rest.
/// With `strict`, any message fails the run.
pub async fn verify_with_systemd_analyze(desired: &DesiredUnits, strict: bool) -> Result<Vec<VerifyMessage>, Error> {
    if desired.units.is_empty() {
        return Ok(Vec::new());
    }
    let dir = make_temp_dir()?;
    // Relative path in the temp dir -> Git file label.
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut args: Vec<PathBuf> = Vec::new();
    for (name, u) in &desired.units {
        write(&dir.0.join(name), &u.content)?;
        labels.insert(name.clone(), u.file.clone());
        if !u.dropins.is_empty() {
            let ddir = dir.0.join(format!("{name}.d"));
            std::fs::create_dir(&ddir).map_err(|source| Error::Io {
                op: "create",
                path: ddir.clone(),
                source,
            })?;
            for (f, d) in &u.dropins {
                write(&ddir.join(f), &d.content)?;
                labels.insert(format!("{name}.d/{f}"), d.file.clone());
            }
        }
        // Templates cannot be verified on their own; instances would need a name.
        if !u.template {
            args.push(dir.0.join(name));
        }
    }
    if args.is_empty() {
        return Ok(Vec::new());
    }
    let out = tokio::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .args(&args)
        .current_dir(&dir.0)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::Command {
            program: "systemd-analyze".into(),
            message: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{}/", dir.0.display());
    let messages = map_messages(&text, &prefix, &labels);
    if out.status.success() && (!strict || messages.is_empty()) {
        return Ok(messages);
    }
    let first = messages.first().cloned().unwrap_or(VerifyMessage {
        file: "units/".into(),
        line: 0,
        message: format!("systemd-analyze verify exited with {}", out.status),
    });
    Err(Error::Verify {
        file: first.file,
        line: first.line,
        message: first.message,
        others: messages.len().saturating_sub(1),
    })
}

/// Map systemd-analyze's output lines to Git files and lines.
fn map_messages(text: &str, prefix: &str, labels: &BTreeMap<String, String>) -> Vec<VerifyMessage> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        // Longest label first, so `web.service.d/a.conf` wins over `web.service`.
        let mut mapped = None;
        if let Some(rest) = line.strip_prefix(prefix) {
            let mut keys: Vec<&String> = labels.keys().collect();
            keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
            for k in keys {
                let Some(after) = rest.strip_prefix(k.as_str()) else {
                    continue;
                };
                let Some(after) = after.strip_prefix(':') else {
                    continue;
                };
                let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
                let (line_no, msg) = match digits.parse::<usize>() {
                    Ok(n) => (n, after[digits.len()..].trim_start_matches(':').trim().to_string()),
                    Err(_) => (0, after.trim().to_string()),
                };
                mapped = Some(VerifyMessage {
                    file: labels[k].clone(),
                    line: line_no,
                    message: msg,
                });
                break;
            }
        }
        let msg = mapped.unwrap_or_else(|| {
            // `NAME: text` or free text; point at the unit file when named.
            let (file, message) = match line.split_once(": ") {
                Some((unit, msg)) if labels.contains_key(unit) => (labels[unit].clone(), msg.to_string()),
                _ => (String::from("units/"), line.to_string()),
            };
            VerifyMessage { file, line: 0, message }
        });
        out.push(VerifyMessage {
            message: msg.message.replace(prefix, "units/"),
            ..msg
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::desired::{desired_units, Layer};
    use super::*;

    #[test]
    fn maps_paths_and_lines() {
        let labels = BTreeMap::from([
            ("web.service".to_string(), "base/units/web.service".to_string()),
            (
                "web.service.d/a.conf".to_string(),
                "host/units/web.service.d/a.conf".to_string(),
            ),
        ]);
        let text = "/tmp/x/web.service:5: Unknown key 'Foo' in section [Service], ignoring.\n\
                    /tmp/x/web.service.d/a.conf:2: Failed to parse service type, ignoring: bogus\n\
                    web.service: Command /nope is not executable: No such file or directory\n\
                    Unit web.service has a bad unit file setting.\n";
        let m = map_messages(text, "/tmp/x/", &labels);
        assert_eq!(m.len(), 4);
        assert_eq!((m[0].file.as_str(), m[0].line), ("base/units/web.service", 5));
        assert_eq!(m[0].message, "Unknown key 'Foo' in section [Service], ignoring.");
        assert_eq!((m[1].file.as_str(), m[1].line), ("host/units/web.service.d/a.conf", 2));
        assert_eq!((m[2].file.as_str(), m[2].line), ("base/units/web.service", 0));
        assert_eq!(m[3].file, "units/");
    }

    fn desired(files: &[(&str, &str)]) -> DesiredUnits {
        let map: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        desired_units(&[Layer {
            name: "base",
            files: &map,
        }])
        .expect("valid")
    }

    #[tokio::test]
    async fn real_systemd_analyze_when_present() {
        if !systemd_analyze_available() {
            eprintln!("systemd-analyze not installed; mapping covered by maps_paths_and_lines");
            return;
        }
        let ok = desired(&[
            (
                "web.service",
                "[Service]\nExecStart=/bin/sh -c 'sleep 1'\nFoo=bar\n[Install]\nWantedBy=multi-user.target\n",
            ),
            ("tick.timer", "[Timer]\nOnActiveSec=1h\n"),
            ("tick.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n"),
        ]);
        let warnings = verify_with_systemd_analyze(&ok, false).await.expect("passes");
        assert!(
            warnings
                .iter()
                .any(|w| w.file == "base/units/web.service" && w.line == 3),
            "{warnings:?}"
        );
        // The same set refuses in strict mode, pointing at the line.
        match verify_with_systemd_analyze(&ok, true).await {
            Err(Error::Verify { file, line, .. }) => {
                assert_eq!((file.as_str(), line), ("base/units/web.service", 3));
            }
            other => panic!("expected a strict verify error, got {other:?}"),
        }

        let bogus = desired(&[
            ("web.service", "[Service]\nExecStart=/bin/true\n"),
            ("web.service.d/t.conf", "[Service]\nType=bogus\n"),
        ]);
        match verify_with_systemd_analyze(&bogus, true).await {
            Err(Error::Verify {
                file, line, message, ..
            }) => {
                assert_eq!(file, "base/units/web.service.d/t.conf");
                assert_eq!(line, 2);
                assert!(message.contains("bogus"), "{message}");
            }
            other => panic!("expected a verify error, got {other:?}"),
        }

        // A missing executable is an error systemd refuses on its own.
        let missing = desired(&[("web.service", "[Service]\nExecStart=/nonexistent/tend-test-binary\n")]);
        match verify_with_systemd_analyze(&missing, false).await {
            Err(Error::Verify { file, message, .. }) => {
                assert_eq!(file, "base/units/web.service");
                assert!(message.contains("/nonexistent/tend-test-binary"), "{message}");
            }
            other => panic!("expected a verify error, got {other:?}"),
        }
    }
}
