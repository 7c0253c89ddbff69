//! The model map: each public model name and the routes (channel, upstream model, priority,
//! weight) that may serve it, with an optional canary and shadow route (`canary.rs`), stored as
//! one KV document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::RelayError;
use crate::governance::access::{model_allowed, ModelGroups};
use crate::governance::grant::KeyGrant;
use crate::routing::canary::{Canary, RouteRef, Shadow};

/// What a public model name resolves to. `channel_id`/`upstream_model` name the first route
/// (the only one, for a plain entry); `routes` lists every candidate when there are several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTarget {
    pub channel_id: String,
    pub upstream_model: String,
    /// When the entry was written (Unix seconds): `/v1/models` reports it as `created`.
    #[serde(default)]
    pub created: i64,
    /// Candidate channels (and upstream models: a route to another model is a fallback the
    /// map allows by listing it), tried by priority, then weight and the caller's geography.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Hedging: when the first attempt has no response headers within this many ms, the next
    /// route (on another channel) starts too, and the first to answer wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_ms: Option<u64>,
    /// A route trying a share of the traffic, rolled back automatically when it does worse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// A route getting a copy of a share of the requests, its answers discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub channel_id: String,
    pub upstream_model: String,
    /// Higher first.
    #[serde(default)]
    pub priority: i32,
    /// Share of traffic among routes of one priority; 0 = standby.
    #[serde(default = "one_weight")]
    pub weight: u32,
}

fn one_weight() -> u32 {
    1
}

impl ModelTarget {
    /// Every candidate route, the plain entry's one included.
    pub fn all_routes(&self) -> Vec<Route> {
        if !self.routes.is_empty() {
            return self.routes.clone();
        }
        vec![Route {
            channel_id: self.channel_id.clone(),
            upstream_model: self.upstream_model.clone(),
            priority: 0,
            weight: 1,
        }]
    }

    pub fn same_routes(&self, other: &ModelTarget) -> bool {
        self.all_routes() == other.all_routes() && self.hedge_ms == other.hedge_ms
    }

    /// Whether any route, the canary's and the shadow's included, goes to `channel_id`.
    pub fn uses_channel(&self, channel_id: &str) -> bool {
        self.all_routes().iter().any(|r| r.channel_id == channel_id)
            || self.extra_routes().any(|r| r.channel_id == channel_id)
    }

    /// The entry's own routes as the canary and shadow compare with them.
    pub fn route_refs(&self) -> Vec<RouteRef> {
        self.all_routes()
            .into_iter()
            .map(|r| RouteRef {
                channel_id: r.channel_id,
                upstream_model: r.upstream_model,
            })
            .collect()
    }

    /// The canary's and the shadow's routes, where there are.
    pub fn extra_routes(&self) -> impl Iterator<Item = &RouteRef> {
        let canary = self.canary.as_ref().map(|c| &c.route);
        let shadow = self.shadow.as_ref().map(|s| &s.route);
        canary.into_iter().chain(shadow)
    }

    /// The entry after its canary was rolled back: the canary kept, at 0 % (so the operator
    /// sees what was tried, and can raise it again once fixed).
    pub fn with_canary_paused(&self) -> ModelTarget {
        let mut target = self.clone();
        if let Some(c) = target.canary.as_mut() {
            c.percent = 0;
        }
        target
    }
}

/// Public model name → target. A BTreeMap, so listings come out sorted.
pub type ModelMap = BTreeMap<String, ModelTarget>;

/// The body of `PUT /admin/model-groups/{name}`: `{"models": [...]}`.
/// Price ratio per model group, parts per million: a request for a model in a group is charged
/// at that ratio (times the tenant's own). One KV document beside the groups.
pub type GroupMultipliers = BTreeMap<String, u64>;

pub fn parse_model_map(text: &str) -> Result<ModelMap, String> {
    serde_json::from_str(text).map_err(|e| format!("model map in KV is not valid: {e}"))
}

