//! The plugin side of CNI: read the environment and stdin, dispatch the command, print the result
//! or the error JSON, exit with the spec's status.

use super::{check_version, code, CniResult, Command, Env, Error, NetConf, Version};
use std::io::{Read, Write};

/// One plugin's commands. `raw` is the exact stdin, for plugin-specific keys.
pub trait Plugin {
    fn add(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<CniResult, Error>;
    fn del(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), Error>;
    fn check(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), Error>;
    fn gc(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), Error>;
    fn status(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), Error>;
}

/// What one invocation prints and its exit status.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub status: i32,
}

/// Runs one invocation from explicit inputs (the testable core of [`main`]).
pub fn invoke(
    plugin: &dyn Plugin,
    getenv: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Outcome {
    let mut version = String::from("1.1.0");
    let result = (|| -> Result<Option<String>, Error> {
        let env = Env::parse(&getenv)?;
        if env.command == Command::Version {
            // stdin may carry {"cniVersion": ...}; answer in that version when it is one of ours.
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(stdin) {
                if let Some(cv) = v.get("cniVersion").and_then(|c| c.as_str()) {
                    if check_version(cv).is_ok() {
                        version = cv.to_string();
                    }
                }
            }
            return Ok(Some(super::version_info(&version).to_string()));
        }
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            Error::new(
                code::DECODE_FAILURE,
                "decoding network configuration",
                e.to_string(),
            )
        })?;
        let v = check_version(&conf.cni_version)?;
        version = conf.cni_version.clone();
        if matches!(env.command, Command::Gc | Command::Status) && v < Version(1, 1, 0) {
            return Err(Error::new(
                code::INCOMPATIBLE_VERSION,
                format!("{} needs cniVersion 1.1.0", env.command.as_str()),
                "",
            ));
        }
        match env.command {
            Command::Add => {
                let r = plugin.add(&env, &conf, stdin)?;
                Ok(Some(
                    serde_json::to_string(&r.for_version(&conf.cni_version)).map_err(|e| {
                        Error::new(code::IO_FAILURE, "encoding result", e.to_string())
                    })?,
                ))
            }
            Command::Del => plugin.del(&env, &conf, stdin).map(|_| None),
            Command::Check => plugin.check(&env, &conf, stdin).map(|_| None),
            Command::Gc => plugin.gc(&env, &conf, stdin).map(|_| None),
            Command::Status => plugin.status(&env, &conf, stdin).map(|_| None),
            Command::Version => unreachable!(),
        }
    })();
    match result {
        Ok(out) => Outcome {
            stdout: out.unwrap_or_default(),
            status: 0,
        },
        Err(mut e) => {
            e.cni_version = version;
            Outcome {
                stdout: serde_json::to_string(&e).unwrap_or_default(),
                status: 1,
            }
        }
    }
}

/// The whole main of a plugin binary.
pub fn main(plugin: &dyn Plugin) -> ! {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let outcome = invoke(plugin, |k| std::env::var(k).ok(), &stdin);
    let mut out = std::io::stdout();
    let _ = out.write_all(outcome.stdout.as_bytes());
    if !outcome.stdout.is_empty() {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
    std::process::exit(outcome.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fails;
    impl Plugin for Fails {
        fn add(&self, _: &Env, _: &NetConf, _: &[u8]) -> Result<CniResult, Error> {
            Err(Error::new(100, "nope", "because"))
        }
        fn del(&self, _: &Env, _: &NetConf, _: &[u8]) -> Result<(), Error> {
            Ok(())
        }
        fn check(&self, _: &Env, _: &NetConf, _: &[u8]) -> Result<(), Error> {
            Ok(())
        }
        fn gc(&self, _: &Env, _: &NetConf, _: &[u8]) -> Result<(), Error> {
            Ok(())
        }
        fn status(&self, _: &Env, _: &NetConf, _: &[u8]) -> Result<(), Error> {
            Ok(())
        }
    }

    fn env(cmd: &'static str) -> impl Fn(&str) -> Option<String> {
        move |k| match k {
            "CNI_COMMAND" => Some(cmd.into()),
            "CNI_CONTAINERID" => Some("c".into()),
            "CNI_NETNS" => Some("/x".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            _ => None,
        }
    }

    #[test]
    fn errors_are_spec_json_with_exit_status_1() {
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#;
        let o = invoke(&Fails, env("ADD"), conf);
        assert_eq!(o.status, 1);
        let e: Error = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!((e.code, e.cni_version.as_str()), (100, "1.0.0"));
        let o = invoke(&Fails, env("ADD"), b"{not json");
        assert_eq!(serde_json::from_str::<Error>(&o.stdout).unwrap().code, 6);
        let o = invoke(
            &Fails,
            env("ADD"),
            br#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#,
        );
        assert_eq!(serde_json::from_str::<Error>(&o.stdout).unwrap().code, 1);
        let o = invoke(&Fails, env("GC"), conf);
        assert_eq!(serde_json::from_str::<Error>(&o.stdout).unwrap().code, 1);
        let o = invoke(&Fails, env("DEL"), conf);
        assert_eq!((o.status, o.stdout.as_str()), (0, ""));
        let o = invoke(&Fails, env("VERSION"), br#"{"cniVersion":"1.0.0"}"#);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"][2], "1.1.0");
    }
}
