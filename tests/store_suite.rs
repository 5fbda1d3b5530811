//! The one store test suite, run unchanged against SQLite, PostgreSQL and MariaDB (real servers,
//! each test its own database): every case is a function over a fresh [`db::TestDb`], and the
//! `suite!` macro instantiates all of them per backend.

mod support;
use support::{db, wait_until};

use netman::api::policy::{Policy, Tag};
use netman::db::DatabaseConfig;
use netman::db::DatabaseType;
use netman::policy::store::{self, CachedStore, PolicyFilter, Store, StoreError, TagPool};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn open(config: &DatabaseConfig, tag_length: u8) -> Arc<dyn Store> {
    store::open(config, tag_length).unwrap_or_else(|e| panic!("opening {config}: {e}"))
}

fn p(src: &str, dst: &str, proto: &str, start: i64, end: i64) -> Policy {
    Policy::new(src, dst, proto, start, end)
}

fn untagged(mut v: Vec<Policy>) -> Vec<Policy> {
    v.iter_mut().for_each(|x| *x = x.untagged());
    v.sort();
    v
}

fn sorted(mut v: Vec<Policy>) -> Vec<Policy> {
    v.sort();
    v
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn tag_map(s: &dyn Store) -> HashMap<String, String> {
    s.tags()
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.tag))
        .collect()
}

pub fn create_list_delete(db: &db::TestDb) {
    let s = open(&db.config, 2);
    assert_eq!(s.count().unwrap(), 0);
    assert!(s.list(&PolicyFilter::All).unwrap().is_empty());
    s.check().unwrap();
    let batch = vec![
        p("a", "b", "tcp", 8080, 8080),
        p("a", "c", "udp", 1000, 2000),
        p("b", "a", "tcp", 443, 443),
    ];
    s.create(&batch).unwrap();
    let listed = s.list(&PolicyFilter::All).unwrap();
    assert_eq!(untagged(listed.clone()), sorted(batch.clone()));
    // Tags are filled and agree with the tag table.
    let tags = tag_map(s.as_ref());
    for x in &listed {
        assert_eq!(x.source.tag.as_ref(), tags.get(&x.source.id));
        assert_eq!(x.destination.tag.as_ref(), tags.get(&x.destination.id));
    }
    // Idempotent create, also within one batch.
    s.create(&[batch[0].clone(), batch[0].clone()]).unwrap();
    assert_eq!(s.count().unwrap(), 3);
    // Same app pair, other port: a new policy on a new destination row.
    s.create(&[p("a", "b", "tcp", 9090, 9090)]).unwrap();
    assert_eq!(s.count().unwrap(), 4);
    // Delete: missing policies are skipped, existing ones go.
    s.delete(&[
        batch[1].clone(),
        p("nobody", "b", "tcp", 1, 1),
        p("a", "b", "tcp", 1, 1),
        p("a", "b", "udp", 8080, 8080),
    ])
    .unwrap();
    assert_eq!(s.count().unwrap(), 3);
    s.delete(&[batch[1].clone()]).unwrap();
    let left = s.list(&PolicyFilter::All).unwrap();
    assert_eq!(
        untagged(left),
        sorted(vec![
            batch[0].clone(),
            batch[2].clone(),
            p("a", "b", "tcp", 9090, 9090)
        ])
    );
    // c lost its only policy: its tag is released.
    assert!(!tag_map(s.as_ref()).contains_key("c"));
    // A second store on the same database sees the same.
    let s2 = open(&db.config, 2);
    assert_eq!(s2.count().unwrap(), 3);
    assert_eq!(
        s2.list(&PolicyFilter::All).unwrap(),
        s.list(&PolicyFilter::All).unwrap()
    );
    s.delete(&s.list(&PolicyFilter::All).unwrap()).unwrap();
    assert_eq!(s.count().unwrap(), 0);
    assert!(s.tags().unwrap().is_empty(), "every tag released");
}

