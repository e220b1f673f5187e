//! Desired units: the `units/` directories of the Git layers, merged.
//!
//! # Layout of a layer's `units/`
//!
//! - `NAME.TYPE` — a unit file (`web.service`, `backup.timer`, `srv-data.mount`,
//!   `worker@.service`, ...).
//! - `NAME.TYPE.d/*.conf` — drop-ins for a unit declared in this or an earlier layer.
//! - `tend.toml` — optional manifest of per-unit intent:
//!   ```toml
//!   [units."web.service"]
//!   enabled = true    # default: the unit has WantedBy/RequiredBy/UpheldBy/Alias/Also in [Install]
//!   started = true    # default: see below
//!   adopt = false     # take over a same-named unit that tend did not install
//!   ```
//!   Unknown keys are errors that name the key.
//! - Hidden files (`.gitkeep`) are ignored; anything else is an error.
//!
//! # Merging
//!
//! Layers are merged in order. A layer that contains the unit file `X`
//! replaces `X` wholesale, including its set of drop-ins (only the drop-ins in
//! that layer's `X.d/` remain). A layer with only `X.d/*.conf` adds or
//! replaces those drop-ins (by file name) on top of the earlier `X`. Manifest
//! entries merge key by key, later layers winning, whatever layer declares the
//! unit file.
//!
//! # Default intent
//!
//! - **enabled**: true when `[Install]` has `WantedBy=`, `RequiredBy=`,
//!   `UpheldBy=`, `Alias=` or `Also=` (what `systemctl enable` would act on).
//!   Templates (`foo@.service`) need `DefaultInstance=` as well.
//! - **started**: true for services, sockets, paths, timers, mounts and
//!   automounts; targets and swaps are started only when enabled; slices are
//!   never started explicitly. Templates are never started. A service that a
//!   declared timer, path or socket activates (`foo.timer` → `foo.service`,
//!   or `Unit=`/`Service=`) is not started by default either: its trigger is.
//!   A `Type=oneshot` service without `RemainAfterExit=yes` runs once when
//!   installed or changed; being `inactive` afterwards is its normal state.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::Error;
use super::names::{escape_path, parse_unit_name, UnitKind};
use super::unitfile::{self, ParsedUnit};

/// Name of the manifest file inside `units/`.
pub const MANIFEST: &str = "tend.toml";

/// Hex SHA-256 of `bytes`: the content hash used everywhere in this module.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One layer's `units/` directory: path relative to `units/` → content.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// Name used in error messages as `NAME/units/...` (e.g. `base`,
    /// `hosts/web1`); empty for a single unnamed layer.
    pub name: &'a str,
    /// Files under `units/`, keyed by their relative path.
    pub files: &'a BTreeMap<String, Vec<u8>>,
}

/// What tend should do with a unit besides writing its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Intent {
    /// Enable it (`systemctl enable`).
    pub enabled: bool,
    /// Keep it started (start when installed, restart on change, start again
    /// when found inactive or failed).
    pub started: bool,
    /// Take over a same-named unit that tend did not install.
    pub adopt: bool,
}

/// A drop-in of a desired unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredDropIn {
    /// Where it came from, for messages.
    pub file: String,
    /// Exact bytes to write.
    pub content: Vec<u8>,
    /// [`content_hash`] of `content`.
    pub hash: String,
}

/// A unit as Git declares it, after merging layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredUnit {
    /// Unit name, e.g. `web.service`.
    pub name: String,
    /// Its type.
    pub kind: UnitKind,
    /// `foo@.service`.
    pub template: bool,
    /// Where the unit file came from, for messages.
    pub file: String,
    /// Exact bytes to write.
    pub content: Vec<u8>,
    /// [`content_hash`] of `content`.
    pub content_hash: String,
    /// Hash of the `[Install]` section, to notice a change of `WantedBy=` etc.
    pub install_hash: String,
    /// Whether `[Install]` carries anything `enable` acts on.
    pub has_install: bool,
    /// Drop-ins by file name (`10-limits.conf`).
    pub dropins: BTreeMap<String, DesiredDropIn>,
    /// Resolved intent (defaults, then manifest).
    pub intent: Intent,
    /// A oneshot service without `RemainAfterExit=yes`: `inactive` after a
    /// run is its normal state, so it is not started again for being inactive.
    pub runs_to_completion: bool,
    /// Secret names referenced as `/run/tend/secrets/NAME` in the unit or its drop-ins.
    pub secrets: BTreeSet<String>,
}

