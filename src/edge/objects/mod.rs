//! [edge] What the relay's Durable Objects share: their state kept as one JSON row in the
//! object's SQLite storage, and the JSON-over-fetch call from the relay to an object.

pub mod health;
pub mod limiter;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use worker::wasm_bindgen::JsValue;
use worker::{Fetch, Headers, Method, Request, RequestInit, SqlStorage, Storage, Stub};

use std::cell::RefCell;

use crate::error::RelayError;
use crate::governance::alerts::{self, AlertQueue, PendingAlert};

/// One JSON value in a table of its own, read once per object life and written on change.
pub struct JsonRow {
    sql: SqlStorage,
    table: &'static str,
}

#[derive(Deserialize)]
struct Row {
    state: String,
}

impl JsonRow {
    pub fn new(sql: SqlStorage, table: &'static str) -> JsonRow {
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, state TEXT NOT NULL)"
        );
        if let Err(e) = sql.exec(&create, None) {
            worker::console_error!("{} table: {}", table, e);
        }
        JsonRow { sql, table }
    }

    /// The stored value, or the default for a new (or unreadable) one.
    pub fn load<T: DeserializeOwned + Default>(&self) -> T {
        let rows: Vec<Row> = self
            .sql
            .exec(
                &format!("SELECT state FROM {} WHERE id = 1", self.table),
                None,
            )
            .and_then(|c| c.to_array())
            .unwrap_or_default();
        rows.first()
            .and_then(|r| serde_json::from_str(&r.state).ok())
            .unwrap_or_default()
    }

    pub fn save<T: Serialize>(&self, value: &T) -> worker::Result<()> {
        let json =
            serde_json::to_string(value).map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.sql.exec(
            &format!(
                "INSERT INTO {} (id, state) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                self.table
            ),
            vec![json.into()],
        )?;
        Ok(())
    }
}

/// POST `call` as JSON to an object and read its JSON reply.
pub async fn call<T: DeserializeOwned>(
    stub: &Stub,
    what: &str,
    call: &impl Serialize,
) -> Result<T, RelayError> {
    let internal = |stage: &str, e: &dyn std::fmt::Display| RelayError::Internal {
        detail: format!("{what} {stage}: {e}"),
    };
    let body = serde_json::to_string(call).map_err(|e| internal("call", &e))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    let request =
        Request::new_with_init("https://object/", &init).map_err(|e| internal("request", &e))?;
    let mut response = stub
        .fetch_with_request(request)
        .await
        .map_err(|e| internal("call", &e))?;
    response
        .json::<T>()
        .await
        .map_err(|e| internal("reply", &e))
}

/// POST each due webhook once, signed when the deployment has a `WEBHOOK_SECRET`; returns
/// which were delivered (2xx), for the object to record and retry the rest at its next alarm.
pub async fn deliver(due: Vec<PendingAlert>, secret: Option<&str>) -> Vec<(String, bool)> {
    let mut results = Vec::with_capacity(due.len());
    for alert in due {
        let now = crate::edge::state::now_ms();
        let headers = Headers::new();
        let _ = headers.set("content-type", "application/json");
        let _ = headers.set("user-agent", "edgerelay-webhook/1");
        if let Some(secret) = secret {
            let _ = headers.set(
                "x-relay-signature",
                &alerts::signature(secret, now, &alert.body),
            );
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(JsValue::from_str(&alert.body)));
        let delivered = match Request::new_with_init(&alert.url, &init) {
            Ok(request) => match Fetch::Request(request).send().await {
                Ok(response) => (200..300).contains(&response.status_code()),
                Err(e) => {
                    worker::console_warn!("webhook {} failed: {}", alert.id, e);
                    false
                }
            },
            Err(_) => false,
        };
        results.push((alert.id, delivered));
    }
    results
}

/// Wake the object at `at_ms` (now, if that has passed) to deliver what is due.
pub async fn wake_at(storage: &Storage, at_ms: i64) {
    let offset = (at_ms - crate::edge::state::now_ms()).max(0);
    if let Err(e) = storage.set_alarm(offset).await {
        worker::console_error!("object alarm: {}", e);
    }
}

/// The alarm of an object whose state holds an alert queue: deliver what is due, record each
/// outcome (retry later, or give up), save the state and wake again for what remains.
pub async fn run_alarm<S: Serialize + DeserializeOwned + Default>(
    cell: &RefCell<Option<S>>,
    row: &JsonRow,
    storage: &Storage,
    secret: Option<&str>,
    queue: fn(&mut S) -> &mut AlertQueue,
) -> worker::Result<()> {
    let now = crate::edge::state::now_ms();
    let due = {
        let mut slot = cell.borrow_mut();
        queue(slot.get_or_insert_with(|| row.load())).due(now)
    };
    let results = deliver(due, secret).await;
    let now = crate::edge::state::now_ms();
    let wake = {
        let mut slot = cell.borrow_mut();
        let state = slot.get_or_insert_with(|| row.load());
        for (id, delivered) in &results {
            if queue(state).attempted(id, *delivered, now) {
                worker::console_error!("webhook {} undeliverable; given up", id);
            }
        }
        row.save(state)?;
        queue(state).next_ms()
    };
    if let Some(at) = wake {
        wake_at(storage, at).await;
    }
    Ok(())
}
