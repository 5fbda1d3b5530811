//! A blocking nfnetlink socket in the calling thread's network namespace, and the hand-off
//! that keeps one open after its process is gone.
//!
//! Why the hand-off: when the last reference to a netfilter netlink socket goes, the kernel
//! waits for nf_tables' pending destroy work (an RCU grace period, 12-45 ms measured here)
//! when a transaction was committed within the last grace period, and it waits holding the
//! namespace's nf_tables commit mutex. A short-lived process that has just committed (the
//! networker's `down`) would spend that wait in its own exit, and every nftables writer of the
//! cell (the policy agent) would wait behind it. Handed off, the socket is closed by a detached
//! process long after the destroy work has run.

use crate::os_error::OsError;
use netlink_sys::constants::NETLINK_NETFILTER;
use std::os::fd::AsRawFd;
use std::time::Duration;

pub struct Socket {
    inner: netlink_sys::Socket,
    buf: Vec<u8>,
}

impl Socket {
    pub fn open() -> Result<Socket, OsError> {
        let io = |what: &str, e: std::io::Error| OsError::io(what.to_string(), &e);
        let mut inner = netlink_sys::Socket::new(NETLINK_NETFILTER)
            .map_err(|e| io("opening an nfnetlink socket", e))?;
        inner
            .bind_auto()
            .map_err(|e| io("binding the nfnetlink socket", e))?;
        Ok(Socket {
            inner,
            buf: vec![0u8; 1 << 16],
        })
    }

    /// Sends the requests as one datagram (a batch must be one).
    pub fn send(&self, requests: &[Vec<u8>]) -> Result<(), OsError> {
        let datagram = requests.concat();
        self.inner
            .send(&datagram, 0)
            .map_err(|e| OsError::io("sending to nf_tables", &e))?;
        Ok(())
    }

    /// The next datagram of answers.
    pub fn recv(&mut self) -> Result<&[u8], OsError> {
        let n = self
            .inner
            .recv(&mut &mut self.buf[..], 0)
            .map_err(|e| OsError::io("reading from nf_tables", &e))?;
        if n == 0 {
            return Err(OsError {
                context: "reading from nf_tables".into(),
                errno: None,
                message: "the socket was closed".into(),
            });
        }
        Ok(&self.buf[..n])
    }

    /// Closes the socket without waiting: a detached process keeps it for `hold`, then closes
    /// it. When the process cannot be made, the socket is closed here (and may wait).
    pub fn hand_off(self, hold: Duration) {
        if let Err(e) = hold_in_detached_process(self.inner.as_raw_fd(), hold) {
            log::debug!("nfnetlink socket closed in place: {e}");
        }
    }
}

/// Forks twice: the grandchild keeps `fd` (and no other descriptor) for `hold`, then exits;
/// the child exits at once, so the grandchild belongs to init (or the subreaper), never to
/// this process, and nothing has to reap it here.
fn hold_in_detached_process(fd: i32, hold: Duration) -> Result<(), OsError> {
    let ts = libc::timespec {
        tv_sec: hold.as_secs() as libc::time_t,
        tv_nsec: hold.subsec_nanos() as libc::c_long,
    };
    // SAFETY: between fork and _exit the children call only async-signal-safe functions (fork,
    // close_range, nanosleep, _exit) on values prepared before the fork; this process may have
    // other threads.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(OsError::io(
            "forking the nfnetlink socket's holder",
            &std::io::Error::last_os_error(),
        ));
    }
    if child == 0 {
        unsafe {
            if libc::fork() != 0 {
                libc::_exit(0);
            }
            let fd = fd as libc::c_uint;
            if fd > 0 {
                libc::syscall(libc::SYS_close_range, 0 as libc::c_uint, fd - 1, 0);
            }
            libc::syscall(libc::SYS_close_range, fd + 1, libc::c_uint::MAX, 0);
            libc::nanosleep(&ts, std::ptr::null_mut());
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above only.
    let waited = unsafe { libc::waitpid(child, &mut status, 0) };
    if waited != child {
        return Err(OsError::io(
            "waiting for the nfnetlink socket's holder",
            &std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn socket_inode(fd: i32, pid: &str) -> Option<String> {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// Processes other than this one that hold `link` (a `socket:[inode]`), with their open
    /// descriptors.
    fn holders(link: &str) -> Vec<(String, Vec<String>)> {
        let me = std::process::id().to_string();
        let mut out = Vec::new();
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            let pid = p.file_name().to_string_lossy().into_owned();
            if !pid.chars().all(|c| c.is_ascii_digit()) || pid == me {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            let links: Vec<String> = fds
                .flatten()
                .filter_map(|f| {
                    std::fs::read_link(f.path())
                        .ok()
                        .map(|l| l.to_string_lossy().into_owned())
                })
                .collect();
            if links.iter().any(|l| l == link) {
                out.push((pid, links));
            }
        }
        out
    }

    fn parent_of(pid: &str) -> String {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(1).unwrap().to_string()
    }

    #[test]
    fn a_handed_off_socket_is_held_by_a_detached_process_with_nothing_else_open() {
        let socket = Socket::open().unwrap();
        let fd = socket.inner.as_raw_fd();
        let link = socket_inode(fd, "self").unwrap();
        // A descriptor the holder must not keep (a garden pipe, say).
        let (_read, _write) = nix::unistd::pipe().unwrap();
        socket.hand_off(Duration::from_secs(60));
        assert!(socket_inode(fd, "self").as_deref() != Some(link.as_str()));
        // The holder closes the other descriptors just after it starts.
        let mut held = holders(&link);
        for _ in 0..100 {
            if held.len() == 1 && held[0].1.len() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            held = holders(&link);
        }
        assert_eq!(held.len(), 1, "one holder of {link}: {held:?}");
        let (pid, links) = &held[0];
        assert_eq!(
            links,
            &vec![link.clone()],
            "the holder keeps only the socket"
        );
        assert_ne!(parent_of(pid), std::process::id().to_string());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
}
