//! Usage analytics over ledger rows: the query an analytics request carries, the aggregate
//! `Stats` (counts, token and cost sums, latency percentiles), breakdowns by one dimension (a
//! column, or one tag's value: `by=tag:team`), zero-filled time series on UTC hour/day
//! buckets, and CSV export.
//!
//! Pure: rows come in as `&[UsageRow]` (the store fetches them), the current time as `now_ms`.
//! Money stays in integer micro-units; the only float is `error_rate`, a display convenience
//! beside the exact `error_rate_bps`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::RelayError;
use crate::ledger::row::{Cell, UsageRow, COLUMN_NAMES};
use crate::ledger::tags::{self, Tag, TagSet};
use crate::support::url::query_pairs;

use crate::support::calendar::{parse_rfc3339, DAY_MS, HOUR_MS};
/// The default window when a query names neither end.
const DEFAULT_SPAN_MS: i64 = DAY_MS;
/// A quarter and a bit: enough for "last 3 months" while keeping one query's scan, and an
/// hourly series (2,232 buckets), bounded.
pub const MAX_SPAN_MS: i64 = 93 * DAY_MS;
/// `timeseries` never builds more buckets than this, whatever range it is handed; the span cap
/// of `parse_query` keeps real queries far below it.
pub const MAX_BUCKETS: usize = 10_000;
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// The breakdown label of rows that have no value for the dimension (a request refused before a
/// model or channel was chosen).
pub const NO_VALUE: &str = "(none)";
/// Unix milliseconds below this (March 1973) are refused: the relay holds nothing that old, and
/// such a value is almost always Unix *seconds* sent by mistake, which would silently select an
/// empty range.
const MIN_PLAUSIBLE_MS: i64 = 100_000_000_000;
/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
const MAX_MS: i64 = 253_402_300_799_999;

/// What a breakdown groups by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Tenant,
    Key,
    Model,
    Channel,
    UpstreamModel,
    Status,
    /// `tag:<name>`: rows by their value of that tag; rows without it under `NO_VALUE`. A row
    /// has at most one value per tag name, so the groups still add up to the total.
    Tag(ByTag),
}

/// The tag a breakdown groups by, kept as it is written (`tag:team`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByTag {
    spec: String,
}

impl ByTag {
    const PREFIX: &'static str = "tag:";

    pub fn new(name: &str) -> Result<ByTag, &'static str> {
        tags::check_name(name)?;
        Ok(ByTag {
            spec: format!("{}{name}", ByTag::PREFIX),
        })
    }

    pub fn name(&self) -> &str {
        self.spec.get(ByTag::PREFIX.len()..).unwrap_or("")
    }
}

impl Dimension {
    /// The column dimensions (a tag dimension names its tag).
    pub const ALL: [Dimension; 6] = [
        Dimension::Tenant,
        Dimension::Key,
        Dimension::Model,
        Dimension::Channel,
        Dimension::UpstreamModel,
        Dimension::Status,
    ];

    pub fn parse(s: &str) -> Option<Dimension> {
        if let Some(name) = s.strip_prefix(ByTag::PREFIX) {
            return ByTag::new(name).ok().map(Dimension::Tag);
        }
        Dimension::ALL.into_iter().find(|d| d.as_str() == s)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Dimension::Tenant => "tenant",
            Dimension::Key => "key",
            Dimension::Model => "model",
            Dimension::Channel => "channel",
            Dimension::UpstreamModel => "upstream_model",
            Dimension::Status => "status",
            Dimension::Tag(t) => &t.spec,
        }
    }

    /// The group a row falls in.
    pub fn label(&self, row: &UsageRow) -> String {
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| NO_VALUE.to_string());
        match self {
            Dimension::Tenant => row.tenant_id.clone(),
            Dimension::Key => row.key_id.clone(),
            Dimension::Model => or_none(&row.model),
            Dimension::Channel => or_none(&row.channel_id),
            Dimension::UpstreamModel => or_none(&row.upstream_model),
            Dimension::Status => row.status.to_string(),
            Dimension::Tag(t) => TagSet::from_canonical(&row.tags)
                .value_of(t.name())
                .unwrap_or(NO_VALUE)
                .to_string(),
        }
    }
}

