//! What a request costs: the price of each upstream model (built-in list prices, overridden by
//! the operator's table in KV under `prices`), the tenant and model-group multipliers, and the
//! integer arithmetic that turns a `Usage` into micro-units of currency.
//!
//! Money is never a float. Prices are micro-units per million tokens, multipliers parts per
//! million, and a cost is one exact fraction rounded up once at the end, so a spend is never
//! under-charged by rounding and never drifts with the order of the factors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RelayError;
use crate::formats::neutral::Usage;

/// The divisor of both units: prices are per million tokens, multipliers parts per million.
const PER_MILLION: u128 = 1_000_000;
/// The largest price the operator may set, per million tokens or per request: a million units
/// of currency. Larger is always a typo, and the cap keeps every product far inside `u128`.
pub const MAX_PRICE: u64 = 1_000_000_000_000;
/// The KV key of the operator's price table.
pub const PRICES_KEY: &str = "prices";
pub const SOURCE_BUILTIN: &str = "builtin";
pub const SOURCE_CUSTOM: &str = "custom";

/// The price of one upstream model. Cache prices default to the input price: tokens a provider
/// reports as cached are still input, and an unknown discount must not become a free token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Micro-units per million uncached input tokens (`$2.50 / 1M` is `2_500_000`).
    pub input: u64,
    /// Micro-units per million output tokens, reasoning included.
    pub output: u64,
    /// Micro-units per million input tokens read from a prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<u64>,
    /// Micro-units per million input tokens written to a prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<u64>,
    /// Micro-units per request, whatever its tokens.
    #[serde(default)]
    pub request: u64,
}

impl Price {
    /// A price without cache discounts or request fee.
    pub const fn tokens(input: u64, output: u64) -> Price {
        Price {
            input,
            output,
            cache_read: None,
            cache_write: None,
            request: 0,
        }
    }

    pub const fn with_cache_read(self, cache_read: u64) -> Price {
        Price {
            cache_read: Some(cache_read),
            ..self
        }
    }

    pub const fn with_cache_write(self, cache_write: u64) -> Price {
        Price {
            cache_write: Some(cache_write),
            ..self
        }
    }

    pub fn cache_read_price(&self) -> u64 {
        self.cache_read.unwrap_or(self.input)
    }

    pub fn cache_write_price(&self) -> u64 {
        self.cache_write.unwrap_or(self.input)
    }

    /// The dearest way an input token can be billed: what a reservation must assume before it
    /// knows how much of the prompt the cache will serve or take.
    pub fn max_input_price(&self) -> u64 {
        self.input
            .max(self.cache_read_price())
            .max(self.cache_write_price())
    }

    /// The first field above `MAX_PRICE`, if any.
    fn oversized_field(&self) -> Option<&'static str> {
        [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
            ("request", Some(self.request)),
        ]
        .into_iter()
        .find(|(_, v)| v.is_some_and(|v| v > MAX_PRICE))
        .map(|(field, _)| field)
    }
}

/// Upstream model name → price. A BTreeMap, so listings come out sorted.
pub type PriceTable = BTreeMap<String, Price>;

/// The operator's table as stored in KV. Values are checked as the admin API checks them,
/// because a table edited with `wrangler kv` skips that API.
pub fn parse_price_table(text: &str) -> Result<PriceTable, String> {
    let table: PriceTable =
        serde_json::from_str(text).map_err(|e| format!("price table in KV is not valid: {e}"))?;
    for (model, price) in &table {
        if model.trim().is_empty() {
            return Err("price table in KV is not valid: a model name is empty".into());
        }
        if let Some(field) = price.oversized_field() {
            return Err(format!(
                "price table in KV is not valid: {model}.{field} is above {MAX_PRICE}"
            ));
        }
    }
    Ok(table)
}

// ---- lookup -------------------------------------------------------------------------------

/// Which entry priced a model, and from which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceMatch<'a> {
    pub key: &'a str,
    pub price: &'a Price,
    pub source: &'static str,
}

/// The price of `model`: the operator's table first, then the built-in list, each by exact
/// name and then by the longest key that is a prefix of the name ending at a `-`, `@`, `:` or
/// `.`. Dated snapshots always follow one of those (`gpt-4o-2024-08-06`,
/// `claude-sonnet-4-5@20250929`), so they take their family's price unless a key names them.
///
/// The two tables are searched as one, the most specific key winning and the operator's
/// winning a tie: a custom `gpt-4o` overrides the built-in `gpt-4o` and its snapshots, but does
/// not reprice `gpt-4o-mini`, which the built-ins name more precisely.
pub fn price_for<'a>(table: &'a PriceTable, model: &str) -> Option<&'a Price> {
    resolve(table, model).map(|m| m.price)
}

/// `price_for`, saying which key matched and where it came from (for logs and the admin API).
pub fn resolve<'a>(table: &'a PriceTable, model: &str) -> Option<PriceMatch<'a>> {
    let custom = best_match(table.iter().map(|(k, p)| (k.as_str(), p)), model);
    let builtin = best_match(BUILTIN_PRICES.iter().map(|(k, p)| (*k, p)), model);
    let use_custom = match (custom, builtin) {
        (Some(_), None) => true,
        (None, _) => false,
        (Some((c, _)), Some((b, _))) => c == model || (b != model && c.len() >= b.len()),
    };
    if use_custom {
        return custom.map(|(key, price)| PriceMatch {
            key,
            price,
            source: SOURCE_CUSTOM,
        });
    }
    builtin.map(|(key, price)| PriceMatch {
        key,
        price,
        source: SOURCE_BUILTIN,
    })
}

