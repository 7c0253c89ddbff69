//! Every route the relay serves: one variant per (path, method) that exists, so a new route
//! does not compile until each place that dispatches on routes handles it. A path that exists
//! with the wrong method is a 405 whose `Allow` comes from the same table that routes, a path
//! that does not exist a 404. The facts each route carries (what the audit log calls a change,
//! what a tenant token may do, what each tenant token role may do) live here too, each one
//! exhaustive over the routes.

use crate::error::RelayError;
use crate::formats::openai::Endpoint;
use crate::governance::roles::Role;
use crate::support::url::percent_decode;

/// A request's method, parsed once at the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    /// Any other method: no route has it, so it is a 405 wherever the path exists.
    Other(String),
}

impl Method {
    /// Known methods in any case (the Workers runtime upper-cased them before, and clients
    /// sending `patch` must keep working); anything else is `Other`, kept as sent.
    pub fn parse(method: &str) -> Method {
        match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other(method.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(m) => m,
        }
    }
}

/// What a request is for, method included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`
    Health,
    /// `GET /v1/models`
    ListModels,
    /// `GET /v1/models/{model}`
    GetModel(String),
    /// `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`
    Relay(Endpoint),
    /// `POST /v1/messages`: Anthropic's Messages API.
    Messages,
    /// `POST /v1/messages/count_tokens`
    CountTokens,
    /// `GET /admin/ui`: the dashboard page (public; its data needs a token).
    Dashboard,
    /// Everything else under `/admin/`, behind an admin or tenant token.
    Admin(AdminRoute),
}

/// The admin API's operations. Ids are percent-decoded path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /admin/tenants`
    ListTenants,
    /// `POST /admin/tenants`
    CreateTenant,
    /// `GET /admin/tenants/{id}`
    GetTenant(String),
    /// `PATCH /admin/tenants/{id}`
    UpdateTenant(String),
    /// `POST /admin/tenants/{id}/disable`
    DisableTenant(String),
    /// `POST /admin/tenants/{id}/enable`
    EnableTenant(String),
    /// `GET /admin/tenants/{id}/limits`: what the tenant's limiter holds now.
    TenantLimits(String),
    /// `GET /admin/tenants/{id}/budget`: the tenant's budget (what `budget` of its GET shows).
    GetTenantBudget(String),
    /// `PUT /admin/tenants/{id}/budget`: the budget alone, so a tenant's billing token can set
    /// it without the rest of the tenant.
    PutTenantBudget(String),
    /// `GET /admin/tenants/{tenant}/plans`
    ListPlans(String),
    /// `GET /admin/tenants/{tenant}/plans/{name}`
    GetPlan { tenant: String, plan: String },
    /// `PUT /admin/tenants/{tenant}/plans/{name}`
    PutPlan { tenant: String, plan: String },
    /// `DELETE /admin/tenants/{tenant}/plans/{name}`
    DeletePlan { tenant: String, plan: String },
    /// `GET /admin/tenants/{tenant}/users/{user}`: one end user's limiter state and usage (a
    /// user id may contain `/`, so it takes the rest of the path).
    GetEndUser { tenant: String, user: String },
    /// `GET /admin/tenants/{tenant}/keys`
    ListKeys(String),
    /// `POST /admin/tenants/{tenant}/keys`
    CreateKey(String),
    /// `GET /admin/keys/{id}`
    GetKey(String),
    /// `PATCH /admin/keys/{id}`
    UpdateKey(String),
    /// `POST /admin/keys/{id}/revoke`
    RevokeKey(String),
    /// `POST /admin/keys/{id}/rotate`
    RotateKey(String),
    /// `GET /admin/keys/{id}/limits`: what the key's limiter holds now.
    KeyLimits(String),
    /// `GET /admin/tenants/{tenant}/tokens`: the tenant's admin tokens.
    ListTenantTokens(String),
    /// `POST /admin/tenants/{tenant}/tokens` (the global admin issues them).
    CreateTenantToken(String),
    /// `POST /admin/tenant-tokens/{id}/revoke`
    RevokeTenantToken(String),
    /// `GET /admin/channels`
    ListChannels,
    /// `POST /admin/channels`
    CreateChannel,
    /// `GET /admin/channels/{id}`
    GetChannel(String),
    /// `PATCH /admin/channels/{id}`
    UpdateChannel(String),
    /// `DELETE /admin/channels/{id}`
    DeleteChannel(String),
    /// `GET /admin/channels/{id}/health`: circuit breakers and upstream-key cooldowns.
    ChannelHealth(String),
    /// `POST /admin/channels/{id}/keys/{fingerprint}/enable`: re-enable an upstream key
    /// disabled after a 401/403.
    EnableChannelKey {
        channel: String,
        fingerprint: String,
    },
    /// `GET /admin/model-map`
    GetModelMap,
    /// `PUT /admin/model-map`: the whole map at once.
    ReplaceModelMap,
    /// `GET /admin/model-map/{model}` (a model name may contain `/`)
    GetModelMapEntry(String),
    /// `PUT /admin/model-map/{model}`
    PutModelMapEntry(String),
    /// `DELETE /admin/model-map/{model}`
    DeleteModelMapEntry(String),
    /// `GET /admin/model-groups`
    ListModelGroups,
    /// `GET /admin/model-groups/{name}`
    GetModelGroup(String),
    /// `PUT /admin/model-groups/{name}`
    PutModelGroup(String),
    /// `DELETE /admin/model-groups/{name}`
    DeleteModelGroup(String),
    /// `GET /admin/prices`: built-in defaults merged with the operator's overrides.
    ListPrices,
    /// `GET /admin/prices/{model}`: which entry prices a model.
    GetPrice(String),
    /// `PUT /admin/prices/{model}`
    PutPrice(String),
    /// `DELETE /admin/prices/{model}`
    DeletePrice(String),
    /// `GET /admin/usage`
    ListUsage,
    /// `GET /admin/usage/{request_id}`: one request's ledger row, with its attempts.
    GetUsage(String),
    /// `GET /admin/audit`
    ListAudit,
    /// `GET /admin/analytics/{view}`: aggregates, the request log and exports of the ledger.
    Analytics(AnalyticsView),
}

