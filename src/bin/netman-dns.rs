//! netman-dns: the per-cell resolver of service discovery (internal routes from the policy
//! server's registry, every other name forwarded upstream) and the reporter of the cell's app
//! instances.

fn main() {
    netman::daemon::main(
        "netman-dns",
        "netman cell DNS resolver (service discovery)",
        netman::dns::daemon::start,
    );
}
