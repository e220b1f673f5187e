//! Unit names: validation and type.

use std::fmt;

/// The unit types tend accepts as files in Git.
///
/// `device` and `scope` units cannot be unit files, so they are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnitKind {
    /// `.mount`
    Mount,
    /// `.automount`
    Automount,
    /// `.swap`
    Swap,
    /// `.socket`
    Socket,
    /// `.path`
    Path,
    /// `.timer`
    Timer,
    /// `.slice`
    Slice,
    /// `.service`
    Service,
    /// `.target`
    Target,
}

impl UnitKind {
    /// All kinds, in the order units of that kind are started within a batch
    /// (mounts first, then triggering units, then services, targets last).
    pub const ALL: [UnitKind; 9] = [
        UnitKind::Mount,
        UnitKind::Automount,
        UnitKind::Swap,
        UnitKind::Socket,
        UnitKind::Path,
        UnitKind::Timer,
        UnitKind::Slice,
        UnitKind::Service,
        UnitKind::Target,
    ];

    /// The file suffix without the dot.
    pub fn suffix(self) -> &'static str {
        match self {
            UnitKind::Mount => "mount",
            UnitKind::Automount => "automount",
            UnitKind::Swap => "swap",
            UnitKind::Socket => "socket",
            UnitKind::Path => "path",
            UnitKind::Timer => "timer",
            UnitKind::Slice => "slice",
            UnitKind::Service => "service",
            UnitKind::Target => "target",
        }
    }

    /// The section that holds this type's own settings (`[Service]`, ...), if any.
    pub fn section(self) -> Option<&'static str> {
        match self {
            UnitKind::Mount => Some("Mount"),
            UnitKind::Automount => Some("Automount"),
            UnitKind::Swap => Some("Swap"),
            UnitKind::Socket => Some("Socket"),
            UnitKind::Path => Some("Path"),
            UnitKind::Timer => Some("Timer"),
            UnitKind::Slice => Some("Slice"),
            UnitKind::Service => Some("Service"),
            UnitKind::Target => None,
        }
    }

    /// Whether systemd allows templates (`foo@.kind`) of this type.
    pub fn may_template(self) -> bool {
        matches!(
            self,
            UnitKind::Service | UnitKind::Socket | UnitKind::Timer | UnitKind::Path | UnitKind::Target
        )
    }

    /// Parse a suffix (without the dot).
    pub fn from_suffix(s: &str) -> Option<UnitKind> {
        UnitKind::ALL.into_iter().find(|k| k.suffix() == s)
    }

    /// Position in [`UnitKind::ALL`], used to order starts.
    pub fn start_rank(self) -> usize {
        UnitKind::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(UnitKind::ALL.len())
    }
}

impl fmt::Display for UnitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// A validated unit name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitName {
    /// The full name, e.g. `web@.service`.
    pub name: String,
    /// Its type.
    pub kind: UnitKind,
    /// `foo@.service`: a template, which can be enabled but not started.
    pub template: bool,
}

/// Longest unit name systemd accepts.
pub const MAX_NAME_LEN: usize = 255;

fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '\\')
}

/// Validate a unit name: `PREFIX[@[INSTANCE]].TYPE` with the characters
/// systemd allows (`A-Za-z0-9:_.-\`), a known type, at most 255 bytes.
///
/// Returns the reason as text on failure (the caller adds file context).
pub fn parse_unit_name(name: &str) -> Result<UnitName, String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} bytes"));
    }
    if name.starts_with('.') {
        return Err("starts with a dot (systemd ignores hidden files)".into());
    }
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return Err("no type suffix such as .service or .timer".into());
    };
    let Some(kind) = UnitKind::from_suffix(suffix) else {
        let allowed: Vec<&str> = UnitKind::ALL.iter().map(|k| k.suffix()).collect();
        return Err(format!("unknown type `.{suffix}` (allowed: .{})", allowed.join(", .")));
    };
    let (prefix, instance) = match stem.split_once('@') {
        Some((p, i)) => (p, Some(i)),
        None => (stem, None),
    };
    if prefix.is_empty() {
        return Err("empty name before the type suffix or `@`".into());
    }
    if let Some(c) = prefix.chars().find(|c| !allowed_char(*c)) {
        return Err(format!("character {c:?} not allowed (use A-Z a-z 0-9 : _ . - \\)"));
    }
    let mut template = false;
    if let Some(instance) = instance {
        if let Some(c) = instance.chars().find(|c| !allowed_char(*c)) {
            return Err(format!(
                "character {c:?} not allowed in the instance (use A-Z a-z 0-9 : _ . - \\)"
            ));
        }
        if instance.is_empty() {
            template = true;
        }
        if !kind.may_template() {
            return Err(format!(".{suffix} units cannot be templates or instances"));
        }
    }
    Ok(UnitName {
        name: name.to_string(),
        kind,
        template,
    })
}

/// systemd's path escaping (`systemd-escape --path`), used to check that a
/// mount unit's name matches its `Where=`.
pub fn escape_path(path: &str) -> String {
    let trimmed: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if trimmed.is_empty() {
        return "-".to_string();
    }
    let joined = trimmed.join("/");
    let mut out = String::with_capacity(joined.len());
    for (i, b) in joined.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for (n, kind, template) in [
            ("web.service", UnitKind::Service, false),
            ("backup.timer", UnitKind::Timer, false),
            ("getty@.service", UnitKind::Service, true),
            ("getty@tty1.service", UnitKind::Service, false),
            ("srv-data.mount", UnitKind::Mount, false),
            ("srv-my\\x2ddata.mount", UnitKind::Mount, false),
            ("app.target", UnitKind::Target, false),
            ("a:b_c.d-e.socket", UnitKind::Socket, false),
            ("x.path", UnitKind::Path, false),
            ("x.slice", UnitKind::Slice, false),
        ] {
            let u = parse_unit_name(n).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(u.kind, kind, "{n}");
            assert_eq!(u.template, template, "{n}");
        }
    }

    #[test]
    fn invalid_names() {
        for (n, needle) in [
            ("", "empty"),
            ("web", "suffix"),
            ("web.conf", "unknown type"),
            ("web.device", "unknown type"),
            (".hidden.service", "dot"),
            ("we b.service", "not allowed"),
            ("web/x.service", "not allowed"),
            ("@.service", "empty name"),
            (".service", "dot"),
            ("data@.mount", "templates"),
            ("a@b@c.service", "instance"),
        ] {
            let err = parse_unit_name(n).expect_err(n);
            assert!(err.contains(needle), "{n}: {err}");
        }
        let long = format!("{}.service", "a".repeat(260));
        assert!(parse_unit_name(&long).is_err());
    }

    #[test]
    fn path_escaping_matches_systemd_escape() {
        assert_eq!(escape_path("/"), "-");
        assert_eq!(escape_path("/srv/data"), "srv-data");
        assert_eq!(escape_path("/srv/my-data/"), "srv-my\\x2ddata");
        assert_eq!(escape_path("//srv//x"), "srv-x");
        assert_eq!(escape_path("/.hidden/a b"), "\\x2ehidden-a\\x20b");
    }
}