pub fn filters(db: &db::TestDb) {
    let s = open(&db.config, 2);
    let all = vec![
        p("a", "b", "tcp", 80, 80),
        p("a", "c", "tcp", 81, 81),
        p("b", "c", "udp", 82, 90),
        p("c", "a", "tcp", 83, 83),
        p("d", "d", "tcp", 84, 84),
    ];
    s.create(&all).unwrap();
    let list = |f: PolicyFilter| untagged(s.list(&f).unwrap());
    let pick = |idx: &[usize]| sorted(idx.iter().map(|i| all[*i].clone()).collect());
    assert_eq!(list(PolicyFilter::All), pick(&[0, 1, 2, 3, 4]));
    assert_eq!(list(PolicyFilter::Either(ids(&["a"]))), pick(&[0, 1, 3]));
    assert_eq!(
        list(PolicyFilter::Either(ids(&["b", "d"]))),
        pick(&[0, 2, 4])
    );
    assert_eq!(
        list(PolicyFilter::Either(ids(&["a", "a", "zzz"]))),
        pick(&[0, 1, 3])
    );
    assert_eq!(list(PolicyFilter::Either(ids(&["zzz"]))), pick(&[]));
    assert_eq!(list(PolicyFilter::Either(vec![])), pick(&[]));
    assert_eq!(list(PolicyFilter::Source(ids(&["a"]))), pick(&[0, 1]));
    assert_eq!(list(PolicyFilter::Source(ids(&["b", "c"]))), pick(&[2, 3]));
    assert_eq!(list(PolicyFilter::Source(vec![])), pick(&[]));
    assert_eq!(list(PolicyFilter::Destination(ids(&["c"]))), pick(&[1, 2]));
    assert_eq!(
        list(PolicyFilter::Destination(ids(&["a", "d"]))),
        pick(&[3, 4])
    );
    assert_eq!(
        list(PolicyFilter::SourceAndDestination(
            ids(&["a", "b"]),
            ids(&["c"])
        )),
        pick(&[1, 2])
    );
    assert_eq!(
        list(PolicyFilter::SourceAndDestination(ids(&["a"]), ids(&["a"]))),
        pick(&[])
    );
    assert_eq!(
        list(PolicyFilter::SourceAndDestination(ids(&["a"]), vec![])),
        pick(&[])
    );
    // Filtered lists carry tags too.
    for x in s.list(&PolicyFilter::Either(ids(&["a"]))).unwrap() {
        assert!(x.source.tag.is_some() && x.destination.tag.is_some());
    }
    // Source counts (quota) and count.
    let counts = s
        .source_policy_counts(&ids(&["a", "b", "d", "nobody"]))
        .unwrap();
    assert_eq!(counts.get("a"), Some(&2));
    assert_eq!(counts.get("b"), Some(&1));
    assert_eq!(counts.get("d"), Some(&1));
    assert_eq!(counts.get("nobody"), Some(&0));
    assert!(s.source_policy_counts(&[]).unwrap().is_empty());
    assert_eq!(s.count().unwrap(), 5);
}

/// The read cache answers exactly like SQL, and a write by another server is visible at once.
pub fn cache_agrees_with_sql(db: &db::TestDb) {
    let other = store::open_uncached(&db.config, 2).unwrap();
    let cached = CachedStore::new(store::open_uncached(&db.config, 2).unwrap());
    let mut all: Vec<Policy> = (0..60)
        .map(|i| {
            p(
                &format!("a{}", i % 7),
                &format!("a{}", (i * 3) % 11),
                "tcp",
                i,
                i,
            )
        })
        .collect();
    other.create(&all).unwrap();
    let filters = || {
        vec![
            PolicyFilter::All,
            PolicyFilter::Either(ids(&["a1", "a5", "a9", "zz"])),
            PolicyFilter::Source(ids(&["a0", "a3"])),
            PolicyFilter::Destination(ids(&["a2", "a10"])),
            PolicyFilter::SourceAndDestination(ids(&["a1", "a2"]), ids(&["a3", "a6"])),
            PolicyFilter::Either(vec![]),
        ]
    };
    let wait_fresh = || {
        wait_until("the cache to become fresh", Duration::from_secs(20), || {
            if cached.is_fresh() {
                return true;
            }
            cached.list(&PolicyFilter::All).unwrap();
            false
        });
    };
    wait_fresh();
    for f in filters() {
        assert_eq!(cached.list(&f).unwrap(), other.list(&f).unwrap(), "{f:?}");
    }
    // Writes through another store: the cache is stale at once and never answers old data.
    let extra = p("new-src", "a1", "udp", 53, 53);
    other.create(std::slice::from_ref(&extra)).unwrap();
    assert!(!cached.is_fresh());
    let listed = cached.list(&PolicyFilter::Either(ids(&["a1"]))).unwrap();
    assert!(listed.iter().any(|x| x.untagged() == extra), "{listed:?}");
    other.delete(&all[..10]).unwrap();
    all.drain(..10);
    all.push(extra);
    assert_eq!(
        untagged(cached.list(&PolicyFilter::All).unwrap()),
        sorted(all)
    );
    wait_fresh();
    for f in filters() {
        assert_eq!(cached.list(&f).unwrap(), other.list(&f).unwrap(), "{f:?}");
    }
}

