//! Prepaid credit: a tenant's balance in micro-units, held by its limiter Durable Object, the
//! top-up entries that raise it (immutable, idempotent by id), reservations of a request's
//! worst-case cost against it and their exact settlement, the low-balance notice, the
//! validation of a top-up from the admin API, and the `GET …/credits` view.
//!
//! The guarantee, and why it holds: a request is admitted only when the balance less what is
//! already reserved covers its worst case, so reservations alone never take the balance below
//! zero, however many requests reserve at once (the limiter object serialises them). Settling
//! replaces a reservation by the actual cost exactly; only a request that used more than it
//! reserved (an under-estimated prompt) dips below, by exactly its excess. Once the available
//! balance is negative nothing is admitted until a top-up, so the overdraft is bounded by the
//! under-estimates of the requests that were in flight together — with one request at a time,
//! one request's under-estimate. Everything is integer micro-units; balances are `i64` because
//! they may dip below zero.
//!
//! The limiter keeps the last [`KEPT_ENTRIES`] entries (for the view and to recognise a
//! retried top-up) and the totals; the full history is the admin audit log's
//! `credit.top_up` rows, which record each applied entry.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::RelayError;
use crate::governance::notices::{self, Notice, Severity, WebhookConfig};
use crate::support::fields::parse_object;

/// A top-up above this (10^13 micro-units: ten million in the tenant's currency) is a typo.
pub const MAX_TOP_UP_MICROS: u64 = 10_000_000_000_000;
pub const MAX_NOTE_CHARS: usize = 500;
/// Entries the limiter keeps in its state (it is rewritten on every call, so it stays small).
pub const KEPT_ENTRIES: usize = 100;
/// Entries the view shows unless asked for fewer.
pub const DEFAULT_VIEW_ENTRIES: usize = 20;

/// One top-up, as recorded. Never changed once applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditEntry {
    /// Made by the edge once per admin request: a retried call with the same id is applied
    /// once.
    pub id: String,
    pub amount_micros: u64,
    #[serde(default)]
    pub note: String,
    /// Who topped up (the admin actor, as the audit log names it).
    pub actor: String,
    pub at_ms: i64,
    /// The balance right after this entry: a statement reads without replaying history.
    #[serde(default)]
    pub balance_after_micros: i64,
}

/// What a reservation holds against the balance. Returned by [`CreditBalance::reserve`] and
/// handed back to [`CreditBalance::settle`] or [`CreditBalance::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub micros: u64,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insufficient {
    pub needed_micros: u64,
    /// Balance less reservations; negative after an overdraft.
    pub available_micros: i64,
}

/// Whether a top-up changed the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopUpOutcome {
    Applied,
    /// An entry with this id was applied already (a retried call): nothing changed.
    Duplicate,
}

/// A tenant's prepaid balance, as its limiter keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBalance {
    /// Every top-up ever applied, summed.
    #[serde(default)]
    topped_up_micros: u64,
    /// Settled spend, summed.
    #[serde(default)]
    spent_micros: u64,
    /// Held by reservations (and leases) in flight.
    #[serde(default)]
    reserved_micros: u64,
    /// The last `KEPT_ENTRIES` top-ups, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    recent: Vec<CreditEntry>,
    /// The low-balance notice went out for the current dip below the threshold; re-armed by
    /// a top-up that lifts the balance back to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    low_announced: bool,
}

