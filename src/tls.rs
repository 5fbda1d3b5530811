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
    server_config_for_clients(cert_file, key_file, client_ca, &[])
}

/// [`server_config`] where, when `allowed_clients` is not empty, a client certificate must also
/// name one of them (as its subject common name or a subject alternative name) and carry the
/// clientAuth extended key usage; any other certificate from the CA is refused in the handshake.
pub fn server_config_for_clients(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
    allowed_clients: &[String],
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
            if allowed_clients.is_empty() {
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_client_cert_verifier(Arc::new(AllowList {
                    inner: verifier,
                    allowed: allowed_clients.to_vec(),
                }))
            }
        }
        None if !allowed_clients.is_empty() => {
            return Err("an allow-list of client certificates needs a client CA".into())
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("server certificate {}: {e}", cert_file.display()))?;
    Ok(Arc::new(config))
}

/// The subject common name of a DER certificate, for logs.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    // The issuer's name precedes the subject's in the certificate, so the subject's common name
    // (OID 2.5.4.3) is the last one found.
    let der = cert.as_ref();
    let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
    der.windows(oid.len())
        .enumerate()
        .rev()
        .filter(|(_, w)| *w == oid)
        .filter_map(|(pos, _)| {
            let rest = &der[pos + oid.len()..];
            let (tag, len) = (*rest.first()?, *rest.get(1)? as usize);
            if !matches!(tag, 0x0c | 0x13 | 0x16) || len >= 0x80 {
                return None;
            }
            std::str::from_utf8(rest.get(2..2 + len)?)
                .ok()
                .map(str::to_string)
        })
        .next()
}

/// The names a certificate carries and whether it may authenticate a client.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CertIdentity {
    pub common_names: Vec<String>,
    /// DNS names, URIs, e-mail addresses and IP addresses of the subjectAltName extension.
    pub alt_names: Vec<String>,
    /// The extendedKeyUsage extension is present and lists clientAuth.
    pub client_auth: bool,
}

/// Reads subject names and extended key usage from a DER certificate.
pub fn cert_identity(cert: &CertificateDer<'_>) -> Result<CertIdentity, String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    use x509_cert::der::{oid::ObjectIdentifier, Decode};
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};
    const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    const SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
    const EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
    const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

    let cert =
        x509_cert::Certificate::from_der(cert.as_ref()).map_err(|e| format!("certificate: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let mut id = CertIdentity::default();
    for rdn in tbs.subject.0.iter() {
        for atv in rdn.0.iter().filter(|a| a.oid == CN) {
            let value = &atv.value;
            let text = Utf8StringRef::try_from(value)
                .map(|s| s.as_str().to_string())
                .or_else(|_| PrintableStringRef::try_from(value).map(|s| s.as_str().to_string()))
                .or_else(|_| Ia5StringRef::try_from(value).map(|s| s.as_str().to_string()));
            if let Ok(t) = text {
                id.common_names.push(t);
            }
        }
    }
    for ext in tbs.extensions.iter().flatten() {
        let bytes = ext.extn_value.as_bytes();
        if ext.extn_id == SAN {
            let san =
                SubjectAltName::from_der(bytes).map_err(|e| format!("subjectAltName: {e}"))?;
            for name in san.0 {
                match name {
                    GeneralName::DnsName(n) => id.alt_names.push(n.to_string()),
                    GeneralName::Rfc822Name(n) => id.alt_names.push(n.to_string()),
                    GeneralName::UniformResourceIdentifier(n) => id.alt_names.push(n.to_string()),
                    GeneralName::IpAddress(ip) => {
                        let b = ip.as_bytes();
                        let addr = match b.len() {
                            4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
                            16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
                            _ => None,
                        };
                        id.alt_names.extend(addr.map(|a| a.to_string()));
                    }
                    _ => {}
                }
            }
        } else if ext.extn_id == EKU {
            let eku =
                ExtendedKeyUsage::from_der(bytes).map_err(|e| format!("extendedKeyUsage: {e}"))?;
            id.client_auth = eku.0.contains(&CLIENT_AUTH);
        }
    }
    Ok(id)
}

/// The CA's verification, then the allow-list of client identities.
#[derive(Debug)]
struct AllowList {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    allowed: Vec<String>,
}

impl AllowList {
    fn admit(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        let id = cert_identity(cert)?;
        let names = || id.common_names.iter().chain(&id.alt_names);
        if !names().any(|n| self.allowed.contains(n)) {
            return Err(format!(
                "client certificate {:?} is not in the allow-list",
                names().collect::<Vec<_>>()
            ));
        }
        if !id.client_auth {
            return Err(format!(
                "client certificate {:?} lacks the clientAuth extended key usage",
                id.common_names
            ));
        }
        Ok(())
    }
}

impl rustls::server::danger::ClientCertVerifier for AllowList {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.admit(end_entity).map_err(|reason| {
            log::warn!("refused a client: {reason}");
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        })?;
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
