//! The policy server's one-shot subcommands: `migrate` (netman's migrations, adopting an original
//! cf-networking database, `--to-original`), `export` and `import`.

use std::ffi::OsString;

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