pub fn tags_and_reuse(db: &db::TestDb) {
    let s = open(&db.config, 2);
    s.create(&[p("a", "b", "tcp", 1, 1)]).unwrap();
    s.create(&[p("c", "d", "tcp", 1, 1), p("a", "e", "tcp", 1, 1)])
        .unwrap();
    let tag = |id: &str, tag: &str| Tag {
        id: id.into(),
        tag: tag.into(),
        kind: "app".into(),
    };
    assert_eq!(
        s.tags().unwrap(),
        vec![
            tag("a", "0001"),
            tag("b", "0002"),
            tag("c", "0003"),
            tag("d", "0004"),
            tag("e", "0005"),
        ]
    );
    // a keeps its tag while it still has a policy; b is released.
    s.delete(&[p("a", "b", "tcp", 1, 1)]).unwrap();
    let m = tag_map(s.as_ref());
    assert_eq!(m.get("a").map(String::as_str), Some("0001"));
    assert!(!m.contains_key("b"));
    // Released tags rest in quarantine: new ids get never-used tags, lowest first.
    s.delete(&[p("c", "d", "tcp", 1, 1)]).unwrap();
    s.create(&[p("x", "y", "tcp", 1, 1)]).unwrap();
    let m = tag_map(s.as_ref());
    assert_eq!(m.get("x").map(String::as_str), Some("0006"));
    assert_eq!(m.get("y").map(String::as_str), Some("0007"));
    // Internal tags: returned as is, allocated like app tags, type conflicts refused.
    let r = s.create_tag("router-1", "router").unwrap();
    assert_eq!(
        r,
        Tag {
            id: "router-1".into(),
            tag: "0008".into(),
            kind: "router".into()
        }
    );
    assert_eq!(s.create_tag("router-1", "router").unwrap(), r);
    assert_eq!(s.create_tag("a", "app").unwrap(), tag("a", "0001"));
    assert_eq!(
        s.create_tag("router-1", "app"),
        Err(StoreError::TagTypeConflict {
            id: "router-1".into(),
            existing: "router".into()
        })
    );
    // A policy on an id held by another type fails and changes nothing.
    let before = s.tags().unwrap();
    assert!(matches!(
        s.create(&[p("router-1", "zz", "tcp", 1, 1)]),
        Err(StoreError::TagTypeConflict { .. })
    ));
    assert_eq!(s.tags().unwrap(), before);
    // Tags are ordered by tag.
    let t = s.tags().unwrap();
    assert!(t.windows(2).all(|w| w[0].tag < w[1].tag), "{t:?}");
}

/// Issue 18, item 1: allow A→B (A gets a tag), remove the policy (the tag is released), allow
/// C→D: neither C nor D may get A's or B's tag while it is in quarantine, or a cell that has not
/// yet seen the removal lets A pass as C. Also through the internal `PUT tags`.
pub fn released_tags_are_quarantined(db: &db::TestDb) {
    let s = open(&db.config, 2);
    s.create(&[p("app-a", "app-b", "tcp", 8080, 8080)]).unwrap();
    let before = tag_map(s.as_ref());
    let released: HashSet<String> = [before["app-a"].clone(), before["app-b"].clone()].into();
    s.delete(&[p("app-a", "app-b", "tcp", 8080, 8080)]).unwrap();
    assert!(tag_map(s.as_ref()).is_empty());
    s.create(&[p("app-c", "app-d", "tcp", 8080, 8080)]).unwrap();
    let router = s.create_tag("router", "router").unwrap();
    let after = tag_map(s.as_ref());
    for id in ["app-c", "app-d", "router"] {
        assert!(
            !released.contains(&after[id]),
            "{id} got {} although it was released just now ({before:?} -> {after:?})",
            after[id]
        );
    }
    assert_eq!(router.tag, after["router"]);
    // The same holds for a second server on the same database (the state is in the database).
    let other = open(&db.config, 2);
    assert!(!released.contains(&other.create_tag("app-e", "app").unwrap().tag));
}

