//! The container lifecycle: `up` (with rollback of what the call did), `down` (idempotent), the
//! netman-era `net-in`/`net-out`/`bulk-net-out`, and `reconcile`.

use super::bind_mount;
use super::cni_exec::{self, NetworkList, Runtime};
use super::config::Config;
use super::names::{ChainNames, CHAIN_PREFIXES};
use super::ports::PortAllocator;
use super::protocol::*;
use super::rules::{self, PortMapping, UpPlan};
use crate::cell::files::write_atomic;
use crate::cell::{Container, Store};
use crate::iptables::{Batch, Chain, Iptables, Op, Table};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Networker {
    pub config: Config,
    pub iptables: Iptables,
    pub store: Store,
    pub ports: PortAllocator,
}

/// What a CNI ADD needs again at DEL time.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CniCache {
    metadata: Value,
    runtime_config: Value,
    result: Value,
}

/// One step of `up` to undo if a later step fails.
enum Undo {
    Mount(PathBuf),
    Ports,
    Cni(Box<(NetworkList, Runtime)>),
    Rules,
    Store,
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
            ),
            config,
        }
    }

    fn mount_path(&self, handle: &str) -> PathBuf {
        bind_mount::path(Path::new(&self.config.bind_mount_dir), handle)
    }

    fn cache_path(&self, handle: &str) -> PathBuf {
        Path::new(&self.config.cni_cache_dir).join(format!("{handle}.json"))
    }

    pub fn up(&self, handle: &str, input: &UpInput) -> Result<UpOutput, String> {
        if self.store.contains(handle)? || bind_mount::is_mounted(&self.mount_path(handle)) {
            return Err(format!("container {handle} is already up"));
        }
        // Check every input before changing anything.
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
            return Err(format!(
                "network namespace {} does not exist",
                netns.display()
            ));
        }
        let Some(list) = cni_exec::load(Path::new(&self.config.cni_config_dir))? else {
            return Err(format!(
                "no CNI config (*.conflist or *.conf) in {}",
                self.config.cni_config_dir
            ));
        };

        let mut undo: Vec<Undo> = Vec::new();
        match self.up_steps(handle, input, &netns, list, asg, &mut undo) {
            Ok(out) => Ok(out),
            Err(e) => {
                self.rollback(handle, undo);
                Err(e)
            }
        }
    }

    fn up_steps(
        &self,
        handle: &str,
        input: &UpInput,
        netns: &Path,
        list: NetworkList,
        asg: Vec<crate::iptables::Rule>,
        undo: &mut Vec<Undo>,
    ) -> Result<UpOutput, String> {
        let mount = self.mount_path(handle);
        bind_mount::create(netns, &mount)?;
        undo.push(Undo::Mount(mount.clone()));

        let requested: Vec<u16> = input.netin.iter().map(|n| n.host_port).collect();
        undo.push(Undo::Ports);
        let host_ports = self.ports.acquire(handle, &requested)?;
        let mappings: Vec<PortMapping> = input
            .netin
            .iter()
            .zip(&host_ports)
            .map(|(n, &h)| PortMapping {
                host_port: h,
                container_port: if n.container_port == 0 {
                    h
                } else {
                    n.container_port
                },
            })
            .collect();

        let metadata = Value::Object(
            input
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
        let runtime_config = json!({
            "portMappings": mappings.iter().map(|m| json!({
                "hostPort": m.host_port, "containerPort": m.container_port, "protocol": "tcp"
            })).collect::<Vec<_>>(),
            "netOutRules": input.netout_rules,
        });
        let rt = Runtime {
            plugin_dir: PathBuf::from(&self.config.cni_plugin_dir),
            container_id: handle.to_string(),
            netns: mount.clone(),
            ifname: "eth0".into(),
            metadata: metadata.clone(),
            runtime_config: runtime_config.clone(),
        };
        undo.push(Undo::Cni(Box::new((list.clone(), rt.clone()))));
        let t = std::time::Instant::now();
        let result = list.add(&rt)?;
        log::info!("up {handle}: CNI ADD took {:?}", t.elapsed());
        self.write_cache(
            handle,
            &CniCache {
                metadata: metadata.clone(),
                runtime_config,
                result: result.clone(),
            },
        )?;
        let (ip, iface) = cni_exec::result_ipv4(&result)
            .ok_or_else(|| "expected an IPv4 address in the CNI result".to_string())?;

        undo.push(Undo::Rules);
        let workload = input
            .properties
            .get("container_workload")
            .map(String::as_str);
        let plan = UpPlan {
            config: &self.config,
            handle,
            ip,
            mappings: &mappings,
            asg,
            workload,
        };
        let t = std::time::Instant::now();
        self.iptables.apply(&plan.batch())?;
        log::info!("up {handle}: rules took {:?}", t.elapsed());

        let Value::Object(md) = metadata else {
            unreachable!("built as an object")
        };
        self.store.add(Container {
            handle: handle.to_string(),
            ip,
            metadata: md,
        })?;
        undo.push(Undo::Store);
        self.force_poll()?;

        let mapped: Vec<MappedPort> = mappings
            .iter()
            .map(|m| MappedPort {
                host_port: m.host_port,
                container_port: m.container_port,
            })
            .collect();
        let mut properties = BTreeMap::new();
        properties.insert("garden.network.container-ip".into(), ip.to_string());
        properties.insert("garden.network.host-ip".into(), "255.255.255.255".into());
        properties.insert(
            "garden.network.mapped-ports".into(),
            serde_json::to_string(&mapped).expect("serialisable"),
        );
        if let Some(i) = iface {
            properties.insert("garden.network.interface".into(), i);
        }
        let dns_servers = if self.config.dns_servers.is_empty() {
            cni_exec::result_nameservers(&result)
        } else {
            self.config
                .dns_servers
                .iter()
                .map(|d| d.to_string())
                .collect()
        };
        Ok(UpOutput {
            properties,
            dns_servers,
            search_domains: self.config.search_domains.clone(),
        })
    }

    fn rollback(&self, handle: &str, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            let r = match step {
                Undo::Store => self.store.delete(handle).map(|_| ()).map_err(String::from),
                Undo::Rules => self.remove_rules(&[handle.to_string()]),
                Undo::Cni(b) => {
                    let (list, rt) = *b;
                    let cached = self.read_cache(handle).map(|c| c.result);
                    let r = list.del(&rt, cached.as_ref());
                    let _ = std::fs::remove_file(self.cache_path(handle));
                    r
                }
                Undo::Ports => self.ports.release(handle).map(|_| ()),
                Undo::Mount(p) => bind_mount::remove(&p),
            };
            if let Err(e) = r {
                log::error!("rolling back up of {handle}: {e}");
            }
        }
    }

    fn write_cache(&self, handle: &str, c: &CniCache) -> Result<(), String> {
        let dir = Path::new(&self.config.cni_cache_dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(write_atomic(
            &self.cache_path(handle),
            &serde_json::to_vec(c).expect("serialisable"),
        )?)
    }

    fn read_cache(&self, handle: &str) -> Option<CniCache> {
        let bytes = std::fs::read(self.cache_path(handle)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes every chain (and the jumps to them) of the given handles, in all tables, in one
    /// batch under the lock.
    pub fn remove_rules(&self, handles: &[String]) -> Result<(), String> {
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
        lock.apply(&batch)
    }

    /// Asks the policy agent to enforce now. No agent listening is tolerated (logged); an agent
    /// that answers anything but 200 is an error.
    pub fn force_poll(&self) -> Result<(), String> {
        let Some(url) = &self.config.policy_agent_force_poll_url else {
            return Ok(());
        };
        let agent = crate::http::client::agent(
            &Default::default(),
            Duration::from_secs(self.config.policy_agent_timeout_seconds),
        )?;
        match agent.get(url).call() {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if status == 200 {
                    Ok(())
                } else {
                    let body =
                        crate::http::client::body_string(&mut resp, 4096).unwrap_or_default();
                    Err(format!(
                        "policy agent force poll {url} returned {status}: {}",
                        body.trim()
                    ))
                }
            }
            Err(e) if is_refused(&e) => {
                log::warn!("policy agent force poll {url}: not running ({e})");
                Ok(())
            }
            Err(e) => Err(format!("policy agent force poll {url}: {e}")),
        }
    }

    /// Removes everything of `handle`; absent parts are skipped, so calling it twice succeeds.
    /// Every step runs; the first error is returned.
    pub fn down(&self, handle: &str) -> Result<(), String> {
        // The rules and the CNI DEL are independent: both run at once (down latency is the
        // slower of the two, not their sum).
        let ip = self.store.get(handle).ok().flatten().map(|c| c.ip);
        let (rules, mut errors) = std::thread::scope(|s| {
            let rules = s.spawn(|| {
                let t = std::time::Instant::now();
                // Fast path: delete exactly what up installed, without listing the ruleset;
                // anything else (a second down, a crash, changed config) falls back to listing.
                let fast = ip.map(|ip| {
                    self.iptables
                        .apply(&rules::removal_batch(&self.config, handle, ip))
                });
                let r = match fast {
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) => {
                        log::info!("down {handle}: exact removal failed ({e}); listing instead");
                        self.remove_rules(&[handle.to_string()])
                    }
                    None => self.remove_rules(&[handle.to_string()]),
                };
                log::info!("down {handle}: rules took {:?}", t.elapsed());
                r
            });
            let errors = self.down_except_rules(handle);
            (rules.join(), errors)
        });
        match rules {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.insert(0, e),
            Err(_) => errors.insert(0, "removing rules: thread panicked".into()),
        }
        for e in &errors {
            log::error!("down {handle}: {e}");
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Store entry, CNI DEL, bind mount, ports: every step runs; the errors are returned.
    fn down_except_rules(&self, handle: &str) -> Vec<String> {
        let mut errors: Vec<String> = Vec::new();
        let mut note = |r: Result<(), String>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        note(self.store.delete(handle).map(|_| ()).map_err(String::from));
        let mount = self.mount_path(handle);
        let cache = self.read_cache(handle);
        if cache.is_some() || bind_mount::is_mounted(&mount) {
            let r = match cni_exec::load(Path::new(&self.config.cni_config_dir)) {
                Ok(Some(list)) => {
                    let cache = cache.unwrap_or(CniCache {
                        metadata: json!({}),
                        runtime_config: json!({}),
                        result: Value::Null,
                    });
                    // A netns that is gone (e.g. after a reboot) is passed as empty: plugins
                    // then release what they hold outside it (IPAM) and skip the rest.
                    let netns = if bind_mount::is_mounted(&mount) {
                        mount.clone()
                    } else {
                        PathBuf::new()
                    };
                    let rt = Runtime {
                        plugin_dir: PathBuf::from(&self.config.cni_plugin_dir),
                        container_id: handle.to_string(),
                        netns,
                        ifname: "eth0".into(),
                        metadata: cache.metadata,
                        runtime_config: cache.runtime_config,
                    };
                    let t = std::time::Instant::now();
                    let r = list.del(&rt, Some(&cache.result));
                    log::info!("down {handle}: CNI DEL took {:?}", t.elapsed());
                    r
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            let failed = r.is_err();
            note(r);
            if !failed {
                let _ = std::fs::remove_file(self.cache_path(handle));
            }
        }
        note(bind_mount::remove(&mount));
        note(self.ports.release(handle).map(|_| ()));
        errors
    }

    fn container_ip(
        &self,
        handle: &str,
        given: Option<Ipv4Addr>,
    ) -> Result<(Ipv4Addr, Option<String>), String> {
        let c = self
            .store
            .get(handle)?
            .ok_or_else(|| format!("container {handle} is not up"))?;
        if let Some(g) = given {
            if g != c.ip {
                return Err(format!(
                    "container_ip {g} is not the IP of {handle} ({})",
                    c.ip
                ));
            }
        }
        Ok((c.ip, c.workload().map(str::to_string)))
    }

    /// Netman-era `net-in`: one more port mapping for a running container.
    pub fn net_in(&self, handle: &str, input: &NetInInput) -> Result<NetInOutput, String> {
        let given = match input.container_ip.as_deref() {
            Some(s) if !s.is_empty() => Some(
                s.parse()
                    .map_err(|_| format!("invalid ContainerIP {s:?}"))?,
            ),
            _ => None,
        };
        let (ip, _) = self.container_ip(handle, given)?;
        let ports = self.ports.acquire(handle, &[input.host_port])?;
        let m = PortMapping {
            host_port: ports[0],
            container_port: if input.container_port == 0 {
                ports[0]
            } else {
                input.container_port
            },
        };
        let names = ChainNames::for_handle(handle);
        let mut b = Batch::new();
        b.push(
            Table::Mangle,
            Op::Append(names.netin.clone(), rules::netin_mark(&self.config, &m)),
        );
        b.push(
            Table::Nat,
            Op::Append(names.netin.clone(), rules::netin_dnat(&self.config, ip, &m)),
        );
        if let Err(e) = self.iptables.apply(&b) {
            // Undo this call only: the mark rule if it went in, and a port allocated here.
            let mut undo = Batch::new();
            if let Ok(state) = self.iptables.list(Table::Mangle) {
                let spec =
                    crate::iptables::render::rule_tokens(&rules::netin_mark(&self.config, &m));
                if state.rules_of(names.netin.as_str()).any(|r| r.args == spec) {
                    undo.push(
                        Table::Mangle,
                        Op::Delete(names.netin.clone(), rules::netin_mark(&self.config, &m)),
                    );
                }
            }
            let _ = self.iptables.apply(&undo);
            if input.host_port == 0 {
                let _ = self.release_port(handle, m.host_port);
            }
            return Err(e);
        }
        Ok(NetInOutput {
            host_port: m.host_port,
            container_port: m.container_port,
        })
    }

    fn release_port(&self, handle: &str, port: u16) -> Result<(), String> {
        // Release all and re-acquire the others would reorder; the allocator keeps per-handle
        // lists, so remove just this port.
        let held = self.ports.release(handle)?;
        let keep: Vec<u16> = held.into_iter().filter(|p| *p != port).collect();
        if !keep.is_empty() {
            self.ports.restore(handle, &keep)?;
        }
        Ok(())
    }

    /// Netman-era `net-out` / `bulk-net-out`: more ASG allows for a running container, inserted
    /// after the fixed rules (so deny networks still win), in the order given.
    pub fn net_out(
        &self,
        handle: &str,
        container_ip: Option<Ipv4Addr>,
        rules_in: &[NetOutRule],
    ) -> Result<(), String> {
        let (_, workload) = self.container_ip(handle, container_ip)?;
        let names = ChainNames::for_handle(handle);
        let converted = rules::convert_netout(
            rules_in,
            &names.netout_log,
            self.config.iptables_asg_logging,
        )?;
        let deny = rules::workload_deny_networks(&self.config, workload.as_deref()).len();
        let pos = rules::netout_preamble_len(deny) + 1;
        let mut b = Batch::new();
        for (i, r) in converted.into_iter().enumerate() {
            b.push(
                Table::Filter,
                Op::Insert(names.netout.clone(), pos + i as u32, r),
            );
        }
        self.iptables.apply(&b)
    }

    /// Removes leftovers: handles not in `keep` (when given), else handles whose bind-mounted
    /// netns is gone; then chains with a networker prefix that belong to no remaining container.
    pub fn reconcile(&self, keep: Option<&[String]>) -> Result<ReconcileOutput, String> {
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
        let mut removed = Vec::new();
        let mut first_err = None;
        for h in known {
            if super::names::validate_handle(&h).is_err() {
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
        lock.apply(&batch)?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(ReconcileOutput { removed }),
        }
    }
}

fn is_refused(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        ureq::Error::ConnectionFailed => true,
        other => other
            .to_string()
            .to_lowercase()
            .contains("connection refused"),
    }
}
