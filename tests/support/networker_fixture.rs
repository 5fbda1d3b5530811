//! Test fixture shared by `tests/networker.rs` and `benches/networker.rs`: a "cell" network
//! namespace (where the networker binary runs, as garden would run it), an "outside" namespace
//! that reaches the cell's address, an "internet" namespace for egress, container namespaces,
//! and the CNI plugin configuration as a parameter: netman's `overlay` (with the real overlay
//! controller and daemon running in the cell) or Debian's reference `bridge` + `host-local`.

use super::bind::retry_in_use;
use super::overlay;
use super::proc::run_with_stdin;
use super::wait::{poll, wait_until};

use netman::lab::netns::NamedNetns;
use netman::netns;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_garden-external-networker");
pub const CELL_IP: &str = "192.0.2.1";
pub const OUTSIDE_IP: &str = "192.0.2.2";
/// Internet hosts (all on the internet namespace's link).
pub const NET_A: &str = "198.51.100.2";
pub const NET_B: &str = "198.51.100.3";
pub const NET_C: &str = "198.51.100.4";

pub fn unique(tag: &str) -> String {
    super::unique(&format!("nm{tag}"))
}

/// Which CNI plugin chain the cell uses (the swap is a config change only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// netman's `overlay` plugin, with an overlay controller and daemon running in the cell.
    Overlay,
    /// Debian's reference `bridge` + `host-local`.
    Bridge,
}

pub const PLUGINS: &[Plugin] = &[Plugin::Overlay, Plugin::Bridge];

impl Plugin {
    /// The plugin entries of the conflist (before any extra plugin a test appends). Both keep
    /// their allocations under `<dir>/ipam/netman-test/`, one file per IP.
    pub fn plugins(self, dir: &Path) -> Vec<Value> {
        match self {
            Plugin::Overlay => vec![json!({
                "type": "overlay",
                "dataDir": dir,
                "daemonPort": OVERLAY_DAEMON_PORT,
            })],
            Plugin::Bridge => vec![json!({
                "type": "bridge",
                "bridge": "cni-nm0",
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.overlay_network()}]],
                    "dataDir": dir.join("ipam"),
                }
            })],
        }
    }

    /// Plugin binaries and where they come from.
    pub fn binaries(self) -> Vec<(&'static str, String)> {
        let reference = |b: &'static str| (b, format!("/usr/lib/cni/{b}"));
        match self {
            Plugin::Overlay => vec![("overlay", overlay::PLUGIN.into()), reference("portmap")],
            Plugin::Bridge => vec![
                reference("bridge"),
                reference("host-local"),
                reference("portmap"),
            ],
        }
    }

    /// The networker's `overlay_network`. The overlay's pool is every /24 of it but the first,
    /// so the cell's lease is always 10.77.1.0/24.
    pub fn overlay_network(self) -> &'static str {
        match self {
            Plugin::Overlay => "10.77.0.0/23",
            Plugin::Bridge => "10.77.0.0/24",
        }
    }

    /// How every container address of the cell starts.
    pub fn container_prefix(self) -> &'static str {
        match self {
            Plugin::Overlay => "10.77.1.",
            Plugin::Bridge => "10.77.0.",
        }
    }

    /// The cell's address as its containers see it (their default gateway).
    pub fn gateway(self) -> &'static str {
        match self {
            Plugin::Overlay => "169.254.0.1",
            Plugin::Bridge => "10.77.0.1",
        }
    }
}

const OVERLAY_DAEMON_PORT: u16 = 23954;

