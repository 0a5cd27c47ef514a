//! TLS configuration: the daemon's certificate and key, and the trust
//! `chatc` puts in a server's certificate.
//!
//! This module only builds rustls configurations from files. rustls itself
//! is used sans-IO: the reactor moves bytes between the socket and a
//! `rustls::ServerConnection` (see `server.rs`), so a TLS connection is
//! driven by the same single-threaded loop as a plain one and nothing here
//! touches a socket. The crypto provider is ring, the crate the rest of
//! chatd already uses.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a certificate, key or trust store could not be used. `Display`
/// names the file and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsError(format!(
                "{}: not a PEM certificate file: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The daemon's side: its certificate chain and key. TLS 1.2 and 1.3 with
/// rustls's safe defaults; no client certificates.
pub fn server_config(cert: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        TlsError(format!(
            "{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            key_file.display()
        ))
    })?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError(format!(
                "{} and {} do not make a usable pair: {e}",
                cert.display(),
                key_file.display()
            ))
        })?;
    Ok(Arc::new(cfg))
}

/// `chatc`'s side. With `ca`, only certificates issued by the
/// certificates in that file are trusted (a homelab's own CA, or a pinned
/// self-made one); without it, the system's trust store.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for c in load_certs(path)? {
                roots.add(c).map_err(|e| {
                    TlsError(format!(
                        "{}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // A broken entry in the system store is skipped, as browsers do.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(TlsError(
                    "no trusted certificates found on this system; give the server's CA with --ca FILE"
                        .into(),
                ));
            }
        }
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_say_which_and_why() {
        let e = server_config(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .unwrap_err();
        assert!(e.0.contains("/nonexistent/c.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("chatd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = load_certs(&empty).unwrap_err();
        assert!(e.0.contains("no certificate"), "{e}");
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(e.0.contains("empty.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
