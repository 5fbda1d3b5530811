//! A TCP forwarder from a listener in this process's namespace (the root namespace's loopback)
//! to an address inside a lab namespace, so `curl` and the `netman` CLI on the machine reach the
//! lab's policy server without any link or route being added to the root namespace.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

pub fn serve(listen: SocketAddr, netns: &Path, target: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(listen).map_err(|e| format!("listen on {listen}: {e}"))?;
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let netns = netns.to_path_buf();
        std::thread::spawn(move || {
            // The upstream socket is created by a thread inside the lab namespace.
            let upstream = crate::netns::run_in(&netns, move || {
                TcpStream::connect_timeout(&target, Duration::from_secs(5))
            });
            match upstream {
                Ok(Ok(upstream)) => pipe(client, upstream),
                Ok(Err(e)) => log::warn!("connecting to {target}: {e}"),
                Err(e) => log::warn!("entering {}: {e}", netns.display()),
            }
        });
    }
    Ok(())
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || copy(a2, b2));
    copy(b, a);
    let _ = t.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _: io::Result<()> = Ok(());
}
