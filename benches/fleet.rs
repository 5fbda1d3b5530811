//! Fleet simulator: a real policy server (and a real overlay controller) as child processes, and
//! N simulated cells in this process. Each cell holds its own kept-alive mutual-TLS connection and
//! behaves like the agent — it either polls `policies_last_updated` every second or holds the
//! version watch — and fetches `GET policies?id=<its apps>` when the version moves; each cell's
//! overlay daemon renews its lease every 5 s over its own connection. Prints, per N and mode:
//! errors, the cheap check's p50/p99, convergence (policy created through the external API ->
//! every affected cell fetched it) p50/p99, requests per idle cell-minute, and the server's RSS and
//! CPU seconds per cell-minute while idle; and, for watching cells, the wake-up per server (change
//! posted -> an affected cell's watch answered, its fetch not included). Then the
//! hostile-connections figure and the memory of an idle connection. Asserts nothing.
//!
//! `cargo bench --bench fleet` (SQLite). `NETMAN_FLEET_SIZES=100,500` picks the sizes,
//! `NETMAN_FLEET_IDLE_SECONDS` the idle window (20), `NETMAN_BENCH_DATABASES=postgres,mysql` adds
//! two policy servers on one PostgreSQL / MariaDB database (cells split between them, changes
//! made through the first), `NETMAN_FLEET_SKIP=hostile,lab` skips the hostile part or the lab,
//! `NETMAN_FLEET_POLICY_SERVER=<binary>` runs another policy server build (a baseline), and
//! `NETMAN_FLEET_MODES=poll` one mode only (`none`: no SQLite run).
//!
//! Last, the lab (`netman-lab up`, 3 cells, 6 apps; its agents hold the watch): the time from
//! `netman allow-access` (the CLI, started as a user would) until a connection between the two
//! apps' containers on different cells succeeds, over 40 samples.

#[path = "../tests/support/mod.rs"]
mod support;
use support::proc::output_ok;
use support::{db, policy_server, Proc};

use netman::http::client::{agent, body_string, ClientTls};
use policy_server::{
    base_config, certs, free_port, v1_body, write_tokens_file, Certs, ADMIN_TOKEN, POLICY_SERVER,
};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const APPS_PER_CELL: usize = 10;
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const WATCH_WAIT: u64 = 30;
const RENEW_INTERVAL: Duration = Duration::from_secs(5);
const ROUNDS: usize = 10;
const POLICIES_PER_ROUND: usize = 10;
const LAST_UPDATED: &str = "/networking/v1/internal/policies_last_updated";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Poll,
    Watch,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn app(cell: usize, k: usize) -> String {
    format!("{cell:06}-{k:02}-app-0000-4000-8000-000000000000")
}

// ---- child processes -----------------------------------------------------------------------------

/// Writes `config` to `<dir>/<name>.json` and starts `bin` with it, logging at `warn`.
fn spawn(bin: &str, config: &Value, dir: &Path, name: &str) -> Proc {
    let config_path = dir.join(format!("{name}.json"));
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut command = Command::new(bin);
    command
        .arg("--config")
        .arg(&config_path)
        .args(["--log-level", "warn"]);
    Proc::spawn(command, &dir.join(format!("{name}.log")))
}

/// What the bench measures of a daemon, from /proc.
trait Measured {
    fn wait_port(&mut self, port: u16);
    fn rss_mb(&self) -> f64;
    fn cpu_seconds(&self) -> f64;
    fn threads(&self) -> usize;
    /// Open file descriptors: the connections the server really holds.
    fn open_fds(&self) -> usize;
}

impl Measured for Proc {
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    fn wait_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "port {port} never opened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn rss_mb(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
            .unwrap_or(0.0);
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        ticks / hz
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

struct PolicyServerProc {
    proc_: Proc,
    external: String,
    internal: String,
    internal_port: u16,
    external_port: u16,
}

fn start_policy_server(
    dir: &Path,
    certs: &Certs,
    tokens: &Path,
    database: &Value,
    name: &str,
) -> PolicyServerProc {
    let config = base_config(certs, tokens, database);
    let port = |key: &str| config[key].as_u64().unwrap() as u16;
    let (listen, internal, debug) = (
        port("listen_port"),
        port("internal_listen_port"),
        port("debug_server_port"),
    );
    let bin = std::env::var("NETMAN_FLEET_POLICY_SERVER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_policy-server").to_string());
    let mut proc_ = spawn(&bin, &config, dir, name);
    proc_.wait_port(debug);
    proc_.wait_port(internal);
    PolicyServerProc {
        proc_,
        external: format!("http://127.0.0.1:{listen}"),
        internal: format!("https://127.0.0.1:{internal}"),
        internal_port: internal,
        external_port: listen,
    }
}

