//! A service discovery fleet in network namespaces: a "registry" namespace with the real
//! policy-server binary (its internal API on 10.98.0.1, the cells' registry) and a test upstream
//! resolver (10.98.200.1), and cells, each its own namespace linked to the registry's, running the
//! real `netman-dns` binary on 169.254.0.2, with containers (namespaces on the cell's bridge)
//! recorded in the cell's container store through the store code the networker uses.

use super::certs::{certs, Certs, Names};
use super::dns::{Mode, Upstream};
use super::policy_server::{base_config, write_tokens_file, ADMIN_TOKEN};
use super::proc::Proc;
use super::wait::poll;
use netman::cell::{Container, Store};
use netman::http::client::{agent, body_string, ClientTls};
use netman::lab::netns::NamedNetns;
use netman::netns::run_in;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const REGISTRY_IP: &str = "10.98.0.1";
pub const UPSTREAM_IP: &str = "10.98.200.1";
pub const RESOLVER: &str = "169.254.0.2:53";

const NAMES: Names = Names {
    ca: "netman sd test CA",
    server: "policy-server.service.cf.internal",
    server_sans: &[
        "policy-server.service.cf.internal",
        REGISTRY_IP,
        "127.0.0.1",
    ],
    client: "netman-dns",
};

pub fn resolver() -> SocketAddr {
    RESOLVER.parse().unwrap()
}

pub struct Registry {
    pub ns: NamedNetns,
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub config_path: PathBuf,
    pub config: Value,
    pub upstream: Option<Upstream>,
    proc: Option<Proc>,
}

impl Registry {
    /// The registry namespace, its policy server (cell expiry `expiry_seconds`) and the upstream.
    pub fn start(expiry_seconds: u64) -> Registry {
        let ns = NamedNetns::create(&super::unique("nmsdr")).unwrap();
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{REGISTRY_IP}/32"),
            "dev",
            "lo",
        ])
        .unwrap();
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{UPSTREAM_IP}/32"),
            "dev",
            "lo",
        ])
        .unwrap();
        ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path(), &NAMES);
        let tokens = write_tokens_file(dir.path());
        let db = json!({"type": "sqlite", "connection_string": dir.path().join("policies.db")});
        let mut config = base_config(&certs, &tokens, &db);
        config["internal_listen_host"] = json!("0.0.0.0");
        config["service_discovery_cell_expiry_seconds"] = json!(expiry_seconds);
        let config_path = dir.path().join("policy-server.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let upstream = run_in(&ns.path(), || {
            Upstream::start(format!("{UPSTREAM_IP}:53").parse().unwrap(), Mode::Normal)
        })
        .unwrap();
        let mut r = Registry {
            ns,
            dir,
            certs,
            config_path,
            config,
            upstream: Some(upstream),
            proc: None,
        };
        r.spawn();
        r
    }

    pub fn internal_port(&self) -> u64 {
        self.config["internal_listen_port"].as_u64().unwrap()
    }

    fn external(&self) -> String {
        format!("http://127.0.0.1:{}", self.config["listen_port"])
    }

    /// Starts the policy server (again) and waits until its debug port says healthy.
    pub fn spawn(&mut self) {
        let log = self.dir.path().join("policy-server.log");
        let mut command = std::process::Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.ns.name,
                env!("CARGO_BIN_EXE_policy-server"),
            ])
            .arg("--config")
            .arg(&self.config_path);
        self.proc = Some(Proc::spawn_appending(command, &log));
        let health = format!(
            "http://127.0.0.1:{}/health",
            self.config["debug_server_port"]
        );
        let ready = poll(Duration::from_secs(30), Duration::from_millis(50), || {
            let health = health.clone();
            run_in(&self.ns.path(), move || {
                let a = agent(&ClientTls::default(), Duration::from_secs(2)).unwrap();
                a.get(&health).call().is_ok_and(|r| r.status() == 200)
            })
            .unwrap()
        });
        assert!(ready.is_some(), "policy server not ready: {}", self.log());
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.proc.take();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("policy-server.log")).unwrap_or_default()
    }

    /// POST on the external API as admin (from inside the namespace): (status, body).
    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        let url = format!("{}{path}", self.external());
        let body = body.to_string();
        run_in(&self.ns.path(), move || {
            let a = agent(&ClientTls::default(), Duration::from_secs(10)).unwrap();
            let mut r = a
                .post(&url)
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .send(body.as_bytes())
                .unwrap();
            let status = r.status().as_u16();
            (status, body_string(&mut r, 1 << 20).unwrap())
        })
        .unwrap()
    }

    pub fn map_route(&self, app: &str, host: &str) {
        let (status, body) = self.post(
            "/networking/v1/external/internal_routes",
            &json!({"routes": [{"app_guid": app, "host": host, "domain": "apps.internal"}]})
                .to_string(),
        );
        assert_eq!(status, 200, "{body}");
    }
}

