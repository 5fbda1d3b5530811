//! Logging: quiet by default (warnings and errors), `info`/`debug` on request, plain text or JSON
//! lines (`--log-format json`). The level can be changed at runtime through `/log-level`.

use log::LevelFilter;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::Off),
        "error" | "fatal" => Ok(LevelFilter::Error),
        "warn" | "warning" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        other => Err(format!(
            "unknown log level {other:?} (use error, warn, info, debug or trace)"
        )),
    }
}

/// Initialises the process logger once. `RUST_LOG`, when set, overrides `level`.
pub fn init(source: &'static str, format: LogFormat, level: LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.target(env_logger::Target::Stderr);
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    match &from_env {
        Some(spec) => {
            builder.parse_filters(spec);
        }
        None => {
            // Let everything through the logger; the global max level is the runtime switch.
            builder.filter_level(LevelFilter::Trace);
        }
    }
    match format {
        LogFormat::Json => {
            builder.format(move |buf, record| {
                let line = serde_json::json!({
                    "timestamp": epoch_seconds(),
                    "source": source,
                    "level": record.level().as_str().to_ascii_lowercase(),
                    "module": record.target(),
                    "message": record.args().to_string(),
                });
                writeln!(buf, "{line}")
            });
        }
        LogFormat::Text => {
            builder.format(move |buf, record| {
                writeln!(
                    buf,
                    "{:.3} {} {} {}: {}",
                    epoch_seconds(),
                    source,
                    record.level(),
                    record.target(),
                    record.args()
                )
            });
        }
    }
    if builder.try_init().is_ok() && from_env.is_none() {
        log::set_max_level(level);
    }
}

pub fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_unknown_is_an_error() {
        assert_eq!(parse_level("DEBUG").unwrap(), LevelFilter::Debug);
        assert_eq!(parse_level("fatal").unwrap(), LevelFilter::Error);
        assert!(parse_level("loud").unwrap_err().contains("loud"));
    }
}