/// After the quarantine the released tags come back, the one released longest ago first; while
/// every free tag rests, allocation fails with its own error and changes nothing.
pub fn quarantine_ends_least_recently_released_first(db: &db::TestDb) {
    let quarantine = Duration::from_secs(3);
    let s = store::open(&db.config, TagPool::new(1, quarantine)).unwrap();
    s.create(&[p("a", "b", "tcp", 1, 1), p("c", "d", "tcp", 1, 1)])
        .unwrap();
    s.delete(&[p("c", "d", "tcp", 1, 1)]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s.delete(&[p("a", "b", "tcp", 1, 1)]).unwrap();
    let released = Instant::now();
    // Never-used tags first, lowest first (one transaction, well within the quarantine); then
    // nothing is free outside the quarantine.
    let fill: Vec<Policy> = (5..255)
        .step_by(2)
        .map(|i| p(&format!("t{i}"), &format!("t{}", i + 1), "tcp", 1, 1))
        .collect();
    s.create(&fill).unwrap();
    assert_eq!(s.create_tag("t255", "app").unwrap().tag, "FF");
    let before = s.tags().unwrap();
    for t in &before {
        assert_eq!(t.tag, format!("{:02X}", t.id[1..].parse::<u32>().unwrap()));
    }
    assert!(
        released.elapsed() < quarantine,
        "filling took {:?}",
        released.elapsed()
    );
    assert_eq!(
        s.create_tag("late", "app"),
        Err(StoreError::TagsInQuarantine { resting: 4 })
    );
    assert!(s.create(&[p("late", "t5", "tcp", 1, 1)]).is_err());
    assert_eq!(s.tags().unwrap(), before);
    assert_eq!(s.count().unwrap(), fill.len());
    std::thread::sleep(
        (quarantine + Duration::from_millis(100)).saturating_sub(released.elapsed()),
    );
    // c and d (03, 04) were released before a and b (01, 02).
    let got: Vec<String> = ["w", "x", "y", "z"]
        .iter()
        .map(|id| s.create_tag(id, "app").unwrap().tag)
        .collect();
    assert_eq!(got, ["03", "04", "01", "02"]);
    assert_eq!(
        s.create_tag("full", "app"),
        Err(StoreError::TagPoolExhausted)
    );
}

/// A database of schema version 1 (before the quarantine) keeps its tags and policies when
/// migrated, and its free tags count as released long ago.
pub fn quarantine_migration_keeps_existing_tags(db: &db::TestDb) {
    let s = open(&db.config, 2);
    s.create(&[p("a", "b", "tcp", 1, 1), p("c", "d", "tcp", 2, 2)])
        .unwrap();
    let tags = s.tags().unwrap();
    let policies = s.list(&PolicyFilter::All).unwrap();
    drop(s);
    match db.kind() {
        DatabaseType::Mysql => {
            db.exec("ALTER TABLE `groups` DROP KEY idx_groups_free_since, DROP COLUMN released_at")
        }
        _ => db.exec(
            "DROP INDEX idx_groups_free_since; \
             ALTER TABLE \"groups\" DROP COLUMN released_at",
        ),
    }
    db.exec("DELETE FROM netman_migrations WHERE version >= 2");
    let s = open(&db.config, 2);
    assert_eq!(
        db.query_i64("SELECT MAX(version) FROM netman_migrations"),
        store::SCHEMA_VERSION
    );
    assert_eq!(s.tags().unwrap(), tags);
    assert_eq!(s.list(&PolicyFilter::All).unwrap(), policies);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM \"groups\" WHERE released_at <> 0"),
        0
    );
    s.delete(&[p("a", "b", "tcp", 1, 1)]).unwrap();
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM \"groups\" WHERE released_at > 0"),
        2
    );
    assert_eq!(s.create_tag("e", "app").unwrap().tag, "0005");
}

