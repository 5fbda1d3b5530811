//! Detection and conversion on the store's own connections: [`Inspect`] and [`Sql`] over the
//! SQL layer's transaction type.

use super::convert::Sql;
use super::detect::Inspect;
use crate::policy::store::sql::{Cell, Error, Tx};
use crate::policy::store::DatabaseType;

/// A connection or transaction of the SQL layer, seen as text in and text out.
pub(crate) struct TxSql<'a> {
    pub(crate) tx: &'a mut dyn Tx,
    kind: DatabaseType,
}

impl<'a> TxSql<'a> {
    pub(crate) fn new(tx: &'a mut dyn Tx, kind: DatabaseType) -> TxSql<'a> {
        TxSql { tx, kind }
    }
}

fn message(e: Error) -> String {
    match e {
        Error::Store(e) => e.to_string(),
        Error::Conflict(m) => m,
    }
}

impl Inspect for TxSql<'_> {
    fn kind(&self) -> DatabaseType {
        self.kind
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let rows = self.tx.rows(sql, &[]).map_err(message)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|c| match c {
                        Cell::Null => None,
                        Cell::Int(i) => Some(i.to_string()),
                        Cell::Str(s) => Some(s),
                    })
                    .collect()
            })
            .collect())
    }
}

impl Sql for TxSql<'_> {
    fn execute(&mut self, sql: &str) -> Result<(), String> {
        self.tx.batch(sql).map_err(message)
    }
}