fn best_match<'a>(
    entries: impl Iterator<Item = (&'a str, &'a Price)>,
    model: &str,
) -> Option<(&'a str, &'a Price)> {
    let mut best: Option<(&'a str, &'a Price)> = None;
    for (key, price) in entries {
        if key == model {
            return Some((key, price));
        }
        if covers(key, model) && best.is_none_or(|(b, _)| key.len() > b.len()) {
            best = Some((key, price));
        }
    }
    best
}

/// Whether `key` names a family `model` belongs to. The boundary keeps `gpt-4o` from pricing
/// a hypothetical `gpt-4omni`, and `command-r` from pricing `command-r7b`.
fn covers(key: &str, model: &str) -> bool {
    !key.is_empty()
        && model
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(['-', '@', ':', '.']))
}

// ---- the admin listing ----------------------------------------------------------------------

/// One row of `GET /admin/prices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceView {
    pub model: String,
    pub price: Price,
    /// `"builtin"` or `"custom"`.
    pub source: &'static str,
}

impl PriceView {
    pub fn listing(custom: &PriceTable) -> Vec<PriceView> {
        merged_listing(custom)
            .into_iter()
            .map(|(model, price, source)| PriceView {
                model,
                price,
                source,
            })
            .collect()
    }
}

/// Every built-in and custom entry by model name, a custom entry replacing the built-in of the
/// same name.
pub fn merged_listing(custom: &PriceTable) -> Vec<(String, Price, &'static str)> {
    let mut merged: BTreeMap<&str, (Price, &'static str)> = BUILTIN_PRICES
        .iter()
        .map(|(model, price)| (*model, (*price, SOURCE_BUILTIN)))
        .collect();
    for (model, price) in custom {
        merged.insert(model, (*price, SOURCE_CUSTOM));
    }
    merged
        .into_iter()
        .map(|(model, (price, source))| (model.to_string(), price, source))
        .collect()
}

// ---- multipliers ----------------------------------------------------------------------------

/// A price ratio in parts per million (`1_000_000` is 1.0×): a tenant's, or a model group's.
/// Zero is allowed (free); above 100× is refused as a typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Multiplier(u64);

impl Multiplier {
    pub const ONE: Multiplier = Multiplier(1_000_000);
    pub const MAX_PPM: u64 = 100_000_000;

    pub fn from_ppm(ppm: u64) -> Option<Multiplier> {
        (ppm <= Multiplier::MAX_PPM).then_some(Multiplier(ppm))
    }

    pub fn ppm(self) -> u64 {
        self.0
    }
}

impl Default for Multiplier {
    fn default() -> Multiplier {
        Multiplier::ONE
    }
}

impl TryFrom<u64> for Multiplier {
    type Error = String;

    fn try_from(ppm: u64) -> Result<Multiplier, String> {
        Multiplier::from_ppm(ppm).ok_or_else(multiplier_range)
    }
}

impl From<Multiplier> for u64 {
    fn from(m: Multiplier) -> u64 {
        m.0
    }
}

fn multiplier_range() -> String {
    format!(
        "must be between 0 and {} parts per million (1000000 is 1.0x)",
        Multiplier::MAX_PPM
    )
}

// ---- one request's prices ---------------------------------------------------------------

/// The price a request is charged at, fixed when it is admitted: its reservation and its
/// settlement use the same numbers. An unpriced model costs nothing (and says so in logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pricer {
    pub price: Option<Price>,
    pub multipliers: Vec<u64>,
}

impl Pricer {
    pub fn new(custom: &PriceTable, upstream_model: &str, multipliers: Vec<u64>) -> Pricer {
        Pricer {
            price: price_for(custom, upstream_model).cloned(),
            multipliers,
        }
    }

    pub fn cost(&self, usage: &Usage) -> u64 {
        self.price
            .as_ref()
            .map_or(0, |p| cost_micros(usage, p, &self.multipliers))
    }

    pub fn worst_case(&self, prompt_tokens_estimate: u64, max_output_tokens: u64) -> u64 {
        self.price.as_ref().map_or(0, |p| {
            worst_case_cost_micros(
                prompt_tokens_estimate,
                max_output_tokens,
                p,
                &self.multipliers,
            )
        })
    }
}

// ---- cost ---------------------------------------------------------------------------------

/// What `usage` costs at `price`, in micro-units, after every multiplier (parts per million).
///
/// Each input token is billed once, in exactly one class: uncached, read from a cache, or
/// written to one; reasoning is inside `completion_tokens` and billed there as output. The sum
/// is kept as an exact fraction and rounded up once, so the result is never below the true
/// cost; one that does not fit in `u64` saturates.
pub fn cost_micros(usage: &Usage, price: &Price, multipliers: &[u64]) -> u64 {
    let parts = [
        (usage.uncached_prompt_tokens(), price.input),
        (usage.cache_read_tokens, price.cache_read_price()),
        (usage.cache_write_tokens, price.cache_write_price()),
        (usage.completion_tokens, price.output),
    ];
    scaled_cost(&parts, price.request, multipliers)
}

/// The most a request can cost before it is sent, for the limiter's reservation: every prompt
/// token at the dearest input price (a cache write can cost more than a plain read), every
/// allowed output token at the output price, and the request fee.
pub fn worst_case_cost_micros(
    prompt_tokens_estimate: u64,
    max_output_tokens: u64,
    price: &Price,
    multipliers: &[u64],
) -> u64 {
    let parts = [
        (prompt_tokens_estimate, price.max_input_price()),
        (max_output_tokens, price.output),
    ];
    scaled_cost(&parts, price.request, multipliers)
}

