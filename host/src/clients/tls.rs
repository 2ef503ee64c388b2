//! The process's TLS crypto provider.
//!
//! The HTTP clients the host builds (reqwest for registries and the W&B
//! API, oci-client for plugin artifacts) use rustls without a provider of
//! their own: the process installs `ring`, the one the rest of the host
//! already links, once, before the first client is built.

/// Makes `ring` the process's rustls provider unless one is installed.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; either way one is installed.
        _ = rustls::crypto::ring::default_provider().install_default();
    }
}
