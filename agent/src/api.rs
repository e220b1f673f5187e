//! The local API: HTTP/1.1 + JSON on a Unix socket (`/run/tend/tend.sock`).
//!
//! Reads (status, history, diff, metrics) are for root and members of the `tend` group; changes
//! (sync, approve, suspend, resume) for root only. Both are checked with the peer's credentials
//! (SO_PEERCRED), not only the socket's file mode. The CLI is a client of this API.
//!
//! Deliberately small: one request per connection (`Connection: close`), no keep-alive, bodies
//! only in responses. That is all a local operator tool needs, and it keeps the attack surface
//! of a root daemon tiny.

use crate::daemon::{Command, Trigger};
use crate::state::State;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::Sender;

/// What the daemon shares with the API: the last state it saved.
pub type Shared = Arc<Mutex<State>>;

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
#[error("API socket {path}: {source}")]
pub struct Error {
    /// The socket path.
    pub path: PathBuf,
    /// Cause.
    pub source: std::io::Error,
}

/// The gid of the `tend` group, if it exists.
fn tend_gid() -> Option<u32> {
    nix::unistd::Group::from_name("tend")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Bind the socket: 0660 root:tend when the group exists, else 0600.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let err = |source| Error {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    let mode = match tend_gid() {
        Some(gid) => {
            let gid = Some(nix::unistd::Gid::from_raw(gid));
            let _ = nix::unistd::chown(path, None, gid);
            // The tend group must reach the socket: the runtime dir is 0750 root:tend (decrypted
            // secrets stay in their own 0700 directory below it).
            if let Some(dir) = path.parent() {
                let _ = nix::unistd::chown(dir, None, gid);
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750));
            }
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

/// Serve until the process ends.
pub fn spawn(listener: UnixListener, shared: Shared, tx: Sender<Trigger>) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, shared, tx).await {
                    log::debug!("api: {e}");
                }
            });
        }
    });
}

#[derive(Debug, PartialEq, Eq)]
enum Access {
    /// May change things.
    Admin,
    /// May read.
    Reader,
    /// Nothing.
    None,
}

/// Who is on the other end: root, a member of `tend`, or nobody we serve.
fn access_of(stream: &UnixStream) -> Access {
    let Ok(cred) = stream.peer_cred() else {
        return Access::None;
    };
    if cred.uid() == 0 {
        return Access::Admin;
    }
    let Some(gid) = tend_gid() else { return Access::None };
    if cred.gid() == gid {
        return Access::Reader;
    }
    // Supplementary groups of the peer process.
    if let Some(pid) = cred.pid() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let member = status
                .lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .is_some_and(|g| g.split_whitespace().any(|x| x.parse::<u32>().ok() == Some(gid)));
            if member {
                return Access::Reader;
            }
        }
    }
    Access::None
}

async fn respond(stream: &mut UnixStream, code: u16, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let ctype = if body.starts_with('{') || body.starts_with('[') {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn json_error(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

async fn handle(mut stream: UnixStream, shared: Shared, tx: Sender<Trigger>) -> std::io::Result<()> {
    let access = access_of(&stream);
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    // Bounded: a request line and headers, nothing else is read.
    reader.read_line(&mut line).await?;
    let mut headers = 0;
    loop {
        let mut h = String::new();
        let n = reader.read_line(&mut h).await?;
        headers += 1;
        if n == 0 || h == "\r\n" || h == "\n" || headers > 64 {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    if access == Access::None {
        return respond(
            &mut stream,
            403,
            &json_error("only root and the tend group may use this socket"),
        )
        .await;
    }
    let snapshot = || shared.lock().map(|s| s.clone()).unwrap_or_default();
    match (method, path) {
        ("GET", "/v1/status") => {
            let body = serde_json::to_string(&snapshot()).unwrap_or_default();
            respond(&mut stream, 200, &body).await
        }
        ("GET", "/v1/history") => {
            let body = serde_json::to_string(&snapshot().history).unwrap_or_default();
            respond(&mut stream, 200, &body).await
        }
        ("GET", "/v1/diff") => {
            let body = serde_json::to_string(&snapshot().diff).unwrap_or_default();
            respond(&mut stream, 200, &body).await
        }
        ("GET", "/metrics") => respond(&mut stream, 200, &crate::metrics::render()).await,
        ("POST", p) if access != Access::Admin && p.starts_with("/v1/") => {
            respond(&mut stream, 403, &json_error("changes are for root only")).await
        }
        ("POST", "/v1/sync") => {
            let wait = param("wait").is_some_and(|w| w == "1" || w == "true");
            if !wait {
                let _ = tx.send(Trigger::Command(Command::Sync, None)).await;
                return respond(&mut stream, 202, &serde_json::json!({"accepted": true}).to_string()).await;
            }
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(Trigger::Command(Command::Sync, Some(done_tx))).await;
            match done_rx.await {
                Ok(outcome) => respond(&mut stream, 200, &outcome.to_string()).await,
                Err(_) => respond(&mut stream, 500, &json_error("the daemon stopped")).await,
            }
        }
        ("POST", "/v1/approve") => {
            let Some(rev) = param("rev") else {
                return respond(&mut stream, 400, &json_error("rev= is required")).await;
            };
            let rollback = param("allow_rollback").is_some_and(|v| v == "1" || v == "true");
            command(&mut stream, &tx, Command::Approve { rev, rollback }).await
        }
        ("POST", "/v1/suspend") => command(&mut stream, &tx, Command::Suspend).await,
        ("POST", "/v1/resume") => command(&mut stream, &tx, Command::Resume).await,
        (_, "/v1/status" | "/v1/history" | "/v1/diff" | "/v1/sync" | "/v1/approve" | "/v1/suspend" | "/v1/resume") => {
            respond(&mut stream, 405, &json_error("method not allowed")).await
        }
        _ => respond(&mut stream, 404, &json_error("no such endpoint")).await,
    }
}

async fn command(stream: &mut UnixStream, tx: &Sender<Trigger>, cmd: Command) -> std::io::Result<()> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let _ = tx.send(Trigger::Command(cmd, Some(done_tx))).await;
    match done_rx.await {
        Ok(outcome) => {
            let ok = outcome.get("ok").and_then(|v| v.as_bool()).unwrap_or(false);
            respond(stream, if ok { 200 } else { 400 }, &outcome.to_string()).await
        }
        Err(_) => respond(stream, 500, &json_error("the daemon stopped")).await,
    }
}

/// A tiny blocking client for the CLI: one request, the status code and body back.
pub fn request(socket: &Path, method: &str, target: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: tend\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))?;
    Ok((code, body.to_owned()))
}
