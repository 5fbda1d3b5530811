//! What each `netman-lab` subcommand does (the command line is [`super::cli`]).

use super::components::{app_names, Lab};
use super::{process, topology, State};
use std::path::Path;
use std::time::Duration;

/// `up`: cleans up a previous lab, builds the underlay, control plane, cells and example apps,
/// and prints what runs where. A failure removes what was built.
pub fn up(dir: &Path, cells: usize, apps: usize, api_port: u16) -> Result<(), String> {
    super::require_root()?;
    if apps == 0 || apps > 100 {
        return Err(format!("--apps must be in 1-100, got {apps}"));
    }
    for p in super::down(dir) {
        eprintln!("netman-lab: cleaning up: {p}");
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut lab = Lab::new(
        dir,
        State {
            cells,
            ..State::default()
        },
    )?;
    if let Err(e) = build(&mut lab, cells, apps, api_port) {
        eprintln!("netman-lab: up failed, removing what was built: {e}");
        super::down(dir);
        return Err("up failed".into());
    }
    print_summary(&lab.state, dir);
    Ok(())
}

fn build(lab: &mut Lab, cells: usize, apps: usize, api_port: u16) -> Result<(), String> {
    println!("building the underlay: {cells} cells...");
    topology::create(cells)?;
    lab.write_certs()?;
    println!("starting the policy server and the overlay controller...");
    lab.start_policy_server()?;
    lab.create_security_group()?;
    lab.start_forwarder(api_port)?;
    lab.start_overlay_controller()?;
    for cell in 1..=cells {
        println!("starting cell {cell}: overlay daemon, policy agent, netmon, netman-dns...");
        lab.start_cell(cell)?;
    }
    lab.wait_for_overlay(Duration::from_secs(30))?;
    for (i, app) in app_names(apps).iter().enumerate() {
        let cell = i % cells + 1;
        lab.create_container(app, 0, cell)?;
    }
    Ok(())
}

fn print_summary(state: &State, dir: &Path) {
    println!(
        "\nnetman lab is up ({} cells). Logs and configs: {}\n",
        state.cells,
        dir.display()
    );
    println!("{:<24} {:<22} pid", "process", "namespace");
    for p in &state.processes {
        println!("{:<24} {:<22} {}", p.name, p.namespace, p.pid);
    }
    println!(
        "\n{:<14} {:<6} {:<16} mapped ports (cell port -> container port)",
        "container", "cell", "ip"
    );
    for c in &state.containers {
        let ports: Vec<String> = c
            .mapped_ports
            .iter()
            .map(|(h, p)| format!("{h}->{p}"))
            .collect();
        println!(
            "{:<14} {:<6} {:<16} {}",
            format!("{}/{}", c.app, c.index),
            c.cell,
            c.ip,
            ports.join(" ")
        );
    }
    let backend = state.containers.iter().find(|c| c.app == "backend");
    let api = format!("http://127.0.0.1:{}", state.api_port);
    println!("\nPolicy server API: {api}  (admin token: netman-lab token)");
    if let Some(b) = backend {
        println!(
            "\nTry:
  export NETMAN_API={api} NETMAN_TOKEN=$(netman-lab token)
  netman map-route backend apps.internal --hostname backend
  netman-lab exec frontend -- getent hosts backend.apps.internal     # {ip}: the name resolves
  netman-lab exec frontend -- curl -sS http://backend.apps.internal:8080   # refused: no policy
  netman allow-access frontend backend --protocol tcp --port 8080
  netman-lab exec frontend -- curl -sS http://backend.apps.internal:8080   # answers
  netman remove-access frontend backend --protocol tcp --port 8080
  netman-lab exec backend -- busybox ping -c1 -W1 203.0.113.20                # refused: no security group
  curl -s -H \"Authorization: Bearer $NETMAN_TOKEN\" $NETMAN_API/networking/v1/external/security_groups \\
    -d '{{\"name\":\"ping\",\"rules\":[{{\"protocol\":\"icmp\",\"destination\":\"203.0.113.20\",\"type\":8,\"code\":0}}],\"relationships\":{{\"running_spaces\":{{\"data\":[{{\"guid\":\"lab-space\"}}]}}}}}}'
  netman-lab exec backend -- busybox ping -c1 -W1 203.0.113.20                # answers within a second
  netman-lab down",
            ip = b.ip
        );
    }
}

/// `status`: every process (running or exited) and container.
pub fn status(dir: &Path) -> Result<(), String> {
    let state = State::load(dir)?;
    println!("{:<24} {:<22} {:<8} state", "process", "namespace", "pid");
    for p in &state.processes {
        let alive = if p.alive() { "running" } else { "EXITED" };
        println!("{:<24} {:<22} {:<8} {alive}", p.name, p.namespace, p.pid);
    }
    println!("\n{:<14} {:<6} {:<16}", "container", "cell", "ip");
    for c in &state.containers {
        println!(
            "{:<14} {:<6} {:<16}",
            format!("{}/{}", c.app, c.index),
            c.cell,
            c.ip
        );
    }
    Ok(())
}

/// `down`: removes everything of the lab; problems are printed, not fatal.
pub fn down(dir: &Path) -> Result<(), String> {
    super::require_root()?;
    for p in super::down(dir) {
        eprintln!("netman-lab: {p}");
    }
    println!("lab removed");
    Ok(())
}

/// `exec`: runs `command` in the container's namespace and exits with its status.
pub fn exec(dir: &Path, container: &str, command: &[String]) -> Result<(), String> {
    super::require_root()?;
    let state = State::load(dir)?;
    let c = state.container(container)?;
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &c.namespace])
        .args(command)
        .status()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// `token`: the admin token of the lab's policy server.
pub fn token(dir: &Path) -> Result<(), String> {
    State::load(dir).map(|s| println!("{}", s.admin_token))
}

pub enum Action {
    Kill,
    Start,
    Restart,
}

/// `kill`, `start`, `restart` of one lab process by name.
pub fn control(dir: &Path, name: &str, action: Action) -> Result<(), String> {
    super::require_root()?;
    let mut state = State::load(dir)?;
    let index = state
        .processes
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = state.processes.iter().map(|p| p.name.as_str()).collect();
            format!("no lab process {name:?}; there are {}", names.join(", "))
        })?;
    let current = state.processes[index].clone();
    match action {
        Action::Kill => {
            current.kill(nix::sys::signal::Signal::SIGKILL);
            println!("killed {name} (pid {})", current.pid);
            return Ok(());
        }
        Action::Restart => current.stop(Duration::from_secs(5)),
        Action::Start if current.alive() => {
            return Err(format!("{name} is running (pid {})", current.pid))
        }
        Action::Start => {}
    }
    let restarted = process::respawn(&current)?;
    println!("started {name} (pid {})", restarted.pid);
    state.processes[index] = restarted;
    state.save(dir)
}

/// `remove-cell`: takes a cell out as an operator would.
pub fn remove_cell(dir: &Path, cell: usize) -> Result<(), String> {
    super::require_root()?;
    let state = State::load(dir)?;
    if cell == 0 || cell > state.cells {
        return Err(format!("the lab has cells 1-{}", state.cells));
    }
    Lab::new(dir, state)?.remove_cell(cell)?;
    println!("cell {cell} removed");
    Ok(())
}
