//! [edge] The admin API: thin handlers over the store and the pure validation in `config`.
//! Every change invalidates this isolate's caches so it is visible at once here, and within
//! `CONFIG_CACHE_TTL_MS` on other isolates.

use serde_json::json;
use worker::{Env, Headers, Request, Response};

use super::http::{header, json_value, read_body};
use super::objects::health;
use super::objects::limiter;
use super::state::{invalidate_all, now_ms, random_bytes, Settings};
use super::store::{AuditEntry, AuditQuery, LedgerQuery, Store, TenantToken, UsageQuery};
use crate::admin::config::{ChannelView, KeyView, Tenant};
use crate::admin::validate;
use crate::api::listing::parse_listing;
use crate::api::routes::{AdminRoute, AnalyticsView, AuditAfter, TenantScope};
use crate::error::RelayError;
use crate::governance::auth::{self, Actor};
use crate::governance::budget::Budget;
use crate::governance::grant::KeyStatus;
use crate::governance::grant::Status;
use crate::governance::limits::protocol::BudgetCtx;
use crate::ledger::analytics;
use crate::ledger::pricing;
use crate::routing::channel::Channel;

/// Admin bodies are small; a generous fixed cap keeps a bad client from filling memory.
const ADMIN_BODY_LIMIT: u64 = 1024 * 1024;

/// The global admin token (compared in constant time), or a tenant-scoped token (looked up
/// by its hash, so it is never compared as plaintext at all).
pub async fn check_admin(
    req: &Request,
    settings: &Settings,
    store: &Store,
) -> Result<Actor, RelayError> {
    let presented = auth::credential_from_headers(header(req, "authorization").as_deref(), None)
        .ok_or(RelayError::InvalidAdminToken)?;
    match settings.admin_token.as_deref() {
        Some(expected)
            if crate::support::crypto::constant_time_eq(
                presented.as_bytes(),
                expected.as_bytes(),
            ) =>
        {
            return Ok(Actor::Admin)
        }
        Some(_) => {}
        None => worker::console_error!(
            "ADMIN_TOKEN is not set: only tenant tokens can use the admin API"
        ),
    }
    match store
        .tenant_token_by_hash(&auth::hash_key(&presented))
        .await?
    {
        Some(t) => Ok(Actor::Tenant {
            tenant_id: t.tenant_id,
            token_id: t.id,
        }),
        None => Err(RelayError::InvalidAdminToken),
    }
}

/// Whether `actor` may take `route`; an object of another tenant is "not found", so a tenant
/// token cannot even learn what exists beyond its own tenant.
async fn authorize(actor: &Actor, route: &AdminRoute, store: &Store) -> Result<(), RelayError> {
    let Actor::Tenant { tenant_id, .. } = actor else {
        return Ok(());
    };
    match route.tenant_scope() {
        TenantScope::OwnTenant(t) if t == tenant_id => Ok(()),
        TenantScope::OwnTenant(t) => Err(not_found("Tenant", t)),
        TenantScope::OwnKey(k) => match store.key(k).await? {
            Some(key) if key.tenant_id == *tenant_id => Ok(()),
            _ => Err(not_found("Key", k)),
        },
        TenantScope::Narrowed => Ok(()),
        TenantScope::Forbidden => Err(RelayError::Forbidden),
    }
}

fn list(data: impl serde::Serialize) -> serde_json::Value {
    json!({"object": "list", "data": data})
}

fn not_found(what: &str, id: &str) -> RelayError {
    RelayError::NotFound {
        what: format!("{what} '{id}'"),
    }
}

/// A budget's fallback model must be a mapped public model.
async fn check_fallback(store: &Store, budget: &Option<Budget>) -> Result<(), RelayError> {
    let Some(model) = budget.as_ref().and_then(|b| b.fallback_model.as_ref()) else {
        return Ok(());
    };
    if store.model_map().await?.contains_key(model) {
        return Ok(());
    }
    Err(RelayError::invalid_value(
        "budget.fallback_model",
        format!("no model '{model}' in the model map"),
    ))
}

fn new_id(prefix: &str) -> String {
    auth::new_id(prefix, &random_bytes::<10>())
}