/// The overlay's lease controller and the cell's overlay daemon, both inside the cell namespace
/// (the controller on loopback, the VTEP on the cell's uplink).
fn start_overlay(cell: &NamedNetns, dir: &Path) -> Vec<overlay::Proc> {
    let certs = overlay::certs(dir, &overlay::OVERLAY);
    let controller_config = dir.join("overlay-controller.json");
    let write = |path: &Path, v: Value| std::fs::write(path, v.to_string()).unwrap();
    write(
        &controller_config,
        overlay::controller_config(
            &certs,
            ("127.0.0.1", 4103),
            46455,
            (Plugin::Overlay.overlay_network(), 24),
            json!({"type": "sqlite", "connection_string": dir.join("leases.db")}),
        ),
    );
    let daemon_config = dir.join("overlay-daemon.json");
    write(
        &daemon_config,
        json!({
            "underlay_ip": CELL_IP,
            "overlay_network": Plugin::Overlay.overlay_network(),
            "subnet_prefix_length": 24,
            "controller_url": "https://127.0.0.1:4103",
            "ca_cert_file": certs.ca,
            "client_cert_file": certs.client.0,
            "client_key_file": certs.client.1,
            "listen_port": OVERLAY_DAEMON_PORT,
            "poll_interval_seconds": 5,
            "plugin_data_dir": dir,
        }),
    );
    let spawn = |bin: &str, config: &Path, log: &str| {
        let args = ["--config", config.to_str().unwrap()];
        overlay::spawn_in(cell, bin, &args, &dir.join(log))
    };
    let controller = spawn(overlay::CONTROLLER, &controller_config, "controller.log");
    let ns = cell.path();
    wait_until("overlay controller", Duration::from_secs(20), || {
        netns::run_in(&ns, || {
            std::net::TcpStream::connect("127.0.0.1:4103").is_ok()
        })
        .unwrap()
    });
    let daemon = spawn(overlay::DAEMON, &daemon_config, "daemon.log");
    let answers = poll(Duration::from_secs(20), Duration::from_millis(50), || {
        netns::run_in(&ns, || {
            netman::overlay::plugin::network_info(OVERLAY_DAEMON_PORT).is_ok()
        })
        .unwrap()
    });
    assert!(
        answers.is_some(),
        "the overlay daemon does not answer\ncontroller: {}\ndaemon: {}",
        controller.log_text(),
        daemon.log_text()
    );
    vec![controller, daemon]
}

pub struct Cell {
    /// Killed first on drop, before their namespace goes.
    overlay: Vec<overlay::Proc>,
    pub plugin: Plugin,
    pub cell: NamedNetns,
    pub outside: NamedNetns,
    pub internet: NamedNetns,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Value,
    servers: Vec<std::thread::JoinHandle<()>>,
}

pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Cell {
    pub fn new(plugin: Plugin) -> Cell {
        Cell::with_config(plugin, |_| {})
    }

    /// `tweak` edits the adapter.json before it is written.
    pub fn with_config(plugin: Plugin, tweak: impl FnOnce(&mut Value)) -> Cell {
        let cell = NamedNetns::create(&unique("c")).unwrap();
        let outside = NamedNetns::create(&unique("o")).unwrap();
        let internet = NamedNetns::create(&unique("i")).unwrap();
        cell.sysctl("net.ipv4.ip_forward", "1").unwrap();
        for (link, peer_ns) in [("up0", &outside), ("wan0", &internet)] {
            cell.exec(&[
                "ip",
                "link",
                "add",
                link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &peer_ns.name,
            ])
            .unwrap();
        }
        cell.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "up0"])
            .unwrap();
        cell.exec(&["ip", "addr", "add", "198.51.100.1/24", "dev", "wan0"])
            .unwrap();
        cell.exec(&["ip", "link", "set", "up0", "up"]).unwrap();
        cell.exec(&["ip", "link", "set", "wan0", "up"]).unwrap();
        outside
            .exec(&["ip", "addr", "add", "192.0.2.2/24", "dev", "eth0"])
            .unwrap();
        outside.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
        for a in [NET_A, NET_B, NET_C] {
            internet
                .exec(&["ip", "addr", "add", &format!("{a}/24"), "dev", "eth0"])
                .unwrap();
        }
        internet.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
        // A cell already has rules of its own; they must survive every up/down untouched.
        let pre = "*mangle\n-A PREROUTING -i lo -j RETURN\nCOMMIT\n*nat\n-A POSTROUTING -s 203.0.113.0/24 -o wan0 -j MASQUERADE\nCOMMIT\n*filter\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A FORWARD -i up0 -o up0 -j DROP\nCOMMIT\n";
        restore_in(&cell, pre);

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let plugin_dir = d.join("plugins");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        for (name, from) in plugin.binaries() {
            std::os::unix::fs::symlink(from, plugin_dir.join(name)).unwrap();
        }
        // A plugin that fails the way a real one does: the CNI error object on stdout, exit 1.
        let fail = plugin_dir.join("failing");
        std::fs::write(
            &fail,
            "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"boom from the failing plugin\",\"details\":\"on purpose\"}'\n  exit 1\nfi\nexit 0\n",
        )
        .unwrap();
        std::fs::set_permissions(&fail, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::create_dir_all(d.join("cni-config")).unwrap();
        std::fs::create_dir_all(d.join("ipam")).unwrap();
        let mut config = json!({
            "cni_plugin_dir": plugin_dir,
            "cni_config_dir": d.join("cni-config"),
            "bind_mount_dir": d.join("netns"),
            "state_file": d.join("state.json"),
            "cni_cache_dir": d.join("cni-cache"),
            "iptables_lock_file": d.join("iptables.lock"),
            "datastore": d.join("store.json"),
            "overlay_network": plugin.overlay_network(),
            "instance_address": CELL_IP,
            "dns_servers": ["10.77.0.1"],
            "search_domains": ["apps.internal"],
            "nflog_group": 7,
        });
        tweak(&mut config);
        let config_path = d.join("adapter.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let overlay = match plugin {
            Plugin::Overlay => start_overlay(&cell, d),
            Plugin::Bridge => Vec::new(),
        };
        let c = Cell {
            overlay,
            plugin,
            cell,
            outside,
            internet,
            dir,
            config_path,
            config,
            servers: Vec::new(),
        };
        c.write_conflist(&[]);
        // garden runs reconcile when it starts, before it creates containers.
        let o = c.run(&["--action", "reconcile"], "");
        assert!(o.ok, "reconcile at start: {}", o.stderr);
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the cell's conflist: the plugin's entries plus `extra` plugins after them.
    pub fn write_conflist(&self, extra: &[Value]) {
        let mut plugins = self.plugin.plugins(self.dir.path());
        plugins.extend(extra.iter().cloned());
        let list = json!({"cniVersion": "1.0.0", "name": "netman-test", "plugins": plugins});
        std::fs::write(
            self.path("cni-config").join("10-test.conflist"),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
    }

    /// Runs the networker inside the cell's network namespace (only the network namespace:
    /// the netns bind mounts must land in the real mount namespace, as under garden).
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        self.run_with_config(&self.config_path, args, stdin)
    }

    pub fn run_with_config(&self, config: &Path, args: &[&str], stdin: &str) -> Output {
        self.run_full(config, args, stdin, None)
    }

    /// Like `run`, with `fd3` open as the child's file descriptor 3 (garden's `Pid: 0` way of
    /// passing the container's network namespace).
    pub fn run_with_fd3(&self, args: &[&str], stdin: &str, fd3: &Path) -> Output {
        self.run_full(&self.config_path, args, stdin, Some(fd3.to_path_buf()))
    }

    fn run_full(&self, config: &Path, args: &[&str], stdin: &str, fd3: Option<PathBuf>) -> Output {
        let child = self.spawn_full(config, args, stdin, fd3, &[], &[]);
        let out = child.wait_with_output().unwrap();
        if std::env::var_os("NETMAN_TEST_SHOW_STDERR").is_some() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the networker (as `run` does) and returns at once, its stdin written and closed:
    /// for tests that kill it midway.
    /// `env` is added to its environment (and so to that of every process it starts).
    pub fn spawn(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Child {
        self.spawn_full(&self.config_path, args, stdin, None, &[], env)
    }

    /// Runs the networker under `wrapper` (e.g. `strace -f -o FILE`), as `run` does.
    pub fn run_wrapped(&self, wrapper: &[&str], args: &[&str], stdin: &str) -> Output {
        let child = self.spawn_full(&self.config_path, args, stdin, None, wrapper, &[]);
        let out = child.wait_with_output().unwrap();
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn spawn_full(
        &self,
        config: &Path,
        args: &[&str],
        stdin: &str,
        fd3: Option<PathBuf>,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Child {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut full: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        full.push(BIN.to_string());
        full.extend(args.iter().map(|s| s.to_string()));
        full.push(format!("--configFile={}", config.display()));
        let input = stdin.to_string();
        let lock = self.path("xtables.lock");
        netns::run_in(&self.cell.path(), move || {
            let mut cmd = Command::new(&full[0]);
            cmd.args(&full[1..])
                .env("XTABLES_LOCKFILE", &lock)
                .envs(env)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let file = fd3.map(|p| std::fs::File::open(p).unwrap());
            if let Some(f) = &file {
                use std::os::fd::AsRawFd;
                use std::os::unix::process::CommandExt;
                let raw = f.as_raw_fd();
                // SAFETY: only dup2 (async-signal-safe) between fork and exec.
                unsafe {
                    cmd.pre_exec(move || {
                        if nix::libc::dup2(raw, 3) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let mut child = cmd.spawn().unwrap();
            drop(file);
            let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
            child
        })
        .unwrap()
    }

    pub fn up(&self, handle: &str, input: &Value) -> Result<Value, String> {
        let o = self.run(&["--action", "up", "--handle", handle], &input.to_string());
        if !o.ok {
            return Err(o.stderr);
        }
        serde_json::from_str(&o.stdout).map_err(|e| format!("bad stdout {:?}: {e}", o.stdout))
    }

    pub fn down(&self, handle: &str) -> Result<(), String> {
        let o = self.run(&["--action", "down", "--handle", handle], "");
        if o.ok {
            Ok(())
        } else {
            Err(o.stderr)
        }
    }

    /// The cell's rules, all tables, without counters and comments.
    pub fn iptables_save(&self) -> String {
        let out = self.cell.exec(&["iptables-save"]).unwrap();
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.rfind(" [") {
                Some(i) if l.starts_with(':') => &l[..i],
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Files left anywhere in the networker's state: bind mounts, CNI cache, IPAM allocations.
    pub fn leftover_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["netns", "cni-cache"] {
            if let Ok(rd) = std::fs::read_dir(self.path(sub)) {
                out.extend(rd.filter_map(|e| {
                    Some(format!("{sub}/{}", e.ok()?.file_name().to_string_lossy()))
                }));
            }
        }
        // Both IPAMs keep one file per allocated IP (plus lock and bookkeeping files).
        if let Ok(rd) = std::fs::read_dir(self.path("ipam").join("netman-test")) {
            out.extend(rd.filter_map(|e| {
                let n = e.ok()?.file_name().to_string_lossy().into_owned();
                (n.parse::<Ipv4Addr>().is_ok()).then(|| format!("ipam/{n}"))
            }));
        }
        out
    }

    pub fn store(&self) -> Value {
        match std::fs::read_to_string(self.path("store.json")) {
            Ok(t) if !t.trim().is_empty() => serde_json::from_str(&t).unwrap(),
            _ => json!({}),
        }
    }

    pub fn port_state(&self) -> Value {
        match std::fs::read_to_string(self.path("state.json")) {
            Ok(t) => serde_json::from_str(&t).unwrap(),
            Err(_) => json!({"acquired_ports": {}}),
        }
    }

    /// TCP servers in the internet namespace on every address, for the given ports.
    pub fn internet_tcp(&mut self, ports: &[u16]) {
        for a in [NET_A, NET_B, NET_C] {
            for p in ports {
                let addr: SocketAddr = format!("{a}:{p}").parse().unwrap();
                self.servers.push(tcp_server(&self.internet.path(), addr));
            }
        }
    }

    pub fn internet_udp(&mut self, ports: &[u16]) {
        for a in [NET_A, NET_B, NET_C] {
            for p in ports {
                let addr: SocketAddr = format!("{a}:{p}").parse().unwrap();
                self.servers.push(udp_echo(&self.internet.path(), addr));
            }
        }
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        // A failed test may leave netns bind mounts in the temp dir: detach them.
        if let Ok(rd) = std::fs::read_dir(self.path("netns")) {
            for e in rd.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn restore_in(ns: &NamedNetns, text: &str) {
    let text = text.to_string();
    netns::run_in(&ns.path(), move || {
        let mut restore = Command::new("iptables-restore");
        restore.arg("--noflush");
        let out = run_with_stdin(restore, text.as_bytes());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .unwrap();
}

/// A container: its own netns and a process inside it (garden passes that process's pid).
pub struct Container {
    pub ns: NamedNetns,
    pub sleeper: Child,
}

impl Container {
    pub fn start() -> Container {
        let ns = NamedNetns::create(&unique("k")).unwrap();
        let sleeper = netns::run_in(&ns.path(), || {
            Command::new("sleep").arg("3600").spawn().unwrap()
        })
        .unwrap();
        Container { ns, sleeper }
    }
    pub fn pid(&self) -> u32 {
        self.sleeper.id()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}

/// Accepts connections forever (until the namespace goes) and answers "ok".
pub fn tcp_server(ns: &Path, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let l = netns::run_in(ns, move || retry_in_use(|| TcpListener::bind(addr)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            match s {
                Ok(mut s) => {
                    let _ = s.write_all(b"ok");
                }
                Err(_) => return,
            }
        }
    })
}

pub fn udp_echo(ns: &Path, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let s = netns::run_in(ns, move || retry_in_use(|| UdpSocket::bind(addr)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    })
}

/// Connects from inside `ns`; Ok(()) when the server answered "ok".
pub fn tcp_probe(ns: &Path, addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().unwrap();
    netns::run_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(1500))
            .map_err(|e| format!("{addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf)
            .map_err(|e| format!("{addr}: {e}"))?;
        if buf == "ok" {
            Ok(())
        } else {
            Err(format!("{addr}: answered {buf:?}"))
        }
    })
    .unwrap()
}

pub fn udp_probe(ns: &Path, addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().unwrap();
    netns::run_in(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        s.connect(addr).map_err(|e| e.to_string())?;
        s.send(b"ping").map_err(|e| format!("{addr}: {e}"))?;
        let mut buf = [0u8; 16];
        let n = s.recv(&mut buf).map_err(|e| format!("{addr}: {e}"))?;
        if &buf[..n] == b"ping" {
            Ok(())
        } else {
            Err("bad echo".into())
        }
    })
    .unwrap()
}

pub fn ping(ns: &NamedNetns, ip: &str) -> bool {
    ns.exec(&["busybox", "ping", "-c", "1", "-W", "1", ip])
        .is_ok()
}

/// The `up` stdin of garden.
pub fn up_input(pid: u32, netin: &[(u16, u16)], netout: Value) -> Value {
    json!({
        "Pid": pid,
        "Properties": {"app_id": "app-1", "space_id": "space-1", "policy_group_id": "app-1",
                       "ports": "8080", "container_workload": "app"},
        "netin": netin.iter().map(|(h, c)| json!({"host_port": h, "container_port": c})).collect::<Vec<_>>(),
        "netout_rules": netout,
    })
}

pub fn tcp_rule(start: &str, end: &str, p1: u16, p2: u16, log: bool) -> Value {
    json!({"protocol": 1, "networks": [{"start": start, "end": end}], "ports": [{"start": p1, "end": p2}], "log": log})
}
