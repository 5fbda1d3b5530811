//! Logging: plain text or JSON lines (`--log-format json`) on stderr, each with an RFC 3339 UTC
//! timestamp (`2026-12-06T03:50:13.123Z`). Daemons start at `info`, which shows their start,
//! listen addresses, stop and the events that change state; per-request and per-poll lines are
//! `debug`. The level can be changed at runtime through `/log-level`.

use log::LevelFilter;
use std::io::Write;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The level daemons log at unless told otherwise.
pub const DEFAULT_LEVEL: &str = "info";

// `--log-format` and `--log-level`, shared by every long-running binary. (No doc comment: clap
// would take it for the help's description of the binaries that flatten this.)
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level at start (error, warn, info, debug, trace); changeable at runtime via /log-level.
    #[arg(long, default_value = DEFAULT_LEVEL)]
    pub log_level: String,
}

impl LogArgs {
    /// Initialises logging, or exits 2 with a message when `--log-level` is unknown.
    pub fn init(&self, source: &'static str) {
        let level = parse_level(&self.log_level).unwrap_or_else(|e| {
            eprintln!("{source}: --log-level: {e}");
            std::process::exit(2)
        });
        init(source, self.log_format, level);
    }
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
                    "timestamp": timestamp(SystemTime::now()),
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
                    "{} {} {} {}: {}",
                    timestamp(SystemTime::now()),
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

/// `at` as RFC 3339 in UTC with milliseconds: `2026-12-06T03:50:13.123Z`.
pub fn timestamp(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn levels_parse_and_unknown_is_an_error() {
        assert_eq!(parse_level("DEBUG").unwrap(), LevelFilter::Debug);
        assert_eq!(parse_level("fatal").unwrap(), LevelFilter::Error);
        assert!(parse_level("loud").unwrap_err().contains("loud"));
        assert_eq!(parse_level(DEFAULT_LEVEL).unwrap(), LevelFilter::Info);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let at = |secs: u64, millis: u64| {
            timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_796_529_013, 123), "2026-12-06T03:50:13.123Z");
        // A leap day and the last millisecond of a year.
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_735_689_599, 999), "2024-12-31T23:59:59.999Z");
    }
}
