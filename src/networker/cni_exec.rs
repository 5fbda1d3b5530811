//! The CNI runtime side: load the network list, inject `metadata` and `runtimeConfig`, exec each
//! plugin with the CNI environment, ADD through the chain with `prevResult`, DEL in reverse.
//! Results are handled as `serde_json::Value` (the spec types live in `crate::cni`).

use serde_json::{json, Map, Value};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A loaded network configuration list.
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Map<String, Value>>,
}

/// Loads the first `*.conflist` (sorted by name) of `dir`, else the first `*.conf` as a list of
/// one. `None` when the directory holds neither.
pub fn load(dir: &Path) -> Result<Option<NetworkList>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading CNI config dir {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let ext = |p: &PathBuf, e: &str| p.extension().is_some_and(|x| x == e);
    let lists: Vec<&PathBuf> = files.iter().filter(|p| ext(p, "conflist")).collect();
    let confs: Vec<&PathBuf> = files.iter().filter(|p| ext(p, "conf")).collect();
    if lists.len() + confs.len() > 1 {
        log::warn!(
            "more than one CNI config in {}; using the first",
            dir.display()
        );
    }
    let (file, is_list) = match (lists.first(), confs.first()) {
        (Some(f), _) => ((*f).clone(), true),
        (None, Some(f)) => ((*f).clone(), false),
        (None, None) => return Ok(None),
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("reading CNI config {}: {e}", file.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("CNI config {}: {e}", file.display()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("CNI config {}: not a JSON object", file.display()))?;
    let get_str = |k: &str| -> Result<String, String> {
        obj.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("CNI config {}: missing string '{k}'", file.display()))
    };
    let name = get_str("name")?;
    let cni_version = get_str("cniVersion")?;
    let plugins = if is_list {
        obj.get("plugins")
            .and_then(|p| p.as_array())
            .ok_or_else(|| format!("CNI config {}: missing array 'plugins'", file.display()))?
            .iter()
            .map(|p| {
                p.as_object().cloned().ok_or_else(|| {
                    format!("CNI config {}: a plugin is not an object", file.display())
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![obj.clone()]
    };
    if plugins.is_empty() {
        return Err(format!("CNI config {}: no plugins", file.display()));
    }
    for p in &plugins {
        let t = p.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        if t.is_empty() || t.contains('/') || t.starts_with('.') {
            return Err(format!(
                "CNI config {}: invalid plugin type {t:?}",
                file.display()
            ));
        }
    }
    Ok(Some(NetworkList {
        file,
        name,
        cni_version,
        plugins,
    }))
}

/// What the runtime passes to every plugin of one container.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub plugin_dir: PathBuf,
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub metadata: Value,
    pub runtime_config: Value,
}

fn version_tuple(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

impl NetworkList {
    fn plugin_config(&self, i: usize, rt: &Runtime, prev: Option<&Value>) -> Value {
        let mut conf = self.plugins[i].clone();
        conf.insert("cniVersion".into(), json!(self.cni_version));
        conf.insert("name".into(), json!(self.name));
        conf.insert("metadata".into(), rt.metadata.clone());
        conf.insert("runtimeConfig".into(), rt.runtime_config.clone());
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        Value::Object(conf)
    }

    fn plugin_type(&self, i: usize) -> &str {
        self.plugins[i]["type"].as_str().unwrap_or_default()
    }

    /// ADD through the chain; returns the last plugin's result. On failure nothing is undone here
    /// (the caller runs [`NetworkList::del`]).
    pub fn add(&self, rt: &Runtime) -> Result<Value, String> {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins.len() {
            let conf = self.plugin_config(i, rt, prev.as_ref());
            let out = exec(self.plugin_type(i), "ADD", rt, &conf)?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| {
                format!(
                    "CNI plugin {} ADD: invalid result: {e}",
                    self.plugin_type(i)
                )
            })?;
            prev = Some(result);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL through the chain in reverse, with the cached ADD result as `prevResult` (CNI >= 0.4).
    /// Every plugin is called; the first error is returned.
    pub fn del(&self, rt: &Runtime, cached: Option<&Value>) -> Result<(), String> {
        let prev = if version_tuple(&self.cni_version) >= (0, 4, 0) {
            cached.filter(|v| !v.is_null())
        } else {
            None
        };
        let mut first_err = None;
        for i in (0..self.plugins.len()).rev() {
            let conf = self.plugin_config(i, rt, prev);
            if let Err(e) = exec(self.plugin_type(i), "DEL", rt, &conf) {
                log::warn!("{e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

fn exec(plugin: &str, command: &str, rt: &Runtime, conf: &Value) -> Result<Vec<u8>, String> {
    let bin = rt.plugin_dir.join(plugin);
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &rt.container_id)
        .env("CNI_NETNS", &rt.netns)
        .env("CNI_IFNAME", &rt.ifname)
        .env("CNI_PATH", &rt.plugin_dir)
        .env_remove("CNI_ARGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "CNI plugin {plugin} {command}: running {}: {e}",
                bin.display()
            )
        })?;
    let input = serde_json::to_vec(conf).expect("serialisable");
    let wrote = child.stdin.take().expect("piped").write_all(&input);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("CNI plugin {plugin} {command}: {e}"))?;
    if out.status.success() {
        if let Err(e) = wrote {
            return Err(format!("CNI plugin {plugin} {command}: writing stdin: {e}"));
        }
        return Ok(out.stdout);
    }
    // The spec's error object on stdout: {"code", "msg", "details"}.
    let detail = serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| {
            let msg = v.get("msg")?.as_str()?.to_string();
            Some(match v.get("details").and_then(|d| d.as_str()) {
                Some(d) if !d.is_empty() => format!("{msg}: {d}"),
                _ => msg,
            })
        })
        .unwrap_or_else(|| {
            let s = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if s.is_empty() {
                format!("exit status {}", out.status)
            } else {
                s
            }
        });
    Err(format!("CNI plugin {plugin} {command} failed: {detail}"))
}

/// The first IPv4 address of a result (1.0: `ips[].address`; 0.2: `ip4.ip`) and the name of
/// its container interface when the result tells it.
pub fn result_ipv4(result: &Value) -> Option<(Ipv4Addr, Option<String>)> {
    if let Some(ips) = result.get("ips").and_then(|v| v.as_array()) {
        for ip in ips {
            let addr = ip
                .get("address")
                .and_then(|a| a.as_str())
                .unwrap_or_default();
            let host = addr.split('/').next().unwrap_or_default();
            if let Ok(v4) = host.parse::<Ipv4Addr>() {
                let iface = ip
                    .get("interface")
                    .and_then(|i| i.as_u64())
                    .and_then(|i| {
                        result
                            .get("interfaces")?
                            .get(i as usize)?
                            .get("name")?
                            .as_str()
                    })
                    .map(str::to_string);
                return Some((v4, iface));
            }
        }
    }
    let addr = result.get("ip4")?.get("ip")?.as_str()?;
    let v4 = addr.split('/').next()?.parse().ok()?;
    Some((v4, None))
}

/// The DNS nameservers of a result.
pub fn result_nameservers(result: &Value) -> Vec<String> {
    result
        .get("dns")
        .and_then(|d| d.get("nameservers"))
        .and_then(|n| n.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_first_conflist_or_conf() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).unwrap().is_none());
        std::fs::write(
            d.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge"}"#,
        )
        .unwrap();
        let l = load(d.path()).unwrap().unwrap();
        assert_eq!((l.name.as_str(), l.plugins.len()), ("a", 1));
        std::fs::write(
            d.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        let l = load(d.path()).unwrap().unwrap();
        assert_eq!((l.name.as_str(), l.plugins.len()), ("b", 2));
        std::fs::write(
            d.path().join("00-c.conflist"),
            r#"{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"../evil"}]}"#,
        )
        .unwrap();
        assert!(load(d.path()).unwrap_err().contains("invalid plugin type"));
    }

    #[test]
    fn parses_result_addresses() {
        let r = json!({"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"eth0","sandbox":"/x"}],
            "ips":[{"address":"10.1.0.5/24","interface":1}],"dns":{"nameservers":["10.1.0.1"]}});
        assert_eq!(
            result_ipv4(&r),
            Some(("10.1.0.5".parse().unwrap(), Some("eth0".into())))
        );
        assert_eq!(result_nameservers(&r), vec!["10.1.0.1"]);
        let r = json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.6/24"}});
        assert_eq!(result_ipv4(&r), Some(("10.1.0.6".parse().unwrap(), None)));
        assert_eq!(
            result_ipv4(&json!({"ips":[{"address":"fd00::1/64"}]})),
            None
        );
    }
}
