//! [edge] The configuration a relay request reads — its key's grant, the model map, model
//! groups, prices, group price ratios, channels — from the isolate's caches, stale while
//! revalidating: an entry younger than half `CONFIG_CACHE_TTL_MS` is used as it is; an older
//! one is still used and refreshed in the background by this request (one refresh per entry at
//! a time); only an entry older than the TTL, or never seen, is waited for. So a key used
//! within the TTL never waits on D1 or KV, and no isolate acts on configuration older than the
//! TTL. A lookup that found nothing (an unknown key, a deleted channel) is cached the same way.
//!
//! The background refresh runs under this request's `waitUntil` and owns what it needs; no
//! request ever awaits a refresh another request started (workerd cancels such a request).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use worker::Env;

use super::state::{now_ms, with_caches, Caches};
use super::store::Store;
use crate::api::server_timing::{ServerTiming, Wait};
use crate::error::RelayError;
use crate::governance::access::{ModelGroups, GROUP_PREFIX};
use crate::governance::grant::KeyGrant;
use crate::ledger::pricing::PriceTable;
use crate::routing::channel::Channel;
use crate::routing::model_map::{GroupMultipliers, ModelMap};
use crate::support::ttl_cache::{Cached, TtlCache};

/// What reading configuration needs from the request: the environment (the background refresh
/// builds its own store from it), the TTL, the `waitUntil` to refresh under, and the request's
/// Server-Timing, where a wait is recorded.
pub struct Reader<'a> {
    pub env: &'a Env,
    pub ctx: &'a worker::Context,
    pub ttl_ms: i64,
    pub timing: &'a RefCell<ServerTiming>,
}

/// Clears a refresh claim however the refresh ends, a cancelled `waitUntil` included.
struct RefreshClaim<K: Eq + std::hash::Hash + Clone + 'static, V: Clone + 'static> {
    ttl_ms: i64,
    slot: fn(&mut Caches) -> &mut TtlCache<K, V>,
    key: K,
}

impl<K: Eq + std::hash::Hash + Clone + 'static, V: Clone + 'static> Drop for RefreshClaim<K, V> {
    fn drop(&mut self) {
        with_caches(self.ttl_ms, |c| (self.slot)(c).end_refresh(&self.key));
    }
}

/// One cached lookup. `load` builds the future that reads the value from storage; it is called
/// for a missing entry (awaited, timed as `wait`) or a stale one (spawned in the background).
async fn cached<K, V, F, Fut>(
    r: &Reader<'_>,
    slot: fn(&mut Caches) -> &mut TtlCache<K, V>,
    key: K,
    wait: Wait,
    load: F,
) -> Result<V, RelayError>
where
    K: Eq + std::hash::Hash + Clone + 'static,
    V: Clone + 'static,
    F: Fn(Store) -> Fut,
    Fut: Future<Output = Result<V, RelayError>> + 'static,
{
    let ttl = r.ttl_ms;
    let now = now_ms();
    match with_caches(ttl, |c| slot(c).lookup(&key, now)) {
        Cached::Fresh(value) => Ok(value),
        Cached::Stale(value) => {
            if with_caches(ttl, |c| slot(c).start_refresh(&key)) {
                if let Ok(store) = Store::new(r.env) {
                    let refresh = load(store);
                    let claim = RefreshClaim {
                        ttl_ms: ttl,
                        slot,
                        key,
                    };
                    r.ctx.wait_until(async move {
                        match refresh.await {
                            Ok(fresh) => with_caches(claim.ttl_ms, |c| {
                                (claim.slot)(c).insert(claim.key.clone(), fresh, now_ms())
                            }),
                            Err(e) => worker::console_warn!("config refresh failed: {}", e),
                        }
                        drop(claim);
                    });
                } else {
                    with_caches(ttl, |c| slot(c).end_refresh(&key));
                }
            }
            Ok(value)
        }
        Cached::Missing => {
            let store = Store::new(r.env)?;
            let t0 = worker::js_sys::Date::now();
            let value = load(store).await;
            r.timing
                .borrow_mut()
                .add(wait, worker::js_sys::Date::now() - t0);
            let value = value?;
            with_caches(ttl, |c| slot(c).insert(key, value.clone(), now_ms()));
            Ok(value)
        }
    }
}

/// The grant of the key with this hash; `None` for a key that does not exist.
pub async fn key_grant(r: &Reader<'_>, hash: &str) -> Result<Option<Rc<KeyGrant>>, RelayError> {
    let hash = hash.to_string();
    let lookup = hash.clone();
    cached(
        r,
        |c| &mut c.grants,
        hash,
        Wait::D1,
        move |store| {
            let hash = lookup.clone();
            async move { Ok(store.key_grant(&hash).await?.map(Rc::new)) }
        },
    )
    .await
}

pub async fn model_map(r: &Reader<'_>) -> Result<Rc<ModelMap>, RelayError> {
    cached(
        r,
        |c| &mut c.model_map,
        (),
        Wait::Kv,
        |store| async move { store.model_map().await.map(Rc::new) },
    )
    .await
}

pub async fn all_model_groups(r: &Reader<'_>) -> Result<Rc<ModelGroups>, RelayError> {
    cached(
        r,
        |c| &mut c.model_groups,
        (),
        Wait::Kv,
        |store| async move { store.model_groups().await.map(Rc::new) },
    )
    .await
}

/// The model groups, read only when an allowlist of this key names one.
pub async fn model_groups(r: &Reader<'_>, grant: &KeyGrant) -> Result<Rc<ModelGroups>, RelayError> {
    let names_a_group = [&grant.key_models, &grant.tenant_models]
        .iter()
        .any(|l| l.iter().flatten().any(|m| m.starts_with(GROUP_PREFIX)));
    if !names_a_group {
        return Ok(Rc::new(ModelGroups::new()));
    }
    all_model_groups(r).await
}

pub async fn prices(r: &Reader<'_>) -> Result<Rc<PriceTable>, RelayError> {
    cached(
        r,
        |c| &mut c.prices,
        (),
        Wait::Kv,
        |store| async move { store.custom_prices().await.map(Rc::new) },
    )
    .await
}

async fn group_multipliers(r: &Reader<'_>) -> Result<Rc<GroupMultipliers>, RelayError> {
    cached(
        r,
        |c| &mut c.group_multipliers,
        (),
        Wait::Kv,
        |store| async move { store.group_multipliers().await.map(Rc::new) },
    )
    .await
}

/// The price ratios of the model groups that list `model`.
pub async fn group_multipliers_for(r: &Reader<'_>, model: &str) -> Result<Vec<u64>, RelayError> {
    let ratios = group_multipliers(r).await?;
    if ratios.is_empty() {
        return Ok(Vec::new());
    }
    let groups = all_model_groups(r).await?;
    Ok(ratios
        .iter()
        .filter(|(group, _)| {
            groups
                .get(*group)
                .is_some_and(|m| m.iter().any(|m| m == model))
        })
        .map(|(_, ppm)| *ppm)
        .collect())
}

/// A channel; `None` for one that does not exist (or no longer does).
pub async fn channel(r: &Reader<'_>, id: &str) -> Result<Option<Rc<Channel>>, RelayError> {
    let id = id.to_string();
    let lookup = id.clone();
    cached(
        r,
        |c| &mut c.channels,
        id,
        Wait::D1,
        move |store| {
            let id = lookup.clone();
            async move { Ok(store.channel(&id).await?.map(Rc::new)) }
        },
    )
    .await
}
