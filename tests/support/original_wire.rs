//! The original's side of the internal API's wire, for mixed-fleet tests: RSA certificates as a
//! BOSH deployment of cf-networking has them (made with `openssl`, keys in PKCS#1), and a client
//! that speaks exactly as the original Go vxlan-policy-agent does (reference §3, §5.2): TLS 1.2
//! only, the two ECDHE-RSA AES-GCM suites and the P-384 curve of cloudfoundry's
//! `tlsconfig.WithInternalServiceDefaults`, its client certificate, and the HTTP/1.1 requests of
//! Go's `net/http` with its json_client (paths, query strings, headers, body) on a kept-alive
//! connection.
#![allow(dead_code)]

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The name the cells use for the policy server's internal API in a cf deployment.
pub const SERVER_NAME: &str = "policy-server.service.cf.internal";

pub struct RsaPki {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server and a client certificate, RSA 2048, keys in the traditional PKCS#1 form.
pub fn rsa_pki(dir: &Path) -> RsaPki {
    let key = |name: &str| {
        openssl(dir, &["genrsa", "-traditional", "-out", name, "2048"]);
    };
    key("ca.key");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-days",
            "30",
            "-subj",
            "/CN=cf-networking test CA",
            "-out",
            "ca.crt",
        ],
    );
    let issue = |name: &str, subject: &str, ext: &str| {
        key(&format!("{name}.key"));
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                subject,
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
        (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        )
    };
    let server = issue(
        "server",
        &format!("/CN={SERVER_NAME}"),
        &format!(
            "subjectAltName=DNS:{SERVER_NAME},DNS:localhost,IP:127.0.0.1\n\
             extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
        ),
    );
    let client = issue(
        "client",
        "/CN=vxlan-policy-agent",
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
    );
    let pem = std::fs::read_to_string(&server.1).unwrap();
    assert!(
        pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "PKCS#1 key expected"
    );
    RsaPki {
        ca: dir.join("ca.crt"),
        server,
        client,
    }
}

/// The original agent's TLS client configuration.
pub fn go_agent_tls(ca: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::crypto::ring as provider;
    let crypto = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![provider::kx_group::SECP384R1],
        ..provider::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(crypto))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// One HTTP response as Go's client reads it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A kept-alive connection of the original agent to the internal API.
pub struct GoAgent {
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    host: String,
    /// The older json_client sent an empty `Authorization` header on every request.
    pub empty_authorization: bool,
}

impl GoAgent {
    /// Connects to `addr` (`127.0.0.1:port`), verifying the server as [`SERVER_NAME`].
    pub fn connect(addr: &str, tls: Arc<rustls::ClientConfig>) -> GoAgent {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn =
            rustls::ClientConnection::new(tls, ServerName::try_from(SERVER_NAME).unwrap()).unwrap();
        let port = addr.rsplit(':').next().unwrap();
        GoAgent {
            stream: BufReader::new(rustls::StreamOwned::new(conn, tcp)),
            host: format!("{SERVER_NAME}:{port}"),
            empty_authorization: false,
        }
    }

    /// The negotiated protocol version and cipher suite (after the first request).
    pub fn negotiated(&self) -> (String, String) {
        let c = &self.stream.get_ref().conn;
        (
            format!("{:?}", c.protocol_version().unwrap()),
            format!("{:?}", c.negotiated_cipher_suite().unwrap().suite()),
        )
    }

