//! [edge] Writing usage rows after the response (`waitUntil`), by one of two paths:
//!
//! - **A Queue** (`USAGE_QUEUE` bound): each request sends its own row as one message; the
//!   queue consumer (`consume`) inserts whole batches into D1, idempotent on the request id,
//!   retried by the queue and dead-lettered after `max_retries` (wrangler.toml). This is the
//!   path that scales past one D1 writer.
//! - **Directly to D1** (no queue bound, e.g. on a plan without Queues): rows are batched per
//!   isolate. A request puts its row in the isolate's queue and, if no writer is running,
//!   becomes the writer and drains it (one D1 round trip for every row that arrived
//!   meanwhile). Nobody waits for the writer: a request never awaits a promise that another
//!   request's I/O resolves — workerd cancels such a request as hung. A writer cancelled
//!   mid-batch puts the rows of that batch back for the next writer; `INSERT OR IGNORE` on the
//!   request id makes a repeat harmless.
//!
//! A row that cannot be written after its retries is logged whole, so it can be replayed.

use std::cell::{Cell, RefCell};
use std::future::Future;

use worker::js_sys::{Array, Function, Object, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{Context, Env, MessageBatch, MessageExt, QueueContentType, RawMessageBuilder};

use super::Store;
use crate::edge::objects::limiter::local_dev;
use crate::error::RelayError;
use crate::ledger::row::UsageRow;

/// Rows per D1 batch: small enough to stay far below D1's statement limits.
const BATCH_ROWS: usize = 100;
const ATTEMPTS: u32 = 3;
/// The queue binding usage rows go to, when the deployment has one.
const QUEUE_BINDING: &str = "USAGE_QUEUE";
/// Queues take messages up to 128 KB; a row carrying large logged bodies goes direct instead.
const MAX_MESSAGE_BYTES: usize = 120 * 1024;

thread_local! {
    static PENDING: RefCell<Vec<UsageRow>> = const { RefCell::new(Vec::new()) };
    static WRITING: Cell<bool> = const { Cell::new(false) };
    /// Local development only: batches the consumer still fails on purpose (tests use it to
    /// show a failed batch is retried and nothing is lost).
    static FAIL_BATCHES: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Record the row `row` resolves to (`None`: nothing to record), without delaying the response.
pub fn record_later(
    env: &Env,
    ctx: &Context,
    row: impl Future<Output = Option<UsageRow>> + 'static,
) {
    let env = env.clone();
    ctx.wait_until(async move {
        let Some(row) = row.await else { return };
        analytics_point(&env, &row);
        let row = match send_to_queue(&env, row).await {
            Ok(()) => return,
            Err(row) => row,
        };
        PENDING.with(|q| q.borrow_mut().push(row));
        if WRITING.with(|w| w.replace(true)) {
            // The running writer takes it: nothing here waits for another request's I/O.
            return;
        }
        let _writer = WriterGuard;
        drain(&env).await;
    });
}

/// The row as one queue message, when a queue is bound; the row back when it must be written
/// directly (no queue, a message too large, or the send failed).
async fn send_to_queue(env: &Env, row: UsageRow) -> Result<(), UsageRow> {
    let Ok(queue) = env.queue(QUEUE_BINDING) else {
        return Err(row);
    };
    let Ok(json) = serde_json::to_string(&row) else {
        return Err(row);
    };
    if json.len() > MAX_MESSAGE_BYTES {
        return Err(row);
    }
    // Text, not an object: one string crosses into JS instead of a tree of values.
    let message = RawMessageBuilder::new(JsValue::from_str(&json))
        .build_with_content_type(QueueContentType::Text);
    match queue.send_raw(message).await {
        Ok(()) => Ok(()),
        Err(e) => {
            worker::console_warn!("usage queue send failed, writing directly: {}", e);
            Err(row)
        }
    }
}

/// Clears the writer flag however the writer ends, cancellation included.
struct WriterGuard;

impl Drop for WriterGuard {
    fn drop(&mut self) {
        WRITING.with(|w| w.set(false));
    }
}

/// A batch being written: if the writer is dropped before it is done (its request's
/// `waitUntil` ran out), the rows go back to the isolate's queue for the next writer.
struct InFlight(Option<Vec<UsageRow>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(rows) = self.0.take() {
            PENDING.with(|q| q.borrow_mut().extend(rows));
        }
    }
}

async fn drain(env: &Env) {
    let store = Store::new(env);
    loop {
        let rows: Vec<UsageRow> = PENDING.with(|q| {
            let mut q = q.borrow_mut();
            let n = q.len().min(BATCH_ROWS);
            q.drain(..n).collect()
        });
        if rows.is_empty() {
            return;
        }
        let mut batch = InFlight(Some(rows));
        let rows = batch.0.as_deref().unwrap_or_default();
        match &store {
            Ok(store) => write_with_retries(store, rows).await,
            Err(e) => lost(rows, e),
        }
        batch.0 = None;
    }
}

async fn write_with_retries(store: &Store, rows: &[UsageRow]) {
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        match store.insert_usage_batch(rows).await {
            Ok(()) => return,
            Err(e) => {
                worker::console_warn!(
                    "usage batch of {} failed (attempt {}): {}",
                    rows.len(),
                    attempt,
                    e
                );
                last = Some(e);
            }
        }
    }
    if let Some(e) = last {
        lost(rows, &e);
    }
}