pub async fn handle(
    mut req: Request,
    route: AdminRoute,
    store: &Store,
    env: &Env,
    request_id: &str,
    actor: &Actor,
) -> Result<Response, RelayError> {
    let client_ip = header(&req, "cf-connecting-ip");
    authorize(actor, &route, store).await?;
    // A tenant token's listings are its own tenant's, whatever filter it asks for.
    let own_tenant = match actor {
        Actor::Tenant { tenant_id, .. } => Some(tenant_id.clone()),
        Actor::Admin => None,
    };
    let now = now_ms();
    let query = req
        .url()
        .map(|u| u.query().unwrap_or_default().to_string())
        .unwrap_or_default();
    // Every route that changes something is audited, and only those take a body.
    let audit = route.audit().map(|a| {
        (
            a.action,
            a.target_type,
            a.target_id.map(str::to_string),
            a.after,
        )
    });
    let body = match audit {
        Some(_) => read_body(&mut req, ADMIN_BODY_LIMIT).await?,
        None => Vec::new(),
    };
    let before = match &audit {
        Some(_) => snapshot(store, &route).await,
        None => None,
    };
    let audited_route = route.clone();
    let result = match route {
        AdminRoute::ListTenants => (200, list(store.tenants().await?)),
        AdminRoute::CreateTenant => {
            let input = validate::parse_new_tenant(&body, limiter::local_dev(env))?;
            validate::check_allowlist(&input.models, &store.model_groups().await?)?;
            check_fallback(store, &input.settings.budget).await?;
            let tenant = Tenant {
                id: new_id("ten"),
                name: input.name,
                status: Status::Active,
                models: input.models,
                limits: input.limits,
                rules: input.rules,
                jurisdiction: input.jurisdiction,
                settings: input.settings,
                created_at: now,
                updated_at: now,
            };
            store.insert_tenant(&tenant).await?;
            (201, json!(tenant))
        }
        AdminRoute::GetTenant(id) => (200, json!(tenant(store, &id).await?)),
        AdminRoute::UpdateTenant(id) => {
            let mut tenant = tenant(store, &id).await?;
            let patch = validate::parse_tenant_patch(&body, limiter::local_dev(env), &tenant)?;
            // What is written back as it was read is not checked again: a group or fallback
            // model removed since must not block the rest of a change.
            if let Some(models) = patch.models.as_ref().filter(|m| **m != tenant.models) {
                validate::check_allowlist(models, &store.model_groups().await?)?;
            }
            if let Some(budget) = patch
                .budget
                .as_ref()
                .filter(|b| **b != tenant.settings.budget)
            {
                check_fallback(store, budget).await?;
            }
            patch.apply(&mut tenant, now);
            store.update_tenant(&tenant).await?;
            (200, json!(tenant))
        }
        AdminRoute::DisableTenant(id) => (
            200,
            json!(set_tenant_status(store, &id, Status::Disabled, now).await?),
        ),
        AdminRoute::EnableTenant(id) => (
            200,
            json!(set_tenant_status(store, &id, Status::Active, now).await?),
        ),
        AdminRoute::ListKeys(id) => {
            tenant(store, &id).await?;
            (200, list(store.keys_of(&id).await?))
        }
        AdminRoute::CreateKey(id) => {
            let input = validate::parse_new_key(&body, now)?;
            validate::check_allowlist(&input.models, &store.model_groups().await?)?;
            tenant(store, &id).await?;
            let plaintext = auth::generate_key(&random_bytes::<32>());
            let key = KeyView {
                id: new_id("key"),
                tenant_id: id,
                name: input.name,
                prefix: auth::key_prefix(&plaintext),
                status: KeyStatus::Active,
                models: input.models,
                limits: input.limits,
                rules: input.rules,
                expires_at: input.expires_at,
                created_at: now,
                revoked_at: None,
                replaced_by: None,
                cache_ttl_s: input.cache_ttl_s,
            };
            store.insert_key(&key, &auth::hash_key(&plaintext)).await?;
            let mut shown = json!(key);
            // The only time the plaintext leaves the relay.
            shown["key"] = json!(plaintext);
            (201, shown)
        }
        AdminRoute::GetKey(id) => (200, json!(key(store, &id).await?)),
        AdminRoute::UpdateKey(id) => {
            let mut key = key(store, &id).await?;
            let patch = validate::parse_key_patch(&body, now, &key)?;
            // As for tenants, an allowlist written back unchanged is not checked again.
            if let Some(models) = patch.models.as_ref().filter(|m| **m != key.models) {
                validate::check_allowlist(models, &store.model_groups().await?)?;
            }
            if key.status == KeyStatus::Revoked {
                return Err(RelayError::invalid_value(
                    "id",
                    "a revoked key cannot be changed",
                ));
            }
            patch.apply(&mut key);
            store.update_key(&key).await?;
            (200, json!(key))
        }
        AdminRoute::RevokeKey(id) => {
            let k = key(store, &id).await?;
            let jurisdiction = tenant(store, &k.tenant_id).await?.jurisdiction;
            store.revoke_key(&id, now).await?;
            // The key's limiter refuses its next request everywhere, whatever isolates cached.
            limiter::revoke(env, &id, jurisdiction.as_deref()).await?;
            (200, json!(key(store, &id).await?))
        }
        AdminRoute::RotateKey(id) => {
            let grace_s = validate::parse_rotation(&body)?;
            let mut old = key(store, &id).await?;
            if old.status == KeyStatus::Revoked {
                return Err(RelayError::invalid_value(
                    "id",
                    "a revoked key cannot be rotated",
                ));
            }
            let plaintext = auth::generate_key(&random_bytes::<32>());
            let new = KeyView {
                id: new_id("key"),
                prefix: auth::key_prefix(&plaintext),
                created_at: now,
                revoked_at: None,
                replaced_by: None,
                ..old.clone()
            };
            store.insert_key(&new, &auth::hash_key(&plaintext)).await?;
            // The old key keeps working until the grace deadline (or its own, earlier, expiry).
            let deadline = now + grace_s * 1000;
            old.expires_at = Some(old.expires_at.map_or(deadline, |at| at.min(deadline)));
            old.replaced_by = Some(new.id.clone());
            store.update_key(&old).await?;
            let mut shown = json!(new);
            shown["key"] = json!(plaintext);
            shown["replaces"] = json!(old);
            (201, shown)
        }
        AdminRoute::KeyLimits(id) => {
            let key = key(store, &id).await?;
            let jurisdiction = tenant(store, &key.tenant_id).await?.jurisdiction;
            let place = limiter::Place::key(&id, jurisdiction.as_deref());
            let usage = limiter::peek(env, &place, &key.limits, None).await?;
            (200, json!({"limits": key.limits, "usage": usage}))
        }
        AdminRoute::TenantLimits(id) => {
            let tenant = tenant(store, &id).await?;
            let place = limiter::Place::tenant(&id, tenant.jurisdiction.as_deref());
            let budget = tenant.settings.budget.clone().map(|budget| BudgetCtx {
                tenant_id: id.clone(),
                budget,
                tag: None,
            });
            let usage = limiter::peek(env, &place, &tenant.limits, budget).await?;
            (
                200,
                json!({"limits": tenant.limits, "budget": tenant.settings.budget, "usage": usage}),
            )
        }
        AdminRoute::ListChannels => {
            let views: Vec<_> = store
                .channels()
                .await?
                .iter()
                .map(ChannelView::of)
                .collect();
            (200, list(views))
        }
        AdminRoute::CreateChannel => {
            let input = validate::parse_new_channel(&body)?;
            let channel = Channel {
                id: new_id("ch"),
                name: input.name,
                provider: input.provider,
                base_url: input.base_url,
                api_keys: input.api_keys,
                models: input.models,
                status: input.status,
                timeout_ms: input.timeout_ms,
                total_timeout_ms: input.total_timeout_ms,
                region: input.region,
                breaker: input.breaker,
                options: input.options,
                created_at: now,
                updated_at: now,
            };
            store.insert_channel(&channel).await?;
            (201, json!(ChannelView::of(&channel)))
        }
        AdminRoute::GetChannel(id) => (200, json!(ChannelView::of(&channel(store, &id).await?))),
        AdminRoute::UpdateChannel(id) => {
            let mut channel = channel(store, &id).await?;
            let patch = validate::parse_channel_patch(&body, &channel)?;
            patch.apply(&mut channel, now)?;
            if patch.models.is_some() {
                validate::check_channel_keeps_its_models(&store.model_map().await?, &channel)?;
            }
            store.update_channel(&channel).await?;
            (200, json!(ChannelView::of(&channel)))
        }
        AdminRoute::DeleteChannel(id) => {
            let map = store.model_map().await?;
            let users = validate::models_using_channel(&map, &id);
            if !users.is_empty() {
                return Err(RelayError::Conflict {
                    message: format!("Channel '{id}' is used by the model map for: {}. Remap those models first.", users.join(", ")),
                });
            }
            if !store.delete_channel(&id).await? {
                return Err(not_found("Channel", &id));
            }
            (200, json!({"id": id, "deleted": true}))
        }
        AdminRoute::GetModelMap => (200, json!(store.model_map().await?)),
        AdminRoute::ReplaceModelMap => {
            let previous = store.model_map().await?;
            let map = validate::parse_model_map_body(&body, &previous, now / 1000)?;
            validate::check_model_map(&map, &store.channels().await?)?;
            store.put_model_map(&map).await?;
            (200, json!(map))
        }
        AdminRoute::GetModelMapEntry(model) => {
            let map = store.model_map().await?;
            (
                200,
                json!(map.get(&model).ok_or_else(|| not_found("Model", &model))?),
            )
        }
        AdminRoute::PutModelMapEntry(model) => {
            validate::check_public_model_name(&model)?;
            let mut map = store.model_map().await?;
            let mut target = validate::parse_model_target(&body, "", now / 1000)?;
            validate::keep_created(&mut target, map.get(&model));
            map.insert(model.clone(), target.clone());
            validate::check_model_map(&map, &store.channels().await?)
                .map_err(|e| unprefix(e, &model))?;
            store.put_model_map(&map).await?;
            (200, json!(target))
        }
        AdminRoute::DeleteModelMapEntry(model) => {
            let mut map = store.model_map().await?;
            map.remove(&model)
                .ok_or_else(|| not_found("Model", &model))?;
            store.put_model_map(&map).await?;
            (200, json!({"model": model, "deleted": true}))
        }
        AdminRoute::ListAudit => {
            let mut query = audit_query(&query)?;
            if own_tenant.is_some() {
                query.tenant_id = own_tenant.clone();
            }
            let rows: Vec<_> = store
                .audit(&query)
                .await?
                .iter()
                .map(|r| r.view())
                .collect();
            (200, list(rows))
        }
        AdminRoute::ChannelHealth(id) => {
            channel(store, &id).await?;
            (200, health::admin_view(env, &id).await?)
        }
        AdminRoute::EnableChannelKey {
            channel: id,
            fingerprint: fp,
        } => {
            channel(store, &id).await?;
            health::enable_key(env, &id, &fp).await?;
            (
                200,
                json!({"channel_id": id, "fingerprint": fp, "enabled": true}),
            )
        }
        AdminRoute::ListPrices => (
            200,
            list(pricing::PriceView::listing(&store.custom_prices().await?)),
        ),
        AdminRoute::GetPrice(model) => {
            let custom = store.custom_prices().await?;
            let found = pricing::resolve(&custom, &model)
                .ok_or_else(|| not_found("Price for model", &model))?;
            (
                200,
                json!({"model": model, "matched": found.key, "source": found.source, "price": found.price}),
            )
        }
        AdminRoute::PutPrice(model) => {
            pricing::check_model_key(&model)?;
            let price = validate::parse_price_write(&body, &model)?;
            let mut prices = store.custom_prices().await?;
            prices.insert(model.clone(), price);
            store.put_custom_prices(&prices).await?;
            (
                200,
                json!({"model": model, "price": price, "source": "custom"}),
            )
        }
        AdminRoute::DeletePrice(model) => {
            let mut prices = store.custom_prices().await?;
            prices
                .remove(&model)
                .ok_or_else(|| not_found("Custom price", &model))?;
            store.put_custom_prices(&prices).await?;
            (200, json!({"model": model, "deleted": true}))
        }
        AdminRoute::ListModelGroups => (200, json!(store.model_groups().await?)),
        AdminRoute::GetModelGroup(name) => {
            let groups = store.model_groups().await?;
            let models = groups
                .get(&name)
                .ok_or_else(|| not_found("Model group", &name))?;
            let multiplier = store.group_multipliers().await?.get(&name).copied();
            (
                200,
                json!({"name": name, "models": models, "price_multiplier_ppm": multiplier}),
            )
        }
        AdminRoute::PutModelGroup(name) => {
            validate::check_group_name(&name)?;
            let (models, multiplier) = validate::parse_group(&body, &name)?;
            let mut groups = store.model_groups().await?;
            groups.insert(name.clone(), models.clone());
            store.put_model_groups(&groups).await?;
            let mut multipliers = store.group_multipliers().await?;
            let changed = match multiplier {
                Some(m) => multipliers.insert(name.clone(), m) != Some(m),
                None => multipliers.remove(&name).is_some(),
            };
            if changed {
                store.put_group_multipliers(&multipliers).await?;
            }
            (
                200,
                json!({"name": name, "models": models, "price_multiplier_ppm": multiplier}),
            )
        }
        AdminRoute::DeleteModelGroup(name) => {
            let mut groups = store.model_groups().await?;
            groups
                .remove(&name)
                .ok_or_else(|| not_found("Model group", &name))?;
            store.put_model_groups(&groups).await?;
            let mut multipliers = store.group_multipliers().await?;
            if multipliers.remove(&name).is_some() {
                store.put_group_multipliers(&multipliers).await?;
            }
            (200, json!({"name": name, "deleted": true}))
        }
        AdminRoute::ListTenantTokens(id) => {
            tenant(store, &id).await?;
            (200, list(store.tenant_tokens(&id).await?))
        }
        AdminRoute::CreateTenantToken(id) => {
            let name = validate::parse_token_name(&body)?;
            tenant(store, &id).await?;
            let plaintext = format!(
                "er-tt-{}",
                &auth::generate_key(&random_bytes::<32>())[auth::KEY_PREFIX.len()..]
            );
            let token = TenantToken {
                id: new_id("tt"),
                tenant_id: id,
                name,
                prefix: auth::key_prefix(&plaintext),
                status: "active".into(),
                created_at: now,
                revoked_at: None,
            };
            store
                .insert_tenant_token(&token, &auth::hash_key(&plaintext))
                .await?;
            let mut shown = json!(token);
            shown["token"] = json!(plaintext);
            (201, shown)
        }
        AdminRoute::RevokeTenantToken(id) => {
            store
                .tenant_token(&id)
                .await?
                .ok_or_else(|| not_found("Tenant token", &id))?;
            store.revoke_tenant_token(&id, now).await?;
            (
                200,
                json!(store
                    .tenant_token(&id)
                    .await?
                    .ok_or_else(|| not_found("Tenant token", &id))?),
            )
        }
        AdminRoute::GetUsage(id) => {
            let row = store
                .usage_row(&id)
                .await?
                .filter(|r| own_tenant.as_ref().is_none_or(|t| *t == r.tenant_id))
                .ok_or_else(|| not_found("Request", &id))?;
            let attempts = row.attempt_log.clone();
            let mut body = json!(row);
            body["attempt_log"] = json!(attempts);
            body["bodies"] = json!(row.bodies);
            (200, body)
        }
        AdminRoute::ListUsage => {
            let mut query = usage_query(&query)?;
            if own_tenant.is_some() {
                query.tenant_id = own_tenant.clone();
            }
            (200, list(store.usage(&query).await?))
        }
        // Its replies are not all JSON (CSV exports), and it changes nothing.
        AdminRoute::Analytics(view) => return analytics(&req, view, store, actor).await,
        // Routed, not served yet: plans, end users and the budget route land with their store.
        AdminRoute::GetTenantBudget(_)
        | AdminRoute::PutTenantBudget(_)
        | AdminRoute::ListPlans(_)
        | AdminRoute::GetPlan { .. }
        | AdminRoute::PutPlan { .. }
        | AdminRoute::DeletePlan { .. }
        | AdminRoute::GetEndUser { .. } => {
            return Err(RelayError::NotFound {
                what: "This admin operation".into(),
            })
        }
    };
    if let Some((action, target_type, target_id, after)) = audit {
        invalidate_all();
        let after = match after {
            AuditAfter::Reply => Some(redacted(&result.1)),
            AuditAfter::Stored => snapshot(store, &audited_route).await,
            AuditAfter::Gone => None,
        };
        let target_id = target_id
            .or_else(|| {
                after
                    .as_ref()
                    .and_then(|a| a["id"].as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let tenant_id = match target_type {
            "tenant" => Some(target_id.clone()),
            _ => [&after, &before].iter().find_map(|v| {
                v.as_ref()
                    .and_then(|v| v["tenant_id"].as_str())
                    .map(str::to_string)
            }),
        };
        let entry = AuditEntry {
            at: now,
            actor: &actor.name(),
            action,
            target_type,
            target_id: &target_id,
            tenant_id: tenant_id.as_deref(),
            before: before.as_ref(),
            after: after.as_ref(),
            client_ip: client_ip.as_deref(),
            request_id,
        };
        if let Err(e) = store.insert_audit(&entry).await {
            // The change is made; losing its record must at least be loud.
            worker::console_error!("audit row lost for {} {}: {:?}", action, target_id, e);
        }
    }
    let (status, body) = result;
    Ok(json_value(status, &body))
}

/// The admin API's own view of the object a change touches (it holds no secrets); `None` for
/// a route whose change creates its object or touches none worth recording.
async fn snapshot(store: &Store, route: &AdminRoute) -> Option<serde_json::Value> {
    use AdminRoute::*;
    let value = match route {
        UpdateTenant(id) | DisableTenant(id) | EnableTenant(id) => {
            json!(store.tenant(id).await.ok()??)
        }
        UpdateKey(id) | RevokeKey(id) | RotateKey(id) => json!(store.key(id).await.ok()??),
        UpdateChannel(id) | DeleteChannel(id) => {
            json!(ChannelView::of(&store.channel(id).await.ok()??))
        }
        RevokeTenantToken(id) => json!(store.tenant_token(id).await.ok()??),
        PutModelGroup(name) | DeleteModelGroup(name) => {
            json!(store.model_groups().await.ok()?.get(name)?)
        }
        PutPrice(model) | DeletePrice(model) => {
            json!(store.custom_prices().await.ok()?.get(model)?)
        }
        ReplaceModelMap => json!(store.model_map().await.ok()?),
        PutModelMapEntry(model) | DeleteModelMapEntry(model) => {
            json!(store.model_map().await.ok()?.get(model)?)
        }
        CreateTenant
        | CreateKey(_)
        | CreateTenantToken(_)
        | CreateChannel
        | EnableChannelKey { .. }
        | ListTenants
        | GetTenant(_)
        | TenantLimits(_)
        | ListKeys(_)
        | GetKey(_)
        | KeyLimits(_)
        | ListTenantTokens(_)
        | ListChannels
        | GetChannel(_)
        | ChannelHealth(_)
        | GetModelMap
        | GetModelMapEntry(_)
        | ListModelGroups
        | GetModelGroup(_)
        | ListPrices
        | GetPrice(_)
        | ListUsage
        | GetUsage(_)
        | ListAudit
        | Analytics(_)
        | GetTenantBudget(_)
        | PutTenantBudget(_)
        | ListPlans(_)
        | GetPlan { .. }
        | PutPlan { .. }
        | DeletePlan { .. }
        | GetEndUser { .. } => return None,
    };
    Some(value)
}

/// A reply as recorded: a created key's plaintext never reaches the log.
fn redacted(reply: &serde_json::Value) -> serde_json::Value {
    let mut v = reply.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("key");
        o.remove("token");
    }
    v
}

fn audit_query(query: &str) -> Result<AuditQuery, RelayError> {
    let l = parse_listing(query, &["target_id", "tenant_id", "action"])?;
    Ok(AuditQuery {
        target_id: l.filter("target_id"),
        tenant_id: l.filter("tenant_id"),
        action: l.filter("action"),
        before: l.before,
        limit: l.limit,
    })
}

/// Errors of a single-entry PUT name the entry's field, not `model.field`.
fn unprefix(err: RelayError, model: &str) -> RelayError {
    match err {
        RelayError::InvalidValue { param, message } => RelayError::InvalidValue {
            param: param
                .strip_prefix(&format!("{model}."))
                .unwrap_or(&param)
                .to_string(),
            message,
        },
        other => other,
    }
}

async fn key(store: &Store, id: &str) -> Result<KeyView, RelayError> {
    store.key(id).await?.ok_or_else(|| not_found("Key", id))
}

async fn tenant(store: &Store, id: &str) -> Result<Tenant, RelayError> {
    store
        .tenant(id)
        .await?
        .ok_or_else(|| not_found("Tenant", id))
}

async fn channel(store: &Store, id: &str) -> Result<Channel, RelayError> {
    store
        .channel(id)
        .await?
        .ok_or_else(|| not_found("Channel", id))
}

async fn set_tenant_status(
    store: &Store,
    id: &str,
    status: Status,
    now: i64,
) -> Result<Tenant, RelayError> {
    let mut t = tenant(store, id).await?;
    t.status = status;
    t.updated_at = now;
    store.update_tenant(&t).await?;
    Ok(t)
}

fn usage_query(query: &str) -> Result<UsageQuery, RelayError> {
    let l = parse_listing(query, &["tenant_id", "key_id"])?;
    Ok(UsageQuery {
        tenant_id: l.filter("tenant_id"),
        key_id: l.filter("key_id"),
        before: l.before,
        limit: l.limit,
    })
}

/// How many ledger rows an aggregate reads from D1 at most; past that the answer says it was
/// truncated (Analytics Engine is the place for larger spans: README "Analytics").
const AGGREGATE_ROWS: u32 = 20_000;

/// `GET /admin/analytics/{summary,timeseries,breakdown,requests,export}`: aggregates and the
/// request log over the ledger, narrowed to the caller's tenant for a tenant token.
pub async fn analytics(
    req: &Request,
    view: AnalyticsView,
    store: &Store,
    actor: &Actor,
) -> Result<Response, RelayError> {
    let query_string = req
        .url()
        .map(|u| u.query().unwrap_or_default().to_string())
        .unwrap_or_default();
    let mut q = analytics::parse_query(&query_string, now_ms())?;
    if let Actor::Tenant { tenant_id, .. } = actor {
        q.tenant_id = Some(tenant_id.clone());
    }
    let ledger = |limit: u32, before_ms: Option<i64>| LedgerQuery {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        tenant_id: q.tenant_id.as_deref(),
        key_id: q.key_id.as_deref(),
        model: q.model.as_deref(),
        channel_id: q.channel_id.as_deref(),
        status: q.status,
        before_ms,
        limit,
    };
    let range = json!({"from_ms": q.from_ms, "to_ms": q.to_ms});
    // The rows an aggregate reads, and whether that was all of them.
    let aggregated = || async {
        let rows = store.ledger(&ledger(AGGREGATE_ROWS, None)).await?;
        let truncated = rows.len() as u32 >= AGGREGATE_ROWS;
        Ok::<_, RelayError>((rows, truncated))
    };
    match view {
        AnalyticsView::Requests => {
            let rows = store.ledger(&ledger(q.limit, q.before_ms)).await?;
            let next_before = (rows.len() == q.limit as usize)
                .then(|| rows.last().map(|r| r.created_at))
                .flatten();
            Ok(json_value(
                200,
                &json!({"object": "list", "data": rows, "next_before": next_before}),
            ))
        }
        AnalyticsView::Export => {
            let rows = store.ledger(&ledger(AGGREGATE_ROWS, None)).await?;
            match q.format {
                analytics::Format::Csv => {
                    let response = Response::ok(analytics::to_csv(&rows)).map_err(|e| {
                        RelayError::Internal {
                            detail: format!("csv: {e}"),
                        }
                    })?;
                    let headers = Headers::new();
                    let _ = headers.set("content-type", "text/csv; charset=utf-8");
                    let _ = headers.set(
                        "content-disposition",
                        &format!(
                            "attachment; filename=\"usage-{}-{}.csv\"",
                            q.from_ms, q.to_ms
                        ),
                    );
                    Ok(response.with_headers(headers))
                }
                analytics::Format::Json => Ok(json_value(
                    200,
                    &json!({"object": "list", "range": range, "data": rows}),
                )),
            }
        }
        AnalyticsView::Summary => {
            let (rows, truncated) = aggregated().await?;
            Ok(json_value(
                200,
                &json!({"range": range, "truncated": truncated, "stats": analytics::summarize(&rows)}),
            ))
        }
        AnalyticsView::Timeseries => {
            let (rows, truncated) = aggregated().await?;
            let bucket = q.bucket.unwrap_or(analytics::Bucket::Hour);
            let data: Vec<_> = analytics::timeseries(&rows, bucket, q.from_ms, q.to_ms)
                .into_iter()
                .map(|(t, stats)| json!({"t": t, "stats": stats}))
                .collect();
            Ok(json_value(
                200,
                &json!({"range": range, "truncated": truncated, "data": data}),
            ))
        }
        AnalyticsView::Breakdown => {
            let (rows, truncated) = aggregated().await?;
            let by = q.by.unwrap_or(analytics::Dimension::Model);
            let data: Vec<_> = analytics::breakdown(&rows, by)
                .into_iter()
                .map(|(key, stats)| json!({"key": key, "stats": stats}))
                .collect();
            Ok(json_value(
                200,
                &json!({"range": range, "truncated": truncated, "data": data}),
            ))
        }
    }
}