fn start_controller(dir: &Path, certs: &Certs) -> (Proc, String) {
    let (port, debug) = (free_port(), free_port());
    let config = support::overlay::controller_config(
        certs,
        ("127.0.0.1", port),
        debug,
        ("10.192.0.0/11", 24),
        json!({"type": "sqlite", "connection_string": dir.join("leases.db")}),
    );
    let mut proc_ = spawn(
        env!("CARGO_BIN_EXE_overlay-controller"),
        &config,
        dir,
        "overlay-controller",
    );
    proc_.wait_port(port);
    (proc_, format!("https://127.0.0.1:{port}"))
}

fn mtls(certs: &Certs, timeout: Duration) -> ureq::Agent {
    agent(
        &ClientTls {
            ca_cert_file: Some(certs.ca.to_string_lossy().into()),
            client_cert_file: Some(certs.client.0.to_string_lossy().into()),
            client_key_file: Some(certs.client.1.to_string_lossy().into()),
            skip_verification: false,
        },
        timeout,
    )
    .unwrap()
}

// ---- the simulated fleet -------------------------------------------------------------------------

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Set while the idle window runs: requests are counted.
    counting: AtomicBool,
    idle_requests: AtomicU64,
    errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
    checks_ms: Mutex<Vec<f64>>,
    synced: AtomicUsize,
    /// Per cell: (destination port that identifies a new policy, when it was created).
    expected: Mutex<HashMap<usize, Vec<(i64, Instant)>>>,
    convergence_ms: Mutex<Vec<f64>>,
    /// An affected cell's watch answered with a change (before its fetch): (server, when the
    /// change was posted, when the watch answered).
    wakes: Mutex<Vec<(usize, Instant, Instant)>>,
    /// Per round: how long the change's POST through the first server took.
    post_ms: Mutex<Vec<f64>>,
    missed: AtomicU64,
}

impl Shared {
    fn error(&self, e: String) {
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        self.errors.fetch_add(1, Ordering::SeqCst);
        let mut samples = self.error_samples.lock().unwrap();
        if samples.len() < 5 {
            samples.push(e);
        }
    }