/// The width of a time-series bucket. Both divide a day evenly and Unix time has no leap
/// seconds, so buckets aligned on multiples of the width since the epoch start exactly on UTC
/// hours and UTC midnights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Bucket> {
        match s {
            "hour" => Some(Bucket::Hour),
            "day" => Some(Bucket::Day),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }

    pub fn width_ms(&self) -> i64 {
        match self {
            Bucket::Hour => HOUR_MS,
            Bucket::Day => DAY_MS,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Json,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }
}

/// An analytics request's query string, validated. The range is half-open: `from_ms <= t <
/// to_ms`, so consecutive ranges never count a row twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from_ms: i64,
    pub to_ms: i64,
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub model: Option<String>,
    pub channel_id: Option<String>,
    pub status: Option<u16>,
    /// Only rows carrying this tag (`tag=team:search`).
    pub tag: Option<Tag>,
    pub by: Option<Dimension>,
    pub bucket: Option<Bucket>,
    pub limit: u32,
    /// Paging cursor of the raw request log: only rows created strictly before it.
    pub before_ms: Option<i64>,
    pub format: Format,
}

impl Query {
    /// Whether a row is selected by the range and every filter (for rows the store did not
    /// already filter, and to check that it did).
    pub fn matches(&self, row: &UsageRow) -> bool {
        let eq =
            |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
        let eq_opt = |filter: &Option<String>, value: &Option<String>| {
            filter
                .as_deref()
                .is_none_or(|f| value.as_deref() == Some(f))
        };
        row.created_at >= self.from_ms
            && row.created_at < self.to_ms
            && self.before_ms.is_none_or(|b| row.created_at < b)
            && eq(&self.tenant_id, &row.tenant_id)
            && eq(&self.key_id, &row.key_id)
            && eq_opt(&self.model, &row.model)
            && eq_opt(&self.channel_id, &row.channel_id)
            && self.status.is_none_or(|s| s == row.status)
            && self
                .tag
                .as_ref()
                .is_none_or(|t| TagSet::from_canonical(&row.tags).contains(t))
    }
}

const QUERY_PARAMS: [&str; 13] = [
    "from",
    "to",
    "tenant_id",
    "key_id",
    "model",
    "channel_id",
    "status",
    "tag",
    "by",
    "bucket",
    "limit",
    "before",
    "format",
];

/// Parse an analytics query string (without the `?`). Times are Unix milliseconds or RFC 3339
/// (`2026-11-01`, `2026-11-01T10:00:00Z`, `…T10:00:00.5+02:00`); without either end the window
/// is the 24 hours before `now_ms`, and a lone end takes the other 24 hours away (a lone `from`
/// runs to now). A parameter given with an empty value counts as not given, because HTML forms
/// submit their blank fields; a parameter given twice is refused rather than guessed at.
pub fn parse_query(query_string: &str, now_ms: i64) -> Result<Query, RelayError> {
    let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
    for (name, value) in query_pairs(query_string) {
        let Some(known) = QUERY_PARAMS.iter().find(|p| **p == name) else {
            return Err(RelayError::invalid_value(
                &name,
                format!(
                    "unknown parameter; expected one of {}",
                    QUERY_PARAMS.join(", ")
                ),
            ));
        };
        if values.insert(known, value).is_some() {
            return Err(RelayError::invalid_value(known, "given more than once"));
        }
    }
    let get = |name: &str| {
        values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let text = |name: &str| get(name).map(str::to_string);
    let time = |name: &str| {
        get(name).map(|v| parse_instant(v).map_err(|m| RelayError::invalid_value(name, m)))
    };

    let from = time("from").transpose()?;
    let to = time("to").transpose()?;
    let (from_ms, to_ms) = match (from, to) {
        (Some(f), Some(t)) => (f, t),
        (Some(f), None) => (f, now_ms),
        (None, Some(t)) => (t.saturating_sub(DEFAULT_SPAN_MS), t),
        (None, None) => (now_ms.saturating_sub(DEFAULT_SPAN_MS), now_ms),
    };
    if to_ms <= from_ms {
        // Blame the end the caller wrote; a lone `from` is compared with "now".
        return Err(if to.is_some() {
            RelayError::invalid_value("to", "must be after 'from'")
        } else {
            RelayError::invalid_value("from", "must be before 'to' (default: now)")
        });
    }
    if to_ms.saturating_sub(from_ms) > MAX_SPAN_MS {
        let param = if from.is_some() { "from" } else { "to" };
        return Err(RelayError::invalid_value(
            param,
            "the range from 'from' to 'to' may span at most 93 days",
        ));
    }

    let status = get("status")
        .map(|v| {
            v.parse::<u16>()
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| {
                    RelayError::invalid_value(
                        "status",
                        "must be an HTTP status between 100 and 599",
                    )
                })
        })
        .transpose()?;
    let tag = get("tag")
        .map(|v| Tag::parse(v).map_err(|m| RelayError::invalid_value("tag", m)))
        .transpose()?;
    let by = get("by")
        .map(|v| {
            Dimension::parse(v).ok_or_else(|| {
                RelayError::invalid_value(
                    "by",
                    "must be one of tenant, key, model, channel, upstream_model, status, or tag:<name> (a tag name is 1 to 32 of a-z, 0-9, _ and -)",
                )
            })
        })
        .transpose()?;
    let bucket = get("bucket")
        .map(|v| {
            Bucket::parse(v)
                .ok_or_else(|| RelayError::invalid_value("bucket", "must be hour or day"))
        })
        .transpose()?;
    let limit = get("limit")
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| RelayError::invalid_value("limit", "must be between 1 and 1000"))
        })
        .transpose()?
        .unwrap_or(DEFAULT_LIMIT);
    let before_ms = time("before").transpose()?;
    let format = get("format")
        .map(|v| {
            Format::parse(v)
                .ok_or_else(|| RelayError::invalid_value("format", "must be json or csv"))
        })
        .transpose()?
        .unwrap_or_default();

    Ok(Query {
        from_ms,
        to_ms,
        tenant_id: text("tenant_id"),
        key_id: text("key_id"),
        model: text("model"),
        channel_id: text("channel_id"),
        status,
        tag,
        by,
        bucket,
        limit,
        before_ms,
        format,
    })
}

