//! Detection and conversion on the SQL layer's own connections: [`Inspect`] and [`Sql`] over
//! [`Tx`].

use super::convert::Sql;
use super::detect::Inspect;
use crate::db::{Cell, DatabaseType, Tx};

/// A connection or transaction of the SQL layer, seen as text in and text out.
pub(crate) struct TxSql<'a> {
    pub(crate) tx: &'a mut dyn Tx,
    kind: DatabaseType,
}

impl<'a> TxSql<'a> {
    pub(crate) fn new(tx: &'a mut dyn Tx) -> TxSql<'a> {
        let kind = match tx.dialect() {
            crate::db::Dialect::Sqlite => DatabaseType::Sqlite,
            crate::db::Dialect::Postgres => DatabaseType::Postgres,
            crate::db::Dialect::Mysql => DatabaseType::Mysql,
        };
        TxSql { tx, kind }
    }
}

/// Whether the database (the transaction's schema) has the table `name`.
pub(crate) fn has_table(tx: &mut dyn Tx, name: &str) -> Result<bool, crate::db::Error> {
    let tables = super::detect::tables(&mut TxSql::new(tx)).map_err(crate::db::error::database)?;
    Ok(tables.contains(name))
}

impl Inspect for TxSql<'_> {
    fn kind(&self) -> DatabaseType {
        self.kind
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let rows = self.tx.rows(sql, &[]).map_err(|e| e.to_string())?;
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
        self.tx.batch(sql).map_err(|e| e.to_string())
    }
}
