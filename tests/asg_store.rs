//! The security-group store suite, run unchanged on SQLite, PostgreSQL and MariaDB (real servers,
//! a fresh database per test): writes move the version in the same transaction, names and guids
//! stay unique, a replace is one transaction that keeps the version when nothing changed, binds
//! from concurrent writers are not lost, and one syncer holds the lease at a time.

mod support;
use support::db;

use netman::api::security_groups::SecurityGroup;
use netman::asg::Lifecycle;
use netman::db::DatabaseConfig;
use netman::policy::asg::store::{bind, unbind, AsgError, AsgStore, SqlAsgStore, SyncMark};
use std::sync::Arc;

fn open(config: &DatabaseConfig) -> Arc<dyn AsgStore> {
    Arc::new(SqlAsgStore::open(config).unwrap_or_else(|e| panic!("opening {config}: {e}")))
}

fn group(guid: &str, name: &str) -> SecurityGroup {
    SecurityGroup {
        guid: guid.into(),
        name: name.into(),
        rules: r#"[{"protocol":"tcp","destination":"10.0.0.1","ports":"80","type":0,"code":0,"description":"","log":false}]"#.into(),
        ..SecurityGroup::default()
    }
}

pub fn writes_move_the_version_and_keep_names_unique(db: &db::TestDb) {
    let s = open(&db.config);
    let v0 = s.version().unwrap();
    assert_eq!(s.snapshot().unwrap().groups, vec![]);
    let a = s.create(&group("guid-a", "a")).unwrap();
    let v1 = s.version().unwrap();
    assert!(v1 > v0, "create moves the version");
    assert_eq!(s.get("guid-a").unwrap(), a);
    assert_eq!(
        s.create(&group("guid-a", "other")).unwrap_err(),
        AsgError::GuidTaken("guid-a".into())
    );
    assert_eq!(
        s.create(&group("guid-b", "a")).unwrap_err(),
        AsgError::NameTaken("a".into())
    );
    let v_refused = s.version().unwrap();
    assert_eq!(
        v_refused, v1,
        "a refused write changes nothing, not even the version"
    );
    let b = s.create(&group("guid-b", "b")).unwrap();
    assert!(b.id > a.id);

    let edited = s
        .modify("guid-a", &|g| {
            g.running_default = true;
            bind(g, Lifecycle::Staging, "space-1");
            bind(g, Lifecycle::Staging, "space-1");
            Ok(())
        })
        .unwrap();
    assert_eq!(edited.group.staging_space_guids, ["space-1"]);
    let v2 = s.version().unwrap();
    assert!(v2 > v1);
    assert_eq!(s.get("guid-a").unwrap(), edited);
    let unchanged = s
        .modify("guid-a", &|g| {
            unbind(g, Lifecycle::Running, "space-never-bound");
            Ok(())
        })
        .unwrap();
    assert_eq!(unchanged, edited);
    assert_eq!(
        s.version().unwrap(),
        v2,
        "an edit that changes nothing leaves the version (no cell refetches for it)"
    );
    assert_eq!(
        s.modify("guid-a", &|g| {
            g.name = "b".into();
            Ok(())
        })
        .unwrap_err(),
        AsgError::NameTaken("b".into())
    );
    assert_eq!(s.get("guid-a").unwrap().group.name, "a");
    assert_eq!(
        s.modify("guid-a", &|g| {
            g.running_default = false;
            Err(AsgError::NotFound("refused by the edit".into()))
        })
        .unwrap_err(),
        AsgError::NotFound("refused by the edit".into())
    );
    assert!(
        s.get("guid-a").unwrap().group.running_default,
        "a refused edit is not stored"
    );
    assert_eq!(s.version().unwrap(), v2);

    let snap = s.snapshot().unwrap();
    assert_eq!(snap.version, v2);
    assert_eq!(
        snap.groups
            .iter()
            .map(|g| g.group.guid.as_str())
            .collect::<Vec<_>>(),
        ["guid-a", "guid-b"]
    );
    s.delete("guid-b").unwrap();
    assert_eq!(
        s.get("guid-b").unwrap_err(),
        AsgError::NotFound("guid-b".into())
    );
    assert_eq!(
        s.delete("guid-b").unwrap_err(),
        AsgError::NotFound("guid-b".into())
    );
    assert!(s.version().unwrap() > v2);

    // A second opener (another server, a restart) sees the same.
    let again = open(&db.config);
    assert_eq!(again.snapshot().unwrap(), s.snapshot().unwrap());
}

