//! Parsing `iptables-save [-c] -t TABLE` output: chain names and rules (kept as the tokens
//! iptables printed, so they can be deleted exactly with `-D`), with each rule's packet counter
//! when listed with `-c`.

use super::error::Error;
use super::types::Table;

/// One rule as listed: its chain and the argument tokens after `-A CHAIN` (unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    pub args: Vec<String>,
    /// The `[packets:bytes]` packets, when listed with `-c`.
    pub packets: Option<u64>,
    /// The `[packets:bytes]` bytes, when listed with `-c`.
    pub bytes: Option<u64>,
}

impl SavedRule {
    /// The chain named by `-j`/`-g` (or `--jump`/`--goto`), if any.
    pub fn jump_target(&self) -> Option<&str> {
        self.args
            .windows(2)
            .find(|w| matches!(w[0].as_str(), "-j" | "-g" | "--jump" | "--goto"))
            .map(|w| w[1].as_str())
    }

    /// Whether the rule uses `-g` rather than `-j`.
    pub fn is_goto(&self) -> bool {
        self.args.iter().any(|a| a == "-g" || a == "--goto")
    }

    pub fn comment(&self) -> Option<&str> {
        self.args
            .windows(2)
            .find(|w| w[0] == "--comment")
            .map(|w| w[1].as_str())
    }
}

/// A table as listed: chains in listing order (built-in ones first) and all rules in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    pub table: Table,
    pub chains: Vec<String>,
    pub rules: Vec<SavedRule>,
}

impl TableState {
    pub fn empty(table: Table) -> TableState {
        TableState {
            table,
            chains: Vec::new(),
            rules: Vec::new(),
        }
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c == name)
    }

    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    /// Rules of `parent` that jump or go to a chain whose name starts with `prefix`.
    pub fn jumps_with_prefix<'a>(
        &'a self,
        parent: &'a str,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules_of(parent)
            .filter(move |r| r.jump_target().is_some_and(|t| t.starts_with(prefix)))
    }
}

/// Splits one restore/save line into tokens, honouring double quotes and backslash escapes.
pub fn tokenize(line: &str) -> Result<Vec<String>, Error> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars
                    .next()
                    .ok_or_else(|| Error::Parse(format!("trailing backslash in {line:?}")))?;
                cur.push(next);
                in_token = true;
            }
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    tokens.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if quoted {
        return Err(Error::Parse(format!("unterminated quote in {line:?}")));
    }
    if in_token {
        tokens.push(cur);
    }
    Ok(tokens)
}

/// Parses the output of `iptables-save -t TABLE` (only the section of `table` is read).
pub fn parse_save(table: Table, text: &str) -> Result<TableState, Error> {
    let mut state = TableState::empty(table);
    let mut in_table = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            in_table = name == table.name();
            continue;
        }
        if !in_table {
            continue;
        }
        if line == "COMMIT" {
            in_table = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix(':') {
            let name = rest.split_whitespace().next().unwrap_or_default();
            state.chains.push(name.to_string());
            continue;
        }
        let (packets, bytes, line) = match line.strip_prefix('[') {
            Some(rest) => {
                let (counters, rule) = rest
                    .split_once(']')
                    .ok_or_else(|| Error::Parse(format!("unclosed counters in {line:?}")))?;
                let (packets, bytes) = counters
                    .split_once(':')
                    .and_then(|(p, b)| Some((p.parse().ok()?, b.parse().ok()?)))
                    .ok_or_else(|| Error::Parse(format!("bad counters in {line:?}")))?;
                (Some(packets), Some(bytes), rule)
            }
            None => (None, None, line),
        };
        let tokens = tokenize(line)?;
        if tokens.len() >= 2 && tokens[0] == "-A" {
            state.rules.push(SavedRule {
                chain: tokens[1].clone(),
                args: tokens[2..].to_vec(),
                packets,
                bytes,
            });
        } else {
            return Err(Error::Parse(format!(
                "unexpected iptables-save line {line:?}"
            )));
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::render::{join_tokens, quote};
    use proptest::prelude::*;

    const SAVE: &str = "# Generated by iptables-save v1.8.9 (nf_tables)\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:netout--h1 - [0:0]\n-A FORWARD -s 10.0.0.2/32 -j netout--h1\n-A netout--h1 -m comment --comment \"a \\\"b\\\" c\" -j ACCEPT\n-A netout--h1 -g netout--h1--log\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n";

    #[test]
    fn counters_listed_with_c_are_kept_and_bad_ones_refused() {
        let text = "*filter\n:FORWARD ACCEPT [0:0]\n[12:720] -A FORWARD -j REJECT\n-A FORWARD -j ACCEPT\nCOMMIT\n";
        let s = parse_save(Table::Filter, text).unwrap();
        assert_eq!(s.rules[0].packets, Some(12));
        assert_eq!(s.rules[0].bytes, Some(720));
        assert_eq!(s.rules[0].jump_target(), Some("REJECT"));
        assert_eq!(s.rules[1].packets, None);
        assert_eq!(s.rules[1].bytes, None);
        for bad in [
            "[12:720 -A FORWARD -j REJECT",
            "[x:1] -A FORWARD -j REJECT",
            "[1:y] -A FORWARD -j REJECT",
        ] {
            let text = format!("*filter\n{bad}\nCOMMIT\n");
            assert!(parse_save(Table::Filter, &text).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_chains_and_jumps() {
        let s = parse_save(Table::Filter, SAVE).unwrap();
        assert_eq!(s.chains, vec!["INPUT", "FORWARD", "OUTPUT", "netout--h1"]);
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.rules[0].jump_target(), Some("netout--h1"));
        assert_eq!(s.rules[1].comment(), Some("a \"b\" c"));
        assert!(s.rules[2].is_goto());
        assert_eq!(s.jumps_with_prefix("FORWARD", "netout--").count(), 1);
        let n = parse_save(Table::Nat, SAVE).unwrap();
        assert_eq!(n.chains, vec!["PREROUTING"]);
        assert!(n.rules.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_save(Table::Filter, "*filter\nbogus line\nCOMMIT\n").is_err());
        assert!(tokenize("-A X \"open").is_err());
    }

    proptest! {
        #[test]
        fn quote_then_tokenize_round_trips(tokens in proptest::collection::vec("[ -~]{0,20}", 1..8)) {
            let line = join_tokens(&tokens);
            prop_assert_eq!(tokenize(&line).unwrap(), tokens);
        }

        #[test]
        fn quote_is_bare_only_for_safe_text(t in "[ -~]{1,20}") {
            let q = quote(&t);
            if q == t {
                prop_assert!(!t.contains(' ') && !t.contains('"'));
            }
        }
    }
}
