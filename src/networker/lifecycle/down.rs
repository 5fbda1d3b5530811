//! `down`: removes everything of a container; absent parts are skipped, so it is idempotent.

use super::{CniCache, Networker};
use crate::networker::bind_mount;
use crate::networker::cni_exec::{self, NetworkList, Runtime};
use crate::networker::rules;
use crate::networker::Error;
use crate::steps::Steps;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

impl Networker {
    /// Every step runs; the first error is returned.
    pub fn down(&self, handle: &str) -> Result<(), Error> {
        let mut steps = Steps::start();
        // The rules (then the host ports their DNAT names) and the CNI DEL are independent:
        // both run at once (down latency is the slower of the two, not their sum).
        let ip = self.store.get(handle).ok().flatten().map(|c| c.ip);
        let agent_egress = self.read_cache(handle).is_some_and(|c| c.agent_egress);
        steps.mark("read");
        let (rules, mut errors) = std::thread::scope(|s| {
            let rules = s.spawn(|| {
                let (took, rules) = self.remove_rules_of(handle, ip, agent_egress);
                let t = Instant::now();
                let ports = self.ports.release(handle).map(|_| ());
                (took, rules, t.elapsed(), ports)
            });
            let errors = self.down_except_rules(handle, &mut steps);
            (rules.join(), errors)
        });
        match rules {
            Ok((rules_took, rules, ports_took, ports)) => {
                steps.add("rules_in_parallel", rules_took);
                steps.add("ports_in_parallel", ports_took);
                let mut first: Vec<Error> =
                    [rules, ports].into_iter().filter_map(Result::err).collect();
                first.append(&mut errors);
                errors = first;
            }
            Err(_) => errors.insert(0, Error::Panicked("removing rules")),
        }
        for e in &errors {
            log::error!("down {handle}: {e}");
        }
        log::info!("down {handle}: {}", steps.line());
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Fast path: delete exactly what up installed, without listing the ruleset; anything else
    /// (a second down, a crash, changed config) falls back to listing. With how long it took.
    fn remove_rules_of(
        &self,
        handle: &str,
        ip: Option<Ipv4Addr>,
        agent_egress: bool,
    ) -> (Duration, Result<(), Error>) {
        let t = Instant::now();
        let fast = ip.map(|ip| {
            self.iptables.apply(&rules::removal_batch(
                &self.config,
                handle,
                ip,
                agent_egress,
            ))
        });
        let r = match fast {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => {
                log::info!("down {handle}: exact removal failed ({e}); listing instead");
                self.remove_rules(&[handle.to_string()])
            }
            None => self.remove_rules(&[handle.to_string()]),
        };
        (t.elapsed(), r)
    }

    /// Store entry, the agent's egress entry, CNI DEL, bind mount: every step runs; the errors
    /// are returned.
    fn down_except_rules(&self, handle: &str, steps: &mut Steps) -> Vec<Error> {
        let mut errors: Vec<Error> = Vec::new();
        let mut note = |r: Result<(), Error>, step: &'static str| {
            steps.mark(step);
            if let Err(e) = r {
                errors.push(e);
            }
        };
        note(
            self.store.delete(handle).map(|_| ()).map_err(Error::from),
            "store",
        );
        // After the store entry: the agent drops the container's egress entry. Before the CNI
        // DEL: the address is released only once no rule of the agent names it.
        if self.config.policy_agent_asg_url.is_some() {
            note(self.agent_egress_cleanup(handle), "agent");
        }
        let mount = self.mount_path(handle);
        note(self.cni_del(handle, &mount), "cni_del");
        note(bind_mount::remove(&mount), "unmount");
        crate::cell::files::remove_stale_temps(&self.cache_path(handle));
        errors
    }

    /// CNI DEL with what ADD was given (from its cache), when there is anything to delete; the
    /// cache goes once DEL succeeded.
    fn cni_del(&self, handle: &str, mount: &Path) -> Result<(), Error> {
        let cache = self.read_cache(handle);
        let mounted = bind_mount::is_mounted(mount);
        if cache.is_none() && !mounted {
            return Ok(());
        }
        if let Some(list) = cni_exec::load(Path::new(&self.config.cni_config_dir))? {
            self.cni_del_with(
                handle,
                list,
                cache.unwrap_or_default(),
                mounted.then_some(mount),
            )?;
        }
        let _ = std::fs::remove_file(self.cache_path(handle));
        Ok(())
    }

    fn cni_del_with(
        &self,
        handle: &str,
        list: NetworkList,
        cache: CniCache,
        mount: Option<&Path>,
    ) -> Result<(), Error> {
        let rt = Runtime {
            plugin_dir: PathBuf::from(&self.config.cni_plugin_dir),
            container_id: handle.to_string(),
            // A netns that is gone (e.g. after a reboot) is passed as empty: plugins then
            // release what they hold outside it (IPAM) and skip the rest.
            netns: mount.map(Path::to_path_buf).unwrap_or_default(),
            ifname: "eth0".into(),
            metadata: cache.metadata,
            runtime_config: cache.runtime_config,
        };
        Ok(list.del(&rt, cache.result.as_ref())?)
    }
}
