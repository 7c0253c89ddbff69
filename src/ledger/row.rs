//! The ledger's row: `UsageRow` (one per request, the D1 table `usage`), the attempts and logged
//! bodies that go with it, and `COLUMNS`, the one list of its columns. Everything that writes or
//! reads the row's columns is derived from that list: the INSERT and its bound values, the SELECT
//! list, reading a row back, the CSV export's header and records (`analytics::to_csv`), and the
//! Analytics Engine data point. Adding a column is a field here, its line in `COLUMNS` and a
//! migration; the tests below fail until all three agree.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ledger::usage::Provenance;

/// One row of the D1 `usage` table (migrations/0001_core.sql and the ALTERs after it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub request_id: String,
    pub created_at: i64,
    pub tenant_id: String,
    pub key_id: String,
    pub endpoint: String,
    pub model: Option<String>,
    pub upstream_model: Option<String>,
    pub channel_id: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub error_code: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Micro-units of the tenant's currency (src/ledger/pricing.rs); 0 for an unpriced model.
    #[serde(default)]
    pub cost_micros: u64,
    /// Upstream attempts made for the request (0 when none was: refused, mock, cache hit).
    #[serde(default)]
    pub attempts: u32,
    /// A hedge raced the first attempt (one of the two was cancelled).
    #[serde(default)]
    pub hedged: bool,
    /// Billing's view of the counts: reported, estimated, partial or not_billed.
    #[serde(default = "not_billed")]
    pub provenance: String,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
    /// The API the client used: "openai" or "anthropic".
    #[serde(default)]
    pub inbound: Option<String>,
    /// The Cloudflare data centre that served the request.
    #[serde(default)]
    pub colo: Option<String>,
    /// The fingerprint of the upstream key used (never the key).
    #[serde(default)]
    pub upstream_key: Option<String>,
    /// The request's tags in canonical form (`ledger::tags::TagSet::canonical`: sorted,
    /// comma-separated, `""` for none).
    #[serde(default)]
    pub tags: String,
    /// Each attempt, when there was more than one (written to `usage_attempts`, not a column).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_log: Vec<AttemptRow>,
    /// The redacted request and reply, for a tenant that opted in (`request_bodies`, not a
    /// column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bodies: Option<Bodies>,
    pub usage_source: String,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
}

fn not_billed() -> String {
    Provenance::NotBilled.as_str().to_string()
}

/// A request's and reply's bodies as logged: redacted, and cut at `BODY_LOG_BYTES`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bodies {
    pub request: Option<String>,
    pub response: Option<String>,
}

/// How much of each body is kept.
pub const BODY_LOG_BYTES: usize = 64 * 1024;

/// Text fit for the body log: cut at `BODY_LOG_BYTES` on a character boundary (marked), then
/// redacted — cut first, so redaction's cost is bounded too.
pub fn loggable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(BODY_LOG_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = crate::ledger::redact::redact(&text[..end]);
    if end < text.len() {
        out.push_str(" [TRUNCATED]");
    }
    out
}

/// One upstream attempt of a request, linked to its usage row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRow {
    pub request_id: String,
    /// 1 for the first attempt.
    pub n: u32,
    pub channel_id: String,
    pub upstream_model: String,
    pub upstream_key: Option<String>,
    /// The upstream's status; `None` when it never answered.
    pub status: Option<u16>,
    pub error_code: Option<String>,
    /// `served`, `failed`, or `cancelled` (a hedge that lost).
    pub outcome: String,
    pub at: i64,
}

/// One column's value in a row. Each writer renders these its own way (D1 parameters, CSV
/// fields, Analytics Engine blobs and doubles), so no writer needs to know the row's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    /// TEXT; `None` is NULL.
    Text(Option<&'a str>),
    /// INTEGER: a time, a duration, a status, a number of attempts; `None` is NULL.
    Int(Option<i64>),
    /// INTEGER: tokens or micro-units. Kept unsigned so that exports show the row's own number;
    /// D1, whose integers are signed, gets it capped at `i64::MAX`.
    Count(u64),
    /// INTEGER 0 or 1; `true`/`false` in the export.
    Bool(bool),
}

