//! Property tests of the request parser: arbitrary bytes never panic it, whatever it accepts is
//! consistent, and chunked bodies decode the same however they are split.

use netman::http::parse::{head_end, leading_empty_lines, parse_head, ChunkedDecoder, Framing};
use proptest::prelude::*;

fn head_like() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(b"GET / HTTP/1.1".to_vec()),
        Just(b"POST /p?x=1 HTTP/1.1".to_vec()),
        Just(b"Host: h".to_vec()),
        Just(b"Content-Length: 5".to_vec()),
        Just(b"Content-Length: +5".to_vec()),
        Just(b"Transfer-Encoding: chunked".to_vec()),
        Just(b"Transfer-Encoding: gzip".to_vec()),
        Just(b"Connection: close".to_vec()),
        Just(b"".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..20),
    ];
    proptest::collection::vec(line, 0..8).prop_map(|lines| {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(&l);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_head_parser(
        bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), head_like()]
    ) {
        let skip = leading_empty_lines(&bytes);
        if let Some(end) = head_end(&bytes, skip) {
            prop_assert!(end <= bytes.len());
            if let Ok(head) = parse_head(&bytes[skip..end], 1000) {
                // Whatever is accepted has one unambiguous framing within the limit.
                let lengths = head.request.headers.iter().filter(|(k, _)| k == "content-length").count();
                let codings = head.request.headers.iter().filter(|(k, _)| k == "transfer-encoding").count();
                prop_assert!(lengths == 0 || codings == 0);
                if let Framing::Length(n) = head.framing { prop_assert!(n <= 1000) }
                prop_assert!(head.request.http10 || head.request.header("host").is_some());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_chunked_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        split in 1usize..64,
    ) {
        let mut d = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        for piece in bytes.chunks(split) {
            match d.feed(piece, &mut out) {
                Ok(_) if d.done() => break,
                Ok(n) => prop_assert_eq!(n, piece.len()),
                Err(_) => break,
            }
        }
        prop_assert!(out.len() <= 100);
    }

    #[test]
    fn chunked_bodies_decode_the_same_however_they_are_split(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
        split in 1usize..17,
    ) {
        let mut wire = Vec::new();
        for c in &chunks {
            wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\nREST");
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut used = 0;
        for piece in wire.chunks(split) {
            used += d.feed(piece, &mut out).unwrap();
            if d.done() { break; }
        }
        prop_assert!(d.done());
        prop_assert_eq!(used, wire.len() - 4);
        prop_assert_eq!(out, chunks.concat());
    }
}
