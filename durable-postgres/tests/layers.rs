//! The import rules of docs/architecture.md, checked on the manifests and sources: the core and
//! the shared PostgreSQL layer know no driver, and the adapters know no SQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

const DRIVERS: &[&str] = &["sqlx", "tokio-postgres", "deadpool-postgres", "deadpool"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// The names of the `[dependencies]` of a crate's manifest (not its dev-dependencies).
fn dependencies(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(workspace().join(krate).join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("reading the manifest of {krate}: {e}"));
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_core_and_the_shared_layer_depend_on_no_driver() {
    // The parser reads what is there.
    assert!(dependencies("durable-postgres").contains(&"durable-core".to_owned()));
    assert!(dependencies("durable-postgres-sqlx").contains(&"sqlx".to_owned()));
    for krate in ["durable-core", "durable-postgres"] {
        let deps = dependencies(krate);
        for driver in DRIVERS {
            assert!(
                !deps.iter().any(|d| d == driver),
                "{krate} depends on the driver {driver}"
            );
        }
    }
    assert_eq!(dependencies("durable-postgres-sql"), Vec::<String>::new());
}

#[test]
fn the_adapters_reach_the_schema_only_through_the_shared_layer() {
    for krate in ["durable-postgres-sqlx", "durable-postgres-native"] {
        let deps = dependencies(krate);
        assert!(deps.iter().any(|d| d == "durable-postgres"), "{krate}");
        assert!(
            !deps.iter().any(|d| d == "durable-postgres-sql"),
            "{krate} depends on durable-postgres-sql: statements belong to durable-postgres"
        );
        for file in sources(&workspace().join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            let forbidden_words = [
                "durable_postgres_sql::",
                "durable_postgres_sql;",
                "impl Store for",
                "impl durable_core::Store",
            ];
            for forbidden in forbidden_words {
                assert!(
                    !text.contains(forbidden),
                    "{} contains `{forbidden}`: store verbs and SQL live in durable-postgres",
                    file.display()
                );
            }
        }
    }
}