fn to_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl CreditBalance {
    /// Top-ups less settled spend (negative after an overdraft).
    pub fn balance_micros(&self) -> i64 {
        to_i64(i128::from(self.topped_up_micros) - i128::from(self.spent_micros))
    }

    pub fn reserved_micros(&self) -> u64 {
        self.reserved_micros
    }

    /// What a new reservation may take: the balance less what is reserved.
    pub fn available_micros(&self) -> i64 {
        to_i64(
            i128::from(self.topped_up_micros)
                - i128::from(self.spent_micros)
                - i128::from(self.reserved_micros),
        )
    }

    /// Hold `worst_case` until it is settled, or refuse when the available balance does not
    /// cover it. A refusal changes nothing. A zero worst case (an unpriced model) passes while
    /// nothing is overdrawn.
    pub fn reserve(&mut self, worst_case: u64) -> Result<Reservation, Insufficient> {
        let available = self.available_micros();
        if i128::from(available) < i128::from(worst_case) {
            return Err(Insufficient {
                needed_micros: worst_case,
                available_micros: available,
            });
        }
        self.reserved_micros = self.reserved_micros.saturating_add(worst_case);
        Ok(Reservation { micros: worst_case })
    }

    /// Replace `reservation` by what the request cost, exactly: the balance falls by `actual`,
    /// the rest of the hold is free again. Above the reservation, the available balance dips
    /// by exactly the excess.
    pub fn settle(&mut self, reservation: Reservation, actual: u64) {
        self.reserved_micros = self.reserved_micros.saturating_sub(reservation.micros);
        self.spent_micros = self.spent_micros.saturating_add(actual);
    }

    /// Give a reservation back whole: the request never ran.
    pub fn release(&mut self, reservation: Reservation) {
        self.reserved_micros = self.reserved_micros.saturating_sub(reservation.micros);
    }

    /// Apply a top-up once: an id seen among the kept entries is a retry and changes nothing.
    /// Re-arms the low-balance notice when the balance is back at `low_threshold` or above.
    pub fn top_up(&mut self, mut entry: CreditEntry, low_threshold: Option<u64>) -> TopUpOutcome {
        if self.recent.iter().any(|e| e.id == entry.id) {
            return TopUpOutcome::Duplicate;
        }
        self.topped_up_micros = self.topped_up_micros.saturating_add(entry.amount_micros);
        entry.balance_after_micros = self.balance_micros();
        self.recent.push(entry);
        if self.recent.len() > KEPT_ENTRIES {
            let extra = self.recent.len() - KEPT_ENTRIES;
            self.recent.drain(..extra);
        }
        if low_threshold.is_none_or(|t| i128::from(self.balance_micros()) >= i128::from(t)) {
            self.low_announced = false;
        }
        TopUpOutcome::Applied
    }

    /// The entry applied under `id`, if it is still kept.
    pub fn entry(&self, id: &str) -> Option<&CreditEntry> {
        self.recent.iter().find(|e| e.id == id)
    }

    /// The low-balance notice, once per crossing: when the balance is below `threshold` and
    /// this dip has not been announced yet. A balance back at the threshold re-arms it too
    /// (the threshold may have been lowered).
    pub fn low_balance_notice(
        &mut self,
        tenant_id: &str,
        threshold: u64,
        now_ms: i64,
    ) -> Option<Notice> {
        let balance = self.balance_micros();
        if i128::from(balance) >= i128::from(threshold) {
            self.low_announced = false;
            return None;
        }
        if self.low_announced {
            return None;
        }
        self.low_announced = true;
        Some(Notice {
            id: format!("credit.low_balance:{tenant_id}:{now_ms}"),
            event_type: "credit.low_balance",
            severity: if balance <= 0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            tenant_id: Some(tenant_id.to_string()),
            summary: format!(
                "Tenant {tenant_id}'s prepaid balance is {balance} micro-units, below its {threshold} threshold."
            ),
            at_ms: now_ms,
            data: json!({"balance_micros": balance, "threshold_micros": threshold}),
        })
    }

    /// The `GET …/credits` view: balance, what is reserved, and the last `last` entries,
    /// newest first.
    pub fn view(&self, last: usize) -> CreditView {
        CreditView {
            balance_micros: self.balance_micros(),
            reserved_micros: self.reserved_micros,
            available_micros: self.available_micros(),
            topped_up_micros: self.topped_up_micros,
            spent_micros: self.spent_micros,
            entries: self.recent.iter().rev().take(last).cloned().collect(),
        }
    }
}

/// A tenant's credit as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditView {
    pub balance_micros: i64,
    pub reserved_micros: u64,
    pub available_micros: i64,
    pub topped_up_micros: u64,
    pub spent_micros: u64,
    /// Newest first.
    pub entries: Vec<CreditEntry>,
}

/// The credit side of a tenant's limiter call: present when the tenant is prepaid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditCtx {
    pub tenant_id: String,
    /// Below this balance the low-balance notice goes out (once per crossing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_balance_micros: Option<u64>,
    /// The tenant's webhooks; those that want `credit.low_balance` get the notice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
}

