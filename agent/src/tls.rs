//! TLS for HTTPS remotes and hooks: rustls with the *ring* crypto provider.
//!
//! reqwest (through gix's HTTP transport and the hooks client) is built without a provider of
//! its own; [`init`] installs ring's as the process default. ring is a fraction of the size of
//! aws-lc (the default), which keeps the binary small for edge hosts, and it implements every
//! cipher suite and signature scheme rustls offers a client. Certificates are checked against
//! the host's trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE`).

/// Install the process-wide crypto provider. Idempotent; call before building any HTTP client.
pub fn init() {
    // Err means a provider is already installed (by an earlier call): nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
