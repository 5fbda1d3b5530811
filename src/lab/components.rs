//! The lab's components: their configs, their start in the right namespace, and the containers
//! created through the garden-external-networker.

use super::netns;
use super::process::{self, LabProcess};
use super::topology::{self, cell_ip, cell_name, CONTROL, CONTROL_IP, INTERNET_HOSTS};
use super::{Container, State};
use crate::pki::{Ca, Usage};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const POLICY_INTERNAL_PORT: u16 = 4003;
pub const POLICY_EXTERNAL_PORT: u16 = 4002;
pub const CONTROLLER_PORT: u16 = 4103;
pub const DAEMON_PORT: u16 = 23954;
pub const AGENT_FORCE_PORT: u16 = 8722;
pub const OVERLAY_NETWORK: &str = "10.255.0.0/16";
pub const VTEP: &str = "silk-vtep";

/// TCP and UDP ports every backend app serves; a frontend serves HTTP on the first TCP port.
pub const BACKEND_TCP_PORTS: [u16; 4] = [8080, 9000, 9001, 9002];
pub const BACKEND_UDP_PORTS: [u16; 1] = [9003];

/// The lab's `count` example apps: `frontend`, `backend`, then `backend-2`, `backend-3`, ...
pub fn app_names(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| match i {
            0 => "frontend".to_string(),
            1 => "backend".to_string(),
            n => format!("backend-{n}"),
        })
        .collect()
}

pub struct Lab {
    pub dir: PathBuf,
    /// Where the netman binaries are: next to the running `netman-lab`.
    pub bin: PathBuf,
    pub state: State,
}

fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