/// What an analytics request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalyticsView {
    Summary,
    Timeseries,
    Breakdown,
    Requests,
    Export,
}

/// A path that exists, before its method is known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    Health,
    Models,
    Model(String),
    Relay(Endpoint),
    Messages,
    CountTokens,
    Dashboard,
    Tenants,
    Tenant(String),
    TenantDisable(String),
    TenantEnable(String),
    TenantLimits(String),
    TenantBudget(String),
    TenantPlans(String),
    TenantPlan(String, String),
    TenantUser(String, String),
    TenantKeys(String),
    TenantTokens(String),
    Key(String),
    KeyRevoke(String),
    KeyRotate(String),
    KeyLimits(String),
    TenantTokenRevoke(String),
    Channels,
    Channel(String),
    ChannelHealth(String),
    ChannelKeyEnable(String, String),
    ModelMap,
    ModelMapEntry(String),
    ModelGroups,
    ModelGroup(String),
    Prices,
    Price(String),
    Usage,
    UsageEntry(String),
    Audit,
    Analytics(AnalyticsView),
}

impl Resource {
    /// The resource a path names, or `None` for an unknown path. Path segments taken as ids are
    /// percent-decoded; a model name may contain `/` (`meta-llama/Llama-3-8b`), so it takes the
    /// rest of the path.
    fn parse(path: &str) -> Option<Resource> {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let rest_from = |n: usize| -> Option<String> {
            let rest = segments.get(n..)?.join("/");
            (!rest.is_empty()).then(|| percent_decode(&rest))
        };
        let id = |s: &str| -> Option<String> { (!s.is_empty()).then(|| percent_decode(s)) };
        Some(match segments.as_slice() {
            ["health"] => Resource::Health,
            ["v1", "models"] => Resource::Models,
            ["v1", "models", _, ..] => Resource::Model(rest_from(2)?),
            ["v1", "chat", "completions"] => Resource::Relay(Endpoint::ChatCompletions),
            ["v1", "completions"] => Resource::Relay(Endpoint::Completions),
            ["v1", "embeddings"] => Resource::Relay(Endpoint::Embeddings),
            ["v1", "messages"] => Resource::Messages,
            ["v1", "messages", "count_tokens"] => Resource::CountTokens,
            ["admin", "tenants"] => Resource::Tenants,
            ["admin", "tenants", t] => Resource::Tenant(id(t)?),
            ["admin", "tenants", t, "disable"] => Resource::TenantDisable(id(t)?),
            ["admin", "tenants", t, "enable"] => Resource::TenantEnable(id(t)?),
            ["admin", "tenants", t, "keys"] => Resource::TenantKeys(id(t)?),
            ["admin", "keys", k] => Resource::Key(id(k)?),
            ["admin", "keys", k, "revoke"] => Resource::KeyRevoke(id(k)?),
            ["admin", "keys", k, "rotate"] => Resource::KeyRotate(id(k)?),
            ["admin", "keys", k, "limits"] => Resource::KeyLimits(id(k)?),
            ["admin", "tenants", t, "limits"] => Resource::TenantLimits(id(t)?),
            ["admin", "tenants", t, "budget"] => Resource::TenantBudget(id(t)?),
            ["admin", "tenants", t, "plans"] => Resource::TenantPlans(id(t)?),
            ["admin", "tenants", t, "plans", p] => Resource::TenantPlan(id(t)?, id(p)?),
            ["admin", "tenants", t, "users", _, ..] => Resource::TenantUser(id(t)?, rest_from(4)?),
            ["admin", "channels"] => Resource::Channels,
            ["admin", "channels", c] => Resource::Channel(id(c)?),
            ["admin", "channels", c, "health"] => Resource::ChannelHealth(id(c)?),
            ["admin", "channels", c, "keys", fp, "enable"] => {
                Resource::ChannelKeyEnable(id(c)?, id(fp)?)
            }
            ["admin", "model-map"] => Resource::ModelMap,
            ["admin", "model-map", _, ..] => Resource::ModelMapEntry(rest_from(2)?),
            ["admin", "usage"] => Resource::Usage,
            ["admin", "usage", r] => Resource::UsageEntry(id(r)?),
            ["admin", "audit"] => Resource::Audit,
            ["admin", "model-groups"] => Resource::ModelGroups,
            ["admin", "model-groups", g] => Resource::ModelGroup(id(g)?),
            ["admin", "ui"] => Resource::Dashboard,
            ["admin", "analytics", "summary"] => Resource::Analytics(AnalyticsView::Summary),
            ["admin", "analytics", "timeseries"] => Resource::Analytics(AnalyticsView::Timeseries),
            ["admin", "analytics", "breakdown"] => Resource::Analytics(AnalyticsView::Breakdown),
            ["admin", "analytics", "requests"] => Resource::Analytics(AnalyticsView::Requests),
            ["admin", "analytics", "export"] => Resource::Analytics(AnalyticsView::Export),
            ["admin", "prices"] => Resource::Prices,
            ["admin", "prices", _, ..] => Resource::Price(rest_from(2)?),
            ["admin", "tenants", t, "tokens"] => Resource::TenantTokens(id(t)?),
            ["admin", "tenant-tokens", k, "revoke"] => Resource::TenantTokenRevoke(id(k)?),
            _ => return None,
        })
    }

