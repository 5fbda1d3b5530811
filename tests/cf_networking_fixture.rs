//! The original's databases as the adoption tests build them (`tests/support/cf_networking.rs`),
//! checked against real PostgreSQL and MariaDB: the schema a fresh install leaves (tables,
//! columns, types, indexes, constraints, sql-migrate's bookkeeping) matches the description in
//! `tests/fixtures/cf_networking/*.schema`, and filling follows the original's rules (lowest
//! free tag, freed tags reused, `policies_info` moved by every write, types of tags).
//!
//! `NETMAN_BLESS_FIXTURES=1` rewrites the `.schema` files from the servers instead of comparing
//! (review the diff against README.md there before committing it).
#![cfg(all(feature = "postgres", feature = "mysql"))]

mod support;
use cf_networking::{
    build, describe_schema, head_migration_ids, sample_policies, SecurityGroupRow, Shape,
};
use netman::api::policy::Policy;
use netman::db::DatabaseType;
use support::{cf_networking, db};

fn server(kind: DatabaseType) -> db::TestDb {
    match kind {
        DatabaseType::Postgres => db::postgres(),
        DatabaseType::Mysql => db::mariadb(),
        other => panic!("no server for {other:?}"),
    }
}

fn schema_file(kind: DatabaseType, shape: Shape) -> String {
    let server = match kind {
        DatabaseType::Postgres => "postgres",
        _ => "mariadb",
    };
    let shape = match shape {
        Shape::Head => "head",
        Shape::HeadWithoutSecurityGroups => "head_without_security_groups",
        Shape::NetmanEra => "netman_era",
    };
    format!(
        "{}/tests/fixtures/cf_networking/{shape}_{server}.schema",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn check_schema(kind: DatabaseType, shape: Shape) {
    let db = server(kind);
    let mut original = build(&db, shape, 2);
    let described = describe_schema(&mut original.raw);
    let path = schema_file(kind, shape);
    if std::env::var_os("NETMAN_BLESS_FIXTURES").is_some() {
        std::fs::write(&path, &described).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (NETMAN_BLESS_FIXTURES=1 writes it)"));
    assert_eq!(
        described, expected,
        "the schema built on {kind:?} differs from {path}"
    );
}

#[test]
fn head_schema_on_postgres_is_the_described_one() {
    check_schema(DatabaseType::Postgres, Shape::Head);
}

#[test]
fn head_schema_on_mariadb_is_the_described_one() {
    check_schema(DatabaseType::Mysql, Shape::Head);
}

#[test]
fn head_schema_without_security_groups_on_both_servers() {
    check_schema(DatabaseType::Postgres, Shape::HeadWithoutSecurityGroups);
    check_schema(DatabaseType::Mysql, Shape::HeadWithoutSecurityGroups);
}

#[test]
fn netman_era_schema_on_both_servers() {
    check_schema(DatabaseType::Postgres, Shape::NetmanEra);
    check_schema(DatabaseType::Mysql, Shape::NetmanEra);
}

#[test]
fn bookkeeping_records_every_head_migration_and_leaves_the_lock_free() {
    for kind in [DatabaseType::Postgres, DatabaseType::Mysql] {
        let db = server(kind);
        let mut o = build(&db, Shape::Head, 2);
        let mut recorded: Vec<String> = o
            .raw
            .rows("SELECT id FROM gorp_migrations")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        let mut expected = head_migration_ids();
        recorded.sort();
        expected.sort();
        assert_eq!(recorded, expected, "{kind:?}");
        // 1, 1a, 1b, 2, 2a-2f, 3, 3a and 4..=79.
        assert_eq!(expected.len(), 88);
        let unset: i64 = o
            .raw
            .value("SELECT COUNT(*) FROM gorp_migrations WHERE applied_at IS NULL")
            .parse()
            .unwrap();
        assert_eq!(unset, 0);
        assert_eq!(o.raw.value("SELECT COUNT(*) FROM gorp_lock"), "0");
        let groups = if kind == DatabaseType::Mysql {
            "`groups`"
        } else {
            "groups"
        };
        assert_eq!(
            o.raw.value(&format!(
                "SELECT COUNT(*) FROM {groups} WHERE guid IS NULL AND id BETWEEN 1 AND 65535"
            )),
            "65535"
        );
        assert_eq!(o.raw.value("SELECT COUNT(*) FROM policies_info"), "1");
        // A tag length of 1 gives 255 slots.
        let db1 = server(kind);
        let mut one = build(&db1, Shape::Head, 1);
        assert_eq!(
            one.raw.value(&format!("SELECT MAX(id) FROM {groups}")),
            "255"
        );
    }
}

fn p(src: &str, dst: &str, proto: &str, start: i64, end: i64) -> Policy {
    Policy::new(src, dst, proto, start, end)
}

#[test]
fn filling_follows_the_original_rules() {
    for kind in [DatabaseType::Postgres, DatabaseType::Mysql] {
        let db = server(kind);
        let mut o = build(&db, Shape::Head, 2);
        let before = o.last_updated_nanos();
        std::thread::sleep(std::time::Duration::from_millis(5));
        o.create(&[p("a", "b", "tcp", 8080, 8080), p("c", "d", "udp", 53, 53)]);
        let after_create = o.last_updated_nanos();
        assert!(after_create > before, "{kind:?}: create moves last_updated");
        assert_eq!(
            o.tags(),
            vec![
                ("a".into(), "0001".into(), "app".into()),
                ("b".into(), "0002".into(), "app".into()),
                ("c".into(), "0003".into(), "app".into()),
                ("d".into(), "0004".into(), "app".into()),
            ]
        );
        assert_eq!(o.create_tag("INGRESS_ROUTER", "router"), "0005");
        assert_eq!(o.create_tag("INGRESS_ROUTER", "router"), "0005");
        std::thread::sleep(std::time::Duration::from_millis(5));
        o.delete(&[p("a", "b", "tcp", 8080, 8080), p("x", "y", "tcp", 1, 1)]);
        assert!(
            o.last_updated_nanos() > after_create,
            "{kind:?}: delete moves it"
        );
        // a and b went back to the pool; the next apps take the lowest free slots again.
        o.create(&[p("e", "f", "tcp", 1000, 2000)]);
        let tags = o.tags();
        assert!(
            tags.contains(&("e".into(), "0001".into(), "app".into())),
            "{tags:?}"
        );
        assert!(
            tags.contains(&("f".into(), "0002".into(), "app".into())),
            "{tags:?}"
        );
        assert!(tags.contains(&("INGRESS_ROUTER".into(), "0005".into(), "router".into())));
        assert_eq!(
            o.listing(),
            vec![
                Policy {
                    source: tagged("c", "0003"),
                    destination: dest("d", "0004", "udp", 53, 53),
                },
                Policy {
                    source: tagged("e", "0001"),
                    destination: dest("f", "0002", "tcp", 1000, 2000),
                },
            ]
        );
        // The legacy port column: the port of a single-port policy, 0 for a range.
        let ports: Vec<String> = o
            .raw
            .rows("SELECT port FROM destinations ORDER BY id")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        assert_eq!(ports, vec!["53", "0"]);
        o.add_security_group(&SecurityGroupRow {
            guid: "sg-1".into(),
            name: "dns".into(),
            rules: r#"[{"protocol":"udp","destination":"0.0.0.0/0","ports":"53"}]"#.into(),
            staging_default: true,
            running_default: false,
            staging_spaces: vec![],
            running_spaces: vec!["space-1".into(), "space-2".into()],
        });
        let row = &o.raw.rows(
            "SELECT guid, name, staging_default, running_default, running_spaces FROM security_groups",
        )[0];
        assert_eq!(row[0].as_deref(), Some("sg-1"));
        assert!(
            matches!(row[2].as_deref(), Some("t") | Some("1")),
            "{row:?}"
        );
        assert!(row[4].as_deref().unwrap().contains("space-2"));
    }
}

fn tagged(id: &str, tag: &str) -> netman::api::policy::Source {
    netman::api::policy::Source {
        id: id.into(),
        tag: Some(tag.into()),
    }
}

fn dest(
    id: &str,
    tag: &str,
    proto: &str,
    start: i64,
    end: i64,
) -> netman::api::policy::Destination {
    netman::api::policy::Destination {
        id: id.into(),
        tag: Some(tag.into()),
        protocol: proto.into(),
        ports: netman::api::policy::Ports { start, end },
    }
}

#[test]
fn netman_era_filling_has_single_ports_and_no_types() {
    for kind in [DatabaseType::Postgres, DatabaseType::Mysql] {
        let db = server(kind);
        let mut o = build(&db, Shape::NetmanEra, 2);
        o.create(&[p("a", "b", "tcp", 8080, 8080), p("b", "a", "udp", 53, 53)]);
        o.delete(&[p("a", "b", "tcp", 8080, 8080)]);
        o.create(&[p("c", "a", "tcp", 9000, 9000)]);
        assert_eq!(
            o.tags(),
            vec![
                ("a".into(), "0001".into(), "app".into()),
                ("b".into(), "0002".into(), "app".into()),
                ("c".into(), "0003".into(), "app".into()),
            ]
        );
        assert_eq!(o.listing().len(), 2);
    }
}

#[test]
fn bulk_fill_ends_where_one_create_per_policy_ends() {
    for kind in [DatabaseType::Postgres, DatabaseType::Mysql] {
        for shape in [Shape::Head, Shape::NetmanEra] {
            let policies: Vec<Policy> = sample_policies(300, 70)
                .into_iter()
                .map(|mut p| {
                    if shape == Shape::NetmanEra {
                        p.destination.ports.end = p.destination.ports.start;
                    }
                    p
                })
                .collect();
            let (db1, db2) = (server(kind), server(kind));
            let mut one_by_one = build(&db1, shape, 2);
            for chunk in policies.chunks(1) {
                one_by_one.create(chunk);
            }
            let mut bulk = build(&db2, shape, 2);
            bulk.bulk_fill(&policies);
            assert_eq!(bulk.listing(), one_by_one.listing(), "{kind:?} {shape:?}");
            assert_eq!(bulk.tags(), one_by_one.tags(), "{kind:?} {shape:?}");
            assert_eq!(bulk.listing().len(), 300);
            // The original keeps working on a bulk-filled database.
            bulk.create(&[p("new-a", "new-b", "tcp", 1, 1)]);
            assert_eq!(bulk.listing().len(), 301);
        }
    }
}
