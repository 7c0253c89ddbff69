//! [edge] Writing usage rows: after the response (`waitUntil`), batched per isolate, retried,
//! and never left behind.
//!
//! Each request queues its row and waits until a batch holding it is written. The first
//! request to find no writer running becomes the writer: it drains the queue in D1 batches
//! (one round trip for every row that arrived meanwhile) until it is empty. If the writer is
//! cancelled mid-batch (its request's `waitUntil` ran out), the waiting requests see their
//! acknowledgement dropped and queue their rows again; `INSERT OR IGNORE` on the request id
//! makes the repeat harmless. So a row is lost only if every attempt to write it fails, and
//! then it is logged whole so it can be replayed from the logs.

use std::cell::{Cell, RefCell};
use std::future::Future;

use futures::channel::oneshot;
use worker::js_sys::{Array, Function, Object, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{Context, Env};

use super::Store;
use crate::error::RelayError;
use crate::ledger::row::UsageRow;

/// Rows per D1 batch: small enough to stay far below D1's statement limits.
const BATCH_ROWS: usize = 100;
const ATTEMPTS: u32 = 3;

type Ack = oneshot::Sender<()>;

thread_local! {
    static QUEUE: RefCell<Vec<(UsageRow, Ack)>> = const { RefCell::new(Vec::new()) };
    static WRITING: Cell<bool> = const { Cell::new(false) };
}

/// Clears the writer flag however the writer ends, cancellation included.
struct WriterGuard;

impl Drop for WriterGuard {
    fn drop(&mut self) {
        WRITING.with(|w| w.set(false));
    }
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
        loop {
            let (ack, acked) = oneshot::channel();
            QUEUE.with(|q| q.borrow_mut().push((row.clone(), ack)));
            if !WRITING.with(|w| w.replace(true)) {
                let _guard = WriterGuard;
                drain(&env).await;
                return;
            }
            match acked.await {
                Ok(()) => return,
                // The writer went away with our row in hand: queue it again.
                Err(_) => continue,
            }
        }
    });
}

async fn drain(env: &Env) {
    let store = Store::new(env);
    loop {
        let batch: Vec<(UsageRow, Ack)> = QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            let n = q.len().min(BATCH_ROWS);
            q.drain(..n).collect()
        });
        if batch.is_empty() {
            return;
        }
        let rows: Vec<UsageRow> = batch.iter().map(|(r, _)| r.clone()).collect();
        match &store {
            Ok(store) => write_with_retries(store, &rows).await,
            Err(e) => lost(&rows, e),
        }
        for (_, ack) in batch {
            let _ = ack.send(());
        }
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

/// One Workers Analytics Engine data point per request, when the `ANALYTICS` binding exists
/// (it is optional, and absent in local dev unless configured). The layout — which blob and
/// double is which — is set in `ledger::row::COLUMNS` and documented in the README, with the SQL
/// API queries that read it.
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
