//! Service discovery's tables on SQLite, PostgreSQL and MariaDB (real servers, each case its own
//! database): internal domains and routes, cell registrations, expiry, the table built from them
//! and its version.

mod support;
use support::db;

use netman::api::sd::{Instance, InternalRoute};
use netman::policy::sd::{SdError, SdStore};
use netman::policy::store;
use std::net::Ipv4Addr;

fn open(db: &db::TestDb) -> SdStore {
    SdStore::open(&db.config).unwrap_or_else(|e| panic!("opening {}: {e}", db.config))
}

fn r(app: &str, host: &str, domain: &str) -> InternalRoute {
    InternalRoute::new(app, host, domain)
}

fn i(app: &str, index: u32, ip: [u8; 4]) -> Instance {
    Instance {
        app_guid: app.into(),
        index,
        ip: Ipv4Addr::from(ip),
    }
}

/// One name of the table and its sorted (app, index, ip).
type Named = (String, Vec<(String, u32, Ipv4Addr)>);

fn table(s: &SdStore) -> Vec<Named> {
    let (_, t) = s.table().unwrap();
    t.routes
        .into_iter()
        .map(|r| {
            let mut v: Vec<_> = r
                .instances
                .into_iter()
                .map(|i| (i.app_guid, i.index, i.ip))
                .collect();
            v.sort();
            (r.name, v)
        })
        .collect()
}

pub fn domains_routes_and_versions(db: &db::TestDb) {
    let s = open(db);
    assert_eq!(s.domains().unwrap(), vec!["apps.internal".to_string()]);
    let v0 = s.version().unwrap();
    // Mapping moves the version; mapping the same again does not.
    let v1 = s
        .map(&[
            r("app-b", "backend", "apps.internal"),
            r("app-c", "backend", "apps.internal"),
        ])
        .unwrap();
    assert!(v1 > v0);
    assert_eq!(
        s.map(&[r("app-b", "backend", "apps.internal")]).unwrap(),
        v1
    );
    // A domain that is not internal, or a name that is one, refuses the whole batch.
    let e = s
        .map(&[
            r("app-x", "x", "apps.internal"),
            r("app-x", "x", "other.internal"),
        ])
        .unwrap_err();
    assert_eq!(e, SdError::UnknownDomain("other.internal".into()));
    assert_eq!(
        s.routes().unwrap().len(),
        2,
        "nothing of the refused batch stored"
    );
    assert_eq!(s.version().unwrap(), v1);
    // A new domain at run time, then a route under it.
    let v2 = s.add_domains(&["other.internal".into()]).unwrap();
    assert!(v2 > v1);
    s.map(&[r("app-x", "x", "other.internal")]).unwrap();
    // A domain that is a route's name, and a route whose name is a domain, are refused.
    assert_eq!(
        s.add_domains(&["backend.apps.internal".into()])
            .unwrap_err(),
        SdError::NameIsDomain("backend.apps.internal".into())
    );
    s.add_domains(&["deep.apps.internal".into()]).unwrap();
    assert_eq!(
        s.map(&[r("app-d", "deep", "apps.internal")]).unwrap_err(),
        SdError::NameIsDomain("deep.apps.internal".into())
    );
    // A domain with routes cannot go; one without can.
    assert!(matches!(
        s.remove_domains(&["other.internal".into()]).unwrap_err(),
        SdError::DomainInUse { routes: 1, .. }
    ));
    s.remove_domains(&["deep.apps.internal".into()]).unwrap();
    assert_eq!(
        s.domains().unwrap(),
        vec!["apps.internal".to_string(), "other.internal".to_string()]
    );
    // Unmap: missing routes are skipped.
    let before = s.version().unwrap();
    let after = s
        .unmap(&[
            r("app-c", "backend", "apps.internal"),
            r("nobody", "n", "apps.internal"),
        ])
        .unwrap();
    assert!(after > before);
    assert_eq!(
        s.routes().unwrap(),
        vec![
            r("app-b", "backend", "apps.internal"),
            r("app-x", "x", "other.internal")
        ]
    );
    // A second store on the same database sees the same.
    assert_eq!(open(db).routes().unwrap(), s.routes().unwrap());
}

