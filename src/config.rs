//! Loading and checking JSON configuration files. Every binary's config struct denies unknown
//! keys (serde names the key in its error) and checks its values at start with [`Validate`].

use serde::de::DeserializeOwned;
use std::path::Path;

pub trait Validate {
    /// Checks every value; the error names the offending key.
    fn validate(&self) -> Result<(), String>;
}

pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading config file {}: {e}", path.display()))?;
    let config: T =
        serde_json::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
    config
        .validate()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    Ok(config)
}

/// A list of certificate names: none empty or padded with spaces.
pub fn require_cert_names(key: &str, names: &[String]) -> Result<(), String> {
    match names
        .iter()
        .find(|n| n.trim().is_empty() || n.trim() != n.as_str())
    {
        Some(bad) => Err(format!(
            "invalid '{key}': {bad:?} is not a certificate name"
        )),
        None => Ok(()),
    }
}

pub fn require_nonempty(key: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("missing required config '{key}'"));
    }
    Ok(())
}

pub fn require_port(key: &str, value: u16) -> Result<(), String> {
    if value == 0 {
        return Err(format!("invalid '{key}': port must be in 1-65535"));
    }
    Ok(())
}

pub fn require_readable_file(key: &str, path: &str) -> Result<(), String> {
    require_nonempty(key, path)?;
    std::fs::File::open(path).map_err(|e| format!("invalid '{key}': cannot read {path}: {e}"))?;
    Ok(())
}

pub fn require_ip(key: &str, value: &str) -> Result<std::net::IpAddr, String> {
    value
        .parse()
        .map_err(|_| format!("invalid '{key}': {value:?} is not an IP address"))
}

pub fn require_positive(key: &str, value: u64) -> Result<(), String> {
    if value == 0 {
        return Err(format!("invalid '{key}': must be greater than 0"));
    }
    Ok(())
}

/// Defaults written next to their key: `#[serde(default = "config::u16_default::<4103>")]`.
pub fn u16_default<const N: u16>() -> u16 {
    N
}
pub fn u32_default<const N: u32>() -> u32 {
    N
}
pub fn u64_default<const N: u64>() -> u64 {
    N
}
pub fn bool_default<const B: bool>() -> bool {
    B
}
pub fn u8_default<const N: u8>() -> u8 {
    N
}
/// `0.0.0.0`, the default of listeners other hosts reach.
pub fn any_host() -> String {
    "0.0.0.0".into()
}
/// `127.0.0.1`, the default of debug and other local-only listeners.
pub fn loopback() -> String {
    "127.0.0.1".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        listen_port: u16,
    }
    impl Validate for Sample {
        fn validate(&self) -> Result<(), String> {
            require_port("listen_port", self.listen_port)
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"listen_port": 1, "lisen_host": "x"}"#).unwrap();
        let err = load::<Sample>(&p).err().unwrap();
        assert!(err.contains("lisen_host"), "{err}");
        std::fs::write(&p, r#"{"listen_port": 0}"#).unwrap();
        let err = load::<Sample>(&p).err().unwrap();
        assert!(err.contains("'listen_port'"), "{err}");
        std::fs::write(&p, r#"{"listen_port": 4002}"#).unwrap();
        assert_eq!(load::<Sample>(&p).unwrap().listen_port, 4002);
    }
}
