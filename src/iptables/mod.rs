//! The shared iptables layer of every netman component: typed rules (`types`), rendered to
//! `iptables-restore` text in one place (`render`), grouped into per-table batches (`batch`) and
//! applied by one `iptables-restore --noflush --wait` process with one section (one `COMMIT`, one
//! transaction) per table, under the shared lock: an
//! in-process mutex plus an exclusive `flock` on the configured lock file (the CF convention,
//! `/var/vcap/data/garden-cni/iptables.lock`). Listing parses `iptables-save -t TABLE` (`parse`).
//!
//! Only the nf_tables backend is used (`iptables-restore` = `iptables-nft-restore`); it does not
//! take `/run/xtables.lock`, so our own lock file is what serialises netman's writers. Every call
//! acts in the network namespace of the calling thread.

pub mod batch;
pub mod error;
pub mod netlink_removal;
pub mod parse;
pub mod render;
pub mod types;

pub use batch::{Batch, Op, Position};
pub use error::{Error, Invalid};
pub use parse::{SavedRule, TableState};
pub use types::*;

use crate::os_error::OsError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

static PROCESS_LOCK: Mutex<()> = Mutex::new(());

/// Runs `iptables-restore` / `iptables-save` under the shared lock.
#[derive(Debug, Clone)]
pub struct Iptables {
    lock_file: PathBuf,
    restore: String,
    save: String,
}

impl Iptables {
    pub fn new(lock_file: &Path) -> Iptables {
        Iptables {
            lock_file: lock_file.to_path_buf(),
            restore: "iptables-restore".into(),
            save: "iptables-save".into(),
        }
    }

    pub fn lock_file(&self) -> &Path {
        &self.lock_file
    }

    /// Takes the in-process mutex and the file lock; both are held until the guard drops.
    pub fn lock(&self) -> Result<Locked<'_>, Error> {
        let mutex = PROCESS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.lock_file.display();
        if let Some(dir) = self.lock_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Lock(OsError::io(
                    format!("creating lock dir {}", dir.display()),
                    &e,
                ))
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_file)
            .map_err(|e| Error::Lock(OsError::io(format!("opening iptables lock {path}"), &e)))?;
        let flock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| {
            Error::Lock(OsError::errno(format!("locking iptables lock {path}"), e))
        })?;
        Ok(Locked {
            ipt: self,
            _flock: flock,
            _mutex: mutex,
        })
    }

    /// Applies a batch under the lock.
    pub fn apply(&self, batch: &Batch) -> Result<(), Error> {
        self.lock()?.apply(batch)
    }

    /// Removes chains and the jumps to them over nfnetlink, under the lock
    /// ([`netlink_removal`]); how many chains there were.
    pub fn remove_chains_over_netlink(
        &self,
        plan: &[netlink_removal::ChainRemoval],
    ) -> Result<usize, Error> {
        let _locked = self.lock()?;
        netlink_removal::remove(plan)
    }

    /// Lists one table (no lock needed: listing is one atomic read).
    pub fn list(&self, table: Table) -> Result<TableState, Error> {
        let out = self.save(&["-t", table.name()])?;
        parse::parse_save(table, &out)
    }

    /// Lists several tables with one `iptables-save` (a table that does not exist yet is empty).
    pub fn list_tables(&self, tables: &[Table]) -> Result<Vec<TableState>, Error> {
        let out = self.save(&[])?;
        tables.iter().map(|t| parse::parse_save(*t, &out)).collect()
    }

    fn save(&self, args: &[&str]) -> Result<String, Error> {
        run_save(&self.save, args)
    }
}

/// Lists one table with each rule's `[packets:bytes]` (`iptables-save -c -t TABLE`; no lock
/// needed): what readers of the counters start from.
pub fn list_counted(table: Table) -> Result<TableState, Error> {
    let out = run_save("iptables-save", &["-c", "-t", table.name()])?;
    parse::parse_save(table, &out)
}