/// The target of a public model this key may use. An unknown model and a forbidden one get the
/// same 404, so a key cannot probe which models exist beyond its own.
pub fn resolve<'a>(
    map: &'a ModelMap,
    groups: &ModelGroups,
    grant: &KeyGrant,
    model: &str,
) -> Result<&'a ModelTarget, RelayError> {
    map.get(model)
        .filter(|_| model_allowed(grant, groups, model))
        .ok_or_else(|| RelayError::ModelNotFound {
            model: model.to_string(),
        })
}

/// The public models this key may use, sorted.
pub fn visible_models<'a>(
    map: &'a ModelMap,
    groups: &ModelGroups,
    grant: &KeyGrant,
) -> Vec<(&'a str, &'a ModelTarget)> {
    map.iter()
        .filter(|(m, _)| model_allowed(grant, groups, m))
        .map(|(m, t)| (m.as_str(), t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::grant::KeyGrant;

    fn grant() -> KeyGrant {
        KeyGrant {
            key_id: "k".into(),
            tenant_id: "t".into(),
            ..KeyGrant::default()
        }
    }

    #[test]
    fn allowlists_intersect() {
        let m = map(&["a", "b", "c"]);
        let mut g = grant();
        assert_eq!(visible_models(&m, &ModelGroups::new(), &g).len(), 3);
        g.tenant_models = Some(vec!["a".into(), "b".into()]);
        g.key_models = Some(vec!["b".into(), "c".into()]);
        let names: Vec<_> = visible_models(&m, &ModelGroups::new(), &g)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["b"]);
        assert_eq!(
            resolve(&m, &ModelGroups::new(), &g, "b")
                .unwrap()
                .upstream_model,
            "up-b"
        );
        assert_eq!(
            resolve(&m, &ModelGroups::new(), &g, "a")
                .unwrap_err()
                .code(),
            "model_not_found"
        );
        assert_eq!(
            resolve(&m, &ModelGroups::new(), &g, "zzz")
                .unwrap_err()
                .code(),
            "model_not_found"
        );
    }

    fn map(models: &[&str]) -> ModelMap {
        models
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    ModelTarget {
                        channel_id: "c".into(),
                        upstream_model: format!("up-{m}"),
                        created: 0,
                        routes: Vec::new(),
                        hedge_ms: None,
                        canary: None,
                        shadow: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn entries_without_canary_or_shadow_read_and_write_as_before() {
        let old = r#"{"channel_id":"c","upstream_model":"m","created":5,"routes":[{"channel_id":"c","upstream_model":"m","priority":1,"weight":2}]}"#;
        let t: ModelTarget = serde_json::from_str(old).unwrap();
        assert_eq!((t.canary.as_ref(), t.shadow.as_ref()), (None, None));
        assert_eq!(serde_json::to_string(&t).unwrap(), old);
        let with: ModelTarget = serde_json::from_value(serde_json::json!({
            "channel_id": "c", "upstream_model": "m",
            "canary": {"route": {"channel_id": "c2", "upstream_model": "m2"}, "percent": 5},
            "shadow": {"route": {"channel_id": "c3", "upstream_model": "m"}, "percent": 10},
        }))
        .unwrap();
        assert!(with.uses_channel("c2") && with.uses_channel("c3") && !with.uses_channel("c4"));
        let back: ModelTarget =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
        let paused = with.with_canary_paused();
        assert_eq!(paused.canary.map(|c| c.percent), Some(0));
    }

    #[test]
    fn groups_admit_their_members_as_they_are_now() {
        let m = map(&["mini", "big", "other"]);
        let mut groups: ModelGroups = [("cheap".to_string(), vec!["mini".to_string()])].into();
        let mut g = grant();
        g.key_models = Some(vec!["@cheap".into(), "other".into()]);
        let names = |groups: &ModelGroups| -> Vec<String> {
            visible_models(&m, groups, &g)
                .into_iter()
                .map(|(n, _)| n.to_string())
                .collect()
        };
        assert_eq!(names(&groups), vec!["mini", "other"]);
        groups.insert("cheap".into(), vec!["mini".into(), "big".into()]);
        assert_eq!(
            names(&groups),
            vec!["big", "mini", "other"],
            "a group change applies at once"
        );
        groups.clear();
        assert_eq!(
            names(&groups),
            vec!["other"],
            "a deleted group admits nothing"
        );
    }
}
