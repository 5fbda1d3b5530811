//! `up`: every input checked before anything changes, then the steps in order (bind mount, host
//! ports, CNI ADD, rules, store entry), each recorded so a failure undoes what this call did.

use super::agent_egress::Egress;
use super::{CniCache, Networker};
use crate::cell::{Container, WORKLOAD_KEY};
use crate::cni::CniResult;
use crate::iptables::Rule;
use crate::networker::bind_mount;
use crate::networker::cni_exec::{self, NetworkList, Runtime, RuntimeConfig};
use crate::networker::names::ChainNames;
use crate::networker::protocol::{mapped_ports_property, PortMapping, UpInput, UpOutput};
use crate::networker::rules::{self, UpPlan};
use crate::networker::Error;
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
        if self.store.contains(handle)? || bind_mount::is_mounted(&self.mount_path(handle)) {
            return Err(Error::AlreadyUp(handle.to_string()));
        }
        let checked = self.check_up(handle, input)?;
        let mut undo: Vec<Undo> = Vec::new();
        self.up_steps(handle, input, checked, &mut undo)
            .inspect_err(|_| self.rollback(handle, undo))
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
        checked: Checked,
        undo: &mut Vec<Undo>,
    ) -> Result<UpOutput, Error> {
        self.ensure_guard()?;
        let mount = self.mount_path(handle);
        bind_mount::create(&checked.netns, &mount)?;
        undo.push(Undo::Mount(mount.clone()));
        // What CNI is given is the mount: checked again, as the process may have moved.
        bind_mount::refuse_host_netns(&mount)?;

        undo.push(Undo::Ports);
        let mappings = self.map_ports(handle, &input.netin)?;

        let rt = Runtime {
            plugin_dir: PathBuf::from(&self.config.cni_plugin_dir),
            container_id: handle.to_string(),
            netns: mount,
            ifname: "eth0".into(),
            metadata: checked.metadata.clone(),
            runtime_config: Some(RuntimeConfig {
                net_out_rules: input.netout_rules.clone(),
                port_mappings: mappings.clone(),
            }),
        };
        let (result, mut cache) = self.cni_add(handle, checked.list, rt, undo)?;
        let (ip, iface) = result.first_ipv4().ok_or(Error::NoIpv4)?;
        let container = Container {
            handle: handle.to_string(),
            ip,
            metadata: checked.metadata,
        };

        // Dynamic ASGs: the agent reads the container from the store, so it goes in first.
        // Until the agent answers, the container cannot send: the agent's table refuses unknown
        // sources and the cell guard refuses what no container chain decided.
        let mut stored = false;
        let egress = if self.config.policy_agent_asg_url.is_some() {
            undo.push(Undo::AgentEgress);
            self.store.add(container.clone())?;
            undo.push(Undo::Store);
            stored = true;
            let t = Instant::now();
            let egress = self.agent_egress(handle)?;
            log::info!("up {handle}: egress by {egress:?} ({:?})", t.elapsed());
            egress
        } else {
            Egress::Static
        };
        let agent_egress = egress == Egress::Agent;
        if agent_egress {
            cache.agent_egress = true;
            self.write_cache(handle, &cache)?;
        }

        undo.push(Undo::Rules);
        let plan = UpPlan {
            config: &self.config,
            handle,
            ip,
            mappings: &mappings,
            asg: if agent_egress {
                Vec::new()
            } else {
                checked.asg
            },
            workload: input.properties.get(WORKLOAD_KEY).map(String::as_str),
            agent_egress,
        };
        let t = Instant::now();
        self.iptables.apply(&plan.batch())?;
        log::info!("up {handle}: rules took {:?}", t.elapsed());

        if !stored {
            self.store.add(container)?;
            undo.push(Undo::Store);
        }
        self.force_poll()?;
        Ok(self.up_output(ip, iface, &mappings, &result))
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

    /// CNI ADD through the chain; its result is cached for DEL with the metadata and runtime
    /// config it was given.
    fn cni_add(
        &self,
        handle: &str,
        list: NetworkList,
        rt: Runtime,
        undo: &mut Vec<Undo>,
    ) -> Result<(CniResult, CniCache), Error> {
        undo.push(Undo::Cni(Box::new((list.clone(), rt.clone()))));
        let t = Instant::now();
        let result = list.add(&rt)?;
        log::info!("up {handle}: CNI ADD took {:?}", t.elapsed());
        let cache = CniCache {
            metadata: rt.metadata,
            runtime_config: rt.runtime_config,
            result: Some(result.clone()),
            agent_egress: false,
        };
        self.write_cache(handle, &cache)?;
        Ok((result, cache))
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
