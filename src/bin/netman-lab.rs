//! netman-lab: the whole of netman on one machine, in network namespaces. Needs root.

use clap::{Parser, Subcommand};
use netman::lab::components::{app_names, netns_path, Lab};
use netman::lab::{self, topology, State};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "netman-lab",
    version,
    about = "Run the whole of netman on one machine, in network namespaces (needs root)"
)]
struct Cli {
    /// Directory for configs, certificates, databases and logs.
    #[arg(long, global = true, default_value_os_t = lab::default_dir())]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab: underlay, control plane, cells, example apps. Cleans up a previous lab first.
    Up {
        /// Number of cells.
        #[arg(long, default_value_t = 2)]
        cells: usize,
        /// Number of example apps: `frontend`, `backend`, `backend-2`, ...
        #[arg(long, default_value_t = 2)]
        apps: usize,
        /// Port on this machine's loopback that reaches the policy server's external API.
        #[arg(long, default_value_t = 4002)]
        api_port: u16,
    },
    /// Show what runs where.
    Status,
    /// Remove every process, namespace, link, rule and file of the lab.
    Down,
    /// Run a command inside an app's container: `netman-lab exec backend/0 -- ip addr`.
    Exec {
        /// APP or APP/INDEX
        container: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Print the lab's admin token (for `netman --token` or curl).
    Token,
    /// Kill a lab process with SIGKILL (fault drills): `netman-lab kill policy-server`.
    Kill { process: String },
    /// Start a stopped or killed lab process again with its recorded command.
    Start { process: String },
    /// Stop (SIGTERM) and start a lab process.
    Restart { process: String },
    /// Take a cell out: destroy its containers, stop its processes, release its lease.
    RemoveCell { cell: usize },
    /// (internal) Forward a loopback port of this machine into a lab namespace.
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        netns: String,
        #[arg(long)]
        target: SocketAddr,
    },
}

fn main() {
    let cli = Cli::parse();
    netman::logging::init(
        "netman-lab",
        netman::logging::LogFormat::Text,
        log::LevelFilter::Warn,
    );
    let result = match cli.command {
        Command::Up {
            cells,
            apps,
            api_port,
        } => up(&cli.dir, cells, apps, api_port),
        Command::Status => status(&cli.dir),
        Command::Down => lab::require_root().map(|()| {
            for p in lab::down(&cli.dir) {
                eprintln!("netman-lab: {p}");
            }
            println!("lab removed");
        }),
        Command::Exec { container, command } => exec(&cli.dir, &container, &command),
        Command::Token => State::load(&cli.dir).map(|s| println!("{}", s.admin_token)),
        Command::Kill { process } => control(&cli.dir, &process, Action::Kill),
        Command::Start { process } => control(&cli.dir, &process, Action::Start),
        Command::Restart { process } => control(&cli.dir, &process, Action::Restart),
        Command::RemoveCell { cell } => remove_cell(&cli.dir, cell),
        Command::Forward {
            listen,
            netns,
            target,
        } => lab::forward::serve(listen, &netns_path(&netns), target),
    };
    if let Err(e) = result {
        eprintln!("netman-lab: {e}");
        std::process::exit(1);
    }
}

fn up(dir: &std::path::Path, cells: usize, apps: usize, api_port: u16) -> Result<(), String> {
    lab::require_root()?;
    if apps == 0 || apps > 100 {
        return Err(format!("--apps must be in 1-100, got {apps}"));
    }
    for p in lab::down(dir) {
        eprintln!("netman-lab: cleaning up: {p}");
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .unwrap()
        .to_path_buf();
    let mut lab = Lab {
        dir: dir.to_path_buf(),
        bin,
        state: State {
            cells,
            ..State::default()
        },
    };
    let result = (|| {
        println!("building the underlay: {cells} cells...");
        topology::create(cells)?;
        lab.write_certs()?;
        println!("starting the policy server and the overlay controller...");
        lab.start_policy_server()?;
        lab.start_forwarder(api_port)?;
        lab.start_overlay_controller()?;
        for cell in 1..=cells {
            println!("starting cell {cell}: overlay daemon, policy agent, netmon...");
            lab.start_cell(cell)?;
        }
        lab.wait_for_overlay(std::time::Duration::from_secs(30))?;
        for (i, app) in app_names(apps).iter().enumerate() {
            let cell = i % cells + 1;
            lab.create_container(app, 0, cell)?;
        }
        Ok::<(), String>(())
    })();
    if let Err(e) = result {
        eprintln!("netman-lab: up failed, removing what was built: {e}");
        lab::down(dir);
        return Err("up failed".into());
    }
    print_summary(&lab.state, dir);
    Ok(())
}

fn print_summary(state: &State, dir: &std::path::Path) {
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
  netman-lab exec frontend -- curl -s http://127.0.0.1:8080/proxy/{ip}:8080     # refused: no policy
  export NETMAN_API={api} NETMAN_TOKEN=$(netman-lab token)
  netman allow-access frontend backend --protocol tcp --port 8080
  netman-lab exec frontend -- curl -s http://127.0.0.1:8080/proxy/{ip}:8080     # answers
  netman remove-access frontend backend --protocol tcp --port 8080
  netman-lab down",
            ip = b.ip
        );
    }
}

fn status(dir: &std::path::Path) -> Result<(), String> {
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

fn exec(dir: &std::path::Path, container: &str, command: &[String]) -> Result<(), String> {
    lab::require_root()?;
    let state = State::load(dir)?;
    let c = state.container(container)?;
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &c.namespace])
        .args(command)
        .status()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    std::process::exit(status.code().unwrap_or(1));
}

enum Action {
    Kill,
    Start,
    Restart,
}

fn control(dir: &std::path::Path, name: &str, action: Action) -> Result<(), String> {
    lab::require_root()?;
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
        Action::Restart => current.stop(std::time::Duration::from_secs(5)),
        Action::Start if current.alive() => {
            return Err(format!("{name} is running (pid {})", current.pid))
        }
        Action::Start => {}
    }
    let restarted = lab::process::respawn(&current)?;
    println!("started {name} (pid {})", restarted.pid);
    state.processes[index] = restarted;
    state.save(dir)
}

fn remove_cell(dir: &std::path::Path, cell: usize) -> Result<(), String> {
    lab::require_root()?;
    let state = State::load(dir)?;
    if cell == 0 || cell > state.cells {
        return Err(format!("the lab has cells 1-{}", state.cells));
    }
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .unwrap()
        .to_path_buf();
    let mut lab = Lab {
        dir: dir.to_path_buf(),
        bin,
        state,
    };
    lab.remove_cell(cell)?;
    println!("cell {cell} removed");
    Ok(())
}