    /// The methods this path has and the route each one is, in the order `Allow` lists them:
    /// the one table both routing and 405s read.
    fn routes(self) -> Vec<(Method, Route)> {
        use AdminRoute as A;
        use Method::{Delete, Get, Patch, Post, Put};
        let admin = |method: Method, route: AdminRoute| (method, Route::Admin(route));
        match self {
            Resource::Health => vec![(Get, Route::Health)],
            Resource::Models => vec![(Get, Route::ListModels)],
            Resource::Model(m) => vec![(Get, Route::GetModel(m))],
            Resource::Relay(e) => vec![(Post, Route::Relay(e))],
            Resource::Messages => vec![(Post, Route::Messages)],
            Resource::CountTokens => vec![(Post, Route::CountTokens)],
            Resource::Dashboard => vec![(Get, Route::Dashboard)],
            Resource::Tenants => vec![admin(Get, A::ListTenants), admin(Post, A::CreateTenant)],
            Resource::Tenant(t) => vec![
                admin(Get, A::GetTenant(t.clone())),
                admin(Patch, A::UpdateTenant(t)),
            ],
            Resource::TenantDisable(t) => vec![admin(Post, A::DisableTenant(t))],
            Resource::TenantEnable(t) => vec![admin(Post, A::EnableTenant(t))],
            Resource::TenantLimits(t) => vec![admin(Get, A::TenantLimits(t))],
            Resource::TenantBudget(t) => vec![
                admin(Get, A::GetTenantBudget(t.clone())),
                admin(Put, A::PutTenantBudget(t)),
            ],
            Resource::TenantPlans(t) => vec![admin(Get, A::ListPlans(t))],
            Resource::TenantPlan(tenant, plan) => vec![
                admin(
                    Get,
                    A::GetPlan {
                        tenant: tenant.clone(),
                        plan: plan.clone(),
                    },
                ),
                admin(
                    Put,
                    A::PutPlan {
                        tenant: tenant.clone(),
                        plan: plan.clone(),
                    },
                ),
                admin(Delete, A::DeletePlan { tenant, plan }),
            ],
            Resource::TenantUser(tenant, user) => vec![admin(Get, A::GetEndUser { tenant, user })],
            Resource::TenantKeys(t) => vec![
                admin(Get, A::ListKeys(t.clone())),
                admin(Post, A::CreateKey(t)),
            ],
            Resource::TenantTokens(t) => vec![
                admin(Get, A::ListTenantTokens(t.clone())),
                admin(Post, A::CreateTenantToken(t)),
            ],
            Resource::Key(k) => vec![
                admin(Get, A::GetKey(k.clone())),
                admin(Patch, A::UpdateKey(k)),
            ],
            Resource::KeyRevoke(k) => vec![admin(Post, A::RevokeKey(k))],
            Resource::KeyRotate(k) => vec![admin(Post, A::RotateKey(k))],
            Resource::KeyLimits(k) => vec![admin(Get, A::KeyLimits(k))],
            Resource::TenantTokenRevoke(t) => vec![admin(Post, A::RevokeTenantToken(t))],
            Resource::Channels => vec![admin(Get, A::ListChannels), admin(Post, A::CreateChannel)],
            Resource::Channel(c) => vec![
                admin(Get, A::GetChannel(c.clone())),
                admin(Patch, A::UpdateChannel(c.clone())),
                admin(Delete, A::DeleteChannel(c)),
            ],
            Resource::ChannelHealth(c) => vec![admin(Get, A::ChannelHealth(c))],
            Resource::ChannelKeyEnable(channel, fingerprint) => vec![admin(
                Post,
                A::EnableChannelKey {
                    channel,
                    fingerprint,
                },
            )],
            Resource::ModelMap => vec![admin(Get, A::GetModelMap), admin(Put, A::ReplaceModelMap)],
            Resource::ModelMapEntry(m) => vec![
                admin(Get, A::GetModelMapEntry(m.clone())),
                admin(Put, A::PutModelMapEntry(m.clone())),
                admin(Delete, A::DeleteModelMapEntry(m)),
            ],
            Resource::ModelGroups => vec![admin(Get, A::ListModelGroups)],
            Resource::ModelGroup(g) => vec![
                admin(Get, A::GetModelGroup(g.clone())),
                admin(Put, A::PutModelGroup(g.clone())),
                admin(Delete, A::DeleteModelGroup(g)),
            ],
            Resource::Prices => vec![admin(Get, A::ListPrices)],
            Resource::Price(m) => vec![
                admin(Get, A::GetPrice(m.clone())),
                admin(Put, A::PutPrice(m.clone())),
                admin(Delete, A::DeletePrice(m)),
            ],
            Resource::Usage => vec![admin(Get, A::ListUsage)],
            Resource::UsageEntry(r) => vec![admin(Get, A::GetUsage(r))],
            Resource::Audit => vec![admin(Get, A::ListAudit)],
            Resource::Analytics(view) => vec![admin(Get, A::Analytics(view))],
        }
    }
}

/// Resolve a request to its route. `HEAD` is served wherever `GET` is (the runtime drops the
/// body), so it is never listed in `Allow` and never has a route of its own.
pub fn route(method: &Method, path: &str) -> Result<Route, RelayError> {
    let resource = Resource::parse(path).ok_or_else(|| RelayError::NotFound {
        what: format!("Route {} {path}", method.as_str()),
    })?;
    let wanted = if *method == Method::Head {
        &Method::Get
    } else {
        method
    };
    let routes = resource.routes();
    let allowed = routes.iter().map(|(m, _)| m.as_str().to_string()).collect();
    routes
        .into_iter()
        .find(|(m, _)| m == wanted)
        .map(|(_, route)| route)
        .ok_or(RelayError::MethodNotAllowed { allowed })
}

impl Route {
    /// Behind the admin or a tenant token (the dashboard page itself is public).
    pub fn is_admin(&self) -> bool {
        match self {
            Route::Health
            | Route::ListModels
            | Route::GetModel(_)
            | Route::Relay(_)
            | Route::Messages
            | Route::CountTokens
            | Route::Dashboard => false,
            Route::Admin(_) => true,
        }
    }

    /// See [`AdminRoute::audit`]; nothing outside the admin API is audited.
    pub fn audit(&self) -> Option<Audit<'_>> {
        match self {
            Route::Admin(admin) => admin.audit(),
            Route::Health
            | Route::ListModels
            | Route::GetModel(_)
            | Route::Relay(_)
            | Route::Messages
            | Route::CountTokens
            | Route::Dashboard => None,
        }
    }
}

/// How the audit log records a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit<'a> {
    pub action: &'static str,
    pub target_type: &'static str,
    /// `None` for a create, whose id is only known after it (the reply's `id`).
    pub target_id: Option<&'a str>,
    pub after: AuditAfter,
}

