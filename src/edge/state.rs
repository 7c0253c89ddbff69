//! [edge] What an isolate keeps between requests: settings read from the environment, and
//! short-lived caches of key grants, channels and the model map. Also the clock and the random
//! source: the edge reads time and randomness only through `now_ms` and `random_bytes`, and
//! passes them into the pure code.

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
    ttl_ms: i64,
    /// By key hash; `None` remembers a key that does not exist.
    pub grants: TtlCache<String, Option<Rc<KeyGrant>>>,
    /// `None` remembers a channel that does not exist.
    pub channels: TtlCache<String, Option<Rc<Channel>>>,
    pub model_map: TtlCache<(), Rc<ModelMap>>,
    pub model_groups: TtlCache<(), Rc<ModelGroups>>,
    pub prices: TtlCache<(), Rc<PriceTable>>,
    pub group_multipliers: TtlCache<(), Rc<GroupMultipliers>>,
}

impl Caches {
    /// The one list of an isolate's caches, every entry kept for `ttl_ms`.
    fn new(ttl_ms: i64) -> Caches {
        Caches {
            ttl_ms,
            grants: TtlCache::new(ttl_ms, 10_000),
            channels: TtlCache::new(ttl_ms, 1_000),
            model_map: TtlCache::new(ttl_ms, 1),
            model_groups: TtlCache::new(ttl_ms, 1),
            prices: TtlCache::new(ttl_ms, 1),
            group_multipliers: TtlCache::new(ttl_ms, 1),
        }
    }
}

thread_local! {
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
    static CACHES: RefCell<Option<Caches>> = const { RefCell::new(None) };
}

/// The isolate's caches, made on first use with `CONFIG_CACHE_TTL_MS` (fixed for an isolate's
/// life, like every setting).
pub fn with_caches<R>(ttl_ms: i64, f: impl FnOnce(&mut Caches) -> R) -> R {
    CACHES.with(|c| {
        let mut c = c.borrow_mut();
        let caches = match c.as_mut() {
            Some(caches) if caches.ttl_ms == ttl_ms => caches,
            _ => c.insert(Caches::new(ttl_ms)),
        };
        f(caches)
    })
}

/// After an admin change: this isolate sees it at once; others within their cache TTL.
pub fn invalidate_all() {
    CACHES.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(ttl_ms) = c.as_ref().map(|caches| caches.ttl_ms) {
            *c = Some(Caches::new(ttl_ms));
        }
    });
}