impl Lab {
    /// The lab in `dir` with `state`, run with the binaries next to this executable.
    pub fn new(dir: &Path, state: State) -> Result<Lab, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bin = exe
            .parent()
            .ok_or_else(|| format!("{} has no directory", exe.display()))?;
        Ok(Lab {
            dir: dir.to_path_buf(),
            bin: bin.to_path_buf(),
            state,
        })
    }

    fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    fn cell_dir(&self, cell: usize) -> PathBuf {
        self.dir.join(format!("cell-{cell}"))
    }

    fn binary(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    fn start(
        &mut self,
        name: &str,
        ns: &str,
        binary: &str,
        config: &Path,
    ) -> Result<LabProcess, String> {
        self.start_process(name, ns, binary, config)
    }

    /// Starts `binary --config config` in namespace `ns` and records it in the state.
    pub(super) fn start_process(
        &mut self,
        name: &str,
        ns: &str,
        binary: &str,
        config: &Path,
    ) -> Result<LabProcess, String> {
        let args = vec![
            "--config".to_string(),
            s(config),
            "--log-level".into(),
            "info".into(),
        ];
        let p = process::spawn(name, ns, &self.binary(binary), &args, &self.logs())?;
        self.state.processes.push(p.clone());
        self.state.save(&self.dir)?;
        Ok(p)
    }

    /// Certificates for every component, signed by one lab CA.
    pub fn write_certs(&self) -> Result<(), String> {
        let dir = self.certs();
        let ca = Ca::new("netman lab CA")?;
        ca.write_ca(&dir)?;
        let control = CONTROL_IP.to_string();
        for (name, host) in [
            ("policy-server", "policy-server.service.cf.internal"),
            (
                "overlay-controller",
                "overlay-controller.service.cf.internal",
            ),
        ] {
            let names = [host, control.as_str(), "127.0.0.1", "localhost"];
            ca.write_issued(&dir, name, host, &names, Usage::Server)?;
        }
        ca.write_issued(
            &dir,
            "policy-agent",
            "vxlan-policy-agent",
            &[],
            Usage::Client,
        )?;
        ca.write_issued(&dir, "overlay-daemon", "overlay-daemon", &[], Usage::Client)?;
        Ok(())
    }

    pub fn start_policy_server(&mut self) -> Result<(), String> {
        let certs = self.certs();
        let token = hex_token();
        let tokens = self.dir.join("control/tokens.json");
        write_json(
            &tokens,
            &json!({ &token: {"subject": "lab-admin", "user_name": "admin", "scopes": ["network.admin"]} }),
        )?;
        let config = self.dir.join("control/policy-server.json");
        write_json(
            &config,
            &json!({
                "listen_host": "127.0.0.1",
                "listen_port": POLICY_EXTERNAL_PORT,
                "internal_listen_host": CONTROL_IP.to_string(),
                "internal_listen_port": POLICY_INTERNAL_PORT,
                "ca_cert_file": s(&certs.join("ca.crt")),
                "server_cert_file": s(&certs.join("policy-server.crt")),
                "server_key_file": s(&certs.join("policy-server.key")),
                "database": {"type": "sqlite", "connection_string": s(&self.dir.join("control/policies.db"))},
                "auth": {"mode": "tokens", "tokens_file": s(&tokens)},
            }),
        )?;
        self.state.admin_token = token;
        let p = self.start("policy-server", CONTROL, "policy-server", &config)?;
        let ns = netns::path(CONTROL);
        process::wait_until(&p, Duration::from_secs(30), || {
            http_ok(&ns, &format!("http://127.0.0.1:{POLICY_EXTERNAL_PORT}/"))
        })
    }

    /// The lab's one security group, through the policy server's admin API: the first "internet"
    /// host on TCP 80 and ICMP echo (logged), bound to the apps' space for running. The agents
    /// enforce it (dynamic ASGs); groups created, bound or unbound later reach the cells within a
    /// second.
    pub fn create_security_group(&self) -> Result<(), String> {
        let internet = INTERNET_HOSTS[0].to_string();
        let body = json!({
            "name": "lab-internet",
            "rules": [
                {"protocol": "tcp", "destination": internet, "ports": "80"},
                // Logged: each allowed ping is a flow log line naming this group and rule 1.
                {"protocol": "icmp", "destination": internet, "type": 8, "code": 0, "log": true},
            ],
            "relationships": {"running_spaces": {"data": [{"guid": LAB_SPACE}]}},
        })
        .to_string();
        let url = format!(
            "http://127.0.0.1:{POLICY_EXTERNAL_PORT}/networking/v1/external/security_groups"
        );
        let token = self.state.admin_token.clone();
        crate::netns::run_in(&netns::path(CONTROL), move || {
            let agent = crate::http::client::agent(&Default::default(), Duration::from_secs(10))?;
            let mut resp = agent
                .post(&url)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .send(body.as_bytes())
                .map_err(|e| format!("POST {url}: {e}"))?;
            match resp.status().as_u16() {
                201 => Ok(()),
                status => Err(format!(
                    "POST {url}: {status}: {}",
                    crate::http::client::body_string(&mut resp, 4096).unwrap_or_default()
                )),
            }
        })
        .map_err(|e| e.to_string())?
    }

    /// Forwards `127.0.0.1:<api_port>` of the machine to the policy server's external API.
    pub fn start_forwarder(&mut self, api_port: u16) -> Result<(), String> {
        let args = vec![
            "forward".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{api_port}"),
            "--netns".into(),
            CONTROL.into(),
            "--target".into(),
            format!("127.0.0.1:{POLICY_EXTERNAL_PORT}"),
        ];
        let log = self.logs().join("api-forwarder.log");
        std::fs::create_dir_all(self.logs()).map_err(|e| e.to_string())?;
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(self.binary("netman-lab"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("starting the API forwarder: {e}"))?;
        let p = LabProcess {
            name: "api-forwarder".into(),
            namespace: "(root: a loopback listener only)".into(),
            pid: child.id(),
            log,
            command: std::iter::once(s(&self.binary("netman-lab")))
                .chain(args)
                .collect(),
        };
        self.state.api_port = api_port;
        self.state.processes.push(p.clone());
        self.state.save(&self.dir)?;
        process::wait_until(&p, Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok()
        })
    }

    pub fn start_overlay_controller(&mut self) -> Result<(), String> {
        let certs = self.certs();
        let config = self.dir.join("control/overlay-controller.json");
        write_json(
            &config,
            &json!({
                "listen_host": CONTROL_IP.to_string(),
                "listen_port": CONTROLLER_PORT,
                "ca_cert_file": s(&certs.join("ca.crt")),
                "server_cert_file": s(&certs.join("overlay-controller.crt")),
                "server_key_file": s(&certs.join("overlay-controller.key")),
                "network": OVERLAY_NETWORK,
                "database": {"type": "sqlite", "connection_string": s(&self.dir.join("control/leases.db"))},
            }),
        )?;
        let p = self.start("overlay-controller", CONTROL, "overlay-controller", &config)?;
        process::wait_until(&p, Duration::from_secs(30), || {
            tcp_open(CONTROL, &format!("{CONTROL_IP}:{CONTROLLER_PORT}"))
        })
    }

    pub fn start_cell(&mut self, cell: usize) -> Result<(), String> {
        let ns = cell_name(cell);
        let dir = self.cell_dir(cell);
        let certs = self.certs();
        let ca = s(&certs.join("ca.crt"));

        let daemon_config = dir.join("overlay-daemon.json");
        write_json(
            &daemon_config,
            &json!({
                "underlay_ip": cell_ip(cell).to_string(),
                "overlay_network": OVERLAY_NETWORK,
                "controller_url": format!("https://{CONTROL_IP}:{CONTROLLER_PORT}"),
                "ca_cert_file": ca,
                "client_cert_file": s(&certs.join("overlay-daemon.crt")),
                "client_key_file": s(&certs.join("overlay-daemon.key")),
                "vtep_name": VTEP,
                "listen_port": DAEMON_PORT,
                "poll_interval_seconds": 2,
                "plugin_data_dir": s(&dir.join("overlay-ipam")),
            }),
        )?;
        let daemon = self.start(
            &format!("overlay-daemon-{cell}"),
            &ns,
            "overlay-daemon",
            &daemon_config,
        )?;
        let nsp = netns::path(&ns);
        process::wait_until(&daemon, Duration::from_secs(30), || {
            http_ok(&nsp, &format!("http://127.0.0.1:{DAEMON_PORT}/"))
        })?;

        let agent_config = dir.join("vxlan-policy-agent.json");
        write_json(
            &agent_config,
            &json!({
                "policy_server_url": format!("https://{CONTROL_IP}:{POLICY_INTERNAL_PORT}"),
                "ca_cert_file": ca,
                "client_cert_file": s(&certs.join("policy-agent.crt")),
                "client_key_file": s(&certs.join("policy-agent.key")),
                "cni_datastore_path": s(&dir.join("container-metadata/store.json")),
                "flow_log_file": s(&dir.join("flows.log")),
                "flow_log_cell": format!("cell-{cell}"),
                "iptables_c2c_logging": true,
                "netout_cache_dir": s(&dir.join("cni-cache")),
                "enable_asg_syncing": true,
                "overlay_network": OVERLAY_NETWORK,
            }),
        )?;
        std::fs::create_dir_all(dir.join("container-metadata")).map_err(|e| e.to_string())?;
        let agent = self.start(
            &format!("vxlan-policy-agent-{cell}"),
            &ns,
            "vxlan-policy-agent",
            &agent_config,
        )?;
        process::wait_until(&agent, Duration::from_secs(30), || {
            tcp_open(&ns, &format!("127.0.0.1:{AGENT_FORCE_PORT}"))
        })?;

        let netmon_config = dir.join("netmon.json");
        write_json(
            &netmon_config,
            &json!({"interface_name": VTEP, "poll_interval_seconds": 5}),
        )?;
        self.start(&format!("netmon-{cell}"), &ns, "netmon", &netmon_config)?;
        self.start_dns(cell)?;

        self.write_cni_config(cell)?;
        Ok(())
    }

    fn write_cni_config(&self, cell: usize) -> Result<(), String> {
        let dir = self.cell_dir(cell);
        write_json(
            &dir.join("cni/10-netman.conflist"),
            &json!({
                "cniVersion": "1.1.0",
                "name": "netman-overlay",
                "plugins": [{
                    "type": "overlay",
                    "daemonPort": DAEMON_PORT,
                    "dataDir": s(&dir.join("overlay-ipam")),
                }],
            }),
        )?;
        // Plugins: netman's own binaries and the reference plugins, in one directory.
        let plugins = dir.join("cni-bin");
        std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
        let link = plugins.join("overlay");
        if !link.exists() {
            std::os::unix::fs::symlink(self.binary("overlay"), &link).map_err(|e| e.to_string())?;
        }
        let networker = json!({
            "cni_plugin_dir": s(&plugins),
            "cni_config_dir": s(&dir.join("cni")),
            "bind_mount_dir": s(&dir.join("container-netns")),
            "state_file": s(&dir.join("external-networker-state.json")),
            "datastore": s(&dir.join("container-metadata/store.json")),
            "iptables_lock_file": s(&dir.join("iptables.lock")),
            "cni_cache_dir": s(&dir.join("cni-cache")),
            "overlay_network": OVERLAY_NETWORK,
            "instance_address": cell_ip(cell).to_string(),
            "policy_agent_force_poll_url": format!("http://127.0.0.1:{AGENT_FORCE_PORT}/force-policy-poll-cycle"),
            "policy_agent_asg_url": format!("http://127.0.0.1:{AGENT_FORCE_PORT}"),
            "search_domains": ["apps.internal"],
            "dns_servers": [super::dns::RESOLVER_IP],
            "iptables_asg_logging": true,
        });
        write_json(&dir.join("garden-external-networker.json"), &networker)
    }

    /// Creates one container of `app` on `cell` the way garden does: a namespace with the app's
    /// process in it, then `garden-external-networker --action up`.
    pub fn create_container(&mut self, app: &str, index: usize, cell: usize) -> Result<(), String> {
        let ports = AppPorts::of(app);
        let handle = format!("{app}-{index}");
        let ns = format!("{}c-{handle}", topology::PREFIX);
        netns::run(&["ip", "netns", "add", &ns])?;
        topology::ns_exec(&ns, &["ip", "link", "set", "lo", "up"])?;
        super::dns::write_resolv_conf(&ns)?;
        let proc = process::spawn(
            &format!("app-{handle}"),
            &ns,
            &self.binary("netman-test-app"),
            &ports.app_args(app),
            &self.logs(),
        )?;
        self.state.processes.push(proc.clone());
        self.state.save(&self.dir)?;

        let out = self.networker(
            cell,
            "up",
            &handle,
            Some(&up_input(app, index, proc.pid, &ports)),
        )?;
        let (ip, mapped_ports) = container_address(&out)?;
        self.state.containers.push(Container {
            app: app.to_string(),
            index,
            handle,
            cell,
            namespace: ns,
            ip,
            mapped_ports,
        });
        self.state.save(&self.dir)
    }

    /// Runs the garden-external-networker inside a cell, as garden does.
    pub fn networker(
        &self,
        cell: usize,
        action: &str,
        handle: &str,
        stdin: Option<&Value>,
    ) -> Result<String, String> {
        let config = self.cell_dir(cell).join("garden-external-networker.json");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &cell_name(cell)])
            .arg(self.binary("garden-external-networker"))
            .args(["--action", action, "--handle", handle, "--configFile"])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running garden-external-networker: {e}"))?;
        if let Some(v) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(v.to_string().as_bytes())
                .map_err(|e| e.to_string())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "garden-external-networker --action {action} --handle {handle}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn http_ok(ns: &Path, url: &str) -> bool {
    let url = url.to_string();
    crate::netns::run_in(ns, move || {
        crate::http::client::agent(&Default::default(), Duration::from_secs(2))
            .ok()
            .and_then(|a| a.get(&url).call().ok())
            .is_some_and(|r| r.status() == 200)
    })
    .unwrap_or(false)
}

