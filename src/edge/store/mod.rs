//! [edge] D1 and KV access: typed rows in and out, bound parameters only, no decisions.
//! The schema lives in migrations/; JSON columns are decoded into the pure types here.

pub mod usage_log;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Env, KvStore};

use crate::admin::config::{KeyView, Tenant};
use crate::error::RelayError;
use crate::governance::access::ModelGroups;
use crate::governance::grant::{KeyGrant, KeyStatus, Status, TenantSettings};
use crate::governance::limits::Limits;
use crate::governance::rules::AccessRules;
use crate::ledger::pricing::{parse_price_table, PriceTable, PRICES_KEY};
use crate::ledger::row::{self, Cell, UsageRow, COLUMN_NAMES};
use crate::providers::ProviderKind;
use crate::routing::channel::Channel;
use crate::routing::model_map::{GroupMultipliers, ModelMap};

/// The KV key holding the whole model map.
pub const MODEL_MAP_KEY: &str = "model_map";
/// The KV key holding the model groups.
pub const MODEL_GROUPS_KEY: &str = "model_groups";
pub const GROUP_MULTIPLIERS_KEY: &str = "group_multipliers";

pub struct Store {
    db: D1Database,
    kv: KvStore,
}

fn text(s: &str) -> JsValue {
    JsValue::from_str(s)
}

fn opt_text(s: Option<&str>) -> JsValue {
    s.map_or(JsValue::NULL, JsValue::from_str)
}

fn int(n: i64) -> JsValue {
    // D1 numbers are JS numbers; every value stored here (ms times, counts) is far below 2^53.
    JsValue::from_f64(n as f64)
}

fn opt_int(n: Option<i64>) -> JsValue {
    n.map_or(JsValue::NULL, int)
}

fn json_list(list: &Option<Vec<String>>) -> JsValue {
    match list {
        Some(l) => text(&serde_json::to_string(l).unwrap_or_else(|_| "[]".into())),
        None => JsValue::NULL,
    }
}

