//! The CNI runtime side: load the network list, inject `metadata` and `runtimeConfig`, exec each
//! plugin with the CNI environment, ADD through the chain with `prevResult`, DEL in reverse. The
//! spec's types are `crate::cni`'s; results keep the keys they do not know, so any plugin's
//! result is passed on as it wrote it.

use super::protocol::{NetOutRule, PortMapping};
use crate::cni::{self, CniResult, Version};
use crate::os_error::OsError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A failure of the CNI chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The configuration directory or file cannot be read or is not a usable network list.
    Config { context: String, message: String },
    /// A plugin could not be run (`action`: "running <bin>", "writing stdin", ...).
    Exec {
        plugin: String,
        command: &'static str,
        os: OsError,
    },
    /// A plugin reported a failure (its error JSON's code when it printed one).
    Failed {
        plugin: String,
        command: &'static str,
        code: Option<u32>,
        detail: String,
    },
    /// ADD succeeded but printed no result.
    InvalidResult { plugin: String, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { context, message } => write!(f, "{context}: {message}"),
            Error::Exec {
                plugin,
                command,
                os,
            } => write!(f, "CNI plugin {plugin} {command}: {os}"),
            Error::Failed {
                plugin,
                command,
                detail,
                ..
            } => write!(f, "CNI plugin {plugin} {command} failed: {detail}"),
            Error::InvalidResult { plugin, message } => {
                write!(f, "CNI plugin {plugin} ADD: invalid result: {message}")
            }
        }
    }
}

impl std::error::Error for Error {}

fn config_error(file: &Path, message: impl fmt::Display) -> Error {
    Error::Config {
        context: format!("CNI config {}", file.display()),
        message: message.to_string(),
    }
}

/// A loaded network configuration list (a `.conf` is a list of one).
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub file: PathBuf,
    pub conf: cni::NetConfList,
}

/// The first `*.conflist` of `dir` (sorted by name), else its first `*.conf`; `None` when it
/// holds neither.
fn first_config(dir: &Path) -> Result<Option<(PathBuf, bool)>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Config {
            context: format!("reading CNI config dir {}", dir.display()),
            message: e.to_string(),
        })?
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
    Ok(match (lists.first(), confs.first()) {
        (Some(f), _) => Some(((*f).clone(), true)),
        (None, Some(f)) => Some(((*f).clone(), false)),
        (None, None) => None,
    })
}

/// Loads the network list of `dir` (see [`first_config`]).
pub fn load(dir: &Path) -> Result<Option<NetworkList>, Error> {
    let Some((file, is_list)) = first_config(dir)? else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::Config {
        context: format!("reading CNI config {}", file.display()),
        message: e.to_string(),
    })?;
    let bad = |m: &str| config_error(&file, m);
    let obj: Map<String, Value> = match serde_json::from_str(&text) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(bad("not a JSON object")),
        Err(e) => return Err(config_error(&file, e)),
    };
    let string = |k: &str| match obj.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(bad(&format!("missing string '{k}'"))),
    };
    let (name, cni_version) = (string("name")?, string("cniVersion")?);
    let plugins = if is_list {
        let Some(Value::Array(list)) = obj.get("plugins") else {
            return Err(bad("missing array 'plugins'"));
        };
        list.iter()
            .map(|p| match p {
                Value::Object(o) => Ok(o.clone()),
                _ => Err(bad("a plugin is not an object")),
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![obj]
    };
    if plugins.is_empty() {
        return Err(bad("no plugins"));
    }
    for p in &plugins {
        let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
        if t.is_empty() || t.contains('/') || t.starts_with('.') {
            return Err(bad(&format!("invalid plugin type {t:?}")));
        }
    }
    let conf = cni::NetConfList {
        cni_version,
        name,
        disable_check: None,
        disable_gc: None,
        plugins,
    };
    Ok(Some(NetworkList { file, conf }))
}

/// The `runtimeConfig` the networker passes to every plugin (the portmap plugin's
/// `portMappings` capability, and garden's NetOut rules).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub net_out_rules: Vec<NetOutRule>,
    #[serde(default, with = "super::protocol::cni_port_mappings")]
    pub port_mappings: Vec<PortMapping>,
}

/// What the runtime passes to every plugin of one container.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub plugin_dir: PathBuf,
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub metadata: Map<String, Value>,
    /// `None`: `{}` (a DEL without the ADD's cached runtime config).
    pub runtime_config: Option<RuntimeConfig>,
}

