//! Issue 18, item 6: damaged stored state is never taken as empty, and start-up ends at once on
//! what no retry can fix. Real SQLite files (damaged here on purpose) and real PostgreSQL and
//! MariaDB servers refusing a login.

mod support;
use support::db;

use netman::api::policy::Policy;
use netman::db::DatabaseConfig;
use netman::policy::store::{self, PolicyFilter};
use std::time::{Duration, Instant};

/// Opens with a long start-up budget and returns the error and how long it took to come.
fn open_err(config: &DatabaseConfig) -> (String, Duration) {
    let mut config = config.clone();
    config.connect_timeout_seconds = 120;
    let started = Instant::now();
    match store::open(&config, 2) {
        Err(e) => (e.to_string(), started.elapsed()),
        Ok(_) => panic!("{config} was opened"),
    }
}

fn assert_at_once(took: Duration, err: &str) {
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} (retried what no retry fixes): {err}"
    );
}

/// A database file with policies in it, closed.
fn filled() -> db::TestDb {
    let db = db::sqlite();
    let s = store::open(&db.config, 2).unwrap();
    let policies: Vec<Policy> = (0..200)
        .map(|i| Policy::new(&format!("src-{i}"), &format!("dst-{i}"), "tcp", 80, 80))
        .collect();
    s.create(&policies).unwrap();
    drop(s);
    db
}

fn path(db: &db::TestDb) -> &str {
    &db.config.connection_string
}

#[test]
fn an_existing_empty_file_is_refused_not_taken_as_a_new_database() {
    let db = db::sqlite();
    std::fs::write(path(&db), b"").unwrap();
    let (err, took) = open_err(&db.config);
    assert!(err.contains("0 bytes") && err.contains(path(&db)), "{err}");
    assert_at_once(took, &err);
    assert_eq!(
        std::fs::metadata(path(&db)).unwrap().len(),
        0,
        "the file was changed"
    );
}

#[test]
fn a_new_database_is_created_whole_and_reopened() {
    let db = db::sqlite();
    let s = store::open(&db.config, 2).unwrap();
    s.create(&[Policy::new("a", "b", "tcp", 1, 1)]).unwrap();
    drop(s);
    assert!(std::fs::metadata(path(&db)).unwrap().len() > 0);
    let dir = std::path::Path::new(path(&db)).parent().unwrap();
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("creating"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let s = store::open(&db.config, 2).unwrap();
    assert_eq!(s.count().unwrap(), 1);
}

#[test]
fn a_corrupted_page_is_refused_at_start() {
    let db = filled();
    let len = std::fs::metadata(path(&db)).unwrap().len();
    let mut bytes = std::fs::read(path(&db)).unwrap();
    // Page 1 is the header and schema; damage pages in the middle of the tables.
    let start = (len as usize / 2) & !4095;
    for (i, b) in bytes[start..start + 8192].iter_mut().enumerate() {
        *b = (i * 7 + 13) as u8;
    }
    std::fs::write(path(&db), &bytes).unwrap();
    let (err, took) = open_err(&db.config);
    assert!(
        err.contains("damaged") || err.contains("malformed"),
        "{err}"
    );
    assert_at_once(took, &err);
}

#[test]
fn a_truncated_file_is_refused_at_once() {
    let db = filled();
    let len = std::fs::metadata(path(&db)).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path(&db))
        .unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let (err, took) = open_err(&db.config);
    assert!(
        err.contains("damaged") || err.contains("malformed"),
        "{err}"
    );
    assert_at_once(took, &err);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_at_once() {
    let db = db::sqlite();
    std::fs::write(path(&db), "policies: none\n".repeat(500)).unwrap();
    let (err, took) = open_err(&db.config);
    assert!(err.contains("not a database"), "{err}");
    assert_at_once(took, &err);
}

#[test]
fn an_intact_database_passes_the_check_with_its_data() {
    let db = filled();
    let s = store::open(&db.config, 2).unwrap();
    assert_eq!(s.list(&PolicyFilter::All).unwrap().len(), 200);
}

#[test]
fn an_invalid_connection_string_ends_start_up_at_once() {
    let mut config = db::sqlite().config.clone();
    config.kind = netman::db::DatabaseType::Postgres;
    config.connection_string = "host=127.0.0.1 port=notaport".into();
    if cfg!(feature = "postgres") {
        let (err, took) = open_err(&config);
        assert!(err.contains("connection_string"), "{err}");
        assert_at_once(took, &err);
    }
}

/// A server that refuses the login answers the same on every retry.
fn refused_password_ends_start_up_at_once(db: db::TestDb, says: &str) {
    let (err, took) = open_err(&db.config_with(|c| c.password = "wrong".into()));
    assert!(err.contains(says), "{err}");
    assert_at_once(took, &err);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_refused_password_ends_start_up_at_once() {
    refused_password_ends_start_up_at_once(db::postgres(), "password");
}

#[cfg(feature = "mysql")]
#[test]
fn mariadb_refused_password_ends_start_up_at_once() {
    refused_password_ends_start_up_at_once(db::mariadb(), "Access denied");
}
