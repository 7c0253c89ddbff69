//! Cost-allocation tags: what a tag is (`team:search`), the tags a key carries and the patterns
//! of tags its requests may add with the `x-relay-tags` header, the canonical form stored in the
//! usage row's `tags` column, and the tag budgets a request's tags make it reserve against.
//!
//! A tag set holds at most one value per name. Without that rule "spend by team" would count a
//! request tagged `team:a,team:b` twice, and no breakdown by tag could add up to the total.
//! Everything here is pure; the edge reads the header and the key's stored tags.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RelayError;
use crate::governance::budget::{self, Budget};
use crate::governance::limits::protocol::BudgetCtx;

/// The header a request adds tags with: `x-relay-tags: env:staging, feature:checkout`.
pub const TAGS_HEADER: &str = "x-relay-tags";
/// Tags on one request, the key's and the header's together.
pub const MAX_TAGS: usize = 16;
pub const MAX_NAME_LEN: usize = 32;
pub const MAX_VALUE_LEN: usize = 64;
/// Patterns a key may list in `allowed_request_tags`.
pub const MAX_PATTERNS: usize = 32;
/// Tag budgets one tenant may have: each is a limiter object a request may have to call.
pub const MAX_TAG_BUDGETS: usize = 64;
/// Sixteen of the longest tags and their separators, with room for spaces.
const MAX_HEADER_BYTES: usize = 2048;

const FORMAT: &str = "must be name:value, the name 1 to 32 of a-z, 0-9, _ and -, the value 1 to 64 of A-Z, a-z, 0-9, _, . and -";

/// One tag, `name:value`. Ordered by name, then value, which is the canonical order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    name: String,
    value: String,
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_value(value: &str) -> bool {
    (1..=MAX_VALUE_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

impl Tag {
    /// `name:value`, exactly (no trimming: the caller decides what whitespace means).
    pub fn parse(s: &str) -> Result<Tag, &'static str> {
        let (name, value) = s.split_once(':').ok_or(FORMAT)?;
        if !valid_name(name) || !valid_value(value) {
            return Err(FORMAT);
        }
        Ok(Tag {
            name: name.to_string(),
            value: value.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// The tag between commas, as it appears in `,` + the `tags` column + `,`: what a D1 query
    /// filters with, `instr(',' || tags || ',', ?1) > 0` (not LIKE, where `_` is a wildcard
    /// and tags may hold it).
    pub fn delimited(&self) -> String {
        format!(",{self},")
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.value)
    }
}

impl Serialize for Tag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tag, D::Error> {
        let s = String::deserialize(d)?;
        Tag::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A tag name on its own, as `by=tag:<name>` groups by it.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if valid_name(name) {
        Ok(())
    } else {
        Err("a tag name is 1 to 32 of a-z, 0-9, _ and -")
    }
}

/// What a key lets its requests add: one tag exactly (`feature:checkout`), or any value of one
/// name (`env:*`). `*` stands only for a whole value, so a pattern never admits a name the
/// operator did not write down.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TagPattern {
    AnyValue(String),
    Exact(Tag),
}

impl TagPattern {
    pub fn parse(s: &str) -> Result<TagPattern, &'static str> {
        match s.split_once(':') {
            Some((name, "*")) if valid_name(name) => Ok(TagPattern::AnyValue(name.to_string())),
            Some((_, value)) if value.contains('*') => {
                Err("'*' may only stand for a whole value (env:*)")
            }
            _ => Tag::parse(s).map(TagPattern::Exact),
        }
    }

    pub fn matches(&self, tag: &Tag) -> bool {
        match self {
            TagPattern::AnyValue(name) => tag.name == *name,
            TagPattern::Exact(t) => t == tag,
        }
    }
}

impl fmt::Display for TagPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagPattern::AnyValue(name) => write!(f, "{name}:*"),
            TagPattern::Exact(t) => t.fmt(f),
        }
    }
}

