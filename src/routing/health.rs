//! The health of one channel, shared by every isolate: a circuit breaker per upstream model
//! and the cooldowns of its upstream keys. One `ChannelHealth` Durable Object per channel holds
//! it; isolates keep a copy no older than about a second, fold their own outcomes into it at
//! once, and report them to the object in batches. Pure: time comes in as `now_ms`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::governance::alerts::{AlertQueue, PendingAlert, WebhookFormat};
use crate::governance::notices::{Notice, Severity};
use crate::routing::breaker::{
    Admit, Breaker, BreakerConfig, BreakerPhase, BreakerState, BreakerView,
};
use crate::routing::key_pool::{KeyPool, KeyView};

/// Outcomes an isolate gathered since its last report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Per upstream model: (successes, failures) of ordinary attempts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, (u32, u32)>,
    /// Per upstream model: probe results, in order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub probes: BTreeMap<String, Vec<bool>>,
    /// Key fingerprint, upstream status, Retry-After in ms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<(String, u16, Option<u64>)>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty() && self.probes.is_empty() && self.keys.is_empty()
    }

    /// True when it carries news others should hear at once (a failure, a key's trouble, a
    /// probe's verdict); successes alone can wait for the next regular report.
    pub fn urgent(&self) -> bool {
        !self.probes.is_empty()
            || !self.keys.is_empty()
            || self.outcomes.values().any(|(_, f)| *f > 0)
    }
}

/// A call to a `ChannelHealth` Durable Object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HealthCall {
    /// Fold in a report; answer with the whole state.
    Report {
        report: Report,
        #[serde(default)]
        breaker: BreakerConfig,
        /// The channel this object is about (for alerts).
        #[serde(default)]
        channel: String,
    },
    /// May a request probe this half-open (channel, model)? At most one at a time, worldwide.
    Admit {
        model: String,
        #[serde(default)]
        breaker: BreakerConfig,
    },
    /// An operator re-enables a key disabled after 401/403.
    EnableKey { fingerprint: String },
}

/// Everything a channel's health object remembers; also the copy isolates keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelHealth {
    #[serde(default)]
    pub breakers: BTreeMap<String, Breaker>,
    #[serde(default)]
    pub keys: KeyPool,
    /// Operator alerts not yet delivered (the object's alarm sends them).
    #[serde(default, skip_serializing_if = "AlertQueue::is_empty")]
    pub alerts: AlertQueue,
    /// Upstream models whose error rate is above the spike threshold (alerted once per spike).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub spiking: std::collections::BTreeSet<String>,
}

/// Where operator alerts go (`ALERT_WEBHOOK_URL`, `ALERT_WEBHOOK_FORMAT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertTarget {
    pub url: String,
    pub format: WebhookFormat,
}

/// An error-rate spike: at least this share of a window's outcomes failed (and at least the
/// breaker's `min_requests` outcomes), below what may already have opened the breaker.
pub const SPIKE_PERCENT: u64 = 25;

/// How a (channel, model) stands for the next attempt, as an isolate decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Half-open: ask the health object whether this attempt may be the probe.
    NeedsProbe,
    Shut,
}

impl ChannelHealth {
    fn breaker(&mut self, model: &str, config: BreakerConfig) -> &mut Breaker {
        let b = self
            .breakers
            .entry(model.to_string())
            .or_insert_with(|| Breaker::new(config));
        b.set_config(config);
        b
    }

    pub fn apply(&mut self, report: &Report, config: BreakerConfig, now_ms: i64) {
        for (model, (ok, failed)) in &report.outcomes {
            self.breaker(model, config).record(*ok, *failed, now_ms);
        }
        for (model, results) in &report.probes {
            for ok in results {
                self.breaker(model, config).record_probe(*ok, now_ms);
            }
        }
        for (fp, status, retry_after_ms) in &report.keys {
            self.keys.on_status(fp, *status, *retry_after_ms, now_ms);
        }
    }