pub struct Cell {
    pub id: String,
    pub ns: NamedNetns,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub store: Store,
    /// 10.255.<n>.0/24 on the cell's bridge.
    pub n: u8,
    next: std::sync::atomic::AtomicU8,
    proc: Option<Proc>,
}

impl Cell {
    /// Cell `n` (1..=99): linked to the registry on 10.98.<n>.0/24, containers on 10.255.<n>.0/24,
    /// netman-dns started.
    pub fn start(registry: &Registry, n: u8, refresh_seconds: u64) -> Cell {
        let ns = NamedNetns::create(&super::unique("nmsdc")).unwrap();
        let (here, there) = (format!("up{n}"), format!("c{n}"));
        registry
            .ns
            .exec(&[
                "ip", "link", "add", &there, "type", "veth", "peer", "name", &here, "netns",
                &ns.name,
            ])
            .unwrap();
        registry
            .ns
            .exec(&[
                "ip",
                "addr",
                "add",
                &format!("10.98.{n}.1/24"),
                "dev",
                &there,
            ])
            .unwrap();
        registry
            .ns
            .exec(&["ip", "link", "set", &there, "up"])
            .unwrap();
        registry
            .ns
            .exec(&[
                "ip",
                "route",
                "add",
                &format!("10.255.{n}.0/24"),
                "via",
                &format!("10.98.{n}.2"),
            ])
            .unwrap();
        let bridge_mac = format!("02:00:00:00:{n:02x}:01");
        for args in [
            vec![
                "ip",
                "addr",
                "add",
                &format!("10.98.{n}.2/24"),
                "dev",
                &here,
            ],
            vec!["ip", "link", "set", &here, "up"],
            vec![
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.98.{n}.1"),
            ],
            // A fixed MAC: otherwise the bridge takes its lowest port's MAC, which changes when
            // a container joins, and the other containers' ARP entries for the gateway (and so
            // the resolver behind it) go stale for many seconds.
            vec![
                "ip",
                "link",
                "add",
                "br0",
                "address",
                &bridge_mac,
                "type",
                "bridge",
            ],
            vec![
                "ip",
                "addr",
                "add",
                &format!("10.255.{n}.1/24"),
                "dev",
                "br0",
            ],
            vec!["ip", "link", "set", "br0", "up"],
        ] {
            ns.exec(&args.iter().map(|s| s.as_ref()).collect::<Vec<&str>>())
                .unwrap();
        }
        ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let id = format!("cell-{n}");
        let config = json!({
            "listen_address": "169.254.0.2",
            "listen_device": "lo",
            "upstreams": [format!("{UPSTREAM_IP}:53")],
            "upstream_timeout_ms": 1000,
            "policy_server_url": format!("https://{REGISTRY_IP}:{}", registry.internal_port()),
            "ca_cert_file": registry.certs.ca,
            "client_cert_file": registry.certs.client.0,
            "client_key_file": registry.certs.client.1,
            "cell_id": id,
            "container_store": dir.path().join("store.json"),
            "snapshot_file": dir.path().join("dns-snapshot"),
            "refresh_interval_seconds": refresh_seconds,
            "watch_seconds": 20,
        });
        let config_path = dir.path().join("netman-dns.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let store = Store::new(&dir.path().join("store.json"));
        let mut cell = Cell {
            id,
            ns,
            store,
            dir,
            config_path,
            n,
            next: std::sync::atomic::AtomicU8::new(2),
            proc: None,
        };
        cell.spawn();
        cell
    }

    pub fn spawn(&mut self) {
        let log = self.dir.path().join("netman-dns.log");
        let mut command = std::process::Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.ns.name,
                env!("CARGO_BIN_EXE_netman-dns"),
            ])
            .arg("--config")
            .arg(&self.config_path);
        self.proc = Some(Proc::spawn_appending(command, &log));
        let ns = self.ns.path();
        let up = poll(Duration::from_secs(20), Duration::from_millis(50), || {
            run_in(&ns, || std::net::TcpStream::connect(resolver()).is_ok()).unwrap()
        });
        assert!(up.is_some(), "netman-dns not listening: {}", self.log());
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.proc.take();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("netman-dns.log")).unwrap_or_default()
    }

    /// A container of `app` (instance `index`) on this cell: its namespace on the bridge, and its
    /// entry in the cell's store, as the networker's `up` writes it.
    pub fn up(&self, app: &str, index: u32) -> ContainerNs {
        let host = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ip = Ipv4Addr::new(10, 255, self.n, host);
        let ns = NamedNetns::create(&super::unique("nmsdk")).unwrap();
        let veth = format!("v{host}");
        self.ns
            .exec(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ])
            .unwrap();
        self.ns
            .exec(&["ip", "link", "set", &veth, "master", "br0"])
            .unwrap();
        self.ns.exec(&["ip", "link", "set", &veth, "up"]).unwrap();
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .unwrap();
        ns.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
        ns.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("10.255.{}.1", self.n),
        ])
        .unwrap();
        let handle = format!("{}-{app}-{index}-{host}", self.id);
        self.store.add(container(&handle, ip, app, index)).unwrap();
        ContainerNs { ns, ip, handle }
    }

    /// The container's store entry removed, as the networker's `down` does.
    pub fn down(&self, c: &ContainerNs) {
        self.store.delete(&c.handle).unwrap();
    }
}

