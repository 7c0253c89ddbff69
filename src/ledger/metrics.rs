//! Prometheus metrics in the text exposition format, version 0.0.4, computed from usage rows
//! and the breakers' states: request, error, token and cost counters per (tenant, model,
//! channel), histograms of request duration and time to first token, and a gauge per
//! breaker. Families, series and labels come out in one fixed order, so the same rows always
//! render to the same bytes (and a diff between two scrapes shows only what changed).
//!
//! The counters are sums over the rows handed in: a scrape endpoint that wants counters that
//! never go down hands in every row since a fixed start (or reads Analytics Engine instead),
//! since a sliding window would make them fall. Durations are integer milliseconds turned into
//! decimal seconds as text, so no float rounding enters a bucket or a sum.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::ledger::row::UsageRow;
use crate::routing::breaker::{BreakerPhase, BreakerView};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (ms) of the request-duration buckets, `+Inf` after them.
pub const DURATION_BUCKETS_MS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000,
];
/// Upper bounds (ms) of the time-to-first-token buckets.
pub const TTFT_BUCKETS_MS: [u64; 11] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// The token kinds `edgerelay_tokens_total` is split by, as its `kind` label says them.
pub const TOKEN_KINDS: [&str; 5] = [
    "prompt",
    "completion",
    "cache_read",
    "cache_write",
    "reasoning",
];

/// One breaker's state, for `edgerelay_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerGauge<'a> {
    pub channel_id: &'a str,
    pub upstream_model: &'a str,
    pub phase: BreakerPhase,
}

/// The gauges of one channel's breakers, as its health view lists them (upstream model →
/// breaker).
pub fn breaker_gauges<'a>(
    channel_id: &'a str,
    breakers: &'a BTreeMap<String, BreakerView>,
) -> impl Iterator<Item = BreakerGauge<'a>> {
    breakers.iter().map(move |(model, view)| BreakerGauge {
        channel_id,
        upstream_model: model,
        phase: view.state,
    })
}

/// The gauge's value: 0 closed, 1 half-open, 2 open.
pub fn breaker_value(phase: BreakerPhase) -> u8 {
    match phase {
        BreakerPhase::Closed => 0,
        BreakerPhase::HalfOpen => 1,
        BreakerPhase::Open => 2,
    }
}

/// A label value with `\`, `"` and line feeds escaped, as the format requires.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes `\` and line feeds (quotes stay as they are).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Milliseconds as decimal seconds: `50` → `0.05`, `1000` → `1`, `2500` → `2.5`.
fn seconds(ms: u128) -> String {
    let whole = ms / 1000;
    let frac = ms % 1000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// (tenant, model, channel): the labels every per-request family has.
type Who = (String, String, String);

fn who(row: &UsageRow) -> Who {
    (
        row.tenant_id.clone(),
        row.model.clone().unwrap_or_default(),
        row.channel_id.clone().unwrap_or_default(),
    )
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    buckets: Vec<u64>,
    sum_ms: u128,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[u64], ms: i64) {
        let ms = u64::try_from(ms).unwrap_or(0);
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len() + 1];
        }
        let i = bounds.iter().position(|b| ms <= *b).unwrap_or(bounds.len());
        if let Some(n) = self.buckets.get_mut(i) {
            *n += 1;
        }
        self.sum_ms += u128::from(ms);
        self.count += 1;
    }
}

#[derive(Default)]
struct Sums {
    requests: BTreeMap<(Who, u16), u64>,
    errors: BTreeMap<(Who, u16, String), u64>,
    tokens: BTreeMap<Who, [u64; 5]>,
    cost: BTreeMap<Who, u64>,
    duration: BTreeMap<Who, Histogram>,
    ttft: BTreeMap<Who, Histogram>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn who_labels(w: &Who) -> [(&'static str, &str); 3] {
    [("tenant", &w.0), ("model", &w.1), ("channel", &w.2)]
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, bounds: &[u64], series: &BTreeMap<Who, Histogram>) {
    for (w, h) in series {
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| seconds(u128::from(*b)));
            let mut l: Vec<(&str, &str)> = who_labels(w).to_vec();
            l.push(("le", &le));
            let _ = writeln!(out, "{name}_bucket{} {cumulative}", labels(&l));
        }
        let l = labels(&who_labels(w));
        let _ = writeln!(out, "{name}_sum{l} {}", seconds(h.sum_ms));
        let _ = writeln!(out, "{name}_count{l} {}", h.count);
    }
}

