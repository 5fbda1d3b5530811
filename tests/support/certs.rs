//! Certificates for the mutual-TLS APIs tests start: a CA, a server and a client certificate it
//! issued, and a client certificate of another CA (which every server must refuse).

use netman::pki::{Ca, Usage};
use std::path::{Path, PathBuf};

/// Who the certificates name.
pub struct Names<'a> {
    pub ca: &'a str,
    /// The server certificate's CN and its SANs.
    pub server: &'a str,
    pub server_sans: &'a [&'a str],
    /// The client certificate's CN.
    pub client: &'a str,
}

/// The policy server's internal API and the agents that call it.
pub const POLICY_SERVER: Names = Names {
    ca: "netman test CA",
    server: "policy-server.service.cf.internal",
    server_sans: &[
        "policy-server.service.cf.internal",
        "localhost",
        "127.0.0.1",
    ],
    client: "vxlan-policy-agent",
};

/// The overlay controller's lease API and the overlay daemons that call it.
pub const OVERLAY: Names = Names {
    ca: "overlay test CA",
    server: "overlay-controller",
    server_sans: &[super::overlay::CONTROLLER_IP, "127.0.0.1"],
    client: "overlay-daemon",
};

/// Files: (certificate, key) pairs.
pub struct Certs {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
    /// Issued by another CA (written under `<dir>/other/` with that CA's `other_ca`).
    pub other_client: (PathBuf, PathBuf),
    pub other_ca: PathBuf,
}

pub fn certs(dir: &Path, names: &Names) -> Certs {
    let ca = Ca::new(names.ca).unwrap();
    let server = ca
        .write_issued(
            dir,
            "server",
            names.server,
            names.server_sans,
            Usage::Server,
        )
        .unwrap();
    let client = ca
        .write_issued(dir, "client", names.client, &[], Usage::Client)
        .unwrap();
    let other = Ca::new("another CA").unwrap();
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other_client = other
        .write_issued(&other_dir, "client", "intruder", &[], Usage::Client)
        .unwrap();
    Certs {
        ca: ca.write_ca(dir).unwrap(),
        server: (server.cert, server.key),
        client: (client.cert, client.key),
        other_client: (other_client.cert, other_client.key),
        other_ca: other.write_ca(&other_dir).unwrap(),
    }
}
