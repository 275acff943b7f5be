//! The `durable` binary against a real PostgreSQL: each test fills a fresh database through the
//! library (a worker runs a few tasks to known states), then runs the binary and checks its
//! output, its exit code and the database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use durable_core::{
    SpawnOptions, Task, TaskContext, TaskError, TaskResult, TaskStatus, WorkerOptions, async_trait,
};
use durable_postgres_sqlx::{Durable, migrate_url};
use durable_testing::postgres::{TestDatabase, template_key};
use serde_json::{Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Tasks that end in known states.

/// Completes with `2 * n`, checkpointing the product as step `double`.
struct Compute;

#[async_trait]
impl Task for Compute {
    const NAME: &'static str = "compute";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, ctx: TaskContext) -> TaskResult<u32> {
        ctx.step("double", || async move { Ok(n * 2) }).await
    }
}

/// Fails for good with its params as the message.
struct Explode;

#[async_trait]
impl Task for Explode {
    const NAME: &'static str = "explode";
    type Params = String;
    type Output = ();

    async fn run(reason: String, _ctx: TaskContext) -> TaskResult<()> {
        Err(TaskError::permanent(reason))
    }
}

/// Checkpoints step `prepare`, then sleeps until the event `go`.
struct Waiter;

#[async_trait]
impl Task for Waiter {
    const NAME: &'static str = "wait-for-go";
    type Params = String;
    type Output = Value;

    async fn run(_order: String, ctx: TaskContext) -> TaskResult<Value> {
        ctx.step("prepare", || async { Ok("ready".to_owned()) })
            .await?;
        ctx.await_event("go", None).await
    }
}

/// Spawns `compute(n)` as subtask `child` and completes with its output plus one.
struct Parent;

#[async_trait]
impl Task for Parent {
    const NAME: &'static str = "parent";
    type Params = u32;
    type Output = u32;

    async fn run(n: u32, ctx: TaskContext) -> TaskResult<u32> {
        let child = ctx
            .spawn::<Compute>("child", n, SpawnOptions::default())
            .await?;
        Ok(ctx.join("child", child).await? + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// A fresh migrated database.
async fn database() -> TestDatabase {
    let fingerprint: Vec<u8> = durable_postgres_sql::MIGRATIONS
        .iter()
        .flat_map(|m| m.sql.as_bytes().iter().copied())
        .collect();
    TestDatabase::create(
        &template_key("durable_cli", &fingerprint),
        |url| async move { migrate_url(&url).await.map_err(Into::into) },
    )
    .await
    .unwrap_or_else(|e| panic!("no test database: {e}"))
}

/// A database holding, in queue `default`: a completed `compute(21)`, a failed `explode`, a
/// pending `compute(1)` (delayed by an hour, with a header and an idempotency key), a
/// `wait-for-go` sleeping on event `go`, and a completed `parent(5)` with its completed
/// subtask `compute(5)`; in queue `reports`, a pending `compute(7)` (no worker serves it).
struct Fixture {
    db: TestDatabase,
    client: Durable,
    completed: Uuid,
    failed: Uuid,
    pending: Uuid,
    sleeping: Uuid,
    parent: Uuid,
    child: Uuid,
    other: Uuid,
}

impl Fixture {
    async fn new() -> Fixture {
        let db = database().await;
        let client = Durable::builder()
            .database_url(db.url())
            .max_connections(4)
            .build()
            .await
            .unwrap();
        client.register::<Compute>().await;
        client.register::<Explode>().await;
        client.register::<Waiter>().await;
        client.register::<Parent>().await;

        let completed = client.spawn::<Compute>(21).await.unwrap().task_id;
        let failed = client
            .spawn::<Explode>("disk full on /var".into())
            .await
            .unwrap()
            .task_id;
        let pending = client
            .spawn_with_options::<Compute>(
                1,
                SpawnOptions {
                    delay: Some(Duration::from_secs(3600)),
                    headers: [("tenant".to_owned(), json!("acme"))].into(),
                    idempotency_key: Some("pending-1".into()),
                    ..SpawnOptions::default()
                },
            )
            .await
            .unwrap()
            .task_id;
        let sleeping = client
            .spawn::<Waiter>("order-7".into())
            .await
            .unwrap()
            .task_id;
        let parent = client.spawn::<Parent>(5).await.unwrap().task_id;
        let other = client
            .spawn_with_options::<Compute>(
                7,
                SpawnOptions {
                    queue: Some("reports".into()),
                    ..SpawnOptions::default()
                },
            )
            .await
            .unwrap()
            .task_id;

        let worker = client
            .start_worker(
                WorkerOptions::default()
                    .concurrency(4)
                    .poll_interval(Duration::from_millis(50)),
            )
            .await;
        for (id, want) in [
            (completed, TaskStatus::Completed),
            (failed, TaskStatus::Failed),
            (sleeping, TaskStatus::Sleeping),
            (parent, TaskStatus::Completed),
        ] {
            wait_for(&client, id, want).await;
        }
        worker.shutdown().await;

        let child: Uuid =
            sqlx::query_scalar("SELECT task_id FROM durable.tasks WHERE parent_task_id = $1")
                .bind(parent)
                .fetch_one(client.pool())
                .await
                .unwrap();
        Fixture {
            db,
            client,
            completed,
            failed,
            pending,
            sleeping,
            parent,
            child,
            other,
        }
    }

    /// Runs the binary on this database.
    fn durable(&self, args: &[&str]) -> Run {
        run(Some(self.db.url()), args)
    }

    /// The state of a task in the database.
    async fn state(&self, id: Uuid) -> String {
        sqlx::query_scalar("SELECT state FROM durable.tasks WHERE task_id = $1")
            .bind(id)
            .fetch_one(self.client.pool())
            .await
            .unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.client.pool())
            .await
            .unwrap()
    }
}

async fn wait_for(client: &Durable, id: Uuid, want: TaskStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = client.get_task_result(id).await.unwrap().map(|r| r.status);
        if status == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} is {status:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a run of the binary left.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and parses stdout as one JSON document.
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Asserts success and returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:?}");
        &self.stdout
    }

