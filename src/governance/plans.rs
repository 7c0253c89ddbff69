//! Plans: named templates a tenant defines once — `free` at 60 requests a minute and 100k
//! tokens a day per end user, `pro` at 600 — and puts keys and end users on, instead of
//! copying limits onto every key. A plan holds limits, access rules, a model allowlist and
//! per-end-user limits; this module owns their admin validation and the narrowing rule.
//!
//! The narrowing rule: a key's own settings narrow its plan, never widen it.
//! - Limits: each field is the tighter of the two — the minimum where both set it, the one
//!   that is set where only one does ([`narrow_limits`]). The admin API also refuses a key
//!   limit above its plan's with a 400 naming it ([`widens`]), so what an admin reads on the
//!   key is not silently overruled.
//! - Models: the intersection ([`narrow_models`]).
//! - Access rules: both must pass. They are kept as two lists rather than merged, since the
//!   intersection of two address or time-window lists is not always one list.
//! - Per-user limits (`user_limits`) count each (tenant, end user) pair in its own limiter
//!   (`end_user::limiter_name`).
//!
//! A tenant-signed token may name a `plan` and a `key`: it is then on both, each narrowing the
//! other by the same rule (its key's effective terms, narrowed by the token's plan and its
//! `models` claim), so a token can only ever narrow what the tenant has already allowed.
//!
//! Plans are per tenant: names are unique within a tenant, and routes are
//! `/admin/tenants/{tenant}/plans[/{name}]`. Lowering a plan below its keys' limits is allowed:
//! the narrowing rule makes the plan's lower limit apply at once.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::RelayError;
use crate::governance::access::{list_admits, ModelGroups, GROUP_PREFIX};
use crate::governance::limits::{parse_limits, Limits, Quota};
use crate::governance::rules::{self, AccessRules};
use crate::support::fields::{parse_any_object, refuse_unknown};

pub const MAX_PLAN_NAME_BYTES: usize = 64;
/// Most entries a plan's model allowlist may hold.
pub const MAX_PLAN_MODELS: usize = 500;

/// A plan as stored and as the admin API shows it (it holds no secret).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub tenant_id: String,
    /// What a key on the plan may do at most (each key has its own limiter).
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub rules: AccessRules,
    /// Public models (or `@groups`) the plan allows; `None`: whatever the tenant allows.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Limits per end user of the tenant on this plan.
    #[serde(default)]
    pub user_limits: Limits,
}

const PLAN_FIELDS: &[&str] = &["limits", "rules", "models", "user_limits"];

/// A plan's name: 1 to 64 of `a-z`, `0-9`, `-`, `_` — it goes in paths and token claims.
pub fn check_plan_name(field: &str, name: &str) -> Result<(), RelayError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PLAN_NAME_BYTES
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(RelayError::invalid_value(
            field,
            "a plan name is 1 to 64 of a-z, 0-9, - and _",
        ))
    }
}

/// The body of `PUT /admin/tenants/{tenant}/plans/{name}`: `{"limits", "rules", "models",
/// "user_limits"}`, each optional (absent or `null`: none). What the GET shows is accepted as
/// it is: `name` and `tenant_id` must then be the path's. `@group` entries of `models` are the
/// caller's to check against the groups that exist.
pub fn parse_plan(bytes: &[u8], tenant_id: &str, name: &str) -> Result<Plan, RelayError> {
    check_plan_name("name", name)?;
    let mut map = parse_any_object(bytes)?;
    let fixed = [
        ("name", name, "must be the plan's name in the path; to rename a plan, put it under the new name and delete the old"),
        ("tenant_id", tenant_id, "a plan stays with the tenant in its path"),
    ];
    let mut shown = Vec::new();
    for (field, stored, why) in fixed {
        if let Some(value) = map.remove(field) {
            shown.push((field, value == json!(stored), why));
        }
    }
    refuse_unknown(&map, PLAN_FIELDS)?;
    if let Some((field, _, why)) = shown.into_iter().find(|(_, same, _)| !same) {
        return Err(RelayError::invalid_value(field, why));
    }
    let limits = |field: &str| match map.get(field) {
        None | Some(Value::Null) => Ok(Limits::default()),
        Some(v) => parse_limits(v, field),
    };
    Ok(Plan {
        name: name.to_string(),
        tenant_id: tenant_id.to_string(),
        limits: limits("limits")?,
        rules: match map.get("rules") {
            None | Some(Value::Null) => AccessRules::default(),
            Some(v) => rules::parse(v).map_err(|e| e.prefixed("rules."))?,
        },
        models: parse_models(map.get("models"))?,
        user_limits: limits("user_limits")?,
    })
}

