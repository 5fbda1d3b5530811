//! `down`: removes everything of a container; absent parts are skipped, so it is idempotent.

use super::Networker;
use crate::cni::CniResult;
use crate::networker::bind_mount;
use crate::networker::cni_cache::CniCache;
use crate::networker::cni_exec::{self, NetworkList, Runtime, Started};
use crate::networker::rules;
use crate::networker::Error;
use crate::steps::Steps;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

impl Networker {
    /// Every step runs; the first error is returned.
    pub fn down(&self, handle: &str) -> Result<(), Error> {
        let mut steps = Steps::start();
        let cache = self.read_cache(handle);
        let mount = self.mount_path(handle);
        // The first DEL plugin starts now and waits for its input (below) meanwhile.
        let del = self.prepare_cni_del(handle, &mount, cache);
        steps.mark("read");
        // The container's rules go while it leaves the store and the agent's table. Its
        // address is released (CNI DEL) only once no rule names it any more, neither the
        // agent's nor its own chains (a container given the address meanwhile would meet
        // them); the host ports, named by the DNAT rules, go beside the DEL.
        // Reported in this order: rules, host ports, then the others as they ran.
        let errors = std::thread::scope(|s| {
            let rules = s.spawn(|| self.remove_rules_of(handle));
            let mut others = self.leave_store_and_agent(handle, &mut steps);
            let rules = match rules.join() {
                Ok((took, r)) => {
                    steps.add("rules_in_parallel", took);
                    r
                }
                Err(_) => Err(Error::Panicked("removing rules")),
            };
            steps.mark("wait_rules");
            let ports = s.spawn(|| {
                let t = Instant::now();
                (self.ports.release(handle).map(|_| ()), t.elapsed())
            });
            others.extend(self.release_address(handle, &mount, del, &mut steps));
            let ports = match ports.join() {
                Ok((r, took)) => {
                    steps.add("ports_in_parallel", took);
                    r
                }
                Err(_) => Err(Error::Panicked("releasing host ports")),
            };
            let mut errors: Vec<Error> =
                [rules, ports].into_iter().filter_map(Result::err).collect();
            errors.append(&mut others);
            errors
        });
        for e in &errors {
            log::error!("down {handle}: {e}");
        }
        log::info!("down {handle}: {}", steps.line());
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Fast path: the container's chains and the jumps to them over nfnetlink, in one
    /// transaction ([`crate::iptables::netlink_removal`]); when nf_tables refuses it (something
    /// else jumps to a chain, or the ruleset changed meanwhile) or holds none of them, listing
    /// with `iptables-save`.
    /// With how long it took.
    fn remove_rules_of(&self, handle: &str) -> (Duration, Result<(), Error>) {
        let t = Instant::now();
        let plan = rules::removal_plan(&self.config, handle);
        let r = match self.iptables.remove_chains_over_netlink(&plan) {
            Ok(n) if n > 0 => Ok(()),
            // A second down, or a host whose iptables is not nf_tables: listing finds what is
            // there (nothing, for a second down).
            Ok(_) => {
                log::info!("down {handle}: no chain over nfnetlink; listing instead");
                self.remove_rules(&[handle.to_string()])
            }
            Err(e) => {
                log::info!("down {handle}: removal over nfnetlink failed ({e}); listing instead");
                self.remove_rules(&[handle.to_string()])
            }
        };
        (t.elapsed(), r)
    }

    /// The store entry, then the agent's egress entry (the agent reads the store): both run;
    /// the errors are returned.
    fn leave_store_and_agent(&self, handle: &str, steps: &mut Steps) -> Vec<Error> {
        let mut errors: Vec<Error> = Vec::new();
        let stored = self.store.delete(handle).map(|_| ()).map_err(Error::from);
        steps.mark("store");
        errors.extend(stored.err());
        if self.config.policy_agent_asg_url.is_some() {
            let cleaned = self.agent_egress_cleanup(handle);
            steps.mark("agent");
            errors.extend(cleaned.err());
        }
        errors
    }

    /// CNI DEL (the address released), then the netns bind mount: both run; the errors are
    /// returned.
    fn release_address(
        &self,
        handle: &str,
        mount: &Path,
        del: Result<Del, Error>,
        steps: &mut Steps,
    ) -> Vec<Error> {
        let deleted = del.and_then(|d| self.cni_del(handle, d));
        steps.mark("cni_del");
        let unmounted = bind_mount::remove(mount);
        steps.mark("unmount");
        crate::cell::files::remove_stale_temps(&self.cache_path(handle));
        [deleted, unmounted]
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }

    /// What the CNI DEL needs, with what ADD was given (from its cache) and its first plugin
    /// started; nothing when there is nothing to delete.
    fn prepare_cni_del(
        &self,
        handle: &str,
        mount: &Path,
        cache: Option<CniCache>,
    ) -> Result<Del, Error> {
        let mounted = bind_mount::is_mounted(mount);
        if cache.is_none() && !mounted {
            return Ok(Del::Nothing);
        }
        let Some(list) = cni_exec::load(Path::new(&self.config.cni_config_dir))? else {
            return Ok(Del::NoConfig);
        };
        let cache = cache.unwrap_or_default();
        let rt = Runtime {
            plugin_dir: PathBuf::from(&self.config.cni_plugin_dir),
            container_id: handle.to_string(),
            // A netns that is gone (e.g. after a reboot) is passed as empty: plugins then
            // release what they hold outside it (IPAM) and skip the rest.
            netns: if mounted {
                mount.to_path_buf()
            } else {
                PathBuf::new()
            },
            ifname: "eth0".into(),
            metadata: cache.metadata,
            runtime_config: cache.runtime_config,
        };
        let first = list.start("DEL", &rt);
        Ok(Del::Run(Box::new(PreparedDel {
            list,
            rt,
            result: cache.result,
            first,
        })))
    }

    /// Runs the prepared DEL; the cache goes once DEL succeeded.
    fn cni_del(&self, handle: &str, del: Del) -> Result<(), Error> {
        match del {
            Del::Nothing => return Ok(()),
            Del::NoConfig => {}
            Del::Run(d) => d.list.del_started(&d.rt, d.result.as_ref(), d.first)?,
        }
        let _ = std::fs::remove_file(self.cache_path(handle));
        Ok(())
    }
}

/// The CNI DEL of a `down`, decided at its start.
enum Del {
    /// No cache and no mount: nothing was added.
    Nothing,
    /// No CNI configuration any more: only the cache goes.
    NoConfig,
    Run(Box<PreparedDel>),
}

struct PreparedDel {
    list: NetworkList,
    rt: Runtime,
    result: Option<CniResult>,
    first: Result<Started, cni_exec::Error>,
}
