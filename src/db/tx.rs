//! The few operations a store needs from a connection or transaction, the same for every
//! dialect: SQL is written once with `?` placeholders and `"double-quoted"` identifiers, and each
//! dialect's [`Tx`] turns it into its own ([`Dialect::native`]).

use super::dialect::Dialect;
use super::error::{database, Error};

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    Int(i64),
    Str(&'a str),
}

/// A result cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Str(String),
}

impl Cell {
    pub fn int(&self) -> Result<i64, Error> {
        match self {
            Cell::Int(i) => Ok(*i),
            Cell::Str(s) => s
                .parse()
                .map_err(|_| database(format!("expected an integer, got {s:?}"))),
            Cell::Null => Err(database("expected an integer, got NULL")),
        }
    }

    pub fn text(&self) -> Result<String, Error> {
        match self {
            Cell::Str(s) => Ok(s.clone()),
            Cell::Int(i) => Ok(i.to_string()),
            Cell::Null => Err(database("expected text, got NULL")),
        }
    }

    /// The text, moved out (no copy).
    pub fn take_text(&mut self) -> Result<String, Error> {
        match std::mem::replace(self, Cell::Null) {
            Cell::Str(s) => Ok(s),
            other => other.text(),
        }
    }

    pub fn opt_text(&self) -> Option<String> {
        match self {
            Cell::Str(s) => Some(s.clone()),
            Cell::Int(i) => Some(i.to_string()),
            Cell::Null => None,
        }
    }
}

/// A connection or transaction of one dialect. Errors are classified by the dialect
/// ([`Error::LostRace`] for a race the runner retries).
pub trait Tx {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the affected row count.
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64, Error>;
    /// Runs a query; returns all rows.
    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Vec<Cell>>, Error>;
    /// Runs a statement without parameters (DDL).
    fn batch(&mut self, sql: &str) -> Result<(), Error>;
}
