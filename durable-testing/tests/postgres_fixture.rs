//! Tests of the PostgreSQL fixture (`durable_testing::postgres`).
//!
//! Run with `cargo test -p durable-testing --features postgres --test postgres_fixture`.
//! The server comes from the environment like for any user of the fixture; set
//! `DURABLE_TEST_EXPECT_SOURCE=env|container|cluster` to also check which one was used.
#![cfg(feature = "postgres")]

use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use durable_testing::postgres::{
    FixtureError, PgServer, ServerOptions, ServerSource, TestDatabase, template_key,
};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

async fn client(url: &str) -> Result<tokio_postgres::Client, Box<dyn Error + Send + Sync>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn database_exists(
    server: &PgServer,
    name: &str,
) -> Result<bool, Box<dyn Error + Send + Sync>> {
    let admin = client(server.admin_url()).await?;
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await?;
    Ok(row.try_get::<_, i64>(0)? > 0)
}

#[tokio::test]
async fn shared_server_reports_its_source() -> TestResult {
    let started = Instant::now();
    let server = PgServer::shared().await?;
    eprintln!(
        "shared server: {:?} at {} (ready after {:?} in this test)",
        server.source(),
        server.admin_url(),
        started.elapsed()
    );
    if let Ok(expected) = std::env::var("DURABLE_TEST_EXPECT_SOURCE") {
        let actual = match server.source() {
            ServerSource::EnvUrl => "env",
            ServerSource::Container { .. } => "container",
            ServerSource::LocalCluster { .. } => "cluster",
            _ => "other",
        };
        assert_eq!(actual, expected, "server source");
    }
    Ok(())
}

#[tokio::test]
async fn two_databases_are_distinct_and_usable() -> TestResult {
    let a = TestDatabase::empty().await?;
    let b = TestDatabase::empty().await?;
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());
    assert!(a.name().starts_with("durable_test_"));

    let ca = client(a.url()).await?;
    let cb = client(b.url()).await?;
    let name: String = ca
        .query_one("SELECT current_database()", &[])
        .await?
        .try_get(0)?;
    assert_eq!(name, a.name());
    ca.batch_execute("CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (1)")
        .await?;
    let row = cb
        .query_one("SELECT to_regclass('only_in_a') IS NULL", &[])
        .await?;
    assert!(row.try_get::<_, bool>(0)?, "table leaked from a into b");
    Ok(())
}

const MIGRATION: &str = "CREATE TABLE migration_runs (ran_at timestamptz NOT NULL DEFAULT now());
INSERT INTO migration_runs DEFAULT VALUES;
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);";

static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

async fn migrate(url: String) -> Result<(), Box<dyn Error + Send + Sync>> {
    HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
    // Widen the window in which the other creators wait for the template.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = client(&url).await?;
    c.batch_execute(MIGRATION).await?;
    Ok(())
}

/// Eight creators, each in a thread with its own runtime like cargo's test threads.
#[test]
fn template_hook_runs_once_for_concurrent_creates() -> TestResult {
    let key = template_key("fixture_test", MIGRATION.as_bytes());
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let key = key.clone();
            std::thread::spawn(move || -> TestResult {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime
                    .block_on(async {
                        let db = TestDatabase::create(&key, migrate).await?;
                        let c = client(db.url()).await?;
                        let runs: i64 = c
                            .query_one("SELECT count(*) FROM migration_runs", &[])
                            .await?
                            .try_get(0)?;
                        assert_eq!(runs, 1, "the template's migration ran more than once");
                        c.execute("INSERT INTO items VALUES (1, 'mine')", &[])
                            .await?;
                        Ok(db.name().to_owned())
                    })
                    .map(|_| ())
            })
        })
        .collect();
    for thread in threads {
        match thread.join() {
            Ok(result) => result?,
            Err(_) => return Err("a creator thread panicked".into()),
        }
    }
    eprintln!("8 concurrent template clones took {:?}", started.elapsed());
    // 0 when the template was already built by another process on a shared server.
    assert!(HOOK_CALLS.load(Ordering::SeqCst) <= 1);

    // A clone of a ready template is quick.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let db = TestDatabase::create(&key, migrate_never).await?;
        eprintln!("one more clone took {:?}", started.elapsed());
        let started = Instant::now();
        drop(db);
        eprintln!("dropping it took {:?}", started.elapsed());
        Ok(())
    })
}

async fn migrate_never(_url: String) -> Result<(), Box<dyn Error + Send + Sync>> {
    Err("the template exists: the hook must not run".into())
}

#[tokio::test]
async fn dropping_a_database_removes_it() -> TestResult {
    let db = TestDatabase::empty().await?;
    let server = db.server();
    let name = db.name().to_owned();
    let _open = client(db.url()).await?; // WITH (FORCE) copes with open connections
    assert!(database_exists(server, &name).await?);
    drop(db);
    assert!(!database_exists(server, &name).await?);

    let db = TestDatabase::empty().await?;
    let name = db.name().to_owned();
    db.drop_now().await?;
    assert!(!database_exists(server, &name).await?);
    Ok(())
}

