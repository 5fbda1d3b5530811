//! vxlan-policy-agent: enforces network policy on this cell. See `netman::agent`.

fn main() {
    netman::daemon::main(
        "vxlan-policy-agent",
        "Enforces container network policy on this cell",
        netman::agent::app::start,
    );
}