    /// One call, as the Durable Object receives it; returns the reply and whether the state
    /// changed. `alerts`: where to send operator alerts, if anywhere.
    pub fn handle(
        &mut self,
        call: HealthCall,
        now_ms: i64,
        alerts: Option<&AlertTarget>,
    ) -> (serde_json::Value, bool) {
        match call {
            HealthCall::Report {
                report,
                breaker,
                channel,
            } => {
                let changed = !report.is_empty();
                let before: BTreeMap<String, BreakerPhase> = self
                    .breakers
                    .iter()
                    .map(|(m, b)| (m.clone(), b.state(now_ms).phase()))
                    .collect();
                self.apply(&report, breaker, now_ms);
                if let Some(target) = alerts {
                    self.raise_alerts(&channel, &before, target, now_ms);
                }
                (self.public_state(), changed)
            }
            HealthCall::Admit { model, breaker } => {
                let admit = self.breaker(&model, breaker).admit(now_ms);
                (serde_json::to_value(admit).unwrap_or_default(), true)
            }
            HealthCall::EnableKey { fingerprint } => {
                self.keys.enable(&fingerprint);
                (self.public_state(), true)
            }
        }
    }

    /// What isolates copy: breakers and keys (the alert bookkeeping stays in the object).
    fn public_state(&self) -> serde_json::Value {
        serde_json::json!({"breakers": self.breakers, "keys": self.keys})
    }

    /// Queue an alert for each breaker that just opened, and for each model whose error rate
    /// just crossed `SPIKE_PERCENT` (once per spike: it must fall back below to alert again).
    fn raise_alerts(
        &mut self,
        channel: &str,
        before: &BTreeMap<String, BreakerPhase>,
        target: &AlertTarget,
        now_ms: i64,
    ) {
        let mut raised = Vec::new();
        for (model, b) in &self.breakers {
            let view = b.view(now_ms);
            let was = before.get(model).copied().unwrap_or(BreakerPhase::Closed);
            if view.state == BreakerPhase::Open && was != BreakerPhase::Open {
                raised.push(("circuit_breaker.opened", model.clone(), view));
            }
            let total = view.successes + view.failures;
            let spiking = view.state == BreakerPhase::Closed
                && total >= u64::from(b.config().min_requests.max(1))
                && view.failures * 100 >= total * SPIKE_PERCENT;
            if spiking && !self.spiking.contains(model) {
                raised.push(("channel.error_rate_spike", model.clone(), view));
            }
            if !spiking && view.state == BreakerPhase::Closed {
                self.spiking.remove(model);
            }
        }
        for (kind, model, view) in raised {
            if kind == "channel.error_rate_spike" {
                self.spiking.insert(model.clone());
            }
            self.alerts.push(PendingAlert {
                id: format!("{kind}:{channel}:{model}:{now_ms}"),
                url: target.url.clone(),
                body: alert_body(kind, channel, &model, &view, target.format, now_ms),
                attempts: 0,
                next_at_ms: now_ms,
            });
        }
    }

    /// Whether an attempt may go to `model` on this channel now.
    pub fn gate(&self, model: &str, now_ms: i64) -> Gate {
        match self.breakers.get(model).map(|b| b.state(now_ms)) {
            None | Some(BreakerState::Closed) => Gate::Open,
            Some(BreakerState::HalfOpen) => Gate::NeedsProbe,
            Some(BreakerState::Open { .. }) => Gate::Shut,
        }
    }