pub fn tag_pool_exhaustion(db: &db::TestDb) {
    let s = open(&db.config, 1);
    for i in 1..=255 {
        let t = s.create_tag(&format!("app-{i}"), "app").unwrap();
        assert_eq!(t.tag, format!("{i:02X}"));
    }
    assert_eq!(
        s.create_tag("app-256", "app"),
        Err(StoreError::TagPoolExhausted)
    );
    assert!(matches!(
        s.create(&[p("app-1", "app-256", "tcp", 1, 1)]),
        Err(StoreError::TagPoolExhausted)
    ));
    assert_eq!(s.count().unwrap(), 0);
    // Existing tags are still handed out.
    assert_eq!(s.create_tag("app-255", "app").unwrap().tag, "FF");
}

pub fn failing_batch_leaves_nothing(db: &db::TestDb) {
    let s = open(&db.config, 1);
    s.create(&[p("keep-a", "keep-b", "tcp", 1, 1)]).unwrap();
    let before = (
        s.list(&PolicyFilter::All).unwrap(),
        s.tags().unwrap(),
        s.last_updated().unwrap(),
    );
    // 127 new pairs need 254 tags; only 253 are free: the last policy of the batch fails.
    let batch: Vec<Policy> = (0..127)
        .map(|i| p(&format!("src-{i}"), &format!("dst-{i}"), "tcp", 1, 1))
        .collect();
    assert_eq!(s.create(&batch), Err(StoreError::TagPoolExhausted));
    let after = (
        s.list(&PolicyFilter::All).unwrap(),
        s.tags().unwrap(),
        s.last_updated().unwrap(),
    );
    assert_eq!(before, after, "nothing of the failed batch remains");
    assert!(
        s.changes_since(before.2).unwrap().is_empty(),
        "the failed batch was logged as a change"
    );
    // The batch without its last policy fits exactly.
    s.create(&batch[..126]).unwrap();
    assert_eq!(s.count().unwrap(), 127);
    assert_eq!(s.tags().unwrap().len(), 254);
}

/// Every move of the version is logged with the app ids it touched, each change linking to the
/// one before, and a reader can follow the chain from any version it knew.
pub fn changes_are_logged_with_their_ids(db: &db::TestDb) {
    let s = open(&db.config, 2);
    let v0 = s.last_updated().unwrap();
    s.create(&[p("a", "b", "tcp", 1, 1), p("c", "b", "udp", 2, 3)])
        .unwrap();
    let v1 = s.last_updated().unwrap();
    s.delete(&[p("a", "b", "tcp", 1, 1)]).unwrap();
    let v2 = s.last_updated().unwrap();
    let ids = |list: &[&str]| Some(list.iter().map(|s| s.to_string()).collect());
    let log = s.changes_since(v0).unwrap();
    assert_eq!(
        log,
        vec![
            store::LoggedChange {
                version: v1,
                prev: v0,
                ids: ids(&["a", "b", "c"]),
            },
            store::LoggedChange {
                version: v2,
                prev: v1,
                ids: ids(&["a", "b"]),
            },
        ]
    );
    assert_eq!(s.changes_since(v1).unwrap(), log[1..]);
    assert!(s.changes_since(v2).unwrap().is_empty());
}

pub fn last_updated_moves(db: &db::TestDb) {
    let s = open(&db.config, 2);
    let mut last = s.last_updated().unwrap();
    let mut step = |what: &str, f: &dyn Fn()| {
        f();
        let now = s.last_updated().unwrap();
        assert!(now > last, "{what}: {now} <= {last}");
        last = now;
    };
    let x = p("a", "b", "tcp", 1, 1);
    step("create", &|| s.create(std::slice::from_ref(&x)).unwrap());
    step("create again", &|| {
        s.create(std::slice::from_ref(&x)).unwrap()
    });
    step("delete", &|| s.delete(std::slice::from_ref(&x)).unwrap());
    step("delete missing", &|| {
        s.delete(std::slice::from_ref(&x)).unwrap()
    });
    // Nanoseconds: within a minute of the clock.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!((now_ns - last).abs() < 60_000_000_000, "{last} vs {now_ns}");
    // Reads and empty batches do not move it.
    s.list(&PolicyFilter::All).unwrap();
    s.create(&[]).unwrap();
    assert_eq!(s.last_updated().unwrap(), last);
}

