//! [edge] What the relay's Durable Objects share: their state kept as one JSON row in the
//! object's SQLite storage, and the JSON-over-fetch call from the relay to an object.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use worker::wasm_bindgen::JsValue;
use worker::{Method, Request, RequestInit, SqlStorage, Stub};

use crate::error::RelayError;

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
