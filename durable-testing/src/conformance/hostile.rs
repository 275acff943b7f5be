//! Hostile input: oversized and unstorable values, SQL metacharacters in every name, values that
//! do not survive JSON, unknown task names, absurd times and worker options, a task that never
//! returns. Each is refused (or survived) with a clear error, and nothing else is disturbed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::{
    DurableBuilder, DurableError, FailureKind, RetryStrategy, SpawnOptions, Store, Task,
    TaskContext, TaskResult, TaskStatus, WorkerOptions, async_trait,
};
use serde_json::{Value, json};

use super::script::{Op, Script, ScriptTask, run_script};
use super::{Case, QUEUE, StoreBuilder, ms, step};

fn invalid<T: std::fmt::Debug>(result: Result<T, DurableError>) -> String {
    match result {
        Err(DurableError::InvalidInput { reason, .. }) => reason,
        other => panic!("expected an invalid-input error, got {other:?}"),
    }
}

async fn fails_without_retry<B: StoreBuilder>(case: &Case<'_, B>, id: uuid::Uuid) -> String {
    let poll = case.poll(id).await;
    assert_eq!(poll.status, TaskStatus::Failed, "{poll:?}");
    let error = poll.error.expect("an error");
    assert_ne!(error.kind, FailureKind::Failed, "not retried: {error:?}");
    error.message
}

async fn limited<B: StoreBuilder>(b: &B, max_payload_bytes: usize) -> Case<'_, B> {
    Case::with_builder(
        b,
        DurableBuilder::new()
            .max_payload_bytes(max_payload_bytes)
            .default_retry_strategy(RetryStrategy::Fixed {
                base_delay: Duration::ZERO,
            }),
    )
    .await
}

pub async fn oversized_payloads_are_refused_with_a_clear_error<B: StoreBuilder>(b: &B) {
    let case = limited(b, 1024).await;
    let big = json!("x".repeat(2000));
    let spawn = case
        .client
        .spawn::<ScriptTask>(case.script(vec![step("s", big.clone())]))
        .await;
    assert!(invalid(spawn).contains("limit of 1024 bytes"));
    let emit = case.client.emit_event("e", &big, None).await;
    assert!(invalid(emit).contains("limit of 1024 bytes"));
    let headers = BTreeMap::from([("h".to_owned(), big.clone())]);
    let spawn = case
        .client
        .spawn_with_options::<ScriptTask>(
            case.script(vec![]),
            SpawnOptions {
                headers,
                ..Default::default()
            },
        )
        .await;
    assert!(invalid(spawn).contains("headers"));

    // From inside tasks, from small params: a step result, an event payload, an output.
    case.client.register::<Bloat>().await;
    let mut ids = Vec::new();
    for what in ["step", "emit", "output"] {
        let spawned = case.client.spawn::<Bloat>((what.into(), 2000)).await;
        ids.push(spawned.unwrap().task_id);
    }
    let fine = case.spawn(vec![step("ok", json!(1))]).await;
    case.run().await;
    for id in ids {
        let message = fails_without_retry(&case, id).await;
        assert!(message.contains("limit of 1024 bytes"), "{message}");
    }
    assert_eq!(
        case.output(fine).await,
        vec![json!(1)],
        "nothing else disturbed"
    );
}

/// Makes a value of `bytes` bytes in a step, an event or its output.
struct Bloat;

#[async_trait]
impl Task for Bloat {
    const NAME: &'static str = "conformance.bloat";
    type Params = (String, usize);
    type Output = String;

    async fn run((what, bytes): (String, usize), ctx: TaskContext) -> TaskResult<String> {
        let big = "b".repeat(bytes);
        match what.as_str() {
            "step" => ctx.step("big", || async { Ok(big.clone()) }).await,
            "emit" => {
                ctx.emit_event("big", &big).await?;
                Ok(String::new())
            }
            _ => Ok(big),
        }
    }
}