impl NetworkList {
    fn plugin_config(&self, i: usize, rt: &Runtime, prev: Option<&CniResult>) -> Value {
        let mut conf = self.conf.plugins[i].clone();
        conf.insert("cniVersion".into(), self.conf.cni_version.clone().into());
        conf.insert("name".into(), self.conf.name.clone().into());
        conf.insert("metadata".into(), Value::Object(rt.metadata.clone()));
        let runtime_config = match &rt.runtime_config {
            Some(rc) => serde_json::to_value(rc).expect("serialisable"),
            None => Value::Object(Map::new()),
        };
        conf.insert("runtimeConfig".into(), runtime_config);
        if let Some(p) = prev {
            conf.insert(
                "prevResult".into(),
                serde_json::to_value(p).expect("serialisable"),
            );
        }
        Value::Object(conf)
    }

    fn plugin_type(&self, i: usize) -> &str {
        self.conf.plugins[i]["type"].as_str().unwrap_or_default()
    }

    /// Starts the plugin that runs first for `command` (ADD: the first of the list, DEL: the
    /// last), before its configuration is known; see [`Started`].
    pub fn start(&self, command: &'static str, rt: &Runtime) -> Result<Started, Error> {
        let i = if command == "DEL" {
            self.conf.plugins.len() - 1
        } else {
            0
        };
        spawn(self.plugin_type(i), command, rt)
    }

    /// ADD through the chain; returns the last plugin's result. On failure nothing is undone here
    /// (the caller runs [`NetworkList::del`]).
    pub fn add(&self, rt: &Runtime) -> Result<CniResult, Error> {
        self.add_started(rt, self.start("ADD", rt)?)
    }

    /// ADD, the first plugin being `first` (from [`NetworkList::start`] with the same runtime).
    pub fn add_started(&self, rt: &Runtime, first: Started) -> Result<CniResult, Error> {
        let mut prev: Option<CniResult> = None;
        let mut first = Some(first);
        for i in 0..self.conf.plugins.len() {
            let conf = self.plugin_config(i, rt, prev.as_ref());
            let out = match first.take() {
                Some(started) => started.finish(&conf)?,
                None => exec(self.plugin_type(i), "ADD", rt, &conf)?,
            };
            let result = serde_json::from_slice(&out).map_err(|e| Error::InvalidResult {
                plugin: self.plugin_type(i).to_string(),
                message: e.to_string(),
            })?;
            prev = Some(result);
        }
        Ok(prev.unwrap_or_default())
    }

    /// DEL through the chain in reverse, with the cached ADD result as `prevResult` (CNI >= 0.4).
    /// Every plugin is called; the first error is returned.
    pub fn del(&self, rt: &Runtime, cached: Option<&CniResult>) -> Result<(), Error> {
        self.del_started(rt, cached, self.start("DEL", rt))
    }

