//! HTTP clients (ureq over rustls): plain, TLS with a private CA, and mutual TLS.

use std::path::Path;
use std::time::Duration;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// TLS settings of a client. All paths are PEM files.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca_cert_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    pub skip_verification: bool,
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("reading {path}: {e}"))
}

/// Builds a blocking agent. Non-2xx statuses are returned as responses, not errors.
pub fn agent(tls: &ClientTls, timeout: Duration) -> Result<ureq::Agent, String> {
    crate::tls::install_crypto_provider();
    let mut builder = TlsConfig::builder().disable_verification(tls.skip_verification);
    if let Some(ca) = &tls.ca_cert_file {
        let pem = read(ca)?;
        let certs: Vec<Certificate<'static>> = Certificate::from_pem(&pem)
            .map(|c| vec![c.to_owned()])
            .map_err(|e| format!("CA certificate {ca}: {e}"))?;
        builder = builder.root_certs(RootCerts::new_with_certs(&certs));
    }
    match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read(cert)?;
            let key_pem = read(key)?;
            let cert = Certificate::from_pem(&cert_pem)
                .map_err(|e| format!("client certificate {cert}: {e}"))?
                .to_owned();
            let key = PrivateKey::from_pem(&key_pem)
                .map_err(|e| format!("client key {key}: {e}"))?
                .to_owned();
            builder = builder.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        (None, None) => {}
        _ => return Err("client_cert_file and client_key_file go together".into()),
    }
    let config = ureq::Agent::config_builder()
        .tls_config(builder.build())
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build();
    Ok(config.into())
}

/// Reads a whole response body as a string, bounded to `limit` bytes.
pub fn body_string(
    resp: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<String, String> {
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_string()
        .map_err(|e| format!("reading response body: {e}"))
}
