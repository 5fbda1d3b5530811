//! Certificates and keys from PEM files, and the rustls configurations built from them.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

/// Installs ring as the process-wide crypto provider. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("parsing certificates in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("reading private key from {}: {e}", path.display()))
}

pub fn root_store(ca_file: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate in {}: {e}", ca_file.display()))?;
    }
    Ok(roots)
}

/// A TLS server configuration. With `client_ca` every client must present a certificate signed
/// by that CA; the handshake fails otherwise.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    install_crypto_provider();
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(root_store(ca)?))
                .build()
                .map_err(|e| format!("client verifier for {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("server certificate {}: {e}", cert_file.display()))?;
    Ok(Arc::new(config))
}

/// The subject common name of a DER certificate, for logs and authorisation decisions.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    // Walk the DER for the first commonName attribute (OID 2.5.4.3) and read its string value.
    let der = cert.as_ref();
    let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
    let pos = der.windows(oid.len()).position(|w| w == oid)?;
    let rest = &der[pos + oid.len()..];
    let (tag, len) = (*rest.first()?, *rest.get(1)? as usize);
    if !matches!(tag, 0x0c | 0x13 | 0x16) || len >= 0x80 {
        return None;
    }
    std::str::from_utf8(rest.get(2..2 + len)?)
        .ok()
        .map(str::to_string)
}