/// ⌈(Σ tokens × price_per_million + request × 10⁶) × Π m / 10⁶⁽ᵏ⁺¹⁾⌉, saturating to `u64`.
///
/// Every overflow saturates upwards, so a result is either exact or `u64::MAX`, never low.
/// With prices within `MAX_PRICE` the sum fits `u128` for any token counts, and after the
/// multipliers are reduced by their common factors with the divisor, up to four multipliers of
/// at most 100× always fit.
fn scaled_cost(parts: &[(u64, u64)], request: u64, multipliers: &[u64]) -> u64 {
    let sum = parts
        .iter()
        .map(|&(tokens, per_million)| u128::from(tokens) * u128::from(per_million))
        .try_fold(u128::from(request) * PER_MILLION, u128::checked_add);
    let ratio = multipliers
        .iter()
        .try_fold((1u128, PER_MILLION), |(num, den), &m| {
            let (num, den) = (
                num.checked_mul(u128::from(m))?,
                den.checked_mul(PER_MILLION)?,
            );
            let g = gcd(num, den);
            Some((num / g, den / g))
        });
    let (Some(sum), Some((num, den))) = (sum, ratio) else {
        return u64::MAX;
    };
    mul_div_ceil(sum, num, den)
        .and_then(|cost| u64::try_from(cost).ok())
        .unwrap_or(u64::MAX)
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// ⌈a × b / d⌉ exactly, through a 256-bit product, so that large token counts times several
/// multipliers are still rounded only once. `None` if `d` is zero or the quotient needs more
/// than 128 bits.
fn mul_div_ceil(a: u128, b: u128, d: u128) -> Option<u128> {
    if d == 0 {
        return None;
    }
    let (hi, lo) = widening_mul(a, b);
    if hi >= d {
        return None;
    }
    // Schoolbook division one bit at a time. The remainder stays below `d`; when shifting it
    // carries out of 128 bits the true value is ≥ 2¹²⁸ > d, and the wrapping subtraction
    // yields exactly that value minus `d`.
    let mut rem = hi;
    let mut quot: u128 = 0;
    for bit in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((lo >> bit) & 1);
        quot <<= 1;
        if carry == 1 || rem >= d {
            rem = rem.wrapping_sub(d);
            quot |= 1;
        }
    }
    if rem == 0 {
        Some(quot)
    } else {
        quot.checked_add(1)
    }
}

/// The full product of two `u128`s as (high, low) halves.
fn widening_mul(a: u128, b: u128) -> (u128, u128) {
    const LOW: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & LOW);
    let (b1, b0) = (b >> 64, b & LOW);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    // Three values below 2⁶⁴ each: the sum cannot overflow.
    let mid = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    let lo = (p00 & LOW) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

// ---- admin input ----------------------------------------------------------------------------

pub const PRICE_FIELDS: [&str; 5] = ["input", "output", "cache_read", "cache_write", "request"];

/// The body of `PUT /admin/prices/{model}`: `input` and `output` required, the cache prices and
/// the request fee optional. Every error is a 400 that names its field.
pub fn parse_price(bytes: &[u8]) -> Result<Price, RelayError> {
    let map = crate::support::fields::parse_object(bytes, &PRICE_FIELDS)?;
    let field = |name: &str, unit: &str| -> Result<Option<u64>, RelayError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => whole_number(v, name, MAX_PRICE, unit).map(Some),
        }
    };
    let required = |name: &str| -> Result<u64, RelayError> {
        field(name, "micro-units per million tokens")?.ok_or_else(|| RelayError::missing(name))
    };
    Ok(Price {
        input: required("input")?,
        output: required("output")?,
        cache_read: field("cache_read", "micro-units per million tokens")?,
        cache_write: field("cache_write", "micro-units per million tokens")?,
        request: field("request", "micro-units per request")?.unwrap_or(0),
    })
}

/// A multiplier from admin input (`param` names it in the error): an integer in parts per
/// million, 0 to 100000000.
pub fn parse_multiplier(value: &Value, param: &str) -> Result<Multiplier, RelayError> {
    match whole_number(value, param, Multiplier::MAX_PPM, "") {
        Ok(ppm) => Multiplier::from_ppm(ppm).ok_or_else(|| range_error(param)),
        Err(RelayError::InvalidValue { .. }) => Err(range_error(param)),
        Err(e) => Err(e),
    }
}

fn range_error(param: &str) -> RelayError {
    RelayError::invalid_value(param, multiplier_range())
}

/// The model name of `PUT /admin/prices/{model}`: what an upstream calls the model.
pub fn check_model_key(model: &str) -> Result<(), RelayError> {
    let ok = !model.is_empty()
        && model.chars().count() <= 200
        && !model.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(RelayError::invalid_value(
            "model",
            "a model name is 1 to 200 characters without spaces",
        ))
    }
}

/// A JSON integer in `0..=max`. Fractions are refused as a type error rather than rounded:
/// whoever sends `2.5` for `$2.50` meant 2500000, and guessing either way would bill wrongly.
fn whole_number(value: &Value, param: &str, max: u64, unit: &str) -> Result<u64, RelayError> {
    let Value::Number(n) = value else {
        return Err(RelayError::invalid_type(param, "an integer"));
    };
    match n.as_u64() {
        Some(v) if v <= max => Ok(v),
        Some(_) => Err(out_of_range(param, max, unit)),
        None if n.is_i64() => Err(out_of_range(param, max, unit)),
        None => Err(RelayError::invalid_type(
            param,
            "an integer (prices are in micro-units, so $2.50 is 2500000)",
        )),
    }
}

fn out_of_range(param: &str, max: u64, unit: &str) -> RelayError {
    RelayError::invalid_value(
        param,
        format!("must be between 0 and {max} {unit}")
            .trim_end()
            .to_string(),
    )
}

// ---- built-in list prices -------------------------------------------------------------------

/// Anthropic's rule for its 4.x and 3.5+ models: a 5-minute cache write costs 1.25× input and a
/// cache read 0.1× (the 1-hour write, 2×, is not told apart in `Usage`).
const fn claude(input: u64, output: u64) -> Price {
    Price::tokens(input, output)
        .with_cache_write(input / 4 * 5)
        .with_cache_read(input / 10)
}