    /// DEL, the first plugin to run (the last of the list) being `first` (from
    /// [`NetworkList::start`] with the same runtime; a failure to start it is DEL's error).
    pub fn del_started(
        &self,
        rt: &Runtime,
        cached: Option<&CniResult>,
        first: Result<Started, Error>,
    ) -> Result<(), Error> {
        let with_prev = Version::parse(&self.conf.cni_version)
            .map(|v| v >= Version(0, 4, 0))
            .unwrap_or(false);
        let prev = cached.filter(|_| with_prev);
        let mut first_err = None;
        let mut first = Some(first);
        for i in (0..self.conf.plugins.len()).rev() {
            let conf = self.plugin_config(i, rt, prev);
            let done = match first.take() {
                Some(started) => started.and_then(|s| s.finish(&conf)),
                None => exec(self.plugin_type(i), "DEL", rt, &conf),
            };
            if let Err(e) = done {
                log::warn!("{e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

fn exec(plugin: &str, command: &'static str, rt: &Runtime, conf: &Value) -> Result<Vec<u8>, Error> {
    spawn(plugin, command, rt)?.finish(conf)
}

/// A plugin process started before its configuration is known, so that its start (exec,
/// runtime set-up: a few ms) overlaps other work. A plugin reads its configuration from stdin
/// before it acts, so it does nothing until [`Started::finish`] writes it; dropped unused, it
/// is killed (and a plugin whose stdin closes empty fails without acting).
pub struct Started {
    plugin: String,
    command: &'static str,
    child: Option<Child>,
}

fn spawn(plugin: &str, command: &'static str, rt: &Runtime) -> Result<Started, Error> {
    let bin = rt.plugin_dir.join(plugin);
    let child = Command::new(&bin)
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
        .map_err(|e| Error::Exec {
            plugin: plugin.to_string(),
            command,
            os: OsError::io(format!("running {}", bin.display()), &e),
        })?;
    Ok(Started {
        plugin: plugin.to_string(),
        command,
        child: Some(child),
    })
}

impl Started {
    /// Writes `conf` to the plugin's stdin and waits for its answer.
    fn finish(mut self, conf: &Value) -> Result<Vec<u8>, Error> {
        let mut child = self.child.take().expect("finished once");
        let os_error = |context: &str, e: std::io::Error| Error::Exec {
            plugin: self.plugin.clone(),
            command: self.command,
            os: OsError::io(context, &e),
        };
        let input = serde_json::to_vec(conf).expect("serialisable");
        let wrote = child.stdin.take().expect("piped").write_all(&input);
        let out = child
            .wait_with_output()
            .map_err(|e| os_error("waiting", e))?;
        if out.status.success() {
            wrote.map_err(|e| os_error("writing stdin", e))?;
            return Ok(out.stdout);
        }
        Err(failure(&self.plugin, self.command, &out))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A failed plugin run: the spec's error object on stdout (`{"code", "msg", "details"}`), else
/// its stderr, else its exit status.
fn failure(plugin: &str, command: &'static str, out: &std::process::Output) -> Error {
    let reported = serde_json::from_slice::<cni::Error>(&out.stdout).ok();
    let detail = match &reported {
        Some(e) if !e.details.is_empty() => format!("{}: {}", e.msg, e.details),
        Some(e) => e.msg.clone(),
        None => {
            let s = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if s.is_empty() {
                format!("exit status {}", out.status)
            } else {
                s
            }
        }
    };
    Error::Failed {
        plugin: plugin.to_string(),
        command,
        code: reported.map(|e| e.code),
        detail,
    }
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
        let l = load(d.path()).unwrap().unwrap().conf;
        assert_eq!((l.name.as_str(), l.plugins.len()), ("a", 1));
        std::fs::write(
            d.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        let l = load(d.path()).unwrap().unwrap().conf;
        assert_eq!((l.name.as_str(), l.plugins.len()), ("b", 2));
        std::fs::write(
            d.path().join("00-c.conflist"),
            r#"{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"../evil"}]}"#,
        )
        .unwrap();
        let e = load(d.path()).unwrap_err();
        assert!(e.to_string().contains("invalid plugin type"), "{e}");
        std::fs::write(
            d.path().join("00-c.conflist"),
            r#"{"cniVersion":"1.0.0","plugins":[]}"#,
        )
        .unwrap();
        let e = load(d.path()).unwrap_err();
        assert!(e.to_string().contains("missing string 'name'"), "{e}");
    }

    #[test]
    fn plugins_get_metadata_runtime_config_and_the_previous_result() {
        let list = NetworkList {
            file: "x.conflist".into(),
            conf: serde_json::from_str(
                r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"overlay","mtu":1400}]}"#,
            )
            .unwrap(),
        };
        let mut metadata = Map::new();
        metadata.insert("policy_group_id".into(), "app".into());
        let rt = Runtime {
            plugin_dir: "/p".into(),
            container_id: "h".into(),
            netns: "/n".into(),
            ifname: "eth0".into(),
            metadata,
            runtime_config: Some(RuntimeConfig {
                net_out_rules: vec![],
                port_mappings: vec![PortMapping {
                    host_port: 61000,
                    container_port: 8080,
                }],
            }),
        };
        let prev: CniResult = serde_json::from_str(r#"{"cniVersion":"1.0.0","x":1}"#).unwrap();
        let conf = list.plugin_config(0, &rt, Some(&prev));
        assert_eq!(
            conf.to_string(),
            r#"{"cniVersion":"1.0.0","metadata":{"policy_group_id":"app"},"mtu":1400,"name":"net","prevResult":{"cniVersion":"1.0.0","dns":{},"x":1},"runtimeConfig":{"netOutRules":[],"portMappings":[{"containerPort":8080,"hostPort":61000,"protocol":"tcp"}]},"type":"overlay"}"#
        );
        let rt = Runtime {
            runtime_config: None,
            ..rt
        };
        assert_eq!(
            list.plugin_config(0, &rt, None)["runtimeConfig"],
            serde_json::json!({})
        );
    }
}
