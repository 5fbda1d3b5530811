//! `CF_TRACE=true` (or `NETMAN_TRACE=true`) prints every HTTP request and response to stderr, as
//! the cf CLI does; the token is never printed.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn request(method: &str, url: &str, body: Option<&str>) {
    if ENABLED.load(Ordering::Relaxed) {
        eprintln!(
            "\nREQUEST:\n{method} {url}\nAuthorization: [PRIVATE DATA HIDDEN]\n{}",
            body.unwrap_or("")
        );
    }
}

pub fn response(status: u16, body: &str) {
    if ENABLED.load(Ordering::Relaxed) {
        eprintln!(
            "\nRESPONSE:\n{status} {}\n{}",
            crate::http::reason(status),
            body.trim()
        );
    }
}
