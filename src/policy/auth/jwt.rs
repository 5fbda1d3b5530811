//! Local verification of signed JWTs (RS256 and ES256) against configured public keys: PEM files
//! (`PUBLIC KEY` / `RSA PUBLIC KEY`) and/or a JWKS file (UAA's `/token_keys` format). No round
//! trip per request. `alg: none` and HMAC algorithms are refused; `exp` is required, `nbf` is
//! honoured, `iss` must equal the configured issuer, `aud` must contain the configured audience.

use super::{AuthError, Authenticator, Identity};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::RSA_PKCS1_2048_8192_SHA256;
use ring::signature::{RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Allowed clock difference for `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: i64 = 30;
/// Longer tokens are refused before any decoding.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed P-256 point (`04 || X || Y`).
    EcP256(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PublicKey {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one.
    alg: Option<String>,
    material: KeyMaterial,
}

impl PublicKey {
    fn fits(&self, alg: Alg) -> bool {
        let kind_ok = matches!(
            (&self.material, alg),
            (KeyMaterial::Rsa { .. }, Alg::Rs256) | (KeyMaterial::EcP256(_), Alg::Es256)
        );
        kind_ok && self.alg.as_deref().is_none_or(|a| a == alg.name())
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            KeyMaterial::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            KeyMaterial::EcP256(point) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

/// What to verify against and which claims to require.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    pub public_key_files: Vec<String>,
    pub jwks_file: Option<String>,
    /// `iss` must equal this.
    pub issuer: String,
    /// When set, `aud` (a string or an array) must contain it.
    pub audience: Option<String>,
}

pub struct JwtAuthenticator {
    keys: Vec<PublicKey>,
    issuer: String,
    audience: Option<String>,
}

impl JwtAuthenticator {
    pub fn new(config: &JwtConfig) -> Result<JwtAuthenticator, String> {
        let mut keys = Vec::new();
        for file in &config.public_key_files {
            let text = read(file)?;
            let found = keys_from_pem(&text).map_err(|e| format!("public key file {file}: {e}"))?;
            keys.extend(found);
        }
        if let Some(file) = &config.jwks_file {
            let text = read(file)?;
            keys.extend(keys_from_jwks(&text).map_err(|e| format!("JWKS file {file}: {e}"))?);
        }
        if keys.is_empty() {
            return Err("no public keys configured (jwt_public_key_files or jwt_jwks_file)".into());
        }
        if config.issuer.trim().is_empty() {
            return Err("no issuer configured (jwt_issuer)".into());
        }
        Ok(JwtAuthenticator {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Verifies `token` as of `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        let fail = |m: &str| AuthError(format!("jwt: {m}"));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(fail("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(c64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail("not a JWS compact token (three dot-separated parts)"));
        };
        let header: Value = decode_json(h64).map_err(|e| fail(&format!("header: {e}")))?;
        let alg = match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => Alg::Rs256,
            Some("ES256") => Alg::Es256,
            Some(other) => return Err(fail(&format!("algorithm {other:?} is not accepted"))),
            None => return Err(fail("header has no alg")),
        };
        if header.get("crit").is_some() {
            return Err(fail("critical header parameters are not supported"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|e| fail(&format!("signature encoding: {e}")))?;
        let kid = header.get("kid").and_then(Value::as_str);
        let candidates: Vec<&PublicKey> = self
            .keys
            .iter()
            .filter(|k| k.fits(alg))
            .filter(|k| match (kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(fail(&format!(
                "no {} key{}",
                alg.name(),
                kid.map(|k| format!(" with kid {k:?}")).unwrap_or_default()
            )));
        }
        let signed = &token[..h64.len() + 1 + c64.len()];
        if !candidates
            .iter()
            .any(|k| k.verify(signed.as_bytes(), &signature))
        {
            return Err(fail("bad signature"));
        }

        let claims: Value = decode_json(c64).map_err(|e| fail(&format!("claims: {e}")))?;
        let exp = numeric_claim(&claims, "exp")
            .map_err(|e| fail(&e))?
            .ok_or_else(|| fail("token has no exp"))?;
        if now > exp + LEEWAY_SECONDS {
            return Err(fail("token expired"));
        }
        if let Some(nbf) = numeric_claim(&claims, "nbf").map_err(|e| fail(&e))? {
            if now + LEEWAY_SECONDS < nbf {
                return Err(fail("token not valid yet (nbf)"));
            }
        }
        match claims.get("iss").and_then(Value::as_str) {
            Some(iss) if iss == self.issuer => {}
            Some(iss) => return Err(fail(&format!("issuer {iss:?} is not {:?}", self.issuer))),
            None => return Err(fail("token has no iss")),
        }
        if let Some(want) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == want,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
                _ => false,
            };
            if !ok {
                return Err(fail(&format!("audience does not include {want:?}")));
            }
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let subject = text("sub")
            .or_else(|| text("user_id"))
            .ok_or_else(|| fail("token has no sub"))?;
        let scopes = match claims.get("scope") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| fail("scope array holds a non-string"))?,
            Some(_) => return Err(fail("scope is neither a string nor an array")),
        };
        Ok(Identity {
            subject,
            user_name: text("user_name").unwrap_or_default(),
            scopes,
        })
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.verify_at(token, now)
    }
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(Path::new(path)).map_err(|e| format!("reading {path}: {e}"))
}

