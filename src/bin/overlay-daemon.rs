//! overlay-daemon: one per cell; keeps the VTEP and the routes to every other cell.

fn main() {
    netman::daemon::main(
        "overlay-daemon",
        "Overlay daemon (one per cell)",
        netman::overlay::daemon::start,
    );
}
