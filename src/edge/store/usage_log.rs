//! [edge] Writing usage rows after the response (`waitUntil`), by one of two paths:
//!
//! - **A Queue** (`USAGE_QUEUE` bound): rows go to the queue as messages, each a JSON array of
//!   the rows that were waiting (one send for many requests under load); the queue consumer
//!   (`consume`) inserts whole batches into D1, idempotent on the request id, retried by the
//!   queue and dead-lettered after `max_retries` (wrangler.toml). This is the path that scales
//!   past one D1 writer.
//! - **Directly to D1** (no queue bound, e.g. on a plan without Queues): one D1 batch for the
//!   rows that were waiting.
//!
//! Either way rows are gathered per isolate: a request puts its row in the isolate's list and,
//! if no writer is running, becomes the writer and drains the list. Nobody waits for the
//! writer: a request never awaits a promise that another request's I/O resolves — workerd
//! cancels such a request as hung. A writer cancelled mid-batch puts the rows of that batch
//! back for the next writer; `INSERT OR IGNORE` on the request id makes a repeat harmless.
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
        PENDING.with(|q| q.borrow_mut().push(row));
        if WRITING.with(|w| w.replace(true)) {
            // The running writer takes it: nothing here waits for another request's I/O.
            return;
        }
        let _writer = WriterGuard;
        drain(&env).await;
    });
}

/// Rows as queue messages: JSON arrays of whole rows, each under the queue's message size. A
/// row too large for any message on its own (large logged bodies) is returned by index, to be
/// written directly.
fn pack(rows: &[UsageRow]) -> (Vec<(String, Vec<usize>)>, Vec<usize>) {
    let mut messages = Vec::new();
    let mut direct = Vec::new();
    let mut current = String::from("[");
    let mut members = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let Ok(json) = serde_json::to_string(row) else {
            direct.push(i);
            continue;
        };
        if json.len() + 2 > MAX_MESSAGE_BYTES {
            direct.push(i);
            continue;
        }
        if current.len() + json.len() + 2 > MAX_MESSAGE_BYTES {
            current.push(']');
            messages.push((
                std::mem::replace(&mut current, String::from("[")),
                std::mem::take(&mut members),
            ));
        }
        if members.is_empty() {
            current.push_str(&json);
        } else {
            current.push(',');
            current.push_str(&json);
        }
        members.push(i);
    }
    if !members.is_empty() {
        current.push(']');
        messages.push((current, members));
    }
    (messages, direct)
}

/// Send packed rows to the queue; the indices of rows whose message could not be sent.
async fn send_to_queue(queue: &worker::Queue, rows: &[UsageRow]) -> Vec<usize> {
    let (messages, mut direct) = pack(rows);
    for (text, members) in messages {
        // Text, not an object: one string crosses into JS instead of a tree of values.
        let message = RawMessageBuilder::new(JsValue::from_str(&text))
            .build_with_content_type(QueueContentType::Text);
        if let Err(e) = queue.send_raw(message).await {
            worker::console_warn!("usage queue send failed, writing directly: {}", e);
            direct.extend(members);
        }
    }
    direct
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
    let queue = env.queue(QUEUE_BINDING).ok();
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
        let direct: Vec<usize> = match &queue {
            Some(queue) => send_to_queue(queue, rows).await,
            None => (0..rows.len()).collect(),
        };
        if !direct.is_empty() {
            let direct: Vec<UsageRow> = direct
                .iter()
                .filter_map(|&i| rows.get(i).cloned())
                .collect();
            match &store {
                Ok(store) => write_with_retries(store, &direct).await,
                Err(e) => lost(&direct, e),
            }
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

/// What one queue message holds: the rows a writer gathered, or one row.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Rows {
    Many(Vec<UsageRow>),
    One(Box<UsageRow>),
}

/// The queue consumer: one D1 batch for the whole message batch. A failure retries the batch
/// (the queue redelivers it, then dead-letters it after `max_retries`); rows already written
/// by an earlier delivery are skipped by `INSERT OR IGNORE`. A message that is not a usage row
/// is acknowledged and logged, so it cannot block the queue.
pub async fn consume(batch: MessageBatch<JsValue>, env: &Env) -> worker::Result<()> {
    let mut rows = Vec::new();
    for message in batch.raw_iter() {
        let text = message.body().as_string().unwrap_or_default();
        match serde_json::from_str::<Rows>(&text) {
            Ok(Rows::Many(many)) => rows.extend(many),
            Ok(Rows::One(one)) => rows.push(*one),
            Err(e) => {
                worker::console_error!("usage queue: not usage rows ({}): {}", e, text);
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
        Ok(store) => {
            let mut result = Ok(());
            // A message holds up to a batch of rows; D1 takes them a batch at a time.
            for chunk in rows.chunks(BATCH_ROWS) {
                result = store.insert_usage_batch(chunk).await;
                if result.is_err() {
                    break;
                }
            }
            result
        }
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
