//! Service discovery on the lab, as the README walks through it: a route mapped with the real
//! `netman` CLI resolves inside another cell's container through that cell's `netman-dns`, the
//! name grants nothing until `allow-access`, and a cell taken out takes its instances with it.
//! Needs root; brings up and removes the whole lab (namespaces `netman-lab-*`).

mod support;
use std::time::Duration;
use support::lab_cli::Lab;
use support::wait_until;

/// The addresses `name` resolves to inside frontend.
fn resolves(lab: &Lab, name: &str) -> Vec<String> {
    let (_, out) = lab.exec("frontend", &["getent", "ahostsv4", name]);
    let mut ips: Vec<String> = out
        .lines()
        .filter(|l| l.contains("STREAM"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[test]
fn names_resolve_in_the_lab_and_grant_nothing() {
    let lab = Lab::up(2, 3);
    let (backend, backend2) = (lab.ip("backend"), lab.ip("backend-2"));

    let (ok, out) = lab.netman(&[
        "map-route",
        "backend",
        "apps.internal",
        "--hostname",
        "backend",
    ]);
    assert!(ok, "{out}");
    // frontend is on cell 1, backend on cell 2.
    wait_until(
        "backend.apps.internal resolves in frontend",
        Duration::from_secs(10),
        || resolves(&lab, "backend.apps.internal") == vec![backend.clone()],
    );
    // A name is not a permission.
    let url = "http://backend.apps.internal:8080";
    let (ok, out) = lab.exec("frontend", &["curl", "-sS", "-m", "3", url]);
    assert!(!ok, "reached backend without a policy: {out}");
    assert!(
        out.contains("Failed to connect") || out.contains("refused"),
        "{out}"
    );
    let (ok, out) = lab.netman(&[
        "allow-access",
        "frontend",
        "backend",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    assert!(ok, "{out}");
    wait_until(
        "frontend reaches backend by name",
        Duration::from_secs(10),
        || {
            let (ok, out) = lab.exec("frontend", &["curl", "-sS", "-m", "3", url]);
            ok && out.contains("\"application_name\":\"backend\"")
        },
    );
    // The short name through the search domain, one instance by index, unknown names.
    assert_eq!(resolves(&lab, "backend"), vec![backend.clone()]);
    assert_eq!(
        resolves(&lab, "0.backend.apps.internal"),
        vec![backend.clone()]
    );
    assert!(resolves(&lab, "nothing.apps.internal").is_empty());

    // A second app under the same name (backend-2, on cell 1): both resolve.
    let (ok, out) = lab.netman(&[
        "map-route",
        "backend-2",
        "apps.internal",
        "--hostname",
        "backend",
    ]);
    assert!(ok, "{out}");
    let mut both = vec![backend.clone(), backend2.clone()];
    both.sort();
    wait_until("both apps under one name", Duration::from_secs(10), || {
        resolves(&lab, "backend.apps.internal") == both
    });

    // Cell 2 taken out (its containers destroyed through the networker): backend is gone from
    // the name at once, backend-2 stays.
    let (ok, out) = lab.lab(&["remove-cell", "2"]);
    assert!(ok, "{out}");
    wait_until(
        "backend gone with its cell",
        Duration::from_secs(10),
        || resolves(&lab, "backend.apps.internal") == vec![backend2.clone()],
    );

    let (ok, out) = lab.lab(&["down"]);
    assert!(ok, "{out}");
    let leftovers: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("netman-lab-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