pub async fn nul_characters_are_refused_before_reaching_the_store<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let nul = json!({"text": "a\u{0}b"});
    let spawn = case
        .client
        .spawn::<ScriptTask>(case.script(vec![step("s", nul.clone())]))
        .await;
    assert!(invalid(spawn).contains("NUL"));
    assert!(invalid(case.client.emit_event("e", &nul, None).await).contains("NUL"));
    let headers = BTreeMap::from([("k\u{0}".to_owned(), json!(1))]);
    let spawn = case
        .client
        .spawn_with_options::<ScriptTask>(
            case.script(vec![]),
            SpawnOptions {
                headers,
                ..Default::default()
            },
        )
        .await;
    assert!(invalid(spawn).contains("NUL"));
    let id = case
        .spawn(vec![step("fine", json!("no nul here: \\u0000"))])
        .await;
    case.run().await;
    assert_eq!(case.output(id).await, vec![json!("no nul here: \\u0000")]);
}

/// Fails every attempt with an error text no store can keep as it is: holding NUL characters
/// (`"nul"`) or of a mebibyte (`"huge"`).
struct UnstorableError;

#[async_trait]
impl Task for UnstorableError {
    const NAME: &'static str = "conformance.unstorable-error";
    type Params = String;
    type Output = ();

    async fn run(what: String, _ctx: TaskContext) -> TaskResult<()> {
        let message = match what.as_str() {
            "nul" => "before\u{0}after\u{0}".to_owned(),
            _ => "e".repeat(1 << 20),
        };
        Err(durable_core::TaskError::failed(message))
    }
}

/// Error texts with NUL characters, or far too long, are recorded like any other, at once: the
/// attempt is retried after its delay and the task fails when none is left (a failure that
/// cannot be written used to wait out the whole lease, its text lost). NUL is written `\0`; a
/// text is cut at 64 KiB with a marker saying how long it was.
pub async fn error_texts_are_stored_whatever_they_hold<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    case.client.register::<UnstorableError>().await;
    let two_attempts = || SpawnOptions {
        max_attempts: Some(2),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for what in ["nul", "huge"] {
        let spawned = case
            .client
            .spawn_with_options::<UnstorableError>(what.into(), two_attempts())
            .await;
        ids.push(spawned.unwrap().task_id);
    }
    let fine = case.spawn(vec![step("ok", json!(1))]).await;
    case.run().await;
    let nul = case.poll(ids[0]).await;
    assert_eq!(nul.status, TaskStatus::Failed, "{nul:?}");
    assert_eq!(
        nul.error.map(|e| e.message),
        Some("before\\0after\\0".to_owned())
    );
    let huge = case.poll(ids[1]).await;
    assert_eq!(huge.status, TaskStatus::Failed, "{huge:?}");
    let message = huge.error.map(|e| e.message).unwrap_or_default();
    assert!(
        message.len() <= durable_core::policy::MAX_ERROR_BYTES,
        "{}",
        message.len()
    );
    assert!(message.starts_with("eeee"));
    assert!(
        message.ends_with(&format!("[... cut: {} bytes in all]", 1 << 20)),
        "{}",
        &message[message.len().saturating_sub(60)..]
    );
    assert_eq!(
        case.output(fine).await,
        vec![json!(1)],
        "nothing else disturbed"
    );
}

/// A task whose registered name is full of SQL and format metacharacters.
struct HostileName;

const HOSTILE: &str = "x'); DROP TABLE durable.tasks; -- \"$1\" %s {0} \\ /* ∅ 🦀 \u{202e}";

#[async_trait]
impl Task for HostileName {
    const NAME: &'static str = HOSTILE;
    type Params = Script;
    type Output = Vec<Value>;

    async fn run(params: Script, ctx: TaskContext) -> TaskResult<Vec<Value>> {
        let mut out = run_script(params, &ctx).await?;
        out.push(json!(ctx.headers()));
        Ok(out)
    }
}