/// Unix milliseconds, or an RFC 3339 date or date-time, as Unix milliseconds.
fn parse_instant(s: &str) -> Result<i64, &'static str> {
    const EXPECTED: &str =
        "must be Unix milliseconds or an RFC 3339 date (2026-11-01 or 2026-11-01T10:00:00Z)";
    let ms = if s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = s.parse().map_err(|_| EXPECTED)?;
        if ms < MIN_PLAUSIBLE_MS {
            return Err("must be Unix milliseconds; a value this small looks like seconds");
        }
        ms
    } else {
        parse_rfc3339(s.as_bytes()).ok_or(EXPECTED)?
    };
    if !(0..=MAX_MS).contains(&ms) {
        return Err(EXPECTED);
    }
    Ok(ms)
}

/// p50/p95/p99 in milliseconds; `None` when no row had a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
    pub p99: Option<i64>,
}

impl Percentiles {
    fn of_sorted(sorted: &[i64]) -> Percentiles {
        Percentiles {
            p50: percentile(sorted, 50),
            p95: percentile(sorted, 95),
            p99: percentile(sorted, 99),
        }
    }
}

/// Aggregates of a set of ledger rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub requests: u64,
    /// Rows with status >= 400, whether the relay or the upstream refused.
    pub errors: u64,
    /// `errors / requests` (0 when there were none), for display.
    pub error_rate: f64,
    /// The same rate in basis points, rounded half up: exact, for comparisons and alerts.
    pub error_rate_bps: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost_micros: u64,
    /// Whole-request latency of every row, errors included: a slow timeout is part of what
    /// clients waited for.
    pub latency_ms: Percentiles,
    /// Time to first byte of successful requests (status < 400) that recorded one, streamed or
    /// not. Refusals are left out: they answer instantly and would flatter the upstreams.
    pub ttft_ms: Percentiles,
}

/// Running sums of one group; `finish` sorts the latencies once.
#[derive(Default)]
struct Acc {
    requests: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    cost_micros: u64,
    latencies: Vec<i64>,
    ttfts: Vec<i64>,
}

