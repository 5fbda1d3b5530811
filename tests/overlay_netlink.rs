//! The netlink wrapper against the real kernel, inside namespaces this test creates.

use netman::lab::netns::NamedNetns;
use netman::netlink::{self, Address, Handle, Route, Scope, VethSpec, VxlanSpec};
use netman::netns::run_in;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn ns(tag: &str) -> NamedNetns {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    NamedNetns::create(&format!("ovnl-{tag}-{}-{n}", std::process::id())).unwrap()
}

#[test]
fn links_addresses_routes_neighbours_fdb() {
    let a = ns("a");
    let b = ns("b");
    let b_path = b.path();
    let out = run_in(&a.path(), move || -> Result<(), String> {
        let mut h = Handle::new()?;
        let bfile = std::fs::File::open(&b_path).map_err(|e| e.to_string())?;
        h.create_veth(&VethSpec {
            name: "va".into(),
            peer_name: "vb".into(),
            mac: Some([0xaa, 0xaa, 1, 2, 3, 4]),
            peer_mac: Some([0xee, 0xee, 1, 2, 3, 4]),
            mtu: Some(1400),
            peer_netns_fd: Some(bfile.as_raw_fd()),
        })?;
        // A duplicate create is EEXIST, with context.
        let dup = h
            .create_veth(&VethSpec {
                name: "va".into(),
                peer_name: "vc".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(dup.is_exists(), "{dup:?}");
        assert!(dup.to_string().contains("create veth va"), "{dup}");
        let va = h.link_by_name("va")?.expect("va exists");
        assert_eq!(va.mtu, 1400);
        assert_eq!(va.mac, Some([0xaa, 0xaa, 1, 2, 3, 4]));
        assert_eq!(va.kind.as_deref(), Some("veth"));
        assert!(
            h.link_by_name("vb")?.is_none(),
            "peer went to the other netns"
        );
        h.set_up(va.index)?;
        h.add_address(
            va.index,
            &Address {
                local: "169.254.0.1".parse().unwrap(),
                prefix_len: 32,
                peer: Some("10.9.1.2".parse().unwrap()),
                scope: Scope::Link,
            },
        )?;
        let addrs = h.addresses(Some(va.index))?;
        assert_eq!(addrs.len(), 1, "{addrs:?}");
        assert_eq!(addrs[0].1.peer, Some("10.9.1.2".parse().unwrap()));

        // A VXLAN with GBP, learning off, MAC, local.
        h.create_vxlan(&VxlanSpec {
            name: "vt".into(),
            vni: 1,
            port: 4789,
            local: Some("192.0.2.1".parse().unwrap()),
            parent_index: None,
            mac: Some([0xee, 0xee, 10, 255, 3, 0]),
            mtu: None,
            gbp: true,
            learning: false,
        })?;
        netlink::disable_ipv6("vt")?;
        let vt = h.link_by_name("vt")?.unwrap();
        let info = vt.vxlan.clone().unwrap();
        assert!(info.gbp && !info.learning && info.vni == 1 && info.port == 4789);
        assert_eq!(info.local, Some("192.0.2.1".parse().unwrap()));
        h.set_up(vt.index)?;
        h.add_address(
            vt.index,
            &Address {
                local: "10.255.3.0".parse().unwrap(),
                prefix_len: 16,
                peer: None,
                scope: Scope::Link,
            },
        )?;
        let gw: Ipv4Addr = "10.255.7.0".parse().unwrap();
        let route = Route {
            dst: "10.255.7.0/24".parse().unwrap(),
            gateway: Some(gw),
            oif: Some(vt.index),
            src: Some("10.255.3.0".parse().unwrap()),
            scope: Scope::Universe,
            onlink: true,
        };
        h.route_replace(&route)?;
        h.route_replace(&route)?; // replace is idempotent
        let routes = h.routes()?;
        let found: Vec<_> = routes.iter().filter(|r| r.dst == route.dst).collect();
        assert_eq!(found.len(), 1, "{routes:?}");
        assert_eq!(found[0].gateway, Some(gw));
        assert_eq!(found[0].src, route.src);
        let mac = [0xee, 0xee, 10, 255, 7, 0];
        h.neighbour_set(vt.index, gw, mac)?;
        h.neighbour_set(vt.index, gw, mac)?;
        let n = h.neighbours(vt.index)?;
        assert!(
            n.iter()
                .any(|n| n.ip == gw && n.mac == Some(mac) && n.permanent),
            "{n:?}"
        );
        let dst: Ipv4Addr = "192.0.2.7".parse().unwrap();
        h.fdb_set(vt.index, mac, dst)?;
        let f = h.fdb_entries(vt.index)?;
        assert!(
            f.iter()
                .any(|e| e.mac == mac && e.dst == Some(dst) && e.permanent),
            "{f:?}"
        );

        // Removal.
        h.fdb_delete(vt.index, mac, Some(dst))?;
        assert!(!h.fdb_entries(vt.index)?.iter().any(|e| e.mac == mac));
        h.neighbour_delete(vt.index, gw)?;
        assert!(!h.neighbours(vt.index)?.iter().any(|n| n.ip == gw));
        h.route_delete(&route)?;
        assert!(!h.routes()?.iter().any(|r| r.dst == route.dst));
        let gone = h.route_delete(&route).unwrap_err();
        assert!(gone.is_not_found(), "{gone:?}");
        h.delete_link(vt.index)?;
        assert!(h.link_by_name("vt")?.is_none());
        Ok(())
    })
    .unwrap();
    out.unwrap();
    // The peer is in b, with its MAC and MTU; it can be renamed, brought up and deleted there.
    run_in(&b.path(), || -> Result<(), String> {
        let mut h = Handle::new()?;
        let vb = h.link_by_name("vb")?.expect("peer in b");
        assert_eq!(vb.mac, Some([0xee, 0xee, 1, 2, 3, 4]));
        assert_eq!(vb.mtu, 1400);
        h.set_name(vb.index, "eth0")?;
        h.set_up(vb.index)?;
        h.set_mtu(vb.index, 1300)?;
        let eth0 = h.link_by_name("eth0")?.unwrap();
        assert_eq!(eth0.mtu, 1300);
        h.delete_link(eth0.index)?;
        let err = h.delete_link(eth0.index).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        Ok(())
    })
    .unwrap()
    .unwrap();
    // Deleting the peer removed the host end in a.
    let left = run_in(&a.path(), || {
        Handle::new().unwrap().link_by_name("va").unwrap()
    })
    .unwrap();
    assert!(left.is_none());
}
