//! overlay: the CNI plugin of the overlay network (type `overlay`).

fn main() {
    netman::cni::plugin::main(&netman::overlay::plugin::OverlayPlugin)
}