    fn count(&self) {
        if self.counting.load(Ordering::Relaxed) {
            self.idle_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A watch of a cell on `server` answered with a change at `at`: if a change waits for that
    /// cell, the time since the earliest such change was made.
    fn woke(&self, cell: usize, server: usize, at: Instant) {
        let since = self
            .expected
            .lock()
            .unwrap()
            .get(&cell)
            .and_then(|list| list.iter().map(|(_, since)| *since).min());
        if let Some(since) = since {
            self.wakes.lock().unwrap().push((server, since, at));
        }
    }
}

struct Cell {
    id: usize,
    /// Which policy server it talks to (an index into the servers started).
    server: usize,
    mode: Mode,
    base: String,
    agent: ureq::Agent,
    shared: Arc<Shared>,
    start_after: Duration,
}

impl Cell {
    fn get(
        &self,
        url: &str,
        timeout: Option<Duration>,
    ) -> Result<(String, Option<String>), String> {
        self.shared.count();
        let mut req = self.agent.get(url);
        if let Some(t) = timeout {
            req = req.config().timeout_global(Some(t)).build();
        }
        let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let marked = resp
            .headers()
            .get(netman::api::policy::WATCH_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = body_string(&mut resp, 64 << 20).map_err(|e| format!("GET {url}: {e}"))?;
        if status != 200 {
            return Err(format!("GET {url}: {status} {body}"));
        }
        Ok((body, marked))
    }

    fn last_updated(&self) -> Result<i64, String> {
        let started = Instant::now();
        let (body, _) = self.get(&format!("{}{LAST_UPDATED}", self.base), None)?;
        if self.mode == Mode::Poll {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            self.shared.checks_ms.lock().unwrap().push(ms);
        }
        body.trim().parse().map_err(|_| format!("version {body:?}"))
    }

    fn fetch(&self) -> Result<(), String> {
        let ids: Vec<String> = (0..APPS_PER_CELL).map(|k| app(self.id, k)).collect();
        let (body, _) = self.get(
            &format!(
                "{}/networking/v1/internal/policies?id={}",
                self.base,
                ids.join(",")
            ),
            None,
        )?;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let ports: Vec<i64> = v["policies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["destination"]["ports"]["start"].as_i64())
                    .collect()
            })
            .unwrap_or_default();
        let now = Instant::now();
        let mut expected = self.shared.expected.lock().unwrap();
        if let Some(list) = expected.get_mut(&self.id) {
            list.retain(|(port, since)| {
                if ports.contains(port) {
                    let ms = now.duration_since(*since).as_secs_f64() * 1000.0;
                    self.shared.convergence_ms.lock().unwrap().push(ms);
                    false
                } else {
                    true
                }
            });
        }
        Ok(())
    }

    fn run(self) {
        std::thread::sleep(self.start_after);
        let shared = Arc::clone(&self.shared);
        let mut version = loop {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            match self.last_updated().and_then(|v| self.fetch().map(|_| v)) {
                Ok(v) => break v,
                Err(e) => {
                    shared.error(e);
                    std::thread::sleep(Duration::from_millis(
                        rand::thread_rng().gen_range(500..1500),
                    ));
                }
            }
        };
        shared.synced.fetch_add(1, Ordering::SeqCst);
        let mut next = Instant::now() + POLL_INTERVAL;
        while !shared.stop.load(Ordering::SeqCst) {
            let result = match self.mode {
                Mode::Poll => {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    next += POLL_INTERVAL;
                    self.last_updated()
                }
                Mode::Watch => {
                    let ids: Vec<String> = (0..APPS_PER_CELL).map(|k| app(self.id, k)).collect();
                    let answer = self.get(
                        &format!(
                            "{}{LAST_UPDATED}?wait={WATCH_WAIT}&after={version}&id={}",
                            self.base,
                            ids.join(",")
                        ),
                        Some(Duration::from_secs(WATCH_WAIT + 10)),
                    );
                    if let Ok((body, Some(mark))) = &answer {
                        let moved = body.trim().parse::<i64>().is_ok_and(|v| v != version);
                        if moved && mark != netman::api::policy::WATCH_UNAFFECTED {
                            shared.woke(self.id, self.server, Instant::now());
                        }
                    }
                    match answer {
                        // Moved, but not for this cell's apps: nothing to fetch.
                        Ok((body, Some(mark))) if mark == netman::api::policy::WATCH_UNAFFECTED => {
                            if let Ok(v) = body.trim().parse() {
                                version = v;
                            }
                            continue;
                        }
                        // A server without the watch answers at once: poll, as the agent does.
                        Ok((body, None)) => {
                            std::thread::sleep(POLL_INTERVAL);
                            body.trim().parse().map_err(|_| body)
                        }
                        other => other.and_then(|(body, _)| body.trim().parse().map_err(|_| body)),
                    }
                }
            };
            match result {
                Ok(v) if v != version => match self.fetch() {
                    Ok(()) => version = v,
                    Err(e) => shared.error(e),
                },
                Ok(_) => {}
                Err(e) => {
                    shared.error(e);
                    std::thread::sleep(Duration::from_millis(
                        rand::thread_rng().gen_range(500..1500),
                    ));
                }
            }
        }
    }
}

/// Overlay daemons: each holds a lease over its own connection and renews it every 5 s.
fn run_daemons(
    cells: std::ops::Range<usize>,
    controller: String,
    certs: Arc<Certs>,
    shared: Arc<Shared>,
) {
    let daemons: Vec<(ureq::Agent, Value)> = cells
        .filter_map(|c| {
            let agent = mtls(&certs, Duration::from_secs(10));
            let underlay = format!("10.1.{}.{}", c / 250, c % 250 + 1);
            let resp = agent
                .put(format!("{controller}/leases/acquire"))
                .header("content-type", "application/json")
                .send(
                    json!({"underlay_ip": underlay, "single_overlay_ip": false})
                        .to_string()
                        .as_bytes(),
                );
            match resp {
                Ok(mut r) if r.status() == 200 => {
                    let lease: Value =
                        serde_json::from_str(&body_string(&mut r, 1 << 20).ok()?).ok()?;
                    Some((agent, lease))
                }
                Ok(r) => {
                    shared.error(format!("acquire: {}", r.status()));
                    None
                }
                Err(e) => {
                    shared.error(format!("acquire: {e}"));
                    None
                }
            }
        })
        .collect();
    let mut next = Instant::now() + RENEW_INTERVAL;
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += RENEW_INTERVAL;
        for (agent, lease) in &daemons {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            match agent
                .put(format!("{controller}/leases/renew"))
                .header("content-type", "application/json")
                .send(lease.to_string().as_bytes())
            {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => shared.error(format!("renew: {}", r.status())),
                Err(e) => shared.error(format!("renew: {e}")),
            }
        }
    }
}

struct Row {
    label: String,
    n: usize,
    mode: Mode,
    errors: u64,
    error_samples: Vec<String>,
    check_p50: f64,
    check_p99: f64,
    conv_p50: f64,
    conv_p99: f64,
    missed: u64,
    requests_per_cell_min: f64,
    rss_mb: f64,
    cpu_per_cell_min: f64,
    threads: usize,
    /// The wake-ups of affected watching cells: per server from the change's POST, then the
    /// second server's from the change's first wake-up on the first (when it was visible).
    wakeups: Vec<(String, Figure)>,
    /// p50 and max of the change's POST (the wake-ups are measured from before it).
    post_p50: f64,
    post_max: f64,
}

fn post_policies(external: &str, policies: &[(String, String, i64)]) {
    let refs: Vec<(&str, &str, &str, i64, i64)> = policies
        .iter()
        .map(|(s, d, p)| (s.as_str(), d.as_str(), "tcp", *p, *p))
        .collect();
    let resp = ureq::Agent::new_with_defaults()
        .post(format!("{external}/networking/v1/external/policies"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .send(v1_body(&refs).as_bytes())
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn run(label: &str, n: usize, mode: Mode, database: Option<&Value>, idle: Duration) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let certs = Arc::new(certs(dir.path(), &POLICY_SERVER));
    let tokens = write_tokens_file(dir.path());
    let sqlite = json!({"type": "sqlite", "connection_string": dir.path().join("policies.db")});
    let db = database.unwrap_or(&sqlite);
    let mut servers = vec![start_policy_server(
        dir.path(),
        &certs,
        &tokens,
        db,
        "policy-server-a",
    )];
    if database.is_some() {
        servers.push(start_policy_server(
            dir.path(),
            &certs,
            &tokens,
            db,
            "policy-server-b",
        ));
    }
    let (controller, controller_url) = start_controller(dir.path(), &certs);
    let mut rng = rand::thread_rng();

    // Three policies per cell between random apps, so every fetch returns something.
    let preload: Vec<(String, String, i64)> = (0..n * 3)
        .map(|i| {
            let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
            (
                app(a, i % APPS_PER_CELL),
                app(b, (i + 3) % APPS_PER_CELL),
                1000 + (i % 50) as i64,
            )
        })
        .collect();
    for batch in preload.chunks(100) {
        post_policies(&servers[0].external, batch);
    }

    let shared = Arc::new(Shared::default());
    let spread = Duration::from_secs_f64((n as f64 / 400.0).max(2.0));
    let mut handles = Vec::new();
    for id in 0..n {
        let cell = Cell {
            id,
            server: id % servers.len(),
            mode,
            base: servers[id % servers.len()].internal.clone(),
            agent: mtls(&certs, Duration::from_secs(10)),
            shared: Arc::clone(&shared),
            start_after: Duration::from_secs_f64(rng.gen_range(0.0..spread.as_secs_f64())),
        };
        handles.push(
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || cell.run())
                .unwrap(),
        );
    }
    let daemon_threads = 16.min(n);
    for t in 0..daemon_threads {
        let range = (t * n / daemon_threads)..((t + 1) * n / daemon_threads);
        let (url, certs, shared) = (
            controller_url.clone(),
            Arc::clone(&certs),
            Arc::clone(&shared),
        );
        handles.push(std::thread::spawn(move || {
            run_daemons(range, url, certs, shared)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.synced.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let unsynced = n - shared.synced.load(Ordering::SeqCst);
    // Let the first poll/watch round settle, then measure an idle window.
    std::thread::sleep(Duration::from_secs(2));
    let cpu_before: f64 = servers.iter().map(|s| s.proc_.cpu_seconds()).sum();
    shared.counting.store(true, Ordering::SeqCst);
    std::thread::sleep(idle);
    shared.counting.store(false, Ordering::SeqCst);
    let cpu_idle: f64 = servers.iter().map(|s| s.proc_.cpu_seconds()).sum::<f64>() - cpu_before;
    let cell_minutes = n as f64 * idle.as_secs_f64() / 60.0;
    let rss_mb: f64 = servers.iter().map(|s| s.proc_.rss_mb()).sum();
    let threads: usize = servers.iter().map(|s| s.proc_.threads()).sum();

    // Convergence: policies between apps on different cells, made through the first server.
    let mut port = 20_000;
    for _ in 0..ROUNDS {
        let mut batch = Vec::new();
        let mut affected = Vec::new();
        for _ in 0..POLICIES_PER_ROUND {
            let a = rng.gen_range(0..n);
            let b = (a + 1 + rng.gen_range(0..n - 1)) % n;
            port += 1;
            batch.push((
                app(a, rng.gen_range(0..APPS_PER_CELL)),
                app(b, rng.gen_range(0..APPS_PER_CELL)),
                port,
            ));
            affected.push((a, port));
            affected.push((b, port));
        }
        let t0 = Instant::now();
        {
            let mut expected = shared.expected.lock().unwrap();
            for (cell, port) in &affected {
                expected.entry(*cell).or_default().push((*port, t0));
            }
        }
        post_policies(&servers[0].external, &batch);
        shared
            .post_ms
            .lock()
            .unwrap()
            .push(t0.elapsed().as_secs_f64() * 1000.0);
        let deadline = t0 + Duration::from_secs(10);
        loop {
            let left: usize = shared
                .expected
                .lock()
                .unwrap()
                .values()
                .map(|v| v.len())
                .sum();
            if left == 0 {
                break;
            }
            if Instant::now() > deadline {
                shared.missed.fetch_add(left as u64, Ordering::SeqCst);
                shared.expected.lock().unwrap().clear();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    shared.stop.store(true, Ordering::SeqCst);
    let errors = shared.errors.load(Ordering::SeqCst) + unsynced as u64;
    drop(servers);
    drop(controller);
    for h in handles {
        let _ = h.join();
    }
    let mut checks = shared.checks_ms.lock().unwrap().clone();
    checks.sort_by(f64::total_cmp);
    let mut conv = shared.convergence_ms.lock().unwrap().clone();
    conv.sort_by(f64::total_cmp);
    let wakeups = wake_figures(&shared.wakes.lock().unwrap());
    let mut posts = shared.post_ms.lock().unwrap().clone();
    posts.sort_by(f64::total_cmp);
    let row = Row {
        label: label.to_string(),
        n,
        mode,
        errors,
        error_samples: shared.error_samples.lock().unwrap().clone(),
        check_p50: percentile(&checks, 0.5),
        check_p99: percentile(&checks, 0.99),
        conv_p50: percentile(&conv, 0.5),
        conv_p99: percentile(&conv, 0.99),
        missed: shared.missed.load(Ordering::SeqCst),
        requests_per_cell_min: shared.idle_requests.load(Ordering::SeqCst) as f64 / cell_minutes,
        rss_mb,
        cpu_per_cell_min: cpu_idle / cell_minutes,
        threads,
        wakeups,
        post_p50: percentile(&posts, 0.5),
        post_max: posts.last().copied().unwrap_or(f64::NAN),
    };
    print_row(&row);
    row
}

fn print_header() {
    println!(
        "| database | cells | mode | errors | cheap check p50 / p99 ms | convergence p50 / p99 ms (missed) | requests per idle cell-minute | server RSS MB | server threads | server CPU s per idle cell-minute |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
}

fn print_row(r: &Row) {
    let checks = if r.mode == Mode::Poll {
        format!("{:.1} / {:.1}", r.check_p50, r.check_p99)
    } else {
        "—".into()
    };
    println!(
        "| {} | {} | {:?} | {} | {checks} | {:.0} / {:.0} ({}) | {:.1} | {:.0} | {} | {:.5} |",
        r.label,
        r.n,
        r.mode,
        r.errors,
        r.conv_p50,
        r.conv_p99,
        r.missed,
        r.requests_per_cell_min,
        r.rss_mb,
        r.threads,
        r.cpu_per_cell_min
    );
    for e in &r.error_samples {
        eprintln!("    error: {e}");
    }
}

/// Samples, p50, p99, max.
type Figure = (usize, f64, f64, f64);

fn figure(mut ms: Vec<f64>) -> Figure {
    ms.sort_by(f64::total_cmp);
    let max = ms.last().copied().unwrap_or(f64::NAN);
    (ms.len(), percentile(&ms, 0.5), percentile(&ms, 0.99), max)
}

/// Wake-ups per server from the change's POST, and the second server's from the moment the first
/// server's watchers woke for the same change (the change was committed and visible then).
fn wake_figures(wakes: &[(usize, Instant, Instant)]) -> Vec<(String, Figure)> {
    let servers = wakes.iter().map(|w| w.0 + 1).max().unwrap_or(0);
    let mut out: Vec<(String, Figure)> = (0..servers)
        .map(|s| {
            let ms = wakes
                .iter()
                .filter(|w| w.0 == s)
                .map(|(_, since, at)| at.duration_since(*since).as_secs_f64() * 1000.0)
                .collect();
            let name = ["a (the change's)", "b (learns by its version check)"]
                .get(s)
                .copied()
                .unwrap_or("?");
            (format!("{name}, from the POST"), figure(ms))
        })
        .collect();
    if servers > 1 {
        let visible = |since: Instant| {
            wakes
                .iter()
                .filter(|w| w.0 == 0 && w.1 == since)
                .map(|w| w.2)
                .min()
        };
        let ms = wakes
            .iter()
            .filter(|w| w.0 == 1)
            .filter_map(|(_, since, at)| {
                let first = visible(*since)?;
                Some(at.saturating_duration_since(first).as_secs_f64() * 1000.0)
            })
            .collect();
        out.push(("b, from the change's first wake-up on a".into(), figure(ms)));
    }
    out
}

/// The watch's wake-up alone, per server: from just before the change's POST to the first server
/// until an affected cell's watch answered (its fetch not included).
fn print_wakeups(rows: &[Row]) {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.mode == Mode::Watch).collect();
    if rows.is_empty() {
        return;
    }
    println!("\nwake-up: change posted through server a -> an affected cell's watch answered (fetch not included)");
    println!("| database | cells | server, measured | wake-ups | p50 ms | p99 ms | max ms | change POST p50 / max ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        for (what, (n, p50, p99, max)) in &r.wakeups {
            println!(
                "| {} | {} | {what} | {n} | {p50:.0} | {p99:.0} | {max:.0} | {:.0} / {:.0} |",
                r.label, r.n, r.post_p50, r.post_max
            );
        }
    }
}

// ---- hostile connections and idle memory ------------------------------------------------------

/// p99 of sequential internal reads over one kept-alive mTLS connection, for `d`.
fn probe_p99(certs: &Certs, base: &str, d: Duration) -> (f64, usize) {
    let agent = mtls(certs, Duration::from_secs(20));
    let url = format!(
        "{base}/networking/v1/internal/policies?id={}",
        (0..APPS_PER_CELL)
            .map(|k| app(1, k))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut samples = Vec::new();
    let end = Instant::now() + d;
    while Instant::now() < end {
        let started = Instant::now();
        match agent.get(&url).call() {
            Ok(mut r) => {
                let _ = body_string(&mut r, 1 << 20);
                samples.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Err(_) => samples.push(20_000.0),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.99), samples.len())
}

/// Keeps `count` hostile connections open until `stop`: silent TCP and a slow TLS handshake on
/// the internal port, a slow request head on the external port; each one the server closes is
/// opened again.
fn hostile(
    count: usize,
    internal: u16,
    external: u16,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let per_thread = 100;
    (0..count.div_ceil(per_thread))
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let kind = |i: usize| (t * per_thread + i) % 3;
                let open = |i: usize| -> Option<std::net::TcpStream> {
                    let port = if kind(i) == 2 { external } else { internal };
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
                    s.set_nonblocking(true).ok()?;
                    match kind(i) {
                        // A TLS record header announcing a 512-byte ClientHello, sent byte by byte.
                        1 => s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).ok()?,
                        2 => s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").ok()?,
                        _ => {}
                    }
                    Some(s)
                };
                let mut conns: Vec<Option<std::net::TcpStream>> =
                    (0..per_thread).map(open).collect();
                let mut tick = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_secs(1));
                    tick += 1;
                    for (i, c) in conns.iter_mut().enumerate() {
                        let alive = match c.as_mut() {
                            None => false,
                            Some(s) => {
                                let mut buf = [0u8; 512];
                                match s.read(&mut buf) {
                                    // Closed, or answered (a 408) and about to be closed.
                                    Ok(0) | Ok(_) => false,
                                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                                }
                            }
                        };
                        if !alive {
                            *c = open(i);
                            continue;
                        }
                        // One more byte or line every two seconds: progress, never completion.
                        if tick.is_multiple_of(2) {
                            if let Some(s) = c.as_mut() {
                                let _ = match kind(i) {
                                    1 => s.write_all(&[0x00]),
                                    2 => s.write_all(format!("x-{tick}: y\r\n").as_bytes()),
                                    _ => Ok(()),
                                };
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

fn hostile_connections() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), &POLICY_SERVER);
    let tokens = write_tokens_file(dir.path());
    let db = json!({"type": "sqlite", "connection_string": dir.path().join("policies.db")});
    let server = start_policy_server(dir.path(), &certs, &tokens, &db, "policy-server-hostile");
    let policies: Vec<(String, String, i64)> = (0..300)
        .map(|i| (app(i % 30, i % 10), app(1, i % 10), 2000 + i as i64))
        .collect();
    for b in policies.chunks(100) {
        post_policies(&server.external, b);
    }

    let probe = Duration::from_secs(8);
    let (base_p99, base_n) = probe_p99(&certs, &server.internal, probe);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = hostile(
        1000,
        server.internal_port,
        server.external_port,
        Arc::clone(&stop),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (hostile_p99, hostile_n) = probe_p99(&certs, &server.internal, probe);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    println!("\nhostile connections (internal API, sequential mTLS reads of 10 apps' policies)");
    println!("| | requests | p99 ms |");
    println!("|---|---|---|");
    println!("| no hostile connections | {base_n} | {base_p99:.1} |");
    println!("| 1,000 hostile connections (silent, slow TLS handshake, slow head) | {hostile_n} | {hostile_p99:.1} |");
    println!("| rise | | {:.1} |", hostile_p99 - base_p99);
}

/// Memory per idle connection: kept-alive mTLS connections after one request, and plain TCP. On a
/// server of its own: memory the allocator kept from the hostile part would hide the cost.
fn idle_memory() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), &POLICY_SERVER);
    let tokens = write_tokens_file(dir.path());
    let db = json!({"type": "sqlite", "connection_string": dir.path().join("policies.db")});
    let server = start_policy_server(dir.path(), &certs, &tokens, &db, "policy-server-memory");
    // Warm up: the workers, TLS config and database connections are not a connection's cost.
    let warm = mtls(&certs, Duration::from_secs(20));
    for _ in 0..50 {
        let _ = warm
            .get(format!("{}{LAST_UPDATED}", server.internal))
            .call();
    }
    std::thread::sleep(Duration::from_secs(1));
    let k = 2000;
    let fds_before = server.proc_.open_fds();
    let before = server.proc_.rss_mb();
    let agents: Vec<ureq::Agent> = (0..k)
        .map(|_| {
            let a = mtls(&certs, Duration::from_secs(20));
            // The body read to its end: only then does the agent keep the connection.
            if let Ok(mut resp) = a.get(format!("{}{LAST_UPDATED}", server.internal)).call() {
                let _ = resp.body_mut().read_to_string();
            }
            a
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let tls_held = server.proc_.open_fds().saturating_sub(fds_before);
    let tls_kb = (server.proc_.rss_mb() - before) * 1024.0 / tls_held.max(1) as f64;
    let fds_before = server.proc_.open_fds();
    let before = server.proc_.rss_mb();
    let plain: Vec<std::net::TcpStream> = (0..k)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", server.external_port)).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let plain_held = server.proc_.open_fds().saturating_sub(fds_before);
    let plain_kb = (server.proc_.rss_mb() - before) * 1024.0 / plain_held.max(1) as f64;
    println!("\nserver memory per idle connection ({k} opened; RSS delta over the connections the server holds)");
    println!("| kind | held by the server | KB per connection |");
    println!("|---|---|---|");
    println!("| mutual TLS, kept alive after a request | {tls_held} | {tls_kb:.2} |");
    println!("| plain TCP, nothing sent | {plain_held} | {plain_kb:.2} |");
    drop(agents);
    drop(plain);
}

/// `netman allow-access` → first successful connection, across cells in the lab.
fn lab_convergence() {
    use std::net::{SocketAddr, TcpStream};
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let lab = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_netman-lab"))
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let up = lab(&[
        "up",
        "--cells",
        "3",
        "--apps",
        "6",
        "--api-port",
        &api_port.to_string(),
    ]);
    if !up.status.success() {
        eprintln!("lab up failed: {}", String::from_utf8_lossy(&up.stderr));
        lab(&["down"]);
        return;
    }
    let token = String::from_utf8_lossy(&lab(&["token"]).stdout)
        .trim()
        .to_string();
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap())
            .unwrap();
    let containers: Vec<(String, u64, String, String)> = state["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["app"].as_str().unwrap().to_string(),
                c["cell"].as_u64().unwrap(),
                c["ip"].as_str().unwrap().to_string(),
                c["namespace"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let cli = |verb: &str, src: &str, dst: &str, port: u16| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_netman"));
        command
            .env("NETMAN_API", format!("http://127.0.0.1:{api_port}"))
            .env("NETMAN_TOKEN", &token)
            .args([
                verb,
                src,
                dst,
                "--protocol",
                "tcp",
                "--port",
                &port.to_string(),
            ]);
        output_ok(&mut command, verb);
    };
    let connects = |ns: &str, addr: SocketAddr| {
        netman::netns::run_in(&PathBuf::from(format!("/run/netns/{ns}")), move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        })
        .unwrap_or(false)
    };
    let pairs: Vec<_> = containers
        .iter()
        .flat_map(|a| containers.iter().map(move |b| (a, b)))
        .filter(|(a, b)| a.1 != b.1)
        .collect();
    let mut samples = Vec::new();
    let mut timeouts = 0;
    for i in 0..40 {
        let (src, dst) = pairs[i % pairs.len()];
        let port = [8080u16, 9000, 9001, 9002][i % 4];
        let addr: SocketAddr = format!("{}:{port}", dst.2).parse().unwrap();
        let started = Instant::now();
        cli("allow-access", &src.0, &dst.0, port);
        loop {
            if connects(&src.3, addr) {
                samples.push(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                timeouts += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        cli("remove-access", &src.0, &dst.0, port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while connects(&src.3, addr) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    lab(&["down"]);
    samples.sort_by(f64::total_cmp);
    println!(
        "
lab (3 cells, 6 apps, agents on the watch): `netman allow-access` -> first connection across cells"
    );
    println!("| samples | p50 ms | p99 ms | max ms | not converged in 10 s |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {:.0} | {:.0} | {:.0} | {timeouts} |",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or(f64::NAN)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    netman::tls::install_crypto_provider();
    netman::http::limits::reserve_connections(16_000);
    let sizes: Vec<usize> = std::env::var("NETMAN_FLEET_SIZES")
        .unwrap_or_else(|_| "100,500,1000,2000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let idle = Duration::from_secs(
        std::env::var("NETMAN_FLEET_IDLE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fleet simulator: {} cores, load average {}; each cell: {APPS_PER_CELL} apps, poll every {:?} or watch (wait {WATCH_WAIT} s), lease renewal every {:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        POLL_INTERVAL,
        RENEW_INTERVAL
    );
    print_header();
    let modes = std::env::var("NETMAN_FLEET_MODES").unwrap_or_else(|_| "poll,watch".into());
    let mut rows = Vec::new();
    for &n in &sizes {
        for mode in [Mode::Poll, Mode::Watch] {
            if modes.contains(&format!("{mode:?}").to_lowercase()) {
                rows.push(run("sqlite", n, mode, None, idle));
            }
        }
    }
    if let Ok(dbs) = std::env::var("NETMAN_BENCH_DATABASES") {
        for backend in dbs.split(',').map(str::trim).filter(|b| *b != "sqlite") {
            for &n in &sizes {
                // A fresh database per run; dropped (and removed) after it.
                let test_db = match backend {
                    "postgres" => db::postgres(),
                    "mysql" | "mariadb" => db::mariadb(),
                    other => {
                        eprintln!("unknown backend {other}");
                        break;
                    }
                };
                let label = format!("{backend}, 2 servers");
                rows.push(run(
                    &label,
                    n,
                    Mode::Watch,
                    Some(&test_db.config_json()),
                    idle,
                ));
            }
        }
    }
    print_wakeups(&rows);
    let skip = std::env::var("NETMAN_FLEET_SKIP").unwrap_or_default();
    if !skip.contains("hostile") {
        hostile_connections();
        idle_memory();
    }
    if !skip.contains("lab") {
        lab_convergence();
    }
}