/// The built-in price of every model the operator has not priced. List price as of 2026;
/// override via admin API (`PUT /admin/prices/{model}`).
///
/// Where snapshots of one family are priced differently, the family key carries the dearer
/// price and the cheaper snapshots are named, so that an unlisted snapshot is over- rather than
/// under-charged. Long-context tiers (Gemini 2.5 Pro above 200k prompt tokens) and 1-hour cache
/// writes are not modelled; price them with an override where they matter.
pub static BUILTIN_PRICES: &[(&str, Price)] = &[
    // OpenAI — https://developers.openai.com/api/docs/pricing (Standard tier; read 2026-11).
    // Cached input is a read; OpenAI charges nothing extra to write its cache.
    (
        "gpt-4o",
        Price::tokens(2_500_000, 10_000_000).with_cache_read(1_250_000),
    ),
    ("gpt-4o-2024-05-13", Price::tokens(5_000_000, 15_000_000)),
    (
        "gpt-4o-mini",
        Price::tokens(150_000, 600_000).with_cache_read(75_000),
    ),
    (
        "gpt-4.1",
        Price::tokens(2_000_000, 8_000_000).with_cache_read(500_000),
    ),
    (
        "gpt-4.1-mini",
        Price::tokens(400_000, 1_600_000).with_cache_read(100_000),
    ),
    (
        "gpt-4.1-nano",
        Price::tokens(100_000, 400_000).with_cache_read(25_000),
    ),
    (
        "o1",
        Price::tokens(15_000_000, 60_000_000).with_cache_read(7_500_000),
    ),
    ("o1-pro", Price::tokens(150_000_000, 600_000_000)),
    (
        "o3",
        Price::tokens(2_000_000, 8_000_000).with_cache_read(500_000),
    ),
    (
        "o3-mini",
        Price::tokens(1_100_000, 4_400_000).with_cache_read(550_000),
    ),
    ("o3-pro", Price::tokens(20_000_000, 80_000_000)),
    (
        "o4-mini",
        Price::tokens(1_100_000, 4_400_000).with_cache_read(275_000),
    ),
    ("text-embedding-3-small", Price::tokens(20_000, 0)),
    ("text-embedding-3-large", Price::tokens(130_000, 0)),
    // Anthropic — https://platform.claude.com/docs/en/about-claude/pricing (read 2026-11);
    // Claude 3.5 Sonnet from the same table before its retirement.
    ("claude-opus-5", claude(5_000_000, 25_000_000)),
    ("claude-opus-4-8", claude(5_000_000, 25_000_000)),
    ("claude-opus-4-7", claude(5_000_000, 25_000_000)),
    ("claude-opus-4-6", claude(5_000_000, 25_000_000)),
    ("claude-opus-4-5", claude(5_000_000, 25_000_000)),
    ("claude-opus-4-1", claude(15_000_000, 75_000_000)),
    ("claude-opus-4", claude(15_000_000, 75_000_000)),
    ("claude-sonnet-5", claude(2_000_000, 10_000_000)),
    ("claude-sonnet-4-6", claude(3_000_000, 15_000_000)),
    ("claude-sonnet-4-5", claude(3_000_000, 15_000_000)),
    ("claude-sonnet-4", claude(3_000_000, 15_000_000)),
    ("claude-haiku-4-5", claude(1_000_000, 5_000_000)),
    ("claude-3-7-sonnet", claude(3_000_000, 15_000_000)),
    ("claude-3-5-sonnet", claude(3_000_000, 15_000_000)),
    ("claude-3-5-haiku", claude(800_000, 4_000_000)),
    ("claude-3-opus", claude(15_000_000, 75_000_000)),
    // Claude 3 Haiku's cache prices are not the 1.25× / 0.1× rule: $0.30 and $0.03.
    (
        "claude-3-haiku",
        Price::tokens(250_000, 1_250_000)
            .with_cache_write(300_000)
            .with_cache_read(30_000),
    ),
    // Google — https://ai.google.dev/gemini-api/docs/pricing (paid tier, Standard, text input,
    // prompts up to 200k tokens; read 2026-11). Output includes thinking tokens.
    (
        "gemini-2.5-pro",
        Price::tokens(1_250_000, 10_000_000).with_cache_read(125_000),
    ),
    (
        "gemini-2.5-flash",
        Price::tokens(300_000, 2_500_000).with_cache_read(30_000),
    ),
    (
        "gemini-2.5-flash-lite",
        Price::tokens(100_000, 400_000).with_cache_read(10_000),
    ),
    (
        "gemini-2.0-flash",
        Price::tokens(100_000, 400_000).with_cache_read(25_000),
    ),
    ("gemini-2.0-flash-lite", Price::tokens(75_000, 300_000)),
    // Mistral — https://mistral.ai/pricing as reported in 2026 (Large 3 and Small 3.x/4); the
    // family key keeps Large 2's dearer price for older snapshots.
    ("mistral-large", Price::tokens(2_000_000, 6_000_000)),
    ("mistral-large-2512", Price::tokens(500_000, 1_500_000)),
    ("mistral-large-latest", Price::tokens(500_000, 1_500_000)),
    ("mistral-small", Price::tokens(100_000, 300_000)),
    // Cohere — https://cohere.com/pricing (per-token table, 2026). The bare `command-r` and
    // `command-r-plus` aliases take the dearer 2024 snapshots' prices.
    ("command-a", Price::tokens(2_500_000, 10_000_000)),
    ("command-r-plus", Price::tokens(3_000_000, 15_000_000)),
    (
        "command-r-plus-08-2024",
        Price::tokens(2_500_000, 10_000_000),
    ),
    ("command-r", Price::tokens(500_000, 1_500_000)),
    ("command-r-08-2024", Price::tokens(150_000, 600_000)),
    ("command-r7b", Price::tokens(37_500, 150_000)),
    // Llama on Groq — https://groq.com/pricing (2026).
    ("llama-3.3-70b-versatile", Price::tokens(590_000, 790_000)),
    ("llama-3.1-8b-instant", Price::tokens(50_000, 80_000)),
];

