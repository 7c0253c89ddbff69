//! Reading an admin body field by field, so a mistake comes back as a 400 naming the field;
//! unknown fields are refused, because a misspelt limit silently ignored is worse than an error.
//! The read-only fields a GET shows are accepted on a write (see [`ReadOnly`]), so whatever an
//! operator reads can be written back as it is.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::admin::config::LEASE_MS_RANGE;
use crate::error::RelayError;
use crate::governance::budget::{self, Budget};
use crate::governance::grant::Status;
use crate::governance::limits::{self, Limits};
use crate::governance::rules::{self, AccessRules};
use crate::routing::breaker::BreakerConfig;
use crate::support::fields::{parse_any_object, parse_object, refuse_unknown};

// ---- admin input ----------------------------------------------------------------------------

/// A field that a resource's GET shows and its PUT/PATCH does not set.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOnly {
    /// Kept by the relay (timestamps, counts, what is derived from a write-only secret):
    /// ignored whatever it says, since a copy read a moment ago may already be stale and still
    /// means no change.
    Ignored(&'static str),
    /// An identity, or a setting this route cannot change: accepted when it equals the stored
    /// value, refused with a 400 saying `why` when it would change it, so a write that means
    /// to change it is never silently dropped.
    Fixed {
        field: &'static str,
        stored: Value,
        why: &'static str,
    },
}

impl ReadOnly {
    pub fn field(&self) -> &'static str {
        match self {
            ReadOnly::Ignored(field) | ReadOnly::Fixed { field, .. } => field,
        }
    }

    /// `Ok` when `value`, sent for this field, changes nothing.
    fn check(&self, value: &Value) -> Result<(), RelayError> {
        match self {
            ReadOnly::Ignored(_) => Ok(()),
            ReadOnly::Fixed { stored, .. } if value == stored => Ok(()),
            ReadOnly::Fixed { field, why, .. } => Err(RelayError::invalid_value(field, *why)),
        }
    }
}

/// Field access over a JSON object with errors that name the field.
pub struct Fields {
    pub map: Map<String, Value>,
}

impl Fields {
    pub fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Fields, RelayError> {
        Ok(Fields {
            map: parse_object(bytes, allowed)?,
        })
    }

    /// A write's body: `allowed` fields, and the `read_only` ones checked and then dropped. An
    /// unknown field is refused naming the fields a write takes.
    pub fn parse_write(
        bytes: &[u8],
        allowed: &[&str],
        read_only: &[ReadOnly],
    ) -> Result<Fields, RelayError> {
        let mut map = parse_any_object(bytes)?;
        let mut shown = Vec::new();
        for field in read_only {
            if let Some(value) = map.remove(field.field()) {
                shown.push((field, value));
            }
        }
        refuse_unknown(&map, allowed)?;
        for (field, value) in shown {
            field.check(&value)?;
        }
        Ok(Fields { map })
    }

    pub fn has(&self, field: &str) -> bool {
        self.map.contains_key(field)
    }

