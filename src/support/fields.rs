//! A request body as a JSON object holding only the fields it may have.

use serde_json::{Map, Value};

use crate::error::RelayError;

/// An admin body as a JSON object with only `allowed` fields (an empty body is `{}`).
pub fn parse_object(bytes: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, RelayError> {
    let map = parse_any_object(bytes)?;
    refuse_unknown(&map, allowed)?;
    Ok(map)
}

/// An admin body as a JSON object, whatever its fields (an empty body is `{}`).
pub fn parse_any_object(bytes: &[u8]) -> Result<Map<String, Value>, RelayError> {
    let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(bytes).map_err(|e| RelayError::InvalidJson {
            detail: e.to_string(),
        })?
    };
    let Value::Object(map) = value else {
        return Err(RelayError::InvalidJson {
            detail: "the body must be a JSON object".into(),
        });
    };
    Ok(map)
}

/// A 400 naming the first field not in `allowed`, and what is.
pub fn refuse_unknown(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), RelayError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(RelayError::invalid_value(
            unknown,
            format!("unknown field; expected one of {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}
