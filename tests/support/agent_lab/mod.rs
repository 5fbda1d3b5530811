//! A lab of the test's own for the policy agent: cells as network namespaces joined by an
//! underlay veth, a silk-style VXLAN GBP VTEP per cell, containers as namespaces on /32
//! point-to-point veths, the networker's per-container default-deny chain (iptables-nft inside the
//! cell), a container metadata store per cell, TCP/UDP servers and clients inside containers, and
//! a relay that makes the policy server (on the test's loopback) reachable from a cell's loopback.
//! Everything is removed on drop; nothing touches the root namespace.

pub mod policy_api;
use super::bind::retry_in_use;
use super::wait::poll;
#[allow(unused_imports)]
pub use super::wait::wait_for;

use super::proc::{run_with_stdin, Proc};
use netman::lab::netns::NamedNetns;
use netman::netns::run_in;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use super::unique;

pub const VTEP: &str = "vtep";
pub const ALLOWED_MARK: &str = "0x1000000/0x1000000";

pub fn underlay_ip(cell: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 77, cell)
}

/// The lease's first IP (the VTEP's address), 10.255.<cell>.0.
pub fn vtep_ip(cell: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 255, cell, 0)
}

pub fn vtep_mac(cell: u8) -> String {
    format!("ee:ee:0a:ff:{cell:02x}:00")
}

pub struct Container {
    pub ns: NamedNetns,
    pub handle: String,
    pub ip: Ipv4Addr,
    pub app: String,
    pub cell: u8,
}

pub struct Cell {
    pub index: u8,
    pub dir: tempfile::TempDir,
    pub containers: Vec<Container>,
    agent: Option<Proc>,
    relay: Option<Relay>,
    pub ns: NamedNetns,
}

pub struct Lab {
    pub cells: Vec<Cell>,
}

fn sh(ns: &NamedNetns, args: &[&str]) {
    ns.exec(args)
        .unwrap_or_else(|e| panic!("in {}: {e}", ns.name));
}

impl Lab {
    /// `n` cells (1..=9) on one underlay, each with a VTEP and routes to every other cell.
    pub fn new(n: u8) -> Lab {
        assert!((1..=9).contains(&n));
        let mut cells = Vec::new();
        for i in 1..=n {
            let ns = NamedNetns::create(&unique("vpacell")).unwrap();
            ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
            // REJECT's ICMP errors are rate limited per destination (a burst of 6, then 1/s);
            // tests that probe in a loop want every rejected SYN answered.
            ns.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
            cells.push(Cell {
                index: i,
                dir: tempfile::tempdir().unwrap(),
                containers: Vec::new(),
                agent: None,
                relay: None,
                ns,
            });
        }
        // Underlay: a bridge in cell 1 when more than two cells, else one veth pair.
        if n == 1 {
            // No dummy links in this kernel: a veth pair inside the cell stands in.
            sh(
                &cells[0].ns,
                &[
                    "ip", "link", "add", "ul", "type", "veth", "peer", "name", "ulp",
                ],
            );
            sh(&cells[0].ns, &["ip", "link", "set", "ulp", "up"]);
        }
        if n >= 2 {
            sh(
                &cells[0].ns,
                &["ip", "link", "add", "ulbr", "type", "bridge"],
            );
            sh(&cells[0].ns, &["ip", "link", "set", "ulbr", "up"]);
            for c in &cells[1..] {
                let peer = format!("ul{}", c.index);
                sh(
                    &cells[0].ns,
                    &[
                        "ip", "link", "add", &peer, "type", "veth", "peer", "name", "ul", "netns",
                        &c.ns.name,
                    ],
                );
                sh(
                    &cells[0].ns,
                    &["ip", "link", "set", &peer, "master", "ulbr", "up"],
                );
            }
        }
        for c in &cells {
            let dev = if c.index == 1 && n >= 2 { "ulbr" } else { "ul" };
            let addr = format!("{}/24", underlay_ip(c.index));
            sh(&c.ns, &["ip", "addr", "add", &addr, "dev", dev]);
            sh(&c.ns, &["ip", "link", "set", dev, "up"]);
            let local = underlay_ip(c.index).to_string();
            sh(
                &c.ns,
                &[
                    "ip",
                    "link",
                    "add",
                    VTEP,
                    "address",
                    &vtep_mac(c.index),
                    "type",
                    "vxlan",
                    "id",
                    "1",
                    "dstport",
                    "4789",
                    "local",
                    &local,
                    "dev",
                    dev,
                    "gbp",
                    "nolearning",
                ],
            );
            c.ns.sysctl(&format!("net.ipv6.conf.{VTEP}.disable_ipv6"), "1")
                .unwrap();
            let vaddr = format!("{}/16", vtep_ip(c.index));
            sh(&c.ns, &["ip", "addr", "add", &vaddr, "dev", VTEP]);
            sh(&c.ns, &["ip", "link", "set", VTEP, "up"]);
            for other in &cells {
                if other.index == c.index {
                    continue;
                }
                let lease = format!("10.255.{}.0/24", other.index);
                let gw = vtep_ip(other.index).to_string();
                let src = vtep_ip(c.index).to_string();
                sh(
                    &c.ns,
                    &[
                        "ip", "route", "add", &lease, "via", &gw, "dev", VTEP, "onlink", "src",
                        &src,
                    ],
                );
                sh(
                    &c.ns,
                    &[
                        "ip",
                        "neigh",
                        "add",
                        &gw,
                        "lladdr",
                        &vtep_mac(other.index),
                        "dev",
                        VTEP,
                        "nud",
                        "permanent",
                    ],
                );
                let dst = underlay_ip(other.index).to_string();
                sh(
                    &c.ns,
                    &[
                        "bridge",
                        "fdb",
                        "add",
                        &vtep_mac(other.index),
                        "dev",
                        VTEP,
                        "dst",
                        &dst,
                        "self",
                        "permanent",
                    ],
                );
            }
        }
        Lab { cells }
    }