impl<'a> Cell<'a> {
    /// The value as text, as the export and the data point's blobs show it; NULL is empty.
    pub fn text(&self) -> Cow<'a, str> {
        match *self {
            Cell::Text(s) => Cow::Borrowed(s.unwrap_or("")),
            Cell::Int(n) => n.map_or(Cow::Borrowed(""), |n| Cow::Owned(n.to_string())),
            Cell::Count(n) => Cow::Owned(n.to_string()),
            Cell::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        }
    }

    /// The value as an Analytics Engine double; `None` for NULL and for text.
    pub fn number(&self) -> Option<f64> {
        match *self {
            Cell::Text(_) => None,
            Cell::Int(n) => n.map(|n| n as f64),
            Cell::Count(n) => Some(n as f64),
            Cell::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
        }
    }
}

/// A column's place in the Analytics Engine data point, numbered as the SQL API names them
/// (`blob1`, `double1`, …). The README documents the layout; queries written against it rely on
/// the numbers never moving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Blob(u8),
    Double(u8),
}

pub struct Column {
    /// The D1 column, the CSV header and the SELECT name alike: always the field's name.
    pub name: &'static str,
    get: fn(&UsageRow) -> Cell<'_>,
    /// Sets the field from the value a query returned; `None` when the value does not fit.
    put: fn(&mut UsageRow, &Value) -> Option<()>,
    slot: Option<Slot>,
}

/// A field's type as a column: how it is written, and read back from what D1 returns.
trait Stored: Sized {
    fn cell(&self) -> Cell<'_>;
    fn read(value: &Value) -> Option<Self>;
}

impl Stored for String {
    fn cell(&self) -> Cell<'_> {
        Cell::Text(Some(self))
    }
    fn read(value: &Value) -> Option<Self> {
        value.as_str().map(str::to_string)
    }
}

impl Stored for Option<String> {
    fn cell(&self) -> Cell<'_> {
        Cell::Text(self.as_deref())
    }
    fn read(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => v.as_str().map(|s| Some(s.to_string())),
        }
    }
}

impl Stored for i64 {
    fn cell(&self) -> Cell<'_> {
        Cell::Int(Some(*self))
    }
    fn read(value: &Value) -> Option<Self> {
        value.as_i64()
    }
}

impl Stored for Option<i64> {
    fn cell(&self) -> Cell<'_> {
        Cell::Int(*self)
    }
    fn read(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => v.as_i64().map(Some),
        }
    }
}

// Numbers that cannot be negative read a stored negative (or oversized) value as 0, so that one
// odd row cannot fail a whole listing.

impl Stored for u64 {
    fn cell(&self) -> Cell<'_> {
        Cell::Count(*self)
    }
    fn read(value: &Value) -> Option<Self> {
        value.as_i64().map(|n| u64::try_from(n).unwrap_or(0))
    }
}

impl Stored for u32 {
    fn cell(&self) -> Cell<'_> {
        Cell::Int(Some(i64::from(*self)))
    }
    fn read(value: &Value) -> Option<Self> {
        value.as_i64().map(|n| u32::try_from(n).unwrap_or(0))
    }
}

impl Stored for u16 {
    fn cell(&self) -> Cell<'_> {
        Cell::Int(Some(i64::from(*self)))
    }
    fn read(value: &Value) -> Option<Self> {
        value.as_i64().map(|n| u16::try_from(n).unwrap_or(0))
    }
}

impl Stored for bool {
    fn cell(&self) -> Cell<'_> {
        Cell::Bool(*self)
    }
    fn read(value: &Value) -> Option<Self> {
        value.as_bool().or_else(|| value.as_i64().map(|n| n != 0))
    }
}