pub(super) fn tcp_open(ns: &str, addr: &str) -> bool {
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return false;
    };
    crate::netns::run_in(&netns::path(ns), move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    })
    .unwrap_or(false)
}

/// The ports an example app serves: a frontend one TCP port, a backend all of them.
struct AppPorts {
    frontend: bool,
    tcp: &'static [u16],
    udp: &'static [u16],
}

impl AppPorts {
    fn of(app: &str) -> AppPorts {
        let frontend = app == "frontend";
        AppPorts {
            frontend,
            tcp: if frontend {
                &BACKEND_TCP_PORTS[..1]
            } else {
                &BACKEND_TCP_PORTS
            },
            udp: if frontend { &[] } else { &BACKEND_UDP_PORTS },
        }
    }

    /// `netman-test-app`'s arguments for the app.
    fn app_args(&self, app: &str) -> Vec<String> {
        let join = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut args: Vec<String> = vec![if self.frontend { "frontend" } else { "backend" }.into()];
        args.extend(["--name".into(), app.to_string()]);
        if self.frontend {
            args.extend(["--port".into(), self.tcp[0].to_string()]);
        } else {
            args.extend([
                "--tcp-ports".into(),
                join(self.tcp),
                "--udp-ports".into(),
                join(self.udp),
            ]);
        }
        args
    }
}

