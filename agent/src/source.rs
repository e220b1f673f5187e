//! The Git side: fetch the followed branch into a bare repository in the state dir, and read
//! files straight from a commit's tree (never a checkout).

use crate::desired::{Entry, EntryKind, FileData, Tree, TreeError};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// The ref tend fetches the followed branch into.
pub const FETCHED_REF: &str = "refs/tend/fetched";

/// Errors from the repository or the remote.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local bare repository could not be created or opened.
    #[error("repository {path}: {message}")]
    Repo {
        /// Its path.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The remote could not be reached or refused the fetch.
    #[error("fetch from {url}: {message}")]
    Fetch {
        /// The URL (credentials are never part of it).
        url: String,
        /// Why.
        message: String,
    },
    /// The remote has no such branch.
    #[error("fetch from {url}: branch {branch:?} not found on the remote")]
    NoBranch {
        /// The URL.
        url: String,
        /// The branch.
        branch: String,
    },
    /// The HTTPS credentials file is unusable.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::Error),
    /// A commit or object is missing or malformed.
    #[error("{what}: {message}")]
    Object {
        /// Which object.
        what: String,
        /// Why.
        message: String,
    },
}

impl Error {
    /// Whether retrying later may help (network trouble) rather than needing an operator.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Fetch { .. })
    }
}

/// How to reach an `ssh://` remote.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// Deploy key.
    pub key: Option<PathBuf>,
    /// Pinned known_hosts.
    pub known_hosts: Option<PathBuf>,
}

/// How tend talks to remotes: timeouts and credentials. No poll may hang the loop.
#[derive(Debug, Clone)]
pub struct Transport {
    /// `ssh://` deploy key and pinned known_hosts.
    pub ssh: SshOptions,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// A connection that transfers nothing for this long is dropped.
    pub stall_timeout: Duration,
    /// HTTP(S) credentials, sent only to URLs they are meant for.
    pub credentials: Option<Arc<crate::credentials::Credentials>>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            ssh: SshOptions::default(),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            credentials: None,
        }
    }
}

/// What one fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The remote branch tip.
    pub tip: String,
    /// Whether a pack was requested and received (false: the tip was already here).
    pub pack: bool,
}

/// Fetch `branch` from `url` into the bare repository at `repo_path`, updating `local_ref`, and
/// return the branch tip.
///
/// Git protocol v2 where the server speaks it: `ls-refs` is limited to the one branch
/// (`ref-prefix refs/heads/BRANCH`), no tags are followed, and no pack is requested when the tip
/// is already in the repository. Otherwise negotiation sends what the repository has (every ref
/// under `refs/tend/`, the applied commit among them) as `have`s, so only new objects travel.
/// Full history, never shallow. Opens its own handle on the repository so that it can run on a
/// thread of its own; `interrupt` stops it between pack entries.
pub fn fetch(
    repo_path: &Path,
    url: &str,
    branch: &str,
    local_ref: &str,
    transport: &Transport,
    interrupt: &AtomicBool,
) -> Result<Fetched, Error> {
    let fetch_err = |e: &dyn std::error::Error| Error::Fetch {
        url: redact(url),
        message: one_line(&error_chain(e)),
    };
    let mut repo = open_repo(repo_path)?;
    {
        let mut config = repo.config_snapshot_mut();
        let mut set = |key: &str, value: &str| {
            config
                .set_raw_value(key, value)
                .map(|_| ())
                .map_err(|e| repo_err(repo_path, e))
        };
        let ssh = &transport.ssh;
        let connect = transport.connect_timeout.as_secs().max(1);
        // ssh notices a dead peer after ServerAliveInterval * ServerAliveCountMax.
        let alive = (transport.stall_timeout.as_secs() / 3).max(1);
        let mut cmd = format!(
            "ssh -o BatchMode=yes -o ConnectTimeout={connect} -o ServerAliveInterval={alive} -o ServerAliveCountMax=3"
        );
        if let Some(k) = &ssh.key {
            cmd.push_str(&format!(
                " -o IdentitiesOnly=yes -i {}",
                shell_quote(&k.display().to_string())
            ));
        }
        if let Some(kh) = &ssh.known_hosts {
            cmd.push_str(&format!(
                " -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
                shell_quote(&kh.display().to_string())
            ));
        }
        set("core.sshCommand", &cmd)?;
        set(
            "gitoxide.http.connectTimeout",
            &transport.connect_timeout.as_millis().to_string(),
        )?;
        set("http.lowSpeedLimit", "1")?;
        set(
            "http.lowSpeedTime",
            &transport.stall_timeout.as_secs().max(1).to_string(),
        )?;
        set("protocol.version", "2")?;
    }
    let refspec = format!("+refs/heads/{branch}:{local_ref}");
    let remote = repo
        .remote_at(url)
        .map_err(|e| fetch_err(&e))?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(Some(refspec.as_str()), gix::remote::Direction::Fetch)
        .map_err(|e| fetch_err(&e))?;
    crate::tls::init();
    let mut connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| fetch_err(&e))?;
    if is_http(url) {
        let options = http_options(&repo, url, transport).map_err(|message| Error::Fetch {
            url: redact(url),
            message,
        })?;
        connection.set_transport_options(options);
        // Never prompt: the credentials file is the only source of credentials.
        connection.set_credentials(|_| Ok(None));
    }
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| fetch_err(&e))?;
    let outcome = prepare
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| fetch_err(&e))?;
    let pack = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
    let wanted = format!("refs/heads/{branch}");
    let tip = outcome
        .ref_map
        .mappings
        .iter()
        .find_map(|m| match &m.remote {
            gix::remote::fetch::refmap::Source::Ref(r) => {
                let (name, target, _) = r.unpack();
                (name == wanted.as_str()).then(|| target.map(|t| t.to_string()))
            }
            _ => None,
        })
        .flatten();
    match tip {
        Some(tip) => Ok(Fetched { tip, pack }),
        None => Err(Error::NoBranch {
            url: redact(url),
            branch: branch.to_owned(),
        }),
    }
}