/// Many threads on two stores (two servers) over the same database, mixed create/delete.
pub fn concurrent_writers(db: &db::TestDb) {
    let stores = [open(&db.config, 2), open(&db.config, 2)];
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let s = stores[t % 2].clone();
            std::thread::spawn(move || {
                let mut seed = t as u64 * 7919 + 1;
                let mut rnd = move |n: u64| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) % n
                };
                for _ in 0..25 {
                    let batch: Vec<Policy> = (0..1 + rnd(4))
                        .map(|_| {
                            p(
                                &format!("app-{}", rnd(30)),
                                &format!("app-{}", rnd(30)),
                                "tcp",
                                1 + rnd(3) as i64,
                                1 + rnd(3) as i64 + 10,
                            )
                        })
                        .collect();
                    if rnd(3) == 0 {
                        s.delete(&batch).unwrap();
                    } else {
                        s.create(&batch).unwrap();
                    }
                    if rnd(5) == 0 {
                        s.create_tag(&format!("router-{}", rnd(3)), "router")
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    check_consistent(stores[0].as_ref());
    assert_eq!(
        stores[0].list(&PolicyFilter::All).unwrap(),
        stores[1].list(&PolicyFilter::All).unwrap()
    );
}

/// Tags unique, policies' tags agree with the tag table, no app tag without a policy.
fn check_consistent(s: &dyn Store) {
    let tags = s.tags().unwrap();
    let ids: HashSet<_> = tags.iter().map(|t| &t.id).collect();
    let values: HashSet<_> = tags.iter().map(|t| &t.tag).collect();
    assert_eq!(ids.len(), tags.len(), "an id holds two tags: {tags:?}");
    assert_eq!(values.len(), tags.len(), "a tag is given twice: {tags:?}");
    let by_id: HashMap<_, _> = tags.iter().map(|t| (t.id.clone(), t.clone())).collect();
    let policies = s.list(&PolicyFilter::All).unwrap();
    assert_eq!(policies.len(), s.count().unwrap());
    let mut used = BTreeSet::new();
    for x in &policies {
        assert_eq!(
            x.source.tag.as_ref(),
            by_id.get(&x.source.id).map(|t| &t.tag)
        );
        assert_eq!(
            x.destination.tag.as_ref(),
            by_id.get(&x.destination.id).map(|t| &t.tag)
        );
        used.insert(x.source.id.clone());
        used.insert(x.destination.id.clone());
    }
    for t in &tags {
        if t.kind == "app" {
            assert!(used.contains(&t.id), "app tag {t:?} has no policy left");
        }
    }
}

/// Connections the database dropped (a restart) are replaced without failing a call.
pub fn lost_connections_are_replaced(db: &db::TestDb) {
    let s = store::open_uncached(&db.config, 2).unwrap();
    // Several idle connections in the pool.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    s.list(&PolicyFilter::All).unwrap();
                }
            })
        })
        .collect();
    readers.into_iter().for_each(|t| t.join().unwrap());
    s.create(&[p("a", "b", "tcp", 1, 1)]).unwrap();
    let killed = db.kill_connections();
    if db.kind() == netman::db::DatabaseType::Sqlite {
        return; // nothing to lose
    }
    assert!(killed >= 2, "the pool held {killed} connections");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.list(&PolicyFilter::All).unwrap().len(), 1);
    s.create(&[p("a", "c", "tcp", 1, 1)]).unwrap();
    db.kill_connections();
    std::thread::sleep(Duration::from_millis(200));
    s.delete(&[p("a", "b", "tcp", 1, 1)]).unwrap();
    assert_eq!(s.count().unwrap(), 1);
    s.check().unwrap();
}

