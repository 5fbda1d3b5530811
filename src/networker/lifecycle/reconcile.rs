//! `reconcile`: removes what stale containers left behind, then chains of no live container.

use super::Networker;
use crate::iptables::{Batch, Chain, Table};
use crate::networker::bind_mount;
use crate::networker::names::{self, ChainNames, CHAIN_PREFIXES};
use crate::networker::protocol::ReconcileOutput;
use crate::networker::Error;
use std::collections::BTreeSet;

impl Networker {
    /// Removes leftovers: handles not in `keep` (when given), else handles whose bind-mounted
    /// netns is gone; then chains with a networker prefix that belong to no remaining container.
    pub fn reconcile(&self, keep: Option<&[String]>) -> Result<ReconcileOutput, Error> {
        let mut removed = Vec::new();
        let mut first_err = None;
        for h in self.known_handles()? {
            if names::validate_handle(&h).is_err() {
                continue;
            }
            let stale = match keep {
                Some(list) => !list.contains(&h),
                None => !bind_mount::is_mounted(&self.mount_path(&h)),
            };
            if stale {
                log::info!("reconcile: removing leftovers of {h}");
                if let Err(e) = self.down(&h) {
                    first_err.get_or_insert(e);
                }
                removed.push(h);
            }
        }
        // Chains of no live container (e.g. a crash between rules and the store).
        self.remove_orphan_chains()?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(ReconcileOutput { removed }),
        }
    }

    /// Every handle something is kept for: store, ports, bind mounts, CNI cache.
    fn known_handles(&self) -> Result<BTreeSet<String>, Error> {
        let mut known: BTreeSet<String> = self.store.read_all()?.handles().cloned().collect();
        known.extend(self.ports.handles()?);
        if let Ok(rd) = std::fs::read_dir(&self.config.bind_mount_dir) {
            known.extend(rd.filter_map(|e| e.ok()?.file_name().into_string().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&self.config.cni_cache_dir) {
            known.extend(rd.filter_map(|e| {
                e.ok()?
                    .file_name()
                    .into_string()
                    .ok()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            }));
        }
        Ok(known)
    }

    fn remove_orphan_chains(&self) -> Result<(), Error> {
        let live: BTreeSet<String> = self
            .store
            .read_all()?
            .handles()
            .flat_map(|h| {
                let n = ChainNames::for_handle(h);
                n.filter()
                    .into_iter()
                    .chain(n.nat())
                    .map(|c| c.as_str().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let lock = self.iptables.lock()?;
        let mut batch = Batch::new();
        let tables = [Table::Mangle, Table::Nat, Table::Filter];
        for state in lock.list_tables(&tables)? {
            let orphans: Vec<Chain> = state
                .chains
                .iter()
                .filter(|c| CHAIN_PREFIXES.iter().any(|p| c.starts_with(p)) && !live.contains(*c))
                .filter_map(|c| Chain::new(c).ok())
                .collect();
            batch.remove_chains(&state, &orphans);
        }
        Ok(lock.apply(&batch)?)
    }
}