/// The space of every lab app (security groups are bound to it).
pub const LAB_SPACE: &str = "lab-space";

/// What garden gives the networker's `up` for an app's container: its process, its properties,
/// one NetIn mapping, and the static NetOut rules garden would pass (unused: the agent owns
/// egress in the lab, from the policy server's security groups).
fn up_input(app: &str, index: usize, pid: u32, ports: &AppPorts) -> Value {
    let internet = INTERNET_HOSTS[0].to_string();
    json!({
        "Pid": pid,
        "Properties": {
            "app_id": app, "policy_group_id": app, "space_id": LAB_SPACE, "org_id": "lab-org",
            "ports": ports.tcp.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
            "container_workload": "app",
            "instance_index": index.to_string(),
        },
        "netin": [{"host_port": 0, "container_port": ports.tcp[0]}],
        "netout_rules": [
            // The lab's one security group: the first "internet" host on TCP 80 and ICMP.
            {"protocol": 1, "networks": [{"start": internet, "end": internet}], "ports": [{"start": 80, "end": 80}]},
            {"protocol": 3, "networks": [{"start": internet, "end": internet}], "icmps": {"type": 8, "code": 0}},
        ],
    })
}

/// The container's IP and mapped ports (host, container) from the networker's `up` answer.
fn container_address(out: &str) -> Result<(String, Vec<(u16, u16)>), String> {
    let v: Value =
        serde_json::from_str(out).map_err(|e| format!("networker output {out:?}: {e}"))?;
    let props = &v["properties"];
    let ip = props["garden.network.container-ip"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mapped: Vec<Value> = props["garden.network.mapped-ports"]
        .as_str()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let mapped_ports = mapped
        .iter()
        .filter_map(|m| {
            Some((
                m["HostPort"].as_u64()? as u16,
                m["ContainerPort"].as_u64()? as u16,
            ))
        })
        .collect();
    Ok((ip, mapped_ports))
}

fn hex_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Lab {
    /// Takes a cell out as an operator would: its containers destroyed through the networker,
    /// its processes stopped, its lease released, its namespaces deleted.
    pub fn remove_cell(&mut self, cell: usize) -> Result<(), String> {
        let ns = cell_name(cell);
        let gone: Vec<Container> = self
            .state
            .containers
            .iter()
            .filter(|c| c.cell == cell)
            .cloned()
            .collect();
        for c in &gone {
            self.networker(cell, "down", &c.handle, None)?;
            if let Some(p) = self.state.process(&format!("app-{}", c.handle)) {
                p.stop(Duration::from_secs(2));
            }
            let _ = netns::run(&["ip", "netns", "del", &c.namespace]);
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&c.namespace));
        }
        for p in self.state.processes.iter().filter(|p| p.namespace == ns) {
            p.stop(Duration::from_secs(5));
        }
        let certs = self.certs();
        let tls = crate::daemon::client_tls(
            &s(&certs.join("ca.crt")),
            &s(&certs.join("overlay-daemon.crt")),
            &s(&certs.join("overlay-daemon.key")),
        );
        let underlay = cell_ip(cell).to_string();
        crate::netns::run_in(&netns::path(CONTROL), move || {
            crate::overlay::client::ControllerClient::new(
                &format!("https://{CONTROL_IP}:{CONTROLLER_PORT}"),
                &tls,
                Duration::from_secs(5),
            )
            .map_err(|e| e.to_string())?
            .release(&underlay)
            .map_err(|e| format!("releasing the lease of cell {cell}: {e}"))
        })??;
        netns::run(&["ip", "netns", "del", &ns])?;
        self.state.containers.retain(|c| c.cell != cell);
        self.state.processes.retain(|p| {
            p.namespace != ns && !gone.iter().any(|c| p.name == format!("app-{}", c.handle))
        });
        self.state.save(&self.dir)
    }
}