#[tokio::test]
async fn failing_migration_drops_the_template_and_reports() -> TestResult {
    let key = format!("fail_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let result = TestDatabase::create(&key, |url| async move {
        let c = client(&url).await?;
        c.batch_execute("CREATE TABLE half_done (x int)").await?;
        Err::<(), _>("boom".into())
    })
    .await;
    match result {
        Err(FixtureError::Migrate { template, source }) => {
            assert_eq!(template, format!("durable_tpl_{key}"));
            assert_eq!(source.to_string(), "boom");
        }
        other => return Err(format!("expected a migration error, got {other:?}").into()),
    }
    let server = PgServer::shared().await?;
    assert!(!database_exists(server, &format!("durable_tpl_{key}")).await?);

    // The next attempt builds the template afresh.
    let db = TestDatabase::create(&key, |url| async move {
        client(&url)
            .await?
            .batch_execute("CREATE TABLE done (x int)")
            .await?;
        Ok(())
    })
    .await?;
    client(db.url())
        .await?
        .execute("SELECT * FROM done", &[])
        .await?;
    drop(db);
    // Not to leave templates behind on a server given by URL.
    let admin = client(server.admin_url()).await?;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE durable_tpl_{key} IS_TEMPLATE false"
        ))
        .await?;
    admin
        .batch_execute(&format!("DROP DATABASE durable_tpl_{key} WITH (FORCE)"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn invalid_template_keys_are_rejected() -> TestResult {
    for key in ["", "Upper", "has-dash", &"k".repeat(41)] {
        match TestDatabase::create(key, migrate_never).await {
            Err(FixtureError::InvalidTemplateKey { .. }) => {}
            other => return Err(format!("key {key:?}: expected rejection, got {other:?}").into()),
        }
    }
    Ok(())
}

#[tokio::test]
async fn no_server_error_lists_the_options() -> TestResult {
    let options = ServerOptions {
        database_url: None,
        docker: false,
        local_cluster: true,
        pg_bin: Some("/nonexistent/pg/bin".into()),
        ..ServerOptions::default()
    };
    let message = match PgServer::start(options).await {
        Err(error @ FixtureError::NoServer(_)) => error.to_string(),
        other => return Err(format!("expected NoServer, got {other:?}").into()),
    };
    for needle in [
        "DURABLE_TEST_DATABASE_URL",
        "DURABLE_TEST_NO_DOCKER",
        "DURABLE_TEST_POSTGRES_IMAGE",
        "scripts/build-postgres-image.sh",
        "DURABLE_TEST_PG_BIN=/nonexistent/pg/bin does not contain initdb",
        "apt-get install postgresql",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from: {message}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn unusable_database_url_is_an_error() -> TestResult {
    let options = ServerOptions {
        database_url: Some("postgres://nobody:secret@127.0.0.1:1/postgres".to_owned()),
        ..ServerOptions::default()
    };
    match PgServer::start(options).await {
        Err(error @ FixtureError::EnvUrl { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("postgres://nobody:***@127.0.0.1:1/postgres"),
                "{message}"
            );
            assert!(!message.contains("secret"), "{message}");
        }
        other => return Err(format!("expected EnvUrl, got {other:?}").into()),
    }
    Ok(())
}

/// The local-cluster path, whatever the environment selects for the shared server.
#[tokio::test]
async fn local_cluster_starts_and_is_cleaned_up_on_drop() -> TestResult {
    let options = ServerOptions {
        database_url: None,
        docker: false,
        local_cluster: true,
        ..ServerOptions::from_env()
    };
    let started = Instant::now();
    let server = match PgServer::start(options).await {
        Ok(server) => server,
        Err(FixtureError::NoServer(message))
            if message.contains("no PostgreSQL server binaries") =>
        {
            eprintln!("skipped: no local PostgreSQL binaries on this machine");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    eprintln!("local cluster started in {:?}", started.elapsed());
    let ServerSource::LocalCluster { data_dir } = server.source().clone() else {
        return Err(format!("expected a local cluster, got {:?}", server.source()).into());
    };
    assert!(
        server
            .admin_url()
            .starts_with("postgres://postgres@127.0.0.1:")
    );
    let c = client(&server.url_for("postgres")).await?;
    let fsync: String = c.query_one("SHOW fsync", &[]).await?.try_get(0)?;
    assert_eq!(fsync, "off");
    let listen: String = c
        .query_one("SHOW listen_addresses", &[])
        .await?
        .try_get(0)?;
    assert_eq!(listen, "127.0.0.1");
    drop(c);

    drop(server);
    let deadline = Instant::now() + Duration::from_secs(30);
    while data_dir.exists() {
        if Instant::now() > deadline {
            return Err(format!("{} still exists after drop", data_dir.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