/// What an audit row keeps as the object after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAfter {
    /// The reply, without any plaintext secret it carries.
    Reply,
    /// The stored object read back: the model map's replies are not the whole stored document.
    Stored,
    /// Nothing: a delete leaves nothing.
    Gone,
}

/// What a tenant token may do with an admin route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope<'a> {
    /// Allowed if this tenant id is the token's own.
    OwnTenant(&'a str),
    /// Allowed if this key belongs to the token's tenant.
    OwnKey(&'a str),
    /// A listing, narrowed to the token's tenant.
    Narrowed,
    /// Operator territory: tenants at large, channels, the model map, tokens.
    Forbidden,
}

impl AdminRoute {
    /// What the audit log calls this change; `None` for a route that changes nothing, and
    /// every route that changes something has one.
    pub fn audit(&self) -> Option<Audit<'_>> {
        use AdminRoute::*;
        use AuditAfter::{Gone, Reply, Stored};
        let (action, target_type, target_id, after) = match self {
            CreateTenant => ("tenant.create", "tenant", None, Reply),
            UpdateTenant(id) => ("tenant.update", "tenant", Some(id.as_str()), Reply),
            DisableTenant(id) => ("tenant.disable", "tenant", Some(id.as_str()), Reply),
            EnableTenant(id) => ("tenant.enable", "tenant", Some(id.as_str()), Reply),
            CreateKey(_) => ("key.create", "key", None, Reply),
            UpdateKey(id) => ("key.update", "key", Some(id.as_str()), Reply),
            RevokeKey(id) => ("key.revoke", "key", Some(id.as_str()), Reply),
            RotateKey(id) => ("key.rotate", "key", Some(id.as_str()), Reply),
            CreateTenantToken(_) => ("tenant_token.create", "tenant_token", None, Reply),
            RevokeTenantToken(id) => (
                "tenant_token.revoke",
                "tenant_token",
                Some(id.as_str()),
                Reply,
            ),
            CreateChannel => ("channel.create", "channel", None, Reply),
            UpdateChannel(id) => ("channel.update", "channel", Some(id.as_str()), Reply),
            DeleteChannel(id) => ("channel.delete", "channel", Some(id.as_str()), Gone),
            EnableChannelKey { channel, .. } => (
                "channel.key_enable",
                "channel",
                Some(channel.as_str()),
                Reply,
            ),
            // The whole map is one target.
            ReplaceModelMap => ("model_map.replace", "model_map", Some("model_map"), Stored),
            PutModelMapEntry(m) => ("model_map.set", "model_map", Some(m.as_str()), Stored),
            DeleteModelMapEntry(m) => ("model_map.delete", "model_map", Some(m.as_str()), Gone),
            PutModelGroup(g) => ("model_group.set", "model_group", Some(g.as_str()), Reply),
            DeleteModelGroup(g) => ("model_group.delete", "model_group", Some(g.as_str()), Gone),
            PutPrice(m) => ("price.set", "price", Some(m.as_str()), Reply),
            DeletePrice(m) => ("price.delete", "price", Some(m.as_str()), Gone),
            PutTenantBudget(t) => ("tenant.budget_set", "tenant", Some(t.as_str()), Reply),
            // A plan's name is unique within its tenant; the row's `tenant_id` says which.
            PutPlan { plan, .. } => ("plan.set", "plan", Some(plan.as_str()), Reply),
            DeletePlan { plan, .. } => ("plan.delete", "plan", Some(plan.as_str()), Gone),
            ListTenants
            | GetTenant(_)
            | TenantLimits(_)
            | GetTenantBudget(_)
            | ListPlans(_)
            | GetPlan { .. }
            | GetEndUser { .. }
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
            | Analytics(_) => return None,
        };
        Some(Audit {
            action,
            target_type,
            target_id,
            after,
        })
    }

    /// What a tenant token may do here; an object of another tenant is "not found", so a
    /// tenant token cannot even learn what exists beyond its own tenant.
    pub fn tenant_scope(&self) -> TenantScope<'_> {
        use AdminRoute::*;
        match self {
            // A tenant may read itself, but not raise its own limits or re-enable itself.
            GetTenant(t) | TenantLimits(t) | ListKeys(t) | CreateKey(t) => {
                TenantScope::OwnTenant(t)
            }
            // The budget is the tenant's own spending cap; which tokens may set it is the
            // role's question (`allowed`).
            GetTenantBudget(t) | PutTenantBudget(t) | ListPlans(t) => TenantScope::OwnTenant(t),
            GetPlan { tenant, .. }
            | PutPlan { tenant, .. }
            | DeletePlan { tenant, .. }
            | GetEndUser { tenant, .. } => TenantScope::OwnTenant(tenant),
            GetKey(k) | UpdateKey(k) | RevokeKey(k) | RotateKey(k) | KeyLimits(k) => {
                TenantScope::OwnKey(k)
            }
            ListUsage | GetUsage(_) | ListAudit | Analytics(_) => TenantScope::Narrowed,
            // Prices are what every tenant is charged by: readable, not writable.
            ListPrices => TenantScope::Narrowed,
            ListTenants
            | CreateTenant
            | UpdateTenant(_)
            | DisableTenant(_)
            | EnableTenant(_)
            | ListTenantTokens(_)
            | CreateTenantToken(_)
            | RevokeTenantToken(_)
            | ListChannels
            | CreateChannel
            | GetChannel(_)
            | UpdateChannel(_)
            | DeleteChannel(_)
            | ChannelHealth(_)
            | EnableChannelKey { .. }
            | GetModelMap
            | ReplaceModelMap
            | GetModelMapEntry(_)
            | PutModelMapEntry(_)
            | DeleteModelMapEntry(_)
            | ListModelGroups
            | GetModelGroup(_)
            | PutModelGroup(_)
            | DeleteModelGroup(_)
            | GetPrice(_)
            | PutPrice(_)
            | DeletePrice(_) => TenantScope::Forbidden,
        }
    }
}

