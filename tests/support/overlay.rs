//! Test lab for the overlay: an underlay bridge namespace, cell namespaces joined to it, the real
//! controller and daemons running inside them, containers created with the real plugin.

pub use super::certs::{certs, Certs, OVERLAY};
pub use super::proc::{run_with_stdin, spawn_in, Proc};
pub use super::unique;
#[allow(unused_imports)]
pub use super::wait::{poll, wait_until};
use netman::lab::netns::{run, NamedNetns};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const CONTROLLER: &str = env!("CARGO_BIN_EXE_overlay-controller");
pub const DAEMON: &str = env!("CARGO_BIN_EXE_overlay-daemon");
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_overlay");
pub const CONTROLLER_IP: &str = "192.168.50.254";

/// An overlay-controller config: its API on `listen` with `certs`, its debug server on
/// `debug_port`, `/prefix` leases of `network` kept in `database`.
pub fn controller_config(
    certs: &Certs,
    listen: (&str, u16),
    debug_port: u16,
    (network, prefix): (&str, u8),
    database: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "listen_host": listen.0,
        "listen_port": listen.1,
        "debug_server_port": debug_port,
        "ca_cert_file": certs.ca,
        "server_cert_file": certs.server.0,
        "server_key_file": certs.server.1,
        "network": network,
        "subnet_prefix_length": prefix,
        "database": database,
    })
}

pub struct Cell {
    pub ns: NamedNetns,
    pub underlay_ip: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub daemon: Option<Proc>,
    pub log: PathBuf,
}

impl Cell {
    pub fn start_daemon(&mut self) {
        self.daemon = Some(spawn_in(
            &self.ns,
            DAEMON,
            &[
                "--config",
                self.config.to_str().unwrap(),
                "--log-level",
                "info",
            ],
            &self.log,
        ));
        let ns = self.ns.path();
        let log = self.log.clone();
        wait_until(
            &format!("daemon in {}", self.ns.name),
            Duration::from_secs(20),
            || {
                if let Some(d) = &mut self.daemon {
                    if let Ok(Some(s)) = d.child.try_wait() {
                        panic!(
                            "daemon exited {s}: {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                }
                self.info_at(&ns).is_ok()
            },
        );
    }

    fn info_at(&self, ns: &Path) -> Result<netman::overlay::daemon::NetworkInfo, String> {
        Ok(netman::netns::run_in(ns, || {
            netman::overlay::plugin::network_info(23954)
        })??)
    }

    /// The daemon's `/health` on its debug port (default 22233): status and body.
    pub fn health(&self) -> (u16, String) {
        netman::netns::run_in(&self.ns.path(), || {
            let a =
                netman::http::client::agent(&Default::default(), Duration::from_secs(5)).unwrap();
            let mut r = a.get("http://127.0.0.1:22233/health").call().unwrap();
            let status = r.status().as_u16();
            (
                status,
                netman::http::client::body_string(&mut r, 1 << 16).unwrap(),
            )
        })
        .unwrap()
    }

    pub fn info_or_none(&self) -> Option<netman::overlay::daemon::NetworkInfo> {
        self.info_at(&self.ns.path()).ok()
    }

    pub fn info(&self) -> netman::overlay::daemon::NetworkInfo {
        self.info_at(&self.ns.path()).unwrap()
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub underlay: NamedNetns,
    pub controller: Option<Proc>,
    pub controller_config: PathBuf,
    pub cells: Vec<Cell>,
    pub tag: String,
}

pub struct LabOptions {
    pub cells: usize,
    pub prefix: u8,
    pub lease_expiration_seconds: u64,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            cells: 2,
            prefix: 24,
            lease_expiration_seconds: 3600,
        }
    }
}

impl Lab {
    pub fn new(opts: LabOptions) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path(), &OVERLAY);
        let tag = unique("ov");
        let underlay = NamedNetns::create(&format!("{tag}-u")).unwrap();
        underlay
            // A fixed MAC: otherwise the bridge takes its lowest port's MAC and changes it as
            // cells join, leaving stale ARP entries for the controller's address in the cells.
            .exec(&[
                "ip",
                "link",
                "add",
                "br0",
                "address",
                "02:00:00:00:00:fe",
                "type",
                "bridge",
            ])
            .unwrap();
        underlay.exec(&["ip", "link", "set", "br0", "up"]).unwrap();
        underlay
            .exec(&[
                "ip",
                "addr",
                "add",
                &format!("{CONTROLLER_IP}/24"),
                "dev",
                "br0",
            ])
            .unwrap();
        let controller_config = dir.path().join("controller.json");
        let leases = dir.path().join("leases.db");
        let database = serde_json::json!({"type": "sqlite", "connection_string": leases});
        let network = ("10.255.0.0/16", opts.prefix);
        let mut config =
            self::controller_config(&certs, (CONTROLLER_IP, 4103), 46455, network, database);
        config["lease_expiration_seconds"] = opts.lease_expiration_seconds.into();
        config["staleness_threshold_seconds"] = 60.into();
        std::fs::write(&controller_config, config.to_string()).unwrap();
        let mut lab = Lab {
            dir,
            certs,
            underlay,
            controller: None,
            controller_config,
            cells: Vec::new(),
            tag,
        };
        lab.start_controller();
        for i in 0..opts.cells {
            lab.add_cell(i, opts.prefix);
        }
        lab
    }

