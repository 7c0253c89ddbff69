//! Access rules of a relay key or tenant: which client addresses, countries and times of day may
//! use it — their admin validation and the per-request check.
//!
//! Pure: the caller passes the client address (the `CF-Connecting-IP` header), the country
//! (`request.cf.country`, absent off Cloudflare) and `now_ms` (Unix ms, UTC).
//!
//! Decisions worth knowing:
//! - Addresses are compared in one 128-bit space where an IPv4 address `a.b.c.d` *is*
//!   `::ffff:a.b.c.d`. So `10.0.0.0/8` and `::ffff:10.0.0.0/104` are the same rule, each matches
//!   both spellings of a client, `0.0.0.0/0` admits every IPv4 client and no native IPv6 one, and
//!   `::/0` admits everyone. Validation stores such a rule in its IPv4 form.
//! - A CIDR whose address has bits set beyond the prefix (`10.1.2.3/8`) is **rejected**, with the
//!   range it would have meant in the message: silently widening what an admin typed could grant
//!   far more than intended (they may have meant `/32`). A `/32` or `/128` is stored as the bare
//!   address; IPv6 is stored in RFC 5952 form (lower case, longest zero run compressed).
//! - Countries are two ASCII letters, stored upper case; Cloudflare's specials are accepted:
//!   `XX` (unknown country) and `T1` (Tor). `XX` counts as a country that is present: an allow
//!   list without it refuses such clients, and `countries_deny: ["XX"]` refuses them too.
//! - Times are "HH:MM", `00:00` to `23:59`; `24:00` is not accepted — a window running to the end
//!   of its day ends at `00:00` (end < start, so it crosses midnight and stops at the next day's
//!   00:00). A whole day on chosen days is two windows, `00:00–12:00` and `12:00–00:00`, since a
//!   window with start == end is rejected as empty.
//! - Offsets are fixed minutes east of UTC: daylight saving time is not modelled, so a window in
//!   local time moves by an hour twice a year unless the admin updates its offset.
//! - Checks run in the order addresses, countries, time; the first that fails is the denial.
//! - `check` trusts validated rules but stays safe on anything else: an entry that does not parse
//!   matches nothing (a list of only bad entries refuses everyone), it never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use crate::error::RelayError;

/// Most entries an `ip_allow` list may hold: every request scans the list.
pub const MAX_IP_ALLOW: usize = 1000;
/// Most entries a country list may hold (there are under 260 codes in all).
pub const MAX_COUNTRIES: usize = 300;
/// Most time windows one rule set may hold.
pub const MAX_WINDOWS: usize = 64;
/// Offsets run from UTC−12:00 to UTC+14:00, the extremes in use.
pub const MIN_UTC_OFFSET_MINUTES: i32 = -720;
pub const MAX_UTC_OFFSET_MINUTES: i32 = 840;

const MINUTES_PER_DAY: i64 = 24 * 60;
const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_DAY: i64 = MINUTES_PER_DAY * MS_PER_MINUTE;
/// Where IPv4 lives inside the 128-bit space: `::ffff:0:0/96`.
const V4_MAPPED_BASE: u128 = 0xffff_u128 << 32;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct AccessRules {
    /// Allowed client addresses: single IPv4/IPv6 addresses or CIDR ranges ("10.0.0.0/8",
    /// "2001:db8::/32"). Empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allow: Vec<String>,
    /// ISO 3166-1 alpha-2 codes, upper case. Empty allow = any; deny wins over allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries_deny: Vec<String>,
    /// Time windows in which use is allowed; empty = always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<TimeWindow>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeWindow {
    /// ISO weekdays 1 (Mon) ..= 7 (Sun); empty = every day.
    #[serde(default)]
    pub days: Vec<u8>,
    /// "HH:MM" 24h, start inclusive, end exclusive; end < start means the window crosses
    /// midnight (belongs to the start day).
    pub start: String,
    pub end: String,
    /// Minutes east of UTC, e.g. 60 for CET, -300 for EST; default 0.
    #[serde(default)]
    pub utc_offset_minutes: i32,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    IpNotAllowed,
    CountryNotAllowed,
    OutsideTimeWindow,
}

