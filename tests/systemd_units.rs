//! The example systemd units: one per long-running binary, each passes `systemd-analyze verify`
//! (no unknown or malformed directive) with its binary in place, and every flag in its ExecStart
//! lines is one the binary accepts.

use std::path::PathBuf;
use std::process::Command;

const UNITS: [(&str, &str); 6] = [
    ("policy-server", env!("CARGO_BIN_EXE_policy-server")),
    (
        "overlay-controller",
        env!("CARGO_BIN_EXE_overlay-controller"),
    ),
    ("overlay-daemon", env!("CARGO_BIN_EXE_overlay-daemon")),
    (
        "vxlan-policy-agent",
        env!("CARGO_BIN_EXE_vxlan-policy-agent"),
    ),
    ("netmon", env!("CARGO_BIN_EXE_netmon")),
    ("overlay-watchdog", env!("CARGO_BIN_EXE_overlay-watchdog")),
];

#[test]
fn every_unit_verifies_and_runs_its_binary_with_known_flags() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = UNITS.iter().map(|(n, _)| format!("{n}.service")).collect();
    want.sort();
    assert_eq!(found, want);

    let tmp = tempfile::tempdir().unwrap();
    for (name, binary) in UNITS {
        let text = std::fs::read_to_string(dir.join(format!("{name}.service"))).unwrap();
        let exe = format!("/usr/local/bin/{name}");
        let exec_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ExecStart"))
            .collect();
        assert!(
            exec_lines.iter().any(|l| l.starts_with("ExecStart=")),
            "{name}: no ExecStart"
        );
        let help = Command::new(binary).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for line in exec_lines {
            let cmd = line.split_once('=').unwrap().1;
            assert!(cmd.starts_with(&exe), "{name}: {line}");
            for flag in cmd.split_whitespace().filter(|w| w.starts_with("--")) {
                assert!(help.contains(flag), "{name}: {binary} has no flag {flag}");
            }
        }
        // With the binary where the unit expects it, systemd finds nothing to complain about.
        // (systemd-analyze comes with the systemd package, absent from minimal containers.)
        if !has_systemd_analyze() {
            eprintln!("{name}: systemd-analyze not installed: unit syntax not verified");
            continue;
        }
        let unit = tmp.path().join(format!("{name}.service"));
        std::fs::write(&unit, text.replace(&exe, binary)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{name}: systemd-analyze verify: {stderr}"
        );
    }
}

fn has_systemd_analyze() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