/// A column named after its `UsageRow` field, so that the name cannot drift from the field.
macro_rules! column {
    ($field:ident $(, $slot:ident($n:literal))?) => {
        Column {
            name: stringify!($field),
            get: |r| Stored::cell(&r.$field),
            put: |r, v| {
                r.$field = Stored::read(v)?;
                Some(())
            },
            slot: column!(@slot $($slot($n))?),
        }
    };
    (@slot) => { None };
    (@slot $slot:ident($n:literal)) => { Some(Slot::$slot($n)) };
}

/// Every column of `usage`, in the CSV export's order: spreadsheets and scripts built on an
/// export read columns by position, so a new column goes at the end.
pub const COLUMNS: &[Column] = &[
    column!(request_id),
    column!(created_at),
    column!(tenant_id, Blob(1)),
    column!(key_id, Blob(2)),
    column!(endpoint, Blob(7)),
    column!(model, Blob(3)),
    column!(upstream_model, Blob(4)),
    column!(channel_id, Blob(5)),
    column!(stream),
    column!(status, Double(1)),
    column!(error_code, Blob(8)),
    column!(prompt_tokens, Double(2)),
    column!(completion_tokens, Double(3)),
    column!(total_tokens),
    column!(cost_micros, Double(7)),
    column!(attempts, Double(10)),
    column!(hedged),
    column!(usage_source),
    column!(latency_ms, Double(8)),
    column!(ttfb_ms, Double(9)),
    column!(provenance, Blob(6)),
    column!(cache_read_tokens, Double(4)),
    column!(cache_write_tokens, Double(5)),
    column!(reasoning_tokens, Double(6)),
    column!(inbound, Blob(10)),
    column!(colo, Blob(9)),
    column!(upstream_key),
    column!(tags, Blob(11)),
];

const fn names_len() -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < COLUMNS.len() {
        len += COLUMNS[i].name.len() + if i > 0 { 1 } else { 0 };
        i += 1;
    }
    len
}

