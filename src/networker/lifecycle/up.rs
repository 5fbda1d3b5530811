//! `up`: every input checked before anything changes, then the steps (cell guard beside bind
//! mount and host ports; CNI ADD; CNI cache and rules beside store entry and the agent's answer),
//! each recorded so a failure undoes what this call did.

use super::agent_egress::Egress;
use super::Networker;
use crate::cell::{Container, WORKLOAD_KEY};
use crate::cni::CniResult;
use crate::iptables::Rule;
use crate::networker::bind_mount;
use crate::networker::cni_cache::CniCache;
use crate::networker::cni_exec::{self, NetworkList, Runtime, RuntimeConfig};
use crate::networker::names::ChainNames;
use crate::networker::protocol::{mapped_ports_property, PortMapping, UpInput, UpOutput};
use crate::networker::rules::{self, UpPlan};
use crate::networker::Error;
use crate::steps::Steps;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One step of `up` to undo if a later step fails.
enum Undo {
    Mount(PathBuf),
    Ports,
    Cni(Box<(NetworkList, Runtime)>),
    Rules,
    Store,
    /// The agent was asked to own the container's egress: tell it the container is gone.
    AgentEgress,
}

/// What `up` checked before changing anything.
struct Checked {
    asg: Vec<Rule>,
    netns: PathBuf,
    list: NetworkList,
    /// garden's properties, as the CNI metadata and the store's metadata.
    metadata: Map<String, Value>,
}

impl Networker {
    pub fn up(&self, handle: &str, input: &UpInput) -> Result<UpOutput, Error> {
        let mut steps = Steps::start();
        if self.store.contains(handle)? || bind_mount::is_mounted(&self.mount_path(handle)) {
            return Err(Error::AlreadyUp(handle.to_string()));
        }
        let checked = self.check_up(handle, input)?;
        steps.mark("check");
        let mut undo: Vec<Undo> = Vec::new();
        let out = self
            .up_steps(handle, input, checked, &mut undo, &mut steps)
            .inspect_err(|_| self.rollback(handle, undo))?;
        log::info!("up {handle}: {}", steps.line());
        Ok(out)
    }

    fn check_up(&self, handle: &str, input: &UpInput) -> Result<Checked, Error> {
        input.check_sizes()?;
        let names = ChainNames::for_handle(handle);
        let asg = rules::convert_netout(
            &input.netout_rules,
            &names.netout_log,
            self.config.iptables_asg_logging,
        )?;
        let netns = if input.pid == 0 {
            PathBuf::from("/proc/self/fd/3")
        } else {
            PathBuf::from(format!("/proc/{}/ns/net", input.pid))
        };
        if !netns.exists() {
            return Err(Error::NoNetns(netns));
        }
        bind_mount::refuse_host_netns(&netns)?;
        let dir = Path::new(&self.config.cni_config_dir);
        let list = cni_exec::load(dir)?.ok_or_else(|| Error::NoCniConfig(dir.to_path_buf()))?;
        let metadata = input
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Ok(Checked {
            asg,
            netns,
            list,
            metadata,
        })
    }