impl CreditCtx {
    /// The deliveries of `notice` this tenant's webhooks asked for.
    pub fn deliveries(
        &self,
        notice: &Notice,
        now_ms: i64,
    ) -> Vec<crate::governance::alerts::PendingAlert> {
        notices::pending_for(&self.webhooks, notice, now_ms)
    }
}

/// A top-up from the admin API (`POST …/credits`: `{"amount_micros": n, "note"?: "…"}`), as
/// the entry to apply; `id`, `actor` and the time come from the edge. Errors name the field.
pub fn parse_top_up(
    bytes: &[u8],
    id: &str,
    actor: &str,
    now_ms: i64,
) -> Result<CreditEntry, RelayError> {
    let map = parse_object(bytes, &["amount_micros", "note"])?;
    let amount_micros = match map.get("amount_micros") {
        None | Some(Value::Null) => return Err(RelayError::missing("amount_micros")),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(a) if (1..=MAX_TOP_UP_MICROS).contains(&a) => a,
            _ => {
                return Err(RelayError::invalid_value(
                    "amount_micros",
                    format!("must be an integer between 1 and {MAX_TOP_UP_MICROS}"),
                ))
            }
        },
        Some(_) => return Err(RelayError::invalid_type("amount_micros", "an integer")),
    };
    let note = match map.get("note") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.chars().count() > MAX_NOTE_CHARS {
                return Err(RelayError::invalid_value(
                    "note",
                    format!("must be at most {MAX_NOTE_CHARS} characters"),
                ));
            }
            if s.chars().any(|c| c.is_control() && c != '\n') {
                return Err(RelayError::invalid_value(
                    "note",
                    "must not hold control characters",
                ));
            }
            s.to_string()
        }
        Some(_) => return Err(RelayError::invalid_type("note", "a string")),
    };
    Ok(CreditEntry {
        id: id.to_string(),
        amount_micros,
        note,
        actor: actor.to_string(),
        at_ms: now_ms,
        balance_after_micros: 0,
    })
}