impl Acc {
    fn push(&mut self, row: &UsageRow) {
        self.requests = self.requests.saturating_add(1);
        let failed = row.status >= 400;
        if failed {
            self.errors = self.errors.saturating_add(1);
        }
        // The ledger's own total is summed, never prompt + completion on top of it: the row
        // already holds its tokens once.
        self.prompt_tokens = self.prompt_tokens.saturating_add(row.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(row.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(row.total_tokens);
        self.cost_micros = self.cost_micros.saturating_add(row.cost_micros);
        self.latencies.push(row.latency_ms);
        if let (false, Some(ttfb)) = (failed, row.ttfb_ms) {
            self.ttfts.push(ttfb);
        }
    }

    fn finish(mut self) -> Stats {
        self.latencies.sort_unstable();
        self.ttfts.sort_unstable();
        let (error_rate, error_rate_bps) = if self.requests == 0 {
            (0.0, 0)
        } else {
            let bps = (u128::from(self.errors) * 10_000 + u128::from(self.requests) / 2)
                / u128::from(self.requests);
            (
                self.errors as f64 / self.requests as f64,
                u32::try_from(bps).unwrap_or(10_000),
            )
        };
        Stats {
            requests: self.requests,
            errors: self.errors,
            error_rate,
            error_rate_bps,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            cost_micros: self.cost_micros,
            latency_ms: Percentiles::of_sorted(&self.latencies),
            ttft_ms: Percentiles::of_sorted(&self.ttfts),
        }
    }
}

/// Nearest-rank percentile of ascending data: the smallest value with at least `p`% of the
/// data at or below it, so it is always an observed value. `p` above 100 is read as 100.
pub fn percentile(sorted: &[i64], p: u32) -> Option<i64> {
    let n = u64::try_from(sorted.len()).ok()?;
    let rank = (u64::from(p.min(100)) * n).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank - 1).ok()?).copied()
}

pub fn summarize(rows: &[UsageRow]) -> Stats {
    let mut acc = Acc::default();
    rows.iter().for_each(|r| acc.push(r));
    acc.finish()
}

/// Stats per value of `by`, the costliest first, then the busiest; ties by label so the order
/// is stable between calls.
pub fn breakdown(rows: &[UsageRow], by: Dimension) -> Vec<(String, Stats)> {
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    for row in rows {
        groups.entry(by.label(row)).or_default().push(row);
    }
    let mut out: Vec<(String, Stats)> = groups
        .into_iter()
        .map(|(label, acc)| (label, acc.finish()))
        .collect();
    out.sort_by(|(la, a), (lb, b)| {
        b.cost_micros
            .cmp(&a.cost_micros)
            .then(b.requests.cmp(&a.requests))
            .then(la.cmp(lb))
    });
    out
}

/// Stats per UTC hour or day: one entry for every bucket overlapping `[from_ms, to_ms)`, empty
/// buckets included with zeros, so a chart's x axis needs no gap handling. Rows outside the
/// range are ignored. At most `MAX_BUCKETS` buckets (the earliest) are returned.
pub fn timeseries(
    rows: &[UsageRow],
    bucket: Bucket,
    from_ms: i64,
    to_ms: i64,
) -> Vec<(i64, Stats)> {
    let width = bucket.width_ms();
    if to_ms <= from_ms {
        return Vec::new();
    }
    let Some(first) = from_ms.div_euclid(width).checked_mul(width) else {
        return Vec::new();
    };
    // i128: the distance between two arbitrary i64 instants does not fit an i64.
    let span = i128::from(to_ms) - 1 - i128::from(first);
    let count = usize::try_from(span / i128::from(width) + 1)
        .unwrap_or(MAX_BUCKETS)
        .min(MAX_BUCKETS);
    let mut accs: Vec<Acc> = (0..count).map(|_| Acc::default()).collect();
    for row in rows {
        if row.created_at < from_ms || row.created_at >= to_ms {
            continue;
        }
        let index = (i128::from(row.created_at) - i128::from(first)) / i128::from(width);
        if let Some(acc) = usize::try_from(index).ok().and_then(|i| accs.get_mut(i)) {
            acc.push(row);
        }
    }
    accs.into_iter()
        .zip(0i64..)
        .map(|(acc, i)| (first.saturating_add(i.saturating_mul(width)), acc.finish()))
        .collect()
}

/// The header is the column names in `ledger::row::COLUMNS` order, which is the export's.
const CSV_HEADER: &str = COLUMN_NAMES;

/// The rows as RFC 4180 CSV: a header, then one CRLF-terminated record per row. The columns
/// are the ledger's columns in `ledger::row::COLUMNS` order, which keeps the export's first
/// columns where spreadsheets and scripts built on it expect them; columns added later go at the
/// end. An absent value is an empty field.
pub fn to_csv(rows: &[UsageRow]) -> String {
    let mut out = String::with_capacity(CSV_HEADER.len() + 2 + rows.len() * 160);
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for r in rows {
        for (i, cell) in r.cells().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Text columns may hold what a client sent (the model name above all), so they are
            // guarded against spreadsheet formulas; numbers are written as they are.
            match cell {
                Cell::Text(_) => push_csv_field(&mut out, &text_field(&cell.text())),
                _ => push_csv_field(&mut out, &cell.text()),
            }
        }
        out.push_str("\r\n");
    }
    out
}