    /// The admin API's view.
    pub fn view(&self, now_ms: i64) -> HealthView {
        HealthView {
            breakers: self
                .breakers
                .iter()
                .map(|(m, b)| (m.clone(), b.view(now_ms)))
                .collect(),
            keys: self.keys.view(now_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    pub breakers: BTreeMap<String, BreakerView>,
    pub keys: Vec<KeyView>,
}

fn alert_body(
    kind: &str,
    channel: &str,
    model: &str,
    view: &BreakerView,
    format: WebhookFormat,
    now_ms: i64,
) -> String {
    if format == WebhookFormat::Slack {
        let what = if kind == "circuit_breaker.opened" {
            "circuit breaker opened"
        } else {
            "error-rate spike"
        };
        return serde_json::json!({
            "text": format!(
                ":rotating_light: edgerelay: {what} on channel `{channel}`, model `{model}`: {} failures, {} successes in the window.",
                view.failures, view.successes
            )
        })
        .to_string();
    }
    serde_json::json!({
        "type": kind,
        "channel_id": channel,
        "upstream_model": model,
        "failures": view.failures,
        "successes": view.successes,
        "state": view.state,
        "open_until_ms": view.open_until_ms,
        "at_ms": now_ms,
    })
    .to_string()
}

/// A breaker alert as a tenant webhook's notice (`governance::notices`): the operator alert's
/// `circuit_breaker.opened` is the notice's `breaker.opened`, and `channel.error_rate_spike`
/// keeps its name. `None` for a kind that has no notice.
pub fn breaker_notice(
    kind: &str,
    channel: &str,
    model: &str,
    view: &BreakerView,
    now_ms: i64,
) -> Option<Notice> {
    let (event_type, severity, what) = match kind {
        "circuit_breaker.opened" => (
            "breaker.opened",
            Severity::Critical,
            "circuit breaker opened",
        ),
        "channel.error_rate_spike" => (
            "channel.error_rate_spike",
            Severity::Warning,
            "error-rate spike",
        ),
        _ => return None,
    };
    Some(Notice {
        id: format!("{event_type}:{channel}:{model}:{now_ms}"),
        event_type,
        severity,
        tenant_id: None,
        summary: format!(
            "{what} on channel {channel}, model {model}: {} failures, {} successes in the window.",
            view.failures, view.successes
        ),
        at_ms: now_ms,
        data: serde_json::json!({
            "channel_id": channel,
            "upstream_model": model,
            "failures": view.failures,
            "successes": view.successes,
            "open_until_ms": view.open_until_ms,
        }),
    })
}

/// The probe decision as the object replies it.
pub fn parse_admit(value: &serde_json::Value) -> Admit {
    serde_json::from_value(value.clone()).unwrap_or(Admit::No { retry_in_ms: 1000 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> BreakerConfig {
        BreakerConfig {
            window_ms: 10_000,
            min_requests: 4,
            failure_percent: 50,
            cooldown_ms: 1_000,
            max_cooldown_ms: 8_000,
        }
    }

    fn failures(model: &str, n: u32) -> Report {
        Report {
            outcomes: [(model.to_string(), (0, n))].into(),
            ..Report::default()
        }
    }

    #[test]
    fn failures_reported_by_isolates_open_the_breaker_for_everyone() {
        let mut h = ChannelHealth::default();
        h.apply(&failures("m", 2), quick(), 0);
        assert_eq!(h.gate("m", 1), Gate::Open, "below min_requests");
        h.apply(&failures("m", 2), quick(), 10);
        assert_eq!(h.gate("m", 11), Gate::Shut);
        assert_eq!(h.gate("other-model", 11), Gate::Open, "per upstream model");
        assert_eq!(h.gate("m", 1_010), Gate::NeedsProbe, "after the cooldown");
    }

    #[test]
    fn one_probe_at_a_time_and_its_success_closes() {
        let mut h = ChannelHealth::default();
        h.apply(&failures("m", 4), quick(), 0);
        let admit = |h: &mut ChannelHealth, t| {
            let (v, _) = h.handle(
                HealthCall::Admit {
                    model: "m".into(),
                    breaker: quick(),
                },
                t,
                None,
            );
            parse_admit(&v)
        };
        assert!(matches!(admit(&mut h, 500), Admit::No { .. }));
        assert_eq!(admit(&mut h, 1_000), Admit::Probe);
        assert!(
            matches!(admit(&mut h, 1_001), Admit::No { .. }),
            "one probe"
        );
        let probe_ok = Report {
            probes: [("m".to_string(), vec![true])].into(),
            ..Report::default()
        };
        assert!(probe_ok.urgent());
        h.apply(&probe_ok, quick(), 1_002);
        assert_eq!(h.gate("m", 1_003), Gate::Open);
    }

    #[test]
    fn key_trouble_is_shared_and_an_operator_can_clear_it() {
        let mut h = ChannelHealth::default();
        let r = Report {
            keys: vec![("fp1".into(), 429, Some(5_000)), ("fp2".into(), 401, None)],
            ..Report::default()
        };
        h.apply(&r, quick(), 0);
        let mut draw = || 0u32;
        assert_eq!(h.keys.pick(&["fp1", "fp2", "fp3"], 10, &mut draw), Some(2));
        assert_eq!(
            h.keys.pick(&["fp1", "fp2"], 5_001, &mut draw),
            Some(0),
            "cooled down"
        );
        h.handle(
            HealthCall::EnableKey {
                fingerprint: "fp2".into(),
            },
            6_000,
            None,
        );
        assert!(h.view(6_000).keys.iter().all(|k| k.fingerprint != "fp2"));
    }

    #[test]
    fn alerts_when_a_breaker_opens_and_once_per_error_spike() {
        let target = AlertTarget {
            url: "https://ops.example.com/hook".into(),
            format: WebhookFormat::Json,
        };
        let report = |ok: u32, failed: u32| HealthCall::Report {
            report: Report {
                outcomes: [("m".to_string(), (ok, failed))].into(),
                ..Report::default()
            },
            breaker: quick(),
            channel: "ch_1".into(),
        };
        let mut h = ChannelHealth::default();
        // 1 of 4 failed: a spike (25 %) but not an opening (50 %).
        h.handle(report(3, 1), 0, Some(&target));
        let due = h.alerts.due(0);
        assert_eq!(due.len(), 1);
        assert!(due[0].body.contains("channel.error_rate_spike"));
        h.handle(report(3, 1), 1, Some(&target));
        assert_eq!(h.alerts.len(), 1, "the same spike alerts once");
        h.handle(report(0, 8), 2, Some(&target));
        let kinds: Vec<String> = h.alerts.due(2).iter().map(|a| a.body.clone()).collect();
        assert!(kinds.iter().any(|b| b.contains("circuit_breaker.opened")));
        assert!(kinds.iter().all(|b| b.contains("\"channel_id\":\"ch_1\"")));
        // The isolates' copy carries no alert bookkeeping.
        let (v, _) = h.handle(report(0, 0), 3, Some(&target));
        assert!(v.get("alerts").is_none() && v.get("breakers").is_some());
        // Without a target nothing is queued.
        let mut quiet = ChannelHealth::default();
        quiet.handle(report(0, 8), 0, None);
        assert!(quiet.alerts.is_empty());
    }

    #[test]
    fn successes_alone_are_not_urgent() {
        let r = Report {
            outcomes: [("m".to_string(), (5, 0))].into(),
            ..Report::default()
        };
        assert!(!r.urgent());
        assert!(failures("m", 1).urgent());
        assert!(Report::default().is_empty());
    }

    #[test]
    fn breaker_alerts_become_tenant_notices() {
        let mut h = ChannelHealth::default();
        h.apply(&failures("m", 8), quick(), 0);
        let view = h.view(0).breakers["m"];
        let n = breaker_notice("circuit_breaker.opened", "ch_1", "m", &view, 5).unwrap();
        assert_eq!(
            (n.event_type, n.severity),
            ("breaker.opened", Severity::Critical)
        );
        assert!(crate::governance::notices::EVENT_TYPES.contains(&n.event_type));
        assert_eq!(n.data["failures"], 8);
        let spike = breaker_notice("channel.error_rate_spike", "ch_1", "m", &view, 5).unwrap();
        assert!(crate::governance::notices::EVENT_TYPES.contains(&spike.event_type));
        assert!(breaker_notice("other", "ch_1", "m", &view, 5).is_none());
    }

    #[test]
    fn calls_round_trip_as_json() {
        let call = HealthCall::Report {
            report: failures("m", 1),
            breaker: quick(),
            channel: "ch_1".into(),
        };
        let json = serde_json::to_string(&call).unwrap();
        assert_eq!(serde_json::from_str::<HealthCall>(&json).unwrap(), call);
        let state: ChannelHealth = serde_json::from_str("{}").unwrap();
        assert_eq!(state, ChannelHealth::default());
    }
}
