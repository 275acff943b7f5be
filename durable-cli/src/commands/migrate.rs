//! `durable migrate`: applies the schema migrations the database lacks.

use std::fmt;

use chrono::{DateTime, Utc};
use durable_postgres_sql::admin;
use serde::Serialize;

use super::{Context, get};
use crate::error::CliError;
use crate::output::table::{Align, Table};
use crate::output::time;

/// The migrations recorded in the database, after migrating.
#[derive(Debug, Serialize)]
struct Report {
    /// The versions this run applied (empty when the schema was up to date).
    newly_applied: Vec<i64>,
    /// Every applied migration, oldest first.
    migrations: Vec<Applied>,
}

#[derive(Debug, Serialize)]
struct Applied {
    version: i64,
    name: String,
    applied_at: DateTime<Utc>,
    newly_applied: bool,
}

pub(super) async fn run(ctx: &Context) -> Result<(), CliError> {
    let before = applied_versions(ctx).await?;
    durable_postgres_sqlx::migrate(ctx.pool())
        .await
        .map_err(CliError::store("migrating"))?;
    let rows = sqlx::query(admin::SCHEMA_MIGRATIONS)
        .fetch_all(ctx.pool())
        .await
        .map_err(CliError::db("reading the applied migrations"))?;
    let mut migrations = Vec::with_capacity(rows.len());
    for row in &rows {
        let version: i64 = get(row, "version")?;
        migrations.push(Applied {
            version,
            name: get(row, "name")?,
            applied_at: get(row, "applied_at")?,
            newly_applied: !before.contains(&version),
        });
    }
    let newly_applied = migrations
        .iter()
        .filter(|m| m.newly_applied)
        .map(|m| m.version)
        .collect();
    ctx.print(&Report {
        newly_applied,
        migrations,
    })
}

/// The versions applied before this run (none on a database never migrated).
async fn applied_versions(ctx: &Context) -> Result<Vec<i64>, CliError> {
    let present: bool = sqlx::query_scalar(admin::MIGRATIONS_TABLE_EXISTS)
        .fetch_one(ctx.pool())
        .await
        .map_err(CliError::db("looking for the migrations table"))?;
    if !present {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(durable_postgres_sql::migrate::APPLIED_VERSIONS)
        .fetch_all(ctx.pool())
        .await
        .map_err(CliError::db("reading the applied migrations"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut table = Table::new(&[
            ("VERSION", Align::Right),
            ("NAME", Align::Left),
            ("APPLIED AT", Align::Left),
            ("STATUS", Align::Left),
        ]);
        for m in &self.migrations {
            let status = if m.newly_applied {
                "applied now"
            } else {
                "already applied"
            };
            table.row(vec![
                m.version.to_string(),
                m.name.clone(),
                time(m.applied_at),
                status.to_owned(),
            ]);
        }
        write!(f, "{table}")?;
        match self.newly_applied.len() {
            0 => writeln!(f, "the schema is up to date"),
            1 => writeln!(f, "applied 1 migration"),
            n => writeln!(f, "applied {n} migrations"),
        }
    }
}