impl Serialize for TagPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TagPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TagPattern, D::Error> {
        let s = String::deserialize(d)?;
        TagPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The tags of one request: sorted, one value per name, at most `MAX_TAGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagSet(BTreeMap<String, String>);

impl TagSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The value of `name`, if the set has it.
    pub fn value_of(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn contains(&self, tag: &Tag) -> bool {
        self.value_of(&tag.name) == Some(tag.value.as_str())
    }

    pub fn tags(&self) -> impl Iterator<Item = Tag> + '_ {
        self.0.iter().map(|(name, value)| Tag {
            name: name.clone(),
            value: value.clone(),
        })
    }

    /// The `tags` column: the tags sorted, comma-separated, no spaces; `""` for none. One set
    /// has one spelling, so two rows with the same tags store the same text.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(name);
            out.push(':');
            out.push_str(value);
        }
        out
    }

    /// The set a stored `tags` column holds. Reading is lenient — a malformed item is skipped
    /// and the first value of a name kept — so that one odd row cannot fail a whole report.
    pub fn from_canonical(stored: &str) -> TagSet {
        let mut set = BTreeMap::new();
        for item in stored.split(',') {
            if let Ok(tag) = Tag::parse(item.trim()) {
                set.entry(tag.name).or_insert(tag.value);
            }
        }
        TagSet(set)
    }

    /// Add `tag`; `Err` (with why) when the set has another value for its name or is full.
    /// Adding a tag the set already has changes nothing.
    fn insert(&mut self, tag: Tag) -> Result<(), String> {
        match self.0.get(&tag.name) {
            Some(v) if *v == tag.value => Ok(()),
            Some(v) => Err(format!(
                "'{}' already has the value '{v}'; a request has one value per tag name",
                tag.name
            )),
            None if self.0.len() >= MAX_TAGS => {
                Err(format!("a request carries at most {MAX_TAGS} tags"))
            }
            None => {
                self.0.insert(tag.name, tag.value);
                Ok(())
            }
        }
    }
}

/// A key's `tags` from the admin API: an array of `name:value` strings, at most `MAX_TAGS`,
/// one value per name. Errors name the item (`tags[2]`). `null` is no tags.
pub fn parse_key_tags(value: &Value, field: &str) -> Result<Vec<Tag>, RelayError> {
    let items = string_items(value, field, MAX_TAGS, "tags")?;
    let mut set = TagSet::default();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let tag = Tag::parse(item).map_err(|m| RelayError::invalid_value(&at, m))?;
        set.insert(tag)
            .map_err(|m| RelayError::invalid_value(&at, m))?;
    }
    Ok(set.tags().collect())
}

/// A key's `allowed_request_tags` from the admin API: patterns like `env:*` and
/// `feature:checkout`. Errors name the item (`allowed_request_tags[1]`).
pub fn parse_allowed_request_tags(
    value: &Value,
    field: &str,
) -> Result<Vec<TagPattern>, RelayError> {
    let items = string_items(value, field, MAX_PATTERNS, "patterns")?;
    let mut out: Vec<TagPattern> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let pattern = TagPattern::parse(item)
            .map_err(|m| RelayError::invalid_value(&format!("{field}[{i}]"), m))?;
        if !out.contains(&pattern) {
            out.push(pattern);
        }
    }
    Ok(out)
}

fn string_items<'a>(
    value: &'a Value,
    field: &str,
    max: usize,
    what: &str,
) -> Result<Vec<&'a str>, RelayError> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(RelayError::invalid_type(field, "an array of strings")),
    };
    if items.len() > max {
        return Err(RelayError::invalid_value(
            field,
            format!("at most {max} {what}"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .ok_or_else(|| RelayError::invalid_type(&format!("{field}[{i}]"), "a string"))
        })
        .collect()
}

/// The tags a request carries: its key's, plus those its `x-relay-tags` header adds, each of
/// which one of the key's `allowed` patterns must match. Header items are comma-separated with
/// optional spaces; empty items are skipped (HTTP list syntax allows them). Any refusal is a
/// 400 naming `x-relay-tags`, because the key's own tags were checked when they were stored.
pub fn request_tags(
    key_tags: &[Tag],
    header: Option<&str>,
    allowed: &[TagPattern],
) -> Result<TagSet, RelayError> {
    let mut set = TagSet::default();
    for tag in key_tags {
        // Stored tags were validated on write; an impossible clash keeps the first.
        let _ = set.insert(tag.clone());
    }
    let Some(header) = header else {
        return Ok(set);
    };
    let refuse = |m: String| RelayError::invalid_value(TAGS_HEADER, m);
    if header.len() > MAX_HEADER_BYTES {
        return Err(refuse(format!("must be at most {MAX_HEADER_BYTES} bytes")));
    }
    for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let tag = Tag::parse(item).map_err(|m| refuse(format!("'{item}' {m}")))?;
        if set.contains(&tag) {
            continue;
        }
        if !allowed.iter().any(|p| p.matches(&tag)) {
            return Err(refuse(format!(
                "this key may not add the tag '{tag}' (its allowed_request_tags do not match it)"
            )));
        }
        set.insert(tag).map_err(refuse)?;
    }
    Ok(set)
}

// ---- tag budgets ------------------------------------------------------------------------------

/// A tenant's budgets per tag (`{"team:search": {budget}}`), each held by a limiter object of
/// its own, so spend by one team is counted exactly however many keys carry its tag.
pub type TagBudgets = BTreeMap<Tag, Budget>;

/// Tag budgets from the admin API: an object from tag to budget, each budget checked as a
/// tenant's is. Errors name the entry (`tag_budgets.team:search.hard_micros`).
pub fn parse_tag_budgets(
    value: &Value,
    field: &str,
    allow_loopback_http: bool,
) -> Result<TagBudgets, RelayError> {
    let entries = match value {
        Value::Null => return Ok(TagBudgets::new()),
        Value::Object(entries) => entries,
        _ => {
            return Err(RelayError::invalid_type(
                field,
                "an object from tag to budget",
            ))
        }
    };
    if entries.len() > MAX_TAG_BUDGETS {
        return Err(RelayError::invalid_value(
            field,
            format!("at most {MAX_TAG_BUDGETS} tag budgets"),
        ));
    }
    let mut out = TagBudgets::new();
    for (key, v) in entries {
        let at = format!("{field}.{key}");
        let tag = Tag::parse(key).map_err(|m| RelayError::invalid_value(&at, m))?;
        let b: Budget = serde_json::from_value(v.clone())
            .map_err(|e| RelayError::invalid_value(&at, e.to_string()))?;
        budget::check_budget(&b, &at, allow_loopback_http)?;
        out.insert(tag, b);
    }
    Ok(out)
}

/// The limiter object holding a tag budget's spend. Under the tenant's own name, so the same
/// tag in two tenants is two budgets; tenant ids hold no `/`, so no two names collide.
pub fn tag_budget_object(tenant_id: &str, tag: &Tag) -> String {
    format!("tenant:{tenant_id}/tag:{tag}")
}

/// One tag budget a request reserves against: where, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagBudgetRef {
    pub tag: Tag,
    /// The limiter object (see `tag_budget_object`), in the tenant's jurisdiction.
    pub object: String,
    /// What the `Reserve`/`Lease`/`Settle` calls to that object carry as `budget`.
    pub ctx: BudgetCtx,
}

/// The tag budgets a request with `tags` must reserve against, in tag order (so that two
/// requests never call the objects in different orders): one for each of its tags that has a
/// budget. A request is admitted only when all of them, and its key and tenant, admit it.
pub fn budgets_for(tenant_id: &str, tags: &TagSet, budgets: &TagBudgets) -> Vec<TagBudgetRef> {
    tags.tags()
        .filter_map(|tag| {
            let b = budgets.get(&tag)?;
            Some(TagBudgetRef {
                object: tag_budget_object(tenant_id, &tag),
                ctx: BudgetCtx {
                    tenant_id: tenant_id.to_string(),
                    budget: b.clone(),
                    tag: Some(tag.to_string()),
                },
                tag,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    fn patterns(list: &[&str]) -> Vec<TagPattern> {
        list.iter().map(|p| TagPattern::parse(p).unwrap()).collect()
    }

    fn param(e: RelayError) -> String {
        e.param().unwrap_or_default().to_string()
    }

    #[test]
    fn tags_are_name_colon_value_within_their_alphabets() {
        assert_eq!(tag("team:search").name(), "team");
        assert_eq!(tag("team:search").value(), "search");
        assert!(Tag::parse("env_2-x:Prod.EU-1_a").is_ok());
        let name32 = "a".repeat(32);
        let value64 = "V".repeat(64);
        assert!(Tag::parse(&format!("{name32}:{value64}")).is_ok());
        for bad in [
            "team",
            ":search",
            "team:",
            "Team:search",
            "team:se arch",
            "team:se,arch",
            "team:a:b",
            "tëam:x",
            "team:*",
            &format!("{}:x", "a".repeat(33)),
            &format!("x:{}", "v".repeat(65)),
        ] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(tag("team:search").delimited(), ",team:search,");
        assert_eq!(serde_json::to_value(tag("a:b")).unwrap(), json!("a:b"));
        assert!(serde_json::from_value::<Tag>(json!("A:b")).is_err());
    }

    #[test]
    fn patterns_take_a_star_only_as_the_whole_value() {
        let any_env = TagPattern::parse("env:*").unwrap();
        assert!(any_env.matches(&tag("env:prod")));
        assert!(!any_env.matches(&tag("environment:prod")));
        let exact = TagPattern::parse("feature:checkout").unwrap();
        assert!(exact.matches(&tag("feature:checkout")));
        assert!(!exact.matches(&tag("feature:cart")));
        for bad in ["env:pr*", "env:*x", "*:prod", "*", "env*:x", "env"] {
            assert!(TagPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(any_env.to_string(), "env:*");
    }

    #[test]
    fn the_canonical_form_is_sorted_and_reads_back() {
        let set = request_tags(
            &[tag("team:search"), tag("app:web")],
            Some("env:prod"),
            &patterns(&["env:*"]),
        )
        .unwrap();
        assert_eq!(set.canonical(), "app:web,env:prod,team:search");
        assert_eq!(TagSet::from_canonical(&set.canonical()), set);
        assert_eq!(TagSet::default().canonical(), "");
        assert!(TagSet::from_canonical("").is_empty());
        // Odd stored text is read leniently.
        let odd = TagSet::from_canonical("team:a,BAD,team:b, env:x ,");
        assert_eq!(odd.canonical(), "env:x,team:a");
    }

    #[test]
    fn key_tags_are_validated_naming_the_item() {
        let ok = parse_key_tags(&json!(["team:search", "app:web", "team:search"]), "tags");
        assert_eq!(ok.unwrap(), vec![tag("app:web"), tag("team:search")]);
        assert_eq!(
            param(parse_key_tags(&json!(["team:search", "app:web", "Env:x"]), "tags").unwrap_err()),
            "tags[2]"
        );
        assert_eq!(
            param(parse_key_tags(&json!(["team:a", "team:b"]), "tags").unwrap_err()),
            "tags[1]",
            "one value per name"
        );
        assert_eq!(
            param(parse_key_tags(&json!(["a:b", 5]), "tags").unwrap_err()),
            "tags[1]"
        );
        assert_eq!(
            param(parse_key_tags(&json!("team:a"), "tags").unwrap_err()),
            "tags"
        );
        let seventeen: Vec<String> = (0..17).map(|i| format!("t{i}:v")).collect();
        assert_eq!(
            param(parse_key_tags(&json!(seventeen), "tags").unwrap_err()),
            "tags"
        );
        assert_eq!(parse_key_tags(&Value::Null, "tags").unwrap(), vec![]);
        assert_eq!(
            param(
                parse_allowed_request_tags(
                    &json!(["env:*", "feature:che*"]),
                    "allowed_request_tags"
                )
                .unwrap_err()
            ),
            "allowed_request_tags[1]"
        );
        assert_eq!(
            parse_allowed_request_tags(&json!(["env:*", "env:*"]), "allowed_request_tags")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_request_adds_only_what_its_key_allows() {
        let key = [tag("team:search")];
        let allowed = patterns(&["env:*", "feature:checkout"]);
        let set = request_tags(&key, Some(" env:staging , feature:checkout,,"), &allowed).unwrap();
        assert_eq!(set.canonical(), "env:staging,feature:checkout,team:search");
        let refused = |h: &str| param(request_tags(&key, Some(h), &allowed).unwrap_err());
        assert_eq!(refused("feature:cart"), TAGS_HEADER);
        assert_eq!(
            refused("team:ads"),
            TAGS_HEADER,
            "cannot re-attribute the key's team"
        );
        assert_eq!(refused("env:a,env:b"), TAGS_HEADER, "one value per name");
        assert_eq!(refused("env"), TAGS_HEADER);
        assert_eq!(refused(&"x".repeat(3000)), TAGS_HEADER);
        // Repeating a tag the key already has is harmless, and needs no pattern.
        let set = request_tags(&key, Some("team:search"), &[]).unwrap();
        assert_eq!(set.canonical(), "team:search");
        // No header: the key's tags.
        assert_eq!(request_tags(&key, None, &[]).unwrap().len(), 1);
        // Sixteen in all, key's and request's together.
        let many: Vec<String> = (0..16).map(|i| format!("f{i}:x")).collect();
        let any: Vec<TagPattern> = (0..16)
            .map(|i| TagPattern::AnyValue(format!("f{i}")))
            .collect();
        let e = request_tags(&key, Some(&many.join(",")), &any).unwrap_err();
        assert_eq!(param(e), TAGS_HEADER);
        assert!(request_tags(&[], Some(&many.join(",")), &any).is_ok());
    }

    fn budget(hard: u64) -> Value {
        json!({"hard_micros": hard})
    }

    #[test]
    fn tag_budgets_map_a_requests_tags_to_their_objects() {
        let budgets = parse_tag_budgets(
            &json!({"team:search": budget(1_000), "env:prod": budget(5_000)}),
            "tag_budgets",
            false,
        )
        .unwrap();
        let tags = TagSet::from_canonical("app:web,env:prod,team:search");
        let refs = budgets_for("ten_1", &tags, &budgets);
        let objects: Vec<&str> = refs.iter().map(|r| r.object.as_str()).collect();
        assert_eq!(
            objects,
            ["tenant:ten_1/tag:env:prod", "tenant:ten_1/tag:team:search"]
        );
        assert_eq!(refs[1].ctx.budget.hard_micros, Some(1_000));
        assert_eq!(refs[1].ctx.tag.as_deref(), Some("team:search"));
        assert!(budgets_for("ten_1", &TagSet::from_canonical("team:ads"), &budgets).is_empty());
        assert_eq!(
            param(
                parse_tag_budgets(&json!({"Team:x": budget(1)}), "tag_budgets", false).unwrap_err()
            ),
            "tag_budgets.Team:x"
        );
        assert_eq!(
            param(
                parse_tag_budgets(
                    &json!({"team:x": {"soft_micros": 5, "hard_micros": 1}}),
                    "tag_budgets",
                    false
                )
                .unwrap_err()
            ),
            "tag_budgets.team:x.soft_micros"
        );
        assert_eq!(
            param(parse_tag_budgets(&json!([1]), "tag_budgets", false).unwrap_err()),
            "tag_budgets"
        );
    }
}
