//! `netman`: manage network policies on a netman policy server (see `netman --help`).

fn main() {
    std::process::exit(netman::cli::main());
}
