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
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// How long an answer may take before the request counts as failed.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Socket {
    inner: netlink_sys::Socket,
    buf: Vec<u8>,
    /// The send buffer asked for so far (0: the system's default).
    send_buffer: usize,
}

/// Datagrams up to this size fit the default send buffer.
const DEFAULT_SEND: usize = 128 << 10;

impl Socket {
    pub fn open() -> Result<Socket, OsError> {
        let io = |what: &str, e: std::io::Error| OsError::io(what.to_string(), &e);
        let mut inner = netlink_sys::Socket::new(NETLINK_NETFILTER)
            .map_err(|e| io("opening an nfnetlink socket", e))?;
        inner
            .bind_auto()
            .map_err(|e| io("binding the nfnetlink socket", e))?;
        // An answer that never comes is an error, not a networker stuck holding the lock.
        let timeout = TimeVal::new(RECEIVE_TIMEOUT.as_secs() as i64, 0);
        setsockopt(&inner, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| OsError::errno("setting the nfnetlink socket's receive timeout", e))?;
        // An error answer then carries the refused message's header only, not the whole message
        // (an element message is up to 64 KiB, the size of the receive buffer).
        if let Err(e) = inner.set_cap_ack(true) {
            log::debug!("nfnetlink: errors will echo whole messages: {e}");
        }
        Ok(Socket {
            inner,
            buf: vec![0u8; 1 << 16],
            send_buffer: 0,
        })
    }

    /// Sends the requests as one datagram (a batch must be one).
    pub fn send(&mut self, requests: &[Vec<u8>]) -> Result<(), OsError> {
        let datagram = requests.concat();
        if datagram.len() > DEFAULT_SEND.max(self.send_buffer) {
            self.grow_send_buffer(datagram.len())?;
        }
        self.inner
            .send(&datagram, 0)
            .map_err(|e| OsError::io("sending to nf_tables", &e))?;
        Ok(())
    }

    /// A datagram larger than the send buffer is refused whole (EMSGSIZE). SO_SNDBUFFORCE
    /// (CAP_NET_ADMIN, which every nf_tables writer has) passes `net.core.wmem_max`.
    fn grow_send_buffer(&mut self, len: usize) -> Result<(), OsError> {
        let size = len + (64 << 10);
        let context = format!("growing the nfnetlink socket's send buffer to {size} bytes");
        if let Err(e) = setsockopt(&self.inner, sockopt::SndBufForce, &size) {
            setsockopt(&self.inner, sockopt::SndBuf, &size)
                .map_err(|_| OsError::errno(context.clone(), e))?;
        }
        // SO_SNDBUF alone is capped at net.core.wmem_max without saying so.
        let got = getsockopt(&self.inner, sockopt::SndBuf)
            .map_err(|e| OsError::errno(context.clone(), e))?;
        if got < len {
            return Err(OsError {
                context,
                errno: None,
                message: format!("the buffer is {got} bytes"),
            });
        }
        self.send_buffer = len;
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

    /// Drops whatever answers are waiting (left by an exchange that ended early), so the next
    /// exchange reads only its own.
    pub fn drain(&mut self) {
        loop {
            match self.inner.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(_) => {}
                // Answers were lost to a full buffer; more may still be queued.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(_) => break,
            }
        }
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
    // Where closing one by one stops, when close_range is missing (before Linux 5.9) or refused.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct given.
    let open_max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as i32
    } else {
        1 << 16
    };
    // SAFETY: between fork and _exit the children make only system calls (fork, close_range,
    // close, nanosleep, _exit) on values prepared before the fork, as a process with other
    // threads must; no allocation, no lock.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(OsError::io(
            "forking the nfnetlink socket's holder",
            &std::io::Error::last_os_error(),
        ));
    }
    if child == 0 {
        unsafe {
            match libc::fork() {
                0 => {}
                n if n < 0 => libc::_exit(1),
                _ => libc::_exit(0),
            }
            let below = fd == 0
                || libc::syscall(
                    libc::SYS_close_range,
                    0 as libc::c_uint,
                    fd as libc::c_uint - 1,
                    0,
                ) == 0;
            let above = libc::syscall(
                libc::SYS_close_range,
                fd as libc::c_uint + 1,
                libc::c_uint::MAX,
                0,
            ) == 0;
            if !(below && above) {
                for other in (0..open_max).filter(|other| *other != fd) {
                    libc::close(other);
                }
            }
            libc::nanosleep(&ts, std::ptr::null_mut());
            libc::_exit(0);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for the child forked above only.
        let waited = unsafe { libc::waitpid(child, &mut status, 0) };
        if waited == child {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(OsError::io("waiting for the nfnetlink socket's holder", &e));
        }
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(OsError {
            context: "starting the nfnetlink socket's holder".into(),
            errno: None,
            message: format!("its parent ended with status {status:#x}"),
        });
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
        // Killed when the test ends, also when an assertion fails.
        struct Kill(Vec<i32>);
        impl Drop for Kill {
            fn drop(&mut self) {
                for pid in &self.0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _kill = Kill(held.iter().filter_map(|(p, _)| p.parse().ok()).collect());
        assert_eq!(held.len(), 1, "one holder of {link}: {held:?}");
        let (pid, links) = &held[0];
        assert_eq!(
            links,
            &vec![link.clone()],
            "the holder keeps only the socket"
        );
        assert_ne!(parent_of(pid), std::process::id().to_string());
    }
}