/// The last resort: every row in the log, as JSON, so it can be replayed.
fn lost(rows: &[UsageRow], e: &RelayError) {
    for row in rows {
        let json = serde_json::to_string(row).unwrap_or_default();
        worker::console_error!("usage row not written ({:?}): {}", e, json);
    }
}

/// The queue consumer: one D1 batch for the whole message batch. A failure retries the batch
/// (the queue redelivers it, then dead-letters it after `max_retries`); rows already written
/// by an earlier delivery are skipped by `INSERT OR IGNORE`. A message that is not a usage row
/// is acknowledged and logged, so it cannot block the queue.
pub async fn consume(batch: MessageBatch<JsValue>, env: &Env) -> worker::Result<()> {
    let mut rows = Vec::new();
    for message in batch.raw_iter() {
        let text = message.body().as_string().unwrap_or_default();
        match serde_json::from_str::<UsageRow>(&text) {
            Ok(row) => rows.push(row),
            Err(e) => {
                worker::console_error!("usage queue: not a usage row ({}): {}", e, text);
                message.ack();
            }
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    if failing_on_purpose(env) {
        batch.retry_all();
        return Ok(());
    }
    let written = match Store::new(env) {
        Ok(store) => store.insert_usage_batch(&rows).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => batch.ack_all(),
        Err(e) => {
            worker::console_warn!("usage queue batch of {} failed: {}", rows.len(), e);
            batch.retry_all();
        }
    }
    Ok(())
}

/// `USAGE_CONSUMER_FAIL_BATCHES=n` in local development: the consumer refuses its first `n`
/// batches (per isolate), so tests can see a failed batch retried without loss.
fn failing_on_purpose(env: &Env) -> bool {
    if !local_dev(env) {
        return false;
    }
    FAIL_BATCHES.with(|left| {
        let n = left.get().unwrap_or_else(|| {
            env.var("USAGE_CONSUMER_FAIL_BATCHES")
                .ok()
                .and_then(|v| v.to_string().trim().parse().ok())
                .unwrap_or(0)
        });
        left.set(Some(n.saturating_sub(1)));
        n > 0
    })
}

/// One Workers Analytics Engine data point per request, when the `ANALYTICS` binding exists
/// (it is optional, and absent in local dev unless configured). The layout — which blob and
/// double is which — is in the README, with the SQL API queries that read it.
fn analytics_point(env: &Env, row: &UsageRow) {
    let Ok(dataset) = Reflect::get(env.as_ref(), &JsValue::from_str("ANALYTICS")) else {
        return;
    };
    if dataset.is_undefined() || dataset.is_null() {
        return;
    }
    let Some(write) = Reflect::get(&dataset, &JsValue::from_str("writeDataPoint"))
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
    else {
        return;
    };
    let values = row.data_point();
    let blobs = Array::new();
    for b in &values.blobs {
        blobs.push(&JsValue::from_str(b));
    }
    let doubles = Array::new();
    for d in values.doubles {
        doubles.push(&JsValue::from_f64(d));
    }
    let indexes = Array::new();
    indexes.push(&JsValue::from_str(values.index));
    let point = Object::new();
    let _ = Reflect::set(&point, &JsValue::from_str("blobs"), &blobs);
    let _ = Reflect::set(&point, &JsValue::from_str("doubles"), &doubles);
    let _ = Reflect::set(&point, &JsValue::from_str("indexes"), &indexes);
    if let Err(e) = write.call1(&dataset, &point) {
        worker::console_warn!("analytics data point: {:?}", e);
    }
}
