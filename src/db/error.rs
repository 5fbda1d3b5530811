//! What goes wrong talking to a database, by kind: the transaction runner decides on the kind
//! (retry a lost race, give up on the rest), never on message text.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The `database` config is invalid (found before connecting; never retried).
    Config(String),
    /// The database could not be reached or answered with an error.
    Database(String),
    /// A lost race (busy or locked, deadlock, serialization failure, a unique or foreign-key race):
    /// [`crate::db::Db`] runs the whole transaction again; it never reaches a caller of `Db`.
    LostRace(String),
    /// The schema recorded in a migrations table is newer than this binary knows.
    SchemaTooNew { found: i64, known: i64 },
    /// The database answers but cannot be used as it is, and waiting will not change that: a
    /// damaged or foreign file, permission or authentication refused, a database that does not
    /// exist; or start-up was told to stop. Never retried: start-up ends at once.
    Permanent(String),
    /// The database holds something the caller must not open or change as it is (another
    /// program's schema, a conversion that stopped half-way), or a maintenance step failed in a
    /// way running it again will not fix; the message says what to do. Never retried.
    Refused(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) | Error::Refused(e) => f.write_str(e),
            Error::Permanent(e) => write!(f, "database: {e}"),
            Error::Database(e) | Error::LostRace(e) => write!(f, "database: {e}"),
            Error::SchemaTooNew { found, known } => write!(
                f,
                "database schema version {found} is newer than this binary knows ({known})"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// A final database error with this message.
pub fn database(msg: impl Into<String>) -> Error {
    Error::Database(msg.into())
}

/// Prefixes a database error's message with what was being done (other kinds pass unchanged).
pub fn context(e: Error, what: &str) -> Error {
    match e {
        Error::Database(m) => Error::Database(format!("{what}: {m}")),
        Error::Permanent(m) => Error::Permanent(format!("{what}: {m}")),
        other => other,
    }
}

/// What a transaction body may fail with: the database's own [`Error`] converts into it, and the
/// runner can look inside to retry lost races and stale connections. A store whose transactions
/// also end in answers of its own (e.g. "tag pool exhausted") wraps both in one enum.
pub trait TxError: From<Error> {
    /// The database error this is, if it is one.
    fn db(&self) -> Option<&Error>;
}

impl TxError for Error {
    fn db(&self) -> Option<&Error> {
        Some(self)
    }
}
