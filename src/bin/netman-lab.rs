//! netman-lab: the whole of netman on one machine, in network namespaces. Needs root. See
//! `netman::lab`.

fn main() {
    netman::lab::cli::main();
}