fn parse_models(value: Option<&Value>) -> Result<Option<Vec<String>>, RelayError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(RelayError::invalid_type(
                "models",
                "an array of strings or null",
            ))
        }
    };
    if items.len() > MAX_PLAN_MODELS {
        return Err(RelayError::invalid_value(
            "models",
            format!("must have at most {MAX_PLAN_MODELS} entries"),
        ));
    }
    let mut models: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("models[{i}]");
        let Value::String(model) = item else {
            return Err(RelayError::invalid_type(&field, "a string"));
        };
        let model = model.trim();
        if model.is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
            return Err(RelayError::invalid_value(
                &field,
                "must be 1 to 256 characters",
            ));
        }
        if !models.iter().any(|m| m == model) {
            models.push(model.to_string());
        }
    }
    Ok(Some(models))
}

// ---- narrowing ----------------------------------------------------------------------------------

fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn tighter_quota(a: Option<Quota>, b: Option<Quota>) -> Option<Quota> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Quota {
            requests: tighter(a.requests, b.requests),
            tokens: tighter(a.tokens, b.tokens),
            cost_micros: tighter(a.cost_micros, b.cost_micros),
        }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// `outer` (a plan's limits) narrowed by `inner` (a key's own): each limit is the tighter of
/// the two. Calendar quotas then share one day boundary: `inner`'s UTC offset when it sets one
/// (a key's own quotas were written against it), else `outer`'s.
pub fn narrow_limits(outer: &Limits, inner: &Limits) -> Limits {
    // A full struct literal: a new field of `Limits` does not compile until it is decided here.
    Limits {
        rpm: tighter(outer.rpm, inner.rpm),
        tpm: tighter(outer.tpm, inner.tpm),
        burst_requests: tighter(outer.burst_requests, inner.burst_requests),
        burst_tokens: tighter(outer.burst_tokens, inner.burst_tokens),
        concurrency: tighter(outer.concurrency, inner.concurrency),
        day: tighter_quota(outer.day, inner.day),
        week: tighter_quota(outer.week, inner.week),
        month: tighter_quota(outer.month, inner.month),
        utc_offset_minutes: if inner.utc_offset_minutes != 0 {
            inner.utc_offset_minutes
        } else {
            outer.utc_offset_minutes
        },
    }
}

/// Every limit of `limits` by its admin name (`rpm`, `day.tokens`), in the order an admin
/// reads them.
fn named(limits: &Limits) -> [(&'static str, Option<u64>); 14] {
    let quota = |q: Option<Quota>, f: fn(&Quota) -> Option<u64>| q.as_ref().and_then(f);
    [
        ("rpm", limits.rpm),
        ("tpm", limits.tpm),
        ("burst_requests", limits.burst_requests),
        ("burst_tokens", limits.burst_tokens),
        ("concurrency", limits.concurrency),
        ("day.requests", quota(limits.day, |q| q.requests)),
        ("day.tokens", quota(limits.day, |q| q.tokens)),
        ("day.cost_micros", quota(limits.day, |q| q.cost_micros)),
        ("week.requests", quota(limits.week, |q| q.requests)),
        ("week.tokens", quota(limits.week, |q| q.tokens)),
        ("week.cost_micros", quota(limits.week, |q| q.cost_micros)),
        ("month.requests", quota(limits.month, |q| q.requests)),
        ("month.tokens", quota(limits.month, |q| q.tokens)),
        ("month.cost_micros", quota(limits.month, |q| q.cost_micros)),
    ]
}

/// The first limit a key sets above its plan's (`limits.rpm`, `limits.day.tokens`), for the
/// admin API to refuse with a 400; `None` when the key only narrows. A limit the plan does not
/// set cannot be widened, and one the key does not set is the plan's.
pub fn widens(plan: &Limits, key: &Limits) -> Option<String> {
    named(plan)
        .into_iter()
        .zip(named(key))
        .find(|((_, p), (_, k))| matches!((p, k), (Some(p), Some(k)) if k > p))
        .map(|((name, _), _)| format!("limits.{name}"))
}

/// The entries of `inner` that `outer` admits, with `inner`'s groups spelled out into their
/// current members; either list `None` means "no restriction", so the other is kept as it is.
pub fn narrow_models(
    outer: &Option<Vec<String>>,
    inner: &Option<Vec<String>>,
    groups: &ModelGroups,
) -> Option<Vec<String>> {
    let (Some(_), Some(inner_list)) = (outer, inner) else {
        return inner.clone().or_else(|| outer.clone());
    };
    let mut out: Vec<String> = Vec::new();
    for model in expand(inner_list, groups) {
        if list_admits(outer, groups, model) && !out.iter().any(|m| m == model) {
            out.push(model.to_string());
        }
    }
    Some(out)
}

/// Concrete model names of a list: a `@group` stands for its current members (a group that
/// no longer exists for none).
fn expand<'a>(list: &'a [String], groups: &'a ModelGroups) -> impl Iterator<Item = &'a str> {
    list.iter().flat_map(move |entry| {
        let members: Vec<&'a str> = match entry.strip_prefix(GROUP_PREFIX) {
            Some(group) => groups
                .get(group)
                .map(|m| m.iter().map(String::as_str).collect())
                .unwrap_or_default(),
            None => vec![entry.as_str()],
        };
        members
    })
}