pub fn migrations_idempotent_and_concurrent(db: &db::TestDb) {
    let config = db.config.clone();
    let openers: Vec<_> = (0..6)
        .map(|_| {
            let c = config.clone();
            std::thread::spawn(move || store::open(&c, 1).map(|_| ()))
        })
        .collect();
    for o in openers {
        o.join().unwrap().expect("concurrent opener");
    }
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM netman_migrations"),
        store::SCHEMA_VERSION
    );
    assert_eq!(
        db.query_i64("SELECT MAX(version) FROM netman_migrations"),
        store::SCHEMA_VERSION
    );
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM policies_info"), 1);
    // Exactly the pool of tag length 1, all free.
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM \"groups\" WHERE guid IS NULL"),
        255
    );
    assert_eq!(store::migrate(&config, 1).unwrap(), store::SCHEMA_VERSION);
    let s = open(&config, 1);
    s.create(&[p("a", "b", "tcp", 1, 1)]).unwrap();
    // Re-opening keeps data; a longer tag length grows the pool.
    let s = open(&config, 2);
    assert_eq!(s.count().unwrap(), 1);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM \"groups\""), 65535);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM netman_migrations"),
        store::SCHEMA_VERSION
    );
}

pub fn schema_too_new_refused(db: &db::TestDb) {
    open(&db.config, 2);
    db.exec(
        "INSERT INTO netman_migrations (version, name, applied_at) VALUES (999, 'from the future', 0)",
    );
    match store::open(&db.config, 2) {
        Err(e) => assert_eq!(
            e,
            StoreError::SchemaTooNew {
                found: 999,
                known: store::SCHEMA_VERSION
            }
        ),
        Ok(_) => panic!("a schema newer than known was accepted"),
    }
}

pub fn startup_retry_times_out(db: &db::TestDb) {
    let config = db::unreachable(db.kind(), 2);
    let started = Instant::now();
    let err = match store::open(&config, 2) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened an unreachable database"),
    };
    let took = started.elapsed();
    assert!(
        err.contains("connect_timeout_seconds=2") && err.contains("attempts"),
        "{err}"
    );
    assert!(!err.contains(db::PASSWORD), "{err}");
    assert!(took >= Duration::from_secs(2), "gave up after {took:?}");
    assert!(took < Duration::from_secs(20), "kept trying for {took:?}");
}

pub fn bad_tag_length_refused(db: &db::TestDb) {
    for bad in [0u8, 3] {
        let err = store::open(&db.config, bad).err().expect("refused");
        assert!(err.to_string().contains("tag_length"), "{err}");
    }
}

db::suite!(
    create_list_delete,
    filters,
    cache_agrees_with_sql,
    tags_and_reuse,
    tag_pool_exhaustion,
    released_tags_are_quarantined,
    quarantine_ends_least_recently_released_first,
    quarantine_migration_keeps_existing_tags,
    failing_batch_leaves_nothing,
    last_updated_moves,
    changes_are_logged_with_their_ids,
    concurrent_writers,
    lost_connections_are_replaced,
    migrations_idempotent_and_concurrent,
    schema_too_new_refused,
    startup_retry_times_out,
    bad_tag_length_refused,
);

/// `require_ssl`: TLS with the server certificate verified against `ca_cert`. The Debian cluster
/// serves its snakeoil certificate (CN and SAN `localhost`, self-signed).
#[cfg(feature = "postgres")]
#[test]
fn postgres_require_ssl_verifies_the_server() {
    let db = db::postgres();
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let tls = db.config_with(|c| {
        c.host = "localhost".into();
        c.require_ssl = true;
        c.ca_cert = snakeoil.into();
    });
    let s = store::open(&tls, 2).unwrap_or_else(|e| panic!("TLS to postgres: {e}"));
    s.create(&[p("a", "b", "tcp", 1, 1)]).unwrap();
    assert_eq!(s.count().unwrap(), 1);
    // A CA that did not sign the server's certificate: refused (after the retries).
    let dir = tempfile::tempdir().unwrap();
    let other_ca = netman::pki::Ca::new("not the database's CA")
        .unwrap()
        .write_ca(dir.path())
        .unwrap();
    let wrong = db.config_with(|c| {
        c.host = "localhost".into();
        c.require_ssl = true;
        c.ca_cert = other_ca.to_string_lossy().into_owned();
        c.connect_timeout_seconds = 1;
    });
    let err = store::open(&wrong, 2)
        .err()
        .expect("unverified server accepted");
    assert!(err.to_string().contains("certificate"), "{err}");
}
