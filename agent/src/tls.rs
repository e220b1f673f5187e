//! TLS for HTTPS remotes and hooks: rustls with the *ring* crypto provider.
//!
//! reqwest (through gix's HTTP transport and the hooks client) is built without a provider of
//! its own; [`init`] installs ring's as the process default. ring is a fraction of the size of
//! aws-lc (the default), which keeps the binary small for edge hosts, and it implements every
//! cipher suite and signature scheme rustls offers a client. Certificates are checked against
//! the host's trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE`).

use std::sync::OnceLock;

/// Install the process-wide crypto provider. Idempotent; call before building any HTTP client.
pub fn init() {
    // Err means a provider is already installed (by an earlier call): nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client configuration for HTTPS fetches, built once per process: left to itself, every
/// new HTTP client (one per poll) would parse the host's whole CA bundle again, most of an
/// idle poll's CPU. A changed trust store is read when tend restarts. `None` when the trust
/// store cannot be loaded (the client then reports why, and the next fetch tries again).
pub fn https_config() -> Option<rustls::ClientConfig> {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Some(c.clone());
    }
    init();
    use rustls_platform_verifier::ConfigVerifierExt;
    let config = rustls::ClientConfig::with_platform_verifier().ok()?;
    Some(CONFIG.get_or_init(|| config).clone())
}

/// The client configuration for plain `http://` fetches: the client needs one, but it is never
/// used, so no trust store is read for it.
pub fn plain_config() -> rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            init();
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .clone()
}

#[cfg(test)]
mod tests {
    /// Clones of one configuration share its parts; a configuration built anew does not (each
    /// build makes its own `key_log`), so this tells "built once" from "built per call".
    fn same_config(a: &rustls::ClientConfig, b: &rustls::ClientConfig) -> bool {
        std::ptr::addr_eq(std::sync::Arc::as_ptr(&a.key_log), std::sync::Arc::as_ptr(&b.key_log))
    }

    #[test]
    fn configs_are_built_once_and_shared() {
        let a = super::plain_config();
        let b = super::plain_config();
        assert!(same_config(&a, &b), "plain config rebuilt");
        // The machine running the tests has a CA bundle (ca-certificates, a dependency of git).
        let h = super::https_config().expect("the host's trust store loads");
        let i = super::https_config().expect("the host's trust store loads");
        assert!(same_config(&h, &i), "HTTPS config rebuilt");
        assert!(
            !same_config(&h, &a),
            "the HTTPS and plain configs are two configurations"
        );
        assert!(std::sync::Arc::ptr_eq(h.crypto_provider(), a.crypto_provider()));
    }
}