/// The index of the first entry of a key's allowlist its plan does not allow, for a 400 on
/// `models[i]`. A `@group` the plan lists itself is fine; another group is fine when the plan
/// admits each of its current members.
pub fn models_widen(
    plan: &Option<Vec<String>>,
    key: &Option<Vec<String>>,
    groups: &ModelGroups,
) -> Option<usize> {
    let (Some(plan_list), Some(key_list)) = (plan, key) else {
        return None;
    };
    key_list.iter().position(|entry| {
        if plan_list.contains(entry) {
            return false;
        }
        match entry.strip_prefix(GROUP_PREFIX) {
            Some(group) => groups
                .get(group)
                .is_none_or(|members| members.iter().any(|m| !list_admits(plan, groups, m))),
            None => !list_admits(plan, groups, entry),
        }
    })
}

/// The admin API's check of a key put on (or changed on) `plan`: 400 naming the first key
/// limit above the plan's, or the first model the plan does not allow.
pub fn check_key_on_plan(
    plan: &Plan,
    key_limits: &Limits,
    key_models: &Option<Vec<String>>,
    groups: &ModelGroups,
) -> Result<(), RelayError> {
    if let Some(field) = widens(&plan.limits, key_limits) {
        return Err(RelayError::invalid_value(
            &field,
            format!(
                "must not be above the limit of the key's plan '{}'",
                plan.name
            ),
        ));
    }
    if let Some(i) = models_widen(&plan.models, key_models, groups) {
        return Err(RelayError::invalid_value(
            &format!("models[{i}]"),
            format!("is not allowed by the key's plan '{}'", plan.name),
        ));
    }
    Ok(())
}

/// What a key on a plan may do: the plan's terms narrowed by the key's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnPlan<'a> {
    pub limits: Limits,
    pub models: Option<Vec<String>>,
    /// The plan's rules and the key's: a request must pass both.
    pub rules: [&'a AccessRules; 2],
    /// Per end user of the tenant (`end_user::limiter_name`).
    pub user_limits: &'a Limits,
}