fn is_http(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// HTTP transport options: connect and stall timeouts (the reqwest backend ignores git's
/// `http.lowSpeed*`, so they are set on the client), and preemptive credentials.
fn http_options(repo: &gix::Repository, url: &str, transport: &Transport) -> Result<Box<dyn std::any::Any>, String> {
    use gix::protocol::transport::client::blocking_io::http;
    let mut options = repo
        .transport_options(url, None)
        .map_err(|e| e.to_string())?
        .and_then(|o| o.downcast::<http::Options>().ok())
        .map(|o| *o)
        .unwrap_or_default();
    let (connect, stall) = (transport.connect_timeout, transport.stall_timeout);
    let https = url.to_ascii_lowercase().starts_with("https://");
    let mut backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            // Blocking reqwest applies `timeout` to each wait: the response headers, then every
            // read of the body. A server that accepts and never answers, or a link that goes
            // silent, ends the request after `stall`.
            let builder = builder
                .connect_timeout(connect)
                .timeout(stall)
                .tcp_keepalive(Duration::from_secs(15));
            // The trust store is read once per process, not for every poll's new client.
            let tls = if https {
                crate::tls::https_config()
            } else {
                Some(crate::tls::plain_config())
            };
            Ok(match tls {
                Some(tls) => builder.tls_backend_preconfigured(tls),
                None => builder,
            })
        })),
        configure_request: None,
    };
    if let Some(header) = transport.credentials.as_ref().and_then(|c| c.header_for(url)) {
        backend.configure_request = Some(Box::new(move |request| {
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, header.clone());
            Ok(())
        }));
    }
    options.backend = Some(Arc::new(std::sync::Mutex::new(backend)));
    Ok(Box::new(options))
}

/// An error and its causes, `outer: inner: root`, without repeats or empty wrappers.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        let noise = text.is_empty() || text.starts_with("I/O error (") || parts.iter().any(|p| p.contains(&text));
        if !noise {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// A gix error chain on one line.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Facts about one commit, for status and history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitInfo {
    /// Full hex id.
    pub id: String,
    /// First line of the message.
    pub subject: String,
    /// Committer time, seconds since the epoch.
    pub time: i64,
}

/// The bare repository tend owns.
pub struct Repo {
    repo: gix::Repository,
    path: PathBuf,
}

/// Open a repository the way tend reads and writes it.
///
/// gix sizes its table of pack indices once, when a repository is opened (by default 10% above
/// the packs on disk, at least 32), and cannot load more later. Every fetch adds a pack, so a
/// handle kept open by the daemon would stop finding new commits after a few dozen fetches:
/// handles get ample room here, and [`Repo::refresh`] reopens after objects were written.
fn open_repo(path: &Path) -> Result<gix::Repository, Error> {
    let slots = gix::odb::store::init::Slots::AsNeededByDiskState {
        multiplier: 2.0,
        minimum: 256,
    };
    gix::open_opts(path, gix::open::Options::isolated().object_store_slots(slots)).map_err(|e| repo_err(path, e))
}