/// The built-in list as a table (for listings and tests; lookups read the list directly).
pub fn builtin_prices() -> PriceTable {
    BUILTIN_PRICES
        .iter()
        .map(|(model, price)| (model.to_string(), *price))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn builtin(model: &str) -> Price {
        *price_for(&PriceTable::new(), model).unwrap()
    }

    fn err_param(e: RelayError) -> String {
        e.param().unwrap_or_default().to_string()
    }

    // ---- each provider's usage shape -------------------------------------------------------

    #[test]
    fn openai_cached_tokens_are_inside_the_prompt_and_billed_once() {
        // 10k prompt tokens of which 6k cached; 2k output of which 500 reasoning.
        let usage = Usage::from_inclusive(10_000, 2_000, 6_000, 0, 500);
        let price = builtin("gpt-4o");
        // 4000 × $2.50 + 6000 × $1.25 + 2000 × $10 per million = $0.0375.
        assert_eq!(cost_micros(&usage, &price, &[]), 37_500);
        // Reasoning is part of the output already: knowing about it changes nothing.
        let without_detail = Usage::from_inclusive(10_000, 2_000, 6_000, 0, 0);
        assert_eq!(cost_micros(&without_detail, &price, &[]), 37_500);
    }

    #[test]
    fn anthropic_cache_reads_and_writes_are_their_own_classes() {
        // Anthropic reports input beside cache reads and writes.
        let usage = Usage::from_exclusive(1_000, 500, 20_000, 4_000);
        let price = builtin("claude-sonnet-4-5-20250929");
        assert_eq!(price.cache_write_price(), 3_750_000);
        assert_eq!(price.cache_read_price(), 300_000);
        // 1000 × $3 + 20000 × $0.30 + 4000 × $3.75 + 500 × $15 per million.
        assert_eq!(cost_micros(&usage, &price, &[]), 31_500);
    }

    #[test]
    fn gemini_thoughts_are_output_inside_the_completion() {
        // usageMetadata: promptTokenCount 12013 (cachedContentTokenCount 11243),
        // candidatesTokenCount 15, thoughtsTokenCount 73 — decoded as formats/gemini.rs does.
        let usage = Usage::from_inclusive(12_013, 15 + 73, 11_243, 0, 73);
        let price = builtin("gemini-2.5-flash");
        // 770 × $0.30 + 11243 × $0.03 + 88 × $2.50 = 231 + 337.29 + 220 = 788.29 micro-units.
        assert_eq!(cost_micros(&usage, &price, &[]), 789);
    }

    #[test]
    fn cohere_and_mistral_have_no_cache_prices_so_cached_tokens_cost_input() {
        // Cohere reports 512 of 540 prompt tokens as cached, but lists no cache price.
        let usage = Usage::from_inclusive(540, 58, 512, 0, 0);
        let price = builtin("command-r-08-2024");
        // 540 × $0.15 + 58 × $0.60 = 81 + 34.8 micro-units.
        assert_eq!(cost_micros(&usage, &price, &[]), 116);
        let small = builtin("mistral-small-2506");
        assert_eq!(cost_micros(&Usage::new(1_000, 1_000), &small, &[]), 400);
    }

    // ---- rounding and multipliers ----------------------------------------------------------

    #[test]
    fn a_fraction_of_a_micro_unit_rounds_up() {
        let price = builtin("gpt-4o-mini");
        assert_eq!(cost_micros(&Usage::new(1, 0), &price, &[]), 1);
        assert_eq!(cost_micros(&Usage::new(6, 0), &price, &[]), 1);
        assert_eq!(cost_micros(&Usage::new(7, 0), &price, &[]), 2);
        assert_eq!(cost_micros(&Usage::new(0, 0), &price, &[]), 0);
    }

    #[test]
    fn multipliers_multiply_and_round_once() {
        let usage = Usage::from_inclusive(10_000, 2_000, 6_000, 0, 500);
        let price = builtin("gpt-4o");
        // Tenant 1.5× and group 0.8×: 1.2× of 37500.
        assert_eq!(cost_micros(&usage, &price, &[1_500_000, 800_000]), 45_000);
        assert_eq!(
            cost_micros(&usage, &price, &[Multiplier::ONE.ppm()]),
            37_500
        );
        assert_eq!(cost_micros(&usage, &price, &[0, 1_500_000]), 0);
        // One micro-unit × 1.5 × 0.6 is 0.9 → 1. Rounding after each factor would say
        // ⌈⌈1.5⌉ × 0.6⌉ = 2.
        let one_micro = Price::tokens(1_000_000, 0);
        let u = Usage::new(1, 0);
        assert_eq!(cost_micros(&u, &one_micro, &[1_500_000, 600_000]), 1);
        // The order of the factors does not matter.
        let a = cost_micros(&usage, &price, &[1_234_567, 7_654_321, 999_999]);
        let b = cost_micros(&usage, &price, &[999_999, 1_234_567, 7_654_321]);
        assert_eq!(a, b);
        // 37500 × 1.234567 × 7.654321 × 0.999999 = 354366.09…
        assert_eq!(a, 354_367);
    }

    #[test]
    fn zero_usage_costs_only_the_request_fee() {
        let price = Price {
            request: 2_000,
            ..builtin("gpt-4.1")
        };
        assert_eq!(cost_micros(&Usage::default(), &price, &[]), 2_000);
        assert_eq!(cost_micros(&Usage::default(), &price, &[1_500_000]), 3_000);
        assert_eq!(cost_micros(&Usage::default(), &builtin("gpt-4.1"), &[]), 0);
        assert_eq!(worst_case_cost_micros(0, 0, &price, &[]), 2_000);
    }

    #[test]
    fn huge_counts_saturate_instead_of_wrapping() {
        let max = Price {
            input: MAX_PRICE,
            output: MAX_PRICE,
            cache_read: Some(MAX_PRICE),
            cache_write: Some(MAX_PRICE),
            request: MAX_PRICE,
        };
        let usage = Usage::from_exclusive(u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(cost_micros(&usage, &max, &[]), u64::MAX);
        assert_eq!(
            cost_micros(&usage, &max, &[Multiplier::MAX_PPM; 4]),
            u64::MAX
        );
        assert_eq!(
            worst_case_cost_micros(u64::MAX, u64::MAX, &max, &[]),
            u64::MAX
        );
        // Prices nobody validated, and more multipliers than the arithmetic holds: no panic,
        // and the answer errs high, as every overflow does.
        let absurd = Price {
            input: u64::MAX,
            output: u64::MAX,
            cache_read: Some(u64::MAX),
            cache_write: Some(u64::MAX),
            request: u64::MAX,
        };
        assert_eq!(cost_micros(&usage, &absurd, &[u64::MAX; 8]), u64::MAX);
        assert_eq!(cost_micros(&Usage::new(1, 0), &absurd, &[7; 9]), u64::MAX);
    }

    #[test]
    fn large_but_representable_costs_stay_exact() {
        let price = builtin("claude-opus-4-1");
        let usage = Usage::new(0, 1_000_000_000_000);
        assert_eq!(cost_micros(&usage, &price, &[]), 75_000_000_000_000);
        // 7.5e13 × 1.000001² = 75000150000075 exactly.
        let scaled = cost_micros(&usage, &price, &[1_000_001, 1_000_001]);
        assert_eq!(scaled, 75_000_150_000_075);
        // 1e19 tokens at $1 per million times 1.000001³: the product needs more than 128 bits
        // before the division, and the result still fits u64 exactly.
        let dollar = Price::tokens(1_000_000, 0);
        let usage = Usage::new(10_000_000_000_000_000_000, 0);
        assert_eq!(
            cost_micros(&usage, &dollar, &[1_000_001; 3]),
            10_000_030_000_030_000_010
        );
    }

    #[test]
    fn the_reservation_is_never_below_what_the_request_can_cost() {
        let price = builtin("claude-sonnet-4-5");
        let worst = worst_case_cost_micros(10_000, 1_000, &price, &[1_200_000]);
        // All input at the cache-write price ($3.75), output at $15: (37500 + 15000) × 1.2.
        assert_eq!(worst, 63_000);
        for cached in [0, 2_500, 5_000, 10_000] {
            for written in [0, 2_500, 10_000 - cached]
                .into_iter()
                .filter(|w| cached + w <= 10_000)
            {
                let usage =
                    Usage::from_exclusive(10_000 - cached - written, 1_000, cached, written);
                assert!(cost_micros(&usage, &price, &[1_200_000]) <= worst);
            }
        }
        // Even a cache read dearer than input (an odd override) is covered.
        let odd = Price::tokens(1_000_000, 0).with_cache_read(9_000_000);
        let used = cost_micros(&Usage::from_inclusive(100, 0, 100, 0, 0), &odd, &[]);
        assert!(worst_case_cost_micros(100, 0, &odd, &[]) >= used);
    }

    #[test]
    fn mul_div_ceil_is_exact_beyond_128_bits() {
        for (a, b, d) in [(7u128, 3u128, 2u128), (10, 10, 5), (0, 9, 4), (1, 1, 3)] {
            assert_eq!(mul_div_ceil(a, b, d), Some((a * b).div_ceil(d)));
        }
        assert_eq!(
            mul_div_ceil(u128::MAX, u128::MAX, u128::MAX),
            Some(u128::MAX)
        );
        assert_eq!(mul_div_ceil(1 << 127, 4, 8), Some(1 << 126));
        assert_eq!(mul_div_ceil(u128::MAX, 2, 3), Some(u128::MAX / 3 * 2));
        assert_eq!(mul_div_ceil(u128::MAX, 2, 7), Some((u128::MAX / 7) * 2 + 1));
        assert_eq!(mul_div_ceil(u128::MAX, 2, 1), None);
        assert_eq!(mul_div_ceil(u128::MAX, u128::MAX, u128::MAX - 1), None);
        assert_eq!(mul_div_ceil(5, 5, 0), None);
        let (hi, lo) = widening_mul(u128::MAX, u128::MAX);
        assert_eq!((hi, lo), (u128::MAX - 1, 1));
    }

    // ---- lookup ----------------------------------------------------------------------------

    #[test]
    fn dated_and_versioned_names_take_their_family_price() {
        let t = PriceTable::new();
        let key = |model: &str| resolve(&t, model).map(|m| m.key);
        assert_eq!(key("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(key("gpt-4o-mini-2024-07-18"), Some("gpt-4o-mini"));
        assert_eq!(key("claude-sonnet-4-5@20250929"), Some("claude-sonnet-4-5"));
        assert_eq!(key("claude-sonnet-4-5-20250929"), Some("claude-sonnet-4-5"));
        assert_eq!(key("claude-sonnet-4-20250514"), Some("claude-sonnet-4"));
        assert_eq!(key("claude-sonnet-4@20250514"), Some("claude-sonnet-4"));
        assert_eq!(key("claude-opus-4-1-20250805"), Some("claude-opus-4-1"));
        assert_eq!(key("claude-3-5-haiku-latest"), Some("claude-3-5-haiku"));
        assert_eq!(key("o3-pro-2025-06-10"), Some("o3-pro"));
        assert_eq!(key("o3-2025-04-16"), Some("o3"));
        assert_eq!(
            key("gemini-2.5-flash-lite-preview-09-2025"),
            Some("gemini-2.5-flash-lite")
        );
        assert_eq!(key("gpt-4.1-mini-2025-04-14"), Some("gpt-4.1-mini"));
        assert_eq!(key("mistral-large-2411"), Some("mistral-large"));
        assert_eq!(key("command-r7b-12-2024"), Some("command-r7b"));
        assert_eq!(key("some-model:free"), None);
    }

    #[test]
    fn a_prefix_counts_only_at_a_boundary() {
        let t = PriceTable::new();
        assert!(price_for(&t, "gpt-4omni").is_none());
        assert!(price_for(&t, "o30").is_none());
        assert!(price_for(&t, "gpt-4").is_none());
        assert!(price_for(&t, "").is_none());
        assert!(price_for(&t, "-").is_none());
        assert!(price_for(&t, "gpt-4o\u{e9}").is_none());
        assert_eq!(
            resolve(&t, "command-r7b").map(|m| m.key),
            Some("command-r7b")
        );
        let mut custom = PriceTable::new();
        custom.insert(String::new(), Price::tokens(1, 1));
        assert!(
            price_for(&custom, "-x").is_none(),
            "an empty key prices nothing"
        );
    }

    #[test]
    fn an_exact_name_beats_its_family() {
        // The May 2024 snapshot kept its launch price, double today's gpt-4o.
        assert_eq!(builtin("gpt-4o-2024-05-13").input, 5_000_000);
        assert_eq!(builtin("gpt-4o-2024-11-20").input, 2_500_000);
        // Cohere's bare aliases are priced as the dearer snapshot; the dated ones as listed.
        assert_eq!(builtin("command-r").input, 500_000);
        assert_eq!(builtin("command-r-08-2024").input, 150_000);
        assert_eq!(builtin("command-r-plus-08-2024").output, 10_000_000);
        assert_eq!(builtin("mistral-large-latest").input, 500_000);
    }

    #[test]
    fn the_operators_table_overrides_the_built_ins() {
        let mut custom = PriceTable::new();
        custom.insert("gpt-4o".into(), Price::tokens(1_000_000, 4_000_000));
        custom.insert("my-finetune".into(), Price::tokens(7, 8));
        let m = resolve(&custom, "gpt-4o-2024-08-06").unwrap();
        assert_eq!(
            (m.key, m.source, m.price.input),
            ("gpt-4o", SOURCE_CUSTOM, 1_000_000)
        );
        // A more precise built-in key still wins over a custom family key.
        assert_eq!(
            resolve(&custom, "gpt-4o-mini").map(|m| (m.key, m.source)),
            Some(("gpt-4o-mini", SOURCE_BUILTIN))
        );
        let m = resolve(&custom, "gpt-4.1").unwrap();
        assert_eq!((m.key, m.source), ("gpt-4.1", SOURCE_BUILTIN));
        assert_eq!(
            price_for(&custom, "my-finetune-v2").map(|p| p.output),
            Some(8)
        );
    }

    // ---- the built-in list -----------------------------------------------------------------

    #[test]
    fn built_ins_are_valid_unique_and_follow_anthropics_cache_rule() {
        let table = builtin_prices();
        assert_eq!(table.len(), BUILTIN_PRICES.len(), "a key is listed twice");
        for (model, price) in &table {
            assert_eq!(price.oversized_field(), None, "{model}");
            assert!(check_model_key(model).is_ok(), "{model}");
            assert_eq!(model.to_lowercase(), *model);
            assert!(price.input > 0, "{model}");
        }
        // The official table's numbers, for a sample of models.
        let opus = builtin("claude-opus-4-5");
        assert_eq!(
            (opus.input, opus.cache_write, opus.cache_read, opus.output),
            (5_000_000, Some(6_250_000), Some(500_000), 25_000_000)
        );
        let haiku = builtin("claude-3-5-haiku");
        assert_eq!(
            (haiku.cache_write, haiku.cache_read),
            (Some(1_000_000), Some(80_000))
        );
        for (model, price) in BUILTIN_PRICES {
            if model.starts_with("claude-") && *model != "claude-3-haiku" {
                assert_eq!(price.cache_write_price() * 4, price.input * 5, "{model}");
                assert_eq!(price.cache_read_price() * 10, price.input, "{model}");
            }
        }
    }

    #[test]
    fn the_listing_merges_with_custom_entries_winning() {
        let mut custom = PriceTable::new();
        custom.insert("gpt-4o".into(), Price::tokens(1, 2));
        custom.insert("aaa-local".into(), Price::tokens(3, 4));
        let listing = merged_listing(&custom);
        assert_eq!(listing.len(), BUILTIN_PRICES.len() + 1);
        assert_eq!(
            listing[0],
            ("aaa-local".to_string(), Price::tokens(3, 4), SOURCE_CUSTOM)
        );
        let gpt = listing.iter().find(|(m, _, _)| m == "gpt-4o").unwrap();
        assert_eq!((gpt.1, gpt.2), (Price::tokens(1, 2), SOURCE_CUSTOM));
        let names: Vec<&str> = listing.iter().map(|(m, _, _)| m.as_str()).collect();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        let views = PriceView::listing(&custom);
        let v = serde_json::to_value(&views[0]).unwrap();
        assert_eq!(
            v,
            json!({"model": "aaa-local", "price": {"input": 3, "output": 4, "request": 0},
                   "source": "custom"})
        );
        let v = serde_json::to_value(views.iter().find(|v| v.model == "o3").unwrap()).unwrap();
        assert_eq!(v["source"], "builtin");
        assert_eq!(v["price"]["cache_read"], 500_000);
    }

    // ---- stored tables and admin input -----------------------------------------------------

    #[test]
    fn the_kv_table_round_trips_and_is_checked() {
        let text = r#"{"gpt-4o": {"input": 2000000, "output": 8000000, "cache_read": 1000000},
                       "my-model": {"input": 1, "output": 2, "request": 500}}"#;
        let table = parse_price_table(text).unwrap();
        assert_eq!(table["my-model"].request, 500);
        assert_eq!(table["gpt-4o"].cache_write_price(), 2_000_000);
        let again = parse_price_table(&serde_json::to_string(&table).unwrap()).unwrap();
        assert_eq!(again, table);
        assert!(parse_price_table("{}").unwrap().is_empty());
        let e = parse_price_table(r#"{"m": {"input": 1, "output": 2, "cache": 3}}"#).unwrap_err();
        assert!(e.contains("cache"), "{e}");
        let e = parse_price_table(r#"{"m": {"input": 1, "output": 2000000000001}}"#).unwrap_err();
        assert!(e.contains("m.output"), "{e}");
        assert!(parse_price_table(r#"{"m": {"input": -1, "output": 2}}"#).is_err());
        assert!(parse_price_table(r#"{" ": {"input": 1, "output": 2}}"#).is_err());
        assert!(parse_price_table("[]").is_err());
    }

    #[test]
    fn admin_prices_are_checked_field_by_field() {
        let p =
            parse_price(br#"{"input": 2500000, "output": 10000000, "cache_read": null}"#).unwrap();
        assert_eq!(p, Price::tokens(2_500_000, 10_000_000));
        let p = parse_price(
            br#"{"input": 0, "output": 0, "cache_read": 1, "cache_write": 2, "request": 3}"#,
        )
        .unwrap();
        assert_eq!(
            (p.cache_read, p.cache_write, p.request),
            (Some(1), Some(2), 3)
        );

        let cases: [(&[u8], &str, u16); 10] = [
            (br#"{"input": -1, "output": 1}"#, "input", 400),
            (br#"{"input": 1, "output": 2.5}"#, "output", 400),
            (br#"{"input": 1, "output": "5"}"#, "output", 400),
            (
                br#"{"input": 1, "output": 1, "cache_write": 1000000000001}"#,
                "cache_write",
                400,
            ),
            (
                br#"{"input": 1, "output": 1, "cache_read": -3}"#,
                "cache_read",
                400,
            ),
            (
                br#"{"input": 1, "output": 1, "request": true}"#,
                "request",
                400,
            ),
            (br#"{"input": 1, "output": 1, "inptu": 1}"#, "inptu", 400),
            (br#"{"input": 1}"#, "output", 400),
            (br#"{"output": 1, "input": null}"#, "input", 400),
            (b"  ", "input", 400),
        ];
        for (body, param, status) in cases {
            let e = parse_price(body).unwrap_err();
            assert_eq!(e.status(), status);
            assert_eq!(err_param(e), param, "{}", String::from_utf8_lossy(body));
        }
        let e = parse_price(br#"{"input": 1, "output": 1000000000001}"#).unwrap_err();
        assert!(e.message().contains("1000000000000"), "{}", e.message());
        assert!(matches!(
            parse_price(b"[1]"),
            Err(RelayError::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_price(b"{"),
            Err(RelayError::InvalidJson { .. })
        ));
    }

    #[test]
    fn multipliers_are_checked_and_name_their_param() {
        assert_eq!(
            parse_multiplier(&json!(1_500_000), "multiplier"),
            Ok(Multiplier::from_ppm(1_500_000).unwrap())
        );
        assert_eq!(parse_multiplier(&json!(0), "m").map(Multiplier::ppm), Ok(0));
        assert_eq!(
            parse_multiplier(&json!(100_000_000), "m").map(Multiplier::ppm),
            Ok(100_000_000)
        );
        for bad in [
            json!(100_000_001),
            json!(-1),
            json!(1.5),
            json!("1.5"),
            json!(null),
        ] {
            let e = parse_multiplier(&bad, "groups.cheap.multiplier").unwrap_err();
            assert_eq!(e.status(), 400);
            assert_eq!(err_param(e), "groups.cheap.multiplier", "{bad}");
        }
        let e = parse_multiplier(&json!(200_000_000), "multiplier").unwrap_err();
        assert!(e.message().contains("1000000 is 1.0x"), "{}", e.message());
        // Stored multipliers are checked as they are read back.
        assert!(serde_json::from_value::<Multiplier>(json!(100_000_001)).is_err());
        let m: Multiplier = serde_json::from_value(json!(250_000)).unwrap();
        assert_eq!(serde_json::to_value(m).unwrap(), json!(250_000));
        assert_eq!(Multiplier::default(), Multiplier::ONE);
    }

    #[test]
    fn model_keys_are_names_without_spaces() {
        assert!(check_model_key("claude-sonnet-4-5@20250929").is_ok());
        assert!(check_model_key("accounts/fireworks/models/llama-v3p1-8b").is_ok());
        for bad in ["", "gpt 4o", "a\nb", &"x".repeat(201)] {
            assert_eq!(err_param(check_model_key(bad).unwrap_err()), "model");
        }
    }

    #[test]
    fn a_pricer_reserves_at_least_what_it_settles() {
        let p = Pricer::new(&PriceTable::new(), "gpt-4o-2024-08-06", vec![1_500_000]);
        assert!(p.price.is_some());
        let usage = Usage::from_inclusive(1000, 200, 400, 0, 50);
        assert!(p.worst_case(1000, 200) >= p.cost(&usage));
        assert!(p.cost(&usage) > 0);
        let unpriced = Pricer::new(&PriceTable::new(), "my-private-model", vec![]);
        assert_eq!((unpriced.cost(&usage), unpriced.worst_case(10, 10)), (0, 0));
    }
}
