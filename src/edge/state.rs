//! [edge] What an isolate keeps between requests: settings read from the environment, and
//! short-lived caches of key grants, channels and the model map. Also the clock and the random
//! source, the only places pure code's `now_ms` and random inputs come from.

use std::cell::RefCell;
use std::rc::Rc;

use worker::{Date, Env};

use crate::governance::access::ModelGroups;
use crate::governance::grant::KeyGrant;
use crate::ledger::pricing::PriceTable;
use crate::routing::channel::Channel;
use crate::routing::model_map::{GroupMultipliers, ModelMap};
use crate::support::ttl_cache::TtlCache;

/// A secret (`wrangler secret put`), or a var of that name in local dev; empty counts as unset.
pub fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
        .filter(|s| !s.is_empty())
}

pub fn now_ms() -> i64 {
    Date::now().as_millis() as i64
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The Workers runtime always has crypto.getRandomValues; failing here would be a runtime bug.
    if getrandom::fill(&mut buf).is_err() {
        worker::console_error!("getrandom failed");
    }
    buf
}

pub struct Settings {
    pub max_body_bytes: u64,
    pub cache_ttl_ms: i64,
    pub upstream_timeout_ms: u64,
    pub admin_token: Option<String>,
}

fn var<T: std::str::FromStr>(env: &Env, name: &str, default: T) -> T {
    env.var(name)
        .ok()
        .and_then(|v| v.to_string().trim().parse().ok())
        .unwrap_or(default)
}

impl Settings {
    /// The isolate's settings: vars and secrets are fixed for an isolate's life, so they are
    /// read from the environment once.
    pub fn get(env: &Env) -> Rc<Settings> {
        SETTINGS.with(|s| {
            s.borrow_mut()
                .get_or_insert_with(|| Rc::new(Settings::from_env(env)))
                .clone()
        })
    }

    fn from_env(env: &Env) -> Settings {
        Settings {
            max_body_bytes: var(env, "MAX_BODY_BYTES", 4 * 1024 * 1024),
            cache_ttl_ms: var(env, "CONFIG_CACHE_TTL_MS", 2000),
            upstream_timeout_ms: var(env, "UPSTREAM_TIMEOUT_MS", 60_000),
            admin_token: secret(env, "ADMIN_TOKEN"),
        }
    }
}

pub struct Caches {
    pub grants: TtlCache<String, KeyGrant>,
    pub channels: TtlCache<String, Rc<Channel>>,
    pub model_map: TtlCache<(), Rc<ModelMap>>,
    pub model_groups: TtlCache<(), Rc<ModelGroups>>,
    pub prices: TtlCache<(), Rc<PriceTable>>,
    pub group_multipliers: TtlCache<(), Rc<GroupMultipliers>>,
}

thread_local! {
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
    static CACHES: RefCell<Caches> = RefCell::new(Caches {
        grants: TtlCache::new(2000, 10_000),
        channels: TtlCache::new(2000, 1_000),
        model_map: TtlCache::new(2000, 1),
        model_groups: TtlCache::new(2000, 1),
        prices: TtlCache::new(2000, 1),
        group_multipliers: TtlCache::new(2000, 1),
    });
}

pub fn with_caches<R>(ttl_ms: i64, f: impl FnOnce(&mut Caches) -> R) -> R {
    CACHES.with(|c| {
        let mut c = c.borrow_mut();
        c.grants.set_ttl(ttl_ms);
        c.channels.set_ttl(ttl_ms);
        c.model_map.set_ttl(ttl_ms);
        c.model_groups.set_ttl(ttl_ms);
        c.prices.set_ttl(ttl_ms);
        c.group_multipliers.set_ttl(ttl_ms);
        f(&mut c)
    })
}

/// After an admin change: this isolate sees it at once; others within their cache TTL.
pub fn invalidate_all() {
    CACHES.with(|c| {
        let mut c = c.borrow_mut();
        c.grants.clear();
        c.channels.clear();
        c.model_map.clear();
        c.model_groups.clear();
        c.prices.clear();
        c.group_multipliers.clear();
    });
}
