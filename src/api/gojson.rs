//! JSON as the original (Go's `encoding/json`) writes it, so answers are byte-identical to its
//! answers also when a string holds `<`, `>`, `&`, U+2028 or U+2029: Go escapes those as
//! `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029` (it means the output to be safe inside HTML);
//! serde_json writes them as they are. Everything else is serde_json's compact output, which
//! matches Go's from Go 1.22 on (short escapes for `"`, `\`, `\n`, `\r`, `\t`, `\b`, `\f`;
//! `\u00xx` for the other control characters); older Go writes `\b` and `\f` as `\u0008` and
//! `\u000c`, so a string holding those two differs from an original built with it.

use serde::Serialize;
use std::io;

struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Appends `value`'s JSON to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    value.serialize(&mut serde_json::Serializer::with_formatter(
        out,
        GoFormatter,
    ))
}

pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value)?;
    Ok(out)
}

pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    // The formatter writes whole UTF-8 characters and ASCII escapes only.
    to_vec(value).map(|v| String::from_utf8(v).expect("JSON output is UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn html_characters_and_line_separators_are_escaped_as_go_does() {
        let v = json!({"a<b": "x & y <z> \u{2028}\u{2029} \"q\" \\ \n\t\u{1} é"});
        assert_eq!(
            to_string(&v).unwrap(),
            r#"{"a\u003cb":"x \u0026 y \u003cz\u003e \u2028\u2029 \"q\" \\ \n\t\u0001 é"}"#
        );
        assert_eq!(to_string("plain").unwrap(), r#""plain""#);
    }

    proptest::proptest! {
        #[test]
        fn the_output_reads_back_as_the_same_value(s in "\\PC{0,40}", key in ".{0,8}") {
            let v = json!({key: [s, 1, null, true]});
            let text = to_string(&v).unwrap();
            proptest::prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
            let unescaped = text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']);
            proptest::prop_assert!(!unescaped, "{}", text);
        }
    }
}