/// A JSON column holding a limits or rules object; an unreadable one counts as empty rather
/// than failing every request of the key (the admin API only ever writes valid ones).
fn parse_json<T: DeserializeOwned + Default>(column: Option<String>) -> T {
    column
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn json_object<T: serde::Serialize>(value: &T, empty: bool) -> JsValue {
    if empty {
        return JsValue::NULL;
    }
    serde_json::to_string(value).map_or(JsValue::NULL, |s| text(&s))
}

fn limits_column(l: &Limits) -> JsValue {
    json_object(l, l.is_empty() && l.utc_offset_minutes == 0)
}

fn settings_column(s: &TenantSettings) -> JsValue {
    json_object(s, *s == TenantSettings::default())
}

fn rules_column(r: &AccessRules) -> JsValue {
    json_object(r, r.is_open())
}

fn parse_list(column: Option<String>) -> Option<Vec<String>> {
    column.and_then(|s| serde_json::from_str(&s).ok())
}

fn parse_status(s: &str) -> Status {
    if s == "disabled" {
        Status::Disabled
    } else {
        Status::Active
    }
}

fn parse_key_status(s: &str) -> KeyStatus {
    if s == "revoked" {
        KeyStatus::Revoked
    } else {
        KeyStatus::Active
    }
}

#[derive(Deserialize)]
struct TenantRow {
    id: String,
    name: String,
    status: String,
    models: Option<String>,
    limits: Option<String>,
    rules: Option<String>,
    jurisdiction: Option<String>,
    settings: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Tenant {
        Tenant {
            id: r.id,
            name: r.name,
            status: parse_status(&r.status),
            models: parse_list(r.models),
            limits: parse_json(r.limits),
            rules: parse_json(r.rules),
            jurisdiction: r.jurisdiction,
            settings: parse_json(r.settings),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Deserialize)]
struct KeyRow {
    id: String,
    tenant_id: String,
    name: String,
    prefix: String,
    status: String,
    models: Option<String>,
    limits: Option<String>,
    rules: Option<String>,
    expires_at: Option<i64>,
    created_at: i64,
    revoked_at: Option<i64>,
    replaced_by: Option<String>,
    cache_ttl_s: Option<i64>,
}

impl From<KeyRow> for KeyView {
    fn from(r: KeyRow) -> KeyView {
        KeyView {
            id: r.id,
            tenant_id: r.tenant_id,
            name: r.name,
            prefix: r.prefix,
            status: parse_key_status(&r.status),
            models: parse_list(r.models),
            limits: parse_json(r.limits),
            rules: parse_json(r.rules),
            expires_at: r.expires_at,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
            replaced_by: r.replaced_by,
            cache_ttl_s: r.cache_ttl_s.and_then(|t| u32::try_from(t).ok()),
        }
    }
}

#[derive(Deserialize)]
struct GrantRow {
    #[serde(default)]
    cache_ttl_s: Option<i64>,
    key_id: String,
    tenant_id: String,
    key_status: String,
    key_models: Option<String>,
    key_limits: Option<String>,
    key_rules: Option<String>,
    expires_at: Option<i64>,
    tenant_status: String,
    tenant_models: Option<String>,
    tenant_limits: Option<String>,
    tenant_rules: Option<String>,
    jurisdiction: Option<String>,
    tenant_settings: Option<String>,
}

#[derive(Deserialize)]
struct ChannelRow {
    id: String,
    name: String,
    provider: String,
    base_url: String,
    api_keys: String,
    models: String,
    status: String,
    timeout_ms: Option<i64>,
    #[serde(default)]
    total_timeout_ms: Option<i64>,
    options: Option<String>,
    region: Option<String>,
    breaker: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl ChannelRow {
    fn into_channel(self) -> Result<Channel, RelayError> {
        let provider = ProviderKind::parse(&self.provider).ok_or_else(|| {
            RelayError::internal(
                "channel row",
                format!("unknown provider '{}'", self.provider),
            )
        })?;
        Ok(Channel {
            id: self.id,
            name: self.name,
            provider,
            base_url: self.base_url,
            api_keys: serde_json::from_str(&self.api_keys).unwrap_or_default(),
            models: serde_json::from_str(&self.models).unwrap_or_default(),
            status: parse_status(&self.status),
            timeout_ms: self.timeout_ms.and_then(|t| u64::try_from(t).ok()),
            total_timeout_ms: self.total_timeout_ms.and_then(|t| u64::try_from(t).ok()),
            region: self.region,
            breaker: self.breaker.and_then(|b| serde_json::from_str(&b).ok()),
            options: self
                .options
                .and_then(|o| serde_json::from_str(&o).ok())
                .unwrap_or_default(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A usage row's column as a D1 parameter.
fn cell(c: Cell<'_>) -> JsValue {
    match c {
        Cell::Text(s) => opt_text(s),
        Cell::Int(n) => opt_int(n),
        Cell::Count(n) => int(i64::try_from(n).unwrap_or(i64::MAX)),
        Cell::Bool(b) => int(i64::from(b)),
    }
}

/// A usage row as a query selecting `COLUMN_NAMES` returned it.
type StoredUsage = serde_json::Map<String, serde_json::Value>;

fn usage_of(values: &StoredUsage) -> Result<UsageRow, RelayError> {
    UsageRow::from_columns(values)
        .map_err(|column| RelayError::internal("D1 usage row", format!("unreadable {column}")))
}

/// A tenant-scoped admin token as listed (never its hash).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct TenantToken {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub prefix: String,
    pub status: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// One audit row as written.
pub struct AuditEntry<'a> {
    pub at: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub tenant_id: Option<&'a str>,
    pub before: Option<&'a serde_json::Value>,
    pub after: Option<&'a serde_json::Value>,
    pub client_ip: Option<&'a str>,
    pub request_id: &'a str,
}

/// Filters of the audit listing.
pub struct AuditQuery {
    pub target_id: Option<String>,
    pub tenant_id: Option<String>,
    pub action: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

#[derive(Deserialize, serde::Serialize)]
pub struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    target_type: String,
    target_id: String,
    tenant_id: Option<String>,
    #[serde(skip_serializing)]
    before: Option<String>,
    #[serde(skip_serializing)]
    after: Option<String>,
    client_ip: Option<String>,
    request_id: String,
}

impl AuditRow {
    /// The row with its before/after as JSON objects rather than strings.
    pub fn view(&self) -> serde_json::Value {
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(serde_json::Value::Null)
        };
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["before"] = parse(&self.before);
        v["after"] = parse(&self.after);
        v
    }
}

/// Filters of the usage listing.
/// The ledger rows an analytics request reads, newest first.
pub struct LedgerQuery<'a> {
    pub from_ms: i64,
    pub to_ms: i64,
    pub tenant_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub model: Option<&'a str>,
    pub channel_id: Option<&'a str>,
    pub status: Option<u16>,
    pub before_ms: Option<i64>,
    pub limit: u32,
}

pub struct UsageQuery {
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

const TENANT_COLUMNS: &str =
    "id, name, status, models, limits, rules, jurisdiction, settings, created_at, updated_at";
const KEY_COLUMNS: &str =
    "id, tenant_id, name, prefix, status, models, limits, rules, expires_at, created_at, revoked_at, replaced_by, cache_ttl_s";
const CHANNEL_COLUMNS: &str =
    "id, name, provider, base_url, api_keys, models, status, timeout_ms, options, region, breaker, total_timeout_ms, created_at, updated_at";

impl Store {
    pub fn new(env: &Env) -> Result<Store, RelayError> {
        Ok(Store {
            db: env
                .d1("DB")
                .map_err(|e| RelayError::internal("D1 binding DB", e))?,
            kv: env
                .kv("MODEL_MAP")
                .map_err(|e| RelayError::internal("KV binding MODEL_MAP", e))?,
        })
    }

    fn statement(&self, sql: &str, params: &[JsValue]) -> Result<D1PreparedStatement, RelayError> {
        self.db
            .prepare(sql)
            .bind(params)
            .map_err(|e| RelayError::internal("D1 bind", e))
    }

    async fn first<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[JsValue],
    ) -> Result<Option<T>, RelayError> {
        self.statement(sql, params)?
            .first::<T>(None)
            .await
            .map_err(|e| RelayError::internal("D1 query", e))
    }

    async fn all<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[JsValue],
    ) -> Result<Vec<T>, RelayError> {
        let result = self
            .statement(sql, params)?
            .all()
            .await
            .map_err(|e| RelayError::internal("D1 query", e))?;
        result
            .results::<T>()
            .map_err(|e| RelayError::internal("D1 rows", e))
    }

    /// Runs a write; returns how many rows it changed.
    async fn run(&self, sql: &str, params: &[JsValue]) -> Result<usize, RelayError> {
        let result = self
            .statement(sql, params)?
            .run()
            .await
            .map_err(|e| RelayError::internal("D1 write", e))?;
        let meta = result
            .meta()
            .map_err(|e| RelayError::internal("D1 meta", e))?;
        Ok(meta.and_then(|m| m.changes).unwrap_or(0))
    }

    // ---- keys, as the relay path sees them ----

    pub async fn key_grant(&self, key_hash: &str) -> Result<Option<KeyGrant>, RelayError> {
        let row: Option<GrantRow> = self
            .first(
                "SELECT k.id AS key_id, k.tenant_id, k.status AS key_status, k.models AS key_models, \
                 k.limits AS key_limits, k.rules AS key_rules, k.expires_at, k.cache_ttl_s, t.status AS tenant_status, \
                 t.models AS tenant_models, t.limits AS tenant_limits, t.rules AS tenant_rules, \
                 t.jurisdiction, t.settings AS tenant_settings \
                 FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = ?1",
                &[text(key_hash)],
            )
            .await?;
        Ok(row.map(|r| KeyGrant {
            key_id: r.key_id,
            tenant_id: r.tenant_id,
            key_status: parse_key_status(&r.key_status),
            tenant_status: parse_status(&r.tenant_status),
            key_models: parse_list(r.key_models),
            tenant_models: parse_list(r.tenant_models),
            expires_at: r.expires_at,
            key_limits: parse_json(r.key_limits),
            tenant_limits: parse_json(r.tenant_limits),
            key_rules: parse_json(r.key_rules),
            tenant_rules: parse_json(r.tenant_rules),
            jurisdiction: r.jurisdiction,
            settings: parse_json(r.tenant_settings),
            key_cache_ttl_s: r.cache_ttl_s.and_then(|t| u32::try_from(t).ok()),
        }))
    }

    // ---- tenants ----

    pub async fn tenants(&self) -> Result<Vec<Tenant>, RelayError> {
        let rows: Vec<TenantRow> = self
            .all(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, id"),
                &[],
            )
            .await?;
        Ok(rows.into_iter().map(Tenant::from).collect())
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, RelayError> {
        let row: Option<TenantRow> = self
            .first(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"),
                &[text(id)],
            )
            .await?;
        Ok(row.map(Tenant::from))
    }

    pub async fn insert_tenant(&self, t: &Tenant) -> Result<(), RelayError> {
        self.run(
            "INSERT INTO tenants (id, name, status, models, created_at, updated_at, limits, rules, jurisdiction, settings) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            &[
                text(&t.id),
                text(&t.name),
                text(t.status.as_str()),
                json_list(&t.models),
                int(t.created_at),
                int(t.updated_at),
                limits_column(&t.limits),
                rules_column(&t.rules),
                opt_text(t.jurisdiction.as_deref()),
                settings_column(&t.settings),
            ],
        )
        .await
        .map(drop)
    }

    pub async fn update_tenant(&self, t: &Tenant) -> Result<(), RelayError> {
        self.run(
            "UPDATE tenants SET name = ?2, status = ?3, models = ?4, updated_at = ?5, limits = ?6, rules = ?7, settings = ?8 WHERE id = ?1",
            &[
                text(&t.id),
                text(&t.name),
                text(t.status.as_str()),
                json_list(&t.models),
                int(t.updated_at),
                limits_column(&t.limits),
                rules_column(&t.rules),
                settings_column(&t.settings),
            ],
        )
        .await
        .map(drop)
    }

    // ---- keys ----

    pub async fn insert_key(&self, k: &KeyView, key_hash: &str) -> Result<(), RelayError> {
        self.run(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, prefix, status, models, expires_at, created_at, limits, rules, cache_ttl_s) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7, ?8, ?9, ?10, ?11)",
            &[
                text(&k.id),
                text(&k.tenant_id),
                text(&k.name),
                text(key_hash),
                text(&k.prefix),
                json_list(&k.models),
                opt_int(k.expires_at),
                int(k.created_at),
                limits_column(&k.limits),
                rules_column(&k.rules),
                opt_int(k.cache_ttl_s.map(i64::from)),
            ],
        )
        .await
        .map(drop)
    }

    pub async fn keys_of(&self, tenant_id: &str) -> Result<Vec<KeyView>, RelayError> {
        let rows: Vec<KeyRow> = self
            .all(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 ORDER BY created_at, id"), &[text(tenant_id)])
            .await?;
        Ok(rows.into_iter().map(KeyView::from).collect())
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyView>, RelayError> {
        let row: Option<KeyRow> = self
            .first(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                &[text(id)],
            )
            .await?;
        Ok(row.map(KeyView::from))
    }

    /// Revokes an active key; a second revoke changes nothing and keeps the first time.
    pub async fn revoke_key(&self, id: &str, now_ms: i64) -> Result<(), RelayError> {
        self.run(
            "UPDATE api_keys SET status = 'revoked', revoked_at = ?2 WHERE id = ?1 AND status = 'active'",
            &[text(id), int(now_ms)],
        )
        .await
        .map(drop)
    }

    /// Writes what a key patch may change.
    pub async fn update_key(&self, k: &KeyView) -> Result<(), RelayError> {
        self.run(
            "UPDATE api_keys SET name = ?2, models = ?3, expires_at = ?4, limits = ?5, rules = ?6, replaced_by = ?7, cache_ttl_s = ?8 WHERE id = ?1",
            &[
                text(&k.id),
                text(&k.name),
                json_list(&k.models),
                opt_int(k.expires_at),
                limits_column(&k.limits),
                rules_column(&k.rules),
                opt_text(k.replaced_by.as_deref()),
                opt_int(k.cache_ttl_s.map(i64::from)),
            ],
        )
        .await
        .map(drop)
    }

    // ---- channels ----

    pub async fn channels(&self) -> Result<Vec<Channel>, RelayError> {
        let rows: Vec<ChannelRow> = self
            .all(
                &format!("SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY created_at, id"),
                &[],
            )
            .await?;
        rows.into_iter().map(ChannelRow::into_channel).collect()
    }

    pub async fn channel(&self, id: &str) -> Result<Option<Channel>, RelayError> {
        let row: Option<ChannelRow> = self
            .first(
                &format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?1"),
                &[text(id)],
            )
            .await?;
        row.map(ChannelRow::into_channel).transpose()
    }

    fn channel_params(c: &Channel) -> Vec<JsValue> {
        vec![
            text(&c.id),
            text(&c.name),
            text(c.provider.as_str()),
            text(&c.base_url),
            text(&serde_json::to_string(&c.api_keys).unwrap_or_else(|_| "[]".into())),
            text(&serde_json::to_string(&c.models).unwrap_or_else(|_| "[]".into())),
            text(c.status.as_str()),
            opt_int(c.timeout_ms.map(|t| t as i64)),
            int(c.created_at),
            int(c.updated_at),
            text(&serde_json::to_string(&c.options).unwrap_or_else(|_| "{}".into())),
            opt_text(c.region.as_deref()),
            c.breaker
                .as_ref()
                .map_or(JsValue::NULL, |b| json_object(b, false)),
            opt_int(c.total_timeout_ms.map(|t| t as i64)),
        ]
    }

    pub async fn insert_channel(&self, c: &Channel) -> Result<(), RelayError> {
        self.run(
            "INSERT INTO channels (id, name, provider, base_url, api_keys, models, status, timeout_ms, created_at, \
             updated_at, options, region, breaker, total_timeout_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            &Self::channel_params(c),
        )
        .await
        .map(drop)
    }

    pub async fn update_channel(&self, c: &Channel) -> Result<(), RelayError> {
        self.run(
            "UPDATE channels SET name = ?2, provider = ?3, base_url = ?4, api_keys = ?5, models = ?6, status = ?7, \
             timeout_ms = ?8, updated_at = ?10, options = ?11, region = ?12, breaker = ?13, total_timeout_ms = ?14 WHERE id = ?1 AND created_at = ?9",
            &Self::channel_params(c),
        )
        .await
        .map(drop)
    }

    pub async fn delete_channel(&self, id: &str) -> Result<bool, RelayError> {
        Ok(self
            .run("DELETE FROM channels WHERE id = ?1", &[text(id)])
            .await?
            > 0)
    }

    // ---- model map (KV) ----

    pub async fn model_map(&self) -> Result<ModelMap, RelayError> {
        match self.kv_text(MODEL_MAP_KEY).await? {
            None => Ok(ModelMap::new()),
            Some(text) => crate::routing::model_map::parse_model_map(&text)
                .map_err(|e| RelayError::internal("KV model map", e)),
        }
    }

    pub async fn put_model_map(&self, map: &ModelMap) -> Result<(), RelayError> {
        self.kv_put_json(MODEL_MAP_KEY, map).await
    }

    /// A KV value as text (`None` when absent).
    async fn kv_text(&self, key: &str) -> Result<Option<String>, RelayError> {
        self.kv
            .get(key)
            .text()
            .await
            .map_err(|e| RelayError::internal("KV get", e))
    }

    /// Store a value as one JSON document under `key`.
    async fn kv_put_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), RelayError> {
        let text = serde_json::to_string(value).map_err(|e| RelayError::internal(key, e))?;
        self.kv
            .put(key, text)
            .map_err(|e| RelayError::internal("KV put", e))?
            .execute()
            .await
            .map_err(|e| RelayError::internal("KV put", e))
    }

    /// The operator's price overrides (the built-ins are in the code).
    pub async fn custom_prices(&self) -> Result<PriceTable, RelayError> {
        match self.kv_text(PRICES_KEY).await? {
            None => Ok(PriceTable::new()),
            Some(text) => {
                parse_price_table(&text).map_err(|e| RelayError::internal("KV prices", e))
            }
        }
    }

    pub async fn put_custom_prices(&self, prices: &PriceTable) -> Result<(), RelayError> {
        self.kv_put_json(PRICES_KEY, prices).await
    }

    pub async fn group_multipliers(&self) -> Result<GroupMultipliers, RelayError> {
        Ok(self
            .kv_text(GROUP_MULTIPLIERS_KEY)
            .await?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    pub async fn put_group_multipliers(&self, m: &GroupMultipliers) -> Result<(), RelayError> {
        self.kv_put_json(GROUP_MULTIPLIERS_KEY, m).await
    }

    pub async fn model_groups(&self) -> Result<ModelGroups, RelayError> {
        match self.kv_text(MODEL_GROUPS_KEY).await? {
            None => Ok(ModelGroups::new()),
            Some(text) => crate::governance::access::parse_model_groups(&text)
                .map_err(|e| RelayError::internal("KV model groups", e)),
        }
    }

    pub async fn put_model_groups(&self, groups: &ModelGroups) -> Result<(), RelayError> {
        self.kv_put_json(MODEL_GROUPS_KEY, groups).await
    }

    pub async fn insert_usage_batch(&self, rows: &[UsageRow]) -> Result<(), RelayError> {
        let insert = row::insert_sql();
        let mut statements = Vec::with_capacity(rows.len());
        for u in rows {
            let values: Vec<JsValue> = u.cells().map(cell).collect();
            statements.push(self.statement(&insert, &values)?);
        }
        for u in rows {
            if let Some(b) = &u.bodies {
                statements.push(self.statement(
                    "INSERT OR IGNORE INTO request_bodies (request_id, tenant_id, created_at, request, response) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    &[
                        text(&u.request_id),
                        text(&u.tenant_id),
                        int(u.created_at),
                        opt_text(b.request.as_deref()),
                        opt_text(b.response.as_deref()),
                    ],
                )?);
            }
        }
        for a in rows.iter().flat_map(|u| &u.attempt_log) {
            statements.push(self.statement(
                "INSERT OR IGNORE INTO usage_attempts (request_id, n, channel_id, upstream_model, upstream_key, \
                 status, error_code, outcome, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                &[
                    text(&a.request_id),
                    int(i64::from(a.n)),
                    text(&a.channel_id),
                    text(&a.upstream_model),
                    opt_text(a.upstream_key.as_deref()),
                    opt_int(a.status.map(i64::from)),
                    opt_text(a.error_code.as_deref()),
                    text(&a.outcome),
                    int(a.at),
                ],
            )?);
        }
        let results = self
            .db
            .batch(statements)
            .await
            .map_err(|e| RelayError::internal("D1 usage batch", e))?;
        match results.iter().find_map(|r| r.error()) {
            Some(e) => Err(RelayError::internal("D1 usage batch", e)),
            None => Ok(()),
        }
    }

    // ---- tenant-scoped admin tokens ----

    pub async fn tenant_token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<TenantToken>, RelayError> {
        self.first(
            "SELECT id, tenant_id, name, prefix, status, created_at, revoked_at FROM tenant_tokens \
             WHERE token_hash = ?1 AND status = 'active'",
            &[text(hash)],
        )
        .await
    }

    pub async fn tenant_tokens(&self, tenant_id: &str) -> Result<Vec<TenantToken>, RelayError> {
        self.all(
            "SELECT id, tenant_id, name, prefix, status, created_at, revoked_at FROM tenant_tokens \
             WHERE tenant_id = ?1 ORDER BY created_at, id",
            &[text(tenant_id)],
        )
        .await
    }

    pub async fn tenant_token(&self, id: &str) -> Result<Option<TenantToken>, RelayError> {
        self.first(
            "SELECT id, tenant_id, name, prefix, status, created_at, revoked_at FROM tenant_tokens WHERE id = ?1",
            &[text(id)],
        )
        .await
    }

    pub async fn insert_tenant_token(&self, t: &TenantToken, hash: &str) -> Result<(), RelayError> {
        self.run(
            "INSERT INTO tenant_tokens (id, tenant_id, name, token_hash, prefix, status, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6)",
            &[text(&t.id), text(&t.tenant_id), text(&t.name), text(hash), text(&t.prefix), int(t.created_at)],
        )
        .await
        .map(drop)
    }

    pub async fn revoke_tenant_token(&self, id: &str, now_ms: i64) -> Result<(), RelayError> {
        self.run(
            "UPDATE tenant_tokens SET status = 'revoked', revoked_at = ?2 WHERE id = ?1 AND status = 'active'",
            &[text(id), int(now_ms)],
        )
        .await
        .map(drop)
    }

    // ---- audit log (append-only: there is no update or delete) ----

    pub async fn insert_audit(&self, e: &AuditEntry<'_>) -> Result<(), RelayError> {
        let json =
            |v: Option<&serde_json::Value>| v.map_or(JsValue::NULL, |v| text(&v.to_string()));
        self.run(
            "INSERT INTO audit_log (at, actor, action, target_type, target_id, tenant_id, before, after, client_ip, request_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            &[
                int(e.at),
                text(e.actor),
                text(e.action),
                text(e.target_type),
                text(e.target_id),
                opt_text(e.tenant_id),
                json(e.before),
                json(e.after),
                opt_text(e.client_ip),
                text(e.request_id),
            ],
        )
        .await
        .map(drop)
    }

    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, RelayError> {
        self.all(
            "SELECT * FROM audit_log WHERE (?1 IS NULL OR target_id = ?1) AND (?2 IS NULL OR tenant_id = ?2) \
             AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR at < ?4) ORDER BY at DESC, id DESC LIMIT ?5",
            &[
                opt_text(q.target_id.as_deref()),
                opt_text(q.tenant_id.as_deref()),
                opt_text(q.action.as_deref()),
                opt_int(q.before),
                int(i64::from(q.limit)),
            ],
        )
        .await
    }

    /// One request's row and its attempts.
    pub async fn usage_row(&self, request_id: &str) -> Result<Option<UsageRow>, RelayError> {
        let row: Option<StoredUsage> = self
            .first(
                &format!("SELECT {COLUMN_NAMES} FROM usage WHERE request_id = ?1"),
                &[text(request_id)],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut row = usage_of(&row)?;
        row.bodies = self
            .first(
                "SELECT request, response FROM request_bodies WHERE request_id = ?1",
                &[text(request_id)],
            )
            .await?;
        row.attempt_log = self
            .all(
                "SELECT request_id, n, channel_id, upstream_model, upstream_key, status, error_code, outcome, at \
                 FROM usage_attempts WHERE request_id = ?1 ORDER BY n",
                &[text(request_id)],
            )
            .await?;
        Ok(Some(row))
    }

    pub async fn ledger(&self, q: &LedgerQuery<'_>) -> Result<Vec<UsageRow>, RelayError> {
        let rows: Vec<StoredUsage> = self
            .all(
                &format!(
                    "SELECT {COLUMN_NAMES} FROM usage WHERE created_at >= ?1 AND created_at < ?2 \
                 AND (?3 IS NULL OR tenant_id = ?3) AND (?4 IS NULL OR key_id = ?4) \
                 AND (?5 IS NULL OR model = ?5) AND (?6 IS NULL OR channel_id = ?6) \
                 AND (?7 IS NULL OR status = ?7) AND (?8 IS NULL OR created_at < ?8) \
                 ORDER BY created_at DESC, request_id DESC LIMIT ?9"
                ),
                &[
                    int(q.from_ms),
                    int(q.to_ms),
                    opt_text(q.tenant_id),
                    opt_text(q.key_id),
                    opt_text(q.model),
                    opt_text(q.channel_id),
                    opt_int(q.status.map(i64::from)),
                    opt_int(q.before_ms),
                    int(i64::from(q.limit)),
                ],
            )
            .await?;
        rows.iter().map(usage_of).collect()
    }

    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, RelayError> {
        let rows: Vec<StoredUsage> = self
            .all(
                &format!(
                    "SELECT {COLUMN_NAMES} FROM usage WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR key_id = ?2) \
                 AND (?3 IS NULL OR created_at < ?3) ORDER BY created_at DESC, request_id DESC LIMIT ?4"
                ),
                &[
                    opt_text(q.tenant_id.as_deref()),
                    opt_text(q.key_id.as_deref()),
                    opt_int(q.before),
                    int(i64::from(q.limit)),
                ],
            )
            .await?;
        rows.iter().map(usage_of).collect()
    }
}
