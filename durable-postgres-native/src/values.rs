//! Values between tokio-postgres and `durable-postgres`: parameters, rows, errors.

use deadpool_postgres::PoolError;
use durable_core::BoxError;
use durable_postgres::{DatabaseError, Decodes, DriverError, Param, Row};
use tokio_postgres::types::{FromSql, ToSql, Type};

/// A row of a result.
#[derive(Debug)]
pub struct NativeRow(tokio_postgres::Row);

/// The rows of a result, as the driver hands them out.
pub(crate) fn rows(rows: Vec<tokio_postgres::Row>) -> Vec<NativeRow> {
    rows.into_iter().map(NativeRow).collect()
}

/// A parameter as tokio-postgres takes it, with the type its variant names.
pub(crate) fn to_sql<'a>(param: &'a Param<'a>) -> (&'a (dyn ToSql + Sync), Type) {
    match param {
        Param::Text(v) => (v, Type::TEXT),
        Param::Uuid(v) => (v, Type::UUID),
        Param::Int4(v) => (v, Type::INT4),
        Param::Int8(v) => (v, Type::INT8),
        Param::Bool(v) => (v, Type::BOOL),
        Param::Timestamptz(v) => (v, Type::TIMESTAMPTZ),
        Param::Jsonb(v) => (v, Type::JSONB),
        Param::TextArray(v) => (v, Type::TEXT_ARRAY),
        Param::UuidArray(v) => (v, Type::UUID_ARRAY),
        Param::Int4Array(v) => (v, Type::INT4_ARRAY),
        Param::Int8Array(v) => (v, Type::INT8_ARRAY),
        Param::JsonbArray(v) => (v, Type::JSONB_ARRAY),
    }
}

/// A tokio-postgres error, reported as the driver reports errors.
pub(crate) fn pg_error(error: tokio_postgres::Error) -> DriverError {
    match error.as_db_error() {
        Some(db) => DriverError::Database(DatabaseError {
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            source: Box::new(error),
        }),
        None => DriverError::Other(Box::new(error)),
    }
}

/// A failure to get a connection from the pool.
pub(crate) fn pool_error(error: PoolError) -> DriverError {
    match error {
        PoolError::Backend(error) => pg_error(error),
        other => DriverError::Other(Box::new(other)),
    }
}

/// Every type tokio-postgres decodes.
impl<'r, T: FromSql<'r>> Decodes<'r, T> for NativeRow {
    fn decode(&'r self, column: &str) -> Result<Option<T>, BoxError> {
        Ok(self.0.try_get::<_, Option<T>>(column)?)
    }
}

impl Row for NativeRow {
    fn json(&self, column: &str) -> Result<Option<&str>, BoxError> {
        Ok(self.decode(column)?.map(|raw: RawJson<'_>| raw.0))
    }
}

/// The text of a `json` or `jsonb` value, not parsed.
struct RawJson<'a>(&'a str);

impl<'a> FromSql<'a> for RawJson<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let text = if *ty == Type::JSONB {
            // jsonb's binary form: a version byte, then the text.
            match raw.split_first() {
                Some((1, text)) => text,
                _ => return Err("unknown jsonb format version".into()),
            }
        } else {
            raw
        };
        Ok(RawJson(std::str::from_utf8(text)?))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_json_reads_both_forms_and_refuses_an_unknown_version() {
        let jsonb = RawJson::from_sql(&Type::JSONB, b"\x01{\"a\":1}").map(|r| r.0.to_owned());
        assert_eq!(jsonb.ok().as_deref(), Some("{\"a\":1}"));
        let json = RawJson::from_sql(&Type::JSON, b"[1]").map(|r| r.0.to_owned());
        assert_eq!(json.ok().as_deref(), Some("[1]"));
        assert!(RawJson::from_sql(&Type::JSONB, b"\x02{}").is_err());
    }
}