impl AccessRules {
    /// True when the rules admit everyone at every time, so callers can skip the check.
    pub fn is_open(&self) -> bool {
        self.ip_allow.is_empty()
            && self.countries_allow.is_empty()
            && self.countries_deny.is_empty()
            && self.windows.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Validation of admin input
// ---------------------------------------------------------------------------------------------

/// Validate admin input and return it normalised: addresses and ranges in canonical form,
/// country codes upper case, weekdays sorted, duplicates dropped, surrounding spaces trimmed.
/// The first problem comes back as (param, message), param like "ip_allow[2]",
/// "windows[0].start".
pub fn validate(rules: AccessRules) -> Result<AccessRules, RelayError> {
    if rules.ip_allow.len() > MAX_IP_ALLOW {
        return Err(RelayError::invalid_value(
            "ip_allow",
            format!("must have at most {MAX_IP_ALLOW} entries"),
        ));
    }
    let mut ip_allow: Vec<String> = Vec::with_capacity(rules.ip_allow.len());
    for (i, entry) in rules.ip_allow.iter().enumerate() {
        let net = Net::parse_rule(entry)
            .map_err(|m| RelayError::invalid_value(&format!("ip_allow[{i}]"), m))?;
        let canonical = net.to_string();
        if !ip_allow.contains(&canonical) {
            ip_allow.push(canonical);
        }
    }

    let countries_allow = validate_countries("countries_allow", &rules.countries_allow)?;
    let countries_deny = validate_countries("countries_deny", &rules.countries_deny)?;

    if rules.windows.len() > MAX_WINDOWS {
        return Err(RelayError::invalid_value(
            "windows",
            format!("must have at most {MAX_WINDOWS} entries"),
        ));
    }
    let mut windows: Vec<TimeWindow> = Vec::with_capacity(rules.windows.len());
    for (i, window) in rules.windows.iter().enumerate() {
        let window = validate_window(&format!("windows[{i}]"), window)?;
        if !windows.contains(&window) {
            windows.push(window);
        }
    }

    Ok(AccessRules {
        ip_allow,
        countries_allow,
        countries_deny,
        windows,
    })
}

fn validate_countries(field: &str, codes: &[String]) -> Result<Vec<String>, RelayError> {
    if codes.len() > MAX_COUNTRIES {
        return Err(RelayError::invalid_value(
            field,
            format!("must have at most {MAX_COUNTRIES} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(codes.len());
    for (i, code) in codes.iter().enumerate() {
        let code = code.trim().to_ascii_uppercase();
        let valid =
            code == "T1" || (code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()));
        if !valid {
            return Err(RelayError::invalid_value(
                &format!("{field}[{i}]"),
                "must be an ISO 3166-1 alpha-2 country code (two letters), or XX or T1",
            ));
        }
        if !out.contains(&code) {
            out.push(code);
        }
    }
    Ok(out)
}

fn validate_window(param: &str, window: &TimeWindow) -> Result<TimeWindow, RelayError> {
    let mut days = Vec::with_capacity(window.days.len());
    for (i, &day) in window.days.iter().enumerate() {
        if !(1..=7).contains(&day) {
            return Err(RelayError::invalid_value(
                &format!("{param}.days[{i}]"),
                "must be an ISO weekday from 1 (Monday) to 7 (Sunday)",
            ));
        }
        days.push(day);
    }
    days.sort_unstable();
    days.dedup();

    let start = window.start.trim();
    let start_minute = parse_hhmm(start).ok_or_else(|| bad_time(&format!("{param}.start")))?;
    let end = window.end.trim();
    let end_minute = parse_hhmm(end).ok_or_else(|| bad_time(&format!("{param}.end")))?;
    if start_minute == end_minute {
        return Err(RelayError::invalid_value(
            &format!("{param}.end"),
            "must differ from start; a window from a time to itself is empty",
        ));
    }

    let offset = window.utc_offset_minutes;
    if !(MIN_UTC_OFFSET_MINUTES..=MAX_UTC_OFFSET_MINUTES).contains(&offset) {
        return Err(RelayError::invalid_value(
            &format!("{param}.utc_offset_minutes"),
            format!(
                "must be from {MIN_UTC_OFFSET_MINUTES} to {MAX_UTC_OFFSET_MINUTES} minutes east of UTC"
            ),
        ));
    }

    Ok(TimeWindow {
        days,
        start: start.to_string(),
        end: end.to_string(),
        utc_offset_minutes: offset,
    })
}

fn bad_time(param: &str) -> RelayError {
    RelayError::invalid_value(
        param,
        "must be a 24-hour time \"HH:MM\" from 00:00 to 23:59",
    )
}

/// Minutes since midnight of an exact "HH:MM": two digits each, so "7:5" is refused rather
/// than guessed at.
fn parse_hhmm(text: &str) -> Option<i64> {
    let &[h1, h2, b':', m1, m2] = text.as_bytes() else {
        return None;
    };
    if ![h1, h2, m1, m2].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
    let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

// ---------------------------------------------------------------------------------------------
// Parsing admin JSON
// ---------------------------------------------------------------------------------------------

const RULE_FIELDS: &[&str] = &["ip_allow", "countries_allow", "countries_deny", "windows"];
const WINDOW_FIELDS: &[&str] = &["days", "start", "end", "utc_offset_minutes"];

/// Parse a rules object from admin JSON and validate it. Unknown fields are refused by name,
/// because a misspelt `ip_alow` silently ignored would leave a key open. `null` for a list
/// means empty.
pub fn parse(value: &Value) -> Result<AccessRules, RelayError> {
    let Value::Object(map) = value else {
        return Err(RelayError::invalid_value(
            "",
            "access rules must be a JSON object",
        ));
    };
    reject_unknown("", map, RULE_FIELDS)?;
    let rules = AccessRules {
        ip_allow: string_list(map, "ip_allow")?,
        countries_allow: string_list(map, "countries_allow")?,
        countries_deny: string_list(map, "countries_deny")?,
        windows: match map.get("windows") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                // Checked before parsing so a huge body is refused without building it.
                if items.len() > MAX_WINDOWS {
                    return Err(RelayError::invalid_value(
                        "windows",
                        format!("must have at most {MAX_WINDOWS} entries"),
                    ));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| parse_window(&format!("windows[{i}]"), item))
                    .collect::<Result<_, _>>()?
            }
            Some(_) => {
                return Err(RelayError::invalid_value(
                    "windows",
                    "must be an array of objects",
                ))
            }
        },
    };
    validate(rules)
}

fn reject_unknown(
    prefix: &str,
    map: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), RelayError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(RelayError::invalid_value(
            &format!("{prefix}{unknown}"),
            format!("unknown field; expected one of {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn string_list(map: &Map<String, Value>, field: &str) -> Result<Vec<String>, RelayError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(RelayError::invalid_value(
                    &format!("{field}[{i}]"),
                    "must be a string",
                )),
            })
            .collect(),
        Some(_) => Err(RelayError::invalid_value(
            field,
            "must be an array of strings",
        )),
    }
}

fn parse_window(param: &str, value: &Value) -> Result<TimeWindow, RelayError> {
    let Value::Object(map) = value else {
        return Err(RelayError::invalid_value(param, "must be an object"));
    };
    reject_unknown(&format!("{param}."), map, WINDOW_FIELDS)?;
    let days = match map.get("days") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_u64()
                    .and_then(|d| u8::try_from(d).ok())
                    .filter(|d| (1..=7).contains(d))
                    .ok_or_else(|| {
                        RelayError::invalid_value(
                            &format!("{param}.days[{i}]"),
                            "must be an ISO weekday from 1 (Monday) to 7 (Sunday)",
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(RelayError::invalid_value(
                &format!("{param}.days"),
                "must be an array of weekdays",
            ))
        }
    };
    let time = |field: &str| match map.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(RelayError::invalid_value(
            &format!("{param}.{field}"),
            "is required",
        )),
        Some(_) => Err(bad_time(&format!("{param}.{field}"))),
    };
    let start = time("start")?;
    let end = time("end")?;
    let utc_offset_minutes = match map.get("utc_offset_minutes") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .and_then(|m| i32::try_from(m).ok())
            .ok_or_else(|| {
                RelayError::invalid_value(
                    &format!("{param}.utc_offset_minutes"),
                    format!(
                        "must be an integer from {MIN_UTC_OFFSET_MINUTES} to {MAX_UTC_OFFSET_MINUTES}"
                    ),
                )
            })?,
    };
    Ok(TimeWindow {
        days,
        start,
        end,
        utc_offset_minutes,
    })
}

// ---------------------------------------------------------------------------------------------
// The per-request check
// ---------------------------------------------------------------------------------------------

/// May a client at `client_ip` in `country` use the key or tenant at `now_ms`? A missing or
/// unparseable address fails a non-empty allowlist; a missing country fails a non-empty allow
/// list but passes a deny list.
pub fn check(
    rules: &AccessRules,
    client_ip: Option<&str>,
    country: Option<&str>,
    now_ms: i64,
) -> Result<(), Denial> {
    if !ip_allowed(&rules.ip_allow, client_ip) {
        return Err(Denial::IpNotAllowed);
    }
    if !country_allowed(&rules.countries_allow, &rules.countries_deny, country) {
        return Err(Denial::CountryNotAllowed);
    }
    if !rules.windows.is_empty() && !rules.windows.iter().any(|w| window_contains(w, now_ms)) {
        return Err(Denial::OutsideTimeWindow);
    }
    Ok(())
}