/// May a tenant token with `role` take `route`? Checked with [`AdminRoute::tenant_scope`]
/// (which decides whose objects), and never for the operator's token, which may do anything.
/// Routes outside every tenant token's reach are refused for every role, so `admin` may do
/// exactly what a tenant token could before roles existed.
/// - `keys`: keys and plans, reading and changing them (and a key's limiter state).
/// - `viewer`: every read a tenant token has, nothing that changes anything.
/// - `billing`: spend — usage, analytics, prices, the tenant, its limiter and end users — and
///   the budget, read and set; not the audit log or a request's stored bodies.
pub fn allowed(role: Role, route: &AdminRoute) -> bool {
    use AdminRoute::*;
    use Role::{Admin, Billing, Keys, Viewer};
    let roles: &[Role] = match route {
        GetTenant(_) | TenantLimits(_) | GetTenantBudget(_) => &[Admin, Viewer, Billing],
        PutTenantBudget(_) => &[Admin, Billing],
        ListKeys(_) | GetKey(_) | KeyLimits(_) | ListPlans(_) | GetPlan { .. } => {
            &[Admin, Keys, Viewer]
        }
        CreateKey(_)
        | UpdateKey(_)
        | RevokeKey(_)
        | RotateKey(_)
        | PutPlan { .. }
        | DeletePlan { .. } => &[Admin, Keys],
        GetEndUser { .. } | ListUsage | Analytics(_) | ListPrices => &[Admin, Viewer, Billing],
        // One request's row carries its stored bodies; the audit log, every admin change.
        GetUsage(_) | ListAudit => &[Admin, Viewer],
        ListTenants
        | CreateTenant
        | UpdateTenant(_)
        | DisableTenant(_)
        | EnableTenant(_)
        | ListTenantTokens(_)
        | CreateTenantToken(_)
        | RevokeTenantToken(_)
        | ListChannels
        | CreateChannel
        | GetChannel(_)
        | UpdateChannel(_)
        | DeleteChannel(_)
        | ChannelHealth(_)
        | EnableChannelKey { .. }
        | GetModelMap
        | ReplaceModelMap
        | GetModelMapEntry(_)
        | PutModelMapEntry(_)
        | DeleteModelMapEntry(_)
        | ListModelGroups
        | GetModelGroup(_)
        | PutModelGroup(_)
        | DeleteModelGroup(_)
        | GetPrice(_)
        | PutPrice(_)
        | DeletePrice(_) => &[],
    };
    roles.contains(&role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AdminRoute as A;

    fn at(method: &str, path: &str) -> Result<Route, RelayError> {
        route(&Method::parse(method), path)
    }

    fn admin(route: AdminRoute) -> Result<Route, RelayError> {
        Ok(Route::Admin(route))
    }

    #[test]
    fn relay_routes() {
        assert_eq!(
            at("POST", "/v1/chat/completions"),
            Ok(Route::Relay(Endpoint::ChatCompletions))
        );
        assert_eq!(at("GET", "/v1/models/"), Ok(Route::ListModels));
        assert_eq!(
            at("GET", "/v1/models/meta-llama/Llama-3-8b"),
            Ok(Route::GetModel("meta-llama/Llama-3-8b".into()))
        );
        assert_eq!(at("HEAD", "/health"), Ok(Route::Health));
        assert_eq!(at("POST", "/v1/messages"), Ok(Route::Messages));
        assert_eq!(
            at("POST", "/v1/messages/count_tokens"),
            Ok(Route::CountTokens)
        );
    }

    #[test]
    fn wrong_method_names_the_allowed_ones() {
        let err = at("GET", "/v1/chat/completions").unwrap_err();
        assert_eq!(err.status(), 405);
        assert_eq!(err.headers(), vec![("allow", "POST".to_string())]);
        assert_eq!(at("DELETE", "/admin/tenants/t1").unwrap_err().status(), 405);
    }

    #[test]
    fn unknown_paths_are_404() {
        for p in [
            "/",
            "/v1",
            "/v2/chat/completions",
            "/admin",
            "/admin/tenants/t/x",
            "/v1/models//",
        ] {
            let r = at("GET", p);
            assert_eq!(r.clone().map_err(|e| e.status()), Err(404), "{p}: {r:?}");
        }
        assert_eq!(
            at("PROPFIND", "/nowhere").unwrap_err().message(),
            "Route PROPFIND /nowhere not found."
        );
    }

    #[test]
    fn admin_routes_decode_ids() {
        assert_eq!(
            at("POST", "/admin/tenants/ten_1/keys"),
            admin(A::CreateKey("ten_1".into()))
        );
        assert_eq!(
            at("POST", "/admin/keys/k%201/revoke"),
            admin(A::RevokeKey("k 1".into()))
        );
        assert_eq!(
            at("PUT", "/admin/model-map/org/model%2Fx"),
            admin(A::PutModelMapEntry("org/model/x".into()))
        );
        assert!(at("GET", "/admin/usage").unwrap().is_admin());
        assert!(!at("GET", "/health").unwrap().is_admin());
        assert!(!at("GET", "/admin/ui").unwrap().is_admin());
    }

    /// Every (method, path) pair the relay has served, and what it is.
    fn every_route() -> Vec<(&'static str, &'static str, Route)> {
        let a = Route::Admin;
        let decoded = || "x/y".to_string();
        vec![
            ("GET", "/health", Route::Health),
            ("GET", "/v1/models", Route::ListModels),
            ("GET", "/v1/models/a/b", Route::GetModel("a/b".into())),
            (
                "POST",
                "/v1/chat/completions",
                Route::Relay(Endpoint::ChatCompletions),
            ),
            (
                "POST",
                "/v1/completions",
                Route::Relay(Endpoint::Completions),
            ),
            ("POST", "/v1/embeddings", Route::Relay(Endpoint::Embeddings)),
            ("POST", "/v1/messages", Route::Messages),
            ("POST", "/v1/messages/count_tokens", Route::CountTokens),
            ("GET", "/admin/ui", Route::Dashboard),
            ("GET", "/admin/tenants", a(A::ListTenants)),
            ("POST", "/admin/tenants", a(A::CreateTenant)),
            ("GET", "/admin/tenants/x%2Fy", a(A::GetTenant(decoded()))),
            (
                "PATCH",
                "/admin/tenants/x%2Fy",
                a(A::UpdateTenant(decoded())),
            ),
            (
                "POST",
                "/admin/tenants/x%2Fy/disable",
                a(A::DisableTenant(decoded())),
            ),
            (
                "POST",
                "/admin/tenants/x%2Fy/enable",
                a(A::EnableTenant(decoded())),
            ),
            (
                "GET",
                "/admin/tenants/x%2Fy/limits",
                a(A::TenantLimits(decoded())),
            ),
            (
                "GET",
                "/admin/tenants/x%2Fy/budget",
                a(A::GetTenantBudget(decoded())),
            ),
            (
                "PUT",
                "/admin/tenants/x%2Fy/budget",
                a(A::PutTenantBudget(decoded())),
            ),
            (
                "GET",
                "/admin/tenants/x%2Fy/plans",
                a(A::ListPlans(decoded())),
            ),
            (
                "GET",
                "/admin/tenants/x%2Fy/plans/free",
                a(A::GetPlan {
                    tenant: decoded(),
                    plan: "free".into(),
                }),
            ),
            (
                "PUT",
                "/admin/tenants/x%2Fy/plans/free",
                a(A::PutPlan {
                    tenant: decoded(),
                    plan: "free".into(),
                }),
            ),
            (
                "DELETE",
                "/admin/tenants/x%2Fy/plans/free",
                a(A::DeletePlan {
                    tenant: decoded(),
                    plan: "free".into(),
                }),
            ),
            (
                "GET",
                "/admin/tenants/x%2Fy/users/a%2Fb/c",
                a(A::GetEndUser {
                    tenant: decoded(),
                    user: "a/b/c".into(),
                }),
            ),
            (
                "GET",
                "/admin/tenants/x%2Fy/keys",
                a(A::ListKeys(decoded())),
            ),
            (
                "POST",
                "/admin/tenants/x%2Fy/keys",
                a(A::CreateKey(decoded())),
            ),
            (
                "GET",
                "/admin/tenants/x%2Fy/tokens",
                a(A::ListTenantTokens(decoded())),
            ),
            (
                "POST",
                "/admin/tenants/x%2Fy/tokens",
                a(A::CreateTenantToken(decoded())),
            ),
            ("GET", "/admin/keys/x%2Fy", a(A::GetKey(decoded()))),
            ("PATCH", "/admin/keys/x%2Fy", a(A::UpdateKey(decoded()))),
            (
                "POST",
                "/admin/keys/x%2Fy/revoke",
                a(A::RevokeKey(decoded())),
            ),
            (
                "POST",
                "/admin/keys/x%2Fy/rotate",
                a(A::RotateKey(decoded())),
            ),
            (
                "GET",
                "/admin/keys/x%2Fy/limits",
                a(A::KeyLimits(decoded())),
            ),
            (
                "POST",
                "/admin/tenant-tokens/x%2Fy/revoke",
                a(A::RevokeTenantToken(decoded())),
            ),
            ("GET", "/admin/channels", a(A::ListChannels)),
            ("POST", "/admin/channels", a(A::CreateChannel)),
            ("GET", "/admin/channels/x%2Fy", a(A::GetChannel(decoded()))),
            (
                "PATCH",
                "/admin/channels/x%2Fy",
                a(A::UpdateChannel(decoded())),
            ),
            (
                "DELETE",
                "/admin/channels/x%2Fy",
                a(A::DeleteChannel(decoded())),
            ),
            (
                "GET",
                "/admin/channels/x%2Fy/health",
                a(A::ChannelHealth(decoded())),
            ),
            (
                "POST",
                "/admin/channels/x%2Fy/keys/ab%20c/enable",
                a(A::EnableChannelKey {
                    channel: decoded(),
                    fingerprint: "ab c".into(),
                }),
            ),
            ("GET", "/admin/model-map", a(A::GetModelMap)),
            ("PUT", "/admin/model-map", a(A::ReplaceModelMap)),
            (
                "GET",
                "/admin/model-map/org/m",
                a(A::GetModelMapEntry("org/m".into())),
            ),
            (
                "PUT",
                "/admin/model-map/org/m",
                a(A::PutModelMapEntry("org/m".into())),
            ),
            (
                "DELETE",
                "/admin/model-map/org/m",
                a(A::DeleteModelMapEntry("org/m".into())),
            ),
            ("GET", "/admin/model-groups", a(A::ListModelGroups)),
            (
                "GET",
                "/admin/model-groups/cheap",
                a(A::GetModelGroup("cheap".into())),
            ),
            (
                "PUT",
                "/admin/model-groups/cheap",
                a(A::PutModelGroup("cheap".into())),
            ),
            (
                "DELETE",
                "/admin/model-groups/cheap",
                a(A::DeleteModelGroup("cheap".into())),
            ),
            ("GET", "/admin/prices", a(A::ListPrices)),
            ("GET", "/admin/prices/org/m", a(A::GetPrice("org/m".into()))),
            ("PUT", "/admin/prices/org/m", a(A::PutPrice("org/m".into()))),
            (
                "DELETE",
                "/admin/prices/org/m",
                a(A::DeletePrice("org/m".into())),
            ),
            ("GET", "/admin/usage", a(A::ListUsage)),
            ("GET", "/admin/usage/req_1", a(A::GetUsage("req_1".into()))),
            ("GET", "/admin/audit", a(A::ListAudit)),
            (
                "GET",
                "/admin/analytics/summary",
                a(A::Analytics(AnalyticsView::Summary)),
            ),
            (
                "GET",
                "/admin/analytics/timeseries",
                a(A::Analytics(AnalyticsView::Timeseries)),
            ),
            (
                "GET",
                "/admin/analytics/breakdown",
                a(A::Analytics(AnalyticsView::Breakdown)),
            ),
            (
                "GET",
                "/admin/analytics/requests",
                a(A::Analytics(AnalyticsView::Requests)),
            ),
            (
                "GET",
                "/admin/analytics/export",
                a(A::Analytics(AnalyticsView::Export)),
            ),
        ]
    }

    #[test]
    fn every_route_of_today_resolves_as_before_and_head_follows_get() {
        for (method, path, expected) in every_route() {
            assert_eq!(at(method, path), Ok(expected.clone()), "{method} {path}");
            // A trailing slash names the same thing.
            assert_eq!(at(method, &format!("{path}/")), Ok(expected.clone()));
            let head = at("HEAD", path);
            if method == "GET" {
                assert_eq!(head, Ok(expected), "HEAD {path}");
            } else if !every_route()
                .iter()
                .any(|(m, p, _)| *m == "GET" && *p == path)
            {
                assert_eq!(head.map_err(|e| e.status()), Err(405), "HEAD {path}");
            }
        }
    }

    #[test]
    fn allow_lists_are_as_today() {
        let table = [
            ("/health", "GET"),
            ("/v1/models", "GET"),
            ("/v1/models/m", "GET"),
            ("/v1/chat/completions", "POST"),
            ("/v1/completions", "POST"),
            ("/v1/embeddings", "POST"),
            ("/v1/messages", "POST"),
            ("/v1/messages/count_tokens", "POST"),
            ("/admin/ui", "GET"),
            ("/admin/tenants", "GET, POST"),
            ("/admin/tenants/t", "GET, PATCH"),
            ("/admin/tenants/t/disable", "POST"),
            ("/admin/tenants/t/enable", "POST"),
            ("/admin/tenants/t/limits", "GET"),
            ("/admin/tenants/t/budget", "GET, PUT"),
            ("/admin/tenants/t/plans", "GET"),
            ("/admin/tenants/t/plans/free", "GET, PUT, DELETE"),
            ("/admin/tenants/t/users/u", "GET"),
            ("/admin/tenants/t/keys", "GET, POST"),
            ("/admin/tenants/t/tokens", "GET, POST"),
            ("/admin/keys/k", "GET, PATCH"),
            ("/admin/keys/k/revoke", "POST"),
            ("/admin/keys/k/rotate", "POST"),
            ("/admin/keys/k/limits", "GET"),
            ("/admin/tenant-tokens/tt/revoke", "POST"),
            ("/admin/channels", "GET, POST"),
            ("/admin/channels/c", "GET, PATCH, DELETE"),
            ("/admin/channels/c/health", "GET"),
            ("/admin/channels/c/keys/f/enable", "POST"),
            ("/admin/model-map", "GET, PUT"),
            ("/admin/model-map/m", "GET, PUT, DELETE"),
            ("/admin/model-groups", "GET"),
            ("/admin/model-groups/g", "GET, PUT, DELETE"),
            ("/admin/prices", "GET"),
            ("/admin/prices/m", "GET, PUT, DELETE"),
            ("/admin/usage", "GET"),
            ("/admin/usage/r", "GET"),
            ("/admin/audit", "GET"),
            ("/admin/analytics/summary", "GET"),
            ("/admin/analytics/timeseries", "GET"),
            ("/admin/analytics/breakdown", "GET"),
            ("/admin/analytics/requests", "GET"),
            ("/admin/analytics/export", "GET"),
        ];
        for (path, allow) in table {
            // OPTIONS and unknown methods are never routed (the entry answers CORS
            // preflights itself), so they always show the path's Allow list.
            for method in ["OPTIONS", "PROPFIND"] {
                let err = at(method, path).unwrap_err();
                assert_eq!(err.status(), 405, "{method} {path}");
                assert_eq!(
                    err.headers(),
                    vec![("allow", allow.to_string())],
                    "{method} {path}"
                );
            }
        }
        // Both tables cover every path that exists, and agree.
        let mut paths: Vec<_> = every_route().into_iter().map(|(_, p, _)| p).collect();
        paths.dedup();
        assert_eq!((paths.len(), table.len()), (43, 43));
        for (method, path, _) in every_route() {
            let allow = at("OPTIONS", path).unwrap_err().headers()[0].1.clone();
            assert!(allow.split(", ").any(|m| m == method), "{method} {path}");
        }
    }

    #[test]
    fn methods_parse_once() {
        assert_eq!(Method::parse("GET"), Method::Get);
        assert_eq!(Method::parse("patch"), Method::Patch);
        assert_eq!(Method::parse("PROPFIND"), Method::Other("PROPFIND".into()));
        assert_eq!(Method::parse("PROPFIND").as_str(), "PROPFIND");
        assert_eq!(Method::Delete.as_str(), "DELETE");
    }

    #[test]
    fn every_admin_change_has_an_audit_action() {
        let audit = |r: AdminRoute| {
            Route::Admin(r)
                .audit()
                .map(|a| (a.action, a.target_type, a.target_id.map(str::to_string)))
        };
        assert_eq!(
            audit(A::CreateTenant),
            Some(("tenant.create", "tenant", None))
        );
        assert_eq!(
            audit(A::DeleteChannel("c".into())),
            Some(("channel.delete", "channel", Some("c".into())))
        );
        assert_eq!(
            audit(A::RevokeKey("k".into())),
            Some(("key.revoke", "key", Some("k".into())))
        );
        assert_eq!(audit(A::ListTenants), None);
        assert_eq!(Route::Relay(Endpoint::ChatCompletions).audit(), None);
        // Every admin route but a GET is audited, and no GET is.
        for (method, path, route) in every_route() {
            let is_admin_change = route.is_admin() && method != "GET";
            assert_eq!(route.audit().is_some(), is_admin_change, "{method} {path}");
        }
        assert_eq!(
            A::DeletePrice("m".into()).audit().map(|a| a.after),
            Some(AuditAfter::Gone)
        );
        assert_eq!(
            A::ReplaceModelMap.audit().map(|a| (a.target_id, a.after)),
            Some((Some("model_map"), AuditAfter::Stored))
        );
    }

    #[test]
    fn tenant_tokens_reach_only_their_own_tenant() {
        assert_eq!(
            A::CreateKey("t1".into()).tenant_scope(),
            TenantScope::OwnTenant("t1")
        );
        assert_eq!(
            A::GetTenant("t1".into()).tenant_scope(),
            TenantScope::OwnTenant("t1")
        );
        assert_eq!(
            A::UpdateTenant("t1".into()).tenant_scope(),
            TenantScope::Forbidden
        );
        assert_eq!(
            A::RevokeKey("k".into()).tenant_scope(),
            TenantScope::OwnKey("k")
        );
        assert_eq!(A::ListUsage.tenant_scope(), TenantScope::Narrowed);
        for forbidden in [
            A::ListTenants,
            A::ListChannels,
            A::GetModelMap,
            A::EnableTenant("t1".into()),
            A::ListTenantTokens("t1".into()),
        ] {
            assert_eq!(
                forbidden.tenant_scope(),
                TenantScope::Forbidden,
                "{forbidden:?}"
            );
        }
    }

    #[test]
    fn tenant_tokens_reach_their_own_plans_users_and_budget() {
        let own = |r: AdminRoute| r.tenant_scope() == TenantScope::OwnTenant("t1");
        assert!(own(A::ListPlans("t1".into())));
        assert!(own(A::PutPlan {
            tenant: "t1".into(),
            plan: "free".into()
        }));
        assert!(own(A::GetEndUser {
            tenant: "t1".into(),
            user: "u".into()
        }));
        assert!(own(A::PutTenantBudget("t1".into())));
        assert_eq!(
            A::PutPlan {
                tenant: "t1".into(),
                plan: "free".into()
            }
            .audit()
            .map(|a| (a.action, a.target_type, a.target_id)),
            Some(("plan.set", "plan", Some("free")))
        );
        assert_eq!(
            A::PutTenantBudget("t1".into()).audit().map(|a| a.target_id),
            Some(Some("t1"))
        );
    }

    /// Every admin route × role: one arm per route and no catch-all, so a new route does not
    /// compile until its row is written here.
    #[rustfmt::skip]
    fn role_table(route: &AdminRoute) -> [bool; 4] {
        use AdminRoute::*;
        const Y: bool = true;
        const N: bool = false;
        match route {
            //                         [admin, keys, viewer, billing]
            ListTenants =>             [N,     N,    N,      N],
            CreateTenant =>            [N,     N,    N,      N],
            GetTenant(_) =>            [Y,     N,    Y,      Y],
            UpdateTenant(_) =>         [N,     N,    N,      N],
            DisableTenant(_) =>        [N,     N,    N,      N],
            EnableTenant(_) =>         [N,     N,    N,      N],
            TenantLimits(_) =>         [Y,     N,    Y,      Y],
            GetTenantBudget(_) =>      [Y,     N,    Y,      Y],
            PutTenantBudget(_) =>      [Y,     N,    N,      Y],
            ListPlans(_) =>            [Y,     Y,    Y,      N],
            GetPlan { .. } =>          [Y,     Y,    Y,      N],
            PutPlan { .. } =>          [Y,     Y,    N,      N],
            DeletePlan { .. } =>       [Y,     Y,    N,      N],
            GetEndUser { .. } =>       [Y,     N,    Y,      Y],
            ListKeys(_) =>             [Y,     Y,    Y,      N],
            CreateKey(_) =>            [Y,     Y,    N,      N],
            GetKey(_) =>               [Y,     Y,    Y,      N],
            UpdateKey(_) =>            [Y,     Y,    N,      N],
            RevokeKey(_) =>            [Y,     Y,    N,      N],
            RotateKey(_) =>            [Y,     Y,    N,      N],
            KeyLimits(_) =>            [Y,     Y,    Y,      N],
            ListTenantTokens(_) =>     [N,     N,    N,      N],
            CreateTenantToken(_) =>    [N,     N,    N,      N],
            RevokeTenantToken(_) =>    [N,     N,    N,      N],
            ListChannels =>            [N,     N,    N,      N],
            CreateChannel =>           [N,     N,    N,      N],
            GetChannel(_) =>           [N,     N,    N,      N],
            UpdateChannel(_) =>        [N,     N,    N,      N],
            DeleteChannel(_) =>        [N,     N,    N,      N],
            ChannelHealth(_) =>        [N,     N,    N,      N],
            EnableChannelKey { .. } => [N,     N,    N,      N],
            GetModelMap =>             [N,     N,    N,      N],
            ReplaceModelMap =>         [N,     N,    N,      N],
            GetModelMapEntry(_) =>     [N,     N,    N,      N],
            PutModelMapEntry(_) =>     [N,     N,    N,      N],
            DeleteModelMapEntry(_) =>  [N,     N,    N,      N],
            ListModelGroups =>         [N,     N,    N,      N],
            GetModelGroup(_) =>        [N,     N,    N,      N],
            PutModelGroup(_) =>        [N,     N,    N,      N],
            DeleteModelGroup(_) =>     [N,     N,    N,      N],
            ListPrices =>              [Y,     N,    Y,      Y],
            GetPrice(_) =>             [N,     N,    N,      N],
            PutPrice(_) =>             [N,     N,    N,      N],
            DeletePrice(_) =>          [N,     N,    N,      N],
            ListUsage =>               [Y,     N,    Y,      Y],
            GetUsage(_) =>             [Y,     N,    Y,      N],
            ListAudit =>               [Y,     N,    Y,      N],
            Analytics(_) =>            [Y,     N,    Y,      Y],
        }
    }

    #[test]
    fn every_admin_route_has_an_answer_for_every_role() {
        let mut variants = std::collections::HashSet::new();
        for (method, path, route) in every_route() {
            let Route::Admin(route) = route else {
                continue;
            };
            variants.insert(std::mem::discriminant(&route));
            for (role, expected) in Role::ALL.into_iter().zip(role_table(&route)) {
                assert_eq!(allowed(role, &route), expected, "{role:?} {method} {path}");
            }
            // `admin` is what a tenant token could do before roles; no role reaches further.
            let in_reach = route.tenant_scope() != TenantScope::Forbidden;
            assert_eq!(allowed(Role::Admin, &route), in_reach, "{method} {path}");
            for role in Role::ALL {
                assert!(
                    !allowed(role, &route) || in_reach,
                    "{role:?} {method} {path}"
                );
            }
            // A viewer changes nothing.
            if allowed(Role::Viewer, &route) {
                assert_eq!(method, "GET", "{path}");
            }
        }
        // every_route() names every variant, so the table above is checked row by row.
        assert_eq!(variants.len(), 48);
    }
}
