//! IPAM inside the cell's lease, kept on disk (one file per allocated IP naming the container
//! and interface, like host-local), every change under an exclusive `flock` of the directory's
//! lock file so concurrent plugin runs never hand out one IP twice.

use crate::cell::files::lock_file;
use crate::os_error::OsError;
use ipnet::Ipv4Net;
use nix::fcntl::Flock;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// One allocation on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamError {
    /// Every usable address of the subnet is allocated.
    Exhausted(Ipv4Net),
    Io(OsError),
}

impl std::fmt::Display for IpamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpamError::Exhausted(s) => write!(f, "no IP addresses available in {s}"),
            IpamError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for IpamError {}

/// Allocations of one network (`<data_dir>/ipam/<network name>`).
pub struct Ipam {
    dir: PathBuf,
}

const LAST: &str = "last_reserved_ip";
const LOCK: &str = "lock";

fn io(context: &str, e: std::io::Error) -> IpamError {
    IpamError::Io(OsError::io(context, &e))
}

impl Ipam {
    pub fn new(data_dir: &Path, network_name: &str) -> Ipam {
        Ipam {
            dir: data_dir.join("ipam").join(network_name),
        }
    }

    fn lock(&self) -> Result<Flock<File>, IpamError> {
        lock_file(&self.dir.join(LOCK)).map_err(IpamError::Io)
    }

    fn read_all(&self) -> Result<Vec<Allocation>, IpamError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&format!("reading {}", self.dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(ip) = name.parse::<Ipv4Addr>() else {
                continue;
            };
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let mut lines = text.lines();
            out.push(Allocation {
                ip,
                container_id: lines.next().unwrap_or_default().trim().to_string(),
                ifname: lines.next().unwrap_or_default().trim().to_string(),
            });
        }
        out.sort_by_key(|a| a.ip);
        Ok(out)
    }

    /// Every allocation (under the lock).
    pub fn allocations(&self) -> Result<Vec<Allocation>, IpamError> {
        let _lock = self.lock()?;
        self.read_all()
    }

    /// Allocates an IP of `subnet` for (container, ifname): the existing one when that pair
    /// already holds an address in the subnet (then the flag is false), else the next free one
    /// after the last handed out (flag true).
    /// Usable addresses exclude the network and broadcast addresses.
    pub fn allocate(
        &self,
        subnet: Ipv4Net,
        container_id: &str,
        ifname: &str,
    ) -> Result<(Ipv4Addr, bool), IpamError> {
        let _lock = self.lock()?;
        let current = self.read_all()?;
        if let Some(a) = current.iter().find(|a| {
            a.container_id == container_id && a.ifname == ifname && subnet.contains(&a.ip)
        }) {
            return Ok((a.ip, false));
        }
        let taken: std::collections::HashSet<Ipv4Addr> = current.iter().map(|a| a.ip).collect();
        let first = u32::from(subnet.network()) + 1;
        let last = u32::from(subnet.broadcast()).saturating_sub(1);
        if subnet.prefix_len() >= 31 || last < first {
            return Err(IpamError::Exhausted(subnet));
        }
        let size = last - first + 1;
        let start = fs::read_to_string(self.dir.join(LAST))
            .ok()
            .and_then(|t| t.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|v| (first..=last).contains(v))
            .map(|v| v - first + 1)
            .unwrap_or(0);
        for i in 0..size {
            let candidate = Ipv4Addr::from(first + (start + i) % size);
            if taken.contains(&candidate) {
                continue;
            }
            let path = self.dir.join(candidate.to_string());
            fs::write(&path, format!("{container_id}\n{ifname}\n"))
                .map_err(|e| io(&format!("writing {}", path.display()), e))?;
            fs::write(self.dir.join(LAST), candidate.to_string())
                .map_err(|e| io("writing last reserved IP", e))?;
            return Ok((candidate, true));
        }
        Err(IpamError::Exhausted(subnet))
    }

    /// Releases whatever (container, ifname) holds; none is fine. Works without knowing the
    /// subnet (so DEL works while the daemon is down or after the lease changed).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        self.release_locked(|a| a.container_id == container_id && a.ifname == ifname)
    }

    /// Releases every allocation for which `drop` is true (GC).
    pub fn release_where(
        &self,
        drop: impl Fn(&Allocation) -> bool,
    ) -> Result<Vec<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        self.release_locked(drop)
    }

    fn release_locked(
        &self,
        drop: impl Fn(&Allocation) -> bool,
    ) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut released = Vec::new();
        for a in self.read_all()? {
            if drop(&a) {
                let path = self.dir.join(a.ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => released.push(a.ip),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&format!("removing {}", path.display()), e)),
                }
            }
        }
        Ok(released)
    }
}

/// True if any network under `<data_dir>/ipam` holds an allocation: containers exist.
pub fn any_allocations(data_dir: &Path) -> bool {
    let Ok(networks) = fs::read_dir(data_dir.join("ipam")) else {
        return false;
    };
    networks.flatten().any(|n| {
        fs::read_dir(n.path())
            .map(|files| {
                files
                    .flatten()
                    .any(|f| f.file_name().to_string_lossy().parse::<Ipv4Addr>().is_ok())
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_release_exhaust_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), "net");
        let subnet: Ipv4Net = "10.255.5.0/29".parse().unwrap(); // .1 - .6
        assert!(!any_allocations(dir.path()));
        let (a, new) = ipam.allocate(subnet, "c1", "eth0").unwrap();
        assert!(new);
        assert_eq!(a, "10.255.5.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            ipam.allocate(subnet, "c1", "eth0").unwrap(),
            (a, false),
            "same pair, same IP"
        );
        assert!(any_allocations(dir.path()));
        let mut all = vec![a];
        for i in 2..=6 {
            all.push(ipam.allocate(subnet, &format!("c{i}"), "eth0").unwrap().0);
        }
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 6);
        assert_eq!(
            ipam.allocate(subnet, "c7", "eth0").unwrap_err(),
            IpamError::Exhausted(subnet)
        );
        assert_eq!(ipam.release("c3", "eth0").unwrap(), vec![all[2]]);
        assert!(ipam.release("c3", "eth0").unwrap().is_empty());
        assert_eq!(ipam.allocate(subnet, "c7", "eth0").unwrap().0, all[2]);
        let gone = ipam.release_where(|a| a.container_id != "c1").unwrap();
        assert_eq!(gone.len(), 5);
        assert_eq!(ipam.allocations().unwrap().len(), 1);
    }

    #[test]
    fn concurrent_allocations_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let subnet: Ipv4Net = "10.255.6.0/24".parse().unwrap();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let ipam = Ipam::new(&path, "net");
                    (0..20)
                        .map(|i| {
                            ipam.allocate(subnet, &format!("t{t}-{i}"), "eth0")
                                .unwrap()
                                .0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Ipv4Addr> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 160);
    }
}