/// A spreadsheet opening the export would run a cell starting with `=`, `+`, `-` or `@` as a
/// formula (CSV injection); a leading apostrophe makes it text, as OWASP advises.
fn text_field(s: &str) -> String {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

/// RFC 4180: a field holding a comma, quote or line break is quoted, its quotes doubled.
fn push_csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

    /// Built through serde so the helper keeps compiling as `UsageRow` grows fields (all new
    /// ones default).
    fn row(id: &str, created_at: i64) -> UsageRow {
        serde_json::from_value(serde_json::json!({
            "request_id": id,
            "created_at": created_at,
            "tenant_id": "t1",
            "key_id": "k1",
            "endpoint": "chat/completions",
            "model": "gpt-4o",
            "upstream_model": "gpt-4o-2024-08-06",
            "channel_id": "c1",
            "stream": false,
            "status": 200,
            "error_code": null,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "cost_micros": 100,
            "attempts": 1,
            "hedged": false,
            "usage_source": "reported",
            "latency_ms": 500,
            "ttfb_ms": 100,
        }))
        .unwrap()
    }

    fn param_of(q: &str) -> Option<String> {
        parse_query(q, T0)
            .err()
            .and_then(|e| e.param().map(str::to_string))
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let data: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&data, 50), Some(50));
        assert_eq!(percentile(&data, 95), Some(95));
        assert_eq!(percentile(&data, 99), Some(99));
        assert_eq!(percentile(&data, 100), Some(100));
        assert_eq!(percentile(&data, 0), Some(1));
        assert_eq!(percentile(&data, 500), Some(100));
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
        // Ten values: p95 is the 10th (ceil 9.5), p50 the 5th.
        let ten: Vec<i64> = (1..=10).map(|v| v * 10).collect();
        assert_eq!(percentile(&ten, 50), Some(50));
        assert_eq!(percentile(&ten, 95), Some(100));
    }

    #[test]
    fn summarize_counts_each_row_once() {
        let mut rows = vec![row("a", T0), row("b", T0 + 1), row("c", T0 + 2)];
        rows[1].status = 429;
        rows[1].ttfb_ms = Some(5);
        rows[1].latency_ms = 3;
        rows[1].cost_micros = 0;
        rows[2].stream = true;
        rows[2].ttfb_ms = Some(300);
        rows[2].latency_ms = 2000;
        rows[2].cost_micros = 250;
        rows[2].total_tokens = 40;
        rows[2].prompt_tokens = 30;
        rows[2].completion_tokens = 10;
        let s = summarize(&rows);
        assert_eq!((s.requests, s.errors), (3, 1));
        assert_eq!(s.error_rate_bps, 3333);
        assert!((s.error_rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            (s.prompt_tokens, s.completion_tokens, s.total_tokens),
            (50, 20, 70)
        );
        assert_eq!(s.cost_micros, 350);
        // Latency over every row; first-byte time over the successful ones only.
        assert_eq!(
            s.latency_ms,
            Percentiles {
                p50: Some(500),
                p95: Some(2000),
                p99: Some(2000)
            }
        );
        assert_eq!(
            s.ttft_ms,
            Percentiles {
                p50: Some(100),
                p95: Some(300),
                p99: Some(300)
            }
        );
    }

    #[test]
    fn summarize_of_nothing_is_zero_and_serializes_nulls() {
        let s = summarize(&[]);
        assert_eq!(s, Stats::default());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["error_rate"], 0.0);
        assert!(v["latency_ms"]["p50"].is_null());
        for k in [
            "requests",
            "errors",
            "error_rate",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cost_micros",
            "latency_ms",
            "ttft_ms",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn sums_saturate() {
        let mut a = row("a", T0);
        a.cost_micros = u64::MAX;
        let b = row("b", T0);
        assert_eq!(summarize(&[a, b]).cost_micros, u64::MAX);
    }

    #[test]
    fn breakdown_groups_and_orders_by_cost_then_requests() {
        let mut rows = Vec::new();
        for (i, (model, cost)) in [
            ("cheap", 1),
            ("cheap", 1),
            ("cheap", 1),
            ("dear", 500),
            ("mid", 1),
            ("mid", 2),
            ("tie", 3),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = row(&i.to_string(), T0);
            r.model = Some(model.into());
            r.cost_micros = cost;
            rows.push(r);
        }
        let mut none = row("x", T0);
        none.model = None;
        none.cost_micros = 0;
        none.status = 401;
        rows.push(none);

        let b = breakdown(&rows, Dimension::Model);
        let labels: Vec<&str> = b.iter().map(|(l, _)| l.as_str()).collect();
        // cheap and mid and tie all cost 3: the busier first, then by name.
        assert_eq!(labels, ["dear", "cheap", "mid", "tie", NO_VALUE]);
        assert_eq!(b[1].1.requests, 3);
        assert_eq!(b[4].1.errors, 1);
        let total: u64 = b.iter().map(|(_, s)| s.requests).sum();
        assert_eq!(total, rows.len() as u64);

        let by_status = breakdown(&rows, Dimension::Status);
        assert_eq!(by_status.len(), 2);
        assert!(by_status.iter().any(|(l, s)| l == "401" && s.requests == 1));
        let by_channel = breakdown(&rows, Dimension::Channel);
        assert_eq!(by_channel[0].0, "c1");
        assert_eq!(by_channel[0].1.requests, rows.len() as u64);
    }

    #[test]
    fn timeseries_fills_every_hour_on_utc_boundaries() {
        // 10:30 to 14:00: buckets start at 10:00, 11:00, 12:00, 13:00.
        let from = T0 + 10 * HOUR_MS + 30 * 60_000;
        let to = T0 + 14 * HOUR_MS;
        let rows = vec![
            row("before range", from - 1),
            row("a", from),
            row("b", T0 + 11 * HOUR_MS - 1),
            row("c", T0 + 13 * HOUR_MS),
            row("d", to - 1),
            row("at end", to),
        ];
        let series = timeseries(&rows, Bucket::Hour, from, to);
        let starts: Vec<i64> = series.iter().map(|(t, _)| *t).collect();
        assert_eq!(starts, [10, 11, 12, 13].map(|h| T0 + h * HOUR_MS).to_vec());
        let counts: Vec<u64> = series.iter().map(|(_, s)| s.requests).collect();
        assert_eq!(counts, [2, 0, 0, 2]);
        assert_eq!(series[1].1, Stats::default());
    }

    #[test]
    fn timeseries_days_start_at_utc_midnight() {
        let from = T0 - 2 * HOUR_MS; // 2026-10-31T22:00Z
        let to = T0 + DAY_MS + 1; // just into 2026-11-02
        let rows = vec![
            row("a", T0 - 1),
            row("b", T0),
            row("c", T0 + DAY_MS - 1),
            row("d", T0 + DAY_MS),
        ];
        let series = timeseries(&rows, Bucket::Day, from, to);
        let got: Vec<(i64, u64)> = series.iter().map(|(t, s)| (*t, s.requests)).collect();
        assert_eq!(got, [(T0 - DAY_MS, 1), (T0, 2), (T0 + DAY_MS, 1)]);
        assert!(timeseries(&rows, Bucket::Day, to, from).is_empty());
        // Absurd ranges stay bounded and do not overflow.
        assert_eq!(
            timeseries(&[row("a", 5)], Bucket::Hour, 0, i64::MAX).len(),
            MAX_BUCKETS
        );
        assert!(timeseries(&rows, Bucket::Hour, i64::MIN, i64::MAX).is_empty());
    }

    #[test]
    fn csv_quotes_commas_quotes_and_newlines() {
        let mut r = row("req,1", T0);
        r.model = Some("say \"hi\"".into());
        r.error_code = Some("line\nbreak".into());
        r.upstream_model = None;
        r.ttfb_ms = None;
        r.endpoint = "=HYPERLINK(\"x\")".into();
        let csv = to_csv(&[r, row("plain", T0)]);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[0].split(',').count(), 28);
        assert!(csv.starts_with(
            "request_id,created_at,tenant_id,key_id,endpoint,model,upstream_model,channel_id,"
        ));
        assert_eq!(
            lines[1],
            "\"req,1\",1793491200000,t1,k1,\"'=HYPERLINK(\"\"x\"\")\",\"say \"\"hi\"\"\",,c1,\
             false,200,\"line\nbreak\",10,5,15,100,1,false,reported,500,,not_billed,0,0,0,,,,"
        );
        assert_eq!(
            lines[2],
            "plain,1793491200000,t1,k1,chat/completions,gpt-4o,gpt-4o-2024-08-06,c1,false,200,,\
             10,5,15,100,1,false,reported,500,100,not_billed,0,0,0,,,,"
        );
        assert_eq!(lines[3], "");
        assert_eq!(to_csv(&[]), format!("{CSV_HEADER}\r\n"));
    }

    #[test]
    fn query_defaults_to_the_last_day() {
        let q = parse_query("", T0).unwrap();
        assert_eq!((q.from_ms, q.to_ms), (T0 - DAY_MS, T0));
        assert_eq!(q.limit, 100);
        assert_eq!(q.format, Format::Json);
        assert_eq!(
            (q.by.clone(), q.bucket, q.status, q.before_ms),
            (None, None, None, None)
        );
        assert_eq!(q.tenant_id, None);
        // Blank form fields are absent ones.
        assert_eq!(parse_query("model=&from=&by=", T0).unwrap(), q);
    }

    #[test]
    fn query_reads_every_parameter() {
        let q = parse_query(
            "from=2026-10-31&to=2026-11-01T10%3A00%3A00Z&tenant_id=t%201&key_id=k1\
             &model=meta-llama%2FLlama-3&channel_id=c1&status=429&by=upstream_model\
             &bucket=hour&limit=1000&before=1793491200000&format=csv",
            T0,
        )
        .unwrap();
        assert_eq!(q.from_ms, T0 - DAY_MS);
        assert_eq!(q.to_ms, T0 + 10 * HOUR_MS);
        assert_eq!(q.tenant_id.as_deref(), Some("t 1"));
        assert_eq!(q.model.as_deref(), Some("meta-llama/Llama-3"));
        assert_eq!(q.status, Some(429));
        assert_eq!(q.by, Some(Dimension::UpstreamModel));
        assert_eq!(q.bucket, Some(Bucket::Hour));
        assert_eq!(q.limit, 1000);
        assert_eq!(q.before_ms, Some(T0));
        assert_eq!(q.format, Format::Csv);
        for d in Dimension::ALL {
            assert_eq!(Dimension::parse(d.as_str()), Some(d));
        }
    }

    #[test]
    fn query_times_accept_ms_and_rfc3339() {
        let at = |v: &str| parse_query(&format!("to={v}"), T0).map(|q| q.to_ms);
        assert_eq!(at("1793491200000"), Ok(T0));
        assert_eq!(at("2026-11-01"), Ok(T0));
        assert_eq!(at("2026-11-01T00:00:00Z"), Ok(T0));
        assert_eq!(at("2026-11-01t00:00:00z"), Ok(T0));
        assert_eq!(at("2026-11-01T02:00:00%2B02:00"), Ok(T0));
        // An unencoded '+' arrives as a space.
        assert_eq!(at("2026-11-01T02:00:00+02:00"), Ok(T0));
        assert_eq!(at("2026-10-31T19:00:00-05:00"), Ok(T0));
        assert_eq!(at("2026-11-01T00:00:00.250Z"), Ok(T0 + 250));
        assert_eq!(at("2026-11-01T00:00:00.123456789Z"), Ok(T0 + 123));
        assert_eq!(at("2026-11-01T10:00"), Ok(T0 + 10 * HOUR_MS));
        assert_eq!(at("2024-02-29T23:30:00Z"), Ok(1_709_249_400_000));
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-11-31",
            "2026-11-01T24:00:00Z",
            "2026-11-01T10:00:00+2:00",
            "2026-11-01T10:00:00.Z",
            "2026-11-01Tx",
            "1793491200", // seconds
            "99999999999999999999",
            "-5",
            "yesterday",
            "２０２６-11-01",
        ] {
            assert_eq!(
                parse_query(&format!("to={bad}"), T0).unwrap_err().param(),
                Some("to"),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_errors_name_the_parameter() {
        assert_eq!(param_of("form=1").as_deref(), Some("form"));
        assert_eq!(param_of("limit=0").as_deref(), Some("limit"));
        assert_eq!(param_of("limit=1001").as_deref(), Some("limit"));
        assert_eq!(param_of("limit=ten").as_deref(), Some("limit"));
        assert_eq!(param_of("status=99").as_deref(), Some("status"));
        assert_eq!(param_of("by=region").as_deref(), Some("by"));
        assert_eq!(param_of("bucket=minute").as_deref(), Some("bucket"));
        assert_eq!(param_of("format=xml").as_deref(), Some("format"));
        assert_eq!(param_of("before=soon").as_deref(), Some("before"));
        assert_eq!(param_of("model=a&model=b").as_deref(), Some("model"));
        // The range: ordered, at most 93 days.
        assert_eq!(
            param_of("from=2026-11-01&to=2026-11-01").as_deref(),
            Some("to")
        );
        assert_eq!(param_of("from=2026-12-01").as_deref(), Some("from"));
        assert_eq!(
            param_of("from=2026-01-01&to=2026-06-01").as_deref(),
            Some("from")
        );
        assert!(parse_query("from=2026-08-01&to=2026-11-02", T0).is_ok());
        assert_eq!(
            param_of("from=2026-07-31&to=2026-11-02").as_deref(),
            Some("from")
        );
        let e = parse_query("limit=0", T0).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn lone_range_ends_take_a_day() {
        let q = parse_query("from=2026-10-31T12:00:00Z", T0).unwrap();
        assert_eq!((q.from_ms, q.to_ms), (T0 - 12 * HOUR_MS, T0));
        let q = parse_query("to=2026-10-20", T0).unwrap();
        assert_eq!(q.to_ms - q.from_ms, DAY_MS);
    }

    fn tagged(id: &str, tags: &str, cost: u64) -> UsageRow {
        let mut r = row(id, T0);
        r.tags = tags.into();
        r.cost_micros = cost;
        r
    }

    #[test]
    fn breakdown_by_tag_groups_by_its_value_and_adds_up() {
        let rows = vec![
            tagged("a", "app:web,team:search", 100),
            tagged("b", "team:search", 50),
            tagged("c", "app:web,team:ads", 500),
            tagged("d", "", 7),
            tagged("e", "env:prod", 1),
        ];
        let by = Dimension::parse("tag:team").unwrap();
        assert_eq!(by.as_str(), "tag:team");
        let b = breakdown(&rows, by);
        let got: Vec<(&str, u64, u64)> = b
            .iter()
            .map(|(l, s)| (l.as_str(), s.requests, s.cost_micros))
            .collect();
        assert_eq!(got, [("ads", 1, 500), ("search", 2, 150), (NO_VALUE, 2, 8)]);
        let total: u64 = b.iter().map(|(_, s)| s.requests).sum();
        assert_eq!(total, rows.len() as u64);
        // Through the query string too.
        let q = parse_query("by=tag:app&tag=team:search", T0).unwrap();
        assert_eq!(q.by.as_ref().map(Dimension::as_str), Some("tag:app"));
        let selected: Vec<UsageRow> = rows
            .iter()
            .filter(|r| {
                let mut r = (*r).clone();
                r.created_at = T0 - 1;
                q.matches(&r)
            })
            .cloned()
            .collect();
        let ids: Vec<&str> = selected.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let by_app = breakdown(&selected, q.by.clone().unwrap());
        assert_eq!(by_app[0].0, "web");
        assert_eq!(by_app[1].0, NO_VALUE);
    }

    #[test]
    fn tag_parameters_are_validated() {
        assert_eq!(param_of("by=tag:").as_deref(), Some("by"));
        assert_eq!(param_of("by=tag:Team").as_deref(), Some("by"));
        assert_eq!(param_of("by=tag:team:search").as_deref(), Some("by"));
        assert_eq!(param_of("tag=team").as_deref(), Some("tag"));
        assert_eq!(param_of("tag=team:").as_deref(), Some("tag"));
        assert_eq!(param_of("tag=a:b&tag=c:d").as_deref(), Some("tag"));
        let q = parse_query("tag=team%3Asearch", T0).unwrap();
        assert_eq!(q.tag.map(|t| t.to_string()).as_deref(), Some("team:search"));
        // The exported tags column is quoted (it holds commas) and the last column.
        let csv = to_csv(&[tagged("a", "app:web,team:search", 1)]);
        assert!(csv
            .split("\r\n")
            .nth(1)
            .unwrap()
            .ends_with(",\"app:web,team:search\""));
        assert!(CSV_HEADER.ends_with(",tags"));
    }

    #[test]
    fn query_filters_rows() {
        let q = parse_query("model=gpt-4o&status=200&before=1793491200500", T0 + 1000).unwrap();
        assert!(q.matches(&row("a", T0)));
        assert!(!q.matches(&row("late", T0 + 500)));
        let mut other = row("b", T0);
        other.model = None;
        assert!(!q.matches(&other));
        assert!(!q.matches(&row("old", T0 - 2 * DAY_MS)));
    }
}