    fn up_steps(
        &self,
        handle: &str,
        input: &UpInput,
        mut checked: Checked,
        undo: &mut Vec<Undo>,
        steps: &mut Steps,
    ) -> Result<UpOutput, Error> {
        let mut rt = Runtime {
            plugin_dir: PathBuf::from(&self.config.cni_plugin_dir),
            container_id: handle.to_string(),
            netns: self.mount_path(handle),
            ifname: "eth0".into(),
            metadata: checked.metadata.clone(),
            runtime_config: None,
        };
        // The first ADD plugin starts now and waits for its input (the host ports) meanwhile.
        let first = checked.list.start("ADD", &rt)?;
        // The guard must be complete before the CNI ADD; the mount and the host ports do not
        // depend on it, so they are made meanwhile.
        let (guard, mappings) = std::thread::scope(|s| {
            let guard = s.spawn(|| {
                let t = Instant::now();
                (self.ensure_guard(), t.elapsed())
            });
            let mappings = self.mount_and_ports(handle, input, &checked.netns, undo);
            steps.mark("mount_ports");
            (guard.join(), mappings)
        });
        let mappings = mappings?;
        let (guard, took) = guard.map_err(|_| Error::Panicked("checking the guard"))?;
        steps.add("guard_in_parallel", took);
        guard?;

        rt.runtime_config = Some(RuntimeConfig {
            net_out_rules: input.netout_rules.clone(),
            port_mappings: mappings.clone(),
        });
        undo.push(Undo::Cni(Box::new((checked.list.clone(), rt.clone()))));
        let result = checked.list.add_started(&rt, first)?;
        steps.mark("cni_add");
        let (ip, iface) = result.first_ipv4().ok_or(Error::NoIpv4)?;
        let container = Container {
            handle: handle.to_string(),
            ip,
            metadata: checked.metadata,
        };

        // Dynamic ASGs: the agent owns the container's egress unless it answers 405, so the
        // container gets no NetOut chain until then, and its cache says so before its rules
        // go in. The agent reads the container from the store, so it goes in before the
        // agent is asked. Until the agent answers, the container cannot send: the agent's table
        // refuses unknown sources and the cell guard refuses what no container chain decided.
        // Caching and the other rules do not depend on the answer: they are done meanwhile.
        let dynamic = self.config.policy_agent_asg_url.is_some();
        let mut cache = CniCache {
            metadata: rt.metadata,
            runtime_config: rt.runtime_config,
            result: Some(result.clone()),
            agent_egress: dynamic,
        };
        let workload = input.properties.get(WORKLOAD_KEY).map(String::as_str);
        let plan = |agent_egress: bool, asg: Vec<Rule>| UpPlan {
            config: &self.config,
            handle,
            ip,
            mappings: &mappings,
            asg,
            workload,
            agent_egress,
        };
        // Kept for a 405 on the dynamic path; the static path's plan takes them now.
        let mut static_asg = std::mem::take(&mut checked.asg);
        let first = if dynamic {
            plan(true, Vec::new())
        } else {
            plan(false, std::mem::take(&mut static_asg))
        };
        undo.push(Undo::Rules);
        if dynamic {
            undo.push(Undo::AgentEgress);
        }
        let (beside, egress) = std::thread::scope(|s| {
            let beside = s.spawn(|| -> Result<Steps, Error> {
                let mut st = Steps::start();
                self.write_cache(handle, &cache)?;
                st.mark("cache_in_parallel");
                self.iptables.apply(&first.batch())?;
                st.mark("rules_in_parallel");
                Ok(st)
            });
            let egress = if dynamic {
                self.store
                    .add(container.clone())
                    .map_err(Error::from)
                    .and_then(|()| {
                        undo.push(Undo::Store);
                        steps.mark("store");
                        let egress = self.agent_egress(handle);
                        steps.mark("agent");
                        egress
                    })
            } else {
                Ok(Egress::Static)
            };
            (beside.join(), egress)
        });
        let beside = beside.map_err(|_| Error::Panicked("caching and installing rules"));
        let egress = egress?;
        let beside = beside??;
        for name in ["cache_in_parallel", "rules_in_parallel"] {
            steps.add(name, beside.get(name).unwrap_or_default());
        }
        steps.skip();

        if dynamic && egress == Egress::Static {
            // Syncing is disabled: the static NetOut path, recorded before it is installed.
            cache.agent_egress = false;
            self.write_cache(handle, &cache)?;
            self.iptables
                .apply(&plan(false, static_asg).netout_batch())?;
            steps.mark("netout");
        }
        if !dynamic {
            self.store.add(container)?;
            undo.push(Undo::Store);
            steps.mark("store");
        }
        if self.config.policy_agent_force_poll_url.is_some() {
            self.force_poll()?;
            steps.mark("force_poll");
        }
        Ok(self.up_output(ip, iface, &mappings, &result))
    }

    /// The netns bind mount (checked not to be the host's) and the host ports.
    fn mount_and_ports(
        &self,
        handle: &str,
        input: &UpInput,
        netns: &Path,
        undo: &mut Vec<Undo>,
    ) -> Result<Vec<PortMapping>, Error> {
        let mount = self.mount_path(handle);
        bind_mount::create(netns, &mount)?;
        undo.push(Undo::Mount(mount.clone()));
        // What CNI is given is the mount: checked again, as the process may have moved.
        bind_mount::refuse_host_netns(&mount)?;
        undo.push(Undo::Ports);
        self.map_ports(handle, &input.netin)
    }

    /// The host ports of the requested mappings (0: the lowest free one of the range).
    fn map_ports(&self, handle: &str, netin: &[PortMapping]) -> Result<Vec<PortMapping>, Error> {
        let requested: Vec<u16> = netin.iter().map(|n| n.host_port).collect();
        let host_ports = self.ports.acquire(handle, &requested)?;
        Ok(netin
            .iter()
            .zip(host_ports)
            .map(|(n, h)| PortMapping::resolved(*n, h))
            .collect())
    }

    fn up_output(
        &self,
        ip: Ipv4Addr,
        iface: Option<&str>,
        mappings: &[PortMapping],
        result: &CniResult,
    ) -> UpOutput {
        let mut properties = BTreeMap::new();
        properties.insert("garden.network.container-ip".into(), ip.to_string());
        properties.insert("garden.network.host-ip".into(), "255.255.255.255".into());
        properties.insert(
            "garden.network.mapped-ports".into(),
            mapped_ports_property(mappings),
        );
        if let Some(i) = iface {
            properties.insert("garden.network.interface".into(), i.to_string());
        }
        let dns_servers = if self.config.dns_servers.is_empty() {
            result.dns.nameservers.clone()
        } else {
            self.config
                .dns_servers
                .iter()
                .map(|d| d.to_string())
                .collect()
        };
        UpOutput {
            properties,
            dns_servers,
            search_domains: self.config.search_domains.clone(),
        }
    }

    fn rollback(&self, handle: &str, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            let r = match step {
                Undo::Store => self.store.delete(handle).map(|_| ()).map_err(Error::from),
                Undo::AgentEgress => self.agent_egress_cleanup(handle),
                Undo::Rules => self.remove_rules(&[handle.to_string()]),
                Undo::Cni(b) => {
                    let (list, rt) = *b;
                    let cached = self.read_cache(handle).and_then(|c| c.result);
                    let r = list.del(&rt, cached.as_ref());
                    let _ = std::fs::remove_file(self.cache_path(handle));
                    r.map_err(Error::from)
                }
                Undo::Ports => self.ports.release(handle).map(|_| ()),
                Undo::Mount(p) => bind_mount::remove(&p),
            };
            if let Err(e) = r {
                log::error!("rolling back up of {handle}: {e}");
            }
        }
    }
}