pub fn on_plan<'a>(
    plan: &'a Plan,
    key_limits: &Limits,
    key_models: &Option<Vec<String>>,
    key_rules: &'a AccessRules,
    groups: &ModelGroups,
) -> OnPlan<'a> {
    OnPlan {
        limits: narrow_limits(&plan.limits, key_limits),
        models: narrow_models(&plan.models, key_models, groups),
        rules: [&plan.rules, key_rules],
        user_limits: &plan.user_limits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(v: Value) -> Limits {
        parse_limits(&v, "limits").unwrap()
    }

    fn groups() -> ModelGroups {
        ModelGroups::from([
            (
                "cheap".to_string(),
                vec!["mini".to_string(), "haiku".to_string()],
            ),
            (
                "all".to_string(),
                vec!["mini".to_string(), "haiku".to_string(), "opus".to_string()],
            ),
        ])
    }

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    fn param(e: RelayError) -> String {
        e.param().unwrap_or_default().to_string()
    }

    #[test]
    fn plans_parse_with_their_limits_and_user_limits() {
        let body = json!({
            "limits": {"rpm": 60},
            "user_limits": {"rpm": 10, "day": {"tokens": 100_000}},
            "models": ["mini", " @cheap ", "mini"],
            "rules": {"countries_deny": ["kp"]},
        });
        let plan = parse_plan(body.to_string().as_bytes(), "ten_1", "free").unwrap();
        assert_eq!(plan.name, "free");
        assert_eq!(plan.tenant_id, "ten_1");
        assert_eq!(plan.limits.rpm, Some(60));
        assert_eq!(plan.user_limits.day.and_then(|q| q.tokens), Some(100_000));
        assert_eq!(plan.models, list(&["mini", "@cheap"]));
        assert_eq!(plan.rules.countries_deny, vec!["KP".to_string()]);
        // The GET's body is accepted back as it is.
        let shown = serde_json::to_vec(&plan).unwrap();
        assert_eq!(parse_plan(&shown, "ten_1", "free"), Ok(plan));
        // An empty body is a plan without limits.
        assert_eq!(
            parse_plan(b"", "ten_1", "pro"),
            Ok(Plan {
                name: "pro".into(),
                tenant_id: "ten_1".into(),
                ..Plan::default()
            })
        );
    }

    #[test]
    fn plan_bodies_are_validated_field_by_field() {
        let err =
            |body: Value| param(parse_plan(body.to_string().as_bytes(), "t", "free").unwrap_err());
        assert_eq!(err(json!({"limits": {"rpm": 0}})), "limits.rpm");
        assert_eq!(
            err(json!({"user_limits": {"day": {"tokens": -1}}})),
            "user_limits"
        );
        assert_eq!(err(json!({"user_limits": {"tpm": 0}})), "user_limits.tpm");
        assert_eq!(
            err(json!({"rules": {"ip_allow": ["10.1.2.3/8"]}})),
            "rules.ip_allow[0]"
        );
        assert_eq!(err(json!({"models": "mini"})), "models");
        assert_eq!(err(json!({"models": ["a", ""]})), "models[1]");
        assert_eq!(err(json!({"models": ["a", 3]})), "models[1]");
        assert_eq!(err(json!({"rpm": 60})), "rpm");
        assert_eq!(err(json!({"name": "pro"})), "name");
        assert_eq!(err(json!({"tenant_id": "other"})), "tenant_id");
        assert!(parse_plan(br#"{"name":"free","tenant_id":"t"}"#, "t", "free").is_ok());
        let e = parse_plan(b"[1]", "t", "free").unwrap_err();
        assert_eq!(e.code(), "invalid_json");
    }

    #[test]
    fn plan_names_are_short_lowercase_slugs() {
        for ok in ["free", "pro", "team-2", "a_b", "0", &"x".repeat(64)] {
            assert_eq!(check_plan_name("name", ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Free",
            "pro plan",
            "pro.1",
            "prö",
            "a/b",
            &"x".repeat(65),
        ] {
            assert_eq!(
                param(check_plan_name("name", bad).unwrap_err()),
                "name",
                "{bad}"
            );
        }
        assert_eq!(param(parse_plan(b"{}", "t", "Bad").unwrap_err()), "name");
    }

    #[test]
    fn a_key_narrows_its_plan_field_by_field() {
        let plan = limits(json!({"rpm": 600, "tpm": 100_000, "day": {"tokens": 1_000_000}}));
        let key = limits(
            json!({"rpm": 60, "concurrency": 4, "day": {"requests": 500, "tokens": 2_000_000}}),
        );
        let on = narrow_limits(&plan, &key);
        assert_eq!(
            on,
            limits(json!({
                "rpm": 60,                 // both: the lower
                "tpm": 100_000,            // the plan's only
                "concurrency": 4,          // the key's only
                "day": {"requests": 500, "tokens": 1_000_000},
            }))
        );
        // Narrowing is symmetric in what it keeps, and the empty set changes nothing.
        assert_eq!(narrow_limits(&key, &plan), on);
        assert_eq!(narrow_limits(&plan, &Limits::default()), plan);
        assert_eq!(narrow_limits(&Limits::default(), &key), key);
        // The key's own day boundary wins when it has one.
        let tokyo = limits(json!({"utc_offset_minutes": 540}));
        let berlin = limits(json!({"utc_offset_minutes": 60}));
        assert_eq!(narrow_limits(&berlin, &tokyo).utc_offset_minutes, 540);
        assert_eq!(
            narrow_limits(&berlin, &Limits::default()).utc_offset_minutes,
            60
        );
    }

    #[test]
    fn widening_is_found_and_named() {
        let plan = limits(json!({"rpm": 600, "week": {"cost_micros": 5_000_000}}));
        assert_eq!(
            widens(&plan, &limits(json!({"rpm": 601}))).as_deref(),
            Some("limits.rpm")
        );
        assert_eq!(widens(&plan, &limits(json!({"rpm": 600}))), None);
        assert_eq!(
            widens(&plan, &limits(json!({"tpm": 1_000_000}))),
            None,
            "the plan sets no tpm"
        );
        assert_eq!(
            widens(
                &plan,
                &limits(json!({"rpm": 60, "week": {"cost_micros": 5_000_001}}))
            )
            .as_deref(),
            Some("limits.week.cost_micros")
        );
        assert_eq!(widens(&Limits::default(), &plan), None);
        // Every field is compared.
        let every = limits(json!({
            "rpm": 1, "tpm": 1, "burst_requests": 0, "burst_tokens": 0, "concurrency": 1,
            "day": {"requests": 0, "tokens": 0, "cost_micros": 0},
            "week": {"requests": 0, "tokens": 0, "cost_micros": 0},
            "month": {"requests": 0, "tokens": 0, "cost_micros": 0},
        }));
        let names: Vec<&str> = named(&every).iter().map(|(n, _)| *n).collect();
        for name in names {
            let mut key = serde_json::to_value(&every).unwrap();
            match name.split_once('.') {
                Some((period, field)) => key[period][field] = json!(5),
                None => key[name] = json!(5),
            }
            assert_eq!(
                widens(&every, &limits(key)),
                Some(format!("limits.{name}")),
                "{name}"
            );
        }
    }

    #[test]
    fn the_admin_check_refuses_a_key_above_its_plan() {
        let plan = Plan {
            name: "free".into(),
            limits: limits(json!({"rpm": 60})),
            models: list(&["@cheap"]),
            ..Plan::default()
        };
        let g = groups();
        let e = check_key_on_plan(&plan, &limits(json!({"rpm": 61})), &None, &g).unwrap_err();
        assert_eq!((e.status(), param(e)), (400, "limits.rpm".to_string()));
        let e =
            check_key_on_plan(&plan, &Limits::default(), &list(&["mini", "opus"]), &g).unwrap_err();
        assert_eq!(param(e), "models[1]");
        assert_eq!(
            check_key_on_plan(
                &plan,
                &limits(json!({"rpm": 10})),
                &list(&["haiku", "@cheap"]),
                &g
            ),
            Ok(())
        );
    }

    #[test]
    fn models_intersect_and_groups_are_spelled_out() {
        let g = groups();
        assert_eq!(narrow_models(&None, &None, &g), None);
        assert_eq!(
            narrow_models(&list(&["@cheap"]), &None, &g),
            list(&["@cheap"])
        );
        assert_eq!(narrow_models(&None, &list(&["opus"]), &g), list(&["opus"]));
        assert_eq!(
            narrow_models(&list(&["@cheap"]), &list(&["@all"]), &g),
            list(&["mini", "haiku"])
        );
        assert_eq!(
            narrow_models(
                &list(&["opus", "mini"]),
                &list(&["@cheap", "opus", "mini"]),
                &g
            ),
            list(&["mini", "opus"])
        );
        assert_eq!(
            narrow_models(&list(&["opus"]), &list(&["mini"]), &g),
            list(&[])
        );
        // A group that no longer exists admits nothing, on either side.
        assert_eq!(
            narrow_models(&list(&["@gone"]), &list(&["mini"]), &g),
            list(&[])
        );
        assert_eq!(
            narrow_models(&list(&["mini"]), &list(&["@gone"]), &g),
            list(&[])
        );
    }

    #[test]
    fn models_widen_names_the_first_entry_beyond_the_plan() {
        let g = groups();
        assert_eq!(models_widen(&None, &list(&["opus"]), &g), None);
        assert_eq!(models_widen(&list(&["mini"]), &None, &g), None);
        assert_eq!(
            models_widen(&list(&["@cheap"]), &list(&["@cheap", "haiku"]), &g),
            None
        );
        assert_eq!(models_widen(&list(&["@all"]), &list(&["@cheap"]), &g), None);
        assert_eq!(
            models_widen(&list(&["@cheap"]), &list(&["mini", "@all"]), &g),
            Some(1)
        );
        assert_eq!(
            models_widen(&list(&["mini"]), &list(&["@gone"]), &g),
            Some(0)
        );
    }

    #[test]
    fn a_key_on_a_plan_gets_both_rule_sets_and_the_plan_user_limits() {
        let plan = parse_plan(
            json!({
                "limits": {"rpm": 600},
                "rules": {"countries_deny": ["KP"]},
                "models": ["@cheap"],
                "user_limits": {"rpm": 60, "day": {"tokens": 100_000}},
            })
            .to_string()
            .as_bytes(),
            "ten_1",
            "free",
        )
        .unwrap();
        let key_rules = rules::parse(&json!({"ip_allow": ["10.0.0.0/8"]})).unwrap();
        let on = on_plan(
            &plan,
            &limits(json!({"rpm": 100})),
            &list(&["mini", "opus"]),
            &key_rules,
            &groups(),
        );
        assert_eq!(on.limits.rpm, Some(100));
        assert_eq!(on.models, list(&["mini"]));
        assert_eq!(on.rules, [&plan.rules, &key_rules]);
        assert_eq!(on.user_limits.rpm, Some(60));
    }
}