/// All desired units, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredUnits {
    /// Units by name.
    pub units: BTreeMap<String, DesiredUnit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    units: BTreeMap<String, ManifestUnit>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestUnit {
    enabled: Option<bool>,
    started: Option<bool>,
    adopt: Option<bool>,
}

struct Partial {
    name: String,
    kind: UnitKind,
    template: bool,
    file: String,
    content: Vec<u8>,
    dropins: BTreeMap<String, DesiredDropIn>,
}

fn label(layer: &str, rel: &str) -> String {
    if layer.is_empty() {
        format!("units/{rel}")
    } else {
        format!("{}/units/{rel}", layer.trim_end_matches('/'))
    }
}

fn is_hidden(rel: &str) -> bool {
    rel.split('/').any(|c| c.starts_with('.'))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn parse_manifest(file: &str, bytes: &[u8]) -> Result<ManifestFile, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::Manifest {
        file: file.to_string(),
        line: 1,
        message: "not valid UTF-8".into(),
    })?;
    toml::from_str::<ManifestFile>(text).map_err(|e| Error::Manifest {
        file: file.to_string(),
        line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
        message: e.message().trim().replace('\n', " "),
    })
}

/// Build the desired set from layers (in order, later wins). Validates names,
/// syntax (file:line), the manifest, and the few things systemd would refuse
/// outright (a timer without a trigger, a mount whose name does not match
/// `Where=`, a service without `ExecStart=`...).
pub fn desired_units(layers: &[Layer<'_>]) -> Result<DesiredUnits, Error> {
    let mut partials: BTreeMap<String, Partial> = BTreeMap::new();
    let mut manifest: BTreeMap<String, (String, ManifestUnit)> = BTreeMap::new();

    for layer in layers {
        let mut unit_files: Vec<(String, String, &Vec<u8>)> = Vec::new();
        let mut dropins: Vec<(String, String, String, &Vec<u8>)> = Vec::new();
        for (rel, bytes) in layer.files {
            let rel = rel.trim_start_matches("./");
            let file = label(layer.name, rel);
            if is_hidden(rel) {
                continue;
            }
            if rel == MANIFEST {
                let m = parse_manifest(&file, bytes)?;
                for (unit, entry) in m.units {
                    let slot = manifest
                        .entry(unit)
                        .or_insert_with(|| (file.clone(), ManifestUnit::default()));
                    slot.0 = file.clone();
                    slot.1.enabled = entry.enabled.or(slot.1.enabled);
                    slot.1.started = entry.started.or(slot.1.started);
                    slot.1.adopt = entry.adopt.or(slot.1.adopt);
                }
                continue;
            }
            let parts: Vec<&str> = rel.split('/').collect();
            match parts.as_slice() {
                [name] => {
                    parse_unit_name(name).map_err(|reason| Error::InvalidUnitName {
                        file: file.clone(),
                        name: name.to_string(),
                        reason,
                    })?;
                    unit_files.push((name.to_string(), file, bytes));
                }
                [dir, conf] if dir.ends_with(".d") => {
                    let unit = &dir[..dir.len() - 2];
                    parse_unit_name(unit).map_err(|reason| Error::InvalidUnitName {
                        file: file.clone(),
                        name: unit.to_string(),
                        reason,
                    })?;
                    if !conf.ends_with(".conf")
                        || conf.len() == ".conf".len()
                        || conf.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(Error::UnexpectedFile { file });
                    }
                    dropins.push((unit.to_string(), conf.to_string(), file, bytes));
                }
                _ => return Err(Error::UnexpectedFile { file }),
            }
        }
        for (name, file, bytes) in unit_files {
            let parsed = parse_unit_name(&name).map_err(|reason| Error::InvalidUnitName {
                file: file.clone(),
                name: name.clone(),
                reason,
            })?;
            partials.insert(
                name.clone(),
                Partial {
                    name,
                    kind: parsed.kind,
                    template: parsed.template,
                    file,
                    content: bytes.clone(),
                    dropins: BTreeMap::new(),
                },
            );
        }
        for (unit, conf, file, bytes) in dropins {
            let Some(p) = partials.get_mut(&unit) else {
                return Err(Error::DropInWithoutUnit { file, unit });
            };
            p.dropins.insert(
                conf,
                DesiredDropIn {
                    file,
                    hash: content_hash(bytes),
                    content: bytes.clone(),
                },
            );
        }
    }

    for (unit, (file, _)) in &manifest {
        if !partials.contains_key(unit) {
            return Err(Error::ManifestUnknownUnit {
                file: file.clone(),
                unit: unit.clone(),
            });
        }
    }

    // Parse everything and compute defaults.
    let mut units = BTreeMap::new();
    let mut parsed_all: BTreeMap<String, Vec<ParsedUnit>> = BTreeMap::new();
    let mut default_instances: BTreeSet<String> = BTreeSet::new();
    for (name, p) in partials {
        let main = unitfile::parse(&p.file, &p.content)?;
        let mut all = vec![main];
        for d in p.dropins.values() {
            all.push(unitfile::parse(&d.file, &d.content)?);
        }
        check_semantics(&p, &all)?;
        let main = &all[0];
        let has_install = ["WantedBy", "RequiredBy", "UpheldBy", "Alias", "Also"]
            .iter()
            .any(|k| main.values("Install", k).any(|v| !v.trim().is_empty()));
        let default_instance = main.last("Install", "DefaultInstance").is_some();
        if default_instance {
            default_instances.insert(name.clone());
        }
        let enabled = has_install && (!p.template || default_instance);
        let started = if p.template {
            false
        } else {
            match p.kind {
                UnitKind::Service
                | UnitKind::Socket
                | UnitKind::Path
                | UnitKind::Timer
                | UnitKind::Mount
                | UnitKind::Automount => true,
                UnitKind::Target | UnitKind::Swap => enabled,
                UnitKind::Slice => false,
            }
        };
        let oneshot = last_across(&all, "Service", "Type") == Some("oneshot");
        let remain = last_across(&all, "Service", "RemainAfterExit").is_some_and(truthy);
        let mut secrets = unitfile::referenced_secrets(&p.content);
        for d in p.dropins.values() {
            secrets.extend(unitfile::referenced_secrets(&d.content));
        }
        units.insert(
            name.clone(),
            DesiredUnit {
                install_hash: content_hash(main.install_fingerprint().as_bytes()),
                content_hash: content_hash(&p.content),
                name: p.name,
                kind: p.kind,
                template: p.template,
                file: p.file,
                content: p.content,
                has_install,
                dropins: p.dropins,
                intent: Intent {
                    enabled,
                    started,
                    adopt: false,
                },
                runs_to_completion: p.kind == UnitKind::Service && oneshot && !remain,
                secrets,
            },
        );
        parsed_all.insert(name, all);
    }

    // Services activated by a declared trigger are not started by default.
    let mut triggered = BTreeSet::new();
    for (name, u) in &units {
        if u.template {
            continue;
        }
        let all = &parsed_all[name];
        let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
        let target = match u.kind {
            UnitKind::Timer => last_across(all, "Timer", "Unit")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{stem}.service")),
            UnitKind::Path => last_across(all, "Path", "Unit")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{stem}.service")),
            UnitKind::Socket => match last_across(all, "Socket", "Service") {
                Some(s) => s.to_string(),
                None if last_across(all, "Socket", "Accept").is_some_and(truthy) => {
                    format!("{stem}@.service")
                }
                None => format!("{stem}.service"),
            },
            _ => continue,
        };
        triggered.insert(target);
    }
    for t in &triggered {
        if let Some(u) = units.get_mut(t) {
            u.intent.started = false;
        }
    }

    // Manifest overrides.
    for (unit, (file, m)) in manifest {
        let Some(u) = units.get_mut(&unit) else {
            continue;
        };
        if let Some(e) = m.enabled {
            if e && !u.has_install {
                return Err(Error::InvalidUnit {
                    file,
                    unit,
                    message: "enabled = true but [Install] has no WantedBy=/RequiredBy=/UpheldBy=/Alias=/Also=, so there is nothing to enable".into(),
                });
            }
            if e && u.template && !default_instances.contains(&unit) {
                return Err(Error::InvalidUnit {
                    file,
                    unit,
                    message: "enabled = true on a template without DefaultInstance= in [Install]; add it or enable an instance".into(),
                });
            }
            u.intent.enabled = e;
        }
        if let Some(s) = m.started {
            if s && u.template {
                return Err(Error::InvalidUnit {
                    file,
                    unit,
                    message: "started = true on a template; templates cannot be started, declare an instance (foo@bar.service) instead".into(),
                });
            }
            u.intent.started = s;
        }
        if let Some(a) = m.adopt {
            u.intent.adopt = a;
        }
    }

    Ok(DesiredUnits { units })
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "yes" | "y" | "true" | "t" | "on"
    )
}