fn repo_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Repo {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Repo {
    /// Open the bare repository at `path`, creating it when missing.
    pub fn open_or_init(path: &Path) -> Result<Repo, Error> {
        let repo = if path.join("HEAD").exists() {
            open_repo(path)?
        } else {
            std::fs::create_dir_all(path).map_err(|e| repo_err(path, e))?;
            gix::init_bare(path).map_err(|e| repo_err(path, e))?;
            open_repo(path)?
        };
        Ok(Repo {
            repo,
            path: path.to_owned(),
        })
    }

    /// Open an existing repository (bare or not) for reading, e.g. for `tend verify --repo`.
    pub fn open(path: &Path) -> Result<Repo, Error> {
        let repo = open_repo(path)?;
        Ok(Repo {
            repo,
            path: path.to_owned(),
        })
    }

    /// The repository's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reopen the repository, after fetches or bundle imports wrote packs, so that this handle
    /// keeps room for the packs still to come (see [`open_repo`]).
    pub fn refresh(&mut self) -> Result<(), Error> {
        self.repo = open_repo(&self.path)?;
        Ok(())
    }

    /// Fetch `branch` from `url` into [`FETCHED_REF`] and return the branch tip, with default
    /// timeouts and no credentials. See [`fetch`] for the details.
    pub fn fetch(&mut self, url: &str, branch: &str, ssh: &SshOptions) -> Result<String, Error> {
        let transport = Transport {
            ssh: ssh.clone(),
            ..Transport::default()
        };
        let fetched = fetch(
            &self.path,
            url,
            branch,
            FETCHED_REF,
            &transport,
            &AtomicBool::new(false),
        )?;
        if fetched.pack {
            self.refresh()?;
        }
        Ok(fetched.tip)
    }

    /// The gix repository (for the other source modules).
    pub(crate) fn gix(&self) -> &gix::Repository {
        &self.repo
    }

    /// Point `name` (e.g. `refs/tend/applied`) at commit `id`, creating it when missing.
    pub fn set_ref(&self, name: &str, id: &str) -> Result<(), Error> {
        let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| repo_err(&self.path, e))?;
        self.repo
            .reference(name, oid, gix::refs::transaction::PreviousValue::Any, "tend: set")
            .map_err(|e| repo_err(&self.path, format!("cannot set {name}: {e}")))?;
        Ok(())
    }

    /// Whether the object database holds `id` (hex).
    pub fn has_object(&self, id: &str) -> bool {
        gix::ObjectId::from_hex(id.as_bytes()).is_ok_and(|oid| self.repo.has_object(oid))
    }

    /// Whether commit `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, Error> {
        if ancestor == descendant {
            return Ok(true);
        }
        let obj_err = |e: &dyn std::fmt::Display| Error::Object {
            what: format!("merge base of {ancestor} and {descendant}"),
            message: e.to_string(),
        };
        let a = gix::ObjectId::from_hex(ancestor.as_bytes()).map_err(|e| obj_err(&e))?;
        let d = gix::ObjectId::from_hex(descendant.as_bytes()).map_err(|e| obj_err(&e))?;
        let base = self.repo.merge_base(a, d).map_err(|e| obj_err(&e))?;
        Ok(base.is_some_and(|b| b.detach() == a))
    }

    /// Resolve anything gix understands (branch, tag, hash) to a commit id.
    pub fn resolve(&self, rev: &str) -> Result<String, Error> {
        let id = self.repo.rev_parse_single(rev).map_err(|e| Error::Object {
            what: rev.to_owned(),
            message: e.to_string(),
        })?;
        let commit = id
            .object()
            .and_then(|o| o.peel_to_kind(gix::object::Kind::Commit))
            .map_err(|e| Error::Object {
                what: rev.to_owned(),
                message: e.to_string(),
            })?;
        Ok(commit.id.to_string())
    }

    /// Subject and time of a commit.
    pub fn commit_info(&self, id: &str) -> Result<CommitInfo, Error> {
        let obj_err = |e: &dyn std::fmt::Display| Error::Object {
            what: format!("commit {id}"),
            message: e.to_string(),
        };
        let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| obj_err(&e))?;
        let commit = self.repo.find_commit(oid).map_err(|e| obj_err(&e))?;
        let message = commit.message_raw_sloppy().to_string();
        let subject = message.lines().next().unwrap_or_default().trim().to_owned();
        let time = commit.time().map_err(|e| obj_err(&e))?.seconds;
        Ok(CommitInfo {
            id: id.to_owned(),
            subject,
            time,
        })
    }

    /// Read access to a commit's files.
    pub fn tree(&self, id: &str) -> Result<CommitTree<'_>, Error> {
        let obj_err = |e: &dyn std::fmt::Display| Error::Object {
            what: format!("commit {id}"),
            message: e.to_string(),
        };
        let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| obj_err(&e))?;
        let commit = self.repo.find_commit(oid).map_err(|e| obj_err(&e))?;
        let tree = commit.tree().map_err(|e| obj_err(&e))?;
        Ok(CommitTree { tree })
    }
}