const fn names_joined<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut i = 0;
    while i < COLUMNS.len() {
        if i > 0 {
            out[at] = b',';
            at += 1;
        }
        let name = COLUMNS[i].name.as_bytes();
        let mut j = 0;
        while j < name.len() {
            out[at] = name[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    out
}

const NAMES: [u8; names_len()] = names_joined();

/// The column names, comma-separated: the SELECT list of every query reading rows, and the CSV
/// header. A constant, so that queries are formatted like the store's other column lists.
pub const COLUMN_NAMES: &str = match std::str::from_utf8(&NAMES) {
    Ok(names) => names,
    Err(_) => panic!("column names are ASCII"),
};

/// The statement writing one row, bound with `UsageRow::cells`. `OR IGNORE`: a batch written
/// again after a cancelled writer repeats rows that are already there.
pub fn insert_sql() -> String {
    let placeholders: Vec<String> = (1..=COLUMNS.len()).map(|n| format!("?{n}")).collect();
    format!(
        "INSERT OR IGNORE INTO usage ({COLUMN_NAMES}) VALUES ({})",
        placeholders.join(", ")
    )
}

/// A request's Analytics Engine data point, in the README's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint<'a> {
    pub index: &'a str,
    pub blobs: Vec<Cow<'a, str>>,
    /// A number the row does not have (`ttfb_ms` of a request that never got a byte) is −1.
    pub doubles: Vec<f64>,
}

impl UsageRow {
    /// The row's values in `COLUMNS` order: the parameters of `insert_sql`, and a CSV record.
    pub fn cells(&self) -> impl Iterator<Item = Cell<'_>> {
        COLUMNS.iter().map(move |c| (c.get)(self))
    }

    /// A row as a query selecting `COLUMN_NAMES` returned it, by column name (an absent column
    /// reads as NULL). The attempts and bodies live in other tables and are left empty. `Err`
    /// names the first column whose value does not fit its field.
    pub fn from_columns(values: &Map<String, Value>) -> Result<UsageRow, &'static str> {
        let mut row = UsageRow::default();
        for c in COLUMNS {
            (c.put)(&mut row, values.get(c.name).unwrap_or(&Value::Null)).ok_or(c.name)?;
        }
        Ok(row)
    }

    pub fn data_point(&self) -> DataPoint<'_> {
        let mut blobs = Vec::new();
        let mut doubles = Vec::new();
        for c in COLUMNS {
            match c.slot {
                Some(Slot::Blob(n)) => blobs.push((n, (c.get)(self).text())),
                Some(Slot::Double(n)) => doubles.push((n, (c.get)(self).number().unwrap_or(-1.0))),
                None => {}
            }
        }
        blobs.sort_by_key(|(n, _)| *n);
        doubles.sort_by_key(|(n, _)| *n);
        DataPoint {
            index: &self.tenant_id,
            blobs: blobs.into_iter().map(|(_, b)| b).collect(),
            doubles: doubles.into_iter().map(|(_, d)| d).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every migration, in order. `migrations_are_all_read` keeps the list complete.
    const MIGRATIONS: &[(&str, &str)] = &[
        (
            "0001_core.sql",
            include_str!("../../migrations/0001_core.sql"),
        ),
        (
            "0002_channel_options.sql",
            include_str!("../../migrations/0002_channel_options.sql"),
        ),
        (
            "0003_limits.sql",
            include_str!("../../migrations/0003_limits.sql"),
        ),
        (
            "0004_access_rules.sql",
            include_str!("../../migrations/0004_access_rules.sql"),
        ),
        (
            "0005_audit_log.sql",
            include_str!("../../migrations/0005_audit_log.sql"),
        ),
        (
            "0006_tenant_tokens.sql",
            include_str!("../../migrations/0006_tenant_tokens.sql"),
        ),
        (
            "0007_tenant_settings.sql",
            include_str!("../../migrations/0007_tenant_settings.sql"),
        ),
        (
            "0008_channel_breaker.sql",
            include_str!("../../migrations/0008_channel_breaker.sql"),
        ),
        (
            "0009_key_cache.sql",
            include_str!("../../migrations/0009_key_cache.sql"),
        ),
        (
            "0010_channel_total_timeout.sql",
            include_str!("../../migrations/0010_channel_total_timeout.sql"),
        ),
        (
            "0011_usage_attempts.sql",
            include_str!("../../migrations/0011_usage_attempts.sql"),
        ),
        (
            "0012_ledger.sql",
            include_str!("../../migrations/0012_ledger.sql"),
        ),
        (
            "0013_usage_attempts.sql",
            include_str!("../../migrations/0013_usage_attempts.sql"),
        ),
        (
            "0014_request_bodies.sql",
            include_str!("../../migrations/0014_request_bodies.sql"),
        ),
        (
            "0015_tags.sql",
            include_str!("../../migrations/0015_tags.sql"),
        ),
    ];

    /// The `usage` table's columns and their declared types after every migration, in the order
    /// they were created.
    fn migrated_usage_columns() -> Vec<(String, String)> {
        let mut columns: Vec<(String, String)> = Vec::new();
        for (file, sql) in MIGRATIONS {
            let sql: String = sql
                .lines()
                .map(|l| l.split("--").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for statement in sql.split(';') {
                let words: Vec<String> = statement
                    .split_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect();
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                match words.as_slice() {
                    ["create", "table", rest @ ..] => {
                        let rest = match rest {
                            ["if", "not", "exists", rest @ ..] => rest,
                            rest => rest,
                        };
                        if rest.first().map(|t| t.trim_end_matches('(')) != Some("usage") {
                            continue;
                        }
                        let open = statement.find('(').expect("CREATE TABLE usage (");
                        let close = statement.rfind(')').expect("CREATE TABLE usage (…)");
                        let mut depth = 0;
                        let mut item = String::new();
                        let mut items = Vec::new();
                        for ch in statement[open + 1..close].chars() {
                            match ch {
                                '(' => depth += 1,
                                ')' => depth -= 1,
                                ',' if depth == 0 => {
                                    items.push(std::mem::take(&mut item));
                                    continue;
                                }
                                _ => {}
                            }
                            item.push(ch);
                        }
                        items.push(item);
                        for item in items {
                            let mut words = item.split_whitespace();
                            let name = words.next().expect("a column or constraint");
                            let constraint =
                                ["primary", "unique", "check", "foreign", "constraint"];
                            if constraint.contains(&name.to_ascii_lowercase().as_str()) {
                                continue;
                            }
                            let ty = words.next().unwrap_or("").to_ascii_uppercase();
                            columns.push((name.to_string(), ty));
                        }
                    }
                    ["alter", "table", "usage", "add", "column", name, ty, ..]
                    | ["alter", "table", "usage", "add", name, ty, ..] => {
                        columns.push((name.to_string(), ty.to_ascii_uppercase()));
                    }
                    ["alter", "table", "usage", "drop", "column", name, ..] => {
                        columns.retain(|(c, _)| c != name);
                    }
                    ["alter", "table", "usage", ..] => {
                        panic!(
                            "{file}: an ALTER TABLE usage this test cannot read yet: {statement}"
                        )
                    }
                    _ => {}
                }
            }
        }
        columns
    }

    /// A row with every field set to something other than its default and unlike any other.
    fn full_row() -> UsageRow {
        UsageRow {
            request_id: "req_1".into(),
            created_at: 1_793_491_200_000,
            tenant_id: "t1".into(),
            key_id: "k1".into(),
            endpoint: "chat/completions".into(),
            model: Some("gpt-4o".into()),
            upstream_model: Some("gpt-4o-2024-08-06".into()),
            channel_id: Some("c1".into()),
            stream: true,
            status: 502,
            error_code: Some("upstream_stream_broken".into()),
            prompt_tokens: 11,
            completion_tokens: 12,
            total_tokens: 23,
            cost_micros: 4567,
            attempts: 2,
            hedged: true,
            provenance: "partial".into(),
            cache_read_tokens: 3,
            cache_write_tokens: 4,
            reasoning_tokens: 5,
            inbound: Some("anthropic".into()),
            colo: Some("FRA".into()),
            upstream_key: Some("fp_abcd".into()),
            tags: "app:web,team:search".into(),
            attempt_log: Vec::new(),
            bodies: None,
            usage_source: "reported".into(),
            latency_ms: 1500,
            ttfb_ms: Some(250),
        }
    }

    /// The row's columns as D1 returns them: integers for booleans, NULL for `None`.
    fn as_stored(row: &UsageRow) -> Map<String, Value> {
        COLUMNS
            .iter()
            .zip(row.cells())
            .map(|(c, cell)| {
                let value = match cell {
                    Cell::Text(s) => s.map_or(Value::Null, Value::from),
                    Cell::Int(n) => n.map_or(Value::Null, Value::from),
                    Cell::Count(n) => Value::from(n),
                    Cell::Bool(b) => Value::from(i64::from(b)),
                };
                (c.name.to_string(), value)
            })
            .collect()
    }

    #[test]
    fn column_names_are_unique() {
        let names: BTreeSet<&str> = COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), COLUMNS.len());
        assert_eq!(
            COLUMN_NAMES.split(',').collect::<Vec<_>>(),
            COLUMNS.iter().map(|c| c.name).collect::<Vec<_>>()
        );
    }

    #[test]
    fn columns_are_what_the_migrations_create() {
        let migrated = migrated_usage_columns();
        let created: BTreeSet<&str> = migrated.iter().map(|(n, _)| n.as_str()).collect();
        let listed: BTreeSet<&str> = COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(created.len(), migrated.len(), "a column created twice");
        assert_eq!(
            listed.difference(&created).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "in COLUMNS but created by no migration"
        );
        assert_eq!(
            created.difference(&listed).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "created by a migration but missing from COLUMNS"
        );
        // And each is declared with the type its values are written as.
        let row = full_row();
        for (name, ty) in &migrated {
            let column = COLUMNS.iter().find(|c| c.name == name).expect("listed");
            let expected = match (column.get)(&row) {
                Cell::Text(_) => "TEXT",
                Cell::Int(_) | Cell::Count(_) | Cell::Bool(_) => "INTEGER",
            };
            assert_eq!(ty, expected, "{name}");
        }
    }

    #[test]
    fn migrations_are_all_read() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let read: Vec<&str> = MIGRATIONS.iter().map(|(f, _)| *f).collect();
        assert_eq!(on_disk, read, "add the new migration to MIGRATIONS");
    }

    #[test]
    fn insert_binds_one_value_per_column() {
        let sql = insert_sql();
        let placeholders = sql.matches('?').count();
        assert_eq!(placeholders, COLUMNS.len());
        let (Some(open), Some(values)) = (sql.find('('), sql.find(") VALUES (")) else {
            panic!("{sql}");
        };
        let named: Vec<&str> = sql[open + 1..values].split(',').map(str::trim).collect();
        assert_eq!(named, COLUMN_NAMES.split(',').collect::<Vec<_>>());
        let numbered: Vec<String> = sql[values + 10..sql.len() - 1]
            .split(", ")
            .map(str::to_string)
            .collect();
        let expected: Vec<String> = (1..=COLUMNS.len()).map(|n| format!("?{n}")).collect();
        assert_eq!(numbered, expected);
        assert!(sql.starts_with("INSERT OR IGNORE INTO usage ("));
        assert_eq!(full_row().cells().count(), COLUMNS.len());
    }

    #[test]
    fn the_export_keeps_its_column_order() {
        // The 27 columns the export has always had, in its order; new ones may only follow.
        const EXPORTED: &str = "request_id,created_at,tenant_id,key_id,endpoint,model,\
            upstream_model,channel_id,stream,status,error_code,prompt_tokens,completion_tokens,\
            total_tokens,cost_micros,attempts,hedged,usage_source,latency_ms,ttfb_ms,provenance,\
            cache_read_tokens,cache_write_tokens,reasoning_tokens,inbound,colo,upstream_key";
        let exported: Vec<&str> = EXPORTED.split(',').collect();
        let names: Vec<&str> = COLUMN_NAMES.split(',').collect();
        assert_eq!(names.get(..exported.len()), Some(&exported[..]));
    }

    #[test]
    fn stored_rows_read_back_whole() {
        let row = full_row();
        assert_eq!(UsageRow::from_columns(&as_stored(&row)), Ok(row.clone()));
        let mut sparse = UsageRow {
            model: None,
            upstream_model: None,
            channel_id: None,
            error_code: None,
            inbound: None,
            colo: None,
            upstream_key: None,
            ttfb_ms: None,
            ..row
        };
        sparse.stream = false;
        assert_eq!(
            UsageRow::from_columns(&as_stored(&sparse)),
            Ok(sparse.clone())
        );

        // Odd stored numbers read as 0 rather than failing; a value of the wrong kind fails and
        // names its column, and so does a required column that is missing.
        let mut odd = as_stored(&sparse);
        odd.insert("prompt_tokens".into(), Value::from(-5));
        odd.insert("status".into(), Value::from(70_000));
        let read = UsageRow::from_columns(&odd).expect("readable");
        assert_eq!((read.prompt_tokens, read.status), (0, 0));
        odd.insert("latency_ms".into(), Value::from("slow"));
        assert_eq!(UsageRow::from_columns(&odd), Err("latency_ms"));
        let mut missing = as_stored(&sparse);
        missing.remove("tenant_id");
        assert_eq!(UsageRow::from_columns(&missing), Err("tenant_id"));
        missing = as_stored(&sparse);
        missing.remove("colo");
        assert!(UsageRow::from_columns(&missing).is_ok());
    }

    #[test]
    fn the_data_point_keeps_the_readme_layout() {
        // README "Workers Analytics Engine": blob1..11 and double1..10, which queries name.
        const BLOBS: [&str; 11] = [
            "tenant_id",
            "key_id",
            "model",
            "upstream_model",
            "channel_id",
            "provenance",
            "endpoint",
            "error_code",
            "colo",
            "inbound",
            "tags",
        ];
        const DOUBLES: [&str; 10] = [
            "status",
            "prompt_tokens",
            "completion_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cost_micros",
            "latency_ms",
            "ttfb_ms",
            "attempts",
        ];
        let in_slot = |slot: Slot| {
            let found: Vec<&str> = COLUMNS
                .iter()
                .filter(|c| c.slot == Some(slot))
                .map(|c| c.name)
                .collect();
            found
        };
        for (i, name) in BLOBS.iter().enumerate() {
            let n = u8::try_from(i + 1).unwrap();
            assert_eq!(in_slot(Slot::Blob(n)), [*name], "blob{n}");
        }
        for (i, name) in DOUBLES.iter().enumerate() {
            let n = u8::try_from(i + 1).unwrap();
            assert_eq!(in_slot(Slot::Double(n)), [*name], "double{n}");
        }
        // No gaps, nothing beyond Analytics Engine's 20 blobs and 20 doubles, and each column
        // in a slot of its kind.
        let row = full_row();
        let (mut blobs, mut doubles) = (0, 0);
        for c in COLUMNS {
            match c.slot {
                Some(Slot::Blob(n)) => {
                    blobs += 1;
                    assert!((1..=20).contains(&n), "{}", c.name);
                    assert!(matches!((c.get)(&row), Cell::Text(_)), "{}", c.name);
                }
                Some(Slot::Double(n)) => {
                    doubles += 1;
                    assert!((1..=20).contains(&n), "{}", c.name);
                    assert!((c.get)(&row).number().is_some(), "{}", c.name);
                }
                None => {}
            }
        }
        assert_eq!((blobs, doubles), (BLOBS.len(), DOUBLES.len()));

        let point = row.data_point();
        assert_eq!(point.index, "t1");
        assert_eq!(
            point.blobs,
            [
                "t1",
                "k1",
                "gpt-4o",
                "gpt-4o-2024-08-06",
                "c1",
                "partial",
                "chat/completions",
                "upstream_stream_broken",
                "FRA",
                "anthropic",
                "app:web,team:search"
            ]
        );
        assert_eq!(
            point.doubles,
            [502.0, 11.0, 12.0, 3.0, 4.0, 5.0, 4567.0, 1500.0, 250.0, 2.0]
        );
        let bare = UsageRow {
            model: None,
            ttfb_ms: None,
            ..row
        };
        let point = bare.data_point();
        assert_eq!((point.blobs[2].as_ref(), point.doubles[8]), ("", -1.0));
    }

    #[test]
    fn logged_bodies_are_cut_then_redacted() {
        let body = br#"{"messages":[{"content":"mail bob@example.com, key sk-abcdefghijklmnopqrstuvwxyz"}]}"#;
        let logged = loggable(body);
        assert!(!logged.contains("bob@example.com"));
        assert!(!logged.contains("sk-abcdefghijklmnopqrstuvwxyz"));
        let long = "é".repeat(BODY_LOG_BYTES);
        let cut = loggable(long.as_bytes());
        assert!(cut.ends_with(" [TRUNCATED]"));
        assert!(cut.len() <= BODY_LOG_BYTES + 12);
    }
}