fn run_save(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Exec(OsError::io(format!("running {program}"), &e)))?;
    if !out.status.success() {
        return Err(Error::Save {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Holder of the shared lock: list and apply inside one critical section.
pub struct Locked<'a> {
    ipt: &'a Iptables,
    _flock: Flock<File>,
    _mutex: MutexGuard<'static, ()>,
}

impl Locked<'_> {
    pub fn list(&self, table: Table) -> Result<TableState, Error> {
        self.ipt.list(table)
    }

    /// Lists several tables with one `iptables-save`.
    pub fn list_tables(&self, tables: &[Table]) -> Result<Vec<TableState>, Error> {
        self.ipt.list_tables(tables)
    }

    /// Applies the batch: one `iptables-restore --noflush --wait` process whose input holds one
    /// section per table, each ending in its own `COMMIT` (so each table is one transaction).
    /// Tables are committed in order (raw, mangle, nat, filter); at the first failing line the
    /// process stops and the error names the table and the line.
    pub fn apply(&self, batch: &Batch) -> Result<(), Error> {
        let text: String = batch
            .tables()
            .into_iter()
            .filter_map(|t| render::table_text(batch, t))
            .collect();
        if text.is_empty() {
            return Ok(());
        }
        self.restore(&text)
    }

    fn restore(&self, text: &str) -> Result<(), Error> {
        log::debug!("iptables-restore --noflush:\n{text}");
        let program = &self.ipt.restore;
        let exec = |what: &str, e: std::io::Error| {
            Error::Exec(OsError::io(format!("{what} {program}"), &e))
        };
        let mut child = Command::new(program)
            .args(["--noflush", "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| exec("running", e))?;
        let write = child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes());
        let out = child
            .wait_with_output()
            .map_err(|e| exec("waiting for", e))?;
        write.map_err(|e| exec("writing to", e))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(restore_error(text, stderr))
    }
}

/// Names the table and the line of `text` that `iptables-restore` stopped at, when it says.
fn restore_error(text: &str, stderr: String) -> Error {
    let Some(n) = failed_line(&stderr).filter(|n| *n >= 1) else {
        return Error::Restore {
            table: None,
            stderr,
            line: None,
        };
    };
    let lines: Vec<&str> = text.lines().collect();
    let table = lines[..n.min(lines.len())]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix('*'))
        .unwrap_or("?");
    Error::Restore {
        table: Some(table.to_string()),
        stderr,
        line: Some(lines.get(n - 1).copied().unwrap_or("?").to_string()),
    }
}

/// `iptables-restore: line 3 failed` -> 3
fn failed_line(err: &str) -> Option<usize> {
    let rest = &err[err.find("line ")? + 5..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn chain(n: &str) -> Chain {
        Chain::new(n).unwrap()
    }

    #[test]
    fn chain_names_are_checked() {
        assert!(Chain::new("netout--0123456789abcdefghij").is_ok());
        assert!(Chain::new("netout--0123456789abcdefghijk").is_err());
        assert!(Chain::new("").is_err());
        assert!(Chain::new("-j").is_err());
        assert!(Chain::new("a b").is_err());
        assert!(Chain::new("a\"b").is_err());
    }

    #[test]
    fn text_rejects_control_characters() {
        assert!(Text::new("comment", "ok text", 256).is_ok());
        assert!(Text::new("comment", "new\nline", 256).is_err());
        assert!(Text::new("comment", "", 256).is_err());
    }

    #[test]
    fn batch_renders_per_table_and_removal_is_discovery_based() {
        let mut b = Batch::new();
        let c = chain("netin--h");
        b.create_chain(
            Table::Nat,
            &c,
            &[Rule::new(Target::Dnat {
                ip: Ipv4Addr::new(10, 0, 0, 2),
                port: Some(80),
            })
            .protocol(Protocol::Tcp)
            .with(Match::DestinationPort(PortRange::single(61000).unwrap()))],
            &Chain::prerouting(),
            Rule::new(Target::Jump(c.clone())),
            Position::Last,
        );
        assert_eq!(
            render::table_text(&b, Table::Nat).unwrap(),
            "*nat\n-N netin--h\n-A netin--h -p tcp -m tcp --dport 61000 -j DNAT --to-destination 10.0.0.2:80\n-A PREROUTING -j netin--h\nCOMMIT\n"
        );
        assert!(render::table_text(&b, Table::Filter).is_none());

        let state = parse::parse_save(
            Table::Filter,
            "*filter\n:FORWARD ACCEPT [0:0]\n:netout--h - [0:0]\n:netout--h--log - [0:0]\n-A FORWARD -s 10.0.0.2/32 -j netout--h\n-A FORWARD -j other\n-A netout--h -g netout--h--log\nCOMMIT\n",
        )
        .unwrap();
        let mut b = Batch::new();
        b.remove_chains(
            &state,
            &[
                chain("netout--h"),
                chain("netout--h--log"),
                chain("gone--h"),
            ],
        );
        assert_eq!(
            render::table_text(&b, Table::Filter).unwrap(),
            "*filter\n-D FORWARD -s 10.0.0.2/32 -j netout--h\n-F netout--h\n-F netout--h--log\n-X netout--h\n-X netout--h--log\nCOMMIT\n"
        );
        let mut b = Batch::new();
        b.remove_chains(&state, &[chain("gone--h")]);
        assert!(b.is_empty());
    }

    #[test]
    fn rule_check_catches_port_without_protocol() {
        let r =
            Rule::new(Target::Accept).with(Match::DestinationPort(PortRange::single(80).unwrap()));
        assert!(r.check().is_err());
        let r = Rule::new(Target::Accept)
            .protocol(Protocol::Udp)
            .with(Match::DestinationPort(PortRange::single(53).unwrap()));
        assert!(r.check().is_ok());
        assert!(PortRange::new(10, 9).is_err());
        assert!(PortRange::new(0, 9).is_err());
    }

    #[test]
    fn failed_line_is_found() {
        assert_eq!(
            failed_line("iptables-restore: line 2 failed: No chain"),
            Some(2)
        );
        assert_eq!(failed_line("other"), None);
    }
}
