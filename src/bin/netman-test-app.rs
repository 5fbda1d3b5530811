//! The lab's example apps, in the spirit of the original's cats-and-dogs example, plus a probe:
//! - `frontend`: serves a page and proxies `GET /proxy/<ip>:<port>` to any address;
//! - `backend`: answers HTTP on TCP ports and echoes on UDP ports, naming itself;
//! - `probe tcp|udp IP:PORT`: exits 0 when the address answers (for tests and the lab).

use clap::{Parser, Subcommand};
use netman::http::{Request, Response, Server, ServerOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "netman-test-app", version, about = "netman lab example apps")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a page and proxy GET /proxy/<ip>:<port> to another app.
    Frontend {
        #[arg(long, default_value = "frontend")]
        name: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Answer HTTP on TCP ports and echo datagrams on UDP ports.
    Backend {
        #[arg(long, default_value = "backend")]
        name: String,
        #[arg(long, value_delimiter = ',', default_value = "8080")]
        tcp_ports: Vec<u16>,
        #[arg(long, value_delimiter = ',', default_value = "9003")]
        udp_ports: Vec<u16>,
    },
    /// Exit 0 if ADDR answers over the protocol within the timeout, 1 otherwise.
    Probe {
        #[arg(value_parser = ["tcp", "udp"])]
        protocol: String,
        addr: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Frontend { name, port } => {
            let server = Server::start(
                &format!("0.0.0.0:{port}"),
                ServerOptions::default(),
                move |req: &Request| frontend(&name, req),
            )
            .unwrap_or_else(|e| fail(e));
            park(server);
        }
        Command::Backend {
            name,
            tcp_ports,
            udp_ports,
        } => {
            let mut servers = Vec::new();
            for port in tcp_ports {
                let name = name.clone();
                servers.push(
                    Server::start(
                        &format!("0.0.0.0:{port}"),
                        ServerOptions::default(),
                        move |_: &Request| {
                            Response::json(
                                200,
                                &serde_json::json!({"application_name": name, "port": port}),
                            )
                        },
                    )
                    .unwrap_or_else(|e| fail(e)),
                );
            }
            for port in udp_ports {
                let socket = UdpSocket::bind(("0.0.0.0", port)).unwrap_or_else(|e| fail(e));
                let name = name.clone();
                std::thread::spawn(move || udp_echo(&socket, &name));
            }
            park(servers);
        }
        Command::Probe {
            protocol,
            addr,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let result = match protocol.as_str() {
                "tcp" => probe_tcp(addr, timeout),
                _ => probe_udp(addr, timeout),
            };
            match result {
                Ok(answer) => println!("{answer}"),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1)
                }
            }
        }
    }
}

fn frontend(name: &str, req: &Request) -> Response {
    if let Some(target) = req.path.strip_prefix("/proxy/") {
        let addr: SocketAddr = match target.trim_end_matches('/').parse() {
            Ok(a) => a,
            Err(_) => return Response::text(400, format!("bad address {target:?}\n")),
        };
        return match probe_tcp(addr, Duration::from_secs(2)) {
            Ok(body) => Response::text(200, body),
            Err(e) => Response::text(502, format!("request failed: {e}\n")),
        };
    }
    Response::new(200)
        .with_header("content-type", "text/html")
        .with_body(
            format!(
                "<html><body><h1>{name}</h1><p>Try <code>/proxy/&lt;ip&gt;:&lt;port&gt;</code> to reach another app.</p></body></html>\n"
            )
            .into_bytes(),
        )
}

/// One HTTP GET / over TCP; the answer's body.
fn probe_tcp(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    if !answer.starts_with("HTTP/1.1 2") {
        return Err(format!(
            "{addr} answered {}",
            answer.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_string())
}

fn probe_udp(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    socket.set_read_timeout(Some(timeout)).ok();
    socket
        .send_to(b"ping", addr)
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = [0u8; 1500];
    let (n, _) = socket
        .recv_from(&mut buf)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn udp_echo(socket: &UdpSocket, name: &str) {
    let mut buf = [0u8; 1500];
    loop {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
            let _ = socket.send_to(
                serde_json::json!({"application_name": name, "port": port})
                    .to_string()
                    .as_bytes(),
                from,
            );
        }
    }
}

fn park<T>(_keep: T) -> ! {
    loop {
        std::thread::park();
    }
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("netman-test-app: {e}");
    std::process::exit(1)
}
