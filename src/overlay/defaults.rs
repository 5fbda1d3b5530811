//! The overlay daemon's defaults, shared by its config and its local clients (the CNI plugin's
//! configuration, the watchdog).

/// Where the CNI plugin keeps its IPAM (`dataDir`); the daemon reads it to see whether
/// containers exist (`plugin_data_dir`).
pub const DATA_DIR: &str = "/var/vcap/data/overlay";

/// The daemon's loopback port answering the network info (`listen_port`, the plugin's
/// `daemonPort`).
pub const DAEMON_PORT: u16 = 23954;