impl Lab {
    /// Waits until every cell routes to every other cell's subnet (the overlay daemons converge
    /// on their poll interval), so the lab is usable when `up` returns.
    pub fn wait_for_overlay(&self, timeout: Duration) -> Result<(), String> {
        let cells = self.state.cells;
        let mut subnets = Vec::new();
        for cell in 1..=cells {
            let url = format!("http://127.0.0.1:{DAEMON_PORT}/");
            let subnet = crate::netns::run_in(&netns::path(&cell_name(cell)), move || {
                let agent =
                    crate::http::client::agent(&Default::default(), Duration::from_secs(2))?;
                let mut resp = agent.get(&url).call().map_err(|e| e.to_string())?;
                let body = crate::http::client::body_string(&mut resp, 1 << 16)?;
                let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                v["overlay_subnet"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("no overlay_subnet in {body}"))
            })??;
            subnets.push(subnet);
        }
        let deadline = std::time::Instant::now() + timeout;
        for cell in 1..=cells {
            loop {
                let routes = netns::run(&["ip", "-n", &cell_name(cell), "route", "show"])?;
                let missing: Vec<&String> = subnets
                    .iter()
                    .enumerate()
                    .filter(|(i, sn)| i + 1 != cell && !routes.contains(sn.as_str()))
                    .map(|(_, sn)| sn)
                    .collect();
                if missing.is_empty() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "cell {cell} has no route to {missing:?} after {timeout:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}