    pub fn start_controller(&mut self) {
        let log = self.dir.path().join("controller.log");
        self.controller = Some(spawn_in(
            &self.underlay,
            CONTROLLER,
            &[
                "--config",
                self.controller_config.to_str().unwrap(),
                "--log-level",
                "info",
            ],
            &log,
        ));
        let ns = self.underlay.path();
        wait_until("controller health", Duration::from_secs(20), || {
            netman::netns::run_in(&ns, || {
                std::net::TcpStream::connect("127.0.0.1:46455").is_ok()
            })
            .unwrap_or(false)
        });
    }

    fn add_cell(&mut self, i: usize, prefix: u8) {
        let ns = NamedNetns::create(&format!("{}-c{i}", self.tag)).unwrap();
        let port = format!("u{i}");
        self.underlay
            .exec(&[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ])
            .unwrap();
        self.underlay
            .exec(&["ip", "link", "set", &port, "master", "br0", "up"])
            .unwrap();
        let underlay_ip = format!("192.168.50.{}", i + 1);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{underlay_ip}/24"),
            "dev",
            "eth0",
        ])
        .unwrap();
        ns.exec(&["ip", "link", "set", "eth0", "mtu", "1460", "up"])
            .unwrap();
        let cell_dir = self.dir.path().join(format!("cell{i}"));
        std::fs::create_dir_all(&cell_dir).unwrap();
        let data_dir = cell_dir.join("data");
        let config = cell_dir.join("daemon.json");
        std::fs::write(
            &config,
            serde_json::json!({
                "underlay_ip": underlay_ip,
                "overlay_network": "10.255.0.0/16",
                "subnet_prefix_length": prefix,
                "controller_url": format!("https://{CONTROLLER_IP}:4103"),
                "ca_cert_file": self.certs.ca,
                "client_cert_file": self.certs.client.0,
                "client_key_file": self.certs.client.1,
                "poll_interval_seconds": 1,
                "client_timeout_seconds": 2,
                "plugin_data_dir": data_dir,
            })
            .to_string(),
        )
        .unwrap();
        let mut cell = Cell {
            ns,
            underlay_ip,
            config,
            data_dir,
            daemon: None,
            log: cell_dir.join("daemon.log"),
        };
        cell.start_daemon();
        self.cells.push(cell);
    }

    /// The network config the runtime hands the plugin.
    pub fn net_conf(&self, cell: usize, version: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": version,
            "name": "overlay-net",
            "type": "overlay",
            "dataDir": self.cells[cell].data_dir,
            "daemonPort": 23954,
        })
    }
}

/// What one plugin run printed and its status.
pub struct PluginRun {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PluginRun {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("plugin output {:?} not JSON: {e}", self.stdout))
    }
}

/// Runs a CNI plugin inside a cell exactly as a runtime does: env vars + config on stdin.
pub fn run_plugin(
    cell: &NamedNetns,
    plugin: &str,
    command: &str,
    container_id: &str,
    netns: &str,
    ifname: &str,
    conf: &serde_json::Value,
) -> PluginRun {
    let attachment = [container_id, netns, ifname];
    run_plugin_with_args(cell, plugin, command, attachment, conf, "IgnoreUnknown=1")
}