pub async fn sql_metacharacters_are_plain_data_everywhere<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    case.client.register::<HostileName>().await;
    let event = format!("{HOSTILE} event");
    let script = case.script(vec![
        step(HOSTILE, json!(HOSTILE)),
        Op::Emit {
            event: event.clone(),
            payload: json!({ HOSTILE: HOSTILE }),
        },
        Op::Await {
            event: event.clone(),
            timeout_ms: None,
            catch_timeout: false,
        },
        Op::Sleep {
            name: HOSTILE.into(),
            ms: 0,
        },
    ]);
    let options = SpawnOptions {
        idempotency_key: Some(HOSTILE.into()),
        headers: BTreeMap::from([(HOSTILE.to_owned(), json!(HOSTILE))]),
        ..Default::default()
    };
    let first = case
        .client
        .spawn_with_options::<HostileName>(script.clone(), options.clone())
        .await
        .unwrap();
    let again = case
        .client
        .spawn_with_options::<HostileName>(script, options)
        .await
        .unwrap();
    assert_eq!(first.task_id, again.task_id, "the hostile key deduplicates");
    assert!(!again.created);
    let plain = case.spawn(vec![step("plain", json!(2))]).await;
    case.run().await;
    let poll = case.poll(first.task_id).await;
    assert_eq!(poll.status, TaskStatus::Completed, "{poll:?}");
    assert_eq!(
        poll.output.unwrap(),
        json!([HOSTILE, { HOSTILE: HOSTILE }, { HOSTILE: HOSTILE }])
    );
    assert_eq!(case.output(plain).await, vec![json!(2)], "tables intact");
    let later = case.spawn(vec![]).await;
    case.run().await;
    assert_eq!(case.status(later).await, TaskStatus::Completed);
}

/// A task on floats: `NaN` has no JSON form (serde_json writes `null`).
struct Floats;

#[async_trait]
impl Task for Floats {
    const NAME: &'static str = "conformance.floats";
    type Params = f64;
    type Output = f64;

    async fn run(x: f64, ctx: TaskContext) -> TaskResult<f64> {
        // x = 1: the step returns NaN; x = 2: the output is NaN; otherwise halves it.
        let half: f64 = ctx
            .step("half", || async move {
                Ok(if x == 1.0 { f64::NAN } else { x / 2.0 })
            })
            .await?;
        Ok(if x == 2.0 { f64::NAN } else { half })
    }
}

/// A task whose output cannot be serialized (map keys must be strings in JSON).
struct Unserializable;

#[async_trait]
impl Task for Unserializable {
    const NAME: &'static str = "conformance.unserializable";
    type Params = ();
    type Output = HashMap<(u8, u8), u8>;

    async fn run(_: (), _ctx: TaskContext) -> TaskResult<HashMap<(u8, u8), u8>> {
        Ok(HashMap::from([((1, 2), 3)]))
    }
}

pub async fn values_that_do_not_survive_json_are_refused<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    case.client.register::<Floats>().await;
    case.client.register::<Unserializable>().await;
    let nan = case.client.spawn::<Floats>(f64::NAN).await;
    assert!(
        matches!(nan, Err(DurableError::Serialization { .. })),
        "{nan:?}"
    );
    let nan_step = case.client.spawn::<Floats>(1.0).await.unwrap().task_id;
    let nan_output = case.client.spawn::<Floats>(2.0).await.unwrap().task_id;
    let unserializable = case
        .client
        .spawn::<Unserializable>(())
        .await
        .unwrap()
        .task_id;
    // Params that do not fit the task, put in the store by another client.
    let task = case
        .client
        .defaults()
        .new_task(
            QUEUE,
            Floats::NAME,
            json!("not a float"),
            SpawnOptions::default(),
        )
        .unwrap();
    let bad_params = case.store.spawn(task).await.unwrap().task_id;
    let fine = case.client.spawn::<Floats>(8.0).await.unwrap().task_id;
    case.run().await;
    assert!(
        fails_without_retry(&case, nan_step)
            .await
            .contains("read back")
    );
    assert!(
        fails_without_retry(&case, nan_output)
            .await
            .contains("read back")
    );
    let message = fails_without_retry(&case, unserializable).await;
    assert!(message.contains("key must be a string"), "{message}");
    let poll = case.poll(bad_params).await;
    assert_eq!(poll.status, TaskStatus::Failed);
    assert_eq!(poll.error.unwrap().kind, FailureKind::InvalidParams);
    let poll = case.poll(fine).await;
    assert_eq!(poll.output, Some(json!(4.0)), "nothing else disturbed");
}

/// Reports the attempt it ran in.
struct Late;

#[async_trait]
impl Task for Late {
    const NAME: &'static str = "conformance.late";
    type Params = ();
    type Output = u32;

    async fn run(_: (), ctx: TaskContext) -> TaskResult<u32> {
        Ok(ctx.attempt())
    }
}