fn decode_json(part: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if !value.is_object() {
        return Err("not a JSON object".into());
    }
    Ok(value)
}

fn numeric_claim(claims: &Value, name: &str) -> Result<Option<i64>, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| format!("{name} is not a number")),
    }
}

// ---- key parsing ----------------------------------------------------------------------------

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Every `PUBLIC KEY` (SubjectPublicKeyInfo) and `RSA PUBLIC KEY` (PKCS#1) block of a PEM text.
fn keys_from_pem(text: &str) -> Result<Vec<PublicKey>, String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let label_end = after.find("-----").ok_or("unterminated PEM header")?;
        let label = &after[..label_end];
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_start
            .find(&end_marker)
            .ok_or_else(|| format!("no {end_marker}"))?;
        let b64: String = body_start[..body_end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = STANDARD
            .decode(b64)
            .map_err(|e| format!("{label} block: base64: {e}"))?;
        let material = match label {
            "PUBLIC KEY" => parse_spki(&der),
            "RSA PUBLIC KEY" => parse_pkcs1(&der),
            other => Err(format!("{other} block is not a public key")),
        }
        .map_err(|e| format!("{label} block: {e}"))?;
        keys.push(PublicKey {
            kid: None,
            alg: None,
            material,
        });
        rest = &body_start[body_end + end_marker.len()..];
    }
    if keys.is_empty() {
        return Err("no PEM public key found".into());
    }
    Ok(keys)
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

fn keys_from_jwks(text: &str) -> Result<Vec<PublicKey>, String> {
    let jwks: Jwks = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for (i, jwk) in jwks.keys.into_iter().enumerate() {
        let name = format!(
            "key {i}{}",
            jwk.kid
                .as_ref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default()
        );
        if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let field = |v: &Option<String>, f: &str| -> Result<Vec<u8>, String> {
            let v = v.as_ref().ok_or_else(|| format!("{name}: missing {f}"))?;
            URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|e| format!("{name}: {f}: {e}"))
        };
        let material = match jwk.kty.as_str() {
            "RSA" => rsa_material(field(&jwk.n, "n")?, field(&jwk.e, "e")?)
                .map_err(|e| format!("{name}: {e}"))?,
            "EC" => {
                if jwk.crv.as_deref() != Some("P-256") {
                    return Err(format!("{name}: only EC curve P-256 is supported"));
                }
                let (x, y) = (field(&jwk.x, "x")?, field(&jwk.y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(format!("{name}: P-256 coordinates must be 32 bytes"));
                }
                let mut point = vec![0x04];
                point.extend(x);
                point.extend(y);
                KeyMaterial::EcP256(point)
            }
            other => {
                return Err(format!(
                    "{name}: key type {other:?} is not supported (RSA, EC)"
                ))
            }
        };
        keys.push(PublicKey {
            kid: jwk.kid,
            alg: jwk.alg,
            material,
        });
    }
    if keys.is_empty() {
        return Err("no signing keys".into());
    }
    Ok(keys)
}

fn rsa_material(n: Vec<u8>, e: Vec<u8>) -> Result<KeyMaterial, String> {
    let strip = |v: Vec<u8>| {
        let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
        v[first..].to_vec()
    };
    let (n, e) = (strip(n), strip(e));
    if n.len() < 256 {
        return Err(format!(
            "RSA key of {} bits is too small (2048 at least)",
            n.len() * 8
        ));
    }
    if e.is_empty() {
        return Err("RSA exponent is zero".into());
    }
    Ok(KeyMaterial::Rsa { n, e })
}

/// One DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "malformed DER".to_string();
    let tag = *input.first().ok_or_else(bad)?;
    let first = *input.get(1).ok_or_else(bad)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let count = first & 0x7f;
        if count == 0 || count > 3 {
            return Err(bad());
        }
        let bytes = input.get(2..2 + count).ok_or_else(bad)?;
        (
            bytes.iter().fold(0usize, |acc, b| acc << 8 | *b as usize),
            2 + count,
        )
    };
    let contents = input.get(header..header + len).ok_or_else(bad)?;
    Ok((tag, contents, &input[header + len..]))
}

