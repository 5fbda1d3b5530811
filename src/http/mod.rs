//! The one HTTP layer of netman: request and response values, a server ([`server::Server`]) for
//! plain, TLS and mutual-TLS listeners whose open connections wait in a readiness poller and whose
//! handlers run on blocking workers, and HTTP client construction.

pub mod client;
mod conn;
pub mod limits;
pub mod parse;
mod poller;
pub mod server;
pub mod stats;
mod worker;

pub use server::{Handler, Server, ServerOptions};
pub use stats::{ListenerHealth, ServerMetrics};

use rustls::pki_types::CertificateDer;
use serde::Serialize;
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Percent-decoded path, without the query.
    pub path: String,
    /// Decoded query parameters in order of appearance.
    pub query: Vec<(String, String)>,
    pub raw_query: String,
    /// Header names are lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer_addr: Option<SocketAddr>,
    /// The client's certificate chain when the listener does mutual TLS.
    pub peer_certificates: Option<Vec<CertificateDer<'static>>>,
    pub http10: bool,
}

impl Request {
    /// A request built in code, for handlers called without a socket (tests, in-process use).
    pub fn new(method: &str, target: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.to_string(),
            path: server::percent_decode(path),
            query: parse_query(query),
            raw_query: query.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            peer_addr: None,
            peer_certificates: None,
            http10: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter, as the original servers read it.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        let body = crate::api::gojson::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Response::new(status)
            .with_header("content-type", "application/json")
            .with_body(body)
    }

    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.into().into_bytes())
    }

    /// The error body every netman API uses: `{"error": "<description>"}`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.set_header(name, value);
        self
    }

    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if let Some(h) = self
            .headers
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            h.1 = value;
        } else {
            self.headers.push((name.to_string(), value));
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }
}

/// What a handler gives back: an answer now, or a request parked until a [`Signal`] fires or its
/// time is up. A parked request waits in the poller and holds no worker.
pub enum Reply {
    Now(Response),
    Park(Parked),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Now(r)
    }
}

/// Why a parked request's `respond` is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Its signal fired (or it was just parked): answer if there is something new.
    Signalled,
    /// Its time is up: answer now.
    Expired,
}

/// A request held until something changes. `respond` runs on the poller thread, so it must be
/// cheap and never block (compare a cached value, format an answer); it returns `None` to keep
/// waiting (never on [`Wake::Expired`], where `None` is answered 500).
pub struct Parked {
    pub until: std::time::Instant,
    pub signal: Signal,
    pub respond: Box<dyn FnMut(Wake) -> Option<Response> + Send>,
}

/// Wakes the pollers holding requests parked on it. Cheap to clone; `notify` from any thread.
#[derive(Clone, Default)]
pub struct Signal(std::sync::Arc<SignalState>);

#[derive(Default)]
struct SignalState {
    generation: std::sync::atomic::AtomicU64,
    wakers: std::sync::Mutex<Vec<std::sync::Weak<mio::Waker>>>,
}

impl Signal {
    pub fn new() -> Signal {
        Signal::default()
    }

    pub fn notify(&self) {
        self.0
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut wakers = self.0.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.retain(|w| match w.upgrade() {
            Some(w) => {
                let _ = w.wake();
                true
            }
            None => false,
        });
    }

    pub(crate) fn generation(&self) -> u64 {
        self.0.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn subscribe(&self, waker: &std::sync::Arc<mio::Waker>) {
        let mut wakers = self.0.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.push(std::sync::Arc::downgrade(waker));
    }

    pub(crate) fn same(&self, other: &Signal) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                server::percent_decode(&k.replace('+', " ")),
                server::percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_order_and_decodes() {
        let q = parse_query("id=a%2Cb,c&x=1+2&id=second&flag");
        assert_eq!(q[0], ("id".into(), "a,b,c".into()));
        assert_eq!(q[1], ("x".into(), "1 2".into()));
        assert_eq!(q[3], ("flag".into(), "".into()));
        let r = Request::new("GET", "/p?id=a&id=b");
        assert_eq!(r.query_param("id"), Some("a"));
    }

    #[test]
    fn percent_decode_leaves_bad_escapes_alone() {
        assert_eq!(server::percent_decode("%zz%4"), "%zz%4");
        assert_eq!(server::percent_decode("%41%e2%82%ac"), "A€");
    }
}