fn ip_allowed(allow: &[String], client_ip: Option<&str>) -> bool {
    if allow.is_empty() {
        return true;
    }
    let Some(client) = client_ip.and_then(parse_client_ip) else {
        return false;
    };
    allow
        .iter()
        .filter_map(|rule| Net::parse_rule(rule).ok())
        .any(|net| net.contains(client))
}

/// The client address as a point in the unified 128-bit space.
fn parse_client_ip(text: &str) -> Option<u128> {
    text.trim().parse::<IpAddr>().ok().map(ip_to_u128)
}

fn country_allowed(allow: &[String], deny: &[String], country: Option<&str>) -> bool {
    let country = country.map(str::trim).filter(|c| !c.is_empty());
    let listed =
        |list: &[String], code: &str| list.iter().any(|c| c.trim().eq_ignore_ascii_case(code));
    match country {
        Some(code) if listed(deny, code) => false,
        Some(code) => allow.is_empty() || listed(allow, code),
        None => allow.is_empty(),
    }
}

fn window_contains(window: &TimeWindow, now_ms: i64) -> bool {
    let (Some(start), Some(end)) = (
        parse_hhmm(window.start.trim()),
        parse_hhmm(window.end.trim()),
    ) else {
        return false;
    };
    let local_ms = now_ms.saturating_add(i64::from(window.utc_offset_minutes) * MS_PER_MINUTE);
    let day_number = local_ms.div_euclid(MS_PER_DAY);
    let minute = local_ms.rem_euclid(MS_PER_DAY) / MS_PER_MINUTE;
    let today = iso_weekday(day_number);
    let on = |day: u8| window.days.is_empty() || window.days.contains(&day);
    if start < end {
        on(today) && (start..end).contains(&minute)
    } else {
        // Crossing midnight: the part after midnight belongs to the previous (start) day, so
        // a Sunday 22:00–02:00 window admits Monday 01:00 even when Monday is not listed.
        let yesterday = if today == 1 { 7 } else { today - 1 };
        (on(today) && minute >= start) || (on(yesterday) && minute < end)
    }
}

/// ISO weekday (1 = Monday … 7 = Sunday) of a day counted from 1970-01-01, a Thursday.
fn iso_weekday(days_since_epoch: i64) -> u8 {
    // rem_euclid(7) is 0..=6, so the cast cannot truncate.
    ((days_since_epoch + 3).rem_euclid(7) + 1) as u8
}

// ---------------------------------------------------------------------------------------------
// Addresses and ranges
// ---------------------------------------------------------------------------------------------

/// A range in the unified 128-bit space: `len` leading bits of `addr` are fixed, the rest zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: u128,
    len: u8,
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => V4_MAPPED_BASE | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        l => u128::MAX << (128 - u32::from(l.min(128))),
    }
}

impl Net {
    /// An address or CIDR as an admin writes it; the error is the message for the entry.
    fn parse_rule(text: &str) -> Result<Net, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let Ok(ip) = addr_text.parse::<IpAddr>() else {
            return Err(
                "must be an IPv4 or IPv6 address, or a CIDR range like 10.0.0.0/8 or 2001:db8::/32"
                    .into(),
            );
        };
        let (max, offset) = match ip {
            IpAddr::V4(_) => (32u8, 96u8),
            IpAddr::V6(_) => (128u8, 0u8),
        };
        let prefix = match prefix_text {
            None => max,
            Some(p) => parse_prefix(p).filter(|&n| n <= max).ok_or_else(|| {
                format!("the prefix length after '/' must be a number from 0 to {max}")
            })?,
        };
        let addr = ip_to_u128(ip);
        let net = Net {
            addr: addr & mask(prefix + offset),
            len: prefix + offset,
        };
        if net.addr != addr {
            return Err(format!(
                "has address bits set beyond the /{prefix} prefix; the range is {net}"
            ));
        }
        Ok(net)
    }

    fn contains(&self, point: u128) -> bool {
        (point ^ self.addr) & mask(self.len) == 0
    }

    /// Whether this range lies wholly inside the IPv4-mapped block, so it reads as IPv4.
    fn is_v4(&self) -> bool {
        self.len >= 96 && self.addr & mask(96) == V4_MAPPED_BASE
    }
}

