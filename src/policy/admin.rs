//! The policy server's one-shot subcommands: `migrate` (netman's migrations, adopting an original
//! cf-networking database, `--to-original`), `export` and `import`.

use super::adopt::{self, MigrateOptions};
use super::config::PolicyServerConfig;
use super::transfer;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;

/// `migrate`: prints the report on standard output.
pub fn migrate(config: &PolicyServerConfig, options: MigrateOptions) -> Result<(), String> {
    let lines = adopt::migrate(&config.database, config.tag_length, options)
        .map_err(|e| format!("migrate: {e}"))?;
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// `export`: the document to `output` (written to a temporary file beside it, then renamed, so
/// the name never holds a partial document) or standard output; a summary on standard error.
pub fn export(config: &PolicyServerConfig, output: Option<&Path>) -> Result<(), String> {
    let doc = transfer::export(&config.database, config.tag_length)
        .map_err(|e| format!("export: {e}"))?;
    let mut bytes = serde_json::to_vec(&doc).map_err(|e| format!("export: {e}"))?;
    bytes.push(b'\n');
    match output {
        Some(path) => {
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| format!("export: writing {}: {e}", path.display()))?;
        }
        None => std::io::stdout()
            .lock()
            .write_all(&bytes)
            .map_err(|e| format!("export: writing to standard output: {e}"))?,
    }
    eprintln!("exported {}", summary(&doc));
    Ok(())
}

/// `N policies, N tags[, N security groups][, N internal routes], last_updated V`.
fn summary(doc: &transfer::Document) -> String {
    format!(
        "{} policies, {} tags{}{}, last_updated {}",
        doc.policies.len(),
        doc.tags.len(),
        doc.security_groups
            .as_ref()
            .map(|g| format!(", {} security groups", g.len()))
            .unwrap_or_default(),
        doc.internal_routes
            .as_ref()
            .map(|r| format!(", {} internal routes", r.len()))
            .unwrap_or_default(),
        doc.last_updated
    )
}

/// `import`: the document from `file` (none or `-`: standard input); a summary on standard
/// output. With `dry_run` the document is only validated (no database is touched).
pub fn import(
    config: &PolicyServerConfig,
    file: Option<&Path>,
    replace: bool,
    dry_run: bool,
) -> Result<(), String> {
    let mut bytes = Vec::new();
    match file {
        Some(path) if path != Path::new("-") => {
            bytes = std::fs::read(path)
                .map_err(|e| format!("import: reading {}: {e}", path.display()))?
        }
        _ => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| format!("import: reading standard input: {e}"))?;
        }
    }
    if dry_run {
        let doc = transfer::check(config.tag_length, &bytes).map_err(|e| format!("import: {e}"))?;
        println!(
            "the document is valid: {}; nothing was written (--dry-run)",
            summary(&doc)
        );
        return Ok(());
    }
    let done = transfer::import(&config.database, config.tag_length, &bytes, replace)
        .map_err(|e| format!("import: {e}"))?;
    println!(
        "imported {} policies, {} destinations, {} tags{}, {} release times of free tags{}; \
         last_updated {}",
        done.policies,
        done.destinations,
        done.tags,
        done.security_groups
            .map(|n| format!(", {n} security groups"))
            .unwrap_or_default(),
        done.released_tags,
        match (done.internal_routes, done.internal_routes_removed) {
            (Some(n), 0) => format!(", {n} internal routes"),
            (Some(n), removed) =>
                format!(", {n} internal routes (the {removed} the database held were removed)"),
            (None, removed) if done.internal_routes_reset => format!(
                "; the document has no internal routes: the {removed} the database held were \
                 removed and the internal domains reset to {}",
                crate::api::sd::DEFAULT_DOMAIN
            ),
            (None, _) => String::new(),
        },
        done.last_updated
    );
    Ok(())
}

/// The server's own flags (`--config FILE`, `--log-level L`, `--log-format F`, `--check-config`)
/// may also be written after a subcommand (`policy-server export --config F`): they are moved in
/// front of it, where the parser takes them.
pub fn hoist_server_flags(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    const WITH_VALUE: [&str; 3] = ["--config", "--log-level", "--log-format"];
    const SUBCOMMANDS: [&str; 3] = ["migrate", "export", "import"];
    let args: Vec<OsString> = args.into_iter().collect();
    let Some(at) = args.iter().position(|a| SUBCOMMANDS.iter().any(|s| a == s)) else {
        return args;
    };
    let (mut head, mut moved, mut tail) = (args[..at].to_vec(), Vec::new(), Vec::new());
    let mut rest = args[at..].iter();
    while let Some(a) = rest.next() {
        let text = a.to_string_lossy();
        if text == "--" {
            tail.push(a.clone());
            tail.extend(rest.cloned());
            break;
        }
        let flag = text.split('=').next().unwrap_or_default();
        if WITH_VALUE.contains(&flag) {
            moved.push(a.clone());
            if !text.contains('=') {
                if let Some(v) = rest.next() {
                    moved.push(v.clone());
                }
            }
        } else if text == "--check-config" {
            moved.push(a.clone());
        } else {
            tail.push(a.clone());
        }
    }
    head.extend(moved);
    head.extend(tail);
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hoist(args: &[&str]) -> Vec<String> {
        hoist_server_flags(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn server_flags_after_a_subcommand_move_in_front_of_it() {
        assert_eq!(
            hoist(&["ps", "export", "--config", "f.json", "--output", "o.json"]),
            ["ps", "--config", "f.json", "export", "--output", "o.json"]
        );
        assert_eq!(
            hoist(&[
                "ps",
                "import",
                "--replace",
                "--config=f.json",
                "doc.json",
                "--log-level",
                "debug"
            ]),
            [
                "ps",
                "--config=f.json",
                "--log-level",
                "debug",
                "import",
                "--replace",
                "doc.json"
            ]
        );
        assert_eq!(
            hoist(&["ps", "--config", "f", "migrate", "--dry-run"]),
            ["ps", "--config", "f", "migrate", "--dry-run"]
        );
        assert_eq!(hoist(&["ps", "--config", "f"]), ["ps", "--config", "f"]);
        // After `--` everything is the subcommand's.
        assert_eq!(
            hoist(&["ps", "import", "--", "--config"]),
            ["ps", "import", "--", "--config"]
        );
    }
}
