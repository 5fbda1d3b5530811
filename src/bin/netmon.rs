//! netmon: reports the cell's interface count, iptables rule count and overlay device counters
//! every interval, as Prometheus metrics on the loopback debug port (and a debug log line).

fn main() {
    netman::daemon::main(
        "netmon",
        "netman cell network monitor",
        netman::netmon::app::start,
    );
}