/// Only plain decimal digits: "+8", " 8" and "" are refused.
fn parse_prefix(text: &str) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_v4() {
            // The low 32 bits are the IPv4 address; truncation is the point.
            let v4 = Ipv4Addr::from(self.addr as u32);
            match self.len {
                128 => write!(f, "{v4}"),
                l => write!(f, "{v4}/{}", l - 96),
            }
        } else {
            let v6 = Ipv6Addr::from(self.addr);
            match self.len {
                128 => write!(f, "{v6}"),
                l => write!(f, "{v6}/{l}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::calendar::days_from_civil;
    use serde_json::json;

    // ----- helpers -----

    /// The field an error names, and its message.
    fn param_and_message(e: RelayError) -> (String, String) {
        (e.param().unwrap_or_default().to_string(), e.message())
    }

    /// Unix ms of a UTC date and time.
    fn utc(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo as u32, d as u32) * MS_PER_DAY + (h * 60 + mi) * MS_PER_MINUTE
    }

    fn ips(list: &[&str]) -> AccessRules {
        AccessRules {
            ip_allow: list.iter().map(|s| s.to_string()).collect(),
            ..AccessRules::default()
        }
    }

    fn window(days: &[u8], start: &str, end: &str, offset: i32) -> TimeWindow {
        TimeWindow {
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
            utc_offset_minutes: offset,
        }
    }

    fn windows(list: Vec<TimeWindow>) -> AccessRules {
        AccessRules {
            windows: list,
            ..AccessRules::default()
        }
    }

    fn err_param(rules: AccessRules) -> String {
        match validate(rules) {
            Err(e) => e.param().unwrap_or_default().to_string(),
            Ok(r) => panic!("expected an error, got {r:?}"),
        }
    }

    // ----- calendar -----

    #[test]
    fn weekdays_from_known_dates() {
        let cases = [
            ((1970, 1, 1), 4),   // Thursday, the epoch
            ((2000, 1, 1), 6),   // Saturday
            ((2024, 2, 29), 4),  // leap day, Thursday
            ((2024, 12, 29), 7), // Sunday
            ((2024, 12, 30), 1), // Monday
            ((1969, 12, 31), 3), // Wednesday, before the epoch
            ((1900, 1, 1), 1),   // Monday
        ];
        for ((y, m, d), want) in cases {
            assert_eq!(
                iso_weekday(days_from_civil(y, m as u32, d as u32)),
                want,
                "{y}-{m}-{d}"
            );
        }
    }

    // ----- IP validation -----

    #[test]
    fn valid_ip_rules_are_canonicalised() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            (" 10.0.0.0/8 ", "10.0.0.0/8"),
            ("192.168.1.7", "192.168.1.7"),
            ("192.168.1.7/32", "192.168.1.7"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("10.0.0.0/08", "10.0.0.0/8"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:DB8::/32", "2001:db8::/32"),
            ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
            ("2001:db8:0:0:0:0:0:1/128", "2001:db8::1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("::", "::"),
            ("::/0", "::/0"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("fe80::/10", "fe80::/10"),
            // IPv4-mapped IPv6 is stored as IPv4.
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("::FFFF:a00:1", "10.0.0.1"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:0.0.0.0/96", "0.0.0.0/0"),
            // Shorter than /96 it covers more than IPv4, so it stays IPv6.
            ("::fffe:0:0/95", "::fffe:0:0/95"),
            ("::/80", "::/80"),
            // IPv4-compatible (deprecated) addresses are ordinary IPv6.
            ("::10.0.0.1", "::a00:1"),
        ];
        for (input, want) in cases {
            let got = validate(ips(&[input])).unwrap_or_else(|e| panic!("{input}: {e:?}"));
            assert_eq!(got.ip_allow, vec![want.to_string()], "{input}");
        }
    }

    #[test]
    fn invalid_ip_rules_name_the_index() {
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("   ", "must not be empty"),
            ("abc", "must be an IPv4 or IPv6"),
            ("10.0.0.0/33", "from 0 to 32"),
            ("2001:db8::/129", "from 0 to 128"),
            ("10.0.0.0/", "from 0 to 32"),
            ("10.0.0.0/-1", "from 0 to 32"),
            ("10.0.0.0/+8", "from 0 to 32"),
            ("10.0.0.0/ 8", "from 0 to 32"),
            ("10.0.0.0/8/8", "from 0 to 32"),
            ("10.0.0.0/1000", "from 0 to 32"),
            ("10.0.0.0/x", "from 0 to 32"),
            ("/8", "must be an IPv4 or IPv6"),
            ("256.0.0.1", "must be an IPv4 or IPv6"),
            ("10.0.0", "must be an IPv4 or IPv6"),
            ("010.0.0.1", "must be an IPv4 or IPv6"),
            ("2001:db8:::1", "must be an IPv4 or IPv6"),
            ("1::2::3", "must be an IPv4 or IPv6"),
            ("[::1]", "must be an IPv4 or IPv6"),
            ("fe80::1%eth0", "must be an IPv4 or IPv6"),
            ("10.1.2.3/8", "the range is 10.0.0.0/8"),
            ("2001:db8::1/32", "the range is 2001:db8::/32"),
            ("::ffff:10.1.2.3/104", "the range is 10.0.0.0/8"),
            ("10.0.0.1/0", "the range is 0.0.0.0/0"),
        ];
        for (input, message) in cases {
            let rules = ips(&["10.0.0.0/8", "::1", input]);
            let (param, got) = param_and_message(validate(rules).expect_err(input));
            assert_eq!(param, "ip_allow[2]", "{input}");
            assert!(got.contains(message), "{input}: {got}");
        }
    }

    #[test]
    fn ip_allow_is_deduplicated_after_canonicalising() {
        let got = validate(ips(&[
            "10.0.0.1",
            "::ffff:10.0.0.1",
            "10.0.0.1/32",
            "2001:DB8::1",
            "2001:db8::1",
        ]))
        .expect("valid");
        assert_eq!(got.ip_allow, vec!["10.0.0.1", "2001:db8::1"]);
    }

    #[test]
    fn ip_allow_is_capped() {
        let many: Vec<String> = (0..=MAX_IP_ALLOW)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let at_cap = AccessRules {
            ip_allow: many[..MAX_IP_ALLOW].to_vec(),
            ..AccessRules::default()
        };
        assert_eq!(
            validate(at_cap).expect("valid").ip_allow.len(),
            MAX_IP_ALLOW
        );
        let over = AccessRules {
            ip_allow: many,
            ..AccessRules::default()
        };
        assert_eq!(err_param(over), "ip_allow");
    }

    // ----- IP matching -----

    #[test]
    fn ip_matching_table() {
        // (rule, client, allowed)
        let cases: &[(&str, &str, bool)] = &[
            // /8 boundaries
            ("10.0.0.0/8", "10.0.0.0", true),
            ("10.0.0.0/8", "10.255.255.255", true),
            ("10.0.0.0/8", "9.255.255.255", false),
            ("10.0.0.0/8", "11.0.0.0", false),
            // odd prefix boundaries
            ("192.168.0.0/23", "192.168.1.255", true),
            ("192.168.0.0/23", "192.168.2.0", false),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            ("128.0.0.0/1", "127.255.255.255", false),
            ("128.0.0.0/1", "128.0.0.0", true),
            // /32 and bare addresses
            ("203.0.113.7/32", "203.0.113.7", true),
            ("203.0.113.7/32", "203.0.113.8", false),
            ("203.0.113.7", "203.0.113.6", false),
            // /0
            ("0.0.0.0/0", "0.0.0.0", true),
            ("0.0.0.0/0", "255.255.255.255", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "1.2.3.4", true),
            // IPv6, compression forms on both sides
            ("2001:db8::/32", "2001:db8::", true),
            (
                "2001:db8::/32",
                "2001:0db8:ffff:ffff:ffff:ffff:ffff:ffff",
                true,
            ),
            ("2001:db8::/32", "2001:db9::", false),
            (
                "2001:db8::/32",
                "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
                false,
            ),
            ("2001:DB8::/32", "2001:db8:0:0::1", true),
            (
                "2001:db8::1",
                "2001:0db8:0000:0000:0000:0000:0000:0001",
                true,
            ),
            ("2001:db8::1/128", "2001:db8::2", false),
            ("2001:db8:0:0:1::/80", "2001:db8::1:0:0:0", true),
            ("2001:db8:0:0:1::/80", "2001:db8::1:ffff:ffff:ffff", true),
            ("2001:db8:0:0:1::/80", "2001:db8::2:0:0:0", false),
            ("::1", "::1", true),
            ("::1", "127.0.0.1", false),
            ("fe80::/10", "febf:ffff::1", true),
            ("fe80::/10", "fec0::", false),
            // IPv4 ⇄ IPv4-mapped IPv6, both ways
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "::ffff:a01:203", true),
            ("10.0.0.0/8", "::ffff:11.0.0.0", false),
            ("::ffff:10.0.0.1", "10.0.0.1", true),
            ("::ffff:10.0.0.0/104", "10.200.0.1", true),
            ("::ffff:10.0.0.0/104", "11.0.0.1", false),
            ("::ffff:0:0/96", "8.8.8.8", true),
            ("10.0.0.1", "::ffff:10.0.0.1", true),
            // IPv4-compatible is not IPv4-mapped
            ("10.0.0.1", "::10.0.0.1", false),
            // client spelling problems
            ("10.0.0.0/8", " 10.0.0.1 ", true),
            ("10.0.0.0/8", "", false),
            ("10.0.0.0/8", "garbage", false),
            ("10.0.0.0/8", "10.0.0.1:443", false),
            ("::/0", "[::1]", false),
        ];
        for &(rule, client, want) in cases {
            let rules = validate(ips(&[rule])).unwrap_or_else(|e| panic!("{rule}: {e:?}"));
            let got = check(&rules, Some(client), None, 0);
            let expected = if want {
                Ok(())
            } else {
                Err(Denial::IpNotAllowed)
            };
            assert_eq!(got, expected, "rule {rule}, client {client}");
        }
    }

    #[test]
    fn missing_client_ip() {
        assert_eq!(
            check(&ips(&["::/0"]), None, None, 0),
            Err(Denial::IpNotAllowed)
        );
        assert_eq!(check(&AccessRules::default(), None, None, 0), Ok(()));
        assert_eq!(
            check(&AccessRules::default(), Some("junk"), None, 0),
            Ok(())
        );
    }

    #[test]
    fn any_entry_of_the_list_admits() {
        let rules = validate(ips(&["10.0.0.0/8", "2001:db8::/32", "198.51.100.1"])).expect("valid");
        for client in ["10.9.9.9", "2001:db8::42", "198.51.100.1"] {
            assert_eq!(check(&rules, Some(client), None, 0), Ok(()), "{client}");
        }
        for client in ["198.51.100.2", "2001:db9::", "11.0.0.0"] {
            assert_eq!(
                check(&rules, Some(client), None, 0),
                Err(Denial::IpNotAllowed),
                "{client}"
            );
        }
    }

    #[test]
    fn unvalidated_bad_entries_match_nothing() {
        let rules = ips(&["abc", "10.0.0.0/33", "10.1.2.3/8"]);
        for client in ["10.1.2.3", "10.0.0.1", "1.1.1.1"] {
            assert_eq!(
                check(&rules, Some(client), None, 0),
                Err(Denial::IpNotAllowed),
                "{client}"
            );
        }
        let mixed = ips(&["abc", "10.0.0.0/8"]);
        assert_eq!(check(&mixed, Some("10.0.0.1"), None, 0), Ok(()));
    }

    #[test]
    fn every_address_of_a_slash_24_matches_and_its_neighbours_do_not() {
        let rules = validate(ips(&["198.51.100.0/24"])).expect("valid");
        for last in 0..=255u8 {
            let inside = format!("198.51.100.{last}");
            assert_eq!(check(&rules, Some(&inside), None, 0), Ok(()), "{inside}");
            let mapped = format!("::ffff:198.51.100.{last}");
            assert_eq!(check(&rules, Some(&mapped), None, 0), Ok(()), "{mapped}");
            for outside in [
                format!("198.51.99.{last}"),
                format!("198.51.101.{last}"),
                format!("199.51.100.{last}"),
            ] {
                assert_eq!(
                    check(&rules, Some(&outside), None, 0),
                    Err(Denial::IpNotAllowed),
                    "{outside}"
                );
            }
        }
    }

    #[test]
    fn every_prefix_length_splits_at_its_boundary() {
        // For each /n of the range starting at 10.0.0.0 the last address inside and the first
        // outside must fall on the right sides.
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
        for len in 8..=32u32 {
            let size = 1u64 << (32 - len);
            let rules = validate(ips(&[&format!("10.0.0.0/{len}")])).expect("valid");
            let last_inside = Ipv4Addr::from(base + (size - 1) as u32).to_string();
            let first_outside = Ipv4Addr::from(base + size as u32).to_string();
            let before = Ipv4Addr::from(base - 1).to_string();
            assert_eq!(
                check(&rules, Some(&last_inside), None, 0),
                Ok(()),
                "/{len} {last_inside}"
            );
            assert_eq!(
                check(&rules, Some(&first_outside), None, 0),
                Err(Denial::IpNotAllowed),
                "/{len} {first_outside}"
            );
            assert_eq!(
                check(&rules, Some(&before), None, 0),
                Err(Denial::IpNotAllowed),
                "/{len} {before}"
            );
        }
        for len in 1..=128u32 {
            // 8000::/1 … ffff:…:ffff/128: the rule is the top `len` bits set.
            let addr = u128::MAX << (128 - len);
            let rule = format!("{}/{len}", Ipv6Addr::from(addr));
            let rules = validate(ips(&[&rule])).expect("valid");
            let inside = Ipv6Addr::from(u128::MAX).to_string();
            let outside = Ipv6Addr::from(addr - 1).to_string();
            assert_eq!(
                check(&rules, Some(&inside), None, 0),
                Ok(()),
                "{rule} {inside}"
            );
            assert_eq!(
                check(&rules, Some(&outside), None, 0),
                Err(Denial::IpNotAllowed),
                "{rule} {outside}"
            );
        }
    }

    // ----- countries -----

    #[test]
    fn country_validation() {
        let ok = AccessRules {
            countries_allow: vec![
                "de".into(),
                " FR ".into(),
                "De".into(),
                "xx".into(),
                "t1".into(),
            ],
            countries_deny: vec!["Us".into()],
            ..AccessRules::default()
        };
        let got = validate(ok).expect("valid");
        assert_eq!(got.countries_allow, vec!["DE", "FR", "XX", "T1"]);
        assert_eq!(got.countries_deny, vec!["US"]);

        for bad in ["", "D", "DEU", "D1", "1T", "T2", "ÄÖ", "D-", "12"] {
            let rules = AccessRules {
                countries_deny: vec!["US".into(), bad.into()],
                ..AccessRules::default()
            };
            assert_eq!(err_param(rules), "countries_deny[1]", "{bad:?}");
            let rules = AccessRules {
                countries_allow: vec![bad.into()],
                ..AccessRules::default()
            };
            assert_eq!(err_param(rules), "countries_allow[0]", "{bad:?}");
        }

        let too_many = AccessRules {
            countries_allow: vec!["DE".into(); MAX_COUNTRIES + 1],
            ..AccessRules::default()
        };
        assert_eq!(err_param(too_many), "countries_allow");
    }

    #[test]
    fn country_matching_table() {
        // (allow, deny, country, allowed)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], Option<&'a str>, bool);
        let cases: &[Case] = &[
            (&[], &[], None, true),
            (&[], &[], Some("DE"), true),
            (&["DE", "FR"], &[], Some("DE"), true),
            (&["DE", "FR"], &[], Some("de"), true),
            (&["DE", "FR"], &[], Some(" FR "), true),
            (&["DE", "FR"], &[], Some("US"), false),
            (&["DE", "FR"], &[], None, false),
            (&["DE", "FR"], &[], Some(""), false),
            (&[], &["RU"], Some("RU"), false),
            (&[], &["RU"], Some("ru"), false),
            (&[], &["RU"], Some("DE"), true),
            (&[], &["RU"], None, true),
            (&[], &["RU"], Some(""), true),
            // deny wins over allow
            (&["DE", "RU"], &["RU"], Some("RU"), false),
            (&["DE", "RU"], &["RU"], Some("DE"), true),
            (&["DE"], &["RU"], None, false),
            // Cloudflare specials
            (&["DE"], &[], Some("XX"), false),
            (&["DE", "XX"], &[], Some("XX"), true),
            (&[], &["XX"], Some("XX"), false),
            (&[], &["T1"], Some("T1"), false),
            (&[], &["T1"], Some("DE"), true),
        ];
        for &(allow, deny, country, want) in cases {
            let rules = AccessRules {
                countries_allow: allow.iter().map(|s| s.to_string()).collect(),
                countries_deny: deny.iter().map(|s| s.to_string()).collect(),
                ..AccessRules::default()
            };
            let rules = validate(rules).expect("valid");
            let expected = if want {
                Ok(())
            } else {
                Err(Denial::CountryNotAllowed)
            };
            assert_eq!(
                check(&rules, None, country, 0),
                expected,
                "{allow:?} {deny:?} {country:?}"
            );
        }
    }

    // ----- time windows: validation -----

    #[test]
    fn time_parsing_table() {
        let cases: &[(&str, Option<i64>)] = &[
            ("00:00", Some(0)),
            ("09:30", Some(570)),
            ("23:59", Some(1439)),
            ("12:00", Some(720)),
            ("24:00", None),
            ("7:5", None),
            ("07:5", None),
            ("7:05", None),
            ("12:60", None),
            ("25:00", None),
            ("12-00", None),
            ("1200", None),
            ("12:00:00", None),
            ("", None),
            ("+1:00", None),
            ("ab:cd", None),
            ("١٢:٠٠", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_hhmm(text), want, "{text:?}");
        }
    }

    #[test]
    fn window_validation_errors_name_the_field() {
        let cases: Vec<(TimeWindow, &str)> = vec![
            (window(&[], "24:00", "10:00", 0), "windows[1].start"),
            (window(&[], "7:5", "10:00", 0), "windows[1].start"),
            (window(&[], "09:00", "12:60", 0), "windows[1].end"),
            (window(&[], "09:00", "09:00", 0), "windows[1].end"),
            (window(&[], "00:00", "00:00", 0), "windows[1].end"),
            (window(&[1, 0], "09:00", "10:00", 0), "windows[1].days[1]"),
            (window(&[8], "09:00", "10:00", 0), "windows[1].days[0]"),
            (
                window(&[], "09:00", "10:00", -721),
                "windows[1].utc_offset_minutes",
            ),
            (
                window(&[], "09:00", "10:00", 841),
                "windows[1].utc_offset_minutes",
            ),
        ];
        for (bad, param) in cases {
            let rules = windows(vec![window(&[], "09:00", "17:00", 0), bad.clone()]);
            assert_eq!(err_param(rules), param, "{bad:?}");
        }
        for offset in [-720, 0, 840] {
            assert!(validate(windows(vec![window(&[], "09:00", "10:00", offset)])).is_ok());
        }
        let too_many = windows(
            (0..=MAX_WINDOWS)
                .map(|_| window(&[], "09:00", "10:00", 0))
                .collect(),
        );
        assert_eq!(err_param(too_many), "windows");
    }

    #[test]
    fn windows_are_normalised() {
        let rules = windows(vec![
            window(&[5, 1, 3, 1], " 09:00", "17:00 ", 60),
            window(&[1, 3, 5], "09:00", "17:00", 60),
        ]);
        let got = validate(rules).expect("valid");
        assert_eq!(got.windows, vec![window(&[1, 3, 5], "09:00", "17:00", 60)]);
    }

    // ----- time windows: matching -----

    #[test]
    fn window_matching_table() {
        // 2024-01-01 is a Monday; 2024-01-07 a Sunday.
        let weekdays: &[u8] = &[1, 2, 3, 4, 5];
        let cases: Vec<(TimeWindow, i64, bool, &str)> = vec![
            // plain window, start inclusive, end exclusive
            (
                window(&[], "09:00", "17:00", 0),
                utc(2024, 1, 1, 9, 0),
                true,
                "at start",
            ),
            (
                window(&[], "09:00", "17:00", 0),
                utc(2024, 1, 1, 8, 59),
                false,
                "a minute before",
            ),
            (
                window(&[], "09:00", "17:00", 0),
                utc(2024, 1, 1, 16, 59),
                true,
                "last minute",
            ),
            (
                window(&[], "09:00", "17:00", 0),
                utc(2024, 1, 1, 17, 0),
                false,
                "at end",
            ),
            (
                window(&[], "09:00", "17:00", 0),
                utc(2024, 1, 1, 17, 0) - 1,
                true,
                "a ms before end",
            ),
            // days
            (
                window(weekdays, "09:00", "17:00", 0),
                utc(2024, 1, 5, 12, 0),
                true,
                "Friday",
            ),
            (
                window(weekdays, "09:00", "17:00", 0),
                utc(2024, 1, 6, 12, 0),
                false,
                "Saturday",
            ),
            (
                window(weekdays, "09:00", "17:00", 0),
                utc(2024, 1, 7, 12, 0),
                false,
                "Sunday",
            ),
            (
                window(&[7], "00:00", "12:00", 0),
                utc(2024, 1, 7, 0, 0),
                true,
                "Sunday midnight",
            ),
            // offsets: 09:00–17:00 CET is 08:00–16:00 UTC
            (
                window(&[], "09:00", "17:00", 60),
                utc(2024, 1, 1, 8, 0),
                true,
                "CET start",
            ),
            (
                window(&[], "09:00", "17:00", 60),
                utc(2024, 1, 1, 7, 59),
                false,
                "CET before",
            ),
            (
                window(&[], "09:00", "17:00", 60),
                utc(2024, 1, 1, 16, 0),
                false,
                "CET end",
            ),
            // EST: 09:00 local is 14:00 UTC
            (
                window(&[], "09:00", "17:00", -300),
                utc(2024, 1, 1, 14, 0),
                true,
                "EST start",
            ),
            (
                window(&[], "09:00", "17:00", -300),
                utc(2024, 1, 1, 13, 59),
                false,
                "EST before",
            ),
            // the offset moves the weekday too: Monday 00:30 UTC is Sunday 19:30 EST
            (
                window(&[7], "19:00", "20:00", -300),
                utc(2024, 1, 8, 0, 30),
                true,
                "EST Sunday evening",
            ),
            (
                window(&[1], "19:00", "20:00", -300),
                utc(2024, 1, 8, 0, 30),
                false,
                "not Monday in EST",
            ),
            // Sunday 23:30 UTC is Monday 13:30 at UTC+14
            (
                window(&[1], "13:00", "14:00", 840),
                utc(2024, 1, 7, 23, 30),
                true,
                "UTC+14 Monday",
            ),
            (
                window(&[6], "23:00", "23:59", -720),
                utc(2024, 1, 7, 11, 30),
                true,
                "UTC-12 Saturday",
            ),
            // crossing midnight, belonging to the start day
            (
                window(&[], "22:00", "06:00", 0),
                utc(2024, 1, 1, 22, 0),
                true,
                "cross: at start",
            ),
            (
                window(&[], "22:00", "06:00", 0),
                utc(2024, 1, 1, 21, 59),
                false,
                "cross: before",
            ),
            (
                window(&[], "22:00", "06:00", 0),
                utc(2024, 1, 2, 0, 0),
                true,
                "cross: midnight",
            ),
            (
                window(&[], "22:00", "06:00", 0),
                utc(2024, 1, 2, 5, 59),
                true,
                "cross: last minute",
            ),
            (
                window(&[], "22:00", "06:00", 0),
                utc(2024, 1, 2, 6, 0),
                false,
                "cross: at end",
            ),
            (
                window(&[], "22:00", "06:00", 0),
                utc(2024, 1, 2, 12, 0),
                false,
                "cross: midday",
            ),
            // Sunday → Monday
            (
                window(&[7], "22:00", "02:00", 0),
                utc(2024, 1, 7, 23, 0),
                true,
                "Sun night",
            ),
            (
                window(&[7], "22:00", "02:00", 0),
                utc(2024, 1, 8, 1, 59),
                true,
                "into Monday",
            ),
            (
                window(&[7], "22:00", "02:00", 0),
                utc(2024, 1, 8, 2, 0),
                false,
                "Monday at end",
            ),
            (
                window(&[7], "22:00", "02:00", 0),
                utc(2024, 1, 8, 23, 0),
                false,
                "Monday night",
            ),
            (
                window(&[7], "22:00", "02:00", 0),
                utc(2024, 1, 7, 1, 0),
                false,
                "Sunday early belongs to Saturday",
            ),
            (
                window(&[1], "22:00", "02:00", 0),
                utc(2024, 1, 8, 1, 0),
                false,
                "Monday early belongs to Sunday",
            ),
            (
                window(&[1], "22:00", "02:00", 0),
                utc(2024, 1, 9, 1, 0),
                true,
                "Tuesday early belongs to Monday",
            ),
            // "to the end of the day" is end 00:00
            (
                window(&[5], "18:00", "00:00", 0),
                utc(2024, 1, 5, 23, 59),
                true,
                "Friday last minute",
            ),
            (
                window(&[5], "18:00", "00:00", 0),
                utc(2024, 1, 6, 0, 0),
                false,
                "Saturday midnight",
            ),
            // before the epoch
            (
                window(&[3], "23:00", "23:30", 0),
                utc(1969, 12, 31, 23, 15),
                true,
                "1969 Wednesday",
            ),
            (
                window(&[], "23:00", "23:30", 0),
                -1,
                false,
                "one ms before the epoch",
            ),
            (
                window(&[], "23:00", "00:00", 0),
                -1,
                true,
                "23:59:59.999 on 1969-12-31",
            ),
        ];
        for (w, now, want, label) in cases {
            let rules =
                validate(windows(vec![w.clone()])).unwrap_or_else(|e| panic!("{label}: {e:?}"));
            let expected = if want {
                Ok(())
            } else {
                Err(Denial::OutsideTimeWindow)
            };
            assert_eq!(check(&rules, None, None, now), expected, "{label}: {w:?}");
        }
    }

    #[test]
    fn a_whole_day_is_two_windows() {
        let rules = validate(windows(vec![
            window(&[6, 7], "00:00", "12:00", 0),
            window(&[6, 7], "12:00", "00:00", 0),
        ]))
        .expect("valid");
        let saturday = utc(2024, 1, 6, 0, 0);
        for minute in 0..2 * MINUTES_PER_DAY {
            assert_eq!(
                check(&rules, None, None, saturday + minute * MS_PER_MINUTE),
                Ok(()),
                "minute {minute}"
            );
        }
        let monday = utc(2024, 1, 8, 0, 0);
        assert_eq!(
            check(&rules, None, None, monday),
            Err(Denial::OutsideTimeWindow)
        );
        assert_eq!(
            check(&rules, None, None, saturday - 1),
            Err(Denial::OutsideTimeWindow)
        );
    }

    #[test]
    fn any_window_admits_and_no_window_means_always() {
        let rules = validate(windows(vec![
            window(&[1], "09:00", "10:00", 0),
            window(&[2], "15:00", "16:00", 0),
        ]))
        .expect("valid");
        assert_eq!(check(&rules, None, None, utc(2024, 1, 1, 9, 30)), Ok(()));
        assert_eq!(check(&rules, None, None, utc(2024, 1, 2, 15, 30)), Ok(()));
        assert_eq!(
            check(&rules, None, None, utc(2024, 1, 2, 9, 30)),
            Err(Denial::OutsideTimeWindow)
        );
        assert_eq!(check(&AccessRules::default(), None, None, i64::MIN), Ok(()));
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let rules = windows(vec![
            window(&[], "00:00", "12:00", 840),
            window(&[], "12:00", "00:00", -720),
        ]);
        for now in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            let _ = check(&rules, None, None, now);
        }
        // Unvalidated junk never admits and never panics.
        let junk = windows(vec![window(&[0, 9], "9", "x", i32::MAX)]);
        assert_eq!(check(&junk, None, None, 0), Err(Denial::OutsideTimeWindow));
    }

    // ----- combined -----

    #[test]
    fn checks_run_in_order_ip_country_time() {
        let rules = validate(AccessRules {
            ip_allow: vec!["10.0.0.0/8".into()],
            countries_allow: vec!["DE".into()],
            countries_deny: vec![],
            windows: vec![window(&[], "09:00", "17:00", 0)],
        })
        .expect("valid");
        let open = utc(2024, 1, 1, 12, 0);
        let closed = utc(2024, 1, 1, 20, 0);
        let cases = [
            (Some("10.0.0.1"), Some("DE"), open, Ok(())),
            (
                Some("11.0.0.1"),
                Some("US"),
                closed,
                Err(Denial::IpNotAllowed),
            ),
            (
                Some("10.0.0.1"),
                Some("US"),
                closed,
                Err(Denial::CountryNotAllowed),
            ),
            (Some("10.0.0.1"), None, open, Err(Denial::CountryNotAllowed)),
            (
                Some("10.0.0.1"),
                Some("DE"),
                closed,
                Err(Denial::OutsideTimeWindow),
            ),
            (None, Some("DE"), open, Err(Denial::IpNotAllowed)),
        ];
        for (ip, country, now, want) in cases {
            assert_eq!(
                check(&rules, ip, country, now),
                want,
                "{ip:?} {country:?} {now}"
            );
        }
        assert!(!rules.is_open());
        assert!(AccessRules::default().is_open());
    }

    // ----- JSON -----

    #[test]
    fn parse_accepts_a_full_object_and_normalises() {
        let value = json!({
            "ip_allow": ["10.1.0.0/16", "::ffff:192.0.2.1", "2001:DB8::/32"],
            "countries_allow": ["de", "fr"],
            "countries_deny": ["ru"],
            "windows": [
                {"days": [5, 1], "start": "09:00", "end": "17:00", "utc_offset_minutes": 60},
                {"start": "22:00", "end": "02:00"}
            ]
        });
        let rules = parse(&value).expect("valid");
        assert_eq!(
            rules.ip_allow,
            vec!["10.1.0.0/16", "192.0.2.1", "2001:db8::/32"]
        );
        assert_eq!(rules.countries_allow, vec!["DE", "FR"]);
        assert_eq!(rules.countries_deny, vec!["RU"]);
        assert_eq!(
            rules.windows,
            vec![
                window(&[1, 5], "09:00", "17:00", 60),
                window(&[], "22:00", "02:00", 0)
            ]
        );
        // Stored form round-trips through serde and parses to itself.
        let stored = serde_json::to_value(&rules).expect("serialise");
        assert_eq!(
            serde_json::from_value::<AccessRules>(stored.clone()).expect("deserialise"),
            rules
        );
        assert_eq!(parse(&stored).expect("valid"), rules);
    }

    #[test]
    fn parse_empty_and_nulls() {
        assert_eq!(parse(&json!({})), Ok(AccessRules::default()));
        let nulls = json!({"ip_allow": null, "countries_allow": null, "countries_deny": null, "windows": null});
        assert_eq!(parse(&nulls), Ok(AccessRules::default()));
        assert_eq!(
            serde_json::to_string(&AccessRules::default()).expect("serialise"),
            "{}"
        );
        let w = parse(&json!({"windows": [{"days": null, "start": "01:00", "end": "02:00", "utc_offset_minutes": null}]}))
            .expect("valid");
        assert_eq!(w.windows, vec![window(&[], "01:00", "02:00", 0)]);
    }

    #[test]
    fn parse_errors_name_the_field() {
        let cases = [
            (json!([]), ""),
            (json!("x"), ""),
            (json!({"ip_alow": []}), "ip_alow"),
            (json!({"ip_allow": "10.0.0.0/8"}), "ip_allow"),
            (json!({"ip_allow": ["10.0.0.0/8", 10]}), "ip_allow[1]"),
            (
                json!({"ip_allow": ["10.0.0.0/8", "10.0.0.0/33"]}),
                "ip_allow[1]",
            ),
            (
                json!({"countries_allow": ["DE", null]}),
                "countries_allow[1]",
            ),
            (json!({"countries_deny": "RU"}), "countries_deny"),
            (json!({"countries_deny": ["RUS"]}), "countries_deny[0]"),
            (json!({"windows": {}}), "windows"),
            (json!({"windows": ["09:00-17:00"]}), "windows[0]"),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "tz": "CET"}]}),
                "windows[0].tz",
            ),
            (json!({"windows": [{"end": "17:00"}]}), "windows[0].start"),
            (json!({"windows": [{"start": "09:00"}]}), "windows[0].end"),
            (
                json!({"windows": [{"start": 900, "end": "17:00"}]}),
                "windows[0].start",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "24:00"}]}),
                "windows[0].end",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "days": "Mon"}]}),
                "windows[0].days",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "days": [1, "2"]}]}),
                "windows[0].days[1]",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "days": [1, 256]}]}),
                "windows[0].days[1]",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "days": [-1]}]}),
                "windows[0].days[0]",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "days": [1.5]}]}),
                "windows[0].days[0]",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "utc_offset_minutes": 60.5}]}),
                "windows[0].utc_offset_minutes",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "utc_offset_minutes": 1e12}]}),
                "windows[0].utc_offset_minutes",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "utc_offset_minutes": 5_000_000_000_i64}]}),
                "windows[0].utc_offset_minutes",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00", "utc_offset_minutes": 900}]}),
                "windows[0].utc_offset_minutes",
            ),
            (
                json!({"windows": [{"start": "09:00", "end": "17:00"}, {"start": "10:00", "end": "10:00"}]}),
                "windows[1].end",
            ),
        ];
        for (value, param) in cases {
            let (got, message) = param_and_message(parse(&value).expect_err(&value.to_string()));
            assert_eq!(got, param, "{value}: {message}");
            assert!(!message.is_empty());
        }
        let unknown = param_and_message(
            parse(&json!({"windows": [{"start": "09:00", "end": "17:00", "tz": "CET"}]}))
                .expect_err("unknown"),
        );
        assert!(unknown.1.contains("unknown field"), "{}", unknown.1);
    }

    #[test]
    fn parse_caps_before_building() {
        let many: Vec<Value> = (0..=MAX_WINDOWS)
            .map(|_| json!({"start": "bad", "end": "bad"}))
            .collect();
        // The count is refused before any single window is looked at.
        assert_eq!(
            param_and_message(parse(&json!({ "windows": many })).expect_err("too many")).0,
            "windows"
        );
        let ips: Vec<String> = (0..=MAX_IP_ALLOW).map(|_| "10.0.0.1".to_string()).collect();
        assert_eq!(
            param_and_message(parse(&json!({ "ip_allow": ips })).expect_err("too many")).0,
            "ip_allow"
        );
    }
}
