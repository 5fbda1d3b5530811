//! Certificate generation: a CA and the server and client certificates signed by it, written as
//! PEM files. Used by the lab, `scripts/generate-certs` (through `netman-lab certs`) and tests.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// Paths of one written certificate and its key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// Both: for components that serve and call with the same identity.
    Both,
    /// No extended key usage at all (any purpose), as some older tooling issues.
    Unrestricted,
}

impl Ca {
    pub fn new(common_name: &str) -> Result<Ca, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(err)?;
        Ok(Ca {
            issuer: CertifiedIssuer::self_signed(params, key).map_err(err)?,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a certificate for `common_name`; `names` become DNS or IP subject alternative names.
    pub fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usage: Usage,
    ) -> Result<(String, String), String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().map_err(err)?),
            });
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Usage::Unrestricted => Vec::new(),
        };
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes `<dir>/ca.crt`.
    pub fn write_ca(&self, dir: &Path) -> Result<PathBuf, String> {
        let path = dir.join("ca.crt");
        write_file(&path, &self.cert_pem(), 0o644)?;
        Ok(path)
    }

    /// Issues and writes `<dir>/<stem>.crt` and `<dir>/<stem>.key`.
    pub fn write_issued(
        &self,
        dir: &Path,
        stem: &str,
        common_name: &str,
        names: &[&str],
        usage: Usage,
    ) -> Result<CertFiles, String> {
        let (cert, key) = self.issue(common_name, names, usage)?;
        let files = CertFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        write_file(&files.cert, &cert, 0o644)?;
        write_file(&files.key, &key, 0o600)?;
        Ok(files)
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn err(e: impl std::fmt::Display) -> String {
    format!("certificate generation: {e}")
}