pub fn registrations_build_the_table(db: &db::TestDb) {
    let s = open(db);
    s.map(&[
        r("app-b", "backend", "apps.internal"),
        r("app-f", "frontend", "apps.internal"),
        r("app-b", "both", "apps.internal"),
        r("app-f", "both", "apps.internal"),
    ])
    .unwrap();
    s.replace_cell(
        "cell-1",
        &[
            i("app-b", 0, [10, 255, 1, 2]),
            i("app-f", 0, [10, 255, 1, 3]),
        ],
        1000,
    )
    .unwrap();
    let v = s
        .replace_cell(
            "cell-2",
            &[
                i("app-b", 1, [10, 255, 2, 2]),
                i("other", 0, [10, 255, 2, 9]),
            ],
            1000,
        )
        .unwrap();
    let b0 = ("app-b".to_string(), 0, Ipv4Addr::new(10, 255, 1, 2));
    let b1 = ("app-b".to_string(), 1, Ipv4Addr::new(10, 255, 2, 2));
    let f0 = ("app-f".to_string(), 0, Ipv4Addr::new(10, 255, 1, 3));
    assert_eq!(
        table(&s),
        vec![
            ("backend.apps.internal".into(), vec![b0.clone(), b1.clone()]),
            (
                "both.apps.internal".into(),
                vec![b0.clone(), b1.clone(), f0.clone()]
            ),
            ("frontend.apps.internal".into(), vec![f0.clone()]),
        ]
    );
    // The same report again moves nothing (idle cells wake no resolver).
    assert_eq!(
        s.replace_cell(
            "cell-2",
            &[
                i("other", 0, [10, 255, 2, 9]),
                i("app-b", 1, [10, 255, 2, 2])
            ],
            2000
        )
        .unwrap(),
        v
    );
    // A full refresh replaces that cell's entries only: b1 stopped.
    let v2 = s
        .replace_cell("cell-2", &[i("other", 0, [10, 255, 2, 9])], 3000)
        .unwrap();
    assert!(v2 > v);
    assert_eq!(
        table(&s)[0],
        ("backend.apps.internal".into(), vec![b0.clone()])
    );
    // A route with no running instance is in the table, empty.
    s.map(&[r("idle", "idle", "apps.internal")]).unwrap();
    assert!(table(&s).contains(&("idle.apps.internal".into(), vec![])));
}

pub fn silent_cells_expire(db: &db::TestDb) {
    let s = open(db);
    s.map(&[r("app-b", "backend", "apps.internal")]).unwrap();
    s.replace_cell("old", &[i("app-b", 0, [10, 0, 0, 1])], 1_000)
        .unwrap();
    s.replace_cell("fresh", &[i("app-b", 1, [10, 0, 0, 2])], 5_000)
        .unwrap();
    let v = s.version().unwrap();
    assert_eq!(s.expire(900).unwrap(), Vec::<String>::new());
    assert_eq!(s.version().unwrap(), v, "nothing expired, nothing moved");
    assert_eq!(s.expire(2_000).unwrap(), vec!["old".to_string()]);
    assert!(s.version().unwrap() > v);
    assert_eq!(
        table(&s),
        vec![(
            "backend.apps.internal".into(),
            vec![("app-b".into(), 1, Ipv4Addr::new(10, 0, 0, 2))]
        )]
    );
    // The expired cell comes back with its next refresh.
    s.replace_cell("old", &[i("app-b", 0, [10, 0, 0, 1])], 6_000)
        .unwrap();
    assert_eq!(table(&s)[0].1.len(), 2);
}

pub fn migrations_are_idempotent_beside_the_policy_tables(db: &db::TestDb) {
    let policies = store::open(&db.config, 2).unwrap();
    let s = open(db);
    s.map(&[r("a", "h", "apps.internal")]).unwrap();
    // Opening again (also the policy store) keeps everything and re-seeds nothing removed.
    s.add_domains(&["b.internal".into()]).unwrap();
    s.unmap(&[r("a", "h", "apps.internal")]).unwrap();
    s.remove_domains(&["apps.internal".into()]).unwrap();
    drop(s);
    let s = open(db);
    let _ = store::open(&db.config, 2).unwrap();
    assert_eq!(s.domains().unwrap(), vec!["b.internal".to_string()]);
    assert_eq!(db.query_i64("SELECT MAX(version) FROM sd_migrations"), 1);
    policies.check().unwrap();
}

pub fn a_damaged_row_is_reported_not_served_empty(db: &db::TestDb) {
    let s = open(db);
    s.map(&[r("a", "h", "apps.internal")]).unwrap();
    s.replace_cell("c", &[i("a", 0, [10, 0, 0, 1])], 1).unwrap();
    db.exec("UPDATE sd_instances SET ip = 'not-an-ip'");
    let e = s.table().unwrap_err();
    assert!(matches!(e, SdError::Damaged(_)), "{e}");
}

db::suite!(
    domains_routes_and_versions,
    registrations_build_the_table,
    silent_cells_expire,
    migrations_are_idempotent_beside_the_policy_tables,
    a_damaged_row_is_reported_not_served_empty,
);
