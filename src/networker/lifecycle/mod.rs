//! The container lifecycle: `up` (with rollback of what the call did), `down` (idempotent), the
//! netman-era `net-in`/`net-out`/`bulk-net-out`, and `reconcile`; and what they share: the cache
//! of CNI ADD results, rule removal, the agent's force poll.

mod agent_egress;
mod down;
mod netman_era;
mod reconcile;
mod up;

use super::bind_mount;
use super::cni_cache::{self, CniCache};
use super::config::Config;
use super::guard;
use super::names::ChainNames;
use super::ports::PortAllocator;
use super::Error;
use crate::cell::Store;
use crate::iptables::{Batch, Iptables, Table};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Networker {
    pub config: Config,
    pub iptables: Iptables,
    pub store: Store,
    pub ports: PortAllocator,
}

impl Networker {
    pub fn new(config: Config) -> Networker {
        Networker {
            iptables: Iptables::new(Path::new(&config.iptables_lock_file)),
            store: Store::new(Path::new(&config.datastore)),
            ports: PortAllocator::new(
                Path::new(&config.state_file),
                config.start_port,
                config.total_ports,
                config.explicit_ports(),
            ),
            config,
        }
    }

    fn mount_path(&self, handle: &str) -> PathBuf {
        bind_mount::path(Path::new(&self.config.bind_mount_dir), handle)
    }

    fn cache_dir(&self) -> &Path {
        Path::new(&self.config.cni_cache_dir)
    }

    fn cache_path(&self, handle: &str) -> PathBuf {
        cni_cache::path(self.cache_dir(), handle)
    }

    fn write_cache(&self, handle: &str, c: &CniCache) -> Result<(), Error> {
        Ok(cni_cache::write(self.cache_dir(), handle, c)?)
    }

    /// The cache entry; a damaged one is logged and then treated as absent (`down` must still
    /// remove what it can).
    fn read_cache(&self, handle: &str) -> Option<CniCache> {
        cni_cache::read(self.cache_dir(), handle).unwrap_or_else(|e| {
            log::error!("damaged CNI cache entry, going on without it: {e}");
            None
        })
    }

    /// Installs the cell guard unless it is complete (a check first: one process, no listing).
    /// `up` calls it before CNI ADD, so no container ever has an address without a deny.
    pub fn ensure_guard(&self) -> Result<(), Error> {
        if self
            .iptables
            .apply(&guard::check_batch(&self.config))
            .is_ok()
        {
            return Ok(());
        }
        log::info!("installing the cell guard");
        let lock = self.iptables.lock()?;
        Ok(guard::install(&self.config, &lock)?)
    }

    /// Removes every chain (and the jumps to them) of the given handles, in all tables, in one
    /// batch under the lock.
    pub fn remove_rules(&self, handles: &[String]) -> Result<(), Error> {
        let lock = self.iptables.lock()?;
        let mut batch = Batch::new();
        let tables = [Table::Mangle, Table::Nat, Table::Filter];
        for (table, state) in tables.into_iter().zip(lock.list_tables(&tables)?) {
            let mut chains = Vec::new();
            for h in handles {
                let n = ChainNames::for_handle(h);
                chains.extend(match table {
                    Table::Filter => n.filter(),
                    Table::Nat => n.nat(),
                    _ => n.mangle(),
                });
            }
            batch.remove_chains(&state, &chains);
        }
        Ok(lock.apply(&batch)?)
    }

    /// Asks the policy agent to enforce now. No agent listening is tolerated (logged); an agent
    /// that answers anything but 200 is an error.
    pub fn force_poll(&self) -> Result<(), Error> {
        let Some(url) = &self.config.policy_agent_force_poll_url else {
            return Ok(());
        };
        let failed = |status, message| Error::ForcePoll {
            url: url.clone(),
            status,
            message,
        };
        let agent = crate::http::client::agent(
            &Default::default(),
            Duration::from_secs(self.config.policy_agent_timeout_seconds),
        )
        .map_err(|m| failed(None, m))?;
        match agent.get(url).call() {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if status == 200 {
                    return Ok(());
                }
                let body = crate::http::client::body_string(&mut resp, 4096).unwrap_or_default();
                Err(failed(Some(status), body.trim().to_string()))
            }
            Err(e) if is_refused(&e) => {
                log::warn!("policy agent force poll {url}: not running ({e})");
                Ok(())
            }
            Err(e) => Err(failed(None, e.to_string())),
        }
    }
}

/// Nothing listens at the address (by the error's kind).
fn is_refused(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        ureq::Error::ConnectionFailed => true,
        _ => false,
    }
}