    /// Sends one request with the headers Go's net/http writes for json_client.Do and reads the
    /// response.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Go-http-client/1.1\r\n",
            self.host
        );
        if let Some(b) = body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        if self.empty_authorization {
            head.push_str("Authorization: \r\n");
        }
        head.push_str("Accept-Encoding: gzip\r\n\r\n");
        let out = self.stream.get_mut();
        out.write_all(head.as_bytes()).unwrap();
        if let Some(b) = body {
            out.write_all(b).unwrap();
        }
        out.flush().unwrap();
        self.read_response()
    }

    fn read_response(&mut self) -> Response {
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("bad status line {line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.stream.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').unwrap();
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = resp.header("content-length") {
            let mut body = vec![0; len.parse().unwrap()];
            self.stream.read_exact(&mut body).unwrap();
            resp.body = body;
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                self.stream.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.stream.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                resp.body.extend_from_slice(&chunk[..n]);
            }
        }
        // Go decompresses gzip itself when it asked for it; the agent never sees the encoding.
        assert!(
            resp.header("content-encoding").is_none(),
            "unexpected content-encoding"
        );
        resp
    }
}

/// Go's encoding/json matches object keys to struct fields case-insensitively: the value of
/// `field` in `object` as the original agent's decoder finds it.
pub fn go_field<'a>(object: &'a serde_json::Value, field: &str) -> Option<&'a serde_json::Value> {
    let map = object.as_object()?;
    map.get(field).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(field))
            .map(|(_, v)| v)
    })
}

/// The original policy server's internal API, as a fake for netman's agent: mutual TLS the way
/// the Go server configures it (TLS 1.2, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` only, client
/// certificate required and verified), its four routes with their answers (§3), Go's 404 for
/// every other path (no watch, nothing netman-specific), and a record of the requests.
pub struct FakeOriginalServer {
    pub addr: std::net::SocketAddr,
    pub state: Arc<std::sync::Mutex<OriginalState>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// What the fake serves: policies as (source, destination, protocol, start, end), tags handed
/// out lowest-first as the original does, and `policies_last_updated` in nanoseconds.
#[derive(Default)]
pub struct OriginalState {
    pub policies: Vec<(String, String, String, i64, i64)>,
    pub tags: Vec<(String, String)>,
    pub last_updated: i64,
    pub requests: Vec<String>,
    /// Security groups in the internal API's shape (`rules` a JSON string); the id of each is
    /// its position + 1.
    pub security_groups: Vec<serde_json::Value>,
}

impl OriginalState {
    fn tag(&mut self, id: &str, kind: &str) -> String {
        if let Some(n) = self.tags.iter().position(|(i, _)| i == id) {
            return format!("{:04X}", n + 1);
        }
        self.tags.push((id.to_string(), kind.to_string()));
        format!("{:04X}", self.tags.len())
    }

    /// Replaces the policies and moves `last_updated`, as a create or delete does.
    pub fn set_policies(&mut self, policies: &[(&str, &str, &str, i64, i64)]) {
        self.policies = policies
            .iter()
            .map(|(s, d, p, a, b)| (s.to_string(), d.to_string(), p.to_string(), *a, *b))
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
            * 1000;
        self.last_updated = now.max(self.last_updated + 1000);
    }

    /// `GET .../internal/security_groups?space_guids=&limit=&from=` as §3 selects and pages:
    /// defaults and groups bound to a listed space, by id, `next` = the id of the first left out.
    fn security_groups_page(&self, query: &str) -> Result<serde_json::Value, String> {
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        let number = |name: &str| -> Result<usize, String> {
            param(name)
                .map(|v| v.parse::<usize>().map_err(|e| format!("{name}: {e}")))
                .unwrap_or(Ok(0))
        };
        let (limit, from) = (number("limit")?, number("from")?);
        let spaces: Vec<&str> = param("space_guids")
            .map(|v| v.split(',').collect())
            .unwrap_or_default();
        let bound = |g: &serde_json::Value, key: &str| {
            g[key]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| spaces.contains(&s.as_str().unwrap_or(""))))
        };
        let selected: Vec<(usize, &serde_json::Value)> = self
            .security_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (i + 1, g))
            .filter(|(id, _)| *id >= from)
            .filter(|(_, g)| {
                spaces.is_empty()
                    || g["staging_default"] == true
                    || g["running_default"] == true
                    || bound(g, "staging_space_guids")
                    || bound(g, "running_space_guids")
            })
            .collect();
        let (page, next) = if limit > 0 && selected.len() > limit {
            (&selected[..limit], selected[limit].0)
        } else {
            (&selected[..], 0)
        };
        let groups: Vec<&serde_json::Value> = page.iter().map(|(_, g)| *g).collect();
        Ok(serde_json::json!({"next": next, "security_groups": groups}))
    }

    fn listing(&mut self, ids: Option<&str>) -> serde_json::Value {
        let wanted: Option<Vec<&str>> = ids.map(|i| i.split(',').collect());
        let policies = self.policies.clone();
        let list: Vec<serde_json::Value> = policies
            .iter()
            .filter(|(s, d, ..)| {
                wanted
                    .as_ref()
                    .is_none_or(|w| w.contains(&s.as_str()) || w.contains(&d.as_str()))
            })
            .map(|(s, d, proto, start, end)| {
                serde_json::json!({
                    "source": {"id": s, "tag": self.tag(s, "app")},
                    "destination": {"id": d, "tag": self.tag(d, "app"), "protocol": proto,
                                    "ports": {"start": start, "end": end}},
                })
            })
            .collect();
        serde_json::json!({"total_policies": list.len(), "policies": list})
    }
}