impl crate::trust::CommitSource for Repo {
    fn raw_commit(&self, id: &str) -> Result<Vec<u8>, crate::trust::Error> {
        let read = || -> Result<Vec<u8>, String> {
            let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| e.to_string())?;
            let object = self.repo.find_object(oid).map_err(|e| e.to_string())?;
            if object.kind != gix::object::Kind::Commit {
                return Err(format!("{id} is a {}, not a commit", object.kind));
            }
            Ok(object.detach().data)
        };
        read().map_err(|e| crate::trust::Error::commit_read(id, e))
    }
}

/// The files of one commit, read from the object database.
pub struct CommitTree<'repo> {
    tree: gix::Tree<'repo>,
}

impl Tree for CommitTree<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        let err = |e: &dyn std::fmt::Display| TreeError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let entry = self.tree.lookup_entry_by_path(path).map_err(|e| err(&e))?;
        let Some(entry) = entry else { return Ok(None) };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        let object = entry.object().map_err(|e| err(&e))?;
        Ok(Some(object.detach().data))
    }

    fn entry(&self, path: &str) -> Result<Option<Entry>, TreeError> {
        let err = |e: &dyn std::fmt::Display| TreeError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let entry = self.tree.lookup_entry_by_path(path).map_err(|e| err(&e))?;
        Ok(entry.map(|e| Entry {
            kind: if e.mode().is_tree() {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
            id: e.object_id().to_string(),
        }))
    }

    fn files_under(&self, path: &str) -> Result<Vec<FileData>, TreeError> {
        let err = |e: &dyn std::fmt::Display| TreeError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let entry = self
            .tree
            .lookup_entry_by_path(path)
            .map_err(|e| err(&e))?
            .ok_or_else(|| err(&"no such path"))?;
        let mut out = Vec::new();
        if !entry.mode().is_tree() {
            let mode = entry.mode();
            let data = entry.object().map_err(|e| err(&e))?.detach().data;
            out.push(FileData {
                path: String::new(),
                executable: mode.is_executable(),
                symlink: mode.is_link(),
                data,
            });
            return Ok(out);
        }
        let mut stack = vec![(String::new(), entry.object().map_err(|e| err(&e))?.into_tree())];
        while let Some((prefix, tree)) = stack.pop() {
            for e in tree.iter() {
                let e = e.map_err(|e| err(&e))?;
                let name = format!("{prefix}{}", e.filename());
                let mode = e.mode();
                let object = e.object().map_err(|e| err(&e))?;
                if mode.is_tree() {
                    stack.push((format!("{name}/"), object.into_tree()));
                } else if mode.is_commit() {
                    // Submodules are not part of the commit's content.
                } else {
                    out.push(FileData {
                        path: name,
                        executable: mode.is_executable(),
                        symlink: mode.is_link(),
                        data: object.detach().data,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Remove any `user:password@` from a URL before it is shown.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if !host.contains('/') || userinfo.contains(':') {
                let user = userinfo.split(':').next().unwrap_or_default();
                if userinfo.contains(':') {
                    return format!("{scheme}://{user}:***@{host}");
                }
            }
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("https://u:secret@h/x.git"), "https://u:***@h/x.git");
        assert_eq!(redact("ssh://git@h:22/x.git"), "ssh://git@h:22/x.git");
        assert_eq!(redact("/srv/x.git"), "/srv/x.git");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a b/c'd"), "'/a b/c'\\''d'");
    }
}