pub fn replace_upserts_by_guid_and_keeps_the_version_when_nothing_changed(db: &db::TestDb) {
    let s = open(&db.config);
    s.create(&group("keep", "keep")).unwrap();
    s.create(&group("change", "change")).unwrap();
    s.create(&group("drop", "drop")).unwrap();
    let kept_id = s.get("keep").unwrap().id;
    let mut changed = group("change", "change");
    changed.running_space_guids = vec!["s1".into(), "s2".into()];
    changed.staging_default = true;
    let wanted = vec![group("keep", "keep"), changed.clone(), group("new", "new")];
    let mark = SyncMark {
        cc_last_update: "2026-12-06T09:00:00Z".into(),
        synced_at: 42,
    };
    let before = s.version().unwrap();
    let done = s.replace(&wanted, &mark).unwrap();
    assert_eq!((done.inserted, done.updated, done.deleted), (1, 1, 1));
    let after = s.version().unwrap();
    assert!(after > before);
    assert_eq!(s.sync_mark().unwrap(), mark);
    let snap = s.snapshot().unwrap();
    let mut guids: Vec<&str> = snap.groups.iter().map(|g| g.group.guid.as_str()).collect();
    guids.sort();
    assert_eq!(guids, ["change", "keep", "new"]);
    assert_eq!(
        s.get("keep").unwrap().id,
        kept_id,
        "an unchanged group keeps its row"
    );
    assert_eq!(s.get("change").unwrap().group, changed);

    let mark2 = SyncMark {
        cc_last_update: "2026-12-06T09:00:01Z".into(),
        synced_at: 43,
    };
    let same = s.replace(&wanted, &mark2).unwrap();
    assert!(!same.changed());
    assert_eq!(
        s.version().unwrap(),
        after,
        "nothing changed: cells need not read again"
    );
    assert_eq!(s.sync_mark().unwrap(), mark2);
}

pub fn concurrent_binds_are_not_lost(db: &db::TestDb) {
    let s = open(&db.config);
    s.create(&group("g", "g")).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..5 {
                    let space = format!("space-{t}-{i}");
                    s.modify("g", &|g| {
                        bind(g, Lifecycle::Running, &space);
                        Ok(())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut spaces = s.get("g").unwrap().group.running_space_guids;
    spaces.sort();
    assert_eq!(spaces.len(), 20, "{spaces:?}");
    s.modify("g", &|g| {
        assert!(unbind(g, Lifecycle::Running, "space-0-0"));
        assert!(!unbind(g, Lifecycle::Staging, "space-0-0"));
        Ok(())
    })
    .unwrap();
    assert_eq!(s.get("g").unwrap().group.running_space_guids.len(), 19);
}

pub fn one_syncer_holds_the_lease_at_a_time(db: &db::TestDb) {
    let a = open(&db.config);
    let b = open(&db.config);
    let long = 60_000_000_000;
    assert!(a.acquire_sync_lease("server-a", long).unwrap());
    assert!(!b.acquire_sync_lease("server-b", long).unwrap());
    assert!(a.acquire_sync_lease("server-a", long).unwrap(), "renewal");
    a.release_sync_lease("server-a").unwrap();
    assert!(b.acquire_sync_lease("server-b", 1).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(
        a.acquire_sync_lease("server-a", long).unwrap(),
        "an expired lease is taken over"
    );
    assert!(!b.acquire_sync_lease("server-b", long).unwrap());
}

pub fn coexists_with_the_policy_store(db: &db::TestDb) {
    let policies = netman::policy::store::open(&db.config, 2).unwrap();
    let s = open(&db.config);
    s.create(&group("g", "g")).unwrap();
    policies
        .create(&[netman::api::policy::Policy::new("a", "b", "tcp", 80, 80)])
        .unwrap();
    assert_eq!(policies.count().unwrap(), 1);
    // Opened again in the other order (a restart): both migrations are recorded, nothing redone.
    let s2 = open(&db.config);
    let p2 = netman::policy::store::open(&db.config, 2).unwrap();
    assert_eq!(s2.get("g").unwrap().group.name, "g");
    assert_eq!(p2.count().unwrap(), 1);
}

db::suite!(
    writes_move_the_version_and_keep_names_unique,
    replace_upserts_by_guid_and_keeps_the_version_when_nothing_changed,
    concurrent_binds_are_not_lost,
    one_syncer_holds_the_lease_at_a_time,
    coexists_with_the_policy_store,
);