    pub fn string(&self, field: &str) -> Result<Option<String>, RelayError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(RelayError::invalid_type(field, "a string")),
        }
    }

    pub fn required_name(&self, field: &str) -> Result<String, RelayError> {
        let name = self
            .string(field)?
            .ok_or_else(|| RelayError::missing(field))?;
        check_name(field, &name)?;
        Ok(name)
    }

    pub fn string_list(&self, field: &str) -> Result<Option<Vec<String>>, RelayError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if !s.trim().is_empty() && s.len() <= 256 => {
                            out.push(s.trim().to_string())
                        }
                        Value::String(_) => {
                            return Err(RelayError::invalid_value(
                                &format!("{field}[{i}]"),
                                "must be 1 to 256 characters",
                            ))
                        }
                        _ => {
                            return Err(RelayError::invalid_type(
                                &format!("{field}[{i}]"),
                                "a string",
                            ))
                        }
                    }
                }
                out.dedup();
                Ok(Some(out))
            }
            Some(_) => Err(RelayError::invalid_type(field, "an array of strings")),
        }
    }

    /// A list of secrets (upstream keys, service-account files): longer than names may be, and
    /// never echoed back in an error.
    pub fn secret_list(&self, field: &str) -> Result<Option<Vec<String>>, RelayError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) if !s.trim().is_empty() && s.len() <= 16 * 1024 => {
                        Ok(s.trim().to_string())
                    }
                    Value::String(_) => Err(RelayError::invalid_value(
                        &format!("{field}[{i}]"),
                        "must be 1 to 16384 characters",
                    )),
                    _ => Err(RelayError::invalid_type(
                        &format!("{field}[{i}]"),
                        "a string",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(RelayError::invalid_type(field, "an array of strings")),
        }
    }

    pub fn limits(&self) -> Result<Option<Limits>, RelayError> {
        match self.map.get("limits") {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(Limits::default())),
            Some(v) => limits::parse_limits(v, "limits").map(Some),
        }
    }

    pub fn rules(&self) -> Result<Option<AccessRules>, RelayError> {
        match self.map.get("rules") {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(AccessRules::default())),
            Some(v) => rules::parse(v).map(Some).map_err(|e| e.prefixed("rules.")),
        }
    }

    pub fn boolean(&self, field: &str) -> Result<Option<bool>, RelayError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(RelayError::invalid_type(field, "a boolean")),
        }
    }

    /// `None`: absent; `Some(None)`: `null` (list price).
    pub fn multiplier(&self) -> Result<Option<Option<u64>>, RelayError> {
        match self.map.get("price_multiplier_ppm") {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => crate::ledger::pricing::parse_multiplier(v, "price_multiplier_ppm")
                .map(|m| Some(Some(m.ppm()))),
        }
    }

    /// `None`: absent; `Some(None)`: `null` (off).
    pub fn cache_ttl(&self) -> Result<Option<Option<u32>>, RelayError> {
        if !self.has("cache_ttl_s") {
            return Ok(None);
        }
        match self.integer("cache_ttl_s")? {
            None => Ok(Some(None)),
            Some(s) if (1..=i64::from(crate::ledger::response_cache::MAX_TTL_S)).contains(&s) => {
                Ok(Some(Some(s as u32)))
            }
            Some(_) => Err(RelayError::invalid_value(
                "cache_ttl_s",
                "must be between 1 and 86400 (seconds), or null to turn caching off",
            )),
        }
    }

    /// `None`: absent; `Some(None)`: `null` (the defaults).
    pub fn breaker(&self) -> Result<Option<Option<BreakerConfig>>, RelayError> {
        let value = match self.map.get("breaker") {
            None => return Ok(None),
            Some(Value::Null) => return Ok(Some(None)),
            Some(v) => v,
        };
        let allowed = [
            "window_ms",
            "min_requests",
            "failure_percent",
            "cooldown_ms",
            "max_cooldown_ms",
        ];
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        let f = Fields::parse(&bytes, &allowed).map_err(|e| e.prefixed("breaker."))?;
        let mut b = BreakerConfig::default();
        let field = |name: &str, lo: i64, hi: i64| -> Result<Option<i64>, RelayError> {
            match f.integer(name).map_err(|e| e.prefixed("breaker."))? {
                Some(v) if !(lo..=hi).contains(&v) => Err(RelayError::invalid_value(
                    &format!("breaker.{name}"),
                    format!("must be between {lo} and {hi}"),
                )),
                v => Ok(v),
            }
        };
        let hour = 3_600_000;
        if let Some(v) = field("window_ms", 1_000, hour)? {
            b.window_ms = v;
        }
        if let Some(v) = field("min_requests", 1, 100_000)? {
            b.min_requests = v as u32;
        }
        if let Some(v) = field("failure_percent", 1, 100)? {
            b.failure_percent = v as u32;
        }
        if let Some(v) = field("cooldown_ms", 100, hour)? {
            b.cooldown_ms = v;
        }
        if let Some(v) = field("max_cooldown_ms", 100, 24 * hour)? {
            b.max_cooldown_ms = v;
        }
        if b.max_cooldown_ms < b.cooldown_ms {
            return Err(RelayError::invalid_value(
                "breaker.max_cooldown_ms",
                "must not be below cooldown_ms",
            ));
        }
        Ok(Some(Some(b)))
    }

    /// `None`: absent; `Some(None)`: `null` (off).
    pub fn lease_ms(&self) -> Result<Option<Option<u64>>, RelayError> {
        if !self.has("lease_ms") {
            return Ok(None);
        }
        match self.integer("lease_ms")? {
            None => Ok(Some(None)),
            Some(ms) if ms >= 0 && LEASE_MS_RANGE.contains(&(ms as u64)) => {
                Ok(Some(Some(ms as u64)))
            }
            Some(_) => Err(RelayError::invalid_value(
                "lease_ms",
                format!(
                    "must be between {} and {} (ms), or null to turn lease mode off",
                    LEASE_MS_RANGE.start(),
                    LEASE_MS_RANGE.end()
                ),
            )),
        }
    }

    /// `None`: absent; `Some(None)`: `null` (no budget).
    pub fn budget(&self, allow_loopback_http: bool) -> Result<Option<Option<Budget>>, RelayError> {
        match self.map.get("budget") {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => {
                let b: Budget = serde_json::from_value(v.clone())
                    .map_err(|e| RelayError::invalid_value("budget", e.to_string()))?;
                budget::check_budget(&b, "budget", allow_loopback_http)?;
                Ok(Some(Some(b)))
            }
        }
    }

    pub fn integer(&self, field: &str) -> Result<Option<i64>, RelayError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| RelayError::invalid_type(field, "an integer")),
            Some(_) => Err(RelayError::invalid_type(field, "an integer")),
        }
    }

    /// An object of string values.
    pub fn options(&self) -> Result<Option<BTreeMap<String, String>>, RelayError> {
        match self.map.get("options") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => {
                let mut out = BTreeMap::new();
                for (k, v) in o {
                    match v {
                        Value::String(s) => out.insert(k.clone(), s.trim().to_string()),
                        _ => {
                            return Err(RelayError::invalid_type(
                                &format!("options.{k}"),
                                "a string",
                            ))
                        }
                    };
                }
                Ok(Some(out))
            }
            Some(_) => Err(RelayError::invalid_type("options", "an object of strings")),
        }
    }

    pub fn status(&self, field: &str) -> Result<Option<Status>, RelayError> {
        match self.string(field)?.as_deref() {
            None => Ok(None),
            Some("active") => Ok(Some(Status::Active)),
            Some("disabled") => Ok(Some(Status::Disabled)),
            Some(_) => Err(RelayError::invalid_value(
                field,
                "must be 'active' or 'disabled'",
            )),
        }
    }
}

pub fn check_name(field: &str, name: &str) -> Result<(), RelayError> {
    if name.is_empty() || name.chars().count() > 200 {
        return Err(RelayError::invalid_value(
            field,
            "must be 1 to 200 characters",
        ));
    }
    Ok(())
}
