//! Usage analytics over ledger rows: the query an analytics request carries, the aggregate
//! `Stats` (counts, token and cost sums, latency percentiles), breakdowns by one dimension,
//! zero-filled time series on UTC hour/day buckets, CSV export, and the redaction applied to
//! request bodies before an opt-in body log keeps them.
//!
//! Pure: rows come in as `&[UsageRow]` (the store fetches them), the current time as `now_ms`.
//! Money stays in integer micro-units; the only float is `error_rate`, a display convenience
//! beside the exact `error_rate_bps`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::RelayError;
use crate::ledger::usage::UsageRow;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Tenant,
    Key,
    Model,
    Channel,
    UpstreamModel,
    Status,
}

impl Dimension {
    pub const ALL: [Dimension; 6] = [
        Dimension::Tenant,
        Dimension::Key,
        Dimension::Model,
        Dimension::Channel,
        Dimension::UpstreamModel,
        Dimension::Status,
    ];

    pub fn parse(s: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == s)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Dimension::Tenant => "tenant",
            Dimension::Key => "key",
            Dimension::Model => "model",
            Dimension::Channel => "channel",
            Dimension::UpstreamModel => "upstream_model",
            Dimension::Status => "status",
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
    }
}

const QUERY_PARAMS: [&str; 12] = [
    "from",
    "to",
    "tenant_id",
    "key_id",
    "model",
    "channel_id",
    "status",
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
    let by = get("by")
        .map(|v| {
            Dimension::parse(v).ok_or_else(|| {
                RelayError::invalid_value(
                    "by",
                    "must be one of tenant, key, model, channel, upstream_model, status",
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

const CSV_HEADER: &str = "request_id,created_at,tenant_id,key_id,endpoint,model,upstream_model,\
channel_id,stream,status,error_code,prompt_tokens,completion_tokens,total_tokens,cost_micros,\
attempts,hedged,usage_source,latency_ms,ttfb_ms,provenance,cache_read_tokens,cache_write_tokens,reasoning_tokens,inbound,colo,upstream_key";

/// The rows as RFC 4180 CSV: a header, then one CRLF-terminated record per row. The columns
/// are the core ledger fields in their `UsageRow` order (`CSV_HEADER`), a fixed set so that
/// spreadsheets and scripts built on an export keep working as the row grows; columns added
/// later go at the end. An absent value is an empty field.
pub fn to_csv(rows: &[UsageRow]) -> String {
    let mut out = String::with_capacity(CSV_HEADER.len() + 2 + rows.len() * 160);
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for r in rows {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let opt_num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        // Text columns may hold what a client sent (the model name above all), so they are
        // guarded against spreadsheet formulas; numbers are written as they are.
        let fields = [
            text_field(&r.request_id),
            r.created_at.to_string(),
            text_field(&r.tenant_id),
            text_field(&r.key_id),
            text_field(&r.endpoint),
            text_field(&opt(&r.model)),
            text_field(&opt(&r.upstream_model)),
            text_field(&opt(&r.channel_id)),
            r.stream.to_string(),
            r.status.to_string(),
            text_field(&opt(&r.error_code)),
            r.prompt_tokens.to_string(),
            r.completion_tokens.to_string(),
            r.total_tokens.to_string(),
            r.cost_micros.to_string(),
            r.attempts.to_string(),
            r.hedged.to_string(),
            text_field(&r.usage_source),
            r.latency_ms.to_string(),
            opt_num(r.ttfb_ms),
            text_field(&r.provenance),
            r.cache_read_tokens.to_string(),
            r.cache_write_tokens.to_string(),
            r.reasoning_tokens.to_string(),
            text_field(&opt(&r.inbound)),
            text_field(&opt(&r.colo)),
            text_field(&opt(&r.upstream_key)),
        ];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_csv_field(&mut out, field);
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

/// A `"password"` or `"secret"` value longer than this is not taken for one: the closing quote
/// found is then more likely a later string's, and redacting to it would eat the body.
const MAX_SECRET_VALUE: usize = 8192;
/// Key names longer than this are not inspected (real ones are short), which bounds each try.
const MAX_KEY_NAME: usize = 64;
/// Shortest credential-shaped value after a `"…key"`/`"…token"` name, and shortest `sk-` tail:
/// below it, ordinary words (`sk-learn`, `"key": "model"`) would be caught.
const MIN_SECRET_LEN: usize = 16;

/// Replace credentials and personal data in `text` with `[REDACTED:<kind>]`, for bodies kept by
/// the opt-in body log. Kinds: `relay_key` (sk-er-…), `anthropic_key` (sk-ant-…), `api_key`
/// (other sk-…), `google_key` (AIza…), `aws_key` (AKIA…/ASIA…), `bearer` (the token after
/// "Bearer"), `password`/`secret` (string values of JSON keys naming a password, secret,
/// private key, or a key/token with a credential-shaped value; also inside JSON-encoded strings
/// such as tool-call arguments), `email`, and `card` (13–19 digits, single spaces or dashes
/// between groups, passing Luhn).
///
/// One forward pass: every matcher starts only where its pattern can begin (a word start, a
/// quote, an `@`) and scans only its own characters, so no byte is rescanned more than a few
/// times. Matches are ASCII, so cuts always fall on UTF-8 boundaries; the text around them is
/// copied untouched.
pub fn redact(text: &str) -> String {
    let mut r = Redactor {
        text,
        bytes: text.as_bytes(),
        out: String::with_capacity(text.len()),
        emitted: 0,
        closes: None,
    };
    let mut i = 0;
    while i < r.bytes.len() {
        i = r.step(i);
    }
    if let Some(rest) = text.get(r.emitted..) {
        r.out.push_str(rest);
    }
    r.out
}

struct Redactor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    out: String,
    /// `text[..emitted]` is already in `out`, verbatim or redacted.
    emitted: usize,
    /// Closing-quote positions, computed on the first secret-named key only.
    closes: Option<Closes>,
}

/// Where JSON strings can end. `plain`: quotes preceded by an even run of backslashes.
/// `escaped`: the backslash of `\"` ending a string that is itself inside a JSON string (a run
/// of 4k+1 backslashes before the quote).
struct Closes {
    plain: Vec<usize>,
    escaped: Vec<usize>,
}

impl Closes {
    fn of(bytes: &[u8]) -> Closes {
        let mut closes = Closes {
            plain: Vec::new(),
            escaped: Vec::new(),
        };
        let mut backslashes = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\\' => backslashes += 1,
                b'"' => {
                    if backslashes.is_multiple_of(2) {
                        closes.plain.push(i);
                    } else if backslashes % 4 == 1 {
                        closes.escaped.push(i - 1);
                    }
                    backslashes = 0;
                }
                _ => backslashes = 0,
            }
        }
        closes
    }
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_bearer_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b)
}

fn is_secret_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/=_.-".contains(&b)
}

fn is_email_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 {
                    twice - 9
                } else {
                    twice
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

impl Redactor<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn before(&self, i: usize) -> Option<u8> {
        i.checked_sub(1).and_then(|p| self.at(p))
    }

    /// End of the run of `class` bytes starting at `i`.
    fn run_end(&self, mut i: usize, class: fn(u8) -> bool) -> usize {
        while self.at(i).is_some_and(class) {
            i += 1;
        }
        i
    }

    fn starts_with_at(&self, i: usize, prefix: &[u8]) -> bool {
        self.bytes.get(i..).is_some_and(|s| s.starts_with(prefix))
    }

    /// Emit `text[emitted..start]` and the placeholder in place of `text[start..end]`.
    fn replace(&mut self, start: usize, end: usize, kind: &str) -> bool {
        if start < self.emitted || end <= start {
            return false;
        }
        let (Some(kept), true) = (
            self.text.get(self.emitted..start),
            self.text.is_char_boundary(end),
        ) else {
            return false;
        };
        self.out.push_str(kept);
        self.out.push_str("[REDACTED:");
        self.out.push_str(kind);
        self.out.push(']');
        self.emitted = end;
        true
    }

    /// Try every matcher that can start at `i`; the position to look at next.
    fn step(&mut self, i: usize) -> usize {
        let Some(b) = self.at(i) else {
            return i + 1;
        };
        let matched = match b {
            b'"' if self.before(i) != Some(b'\\') => self.json_secret(i, false),
            b'\\' if self.at(i + 1) == Some(b'"') => self.json_secret(i, true),
            b'@' => self.email(i),
            b'0'..=b'9' => return self.cards(i),
            b'B' | b'b' => self.bearer(i),
            b's' => self.sk_key(i),
            b'A' => self.google_key(i).or_else(|| self.aws_key(i)),
            _ => None,
        };
        match matched {
            Some(end) => end.max(i + 1),
            None => i + 1,
        }
    }

    /// `sk-` keys (OpenAI, the relay's own `sk-er-`, Anthropic's `sk-ant-`, and the many
    /// OpenAI-compatible providers that copied the prefix).
    fn sk_key(&mut self, i: usize) -> Option<usize> {
        if self.before(i).is_some_and(is_key_char) || !self.starts_with_at(i, b"sk-") {
            return None;
        }
        let end = self.run_end(i + 3, is_key_char);
        if end - (i + 3) < MIN_SECRET_LEN {
            return None;
        }
        let kind = if self.starts_with_at(i, b"sk-er-") {
            "relay_key"
        } else if self.starts_with_at(i, b"sk-ant-") {
            "anthropic_key"
        } else {
            "api_key"
        };
        self.replace(i, end, kind).then_some(end)
    }

    /// Google API keys: `AIza` and 35 more characters.
    fn google_key(&mut self, i: usize) -> Option<usize> {
        if self.before(i).is_some_and(is_key_char) || !self.starts_with_at(i, b"AIza") {
            return None;
        }
        let end = self.run_end(i + 4, is_key_char);
        if end - (i + 4) < 35 {
            return None;
        }
        self.replace(i, end, "google_key").then_some(end)
    }

    /// AWS access key ids: `AKIA` (long-term) or `ASIA` (temporary) and 16 upper-case
    /// alphanumerics, as a whole word.
    fn aws_key(&mut self, i: usize) -> Option<usize> {
        if self.before(i).is_some_and(|b| b.is_ascii_alphanumeric())
            || !(self.starts_with_at(i, b"AKIA") || self.starts_with_at(i, b"ASIA"))
        {
            return None;
        }
        let end = self.run_end(i + 4, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if end - (i + 4) != 16 || self.at(end).is_some_and(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        self.replace(i, end, "aws_key").then_some(end)
    }

    /// The token after `Bearer` (any case); the word itself is kept so the log still shows
    /// what kind of credential was sent. Prose ("bearer of bad news", "Bearer authentication")
    /// is left alone by asking a token to hold a digit or to be long.
    fn bearer(&mut self, i: usize) -> Option<usize> {
        let word = self.bytes.get(i..i + 6)?;
        if !word.eq_ignore_ascii_case(b"bearer") || self.before(i).is_some_and(is_key_char) {
            return None;
        }
        let start = self.run_end(i + 6, |b| b == b' ' || b == b'\t');
        if start == i + 6 {
            return None;
        }
        let end = self.run_end(start, is_bearer_char);
        let token = self.bytes.get(start..end)?;
        let looks_secret = token.len() >= 24 || token.iter().any(u8::is_ascii_digit);
        if token.len() < 8 || !looks_secret {
            return None;
        }
        self.replace(start, end, "bearer").then_some(end)
    }

    /// `"name": "value"` where the name speaks of a secret. `escaped` is the same inside a
    /// JSON-encoded string (`\"name\": \"value\"`), as tool-call arguments carry it.
    fn json_secret(&mut self, i: usize, escaped: bool) -> Option<usize> {
        let quote: &[u8] = if escaped { b"\\\"" } else { b"\"" };
        let name_start = i + quote.len();
        let name_end = self.run_end(name_start, |b| b != b'"' && b != b'\\');
        if name_end - name_start > MAX_KEY_NAME || !self.starts_with_at(name_end, quote) {
            return None;
        }
        let name = self.text.get(name_start..name_end)?.to_ascii_lowercase();
        let any_value = if name.contains("password") || name.contains("passwd") {
            Some("password")
        } else if name.contains("secret")
            || name.contains("private_key")
            || name.contains("privatekey")
        {
            Some("secret")
        } else if name.contains("key") || name.contains("token") {
            None
        } else {
            return None;
        };
        let is_space = |b: u8| b" \t\r\n".contains(&b);
        let colon = self.run_end(name_end + quote.len(), is_space);
        if self.at(colon) != Some(b':') {
            return None;
        }
        let open = self.run_end(colon + 1, is_space);
        if !self.starts_with_at(open, quote) {
            return None;
        }
        let value_start = open + quote.len();
        let value_end = match any_value {
            Some(_) => {
                let closes = self.closes.get_or_insert_with(|| Closes::of(self.bytes));
                let list = if escaped {
                    &closes.escaped
                } else {
                    &closes.plain
                };
                let close = *list.get(list.partition_point(|&c| c < value_start))?;
                if close == value_start || close - value_start > MAX_SECRET_VALUE {
                    return None;
                }
                close
            }
            None => {
                let end = self.run_end(value_start, is_secret_char);
                let value = self.bytes.get(value_start..end)?;
                if !self.starts_with_at(end, quote)
                    || value.len() < MIN_SECRET_LEN
                    || !value.iter().any(u8::is_ascii_digit)
                {
                    return None;
                }
                end
            }
        };
        let kind = any_value.unwrap_or("secret");
        self.replace(value_start, value_end, kind)
            .then_some(value_end)
    }

    /// An address around the `@` at `at`: the local part is found by looking back (never into
    /// what was already emitted), the domain by looking ahead.
    fn email(&mut self, at: usize) -> Option<usize> {
        let mut start = at;
        while start > self.emitted && self.before(start).is_some_and(is_email_local_char) {
            start -= 1;
        }
        while start < at && self.at(start) == Some(b'.') {
            start += 1;
        }
        if start == at {
            return None;
        }
        let mut end = self.run_end(at + 1, is_domain_char);
        // A sentence may end right after the address.
        while end > at + 1 && matches!(self.before(end), Some(b'.' | b'-')) {
            end -= 1;
        }
        let domain = self.text.get(at + 1..end)?;
        let labels: Vec<&str> = domain.split('.').collect();
        let tld_ok = labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_alphabetic()));
        if labels.len() < 2 || !tld_ok || labels.iter().any(|l| l.is_empty()) {
            return None;
        }
        self.replace(start, end, "email").then_some(end)
    }

    /// Card numbers in the run of digit groups starting at `i` (groups joined by one space or
    /// dash). Every window of whole groups holding 13–19 digits is a candidate, the longest
    /// passing Luhn from each start wins, so "4111 1111 1111 1111 12/27" still finds the card
    /// before the expiry. Returns the run's end: the run is examined once, whatever it holds.
    fn cards(&mut self, i: usize) -> usize {
        let glued = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.';
        if self.before(i).is_some_and(glued) {
            return i + 1;
        }
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut pos = i;
        loop {
            let end = self.run_end(pos, |b| b.is_ascii_digit());
            groups.push((pos, end));
            let separated = matches!(self.at(end), Some(b' ' | b'-'))
                && self.at(end + 1).is_some_and(|b| b.is_ascii_digit());
            if !separated {
                pos = end;
                break;
            }
            pos = end + 1;
        }
        // A number glued to letters, or the integer part of a decimal, is not a card.
        let right_free = match self.at(pos) {
            Some(b'.') => !self.at(pos + 1).is_some_and(|b| b.is_ascii_digit()),
            Some(b) => !(b.is_ascii_alphanumeric() || b == b'_'),
            None => true,
        };
        let mut g = 0;
        while g < groups.len() {
            let mut digits = 0;
            let mut best = None;
            for (h, &(s, e)) in groups.iter().enumerate().skip(g) {
                digits += e - s;
                if digits > 19 {
                    break;
                }
                let at_right_edge = h + 1 == groups.len();
                let window = groups.get(g..=h).unwrap_or_default();
                if digits >= 13 && (!at_right_edge || right_free) && self.luhn_groups(window) {
                    best = Some(h);
                }
            }
            match best.and_then(|h| Some((groups.get(g)?.0, groups.get(h)?.1, h))) {
                Some((start, end, h)) => {
                    self.replace(start, end, "card");
                    g = h + 1;
                }
                None => g += 1,
            }
        }
        pos.max(i + 1)
    }

    fn luhn_groups(&self, groups: &[(usize, usize)]) -> bool {
        let digits: Vec<u8> = groups
            .iter()
            .filter_map(|&(s, e)| self.bytes.get(s..e))
            .flatten()
            .map(|d| d - b'0')
            .collect();
        luhn(digits.into_iter())
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
        assert_eq!(lines[0].split(',').count(), 27);
        assert!(csv.starts_with(
            "request_id,created_at,tenant_id,key_id,endpoint,model,upstream_model,channel_id,"
        ));
        assert_eq!(
            lines[1],
            "\"req,1\",1793491200000,t1,k1,\"'=HYPERLINK(\"\"x\"\")\",\"say \"\"hi\"\"\",,c1,\
             false,200,\"line\nbreak\",10,5,15,100,1,false,reported,500,,not_billed,0,0,0,,,"
        );
        assert_eq!(
            lines[2],
            "plain,1793491200000,t1,k1,chat/completions,gpt-4o,gpt-4o-2024-08-06,c1,false,200,,\
             10,5,15,100,1,false,reported,500,100,not_billed,0,0,0,,,"
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
            (q.by, q.bucket, q.status, q.before_ms),
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

    #[test]
    fn redacts_api_keys_and_tokens() {
        let cases = [
            (
                "key sk-er-LQNUGZHT5u543eF8cvF8tKdPlcVkNSYQAq1KIqZ6f74 here",
                "key [REDACTED:relay_key] here",
            ),
            (
                "x-api-key: sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789",
                "x-api-key: [REDACTED:anthropic_key]",
            ),
            ("sk-proj-abcdefghijklmnop1234", "[REDACTED:api_key]"),
            (
                "?key=AIzaSyA1234567890abcdefghijklmnopqrstuv&alt=sse",
                "?key=[REDACTED:google_key]&alt=sse",
            ),
            (
                "id AKIAIOSFODNN7EXAMPLE, tmp ASIAIOSFODNN7EXAMPLE.",
                "id [REDACTED:aws_key], tmp [REDACTED:aws_key].",
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_x-1",
                "Authorization: Bearer [REDACTED:bearer]",
            ),
            (
                "authorization: bearer tt-abc123xyz",
                "authorization: bearer [REDACTED:bearer]",
            ),
            // Not credentials: a library name, prose, a short test key, a longer word.
            ("pip install sk-learn", "pip install sk-learn"),
            ("the bearer of bad news", "the bearer of bad news"),
            ("Bearer authentication", "Bearer authentication"),
            (
                "ask-abcdefghijklmnopqrstuvwxyz",
                "ask-abcdefghijklmnopqrstuvwxyz",
            ),
            ("AKIAIOSFODNN7EXAMPLEX", "AKIAIOSFODNN7EXAMPLEX"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }

    #[test]
    fn redacts_secret_json_values() {
        let body = r#"{"api_key": "0123456789abcdef0123", "password":"hunter2", "max_tokens": 100, "client_secret" : "a b \" c", "key": "model", "model":"gpt-4o"}"#;
        assert_eq!(
            redact(body),
            r#"{"api_key": "[REDACTED:secret]", "password":"[REDACTED:password]", "max_tokens": 100, "client_secret" : "[REDACTED:secret]", "key": "model", "model":"gpt-4o"}"#
        );
        // Inside a JSON-encoded string, as tool-call arguments carry it.
        let args = r#"{"arguments":"{\"user\":\"bob\",\"password\":\"p@ss \\\"w\\\"\",\"access_token\":\"ghp_0123456789abcdefXYZ\"}"}"#;
        assert_eq!(
            redact(args),
            r#"{"arguments":"{\"user\":\"bob\",\"password\":\"[REDACTED:password]\",\"access_token\":\"[REDACTED:secret]\"}"}"#
        );
        // Unterminated: nothing to cut at, nothing eaten.
        assert_eq!(redact(r#"{"password": "abc"#), r#"{"password": "abc"#);
        assert_eq!(redact(r#""password":"""#), r#""password":"""#);
    }

    #[test]
    fn redacts_emails() {
        assert_eq!(
            redact("Mail jane.doe+ai@mail.example.co.uk."),
            "Mail [REDACTED:email]."
        );
        assert_eq!(
            redact("<a@b.io>,c_d@e-f.org"),
            "<[REDACTED:email]>,[REDACTED:email]"
        );
        for keep in [
            "@handle",
            "a@b",
            "x@y.z1",
            "user@localhost",
            "a@@b.com",
            "@.com",
        ] {
            assert_eq!(redact(keep), keep);
        }
    }

    #[test]
    fn redacts_only_cards_passing_luhn() {
        assert_eq!(redact("card 4111111111111111"), "card [REDACTED:card]");
        assert_eq!(redact("4111 1111 1111 1111"), "[REDACTED:card]");
        assert_eq!(redact("5500-0000-0000-0004 ok"), "[REDACTED:card] ok");
        assert_eq!(redact("amex 378282246310005."), "amex [REDACTED:card].");
        // The expiry after the number stays; the card is still found.
        assert_eq!(redact("4111 1111 1111 1111 12/27"), "[REDACTED:card] 12/27");
        assert_eq!(
            redact("4111111111111111 4012888888881881"),
            "[REDACTED:card] [REDACTED:card]"
        );
        // Luhn failures, wrong lengths, and numbers glued to other text stay.
        for keep in [
            "4111111111111112",
            "4111 1111 1111 1112",
            "411111111111",
            "41111111111111111111",
            "order4111111111111111",
            "4111111111111111x",
            "3.4111111111111111",
            "4111111111111111.5",
            "4111  1111 1111 1111",
        ] {
            assert_eq!(redact(keep), keep, "{keep}");
        }
    }

    #[test]
    fn redaction_keeps_multibyte_text_around_matches() {
        assert_eq!(
            redact("カード番号4111111111111111です、メールはjane@example.comまで😀sk-er-0123456789abcdefghij😀"),
            "カード番号[REDACTED:card]です、メールは[REDACTED:email]まで😀[REDACTED:relay_key]😀"
        );
        // Addresses are ASCII-only: letters of other scripts are never taken into one, so
        // unspaced text around an address is not swallowed (and IDN addresses are not caught).
        assert_eq!(redact("josé@exämple.com"), "josé@exämple.com");
        assert_eq!(redact("ñ a@b.cc ñ"), "ñ [REDACTED:email] ñ");
        assert_eq!(
            redact("{\"пароль\":\"x\",\"password\":\"пароль\"}"),
            "{\"пароль\":\"x\",\"password\":\"[REDACTED:password]\"}"
        );
        // Every cut of a mixed string: no panic, and text without secrets comes back whole.
        let s = "é\"\\@ 4-1 sk-Bé€\"password\":\"😀\u{0}A𝄞";
        for (i, _) in s.char_indices() {
            let head = s.get(..i).unwrap();
            let tail = s.get(i..).unwrap();
            let _ = redact(head);
            let _ = redact(tail);
        }
        assert_eq!(redact(""), "");
    }

    #[test]
    fn redaction_stays_linear_on_hostile_input() {
        let hostile = [
            "sk-".repeat(200_000),
            "@a".repeat(200_000),
            "a@".repeat(200_000),
            "1 ".repeat(200_000),
            "4111111111111111 ".repeat(40_000),
            "\"password\":\"\\".repeat(50_000),
            "\\\"secret\\\":\\\"".repeat(50_000),
            "\"api_key\":\"0123456789abcdef".repeat(30_000),
            "Bearer ".repeat(100_000),
            "a.".repeat(200_000) + "@",
        ];
        let started = std::time::Instant::now();
        for text in &hostile {
            let out = redact(text);
            assert!(!out.is_empty());
        }
        // Quadratic behaviour on any of these would take minutes, not seconds.
        assert!(started.elapsed().as_secs() < 20);
    }
}