fn parse_spki(input: &[u8]) -> Result<KeyMaterial, String> {
    let (tag, spki, _) = der(input)?;
    if tag != 0x30 {
        return Err("not a SubjectPublicKeyInfo".into());
    }
    let (tag, algorithm, rest) = der(spki)?;
    if tag != 0x30 {
        return Err("not a SubjectPublicKeyInfo".into());
    }
    let (tag, bits, _) = der(rest)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return Err("public key is not a BIT STRING".into());
    }
    let key = &bits[1..];
    let (tag, oid, params) = der(algorithm)?;
    if tag != 0x06 {
        return Err("algorithm identifier has no OID".into());
    }
    if oid == OID_RSA {
        parse_pkcs1(key)
    } else if oid == OID_EC {
        let (tag, curve, _) = der(params)?;
        if tag != 0x06 || curve != OID_P256 {
            return Err("only EC curve P-256 is supported".into());
        }
        if key.len() != 65 || key[0] != 0x04 {
            return Err("EC key is not an uncompressed P-256 point".into());
        }
        Ok(KeyMaterial::EcP256(key.to_vec()))
    } else {
        Err("key algorithm is neither RSA nor EC (P-256)".into())
    }
}

fn parse_pkcs1(input: &[u8]) -> Result<KeyMaterial, String> {
    let (tag, seq, _) = der(input)?;
    if tag != 0x30 {
        return Err("not an RSAPublicKey".into());
    }
    let (tag, n, rest) = der(seq)?;
    let (tag2, e, _) = der(rest)?;
    if tag != 0x02 || tag2 != 0x02 {
        return Err("not an RSAPublicKey".into());
    }
    rsa_material(n.to_vec(), e.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(
            der(&[0x02, 0x01, 0x05]).unwrap(),
            (0x02, &[5u8][..], &[][..])
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(der(&long).unwrap().1.len(), 0x80);
        assert!(der(&[0x04, 0x05, 1]).is_err());
        assert!(der(&[0x04, 0x80]).is_err());
    }

    #[test]
    fn pem_without_keys_is_an_error() {
        assert!(keys_from_pem("hello")
            .unwrap_err()
            .contains("no PEM public key"));
        let err = keys_from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(err.contains("not a public key"), "{err}");
    }
}