    pub fn cell(&mut self, index: u8) -> &mut Cell {
        &mut self.cells[index as usize - 1]
    }

    /// The container by handle, anywhere in the lab.
    pub fn container(&self, handle: &str) -> &Container {
        self.cells
            .iter()
            .flat_map(|c| c.containers.iter())
            .find(|c| c.handle == handle)
            .unwrap_or_else(|| panic!("no container {handle}"))
    }
}

impl Cell {
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("store.json")
    }

    fn xtables_lock(&self) -> PathBuf {
        self.dir.path().join("xtables.lock")
    }

    /// A container of `app` with the next free IP; its veth, routes, default-deny chain and store
    /// entry are in place when this returns.
    pub fn add_container(&mut self, handle: &str, app: &str) -> &Container {
        let k = self.containers.len() as u8 + 2;
        let ip = Ipv4Addr::new(10, 255, self.index, k);
        let ns = NamedNetns::create(&unique("vpacont")).unwrap();
        let host_if = format!("c{k}");
        sh(
            &self.ns,
            &[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ],
        );
        sh(
            &self.ns,
            &["ip", "addr", "add", "169.254.0.1/32", "dev", &host_if],
        );
        sh(&self.ns, &["ip", "link", "set", &host_if, "up"]);
        let host_route = format!("{ip}/32");
        sh(
            &self.ns,
            &["ip", "route", "add", &host_route, "dev", &host_if],
        );
        sh(&ns, &["ip", "addr", "add", &host_route, "dev", "eth0"]);
        sh(&ns, &["ip", "link", "set", "eth0", "up"]);
        sh(
            &ns,
            &[
                "ip",
                "route",
                "add",
                "169.254.0.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ],
        );
        sh(
            &ns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                "169.254.0.1",
                "dev",
                "eth0",
                "src",
                &ip.to_string(),
            ],
        );
        self.install_default_deny(handle, ip);
        self.containers.push(Container {
            ns,
            handle: handle.to_string(),
            ip,
            app: app.to_string(),
            cell: self.index,
        });
        self.store_add(handle, ip, app);
        self.containers.last().unwrap()
    }

    /// The networker's per-container chain, as the lead specified it.
    fn install_default_deny(&self, handle: &str, ip: Ipv4Addr) {
        let chain = format!("overlay--{handle}");
        let rules = format!(
            "*filter\n:{chain} - [0:0]\n-A FORWARD -j {chain}\n\
             -A {chain} -s {ip}/32 -o {VTEP} -m mark ! --mark 0x0 -j ACCEPT\n\
             -A {chain} -d {ip}/32 -m state --state RELATED,ESTABLISHED -j ACCEPT\n\
             -A {chain} -d {ip}/32 -m mark --mark {ALLOWED_MARK} -j ACCEPT\n\
             -A {chain} -d {ip}/32 -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n"
        );
        let mut restore = Command::new("ip");
        restore
            .args(["netns", "exec", &self.ns.name])
            .args(["iptables-restore", "--noflush"])
            .env("XTABLES_LOCKFILE", self.xtables_lock());
        let out = run_with_stdin(restore, rules.as_bytes());
        assert!(
            out.status.success(),
            "iptables-restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds the container to the cell's metadata store through the cell's store module.
    fn store_add(&self, handle: &str, ip: Ipv4Addr, app: &str) {
        let metadata =
            serde_json::json!({"policy_group_id": app, "space_id": "space-1", "ports": "8080"});
        netman::cell::Store::new(&self.store_path())
            .add(netman::cell::Container {
                handle: handle.into(),
                ip,
                metadata: metadata.as_object().unwrap().clone(),
            })
            .unwrap();
    }

    pub fn nft(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["nft"];
        full.extend_from_slice(args);
        self.ns.exec(&full)
    }

    /// `nft -f -` inside the cell.
    pub fn nft_script(&self, script: &str) -> Result<(), String> {
        let script = script.to_string();
        Ok(run_in(&self.ns.path(), move || {
            netman::agent::nft::Nft::new("nft").run(&script)
        })??)
    }

    /// Writes an agent config (`patch` may edit it) and starts the agent inside the cell.
    pub fn start_agent(&mut self, certs: &AgentCerts, patch: impl FnOnce(&mut serde_json::Value)) {
        assert!(self.agent.is_none(), "agent already running");
        let mut config = serde_json::json!({
            "policy_server_url": format!("https://127.0.0.1:{RELAY_PORT}"),
            "ca_cert_file": certs.ca,
            "client_cert_file": certs.cert,
            "client_key_file": certs.key,
            "cni_datastore_path": self.store_path(),
            "client_timeout_seconds": 2,
        });
        patch(&mut config);
        let path = self.dir.path().join("vpa.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut agent = Command::new("ip");
        agent
            .args(["netns", "exec", &self.ns.name])
            .arg(env!("CARGO_BIN_EXE_vxlan-policy-agent"))
            .arg("--config")
            .arg(&path)
            .args(["--log-level", "info"]);
        let log = self.dir.path().join("vpa.log");
        self.agent = Some(Proc::spawn_appending(agent, &log));
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vpa.log")).unwrap_or_default()
    }

    /// SIGTERM (SIGKILL after 10 s); the exit status.
    pub fn stop_agent(&mut self) -> std::process::ExitStatus {
        self.agent.take().expect("agent running").terminate()
    }

    /// SIGKILL.
    pub fn kill_agent(&mut self) {
        self.agent.take();
    }

    /// An HTTP request to the cell's loopback (the agent's endpoints); (status, body).
    pub fn local_http(
        &self,
        method: &str,
        port: u16,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        let (method, url, body) = (
            method.to_string(),
            format!("http://127.0.0.1:{port}{path}"),
            body.to_string(),
        );
        run_in(&self.ns.path(), move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let resp = match method.as_str() {
                "GET" => agent.get(&url).call(),
                "PUT" => agent.put(&url).send(body.as_bytes()),
                _ => agent.post(&url).send(body.as_bytes()),
            };
            let mut resp = resp.map_err(|e| format!("{method} {url}: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            Ok((status, text))
        })?
    }

    /// Waits until the agent's debug server answers /metrics.
    pub fn wait_agent_up(&self) {
        let up = poll(Duration::from_secs(20), Duration::from_millis(50), || {
            matches!(self.local_http("GET", 8721, "/metrics", ""), Ok((200, _)))
        });
        assert!(up.is_some(), "agent did not come up: {}", self.agent_log());
    }

    /// Makes `target` (on the test's loopback) reachable at 127.0.0.1:RELAY_PORT in the cell.
    pub fn relay_to(&mut self, target: SocketAddr) {
        self.relay = Some(Relay::start(&self.ns.path(), RELAY_PORT, target));
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        self.kill_agent();
        self.relay.take();
        self.containers.clear();
    }
}

pub const RELAY_PORT: u16 = 4003;

pub struct AgentCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A thread that repeats `step` until dropped; each step returns within about 100 ms (its socket
/// has that timeout), so the drop does not wait long.
struct Looping {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Looping {
    fn spawn(mut step: impl FnMut() + Send + 'static) -> Looping {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                step();
            }
        });
        Looping {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Looping {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_accept_timeout(fd: &impl std::os::fd::AsFd, t: Duration) {
    let tv = nix::sys::time::TimeVal::new(t.as_secs() as i64, t.subsec_micros() as i64);
    nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv).unwrap();
}

/// A TCP relay from a port on a namespace's loopback to an address in the test's namespace.
pub struct Relay(Looping);

impl Relay {
    pub fn start(ns: &Path, port: u16, target: SocketAddr) -> Relay {
        let listener = run_in(ns, move || {
            retry_in_use(|| TcpListener::bind(("127.0.0.1", port)))
        })
        .unwrap()
        .unwrap();
        set_accept_timeout(&listener, Duration::from_millis(100));
        Relay(Looping::spawn(move || {
            let Ok((inbound, _)) = listener.accept() else {
                return;
            };
            // The accepted socket inherits the listener's 100 ms receive timeout, which would
            // end the relay of every request that waits longer (a parked watch) after 100 ms.
            if inbound.set_read_timeout(None).is_err() {
                return;
            }
            // This thread is in the test's namespace, so the outbound socket is too.
            let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                return; // the server is down: the agent sees the connection closed
            };
            pipe(inbound, outbound);
        }))
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    for (mut from, mut to) in [(a, b2), (b, a2)] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    }
}

/// A TCP server inside a container: accepts and closes at once. Stops on drop.
pub struct TcpServer(Looping);

impl TcpServer {
    pub fn start(c: &Container, port: u16) -> TcpServer {
        let listener = run_in(&c.ns.path(), move || {
            retry_in_use(|| TcpListener::bind(("0.0.0.0", port)))
        })
        .unwrap()
        .unwrap();
        set_accept_timeout(&listener, Duration::from_millis(100));
        TcpServer(Looping::spawn(move || {
            if let Ok((s, _)) = listener.accept() {
                drop(s);
            }
        }))
    }
}

/// A UDP echo server inside a container. Stops on drop.
pub struct UdpEcho(Looping);

impl UdpEcho {
    pub fn start(c: &Container, port: u16) -> UdpEcho {
        let socket = run_in(&c.ns.path(), move || {
            retry_in_use(|| UdpSocket::bind(("0.0.0.0", port)))
        })
        .unwrap()
        .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 1500];
        UdpEcho(Looping::spawn(move || {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        }))
    }
}

/// Outcome of a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    Ok,
    Refused,
    TimedOut,
    Other(ErrorKind),
}

fn classify(r: std::io::Result<()>) -> Conn {
    match r {
        Ok(()) => Conn::Ok,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Conn::Refused,
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => Conn::TimedOut,
        Err(e) => Conn::Other(e.kind()),
    }
}

/// One TCP connect from a container.
pub fn tcp_connect(from: &Container, to: Ipv4Addr, port: u16) -> Conn {
    let addr = SocketAddr::from((to, port));
    run_in(&from.ns.path(), move || {
        classify(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(|_| ()))
    })
    .unwrap()
}

/// One UDP datagram from a container and its echo.
pub fn udp_roundtrip(from: &Container, to: Ipv4Addr, port: u16) -> Conn {
    let addr = SocketAddr::from((to, port));
    run_in(&from.ns.path(), move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.send(b"ping")?;
        let mut buf = [0u8; 16];
        let n = s.recv(&mut buf)?;
        if &buf[..n] != b"ping" {
            return Err(std::io::Error::other("wrong echo"));
        }
        Ok(())
    })
    .map(classify)
    .unwrap()
}