/// `run_plugin` with the given `CNI_ARGS`; `attachment` is (container id, netns, ifname).
pub fn run_plugin_with_args(
    cell: &NamedNetns,
    plugin: &str,
    command: &str,
    attachment: [&str; 3],
    conf: &serde_json::Value,
    cni_args: &str,
) -> PluginRun {
    let [container_id, netns, ifname] = attachment;
    let mut runtime = Command::new("ip");
    runtime
        .args(["netns", "exec", &cell.name, plugin])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", cni_args);
    let out = run_with_stdin(runtime, conf.to_string().as_bytes());
    PluginRun {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A container: a namespace with an attachment made by the overlay plugin.
pub struct Container {
    pub ns: NamedNetns,
    pub id: String,
    pub ip: String,
    pub result: serde_json::Value,
}

pub fn add_container(lab: &Lab, cell: usize, version: &str) -> Container {
    let ns = NamedNetns::create(&unique("ovk")).unwrap();
    let id = format!("ctr-{}", ns.name);
    let conf = lab.net_conf(cell, version);
    let run = run_plugin(
        &lab.cells[cell].ns,
        PLUGIN,
        "ADD",
        &id,
        ns.path().to_str().unwrap(),
        "eth0",
        &conf,
    );
    assert_eq!(run.status, 0, "ADD failed: {} {}", run.stdout, run.stderr);
    let result = run.json();
    validate_result(&result, version, ns.path().to_str().unwrap());
    let ip = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_string();
    Container { ns, id, ip, result }
}

/// Checks a result against the spec's result format.
pub fn validate_result(r: &serde_json::Value, version: &str, sandbox: &str) {
    assert_eq!(r["cniVersion"], version, "{r}");
    let ifaces = r["interfaces"].as_array().expect("interfaces array");
    assert!(!ifaces.is_empty());
    for i in ifaces {
        assert!(
            i["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty() && n.len() <= 15),
            "{i}"
        );
        if let Some(mac) = i.get("mac") {
            netman::netlink::parse_mac(mac.as_str().unwrap()).unwrap();
        }
    }
    let ips = r["ips"].as_array().expect("ips array");
    assert_eq!(ips.len(), 1);
    let ip = &ips[0];
    let addr: ipnet::Ipv4Net = ip["address"]
        .as_str()
        .unwrap()
        .parse()
        .expect("CIDR address");
    assert_eq!(addr.prefix_len(), 32);
    let idx = ip["interface"].as_u64().expect("interface index") as usize;
    assert!(idx < ifaces.len());
    assert_eq!(
        ifaces[idx]["sandbox"], sandbox,
        "IP's interface is the container's"
    );
    assert_eq!(ip["gateway"], "169.254.0.1");
    if version == "0.4.0" {
        assert_eq!(ip["version"], "4");
    } else {
        assert!(ip.get("version").is_none());
    }
    for route in r["routes"].as_array().cloned().unwrap_or_default() {
        route["dst"]
            .as_str()
            .unwrap()
            .parse::<ipnet::IpNet>()
            .expect("route dst CIDR");
    }
    assert!(r.get("dns").is_some_and(|d| d.is_object()));
}

/// ICMP echo; up to three tries (the first packet of a path may wait for ARP on a loaded box).
pub fn ping(from: &NamedNetns, ip: &str) -> bool {
    (0..3).any(|_| {
        from.exec(&["busybox", "ping", "-c", "1", "-W", "2", ip])
            .is_ok()
    })
}

/// Opens a TCP listener inside `ns` that answers "hello" once; returns when listening.
pub fn tcp_server(ns: &NamedNetns, port: u16) -> std::thread::JoinHandle<()> {
    let path = ns.path();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l =
            super::bind::retry_in_use(|| std::net::TcpListener::bind(("0.0.0.0", port))).unwrap();
        tx.send(()).unwrap();
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(b"hello");
        }
    });
    rx.recv().unwrap();
    h
}

pub fn tcp_get(ns: &NamedNetns, ip: &str, port: u16) -> Result<String, String> {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    netman::netns::run_in(&ns.path(), move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })?
}

/// Runs iptables inside a namespace with a private lock file.
pub fn iptables(ns: &NamedNetns, lock: &Path, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", &ns.name, "env"];
    let lock_env = format!("XTABLES_LOCKFILE={}", lock.display());
    full.push(&lock_env);
    full.push("iptables");
    full.extend_from_slice(args);
    run(&full).unwrap()
}