/// The exposition of `rows` and `breakers`.
pub fn render(rows: &[UsageRow], breakers: &[BreakerGauge<'_>]) -> String {
    let mut sums = Sums::default();
    for row in rows {
        let w = who(row);
        *sums.requests.entry((w.clone(), row.status)).or_default() += 1;
        if row.status >= 400 {
            let code = row.error_code.clone().unwrap_or_default();
            *sums
                .errors
                .entry((w.clone(), row.status, code))
                .or_default() += 1;
        }
        let t = sums.tokens.entry(w.clone()).or_default();
        let counts = [
            row.prompt_tokens,
            row.completion_tokens,
            row.cache_read_tokens,
            row.cache_write_tokens,
            row.reasoning_tokens,
        ];
        for (sum, n) in t.iter_mut().zip(counts) {
            *sum = sum.saturating_add(n);
        }
        let c = sums.cost.entry(w.clone()).or_default();
        *c = c.saturating_add(row.cost_micros);
        sums.duration
            .entry(w.clone())
            .or_default()
            .observe(&DURATION_BUCKETS_MS, row.latency_ms);
        // As in analytics: first-byte time of successful requests only.
        if let (true, Some(ttfb)) = (row.status < 400, row.ttfb_ms) {
            sums.ttft
                .entry(w)
                .or_default()
                .observe(&TTFT_BUCKETS_MS, ttfb);
        }
    }

    let mut out = String::new();
    let name = "edgerelay_requests_total";
    header(
        &mut out,
        name,
        "counter",
        "Requests, by tenant, public model, channel and status.",
    );
    for ((w, status), n) in &sums.requests {
        let status = status.to_string();
        let mut l = who_labels(w).to_vec();
        l.push(("status", &status));
        let _ = writeln!(out, "{name}{} {n}", labels(&l));
    }
    let name = "edgerelay_errors_total";
    header(
        &mut out,
        name,
        "counter",
        "Requests answered with a status of 400 or more, by error code.",
    );
    for ((w, status, code), n) in &sums.errors {
        let status = status.to_string();
        let mut l = who_labels(w).to_vec();
        l.push(("status", &status));
        l.push(("code", code));
        let _ = writeln!(out, "{name}{} {n}", labels(&l));
    }
    let name = "edgerelay_tokens_total";
    header(&mut out, name, "counter", "Tokens, by kind.");
    for (w, counts) in &sums.tokens {
        for (kind, n) in TOKEN_KINDS.iter().zip(counts) {
            let mut l = who_labels(w).to_vec();
            l.push(("kind", kind));
            let _ = writeln!(out, "{name}{} {n}", labels(&l));
        }
    }
    let name = "edgerelay_cost_micros_total";
    header(
        &mut out,
        name,
        "counter",
        "Cost charged, in micro-units of the tenant's currency.",
    );
    for (w, n) in &sums.cost {
        let _ = writeln!(out, "{name}{} {n}", labels(&who_labels(w)));
    }
    let name = "edgerelay_request_duration_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Whole-request latency, errors included.",
    );
    histogram(&mut out, name, &DURATION_BUCKETS_MS, &sums.duration);
    let name = "edgerelay_ttft_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time to first byte of successful requests.",
    );
    histogram(&mut out, name, &TTFT_BUCKETS_MS, &sums.ttft);
    let name = "edgerelay_breaker_state";
    header(
        &mut out,
        name,
        "gauge",
        "Circuit breaker per channel and upstream model: 0 closed, 1 half-open, 2 open.",
    );
    let mut gauges: Vec<&BreakerGauge<'_>> = breakers.iter().collect();
    gauges.sort_by_key(|g| (g.channel_id, g.upstream_model));
    gauges.dedup_by_key(|g| (g.channel_id, g.upstream_model));
    for g in gauges {
        let l = labels(&[("channel", g.channel_id), ("model", g.upstream_model)]);
        let _ = writeln!(out, "{name}{l} {}", breaker_value(g.phase));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample line, parsed.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// A strict reader of the text format: HELP and TYPE before their family's samples,
    /// metric and label names from the format's alphabet, quoted label values with only the
    /// three escapes, one value per line, and every line ending in a line feed.
    fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
        assert!(text.ends_with('\n'), "the last line ends with a line feed");
        let name_ok = |n: &str| {
            !n.is_empty()
                && !n.starts_with(|c: char| c.is_ascii_digit())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut helped: Vec<String> = Vec::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP name text");
                assert!(name_ok(name), "{line}");
                helped.push(name.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(name_ok(name), "{line}");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert_eq!(helped.last().map(String::as_str), Some(name), "HELP first");
                assert!(types.insert(name.into(), kind.into()).is_none(), "one TYPE");
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let name_end = line.find(['{', ' ']).expect("name");
            let name = &line[..name_end];
            assert!(name_ok(name), "{line}");
            let mut rest = &line[name_end..];
            let mut labels = BTreeMap::new();
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.char_indices().peekable();
                let end;
                loop {
                    let (start, _) = *chars.peek().expect("a label or }");
                    if body[start..].starts_with('}') {
                        end = start + 1;
                        break;
                    }
                    let eq = body[start..].find('=').expect("label=") + start;
                    let label = &body[start..eq];
                    assert!(name_ok(label) && !label.contains(':'), "{line}");
                    while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                        chars.next();
                    }
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("closing quote") {
                            (_, '\\') => match chars.next().expect("escape").1 {
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                'n' => value.push('\n'),
                                other => panic!("bad escape \\{other} in {line}"),
                            },
                            (_, '"') => break,
                            (_, '\n') => panic!("raw line feed"),
                            (_, c) => value.push(c),
                        }
                    }
                    assert!(labels.insert(label.to_string(), value).is_none(), "{line}");
                    match chars.next().expect(", or }") {
                        (_, ',') => continue,
                        (i, '}') => {
                            end = i + 1;
                            break;
                        }
                        (_, c) => panic!("unexpected {c} in {line}"),
                    }
                }
                rest = &body[end..];
            }
            let value = rest.strip_prefix(' ').expect("a space before the value");
            assert!(!value.contains(' '), "no timestamp: {line}");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().expect("a number"),
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "TYPE before samples: {line}");
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        (samples, types)
    }

    fn row(
        tenant: &str,
        model: Option<&str>,
        status: u16,
        latency: i64,
        ttfb: Option<i64>,
    ) -> UsageRow {
        UsageRow {
            request_id: format!("r{tenant}{status}{latency}"),
            tenant_id: tenant.into(),
            model: model.map(str::to_string),
            channel_id: Some("c1".into()),
            status,
            error_code: (status >= 400).then(|| "upstream_error".to_string()),
            prompt_tokens: 10,
            completion_tokens: u64::from(status % 7),
            cache_read_tokens: 3,
            cache_write_tokens: 1,
            reasoning_tokens: 2,
            cost_micros: 1_000 + u64::from(status),
            latency_ms: latency,
            ttfb_ms: ttfb,
            ..UsageRow::default()
        }
    }

    fn rows() -> Vec<UsageRow> {
        vec![
            row("t1", Some("gpt-4o"), 200, 40, Some(20)),
            row("t1", Some("gpt-4o"), 200, 1_000, Some(300)),
            row("t1", Some("gpt-4o"), 502, 30_001, None),
            row("t1", Some("gpt-4o"), 429, 5, Some(5)),
            row(
                "t2",
                Some("claude \"3\"\\x\nnew"),
                200,
                999_999,
                Some(70_000),
            ),
            row("t2", None, 401, 1, None),
        ]
    }

    fn sum(samples: &[Sample], name: &str, filter: impl Fn(&Sample) -> bool) -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name && filter(s))
            .map(|s| s.value)
            .sum()
    }

    #[test]
    fn values_are_the_sums_over_the_rows() {
        let rows = rows();
        let breakers = [
            BreakerGauge {
                channel_id: "c2",
                upstream_model: "m",
                phase: BreakerPhase::Open,
            },
            BreakerGauge {
                channel_id: "c1",
                upstream_model: "m",
                phase: BreakerPhase::HalfOpen,
            },
        ];
        let text = render(&rows, &breakers);
        let (samples, types) = parse(&text);
        assert_eq!(types["edgerelay_requests_total"], "counter");
        assert_eq!(types["edgerelay_request_duration_seconds"], "histogram");
        assert_eq!(types["edgerelay_breaker_state"], "gauge");
        assert_eq!(types.len(), 7);

        let all = |_: &Sample| true;
        assert_eq!(
            sum(&samples, "edgerelay_requests_total", all),
            rows.len() as f64
        );
        let errors = rows.iter().filter(|r| r.status >= 400).count();
        assert_eq!(sum(&samples, "edgerelay_errors_total", all), errors as f64);
        let kind = |k: &'static str| move |s: &Sample| s.labels["kind"] == k;
        for (k, f) in [
            (
                "prompt",
                (|r: &UsageRow| r.prompt_tokens) as fn(&UsageRow) -> u64,
            ),
            ("completion", |r| r.completion_tokens),
            ("cache_read", |r| r.cache_read_tokens),
            ("cache_write", |r| r.cache_write_tokens),
            ("reasoning", |r| r.reasoning_tokens),
        ] {
            let expected: u64 = rows.iter().map(f).sum();
            assert_eq!(
                sum(&samples, "edgerelay_tokens_total", kind(k)),
                expected as f64,
                "{k}"
            );
        }
        let cost: u64 = rows.iter().map(|r| r.cost_micros).sum();
        assert_eq!(
            sum(&samples, "edgerelay_cost_micros_total", all),
            cost as f64
        );
        // Per series too: t1's gpt-4o 200s.
        let t1_ok = samples
            .iter()
            .find(|s| {
                s.name == "edgerelay_requests_total"
                    && s.labels["tenant"] == "t1"
                    && s.labels["status"] == "200"
            })
            .unwrap();
        assert_eq!(t1_ok.value, 2.0);
        assert_eq!(t1_ok.labels["model"], "gpt-4o");
        assert_eq!(t1_ok.labels["channel"], "c1");

        // Histograms: _count is the rows, _sum their seconds, buckets cumulative to +Inf.
        let d = "edgerelay_request_duration_seconds";
        assert_eq!(sum(&samples, &format!("{d}_count"), all), rows.len() as f64);
        let ms: i64 = rows.iter().map(|r| r.latency_ms).sum();
        let got = sum(&samples, &format!("{d}_sum"), all);
        assert!((got - ms as f64 / 1000.0).abs() < 1e-9, "{got}");
        let mut per_series: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == format!("{d}_bucket")) {
            let le: f64 = match s.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            per_series
                .entry((s.labels["tenant"].clone(), s.labels["model"].clone()))
                .or_default()
                .push((le, s.value));
        }
        for ((tenant, model), buckets) in &per_series {
            assert_eq!(buckets.len(), DURATION_BUCKETS_MS.len() + 1);
            assert!(buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{d}_count")
                        && &s.labels["tenant"] == tenant
                        && &s.labels["model"] == model
                })
                .unwrap()
                .value;
            assert_eq!(buckets.last().unwrap().1, count);
            // Each bucket counts exactly the rows at or below its bound.
            for (le, n) in buckets {
                let expected = rows
                    .iter()
                    .filter(|r| {
                        r.tenant_id == *tenant
                            && r.model.clone().unwrap_or_default() == *model
                            && (r.latency_ms as f64) / 1000.0 <= *le
                    })
                    .count();
                assert_eq!(*n, expected as f64, "{tenant} {model} le={le}");
            }
        }
        // TTFT: successful rows with a first byte only.
        let ttft_rows: Vec<&UsageRow> = rows
            .iter()
            .filter(|r| r.status < 400 && r.ttfb_ms.is_some())
            .collect();
        assert_eq!(
            sum(&samples, "edgerelay_ttft_seconds_count", all),
            ttft_rows.len() as f64
        );
        let ttft_ms: i64 = ttft_rows.iter().filter_map(|r| r.ttfb_ms).sum();
        assert!(
            (sum(&samples, "edgerelay_ttft_seconds_sum", all) - ttft_ms as f64 / 1000.0).abs()
                < 1e-9
        );

        // Breakers, sorted, 0/1/2.
        let gauges: Vec<(&str, f64)> = samples
            .iter()
            .filter(|s| s.name == "edgerelay_breaker_state")
            .map(|s| (s.labels["channel"].as_str(), s.value))
            .collect();
        assert_eq!(gauges, [("c1", 1.0), ("c2", 2.0)]);
    }

    #[test]
    fn label_values_are_escaped_and_read_back() {
        let text = render(&rows(), &[]);
        assert!(text.contains(r#"model="claude \"3\"\\x\nnew""#), "{text}");
        let (samples, _) = parse(&text);
        assert!(samples
            .iter()
            .any(|s| s.labels.get("model").map(String::as_str) == Some("claude \"3\"\\x\nnew")));
        // A row without a model has an empty label, which Prometheus reads as absent.
        assert!(samples
            .iter()
            .any(|s| s.labels.get("model").map(String::as_str) == Some("")));
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn the_output_is_deterministic_and_well_formed_when_empty() {
        let mut shuffled = rows();
        shuffled.reverse();
        assert_eq!(render(&rows(), &[]), render(&shuffled, &[]));
        let empty = render(&[], &[]);
        let (samples, types) = parse(&empty);
        assert!(samples.is_empty());
        assert_eq!(types.len(), 7, "HELP and TYPE of every family still");
        assert_eq!(seconds(50), "0.05");
        assert_eq!(seconds(1_000), "1");
        assert_eq!(seconds(2_500), "2.5");
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_234_567), "1234.567");
        assert!(CONTENT_TYPE.contains("version=0.0.4"));
        assert_eq!(breaker_value(BreakerPhase::Closed), 0);
        let mut views = BTreeMap::new();
        views.insert(
            "m".to_string(),
            BreakerView {
                state: BreakerPhase::Open,
                successes: 0,
                failures: 9,
                open_until_ms: Some(5),
                consecutive_opens: 1,
                probe_in_flight: false,
            },
        );
        let gauges: Vec<BreakerGauge<'_>> = breaker_gauges("c1", &views).collect();
        assert!(render(&[], &gauges)
            .contains("edgerelay_breaker_state{channel=\"c1\",model=\"m\"} 2\n"));
    }
}
