//! Renders every template of every job in `bosh/jobs` with the job spec's defaults plus the minimum
//! required properties (Ruby's ERB through `bosh/scripts/render-template.rb`, which mimics the
//! director's `p`/`if_p`/`spec`/`link`), writes the results where the configs point (a temp dir,
//! via each job's `config_dir`), and feeds every rendered config to its binary's `--check-config`
//! (or, for the exec'd plugins, to the library's own parser). Certificates come from
//! `scripts/generate-certs`.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// The job spec, as JSON (Ruby parses the YAML: no YAML crate in the project).
fn spec(job: &str) -> Value {
    let out = run(Command::new("ruby")
        .args([
            "-ryaml",
            "-rjson",
            "-e",
            "puts YAML.safe_load(File.read(ARGV[0])).to_json",
        ])
        .arg(root().join("bosh/jobs").join(job).join("spec")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn render(job: &str, template: &str, context: &Value, tmp: &Path) -> Result<String, String> {
    let ctx = tmp.join(format!("context-{job}.json"));
    std::fs::write(&ctx, context.to_string()).unwrap();
    let out = run(Command::new("ruby")
        .arg(root().join("bosh/scripts/render-template.rb"))
        .arg(root().join("bosh/jobs").join(job))
        .arg(template)
        .arg(&ctx));
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Fixture {
    tmp: tempfile::TempDir,
    certs: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs");
        let out = run(Command::new(root().join("scripts/generate-certs")).arg(&certs));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Fixture { tmp, certs }
    }

    fn cert(&self, name: &str) -> String {
        read(&self.certs.join(name))
    }

    fn dir(&self, name: &str) -> String {
        let d = self.tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d.display().to_string()
    }

    /// The minimum properties each job needs (plus `config_dir` and data paths in the temp dir).
    fn context(&self, job: &str) -> Value {
        let config_dir = self.dir(&format!("jobs/{job}"));
        let data = self.dir(&format!("data/{job}"));
        let mut props = match job {
            "policy-server" => json!({
                "uaa_client_secret": "secret",
                "database": {"type": "postgres", "username": "netman", "password": "pw",
                             "host": "db.example", "name": "netman"},
                "ca_cert": self.cert("ca.crt"),
                "internal_server_cert": self.cert("policy-server.crt"),
                "internal_server_key": self.cert("policy-server.key"),
            }),
            "vxlan-policy-agent" => json!({
                "ca_cert": self.cert("ca.crt"),
                "client_cert": self.cert("policy-agent.crt"),
                "client_key": self.cert("policy-agent.key"),
                "cni_datastore_path": format!("{data}/store.json"),
            }),
            "overlay-controller" => json!({
                "ca_cert": self.cert("ca.crt"),
                "server_cert": self.cert("overlay-controller.crt"),
                "server_key": self.cert("overlay-controller.key"),
                "database": {"name": format!("{data}/leases.db")},
            }),
            "overlay-daemon" => json!({
                "ca_cert": self.cert("ca.crt"),
                "client_cert": self.cert("overlay-daemon.crt"),
                "client_key": self.cert("overlay-daemon.key"),
            }),
            "netman-dns" => json!({
                "ca_cert": self.cert("ca.crt"),
                "client_cert": self.cert("policy-agent.crt"),
                "client_key": self.cert("policy-agent.key"),
                "cni_datastore_path": format!("{data}/store.json"),
                "snapshot_file": format!("{data}/table-snapshot"),
            }),
            "garden-cni" | "netmon" => json!({}),
            other => panic!("job {other} has no test context: add one to tests/bosh_templates.rs"),
        };
        props["config_dir"] = json!(config_dir);
        json!({"properties": props, "spec": {"ip": "10.0.16.17", "name": job}})
    }
}

fn jobs() -> Vec<String> {
    let mut jobs: Vec<String> = std::fs::read_dir(root().join("bosh/jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    jobs.sort();
    jobs
}

/// Renders all templates of `job`; returns destination (relative to the job dir) -> file path.
/// The error of a template that must refuse `context`.
fn refused(f: &Fixture, job: &str, template: &str, context: &Value) -> String {
    render(job, template, context, f.tmp.path())
        .err()
        .unwrap_or_else(|| panic!("{job}/{template} rendered what it must refuse"))
}

fn render_job(f: &Fixture, job: &str, context: &Value) -> BTreeMap<String, PathBuf> {
    let spec = spec(job);
    assert_eq!(spec["name"], job, "spec name of {job}");
    let config_dir = PathBuf::from(context["properties"]["config_dir"].as_str().unwrap());
    let templates = spec["templates"].as_object().unwrap();
    assert!(!templates.is_empty(), "{job} has no templates");
    let mut rendered = BTreeMap::new();
    for (source, dest) in templates {
        let dest = dest.as_str().unwrap();
        let text = render(job, source, context, f.tmp.path())
            .unwrap_or_else(|e| panic!("{job}/{source}: {e}"));
        // config/x goes to config_dir/x (where the configs point); bin/x next to it.
        let path = match dest.strip_prefix("config/") {
            Some(rest) => config_dir.join(rest),
            None => config_dir.join(dest),
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        rendered.insert(dest.to_string(), path);
    }
    rendered
}

fn check_config(binary: &str, config: &Path) {
    // garden execs the networker with garden's own flag name for the config file.
    let flag = if binary.ends_with("garden-external-networker") {
        "--configFile"
    } else {
        "--config"
    };
    let out = run(Command::new(binary)
        .arg(flag)
        .arg(config)
        .arg("--check-config"));
    assert!(
        out.status.success(),
        "{binary} --check-config {}: {}\n{}",
        config.display(),
        String::from_utf8_lossy(&out.stderr),
        read(config)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
}

fn bin(job_binary: &str) -> &'static str {
    match job_binary {
        "policy-server" => env!("CARGO_BIN_EXE_policy-server"),
        "vxlan-policy-agent" => env!("CARGO_BIN_EXE_vxlan-policy-agent"),
        "overlay-controller" => env!("CARGO_BIN_EXE_overlay-controller"),
        "overlay-daemon" => env!("CARGO_BIN_EXE_overlay-daemon"),
        "netmon" => env!("CARGO_BIN_EXE_netmon"),
        "netman-dns" => env!("CARGO_BIN_EXE_netman-dns"),
        "overlay-watchdog" => env!("CARGO_BIN_EXE_overlay-watchdog"),
        "garden-external-networker" => env!("CARGO_BIN_EXE_garden-external-networker"),
        other => panic!("no binary {other}"),
    }
}

/// Each bpm process runs a binary of the netman package, with flags that binary accepts.
fn check_bpm(job: &str, path: &Path) {
    let out = run(Command::new("ruby")
        .args([
            "-ryaml",
            "-rjson",
            "-e",
            "puts YAML.safe_load(File.read(ARGV[0])).to_json",
        ])
        .arg(path));
    assert!(
        out.status.success(),
        "{job} bpm.yml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bpm: Value = serde_json::from_slice(&out.stdout).unwrap();
    let processes = bpm["processes"].as_array().unwrap();
    assert!(!processes.is_empty());
    for p in processes {
        let exe = p["executable"].as_str().unwrap();
        let name = exe
            .strip_prefix("/var/vcap/packages/netman/bin/")
            .unwrap_or_else(|| panic!("{job}: {exe} is not in the netman package"));
        assert_eq!(p["name"], name, "{job}: process name");
        let packaged = read(&root().join("bosh/packages/netman/packaging"));
        assert!(packaged.contains(name), "{name} is not packaged");
        // --help parses every flag the binary knows; the rendered flags must be among them.
        let help = run(Command::new(bin(name)).arg("--help"));
        let help = String::from_utf8_lossy(&help.stdout);
        for arg in p["args"].as_array().unwrap() {
            let flag = arg.as_str().unwrap().split('=').next().unwrap();
            assert!(help.contains(flag), "{job}: {name} has no flag {flag}");
        }
    }
}

#[test]
fn every_template_renders_and_every_config_passes_check_config() {
    let f = Fixture::new();
    let mut checked = Vec::new();
    for job in jobs() {
        let context = f.context(&job);
        let rendered = render_job(&f, &job, &context);
        for (dest, path) in &rendered {
            let text = read(path);
            if dest.ends_with(".json") || dest.ends_with(".conflist") {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{job}/{dest} is not JSON: {e}\n{text}"));
            }
            if dest.starts_with("bin/") {
                let out = run(Command::new("bash").arg("-n").arg(path));
                assert!(
                    out.status.success(),
                    "{job}/{dest}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if dest.ends_with(".crt") || dest.ends_with(".key") {
                let prop_set = !text.trim().is_empty();
                let json_refs = rendered
                    .iter()
                    .filter(|(d, _)| d.ends_with(".json"))
                    .any(|(_, p)| read(p).contains(path.to_str().unwrap()));
                assert!(
                    !json_refs || prop_set,
                    "{job}: config points to empty {dest}"
                );
            }
            if dest.ends_with("bpm.yml") {
                check_bpm(&job, path);
            }
        }
        match job.as_str() {
            "policy-server" | "vxlan-policy-agent" | "overlay-controller" | "overlay-daemon"
            | "netmon" | "netman-dns" => {
                check_config(bin(&job), &rendered[&format!("config/{job}.json")]);
            }
            "garden-cni" => {
                let adapter = &rendered["config/adapter.json"];
                check_config(bin("garden-external-networker"), adapter);
                let c: netman::networker::Config = netman::config::load(adapter)
                    .unwrap_or_else(|e| panic!("adapter.json: {e}\n{}", read(adapter)));
                assert_eq!((c.start_port, c.total_ports), (61000, 5000));
                assert_eq!(
                    c.explicit_ports().range,
                    (61000, 65535),
                    "the pool by default"
                );
                assert!(c.explicit_ports().allow.is_empty());
                assert_eq!(c.vtep_name, "silk-vtep");
                assert_eq!(c.instance_address.unwrap().to_string(), "10.0.16.17");
                // The CNI config dir the networker reads is where the conflist was rendered.
                let conflist = &rendered["config/cni/10-netman.conflist"];
                assert_eq!(Path::new(&c.cni_config_dir), conflist.parent().unwrap());
                let v: Value = serde_json::from_str(&read(conflist)).unwrap();
                let plugin = &v["plugins"][0];
                assert_eq!(plugin["type"], "overlay");
                let conf: netman::overlay::plugin::OverlayConf =
                    serde_json::from_value(plugin.clone()).unwrap();
                assert_eq!(conf.daemon_port, 23954);
            }
            other => panic!("job {other}: no config check"),
        }
        checked.push(job);
    }
    assert_eq!(
        checked,
        [
            "garden-cni",
            "netman-dns",
            "netmon",
            "overlay-controller",
            "overlay-daemon",
            "policy-server",
            "vxlan-policy-agent"
        ]
    );
}

#[test]
fn spec_defaults_are_the_originals() {
    let f = Fixture::new();
    let cfg = |job: &str, file: &str| -> Value {
        let r = render_job(&f, job, &f.context(job));
        serde_json::from_str(&read(&r[file])).unwrap()
    };
    let ps = cfg("policy-server", "config/policy-server.json");
    assert_eq!(ps["listen_port"], 4002);
    assert_eq!(ps["internal_listen_port"], 4003);
    assert_eq!(ps["debug_server_port"], 31821);
    assert_eq!(ps["tag_length"], 2);
    assert_eq!(ps["cleanup_interval_seconds"], 3600);
    assert_eq!(ps["max_policies_per_app_source"], 150);
    assert_eq!(ps["auth"]["uaa_client"], "network-policy");
    assert_eq!(ps["auth"]["uaa_url"], "https://uaa.service.cf.internal");
    assert_eq!(ps["auth"]["uaa_port"], 8443);
    assert_eq!(ps["database"]["connect_timeout_seconds"], 120);
    assert_eq!(ps["database"]["max_open_connections"], 200);
    let vpa = cfg("vxlan-policy-agent", "config/vxlan-policy-agent.json");
    assert_eq!(
        vpa["policy_server_url"],
        "https://policy-server.service.cf.internal:4003"
    );
    assert_eq!(vpa["poll_interval_seconds"], 5);
    assert_eq!(vpa["debug_server_port"], 8721);
    assert_eq!(vpa["force_policy_poll_cycle_port"], 8722);
    let oc = cfg("overlay-controller", "config/overlay-controller.json");
    assert_eq!(oc["listen_port"], 4103);
    assert_eq!(oc["network"], "10.255.0.0/16");
    assert_eq!(oc["lease_expiration_seconds"], 168 * 3600);
    let od = cfg("overlay-daemon", "config/overlay-daemon.json");
    assert_eq!(od["vtep_name"], "silk-vtep");
    assert_eq!(od["vtep_port"], 4789);
    assert_eq!(od["poll_interval_seconds"], 30);
    assert_eq!(od["listen_port"], 23954);
    assert_eq!(od["debug_server_port"], 22233);
    assert_eq!(od["underlay_ip"], "10.0.16.17");
    assert_eq!(
        od["controller_url"],
        "https://overlay-controller.service.cf.internal:4103"
    );
}

#[test]
fn properties_links_and_bad_values() {
    let f = Fixture::new();
    // A required property missing: BOSH's message names it.
    let mut ctx = f.context("policy-server");
    ctx["properties"]["database"]
        .as_object_mut()
        .unwrap()
        .remove("type");
    let err = refused(&f, "policy-server", "policy-server.json.erb", &ctx);
    assert!(err.contains("Can't find property 'database.type'"), "{err}");
    // Values the original's template refused.
    for (key, value, msg) in [
        ("tag_length", json!(3), "tag_length must be 1 or 2"),
        (
            "policy_cleanup_interval",
            json!(0),
            "policy_cleanup_interval",
        ),
        ("log_level", json!("loud"), "log_level"),
    ] {
        let mut ctx = f.context("policy-server");
        ctx["properties"][key] = value;
        let err = refused(&f, "policy-server", "policy-server.json.erb", &ctx);
        assert!(err.contains(msg), "{key}: {err}");
    }
    // mysql + TLS + Cloud Controller over https + external TLS.
    let mut ctx = f.context("policy-server");
    let p = &mut ctx["properties"];
    p["database"]["type"] = json!("mysql");
    p["database"]["require_ssl"] = json!(true);
    p["database"]["ca_cert"] = json!(f.cert("ca.crt"));
    p["cc_hostname"] = json!("cc.example");
    p["cc_ca_cert"] = json!(f.cert("ca.crt"));
    p["enable_tls"] = json!(true);
    p["server_cert"] = json!(f.cert("policy-server.crt"));
    p["server_key"] = json!(f.cert("policy-server.key"));
    let r = render_job(&f, "policy-server", &ctx);
    let text = read(&r["config/policy-server.json"]);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["cc_url"], "https://cc.example:9022");
    assert_eq!(v["database"]["require_ssl"], true);
    assert_eq!(v["enable_tls"], true);
    // mysql TLS needs the optional `mysql-tls` feature: check-config says so, or accepts it.
    let out = run(Command::new(bin("policy-server"))
        .arg("--config")
        .arg(&r["config/policy-server.json"])
        .arg("--check-config"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("mysql-tls"),
        "{stderr}"
    );

    // The overlay controller on a shared PostgreSQL database, with TLS to it.
    let mut ctx = f.context("overlay-controller");
    ctx["properties"]["database"] = json!({"type": "postgres", "username": "netman",
        "password": "secret", "host": "db.example", "port": 5433, "name": "netman",
        "require_ssl": true, "ca_cert": f.cert("ca.crt")});
    let r = render_job(&f, "overlay-controller", &ctx);
    let v: Value = serde_json::from_str(&read(&r["config/overlay-controller.json"])).unwrap();
    assert_eq!(v["database"]["type"], "postgres");
    assert_eq!(v["database"]["port"], 5433);
    assert_eq!(v["database"]["database_name"], "netman");
    assert_eq!(
        Path::new(v["database"]["ca_cert"].as_str().unwrap()),
        r["config/certs/database_ca.crt"]
    );
    check_config(
        bin("overlay-controller"),
        &r["config/overlay-controller.json"],
    );
    ctx["properties"]["database"]["type"] = json!("oracle");
    let err = refused(
        &f,
        "overlay-controller",
        "overlay-controller.json.erb",
        &ctx,
    );
    assert!(err.contains("database.type must be"), "{err}");

    // Links override properties.
    let mut ctx = f.context("overlay-daemon");
    ctx["links"] = json!({"overlay_network": {"properties":
        {"network": "10.240.0.0/12", "subnet_prefix_length": 26, "listen_port": 4444}}});
    ctx["spec"]["networks"] = json!({"underlay": {"ip": "192.0.2.9"}});
    ctx["properties"]["vxlan_network"] = json!("underlay");
    let r = render_job(&f, "overlay-daemon", &ctx);
    let v: Value = serde_json::from_str(&read(&r["config/overlay-daemon.json"])).unwrap();
    assert_eq!(v["overlay_network"], "10.240.0.0/12");
    assert_eq!(v["subnet_prefix_length"], 26);
    assert_eq!(v["underlay_ip"], "192.0.2.9");
    assert!(v["controller_url"].as_str().unwrap().ends_with(":4444"));
    check_config(bin("overlay-daemon"), &r["config/overlay-daemon.json"]);
    ctx["properties"]["vxlan_network"] = json!("nope");
    let err = refused(&f, "overlay-daemon", "overlay-daemon.json.erb", &ctx);
    assert!(err.contains("vxlan_network \"nope\""), "{err}");

    // The agent's staleness bound follows the linked server's tag quarantine; a quarantine of 0
    // (the original's reuse at once) has no bound to give and keeps the agent's default.
    for (quarantine, stale_after) in [(600, 600), (0, 3600)] {
        let mut ctx = f.context("vxlan-policy-agent");
        ctx["links"] = json!({"policy_server": {"properties":
            {"internal_listen_port": 4003, "tag_quarantine_seconds": quarantine}}});
        let r = render_job(&f, "vxlan-policy-agent", &ctx);
        let v: Value = serde_json::from_str(&read(&r["config/vxlan-policy-agent.json"])).unwrap();
        assert_eq!(
            v["policy_stale_after_seconds"], stale_after,
            "quarantine {quarantine}"
        );
        check_config(
            bin("vxlan-policy-agent"),
            &r["config/vxlan-policy-agent.json"],
        );
    }
}

#[test]
fn policy_server_pre_start_migrates_on_the_bootstrap_instance() {
    let f = Fixture::new();
    let db = PathBuf::from(f.dir("ps-db")).join("policy.db");
    let mut ctx = f.context("policy-server");
    ctx["properties"]["database"] = json!({"type": "sqlite", "name": db.display().to_string()});
    let r = render_job(&f, "policy-server", &ctx);
    check_config(bin("policy-server"), &r["config/policy-server.json"]);
    let script = read(&r["bin/pre-start"]).replace(
        "/var/vcap/packages/netman/bin/policy-server",
        bin("policy-server"),
    );
    let out = run(Command::new("bash").arg("-c").arg(&script));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The schema is there: the SQLite file has the policies table.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'policies'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);

    // Not the bootstrap instance: no migration.
    let db2 = PathBuf::from(f.dir("ps-db2")).join("policy.db");
    ctx["properties"]["database"]["name"] = json!(db2.display().to_string());
    ctx["spec"]["bootstrap"] = json!(false);
    let r = render_job(&f, "policy-server", &ctx);
    let script = read(&r["bin/pre-start"]).replace(
        "/var/vcap/packages/netman/bin/policy-server",
        bin("policy-server"),
    );
    let out = run(Command::new("bash").arg("-c").arg(&script));
    assert!(out.status.success());
    assert!(!db2.exists());
}

#[test]
fn agent_pre_start_removes_only_the_agents_nftables_table() {
    let f = Fixture::new();
    let ns =
        netman::lab::netns::NamedNetns::create(&format!("nm-bt-{}", std::process::id())).unwrap();
    let mut ctx = f.context("vxlan-policy-agent");
    ctx["properties"]["nft_path"] = json!("nft");
    let pre_start = render_job(&f, "vxlan-policy-agent", &ctx)["bin/pre-start"].clone();
    let nft = |script: &str| ns.exec(&["nft", script]);
    nft("add table ip netman_vpa").unwrap();
    nft("add chain ip netman_vpa forward").unwrap();
    nft("add table ip other").unwrap();
    let pre = pre_start.display().to_string();
    for _ in 0..2 {
        // Twice: with the table and (idempotent) without it.
        ns.exec(&["bash", &pre]).unwrap();
        assert!(nft("list table ip netman_vpa").is_err());
        assert!(
            nft("list table ip other").is_ok(),
            "another table was touched"
        );
    }
}

/// Issue 18 item 4: the NetIn host ports a container may ask for are the job's properties.
#[test]
fn garden_cni_netin_host_port_properties() {
    let f = Fixture::new();
    let mut ctx = f.context("garden-cni");
    ctx["properties"]["netin_host_port_range"] = json!({"start": 40000, "end": 40010});
    ctx["properties"]["netin_host_port_allow_list"] = json!([8443, 9443]);
    let adapter = render_job(&f, "garden-cni", &ctx)["config/adapter.json"].clone();
    let c: netman::networker::Config = netman::config::load(&adapter).unwrap();
    assert_eq!(c.explicit_ports().range, (40000, 40010));
    assert_eq!(
        c.explicit_ports().allow.into_iter().collect::<Vec<_>>(),
        [8443, 9443]
    );
}

#[test]
fn garden_cni_pre_start_removes_container_leftovers() {
    let f = Fixture::new();
    let data = PathBuf::from(f.dir("gc-data"));
    let p = |s: &str| data.join(s).display().to_string();
    let mut ctx = f.context("garden-cni");
    let props = &mut ctx["properties"];
    props["container_metadata_file"] = json!(p("container-metadata/store.json"));
    props["overlay_data_dir"] = json!(p("overlay"));
    props["cni_cache_dir"] = json!(p("cni-cache"));
    props["state_file"] = json!(p("garden-cni/state.json"));
    props["bind_mount_dir"] = json!(p("garden-cni/container-netns"));
    props["iptables_lock_file"] = json!(p("garden-cni/iptables.lock"));
    for d in [
        "container-metadata",
        "overlay/ipam",
        "cni-cache",
        "garden-cni",
    ] {
        std::fs::create_dir_all(data.join(d)).unwrap();
    }
    std::fs::write(data.join("container-metadata/store.json"), "{\"h\":{}}").unwrap();
    std::fs::write(data.join("overlay/ipam/10.255.1.2"), "h").unwrap();
    std::fs::write(data.join("garden-cni/state.json"), "{}").unwrap();
    std::fs::write(data.join("garden-cni/keep"), "").unwrap();
    let pre_start = render_job(&f, "garden-cni", &ctx)["bin/pre-start"].clone();
    let out = run(Command::new("bash").arg(&pre_start));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data.join("container-metadata/store.json").exists());
    assert!(data.join("container-metadata").is_dir());
    assert!(!data.join("overlay").exists());
    assert!(!data.join("cni-cache").exists());
    assert!(!data.join("garden-cni/state.json").exists());
    assert!(data.join("garden-cni/container-netns").is_dir());
    assert!(
        data.join("garden-cni/keep").exists(),
        "unrelated file removed"
    );
}

#[test]
fn overlay_daemon_drain_waits_for_the_container_store_to_empty() {
    let f = Fixture::new();
    let store = PathBuf::from(f.dir("drain")).join("store.json");
    let mut ctx = f.context("overlay-daemon");
    ctx["properties"]["container_metadata_file"] = json!(store.display().to_string());
    ctx["properties"]["container_metadata_file_check_timeout"] = json!(1);
    let drain = render_job(&f, "overlay-daemon", &ctx)["bin/drain"].clone();
    let run_drain = || run(Command::new("bash").arg(&drain));

    // No store, and an empty store: done at once.
    for content in [None, Some("{}\n"), Some("{ }")] {
        if let Some(c) = content {
            std::fs::write(&store, c).unwrap();
        }
        let out = run_drain();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A container left: drain waits out its timeout and says so.
    std::fs::write(
        &store,
        r#"{"h1":{"handle":"h1","ip":"10.255.1.2","metadata":{}}}"#,
    )
    .unwrap();
    let out = run_drain();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("containers still in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The dynamic-ASG properties: the agent's and the syncer's keys render with the binaries'
/// defaults, the agent's link tells garden-cni's networker to ask it at `up`, and the syncer
/// without a Cloud Controller is refused at render time.
#[test]
fn asg_properties_have_the_binaries_defaults_and_reach_the_networker() {
    use netman::agent::AgentConfig;
    use netman::policy::asg::syncer::AsgSyncConfig;
    use netman::policy::config::PolicyServerConfig;
    let f = Fixture::new();

    // The agent: off by default, every ASG key the binary's default.
    let r = render_job(&f, "vxlan-policy-agent", &f.context("vxlan-policy-agent"));
    let path = &r["config/vxlan-policy-agent.json"];
    let rendered: AgentConfig = netman::config::load(path).unwrap();
    let defaults: AgentConfig = serde_json::from_value(json!({
        "policy_server_url": "https://x", "ca_cert_file": "a", "client_cert_file": "b",
        "client_key_file": "c", "cni_datastore_path": "d"}))
    .unwrap();
    assert!(!rendered.enable_asg_syncing);
    assert_eq!(
        (
            rendered.enable_asg_syncing,
            rendered.asg_poll_interval_seconds,
            rendered.asg_nflog_group,
            rendered.iptables_asg_logging,
            rendered.iptables_denied_logs_per_sec,
            &rendered.deny_networks,
        ),
        (
            defaults.enable_asg_syncing,
            defaults.asg_poll_interval_seconds,
            defaults.asg_nflog_group,
            defaults.iptables_asg_logging,
            defaults.iptables_denied_logs_per_sec,
            &defaults.deny_networks,
        )
    );

    // On, with the overlay link's network and deny networks: the binary accepts it.
    let mut ctx = f.context("vxlan-policy-agent");
    let p = &mut ctx["properties"];
    p["enable_asg_syncing"] = json!(true);
    p["asg_poll_interval_seconds"] = json!(120);
    p["asg_nflog_group"] = json!(7);
    p["deny_networks"] = json!({"always": ["169.254.0.0/16"], "running": ["10.0.0.0/8"]});
    ctx["links"] = json!({"overlay_network": {"properties": {"network": "10.240.0.0/12"}}});
    let r = render_job(&f, "vxlan-policy-agent", &ctx);
    let path = &r["config/vxlan-policy-agent.json"];
    check_config(bin("vxlan-policy-agent"), path);
    let on: AgentConfig = netman::config::load(path).unwrap();
    assert!(on.enable_asg_syncing);
    assert_eq!(on.asg_poll_interval_seconds, 120);
    assert_eq!(on.asg_nflog_group, 7);
    assert_eq!(on.overlay_network.unwrap().to_string(), "10.240.0.0/12");
    assert_eq!(on.deny_networks.always[0].to_string(), "169.254.0.0/16");
    assert_eq!(on.deny_networks.running[0].to_string(), "10.0.0.0/8");
    assert!(on.deny_networks.staging.is_empty());

    // garden-cni: the agent's link (its switch and port) decides whether `up` asks the agent.
    let asg_url = |links: Value, props: Value| -> Option<String> {
        let mut ctx = f.context("garden-cni");
        ctx["links"] = links;
        for (k, v) in props.as_object().unwrap() {
            ctx["properties"][k] = v.clone();
        }
        let r = render_job(&f, "garden-cni", &ctx);
        let adapter = &r["config/adapter.json"];
        check_config(bin("garden-external-networker"), adapter);
        let c: netman::networker::Config = netman::config::load(adapter).unwrap();
        c.policy_agent_asg_url
    };
    assert_eq!(asg_url(json!({}), json!({})), None);
    let agent_link = |on: bool| {
        json!({"vxlan_policy_agent": {"properties":
            {"enable_asg_syncing": on, "force_policy_poll_cycle_port": 9722}}})
    };
    assert_eq!(
        asg_url(agent_link(true), json!({})).as_deref(),
        Some("http://127.0.0.1:9722")
    );
    assert_eq!(
        asg_url(agent_link(false), json!({"enable_asg_syncing": true})),
        None,
        "the link wins"
    );
    assert_eq!(
        asg_url(json!({}), json!({"enable_asg_syncing": true})).as_deref(),
        Some("http://127.0.0.1:8722")
    );
    let mut ctx = f.context("garden-cni");
    ctx["properties"]["enable_asg_syncing"] = json!(true);
    ctx["properties"]["policy_agent_force_poll_port"] = json!(0);
    let err = refused(&f, "garden-cni", "adapter.json.erb", &ctx);
    assert!(
        err.contains("enable_asg_syncing needs the agent's port"),
        "{err}"
    );

    // The policy server's syncer: off by default; on, every key the binary's default.
    let r = render_job(&f, "policy-server", &f.context("policy-server"));
    let ps: PolicyServerConfig = netman::config::load(&r["config/policy-server.json"]).unwrap();
    assert_eq!(ps.asg_syncer, None);
    let mut ctx = f.context("policy-server");
    ctx["properties"]["asg_syncer"] = json!({"enabled": true});
    let err = refused(&f, "policy-server", "policy-server.json.erb", &ctx);
    assert!(
        err.contains("asg_syncer.enabled needs cc_hostname"),
        "{err}"
    );
    ctx["properties"]["cc_hostname"] = json!("cc.example");
    let r = render_job(&f, "policy-server", &ctx);
    let path = &r["config/policy-server.json"];
    check_config(bin("policy-server"), path);
    let ps: PolicyServerConfig = netman::config::load(path).unwrap();
    let defaults: AsgSyncConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(ps.asg_syncer.as_ref(), Some(&defaults));
    assert_eq!(ps.cc_url, "http://cc.example:9022");

    // With the internal listener's URL, CA and client certificate.
    let p = &mut ctx["properties"]["asg_syncer"];
    p["cc_internal_url"] = json!("https://cc-internal.example:9023");
    p["cc_internal_ca_cert"] = json!(f.cert("ca.crt"));
    p["cc_internal_client_cert"] = json!(f.cert("policy-server.crt"));
    p["cc_internal_client_key"] = json!(f.cert("policy-server.key"));
    p["poll_interval_seconds"] = json!(20);
    let r = render_job(&f, "policy-server", &ctx);
    let path = &r["config/policy-server.json"];
    check_config(bin("policy-server"), path);
    let s = netman::config::load::<PolicyServerConfig>(path)
        .unwrap()
        .asg_syncer
        .unwrap();
    assert_eq!(s.cc_internal_url, "https://cc-internal.example:9023");
    assert_eq!(s.poll_interval_seconds, 20);
    for (file, pem) in [
        (&s.cc_internal_ca_cert_file, "ca.crt"),
        (&s.cc_internal_client_cert_file, "policy-server.crt"),
        (&s.cc_internal_client_key_file, "policy-server.key"),
    ] {
        assert_eq!(read(Path::new(file)).trim(), f.cert(pem).trim(), "{file}");
    }
}

/// The flow log's properties: off by default (no flow log key rendered), on with the binary's
/// defaults and the instance as the cell's name, syslog only when given, the NetOut cache
/// mounted for BPM; a bad syslog address is refused by the binary's check.
#[test]
fn flow_log_properties_render_the_agents_flow_log_keys() {
    use netman::agent::AgentConfig;
    let f = Fixture::new();
    let r = render_job(&f, "vxlan-policy-agent", &f.context("vxlan-policy-agent"));
    let text = read(&r["config/vxlan-policy-agent.json"]);
    assert!(!text.contains("flow_log"), "{text}");
    assert!(!read(&r["config/bpm.yml"]).contains("cni-cache"));

    let defaults: AgentConfig = serde_json::from_value(json!({
        "policy_server_url": "https://x", "ca_cert_file": "a", "client_cert_file": "b",
        "client_key_file": "c", "cni_datastore_path": "d"}))
    .unwrap();
    let logs = f.dir("sys/log/vxlan-policy-agent");
    let mut ctx = f.context("vxlan-policy-agent");
    ctx["spec"]["name"] = json!("diego-cell");
    ctx["spec"]["index"] = json!(3);
    let p = &mut ctx["properties"];
    p["flow_log"] = json!({"enabled": true, "file": format!("{logs}/flows.log")});
    let r = render_job(&f, "vxlan-policy-agent", &ctx);
    let path = &r["config/vxlan-policy-agent.json"];
    check_config(bin("vxlan-policy-agent"), path);
    let on: AgentConfig = netman::config::load(path).unwrap();
    assert_eq!(on.flow_log_file, Some(format!("{logs}/flows.log")));
    assert_eq!(on.flow_log_cell.as_deref(), Some("diego-cell/3"));
    assert_eq!(
        (
            on.flow_log_max_bytes,
            on.flow_log_keep_files,
            on.flow_log_c2c_denied,
            on.flow_log_egress,
            &on.netout_cache_dir,
            &on.flow_log_syslog,
        ),
        (
            defaults.flow_log_max_bytes,
            defaults.flow_log_keep_files,
            defaults.flow_log_c2c_denied,
            defaults.flow_log_egress,
            &defaults.netout_cache_dir,
            &None,
        )
    );
    let bpm = read(&r["config/bpm.yml"]);
    assert!(
        bpm.contains(&format!("- path: {}\n", defaults.netout_cache_dir)),
        "{bpm}"
    );
    check_bpm("vxlan-policy-agent", &r["config/bpm.yml"]);

    // syslog, over UDP with a facility; a bad address is refused at the binary's check.
    let p = &mut ctx["properties"]["flow_log"];
    p["syslog"] = json!("udp://10.0.16.5:514");
    p["syslog_facility"] = json!("local3");
    let r = render_job(&f, "vxlan-policy-agent", &ctx);
    let path = &r["config/vxlan-policy-agent.json"];
    check_config(bin("vxlan-policy-agent"), path);
    let on: AgentConfig = netman::config::load(path).unwrap();
    assert_eq!(on.flow_log_syslog.as_deref(), Some("udp://10.0.16.5:514"));
    assert_eq!(on.flow_log_syslog_facility.as_deref(), Some("local3"));
    ctx["properties"]["flow_log"]["syslog"] = json!("syslog.example:514");
    let r = render_job(&f, "vxlan-policy-agent", &ctx);
    let out = run(Command::new(bin("vxlan-policy-agent"))
        .arg("--config")
        .arg(&r["config/vxlan-policy-agent.json"])
        .arg("--check-config"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'flow_log_syslog'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Under BPM the job has no /dev/log: such a path is refused when rendering, a socket in a
    // directory the job can reach is taken, and syslog without the flow log is refused.
    let template = "vxlan-policy-agent.json.erb";
    ctx["properties"]["flow_log"]["syslog"] = json!("/dev/log");
    let err = refused(&f, "vxlan-policy-agent", template, &ctx);
    assert!(err.contains("udp://"), "{err}");
    ctx["properties"]["flow_log"]["syslog"] = json!("/var/vcap/data/rsyslog/log.sock");
    let text = render("vxlan-policy-agent", template, &ctx, f.tmp.path()).unwrap();
    assert!(text.contains("/var/vcap/data/rsyslog/log.sock"), "{text}");
    ctx["properties"]["flow_log"]["syslog"] = json!("udp://10.0.16.5:514");
    ctx["properties"]["flow_log"]["enabled"] = json!(false);
    let err = refused(&f, "vxlan-policy-agent", template, &ctx);
    assert!(err.contains("flow_log.enabled"), "{err}");
}
