//! overlay-controller: the lease API of the overlay network (mutual TLS).

fn main() {
    netman::daemon::main(
        "overlay-controller",
        "Overlay lease controller",
        netman::overlay::controller::start,
    );
}