impl FakeOriginalServer {
    pub fn start(pki: &RsaPki) -> FakeOriginalServer {
        use rustls::crypto::ring as provider;
        let crypto = rustls::crypto::CryptoProvider {
            cipher_suites: vec![provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256],
            ..provider::default_provider()
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let crypto = Arc::new(crypto);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            crypto.clone(),
        )
        .build()
        .unwrap();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server.0)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let config = rustls::ServerConfig::builder_with_provider(crypto)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, PrivateKeyDer::from_pem_file(&pki.server.1).unwrap())
            .unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(std::sync::Mutex::new(OriginalState {
            last_updated: 1_600_000_000_000_000_000,
            ..Default::default()
        }));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let (config, state) = (config.clone(), s.clone());
                        std::thread::spawn(move || serve_connection(tcp, config, state));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FakeOriginalServer { addr, state, stop }
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeOriginalServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn serve_connection(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    state: Arc<std::sync::Mutex<OriginalState>>,
) {
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut stream = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if stream.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let id = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("id="))
            .map(str::to_string);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut st = state.lock().unwrap();
        st.requests.push(format!("{method} {target}"));
        let (status, content_type, text) = match (method.as_str(), segments.as_slice()) {
            ("GET", ["networking", _, "internal", "policies"]) => (
                200,
                "application/json",
                st.listing(id.as_deref()).to_string(),
            ),
            ("GET", ["networking", _, "internal", "security_groups"]) => {
                match st.security_groups_page(query) {
                    Ok(v) => (200, "application/json", v.to_string()),
                    Err(e) => (
                        500,
                        "application/json",
                        serde_json::json!({"error": e}).to_string(),
                    ),
                }
            }
            ("GET", ["networking", _, "internal", "policies_last_updated"]) => {
                (200, "application/json", st.last_updated.to_string())
            }
            ("PUT", ["networking", "v1", "internal", "tags"]) => {
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let field = |name: &str| {
                    go_field(&req, name)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                let (id, kind) = (field("id"), field("type"));
                let tag = st.tag(&id, &kind);
                (
                    200,
                    "application/json",
                    serde_json::json!({"id": id, "tag": tag, "type": kind}).to_string(),
                )
            }
            _ => (
                404,
                "text/plain; charset=utf-8",
                "404 page not found\n".to_string(),
            ),
        };
        drop(st);
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n\
             Strict-Transport-Security: max-age=31536000\r\nContent-Length: {}\r\n\r\n",
            if status == 200 { "OK" } else { "Not Found" },
            text.len()
        );
        let out = stream.get_mut();
        if out.write_all(head.as_bytes()).is_err()
            || out.write_all(text.as_bytes()).is_err()
            || out.flush().is_err()
        {
            return;
        }
    }
}
