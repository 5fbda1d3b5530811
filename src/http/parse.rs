//! The strict request parser (RFC 9112): where a request head ends, what it says, how its body is
//! framed, and an incremental chunked-body decoder. Pure functions over bytes, so the poller, the
//! workers and the property tests share them. Every rejection names the status to answer; the
//! connection is closed after any of them, because the framing of what follows is unknown.

use super::Request;

/// The most header fields one request may carry (431 beyond).
pub const MAX_HEADERS: usize = 128;
/// Chunk extensions and trailer fields are read and dropped, but bounded.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

/// A request that is answered with `status` and the connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
    /// The request's header fields when they could be read (for the answer's request id).
    pub headers: Vec<(String, String)>,
}

impl Rejection {
    pub fn new(status: u16, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn with_headers(mut self, headers: &[(String, String)]) -> Rejection {
        self.headers = headers.to_vec();
        self
    }
    fn bad(message: impl Into<String>) -> Rejection {
        Rejection::new(400, message)
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub request: Request,
    pub framing: Framing,
    /// The client asked for the connection to end after this request (or spoke HTTP/1.0).
    pub close: bool,
    pub expect_continue: bool,
}

/// Empty lines a client may send before a request line (RFC 9112 §2.2); they are dropped.
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        if buf[i..].starts_with(b"\r\n") {
            i += 2;
        } else if buf[i..].starts_with(b"\n") {
            i += 1;
        } else {
            return i;
        }
    }
}

/// The length of the head (through its empty line) when `buf` holds a complete one. `from` is
/// where a previous call stopped looking, so a head arriving byte by byte is scanned once.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        match &buf[nl + 1..] {
            [b'\n', ..] => return Some(nl + 2),
            [b'\r', b'\n', ..] => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Parses a complete head (as delimited by [`head_end`], leading empty lines removed).
pub fn parse_head(head: &[u8], max_body: u64) -> Result<Head, Rejection> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(httparse::Status::Complete(_)) | Ok(httparse::Status::Partial) => {
            return Err(Rejection::bad("incomplete request head"))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::new(
                431,
                format!("more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(httparse::Error::Version) => {
            return Err(Rejection::new(505, "HTTP version not supported"))
        }
        Err(e) => return Err(Rejection::bad(format!("malformed request: {e}"))),
    }
    let method = parsed.method.unwrap_or_default().to_string();
    let http10 = parsed.version == Some(0);
    let target = parsed.path.unwrap_or_default();
    let origin = origin_form(&method, target)?;
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value)
                    .trim_matches([' ', '\t'])
                    .to_string(),
            )
        })
        .collect();

    let hosts = headers.iter().filter(|(k, _)| k == "host").count();
    if hosts > 1 {
        return Err(Rejection::bad("more than one Host header").with_headers(&headers));
    }
    if hosts == 0 && !http10 {
        return Err(Rejection::bad("HTTP/1.1 request without a Host header").with_headers(&headers));
    }

    let framing = framing(&headers, http10, max_body).map_err(|r| r.with_headers(&headers))?;
    let connection_has = |token: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let close = if http10 {
        !connection_has("keep-alive")
    } else {
        connection_has("close")
    };
    let expect_continue = !http10
        && headers
            .iter()
            .any(|(k, v)| k == "expect" && v.eq_ignore_ascii_case("100-continue"));

    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    Ok(Head {
        request: Request {
            method,
            path: super::server::percent_decode(path),
            query: super::parse_query(query),
            raw_query: query.to_string(),
            headers,
            body: Vec::new(),
            peer_addr: None,
            peer_certificates: None,
            http10,
        },
        framing,
        close,
        expect_continue,
    })
}

/// The origin-form part of a request target: `/path?query`, `*` for OPTIONS, or the path of an
/// absolute-form target (which a server must accept, RFC 9112 §3.2.2).
fn origin_form<'a>(method: &str, target: &'a str) -> Result<&'a str, Rejection> {
    if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        return Ok(target);
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return Err(Rejection::bad(format!(
            "unsupported request target {target:?}"
        )));
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Ok(&rest[i..]),
        _ => Err(Rejection::bad(format!(
            "request target {target:?} has no path"
        ))),
    }
}