/// A tenant's `low_balance_micros` setting from the admin API.
pub fn parse_low_balance(value: &Value, param: &str) -> Result<Option<u64>, RelayError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .filter(|v| *v <= MAX_TOP_UP_MICROS)
            .map(Some)
            .ok_or_else(|| {
                RelayError::invalid_value(
                    param,
                    format!("must be an integer between 0 and {MAX_TOP_UP_MICROS}"),
                )
            }),
        _ => Err(RelayError::invalid_type(param, "an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, amount: u64) -> CreditEntry {
        CreditEntry {
            id: id.into(),
            amount_micros: amount,
            note: String::new(),
            actor: "admin".into(),
            at_ms: 1,
            balance_after_micros: 0,
        }
    }

    #[test]
    fn reservations_hold_the_worst_case_and_settle_exactly() {
        let mut c = CreditBalance::default();
        assert_eq!(c.top_up(entry("t1", 1_000), None), TopUpOutcome::Applied);
        let a = c.reserve(600).unwrap();
        assert_eq!((c.balance_micros(), c.available_micros()), (1_000, 400));
        assert_eq!(
            c.reserve(500),
            Err(Insufficient {
                needed_micros: 500,
                available_micros: 400
            })
        );
        let before = c.clone();
        assert!(c.reserve(401).is_err());
        assert_eq!(c, before, "a refusal changes nothing");
        // Below the reservation: the rest is free again.
        c.settle(a, 100);
        assert_eq!((c.balance_micros(), c.available_micros()), (900, 900));
        // Above: the balance dips by exactly the excess.
        let b = c.reserve(900).unwrap();
        c.settle(b, 950);
        assert_eq!((c.balance_micros(), c.available_micros()), (-50, -50));
        assert!(c.reserve(0).is_err(), "nothing passes an overdraft");
        assert_eq!(c.top_up(entry("t2", 100), None), TopUpOutcome::Applied);
        let z = c.reserve(0).unwrap();
        c.release(z);
        let r = c.reserve(50).unwrap();
        c.release(r);
        assert_eq!((c.balance_micros(), c.reserved_micros()), (50, 0));
    }

    #[test]
    fn top_ups_apply_once_and_record_the_balance_after() {
        let mut c = CreditBalance::default();
        c.top_up(entry("t1", 500), None);
        assert_eq!(c.top_up(entry("t1", 500), None), TopUpOutcome::Duplicate);
        assert_eq!(c.balance_micros(), 500);
        c.top_up(entry("t2", 250), None);
        let v = c.view(10);
        assert_eq!(
            v.entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["t2", "t1"]
        );
        assert_eq!(v.entries[0].balance_after_micros, 750);
        assert_eq!(c.view(1).entries.len(), 1);
        for i in 0..KEPT_ENTRIES + 5 {
            c.top_up(entry(&format!("x{i}"), 1), None);
        }
        assert_eq!(c.view(usize::MAX).entries.len(), KEPT_ENTRIES);
        assert_eq!(c.view(0).topped_up_micros, 750 + KEPT_ENTRIES as u64 + 5);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<CreditBalance>(&json).unwrap(), c);
    }

    #[test]
    fn the_low_balance_notice_goes_out_once_per_crossing() {
        let mut c = CreditBalance::default();
        c.top_up(entry("t1", 1_000), Some(300));
        assert!(c.low_balance_notice("ten_1", 300, 1).is_none());
        let r = c.reserve(800).unwrap();
        c.settle(r, 800);
        let n = c.low_balance_notice("ten_1", 300, 2).unwrap();
        assert_eq!(
            (n.event_type, n.severity),
            ("credit.low_balance", Severity::Warning)
        );
        assert_eq!(n.data["balance_micros"], 200);
        assert!(
            c.low_balance_notice("ten_1", 300, 3).is_none(),
            "the same dip"
        );
        // A top-up that does not reach the threshold does not re-arm it.
        c.top_up(entry("t2", 50), Some(300));
        assert!(c.low_balance_notice("ten_1", 300, 4).is_none());
        // One that does, does: the next crossing is announced.
        c.top_up(entry("t3", 500), Some(300));
        let r = c.reserve(750).unwrap();
        c.settle(r, 750);
        let n = c.low_balance_notice("ten_1", 300, 5).unwrap();
        assert_eq!(n.severity, Severity::Critical, "nothing left");
        assert_eq!(n.data["balance_micros"], 0);
    }

    #[test]
    fn top_ups_are_validated_naming_the_field() {
        let e = parse_top_up(
            br#"{"amount_micros": 5000000, "note": " invoice 42 "}"#,
            "cr_1",
            "admin",
            9,
        )
        .unwrap();
        assert_eq!(
            (e.amount_micros, e.note.as_str(), e.at_ms),
            (5_000_000, "invoice 42", 9)
        );
        let param = |body: &str| {
            parse_top_up(body.as_bytes(), "i", "a", 0)
                .unwrap_err()
                .param()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(param(r#"{}"#), "amount_micros");
        assert_eq!(param(r#"{"amount_micros": 0}"#), "amount_micros");
        assert_eq!(param(r#"{"amount_micros": -5}"#), "amount_micros");
        assert_eq!(param(r#"{"amount_micros": 1.5}"#), "amount_micros");
        assert_eq!(param(r#"{"amount_micros": "5"}"#), "amount_micros");
        assert_eq!(
            param(r#"{"amount_micros": 10000000000001}"#),
            "amount_micros"
        );
        assert!(parse_top_up(br#"{"amount_micros": 10000000000000}"#, "i", "a", 0).is_ok());
        let long = format!(r#"{{"amount_micros": 1, "note": "{}"}}"#, "é".repeat(501));
        assert_eq!(param(&long), "note");
        let fits = format!(r#"{{"amount_micros": 1, "note": "{}"}}"#, "é".repeat(500));
        assert!(parse_top_up(fits.as_bytes(), "i", "a", 0).is_ok());
        assert_eq!(param(r#"{"amount_micros": 1, "note": 5}"#), "note");
        assert_eq!(param(r#"{"amount_micros": 1, "note": "a\u0007"}"#), "note");
        assert_eq!(param(r#"{"amount_micros": 1, "amout": 1}"#), "amout");
        assert_eq!(
            parse_low_balance(&serde_json::json!(-1), "low_balance_micros")
                .unwrap_err()
                .param(),
            Some("low_balance_micros")
        );
        assert_eq!(parse_low_balance(&Value::Null, "x").unwrap(), None);
    }
}
