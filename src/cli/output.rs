//! Human output as the cf CLI prints it: progress lines, `OK` / `FAILED`, aligned tables.

use crate::api::policy::Policy;

/// Renders rows under a header, columns padded to the widest cell plus three spaces (the last
/// column is not padded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] - cell.chars().count() + 3;
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A policy's row: source and destination as shown (names or GUIDs), protocol, ports.
pub fn policy_row(source: &str, destination: &str, p: &Policy) -> Vec<String> {
    vec![
        source.to_string(),
        destination.to_string(),
        p.destination.protocol.clone(),
        port_text(p.destination.ports.start, p.destination.ports.end),
    ]
}

pub fn port_text(start: i64, end: i64) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["Source", "Destination", "Protocol", "Port"],
            &[
                vec!["frontend".into(), "db".into(), "tcp".into(), "5432".into()],
                vec![
                    "a".into(),
                    "backend".into(),
                    "udp".into(),
                    "8080-8090".into(),
                ],
            ],
        );
        assert_eq!(
            t,
            "Source     Destination   Protocol   Port\n\
             frontend   db            tcp        5432\n\
             a          backend       udp        8080-8090\n"
        );
        assert_eq!(port_text(80, 80), "80");
        assert_eq!(port_text(80, 90), "80-90");
    }
}