pub fn container(handle: &str, ip: Ipv4Addr, app: &str, index: u32) -> Container {
    let mut c = Container::for_app(handle, ip, app);
    c.metadata.insert("app_id".into(), json!(app));
    c.metadata
        .insert("instance_index".into(), json!(index.to_string()));
    c.metadata.insert("container_workload".into(), json!("app"));
    c
}

pub struct ContainerNs {
    pub ns: NamedNetns,
    pub ip: Ipv4Addr,
    pub handle: String,
}

impl ContainerNs {
    pub fn path(&self) -> PathBuf {
        self.ns.path()
    }
}

/// The rcode and the sorted addresses of an answer, or why there was none (timeout, bad packet).
pub type Answer = Result<(hickory_proto::op::ResponseCode, Vec<Ipv4Addr>), String>;

/// Asks `name` A over UDP from inside `ns` (timeout 2 s).
pub fn lookup(ns: &Path, name: &str) -> Answer {
    let name = name.to_string();
    run_in(ns, move || {
        let q = super::dns::query(&name, hickory_proto::rr::RecordType::A, None);
        let reply = super::dns::send_udp(resolver(), &q, Duration::from_secs(2))
            .map_err(|e| format!("{name}: {e}"))?;
        let m = hickory_proto::op::Message::from_vec(&reply).map_err(|e| e.to_string())?;
        let mut ips = super::dns::a_records(&m);
        ips.sort();
        Ok((m.metadata.response_code, ips))
    })
    .unwrap()
}