/// Message body framing (RFC 9112 §6): exactly one of no body, one valid `Content-Length`, or
/// `Transfer-Encoding: chunked`; every ambiguity is a 400 and every other coding a 501.
fn framing(
    headers: &[(String, String)],
    http10: bool,
    max_body: u64,
) -> Result<Framing, Rejection> {
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim_matches([' ', '\t']))
            .collect()
    };
    let has = |name: &str| headers.iter().any(|(k, _)| k == name);
    let codings = values("transfer-encoding");
    let lengths = values("content-length");

    if has("transfer-encoding") {
        if has("content-length") {
            return Err(Rejection::bad(
                "both Content-Length and Transfer-Encoding (possible request smuggling)",
            ));
        }
        if http10 {
            return Err(Rejection::bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        for coding in &codings {
            if coding.is_empty() {
                return Err(Rejection::bad("empty transfer coding"));
            }
            if !coding.eq_ignore_ascii_case("chunked") {
                if !coding.bytes().all(is_tchar) {
                    return Err(Rejection::bad(format!(
                        "malformed transfer coding {coding:?}"
                    )));
                }
                return Err(Rejection::new(
                    501,
                    format!("transfer coding {coding:?} not implemented"),
                ));
            }
        }
        if codings.len() != 1 {
            return Err(Rejection::bad("chunked applied more than once"));
        }
        return Ok(Framing::Chunked);
    }
    if !has("content-length") {
        return Ok(Framing::None);
    }
    let mut length: Option<u64> = None;
    for value in lengths {
        let n = parse_decimal(value)
            .ok_or_else(|| Rejection::bad(format!("invalid Content-Length {value:?}")))?;
        if length.is_some_and(|l| l != n) {
            return Err(Rejection::bad("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    let length = length.unwrap_or_default();
    if length > max_body {
        return Err(Rejection::new(
            413,
            format!("request body of {length} bytes exceeds the limit of {max_body}"),
        ));
    }
    Ok(if length == 0 {
        Framing::None
    } else {
        Framing::Length(length)
    })
}

/// `1*DIGIT` only: no sign, no spaces, no overflow.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size.
    Size {
        digits: usize,
    },
    /// Whitespace after the size, before a `;` extension.
    SizeSpace,
    /// Inside a chunk extension, up to CR.
    Extension,
    /// CR seen at the end of a size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// Decodes a chunked body incrementally, bounding its size, line lengths and trailers.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    left: u64,
    total: u64,
    line: usize,
    trailers: usize,
    limit: u64,
}

impl ChunkedDecoder {
    pub fn new(limit: u64) -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size { digits: 0 },
            size: 0,
            left: 0,
            total: 0,
            line: 0,
            trailers: 0,
            limit,
        }
    }

    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes bytes of `input`, appending decoded data to `out`. Returns how many bytes were
    /// consumed; fewer than `input.len()` only once the body is complete.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Rejection> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data => {
                    let take = (self.left.min((input.len() - i) as u64)) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    self.left -= take as u64;
                    i += take;
                    if self.left == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::Size { digits } => {
                    if let Some(d) = (b as char).to_digit(16) {
                        if digits >= 16 {
                            return Err(Rejection::bad("chunk size overflows"));
                        }
                        self.size = self.size << 4 | d as u64;
                        self.state = ChunkState::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(Rejection::bad(format!(
                            "invalid chunk size starting with {:?}",
                            b as char
                        )));
                    } else {
                        self.state = match b {
                            b'\r' => ChunkState::SizeLf,
                            b';' => ChunkState::Extension,
                            b' ' | b'\t' => ChunkState::SizeSpace,
                            _ => {
                                return Err(Rejection::bad(format!(
                                    "invalid character {:?} in chunk size",
                                    b as char
                                )))
                            }
                        };
                    }
                    self.line += 1;
                }
                ChunkState::SizeSpace => {
                    self.state = match b {
                        b' ' | b'\t' => ChunkState::SizeSpace,
                        b';' => ChunkState::Extension,
                        _ => return Err(Rejection::bad("invalid chunk size line")),
                    };
                    self.line += 1;
                }
                ChunkState::Extension => {
                    match b {
                        b'\r' => self.state = ChunkState::SizeLf,
                        b'\n' => return Err(Rejection::bad("bare LF in chunk size line")),
                        _ => {}
                    }
                    self.line += 1;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(Rejection::bad("chunk size line not ended by CRLF"));
                    }
                    self.line = 0;
                    if self.size == 0 {
                        self.state = ChunkState::TrailerStart;
                    } else {
                        self.total = self.total.saturating_add(self.size);
                        if self.total > self.limit {
                            return Err(Rejection::new(
                                413,
                                format!("request body exceeds the limit of {}", self.limit),
                            ));
                        }
                        self.left = self.size;
                        self.size = 0;
                        self.state = ChunkState::Data;
                    }
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(Rejection::bad("chunk data not followed by CRLF"));
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(Rejection::bad("chunk data not followed by CRLF"));
                    }
                    self.state = ChunkState::Size { digits: 0 };
                }
                ChunkState::TrailerStart => {
                    self.state = match b {
                        b'\r' => ChunkState::TrailerLf { empty: true },
                        b'\n' => return Err(Rejection::bad("bare LF in trailer section")),
                        _ => ChunkState::Trailer,
                    };
                    self.trailers += 1;
                }
                ChunkState::Trailer => {
                    match b {
                        b'\r' => self.state = ChunkState::TrailerLf { empty: false },
                        b'\n' => return Err(Rejection::bad("bare LF in trailer section")),
                        _ => {}
                    }
                    self.trailers += 1;
                }
                ChunkState::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(Rejection::bad("trailer line not ended by CRLF"));
                    }
                    self.state = if empty {
                        ChunkState::Done
                    } else {
                        ChunkState::TrailerStart
                    };
                }
            }
            if self.line > MAX_CHUNK_LINE {
                return Err(Rejection::bad("chunk size line too long"));
            }
            if self.trailers > MAX_TRAILERS {
                return Err(Rejection::new(431, "trailer section too large"));
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, Rejection> {
        let bytes = text.as_bytes();
        let skip = leading_empty_lines(bytes);
        let end = head_end(bytes, skip).expect("complete head");
        parse_head(&bytes[skip..end], 10 * 1024 * 1024)
    }

    fn status(text: &str) -> u16 {
        match head(text) {
            Ok(_) => 200,
            Err(r) => r.status,
        }
    }

    #[test]
    fn head_end_is_found_once_across_splits() {
        let text = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        for split in 0..text.len() {
            let first = head_end(&text[..split], 0);
            let found = first.or_else(|| head_end(text, split));
            assert_eq!(found, Some(text.len() - 4), "split at {split}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0), Some(24));
        assert_eq!(leading_empty_lines(b"\r\n\nGET"), 3);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let base = "POST / HTTP/1.1\r\nHost: h\r\n";
        let ok = |extra: &str| head(&format!("{base}{extra}\r\n")).map(|h| h.framing);
        assert_eq!(ok("Content-Length: 15\r\n"), Ok(Framing::Length(15)));
        assert_eq!(ok("Content-Length: 15, 15\r\n"), Ok(Framing::Length(15)));
        assert_eq!(ok("Transfer-Encoding: Chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(ok(""), Ok(Framing::None));
        for (extra, want) in [
            ("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", 400),
            ("Content-Length: 3\r\nContent-Length: 4\r\n", 400),
            ("Content-Length: +15\r\n", 400),
            ("Content-Length: -1\r\n", 400),
            ("Content-Length: 1 5\r\n", 400),
            ("Content-Length: 0x10\r\n", 400),
            ("Content-Length: 99999999999999999999999\r\n", 400),
            ("Content-Length: 20000000\r\n", 413),
            ("Transfer-Encoding: xchunked\r\n", 501),
            ("Transfer-Encoding: chunked, gzip\r\n", 501),
            ("Transfer-Encoding: gzip, chunked\r\n", 501),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                400,
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                501,
            ),
            ("Transfer-Encoding: \"chunked\"\r\n", 400),
            ("Transfer-Encoding: chunked,\r\n", 400),
        ] {
            assert_eq!(status(&format!("{base}{extra}\r\n")), want, "{extra:?}");
        }
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn host_version_and_targets() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("GET foo HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        let h = head("GET http://x:1/p/q?a=1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (h.request.path.as_str(), h.request.query_param("a")),
            ("/p/q", Some("1"))
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), 400);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x{i}: y\r\n"))
            .collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
        assert!(head("GET / HTTP/1.0\r\n\r\n").unwrap().close);
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().close);
        assert!(
            head("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n")
                .unwrap()
                .close
        );
    }

    fn decode(input: &[u8], limit: u64) -> Result<(Vec<u8>, usize), Rejection> {
        let mut d = ChunkedDecoder::new(limit);
        let mut out = Vec::new();
        // Byte by byte, to exercise every state boundary.
        let mut used = 0;
        for b in input.chunks(1) {
            used += d.feed(b, &mut out)?;
            if d.done() {
                break;
            }
        }
        assert!(d.done(), "incomplete");
        Ok((out, used))
    }

    #[test]
    fn chunked_bodies_strictly() {
        let (body, used) =
            decode(b"3;x=y\r\nabc\r\n2 ;z\r\nde\r\n0\r\nT: v\r\n\r\nNEXT", 100).unwrap();
        assert_eq!((body.as_slice(), used), (&b"abcde"[..], 33));
        let reject = |input: &[u8], limit| {
            let mut d = ChunkedDecoder::new(limit);
            d.feed(input, &mut Vec::new()).unwrap_err().status
        };
        assert_eq!(reject(b"1\r\na\r\nffffffffffffffff\r\n", 1 << 40), 413);
        assert_eq!(reject(b"1\r\na\r\n10000000000000000\r\n", u64::MAX), 400);
        assert_eq!(reject(b"+f\r\n", 100), 400);
        assert_eq!(reject(b"-1\r\n", 100), 400);
        assert_eq!(reject(b" 1\r\n", 100), 400);
        assert_eq!(reject(b"1\n", 100), 400);
        assert_eq!(reject(b"1\r\naX", 100), 400);
        assert_eq!(reject(b"0x1\r\n", 100), 400);
        assert_eq!(reject(b"b\r\n", 10), 413);
    }
}