pub async fn unknown_task_names_wait_without_burning_attempts<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let task = case
        .client
        .defaults()
        .new_task(QUEUE, Late::NAME, json!(null), SpawnOptions::default())
        .unwrap();
    let late = case.store.spawn(task).await.unwrap().task_id;
    let known = case.spawn(vec![step("k", json!(1))]).await;
    case.run().await;
    assert_eq!(case.status(known).await, TaskStatus::Completed);
    assert_eq!(case.status(late).await, TaskStatus::Pending, "left alone");
    // What a worker logs: the waiting task's name, which it does not serve.
    let served = vec![ScriptTask::NAME.to_owned()];
    let unserved = case
        .store
        .unserved_names(QUEUE, &served, 100)
        .await
        .unwrap();
    assert_eq!(
        unserved,
        vec![durable_core::store::UnservedName {
            task_name: Late::NAME.to_owned(),
            waiting: 1,
        }]
    );
    let all = vec![ScriptTask::NAME.to_owned(), Late::NAME.to_owned()];
    assert!(
        case.store
            .unserved_names(QUEUE, &all, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // A worker that knows the task runs it, as its first attempt.
    let other = DurableBuilder::new()
        .queue_name(QUEUE)
        .build_with_store(case.store.clone())
        .await
        .unwrap();
    other.register::<Late>().await;
    other
        .work_until_idle(WorkerOptions::default())
        .await
        .unwrap();
    assert_eq!(case.poll(late).await.output, Some(json!(1)));
}

/// Sleeps until the end or the beginning of (chrono's) time.
struct Until;

#[async_trait]
impl Task for Until {
    const NAME: &'static str = "conformance.until";
    type Params = bool;
    type Output = ();

    async fn run(future: bool, ctx: TaskContext) -> TaskResult<()> {
        let at = if future {
            DateTime::<Utc>::MAX_UTC
        } else {
            DateTime::<Utc>::MIN_UTC
        };
        ctx.sleep_until("until", at).await
    }
}

pub async fn absurd_times_and_worker_options_are_survived<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    case.client.register::<Until>().await;
    let end_of_time = case.client.spawn::<Until>(true).await.unwrap().task_id;
    let dawn_of_time = case.client.spawn::<Until>(false).await.unwrap().task_id;
    let fine = case.spawn(vec![step("s", json!(1))]).await;
    let mut options = WorkerOptions::default()
        .concurrency(4)
        .poll_interval(Duration::MAX)
        .lease_check_interval(Duration::MAX)
        .claim_timeout(Duration::MAX)
        .worker_id(format!("nul\u{0}{}", "w".repeat(1000)));
    options.batch_size = Some(usize::MAX);
    let worker = case.client.start_worker(options).await;
    case.eventually("every task ends", || async {
        case.status(end_of_time).await.is_terminal()
            && case.status(dawn_of_time).await.is_terminal()
            && case.status(fine).await.is_terminal()
    })
    .await;
    worker.shutdown().await;
    assert!(
        fails_without_retry(&case, end_of_time)
            .await
            .contains("longer than the limit")
    );
    assert_eq!(case.status(dawn_of_time).await, TaskStatus::Completed);
    assert_eq!(case.output(fine).await, vec![json!(1)]);
}

pub async fn a_task_that_never_returns_loses_its_lease_and_its_slot<B: StoreBuilder>(b: &B) {
    let case = Case::new(b).await;
    let stuck = case
        .spawn_with(
            vec![Op::Gate {
                name: "never".into(),
            }],
            SpawnOptions {
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await;
    let worker = case
        .client
        .start_worker(
            WorkerOptions::default()
                .concurrency(1)
                .claim_timeout(ms(300))
                .poll_interval(ms(20))
                .lease_check_interval(ms(20)),
        )
        .await;
    case.eventually("the stuck task runs", || async {
        case.hits("gate:never") == 1
    })
    .await;
    // Its lease expires: it fails (no attempt left), and its slot is given back.
    case.advance(ms(400)).await;
    let after = case.spawn(vec![step("after", json!(1))]).await;
    case.eventually("the next task completes in the freed slot", || async {
        case.status(after).await == TaskStatus::Completed
    })
    .await;
    worker.shutdown().await;
    let poll = case.poll(stuck).await;
    assert_eq!(poll.status, TaskStatus::Failed);
    assert_eq!(poll.error.unwrap().kind, FailureKind::LeaseExpired);
}
