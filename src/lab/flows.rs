//! `netman-lab flows`: the cells' flow logs (`cell-N/flows.log`) merged by time, filtered, and
//! printed readably (or as the JSON lines themselves); `--follow` keeps printing new lines.

use serde_json::Value;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only lines where this app is the source or the destination.
    pub app: Option<String>,
    /// Only denied (and audit: would be denied) lines.
    pub denied: bool,
}

impl Filter {
    pub fn keeps(&self, v: &Value) -> bool {
        let app_ok = self
            .app
            .as_deref()
            .is_none_or(|a| v["src"]["app"] == a || v["dst"]["app"] == a);
        let verdict_ok = !self.denied || v["verdict"] == "denied" || v["verdict"] == "audit";
        app_ok && verdict_ok
    }
}

fn endpoint(e: &Value) -> String {
    let ip = e["ip"].as_str().unwrap_or("?");
    let at = match e["port"].as_u64() {
        Some(p) => format!("{ip}:{p}"),
        None => ip.to_string(),
    };
    match e["app"].as_str() {
        Some(app) => format!("{app} ({at})"),
        None => at,
    }
}

fn rule(r: &Value, egress: bool) -> String {
    match r["kind"].as_str().unwrap_or("?") {
        "policy" => {
            let (s, e) = (&r["ports"]["start"], &r["ports"]["end"]);
            let ports = if s == e {
                s.to_string()
            } else {
                format!("{s}-{e}")
            };
            format!(
                "policy {} -> {} {} {ports}",
                r["source"].as_str().unwrap_or("?"),
                r["destination"].as_str().unwrap_or("?"),
                r["protocol"].as_str().unwrap_or("?")
            )
        }
        "netout" => format!("netout rule {}", r["index"]),
        "security_group" => format!(
            "security group {} ({}) rule {} {}",
            r["name"].as_str().unwrap_or("?"),
            r["guid"].as_str().unwrap_or("?"),
            r["index"],
            r["protocol"].as_str().unwrap_or("?")
        ),
        "deny_network" => "deny network".into(),
        "unknown_source" => "refused: source is no known container".into(),
        "default_deny" if egress => "default deny (no rule allows it)".into(),
        "default_deny" => "default deny (no policy)".into(),
        other => other.replace('_', " "),
    }
}

/// One line for people: time, cell, verdict, direction, protocol, who to whom, the rule.
pub fn readable(v: &Value) -> String {
    let direction = match v["direction"].as_str() {
        Some("c2c_ingress") => "c2c",
        Some(other) => other,
        None => "?",
    };
    format!(
        "{} {} {:<7} {:<6} {} {} -> {}   {}",
        v["time"].as_str().unwrap_or("?"),
        v["cell"].as_str().unwrap_or("?"),
        v["verdict"].as_str().unwrap_or("?").to_uppercase(),
        direction,
        v["protocol"].as_str().unwrap_or("?"),
        endpoint(&v["src"]),
        endpoint(&v["dst"]),
        rule(&v["rule"], v["direction"] == "egress")
    )
}

fn logs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("flows.log"))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Where reading a log stopped: the file (a rotation makes a new one) and the offset in it.
#[derive(Debug, Clone, Copy, Default)]
struct Pos {
    inode: u64,
    offset: u64,
}

/// Reads the new complete lines of `path` from `pos`, moving it on.
fn read_from(path: &Path, pos: &mut Pos) -> Vec<Value> {
    use std::os::unix::fs::MetadataExt;
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let (inode, len) = f.metadata().map(|m| (m.ino(), m.len())).unwrap_or_default();
    if inode != pos.inode || len < pos.offset {
        *pos = Pos { inode, offset: 0 }; // rotated
    }
    let offset = &mut pos.offset;
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if !line.ends_with('\n') {
            break; // written half: next time
        }
        *offset += line.len() as u64;
        if let Ok(v) = serde_json::from_str::<Value>(line.trim_end()) {
            out.push(v);
        }
        line.clear();
    }
    out
}

fn print(mut batch: Vec<Value>, filter: &Filter, json: bool) {
    batch.retain(|v| filter.keeps(v));
    batch.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    for v in batch {
        if json {
            println!("{v}");
        } else {
            println!("{}", readable(&v));
        }
    }
}

pub fn run(dir: &Path, filter: &Filter, follow: bool, json: bool) -> Result<(), String> {
    let files = logs(dir);
    if files.is_empty() && !follow {
        return Err(format!(
            "no flow logs under {} (is the lab up?)",
            dir.display()
        ));
    }
    let mut offsets: Vec<(PathBuf, Pos)> = files.into_iter().map(|p| (p, Pos::default())).collect();
    loop {
        let mut batch = Vec::new();
        for (path, offset) in offsets.iter_mut() {
            batch.extend(read_from(path, offset));
        }
        print(batch, filter, json);
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
        for path in logs(dir) {
            if !offsets.iter().any(|(p, _)| *p == path) {
                offsets.push((path, Pos::default()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_read_as_who_reached_whom_and_why() {
        let denied = json!({"time": "2026-12-06T09:00:00.000Z", "cell": "cell-2", "verdict": "denied",
            "direction": "c2c_ingress", "protocol": "tcp",
            "src": {"ip": "10.255.1.2", "port": 40000, "app": "frontend"},
            "dst": {"ip": "10.255.2.3", "port": 8080, "app": "backend"},
            "rule": {"kind": "default_deny"}});
        assert_eq!(
            readable(&denied),
            "2026-12-06T09:00:00.000Z cell-2 DENIED  c2c    tcp frontend (10.255.1.2:40000) -> backend (10.255.2.3:8080)   default deny (no policy)"
        );
        let mut allowed = denied.clone();
        allowed["verdict"] = json!("allowed");
        allowed["rule"] = json!({"kind": "policy", "source": "frontend", "destination": "backend",
            "protocol": "tcp", "ports": {"start": 8080, "end": 8080}});
        assert!(readable(&allowed).ends_with("policy frontend -> backend tcp 8080"));
        let mut egress = allowed.clone();
        egress["rule"] = json!({"kind": "security_group", "guid": "g-1", "name": "dns",
            "index": 2, "protocol": "udp", "description": ""});
        egress["direction"] = json!("egress");
        assert!(
            readable(&egress).ends_with("security group dns (g-1) rule 2 udp"),
            "{}",
            readable(&egress)
        );
        egress["rule"] = json!({"kind": "default_deny"});
        assert!(readable(&egress).ends_with("default deny (no rule allows it)"));
        let f = Filter {
            app: Some("backend".into()),
            denied: true,
        };
        assert!(f.keeps(&denied) && !f.keeps(&allowed));
        assert!(!Filter {
            app: Some("other".into()),
            denied: false
        }
        .keeps(&denied));
    }

    #[test]
    fn only_complete_lines_are_read_and_a_rotation_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.log");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2").unwrap();
        let mut pos = Pos::default();
        assert_eq!(read_from(&path, &mut pos), vec![json!({"a": 1})]);
        std::fs::rename(&path, dir.path().join("flows.log.1")).unwrap();
        std::fs::write(&path, "{\"a\":3}\n{\"a\":4}\n").unwrap();
        assert_eq!(
            read_from(&path, &mut pos),
            vec![json!({"a": 3}), json!({"a": 4})]
        );
        assert_eq!(read_from(&path, &mut pos), Vec::<Value>::new());
    }
}
