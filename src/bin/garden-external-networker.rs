//! garden-external-networker: thin main over `netman::networker`.

use clap::Parser;
use netman::networker::{self, Args, Config};

const SOURCE: &str = "garden-external-networker";

fn main() {
    if std::env::args().len() <= 1 {
        eprintln!("{SOURCE}: this is a plugin for Garden-runC. Don't run it directly.");
        std::process::exit(1);
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            print!("{e}");
            std::process::exit(0)
        }
        Err(e) => {
            let first = e.to_string();
            let line = first
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            eprintln!("{SOURCE}: {line}");
            std::process::exit(1)
        }
    };
    let config: Config = match netman::config::load(&args.config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{SOURCE}: {e}");
            std::process::exit(1)
        }
    };
    let level = netman::logging::parse_level(&config.log_level).expect("validated");
    netman::logging::init(SOURCE, config.log_format, level);
    let prefix = config.log_prefix.clone();
    let stdin = || networker::protocol::read_stdin(std::io::stdin().lock());
    match networker::run(&args, config, stdin) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
        }
        Err(e) => {
            log::debug!("{e}");
            eprintln!("{prefix}: {e}");
            std::process::exit(1)
        }
    }
}
