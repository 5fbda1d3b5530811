//! Test lab for the overlay: an underlay bridge namespace, cell namespaces joined to it, the real
//! controller and daemons running inside them, containers created with the real plugin.
#![allow(dead_code)]

use netman::lab::netns::{run, NamedNetns};
use netman::pki::{Ca, Usage};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const CONTROLLER: &str = env!("CARGO_BIN_EXE_overlay-controller");
pub const DAEMON: &str = env!("CARGO_BIN_EXE_overlay-daemon");
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_overlay");
pub const CONTROLLER_IP: &str = "192.168.50.254";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("ov{tag}-{}-{n}", std::process::id())
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok().and_then(|s| s.code())
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_in(ns: &NamedNetns, bin: &str, args: &[&str], log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, bin])
        .args(args)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    Proc {
        child,
        log: log.to_path_buf(),
    }
}

pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_cert: PathBuf,
    pub other_key: PathBuf,
}

pub fn certs(dir: &Path) -> Certs {
    let ca = Ca::new("overlay test CA").unwrap();
    let ca_path = ca.write_ca(dir).unwrap();
    let server = ca
        .write_issued(
            dir,
            "server",
            "overlay-controller",
            &[CONTROLLER_IP, "127.0.0.1"],
            Usage::Server,
        )
        .unwrap();
    let client = ca
        .write_issued(dir, "client", "overlay-daemon", &[], Usage::Client)
        .unwrap();
    let other = Ca::new("stranger CA").unwrap();
    let odir = dir.join("other");
    std::fs::create_dir_all(&odir).unwrap();
    let other_ca = other.write_ca(&odir).unwrap();
    let ocl = other
        .write_issued(&odir, "client", "stranger", &[], Usage::Client)
        .unwrap();
    Certs {
        ca: ca_path,
        server_cert: server.cert,
        server_key: server.key,
        client_cert: client.cert,
        client_key: client.key,
        other_ca,
        other_cert: ocl.cert,
        other_key: ocl.key,
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
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
        let certs = certs(dir.path());
        let tag = unique("");
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
        std::fs::write(
            &controller_config,
            serde_json::json!({
                "listen_host": CONTROLLER_IP,
                "listen_port": 4103,
                "debug_server_port": 46455,
                "ca_cert_file": certs.ca,
                "server_cert_file": certs.server_cert,
                "server_key_file": certs.server_key,
                "network": "10.255.0.0/16",
                "subnet_prefix_length": opts.prefix,
                "database": {"type": "sqlite", "connection_string": dir.path().join("leases.db")},
                "lease_expiration_seconds": opts.lease_expiration_seconds,
                "staleness_threshold_seconds": 60,
            })
            .to_string(),
        )
        .unwrap();
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
                "client_cert_file": self.certs.client_cert,
                "client_key_file": self.certs.client_key,
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
    let mut child = Command::new("ip")
        .args(["netns", "exec", &cell.name, plugin])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", "IgnoreUnknown=1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
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
    let ns = NamedNetns::create(&unique("k")).unwrap();
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
        let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
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
