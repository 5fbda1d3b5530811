//! The CNI specification (1.1.0, 1.0.0, and 0.4.0 configs): network configuration, results,
//! error JSON with the spec's codes, version negotiation, the plugin's environment, and the
//! plugin-side main loop ([`plugin`]). The runtime side (executing plugins) lives with its user.

pub mod plugin;
mod types;

pub use types::*;

/// Versions this crate's plugins speak, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.1.0", "1.0.0", "0.4.0"];

/// The spec's well-known error codes.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// First plugin-specific code.
    pub const PLUGIN: u32 = 100;
}

/// A parsed `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(text: &str) -> Result<Version, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("invalid CNI version {text:?}"))
        };
        match parts.as_slice() {
            [a, b, c] => Ok(Version(num(a)?, num(b)?, num(c)?)),
            [a, b] => Ok(Version(num(a)?, num(b)?, 0)),
            _ => Err(format!("invalid CNI version {text:?}")),
        }
    }
}

/// Checks that `version` (a config's `cniVersion`) is one we speak.
pub fn check_version(version: &str) -> Result<Version, Error> {
    let v = Version::parse(version).map_err(|m| Error::new(code::DECODE_FAILURE, m, ""))?;
    if SUPPORTED_VERSIONS
        .iter()
        .any(|s| Version::parse(s).ok() == Some(v))
    {
        Ok(v)
    } else {
        Err(Error::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI versions: config is {version:?}"),
            format!("plugin supports {}", SUPPORTED_VERSIONS.join(", ")),
        ))
    }
}

/// The VERSION answer.
pub fn version_info(cni_version: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS.iter().rev().collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_negotiation() {
        assert!(check_version("1.1.0").is_ok());
        assert!(check_version("1.0.0").is_ok());
        assert!(check_version("0.4.0").is_ok());
        let e = check_version("0.3.1").unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = check_version("x").unwrap_err();
        assert_eq!(e.code, code::DECODE_FAILURE);
        assert!(Version::parse("1.0.0").unwrap() > Version::parse("0.4.0").unwrap());
    }
}