    /// Asserts the exit code and that stdout is empty; returns stderr.
    fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        &self.stderr
    }
}

/// Runs the binary with `--database-url url` (if given), without `DURABLE_DATABASE_URL`.
fn run(url: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_durable"));
    command.env_remove("DURABLE_DATABASE_URL");
    if let Some(url) = url {
        command.args(["--database-url", url]);
    }
    run_command(command.args(args))
}

fn run_command(command: &mut Command) -> Run {
    let output = command.output().expect("the durable binary runs");
    Run {
        code: output.status.code().expect("an exit code"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// The ids of `{"tasks": [...]}`, in order.
fn ids(list: &Value) -> Vec<Uuid> {
    list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn set(ids: &[Uuid]) -> BTreeSet<Uuid> {
    ids.iter().copied().collect()
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// The line of a table that holds `needle`, split into cells at whitespace.
fn line_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
        .split_whitespace()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_list_shows_every_task_and_filters() {
    let f = Fixture::new().await;
    let newest_first = [
        f.child,
        f.other,
        f.parent,
        f.sleeping,
        f.pending,
        f.failed,
        f.completed,
    ];

    // Table: a header, then one aligned row per task.
    let text = f.durable(&["tasks", "list"]).ok().to_owned();
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "ID",
            "QUEUE",
            "NAME",
            "STATE",
            "ATTEMPT",
            "AGE",
            "LAST ERROR"
        ]
    );
    assert_eq!(text.lines().count(), 1 + newest_first.len(), "{text}");
    let failed_id = f.failed.to_string();
    let row = line_with(&text, &failed_id);
    assert_eq!(
        row[..5],
        [failed_id.as_str(), "default", "explode", "failed", "1/5"]
    );
    assert_eq!(row[6..], ["non_retryable:", "disk", "full", "on", "/var"]);
    let other_id = f.other.to_string();
    assert_eq!(
        line_with(&text, &other_id)[..5],
        [other_id.as_str(), "reports", "compute", "pending", "1/5"]
    );
    // Columns line up: every row's state starts where the header's does.
    let state_column = text.lines().next().unwrap().find("STATE").unwrap();
    for line in text.lines().skip(1) {
        let state = &line[state_column..];
        assert!(
            [
                "pending",
                "running",
                "sleeping",
                "completed",
                "failed",
                "cancelled"
            ]
            .iter()
            .any(|s| state.starts_with(s)),
            "{line}"
        );
    }

    // JSON: every task, newest first, with exactly these fields.
    let all = f.durable(&["tasks", "list", "--json"]).json();
    assert_eq!(ids(&all), newest_first);
    let failed = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == json!(failed_id))
        .unwrap();
    assert_eq!(
        keys(failed),
        [
            "age_seconds",
            "attempt",
            "created_at",
            "finished_at",
            "last_error",
            "max_attempts",
            "queue",
            "state",
            "task_id",
            "task_name"
        ]
    );
    assert_eq!(failed["queue"], "default");
    assert_eq!(failed["task_name"], "explode");
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["attempt"], 1);
    assert_eq!(failed["max_attempts"], 5);
    assert_eq!(failed["last_error"]["kind"], "non_retryable");
    assert_eq!(failed["last_error"]["message"], "disk full on /var");
    assert!(failed["finished_at"].is_string());
    assert!(failed["age_seconds"].as_f64().unwrap() >= 0.0);

    // Filters.
    let list = |args: &[&str]| {
        let mut all_args = vec!["tasks", "list", "--json"];
        all_args.extend_from_slice(args);
        ids(&f.durable(&all_args).json())
    };
    assert_eq!(
        list(&["--queue", "default", "--state", "failed"]),
        [f.failed]
    );
    assert_eq!(
        set(&list(&["--state", "pending,sleeping"])),
        set(&[f.pending, f.sleeping, f.other])
    );
    assert_eq!(
        set(&list(&["--state", "pending", "--state", "sleeping"])),
        set(&[f.pending, f.sleeping, f.other])
    );
    assert_eq!(list(&["--queue", "reports"]), [f.other]);
    assert_eq!(
        list(&["--name", "compute"]),
        [f.child, f.other, f.pending, f.completed]
    );
    assert_eq!(
        list(&["--state", "completed", "--name", "parent"]),
        [f.parent]
    );
    assert_eq!(list(&["--older-than", "1h"]), Vec::<Uuid>::new());
    assert_eq!(list(&["--newer-than", "1h"]), newest_first);
    assert_eq!(
        list(&["--newer-than", "1d", "--limit", "2"]),
        [f.child, f.other]
    );

    // Refusals.
    assert!(
        f.durable(&["tasks", "list", "--queue", "nope"])
            .fails(3)
            .contains("queue `nope` not found")
    );
    assert!(
        f.durable(&["tasks", "list", "--state", "stuck"])
            .fails(2)
            .contains("stuck")
    );
    assert!(
        f.durable(&["tasks", "list", "--older-than", "5x"])
            .fails(2)
            .contains("invalid duration")
    );
    f.durable(&["tasks", "list", "--limit", "0"]).fails(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_inspect_shows_everything_about_a_task() {
    let f = Fixture::new().await;
    let inspect = |id: Uuid| {
        f.durable(&["tasks", "inspect", &id.to_string(), "--json"])
            .json()
    };

    // A sleeping task: its checkpoint with its value, and its wait.
    let sleeping = inspect(f.sleeping);
    assert_eq!(
        keys(&sleeping),
        [
            "age_seconds",
            "attempt",
            "available_at",
            "cancellation",
            "checkpoints",
            "claimed_by",
            "created_at",
            "finished_at",
            "first_started_at",
            "headers",
            "idempotency_key",
            "last_error",
            "lease_expires_at",
            "max_attempts",
            "output",
            "params",
            "parent_task_id",
            "queue",
            "retry_strategy",
            "run_id",
            "runs",
            "state",
            "subtasks",
            "task_id",
            "task_name",
            "waits"
        ]
    );
    assert_eq!(sleeping["task_id"], json!(f.sleeping));
    assert_eq!(sleeping["task_name"], "wait-for-go");
    assert_eq!(sleeping["state"], "sleeping");
    assert_eq!(sleeping["params"], "order-7");
    assert_eq!(sleeping["attempt"], 1);
    assert_eq!(sleeping["max_attempts"], 5);
    assert!(sleeping["first_started_at"].is_string());
    assert_eq!(sleeping["available_at"], Value::Null, "no timeout");
    assert_eq!(sleeping["output"], Value::Null);
    let checkpoints = sleeping["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    assert_eq!(checkpoints[0]["name"], "prepare");
    assert_eq!(checkpoints[0]["value"], "ready");
    assert_eq!(checkpoints[0]["run_id"], sleeping["run_id"]);
    assert_eq!(
        checkpoints[0]["size_bytes"], 7,
        "\"ready\" is 7 bytes of JSON"
    );
    // Its one run, suspended on the event, by the fixture's worker.
    let runs = sleeping["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["outcome"], "suspended");
    assert_eq!(runs[0]["waiting_for"], "event go");
    assert_eq!(runs[0]["attempt"], 1);
    assert_eq!(runs[0]["run_id"], sleeping["run_id"]);
    assert!(runs[0]["worker_id"].is_string() && runs[0]["claimed_at"].is_string());
    assert_eq!(
        sleeping["waits"],
        json!([{"name": "$await:go", "event_name": "go", "timeout_at": null}])
    );
    assert_eq!(sleeping["subtasks"], json!([]));

    // A pending task: headers, idempotency key, when it becomes claimable.
    let pending = inspect(f.pending);
    assert_eq!(pending["state"], "pending");
    assert_eq!(pending["params"], 1);
    assert_eq!(pending["headers"], json!({"tenant": "acme"}));
    assert_eq!(pending["idempotency_key"], "pending-1");
    assert!(pending["available_at"].is_string());
    assert_eq!(pending["first_started_at"], Value::Null);
    assert_eq!(pending["checkpoints"], json!([]));

    // A parent: its output, its spawn and join checkpoints, its subtask.
    let parent = inspect(f.parent);
    assert_eq!(parent["state"], "completed");
    assert_eq!(parent["output"], 11);
    let names: BTreeSet<&str> = parent["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["$spawn:child", "$join:child"]));
    let children = parent["subtasks"].as_array().unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(
        keys(&children[0]),
        [
            "created_at",
            "finished_at",
            "parent_task_id",
            "state",
            "task_id",
            "task_name"
        ]
    );
    assert_eq!(children[0]["parent_task_id"], json!(f.parent));
    assert_eq!(children[0]["task_id"], json!(f.child));
    assert_eq!(children[0]["task_name"], "compute");
    assert_eq!(children[0]["state"], "completed");
    let child = inspect(f.child);
    assert_eq!(child["parent_task_id"], json!(f.parent));
    assert_eq!(child["output"], 10);
    assert_eq!(child["checkpoints"][0]["name"], "double");
    assert_eq!(child["checkpoints"][0]["value"], 10);

    // A failed task: its error.
    let failed = inspect(f.failed);
    assert_eq!(
        failed["last_error"],
        json!({"kind": "non_retryable", "message": "disk full on /var"})
    );
    assert!(failed["finished_at"].is_string());

    // Text: labelled fields, then the checkpoints, waits and subtasks.
    let text = f
        .durable(&["tasks", "inspect", &f.sleeping.to_string()])
        .ok()
        .to_owned();
    assert_eq!(line_with(&text, "state"), ["state", "sleeping"]);
    assert_eq!(line_with(&text, "attempt"), ["attempt", "1", "of", "5"]);
    assert_eq!(line_with(&text, "params"), ["params", "\"order-7\""]);
    assert!(text.contains("checkpoints (1):"), "{text}");
    assert!(text.contains("runs (1):"), "{text}");
    let run_row = line_with(&text, "suspended");
    assert!(run_row.contains(&"go"), "{run_row:?}");
    assert_eq!(line_with(&text, "prepare").last(), Some(&"\"ready\""));
    assert_eq!(line_with(&text, "$await:go")[..3], ["$await:go", "go", "-"]);
    assert!(text.contains("subtasks (0):"), "{text}");
    let text = f
        .durable(&["tasks", "inspect", &f.parent.to_string()])
        .ok()
        .to_owned();
    let child_id = f.child.to_string();
    let subtask_row: Vec<&str> = text
        .lines()
        .find(|line| line.starts_with(&child_id))
        .unwrap_or_else(|| panic!("no subtask row in:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        subtask_row[1..4],
        [f.parent.to_string().as_str(), "compute", "completed"],
        "id, parent, name, state"
    );

    // Refusals.
    let missing = Uuid::now_v7();
    assert!(
        f.durable(&["tasks", "inspect", &missing.to_string()])
            .fails(3)
            .contains(&format!("task {missing} not found"))
    );
    f.durable(&["tasks", "inspect", "not-a-uuid"]).fails(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_list_and_stats_count_exactly() {
    let f = Fixture::new().await;
    let pending_created = f
        .durable(&["tasks", "inspect", &f.pending.to_string(), "--json"])
        .json()["created_at"]
        .clone();
    let other_created = f
        .durable(&["tasks", "inspect", &f.other.to_string(), "--json"])
        .json()["created_at"]
        .clone();

    let queues = f.durable(&["queues", "list", "--json"]).json();
    let queues = queues["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2);
    assert_eq!(
        keys(&queues[0]),
        [
            "counts",
            "created_at",
            "oldest_pending_age_seconds",
            "oldest_pending_at",
            "queue"
        ]
    );
    assert_eq!(queues[0]["queue"], "default");
    assert_eq!(
        queues[0]["counts"],
        json!({"pending": 1, "running": 0, "sleeping": 1, "completed": 3, "failed": 1, "cancelled": 0})
    );
    assert_eq!(queues[0]["oldest_pending_at"], pending_created);
    assert!(queues[0]["oldest_pending_age_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(queues[1]["queue"], "reports");
    assert_eq!(
        queues[1]["counts"],
        json!({"pending": 1, "running": 0, "sleeping": 0, "completed": 0, "failed": 0, "cancelled": 0})
    );
    assert_eq!(queues[1]["oldest_pending_at"], other_created);

    let text = f.durable(&["queues", "list"]).ok().to_owned();
    assert_eq!(
        line_with(&text, "QUEUE"),
        [
            "QUEUE",
            "PENDING",
            "RUNNING",
            "SLEEPING",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "OLDEST",
            "PENDING"
        ]
    );
    assert_eq!(
        line_with(&text, "default")[..7],
        ["default", "1", "0", "1", "3", "1", "0"]
    );
    assert_eq!(
        line_with(&text, "reports")[..7],
        ["reports", "1", "0", "0", "0", "0", "0"]
    );

    // Every queue.
    let stats = f.durable(&["stats", "--json"]).json();
    assert_eq!(
        keys(&stats),
        [
            "completed_last_minute",
            "counts",
            "failed_last_minute",
            "oldest_pending_age_seconds",
            "oldest_pending_at",
            "queue"
        ]
    );
    assert_eq!(stats["queue"], Value::Null);
    assert_eq!(
        stats["counts"],
        json!({"pending": 2, "running": 0, "sleeping": 1, "completed": 3, "failed": 1, "cancelled": 0})
    );
    assert_eq!(stats["oldest_pending_at"], pending_created);
    assert_eq!(stats["completed_last_minute"], 3);
    assert_eq!(stats["failed_last_minute"], 1);

    // One queue.
    let stats = f.durable(&["stats", "--queue", "reports", "--json"]).json();
    assert_eq!(stats["queue"], "reports");
    assert_eq!(
        stats["counts"],
        json!({"pending": 1, "running": 0, "sleeping": 0, "completed": 0, "failed": 0, "cancelled": 0})
    );
    assert_eq!(stats["oldest_pending_at"], other_created);
    assert_eq!(stats["completed_last_minute"], 0);
    assert_eq!(stats["failed_last_minute"], 0);

    let text = f.durable(&["stats", "--queue", "default"]).ok().to_owned();
    assert_eq!(line_with(&text, "queue"), ["queue", "default"]);
    assert_eq!(line_with(&text, "completed "), ["completed", "3"]);
    assert_eq!(
        line_with(&text, "completed (last minute)"),
        ["completed", "(last", "minute)", "3"]
    );
    assert_eq!(
        line_with(&text, "failed (last minute)"),
        ["failed", "(last", "minute)", "1"]
    );
    assert_eq!(line_with(&text, "sleeping"), ["sleeping", "1"]);

    assert!(
        f.durable(&["stats", "--queue", "nope"])
            .fails(3)
            .contains("queue `nope` not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_cancels_and_is_idempotent() {
    let f = Fixture::new().await;
    let pending = f.pending.to_string();

    let cancelled = f.durable(&["cancel", &pending, "--json"]).json();
    assert_eq!(
        cancelled,
        json!({"task_id": pending, "queue": "default", "cancelled": true, "state": "cancelled"})
    );
    assert_eq!(f.state(f.pending).await, "cancelled");

    // Again: already finished, exit code 0, nothing changes.
    let again = f.durable(&["cancel", &pending, "--json"]).json();
    assert_eq!(again["cancelled"], false);
    assert_eq!(again["state"], "cancelled");
    let completed = f.completed.to_string();
    let text = f.durable(&["cancel", &completed]).ok().to_owned();
    assert_eq!(
        text,
        format!("task {completed} had already finished (completed): nothing to cancel\n")
    );
    assert_eq!(f.state(f.completed).await, "completed");

    // A sleeping task: cancelled with its wait gone; a wrong --queue does not find it.
    let sleeping = f.sleeping.to_string();
    assert!(
        f.durable(&["cancel", &sleeping, "--queue", "reports"])
            .fails(3)
            .contains("it is in queue `default`")
    );
    assert_eq!(f.state(f.sleeping).await, "sleeping");
    let text = f
        .durable(&["cancel", &sleeping, "--queue", "default"])
        .ok()
        .to_owned();
    assert!(
        text.starts_with(&format!("cancelled task {sleeping}")),
        "{text}"
    );
    assert_eq!(f.state(f.sleeping).await, "cancelled");
    assert_eq!(f.count("SELECT count(*) FROM durable.waits").await, 0);

    assert!(
        f.durable(&["cancel", &Uuid::now_v7().to_string()])
            .fails(3)
            .contains("not found")
    );
    f.durable(&["cancel"]).fails(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_makes_a_failed_task_pending_and_refuses_others() {
    let f = Fixture::new().await;

    let completed = f.completed.to_string();
    let refusal = f.durable(&["retry", &completed]).fails(4).to_owned();
    assert!(
        refusal.contains("only a failed task can be retried"),
        "{refusal}"
    );
    assert_eq!(f.state(f.completed).await, "completed");
    assert!(
        f.durable(&["retry", &Uuid::now_v7().to_string()])
            .fails(3)
            .contains("not found")
    );

    let failed = f.failed.to_string();
    let retried = f.durable(&["retry", &failed, "--json"]).json();
    assert_eq!(keys(&retried), ["attempt", "queue", "run_id", "task_id"]);
    assert_eq!(retried["task_id"], failed);
    assert_eq!(retried["queue"], "default");
    assert_eq!(retried["attempt"], 2);
    let (state, attempt, run_id): (String, i32, Uuid) =
        sqlx::query_as("SELECT state, attempt, run_id FROM durable.tasks WHERE task_id = $1")
            .bind(f.failed)
            .fetch_one(f.client.pool())
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempt), ("pending", 2));
    assert_eq!(retried["run_id"], json!(run_id));

    // Pending now: refused.
    f.durable(&["retry", &failed]).fails(4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_stores_the_event_and_wakes_its_waiters() {
    let f = Fixture::new().await;
    let payload = |queue: &str, name: &str| {
        let pool = f.client.pool().clone();
        let (queue, name) = (queue.to_owned(), name.to_owned());
        async move {
            sqlx::query_scalar::<_, Value>(
                "SELECT payload FROM durable.events WHERE queue_name = $1 AND event_name = $2",
            )
            .bind(queue)
            .bind(name)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };

    let emitted = f
        .durable(&["emit", "go", r#"{"approved": true}"#, "--json"])
        .json();
    assert_eq!(
        emitted,
        json!({"queue": "default", "event": "go", "first": true})
    );
    assert_eq!(
        payload("default", "go").await,
        Some(json!({"approved": true}))
    );
    assert_eq!(
        f.state(f.sleeping).await,
        "pending",
        "the waiting task was woken"
    );

    // The first emit wins.
    let again = f.durable(&["emit", "go", "1"]).ok().to_owned();
    assert!(again.contains("had already been emitted"), "{again}");
    assert_eq!(
        payload("default", "go").await,
        Some(json!({"approved": true}))
    );

    // Another queue; no payload means null.
    let emitted = f
        .durable(&["emit", "--queue", "reports", "ping", "--json"])
        .json();
    assert_eq!(emitted["first"], true);
    assert_eq!(payload("reports", "ping").await, Some(Value::Null));
    assert_eq!(payload("default", "ping").await, None);

    // Refusals: nothing stored.
    assert!(
        f.durable(&["emit", "bad", "{oops"])
            .fails(2)
            .contains("invalid JSON")
    );
    assert!(
        f.durable(&["emit", "$child:x", "1"])
            .fails(2)
            .contains("reserved")
    );
    assert!(
        f.durable(&["emit", "--queue", "nope", "bad", "1"])
            .fails(3)
            .contains("queue `nope` not found")
    );
    assert_eq!(payload("default", "bad").await, None);
    assert_eq!(payload("nope", "bad").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_created_and_dropped() {
    let f = Fixture::new().await;
    let queue_rows = |name: &'static str| {
        let pool = f.client.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM durable.queues WHERE queue_name = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    // Create: idempotent; names are checked.
    assert_eq!(
        f.durable(&["queues", "create", "jobs", "--json"]).json(),
        json!({"queue": "jobs", "created": true})
    );
    assert_eq!(queue_rows("jobs").await, 1);
    assert_eq!(
        f.durable(&["queues", "create", "jobs"]).ok(),
        "queue `jobs` already exists\n"
    );
    assert!(
        f.durable(&["queues", "create", "bad name"])
            .fails(2)
            .contains("queue name")
    );
    assert_eq!(queue_rows("bad name").await, 0);

    // An empty queue drops without --force.
    assert_eq!(
        f.durable(&["queues", "drop", "jobs", "--json"]).json(),
        json!({"queue": "jobs", "tasks_deleted": 0, "unfinished_deleted": 0, "events_deleted": 0})
    );
    assert_eq!(queue_rows("jobs").await, 0);
    assert!(
        f.durable(&["queues", "drop", "jobs"])
            .fails(3)
            .contains("queue `jobs` not found")
    );

    // A busy queue is refused, and nothing is deleted.
    f.client
        .emit_event("go", &json!("now"), None)
        .await
        .unwrap();
    let default_tasks = "SELECT count(*) FROM durable.tasks WHERE queue_name = 'default'";
    let default_events = "SELECT count(*) FROM durable.events WHERE queue_name = 'default'";
    assert_eq!(f.count(default_tasks).await, 6);
    assert_eq!(
        f.count(default_events).await,
        2,
        "go, and the subtask's outcome"
    );
    let refusal = f
        .durable(&["queues", "drop", "default"])
        .fails(4)
        .to_owned();
    assert!(
        refusal.contains("2 unfinished task(s)") && refusal.contains("--force"),
        "{refusal}"
    );
    assert_eq!(f.count(default_tasks).await, 6);
    assert_eq!(queue_rows("default").await, 1);

    // --force deletes the tasks with their checkpoints and waits, the events and the queue.
    assert!(f.count("SELECT count(*) FROM durable.checkpoints").await > 0);
    assert_eq!(
        f.durable(&["queues", "drop", "default", "--force", "--json"])
            .json(),
        json!({"queue": "default", "tasks_deleted": 6, "unfinished_deleted": 2, "events_deleted": 2})
    );
    assert_eq!(f.count(default_tasks).await, 0);
    assert_eq!(f.count(default_events).await, 0);
    assert_eq!(f.count("SELECT count(*) FROM durable.checkpoints").await, 0);
    assert_eq!(f.count("SELECT count(*) FROM durable.waits").await, 0);
    assert_eq!(queue_rows("default").await, 0);
    // Other queues are untouched.
    assert_eq!(
        f.count("SELECT count(*) FROM durable.tasks WHERE queue_name = 'reports'")
            .await,
        1
    );

    // A queue whose tasks have all finished drops without --force.
    f.durable(&["cancel", &f.other.to_string()]).ok();
    let text = f.durable(&["queues", "drop", "reports"]).ok().to_owned();
    assert_eq!(
        text,
        "dropped queue `reports`: 1 task(s) deleted (0 unfinished), 0 event(s) deleted\n"
    );
    assert_eq!(f.count("SELECT count(*) FROM durable.tasks").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_the_schema_once() {
    let db = TestDatabase::empty().await.unwrap();
    let expected: Vec<Value> = durable_postgres_sql::MIGRATIONS
        .iter()
        .map(|m| json!([m.version, m.name]))
        .collect();
    let versions: Vec<i64> = durable_postgres_sql::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();

    // Before: no schema.
    run(Some(db.url()), &["stats"]).fails(1);

    let first = run(Some(db.url()), &["migrate", "--json"]).json();
    assert_eq!(first["newly_applied"], json!(versions));
    let applied: Vec<Value> = first["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["newly_applied"], true);
            json!([m["version"], m["name"]])
        })
        .collect();
    assert_eq!(applied, expected);

    // Again: nothing to do.
    let again = run(Some(db.url()), &["migrate", "--json"]).json();
    assert_eq!(again["newly_applied"], json!([]));
    assert_eq!(
        again["migrations"].as_array().unwrap().len(),
        versions.len()
    );
    assert_eq!(
        again["migrations"][0]["applied_at"],
        first["migrations"][0]["applied_at"]
    );
    let text = run(Some(db.url()), &["migrate"]).ok().to_owned();
    assert!(text.ends_with("the schema is up to date\n"), "{text}");
    assert_eq!(line_with(&text, "schema")[..2], ["1", "schema"]);
    assert!(line_with(&text, "schema").ends_with(&["already", "applied"]));

    // The schema works.
    assert_eq!(
        run(Some(db.url()), &["stats", "--json"]).json()["counts"]["pending"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_usage_errors_have_their_exit_codes() {
    // No database given.
    let stderr = run(None, &["stats"]).fails(2).to_owned();
    assert!(stderr.contains("DURABLE_DATABASE_URL"), "{stderr}");
    // An unreachable one (nothing listens on port 1), and a malformed URL.
    let stderr = run(Some("postgres://durable@127.0.0.1:1/durable"), &["stats"])
        .fails(1)
        .to_owned();
    assert!(
        stderr.contains("could not connect to PostgreSQL"),
        "{stderr}"
    );
    assert!(
        run(Some("not a url"), &["stats"])
            .fails(2)
            .contains("invalid database URL")
    );

    // The environment variable the library reads.
    let db = database().await;
    let queues = run_command(
        Command::new(env!("CARGO_BIN_EXE_durable"))
            .env("DURABLE_DATABASE_URL", db.url())
            .args(["queues", "list", "--json"]),
    )
    .json();
    assert_eq!(queues, json!({"queues": []}));
    // The flag wins over the variable.
    let stderr = run_command(
        Command::new(env!("CARGO_BIN_EXE_durable"))
            .env("DURABLE_DATABASE_URL", db.url())
            .args([
                "--database-url",
                "postgres://durable@127.0.0.1:1/durable",
                "stats",
            ]),
    )
    .fails(1)
    .to_owned();
    assert!(stderr.contains("could not connect"), "{stderr}");

    // Usage errors, and the exit codes in --help.
    run(Some(db.url()), &[]).fails(2);
    run(Some(db.url()), &["frobnicate"]).fails(2);
    run(Some(db.url()), &["queues"]).fails(2);
    let help = run_command(
        Command::new(env!("CARGO_BIN_EXE_durable"))
            .env("DURABLE_DATABASE_URL", db.url())
            .arg("--help"),
    );
    assert!(help.ok().contains("Exit codes:"), "{help:?}");
    assert!(help.stdout.contains("3  not found"), "{help:?}");
    assert!(help.stdout.contains("4  refused"), "{help:?}");
    assert!(help.stdout.contains("DURABLE_DATABASE_URL"), "{help:?}");
    assert!(
        !help.stdout.contains(db.url()),
        "the URL is not shown: {help:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_listed_updated_and_deleted() {
    let db = database().await;
    let url = Some(db.url());
    let created = run(
        url,
        &[
            "schedules",
            "create",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--task",
            "compute",
            "--params",
            "21",
            "--queue",
            "reports",
            "--json",
        ],
    )
    .json();
    assert_eq!(created["created"], true);
    let updated = run(
        url,
        &[
            "schedules",
            "create",
            "nightly",
            "--cron",
            "30 4 * * *",
            "--task",
            "compute",
            "--queue",
            "reports",
        ],
    )
    .ok()
    .to_owned();
    assert_eq!(
        updated,
        "updated schedule `nightly` in queue `reports`: 30 4 * * *\n"
    );
    run(
        url,
        &[
            "schedules",
            "create",
            "hourly",
            "--cron",
            "@hourly",
            "--task",
            "compute",
        ],
    )
    .ok();

    let listed = run(url, &["schedules", "list", "--json"]).json();
    let schedules = listed["schedules"].as_array().unwrap();
    let names: Vec<(&str, &str)> = schedules
        .iter()
        .map(|s| (s["queue"].as_str().unwrap(), s["name"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("default", "hourly"), ("reports", "nightly")]);
    assert_eq!(schedules[1]["cron"], "30 4 * * *");
    assert_eq!(schedules[1]["task_name"], "compute");
    assert_eq!(
        schedules[1]["params"],
        Value::Null,
        "params replaced by the update"
    );
    let only = run(url, &["schedules", "list", "--queue", "reports"])
        .ok()
        .to_owned();
    assert_eq!(
        line_with(&only, "nightly")[..4],
        ["reports", "nightly", "30", "4"],
        "{only}"
    );
    assert!(!only.contains("hourly"), "{only}");

    // Bad input: usage errors, nothing stored.
    run(
        url,
        &[
            "schedules",
            "create",
            "bad",
            "--cron",
            "61 * * * *",
            "--task",
            "compute",
        ],
    )
    .fails(2);
    run(
        url,
        &[
            "schedules",
            "create",
            "bad",
            "--cron",
            "0 0 30 2 *",
            "--task",
            "compute",
        ],
    )
    .fails(2);
    run(
        url,
        &[
            "schedules",
            "create",
            "bad",
            "--cron",
            "@daily",
            "--task",
            "compute",
            "--params",
            "{",
        ],
    )
    .fails(2);
    run(url, &["schedules", "list", "--queue", "nowhere"]).fails(3);

    run(
        url,
        &["schedules", "delete", "nightly", "--queue", "reports"],
    )
    .ok();
    run(
        url,
        &["schedules", "delete", "nightly", "--queue", "reports"],
    )
    .fails(3);
    let left = run(url, &["schedules", "list", "--json"]).json();
    assert_eq!(left["schedules"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_list_pages_and_filters_by_family_key_and_patch() {
    let f = Fixture::new().await;
    let list = |args: &[&str]| {
        let mut all_args = vec!["tasks", "list", "--json"];
        all_args.extend_from_slice(args);
        f.durable(&all_args).json()
    };
    let all = ids(&list(&[]));
    // Pages of two, chained by `next`, cover the whole list in order.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let mut args = vec!["--limit", "2"];
        if let Some(after) = &after {
            args.extend(["--after", after.as_str()]);
        }
        let page = list(&args);
        paged.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, all);
    assert_eq!(ids(&list(&["--parent", &f.parent.to_string()])), [f.child]);
    assert_eq!(ids(&list(&["--key", "pending-1"])), [f.pending]);

    // The old path of a patch gate, recorded by the sleeping task.
    sqlx::query(
        "INSERT INTO durable.checkpoints (task_id, name, value, run_id, updated_at) \
         SELECT task_id, '$patch:billing-v2', 'false'::jsonb, run_id, now() \
           FROM durable.tasks WHERE task_id = $1",
    )
    .bind(f.sleeping)
    .execute(f.client.pool())
    .await
    .unwrap();
    assert_eq!(ids(&list(&["--patch", "billing-v2"])), [f.sleeping]);
    assert!(ids(&list(&["--patch", "other-change"])).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_export_is_the_history_the_library_reads_back() {
    let f = Fixture::new().await;
    let out = f.durable(&["tasks", "export", &f.parent.to_string()]);
    let detail: durable_core::inspect::TaskDetail =
        serde_json::from_str(out.ok()).expect("an export reads back as a TaskDetail");
    assert_eq!(detail.summary.task_id, f.parent);
    assert_eq!(detail.output, Some(json!(11)));
    let names: BTreeSet<&str> = detail.checkpoints.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["$spawn:child", "$join:child"]));
    assert_eq!(detail.subtasks.len(), 1);
    assert_eq!(
        detail.runs.last().map(|r| r.outcome),
        Some(durable_core::inspect::RunOutcome::Completed)
    );
    f.durable(&["tasks", "export", &Uuid::now_v7().to_string()])
        .fails(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_texts_reach_the_terminal_escaped() {
    let f = Fixture::new().await;
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mred\u{9b}1m\r";
    let id = f
        .client
        .spawn::<Explode>(hostile.to_owned())
        .await
        .unwrap()
        .task_id;
    f.client
        .work_until_idle(WorkerOptions::default())
        .await
        .unwrap();
    for args in [
        vec!["tasks", "inspect", &id.to_string()],
        vec!["tasks", "inspect", &id.to_string(), "--json"],
        vec!["tasks", "list"],
        vec!["tasks", "list", "--json"],
    ] {
        let run = f.durable(&args);
        let out = run.ok();
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?} printed a control character: {out:?}"
        );
    }
    let text = f
        .durable(&["tasks", "inspect", &id.to_string()])
        .ok()
        .to_owned();
    assert!(text.contains("\\u{1b}[31mred"), "{text}");
    let json = f
        .durable(&["tasks", "inspect", &id.to_string(), "--json"])
        .json();
    assert_eq!(
        json["last_error"]["message"], hostile,
        "JSON keeps the text, escaped"
    );
}