/// Last value of `key` across the unit file then its drop-ins in order.
fn last_across<'a>(all: &'a [ParsedUnit], section: &str, key: &str) -> Option<&'a str> {
    all.iter().rev().find_map(|p| p.last(section, key))
}

fn any_key(all: &[ParsedUnit], section: &str, keys: &[&str]) -> bool {
    all.iter().any(|p| {
        p.sections
            .iter()
            .filter(|s| s.name == section)
            .flat_map(|s| s.entries.iter())
            .any(|e| {
                keys.iter()
                    .any(|k| e.key == *k || (k.ends_with('*') && e.key.starts_with(&k[..k.len() - 1])))
                    && !e.value.trim().is_empty()
            })
    })
}

/// What systemd would refuse to load outright, checked without systemd.
fn check_semantics(p: &Partial, all: &[ParsedUnit]) -> Result<(), Error> {
    let fail = |message: String| {
        Err(Error::InvalidUnit {
            file: p.file.clone(),
            unit: p.name.clone(),
            message,
        })
    };
    let section = p.kind.section().unwrap_or("");
    let required: &[&str] = match p.kind {
        UnitKind::Service => &["ExecStart", "ExecStop", "SuccessAction"],
        UnitKind::Timer => &["On*"],
        UnitKind::Socket => &["Listen*"],
        UnitKind::Path => &["Path*", "DirectoryNotEmpty"],
        UnitKind::Mount | UnitKind::Swap => &["What"],
        UnitKind::Automount | UnitKind::Slice | UnitKind::Target => &[],
    };
    if !required.is_empty() && !any_key(all, section, required) {
        let keys = required.join("/");
        return fail(format!(
            "[{section}] has no {keys}= setting, systemd would refuse to load it"
        ));
    }
    if matches!(p.kind, UnitKind::Mount | UnitKind::Automount) {
        let stem = p.name.rsplit_once('.').map(|(s, _)| s).unwrap_or(&p.name);
        if let Some(w) = last_across(all, section, "Where") {
            let want = escape_path(w);
            if want != stem {
                return fail(format!(
                    "Where={w} does not match the unit name; name it {want}.{}",
                    p.kind
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    const SVC: &str =
        "[Unit]\nDescription=web\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
    const SVC_NOINSTALL: &str = "[Service]\nExecStart=/bin/true\n";
    const TIMER: &str = "[Timer]\nOnCalendar=hourly\n[Install]\nWantedBy=timers.target\n";

    fn one(files: &[(&str, &str)]) -> Result<DesiredUnits, Error> {
        let l = layer(files);
        desired_units(&[Layer {
            name: "base",
            files: &l,
        }])
    }

    #[test]
    fn default_intents_per_type() {
        let d = one(&[
            ("web.service", SVC),
            ("plain.service", SVC_NOINSTALL),
            ("backup.timer", TIMER),
            ("backup.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n"),
            ("app.target", "[Unit]\nDescription=app\n"),
            (
                "boot.target",
                "[Unit]\nDescription=b\n[Install]\nWantedBy=multi-user.target\n",
            ),
            (
                "worker@.service",
                "[Service]\nExecStart=/bin/echo %i\n[Install]\nWantedBy=multi-user.target\n",
            ),
            (
                "def@.service",
                "[Service]\nExecStart=/bin/echo %i\n[Install]\nWantedBy=multi-user.target\nDefaultInstance=one\n",
            ),
            ("srv-data.mount", "[Mount]\nWhat=tmpfs\nWhere=/srv/data\nType=tmpfs\n"),
            ("echo.socket", "[Socket]\nListenStream=127.0.0.1:7\n"),
            ("echo.service", "[Service]\nExecStart=/bin/cat\n"),
            (
                "job.service",
                "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
            ),
            ("x.slice", "[Slice]\nCPUWeight=10\n"),
        ])
        .expect("valid");
        let i = |n: &str| d.units[n].intent;
        let e_s = |n: &str| (i(n).enabled, i(n).started);
        assert_eq!(e_s("web.service"), (true, true));
        assert_eq!(e_s("plain.service"), (false, true));
        assert_eq!(e_s("backup.timer"), (true, true));
        assert_eq!(e_s("backup.service"), (false, false), "timer-activated");
        assert!(d.units["backup.service"].runs_to_completion);
        assert!(!d.units["job.service"].runs_to_completion);
        assert_eq!(e_s("app.target"), (false, false));
        assert_eq!(e_s("boot.target"), (true, true));
        assert_eq!(
            e_s("worker@.service"),
            (false, false),
            "template without DefaultInstance"
        );
        assert_eq!(e_s("def@.service"), (true, false), "template with DefaultInstance");
        assert_eq!(e_s("srv-data.mount"), (false, true));
        assert_eq!(e_s("echo.socket"), (false, true));
        assert_eq!(e_s("echo.service"), (false, false), "socket-activated");
        assert_eq!(e_s("x.slice"), (false, false));
    }

    #[test]
    fn manifest_overrides_and_unknown_key() {
        let d = one(&[
            ("web.service", SVC),
            (
                "tend.toml",
                "[units.\"web.service\"]\nenabled = false\nstarted = false\nadopt = true\n",
            ),
        ])
        .expect("valid");
        assert_eq!(
            d.units["web.service"].intent,
            Intent {
                enabled: false,
                started: false,
                adopt: true
            }
        );

        let err = one(&[
            ("web.service", SVC),
            ("tend.toml", "[units.\"web.service\"]\nenabled = true\nenable = false\n"),
        ])
        .expect_err("unknown key");
        match &err {
            Error::Manifest { file, line, message } => {
                assert_eq!(file, "base/units/tend.toml");
                assert_eq!(*line, 3);
                assert!(message.contains("enable"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let err = one(&[("web.service", SVC), ("tend.toml", "[service]\nx = 1\n")]).expect_err("unknown top-level key");
        assert!(err.to_string().contains("service"), "{err}");

        let err = one(&[
            ("web.service", SVC),
            ("tend.toml", "[units.\"db.service\"]\nenabled = true\n"),
        ])
        .expect_err("unknown unit");
        assert!(matches!(err, Error::ManifestUnknownUnit { ref unit, .. } if unit == "db.service"));

        let err = one(&[
            ("w@.service", SVC),
            ("tend.toml", "[units.\"w@.service\"]\nstarted = true\n"),
        ])
        .expect_err("template started");
        assert!(matches!(err, Error::InvalidUnit { .. }), "{err}");

        let err = one(&[
            ("plain.service", SVC_NOINSTALL),
            ("tend.toml", "[units.\"plain.service\"]\nenabled = true\n"),
        ])
        .expect_err("nothing to enable");
        assert!(err.to_string().contains("nothing to enable"), "{err}");

        let err = one(&[
            ("w@.service", SVC),
            ("tend.toml", "[units.\"w@.service\"]\nenabled = true\n"),
        ])
        .expect_err("template without DefaultInstance");
        assert!(err.to_string().contains("DefaultInstance"), "{err}");
    }

    #[test]
    fn layers_replace_units_with_their_dropins() {
        let base = layer(&[
            ("web.service", SVC),
            ("web.service.d/10-a.conf", "[Service]\nEnvironment=A=1\n"),
            ("web.service.d/20-b.conf", "[Service]\nEnvironment=B=1\n"),
            ("db.service", SVC),
            ("db.service.d/10-a.conf", "[Service]\nEnvironment=A=1\n"),
            ("tend.toml", "[units.\"db.service\"]\nstarted = false\n"),
        ]);
        let host = layer(&[
            // Replaces web.service and its drop-ins set.
            ("web.service", SVC_NOINSTALL),
            ("web.service.d/30-c.conf", "[Service]\nEnvironment=C=1\n"),
            // Adds/replaces a drop-in of db.service only.
            ("db.service.d/10-a.conf", "[Service]\nEnvironment=A=2\n"),
            ("db.service.d/20-b.conf", "[Service]\nEnvironment=B=2\n"),
            ("tend.toml", "[units.\"db.service\"]\nenabled = false\n"),
        ]);
        let d = desired_units(&[
            Layer {
                name: "base",
                files: &base,
            },
            Layer {
                name: "hosts/web1",
                files: &host,
            },
        ])
        .expect("valid");
        let web = &d.units["web.service"];
        assert_eq!(web.content, SVC_NOINSTALL.as_bytes());
        assert_eq!(web.dropins.keys().collect::<Vec<_>>(), vec!["30-c.conf"]);
        assert_eq!(web.file, "hosts/web1/units/web.service");
        assert!(!web.intent.enabled);
        let db = &d.units["db.service"];
        assert_eq!(db.content, SVC.as_bytes());
        assert_eq!(db.dropins.keys().collect::<Vec<_>>(), vec!["10-a.conf", "20-b.conf"]);
        assert_eq!(db.dropins["10-a.conf"].content, b"[Service]\nEnvironment=A=2\n");
        // Manifest entries merge key by key across layers.
        assert_eq!((db.intent.enabled, db.intent.started), (false, false));
    }

    #[test]
    fn rejects_bad_paths_names_and_syntax() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("web.conf", SVC)], "invalid unit name"),
            (vec![("sub/dir/web.service", SVC)], "not a unit file"),
            (vec![("web.service.d/x.txt", SVC)], "not a unit file"),
            (vec![("db.service.d/x.conf", SVC)], "no layer up to this one declares"),
            (
                vec![("web.service", "[Service]\nExecStart=/bin/true\nbroken\n")],
                "base/units/web.service:3:",
            ),
            (
                vec![("web.service", SVC), ("web.service.d/a.conf", "[Service]\nno equals\n")],
                "base/units/web.service.d/a.conf:2:",
            ),
            (vec![("t.timer", "[Timer]\nPersistent=true\n")], "no On*="),
            (
                vec![("s.service", "[Service]\nType=simple\n")],
                "no ExecStart/ExecStop/SuccessAction=",
            ),
            (
                vec![("srv-x.mount", "[Mount]\nWhat=tmpfs\nWhere=/srv/y\n")],
                "name it srv-y.mount",
            ),
            (vec![("e.socket", "[Socket]\nAccept=no\n")], "no Listen*="),
        ];
        for (files, needle) in cases {
            let err = one(&files).expect_err(needle);
            assert!(err.to_string().contains(needle), "want {needle:?} in {err}");
        }
        // Hidden files are ignored; ExecStart from a drop-in counts.
        let d = one(&[
            (".gitkeep", ""),
            ("s.service", "[Service]\nType=simple\n"),
            ("s.service.d/exec.conf", "[Service]\nExecStart=/bin/true\n"),
        ])
        .expect("valid");
        assert_eq!(d.units.len(), 1);
    }

    #[test]
    fn collects_secrets_from_unit_and_dropins() {
        let d = one(&[
            (
                "web.service",
                "[Service]\nExecStart=/app --key /run/tend/secrets/tls-key\n",
            ),
            (
                "web.service.d/env.conf",
                "[Service]\nEnvironmentFile=/run/tend/secrets/web.env\n",
            ),
        ])
        .expect("valid");
        let s: Vec<&str> = d.units["web.service"].secrets.iter().map(String::as_str).collect();
        assert_eq!(s, vec!["tls-key", "web.env"]);
    }
}
