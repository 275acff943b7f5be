//! Batched completions: the runs of a worker that finish together are completed in one call of
//! [`Store::complete_runs`] (one round trip and one commit on the PostgreSQL stores).
//!
//! There is no timer. The first finished run is sent at once (after letting the runs that
//! finished at the same moment catch up), and while that call is on its way the next runs
//! queue up and go together in the next call: an idle worker adds no latency, a busy one sends
//! batches as large as the store's round trip allows.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{RunCompletion, RunRef, Store};

/// The most runs one `complete_runs` call carries.
const MAX_BATCH: usize = 512;

/// A finished run waiting for its completion to be recorded.
struct Pending {
    completion: RunCompletion,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Hands finished runs to the background task that completes them in batches. Cheap to
/// clone; the background task ends once every clone is dropped and the last batch is sent.
#[derive(Clone)]
pub(crate) struct Completer {
    sender: mpsc::UnboundedSender<Pending>,
}

impl Completer {
    /// Starts the background task on the current Tokio runtime.
    pub(crate) fn start(store: Arc<dyn Store>) -> (Completer, JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let handle = tokio::spawn(complete_loop(store, receiver));
        (Completer { sender }, handle)
    }

    /// Completes `run` with `output` and waits until that is recorded (or refused).
    pub(crate) async fn complete(&self, run: RunRef, output: Value) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        let pending = Pending {
            completion: RunCompletion { run, output },
            done,
        };
        if let Err(mpsc::error::SendError(pending)) = self.sender.send(pending) {
            // The background task is gone (its runtime is shutting down): not recorded; the
            // lease expires and the task is retried.
            return Err(stopped(&pending.completion.run));
        }
        match result.await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::backend(
                "worker",
                "the completion was abandoned before its result was known",
            )),
        }
    }
}

fn stopped(run: &RunRef) -> StoreError {
    StoreError::backend(
        "worker",
        format!(
            "the worker stopped before run {} of task {} could be completed",
            run.run_id, run.task_id
        ),
    )
}

async fn complete_loop(store: Arc<dyn Store>, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::new();
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        // Runs that finish at the same moment are being polled right now: let them queue up.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        flush(store.as_ref(), &mut batch).await;
    }
}

async fn flush(store: &dyn Store, batch: &mut Vec<Pending>) {
    let mut runs = Vec::with_capacity(batch.len());
    let mut waiters = Vec::with_capacity(batch.len());
    for pending in batch.drain(..) {
        runs.push(pending.completion);
        waiters.push(pending.done);
    }
    let run_ids: Vec<Uuid> = runs.iter().map(|c| c.run.run_id).collect();
    match store.complete_runs(runs).await {
        Ok(results) if results.len() == waiters.len() => {
            for (waiter, result) in waiters.into_iter().zip(results) {
                let _ = waiter.send(result);
            }
        }
        Ok(results) => {
            tracing::error!(
                sent = waiters.len(),
                answered = results.len(),
                "complete_runs answered for a different number of runs"
            );
            for (waiter, run_id) in waiters.into_iter().zip(run_ids) {
                let _ = waiter.send(Err(StoreError::backend(
                    "worker",
                    format!("the store did not say whether run {run_id} was completed"),
                )));
            }
        }
        Err(error) => {
            let message = error.to_string();
            for (waiter, run_id) in waiters.into_iter().zip(run_ids) {
                let _ = waiter.send(Err(StoreError::backend(
                    "worker",
                    format!("completing run {run_id} with its batch failed: {message}"),
                )));
            }
        }
    }
}
