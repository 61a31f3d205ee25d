//! API tokens: `orc_<id>_<secret>` bearer tokens with a scope (`read` <
//! `submit` < `admin`). Only SHA-256(pepper, secret) is stored; checks are
//! constant-time. With authentication off, the server only listens on
//! loopback unless told otherwise.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orchestrator_store::{TokenRecord, now_ms};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiJson, ApiPath, Problem};

pub const TAG_TOKENS: &str = "tokens";

/// What a token may do; each scope includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `GET` anything.
    Read,
    /// Also submit, cancel and recover executions, validate pipelines.
    Submit,
    /// Also manage models, webhooks and tokens.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "submit" => Some(Scope::Submit),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// A secret that never shows in `Debug` output.
#[derive(Clone, Default, PartialEq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// Authentication settings.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Requests need a token (except `/health`, `/ready`, the API document,
    /// Swagger UI and the console's files).
    pub enabled: bool,
    /// Mixed into every token hash; keep it out of the database.
    pub pepper: Secret,
    /// The variable the pepper is read from, for messages.
    pub pepper_env: String,
    /// `/metrics` and `/metrics/summary` without a token.
    pub public_metrics: bool,
    /// Listen on a non-loopback address with authentication off.
    pub allow_unauthenticated: bool,
    /// Queued or running executions one token may have at once (0: no limit).
    pub max_active_executions_per_token: u64,
}

/// Who made a request (set when authentication is on).
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    /// The token's name (recorded with what it does, such as answers).
    pub name: String,
    pub scope: Scope,
}

/// The stored hash of a token secret.
pub fn hash_secret(pepper: &Secret, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(pepper.0.as_bytes());
    h.update([0u8]);
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new token: the record to store and the text to hand out (once).
pub fn new_token(name: &str, scope: Scope, pepper: &Secret) -> (TokenRecord, String) {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let record = TokenRecord {
        id: id.clone(),
        name: name.to_string(),
        scope: scope.as_str().to_string(),
        hash: hash_secret(pepper, &secret),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    (record, format!("orc_{id}_{secret}"))
}

fn parse_token(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("orc_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// The scope a request needs, or `None` for open routes.
pub fn required_scope(method: &Method, path: &str, public_metrics: bool) -> Option<Scope> {
    let open = matches!(path, "/" | "/health" | "/ready" | "/openapi.json" | "/ui")
        || path == "/swagger-ui"
        || path.starts_with("/swagger-ui/")
        || path.starts_with("/ui/")
        || (public_metrics && matches!(path, "/metrics" | "/metrics/summary"));
    if open {
        return None;
    }
    let reading = matches!(*method, Method::GET | Method::HEAD);
    if path.starts_with("/tokens") || path.starts_with("/webhooks") {
        return Some(Scope::Admin);
    }
    if path.starts_with("/models") && !reading && path != "/models/select" {
        return Some(Scope::Admin);
    }
    // Deleting an execution loses its history: an administrator's call.
    if *method == Method::DELETE && path.starts_with("/executions/") {
        return Some(Scope::Admin);
    }
    if reading || path == "/models/select" {
        Some(Scope::Read)
    } else {
        Some(Scope::Submit)
    }
}

/// When each token was last noted as used by this process.
#[derive(Debug, Default)]
pub struct TokenUse(Mutex<HashMap<String, i64>>);

/// Checks the bearer token of every request that needs one.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let auth = &state.settings().auth;
    if !auth.enabled {
        return next.run(req).await;
    }
    let Some(needed) = required_scope(req.method(), req.uri().path(), auth.public_metrics) else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(text) = bearer else {
        return ApiError::Unauthorized("send an API token: Authorization: Bearer orc_…".into())
            .into_response();
    };
    let invalid = || ApiError::Unauthorized("the API token is not valid".into()).into_response();
    let Some((id, secret)) = parse_token(text) else {
        return invalid();
    };
    let record = match state.engine().store().get_token(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return invalid(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let presented = hash_secret(&auth.pepper, secret);
    if !constant_time_eq(presented.as_bytes(), record.hash.as_bytes())
        || record.revoked_at.is_some()
    {
        return invalid();
    }
    let scope = Scope::parse(&record.scope).unwrap_or(Scope::Read);
    if scope < needed {
        return ApiError::Forbidden(format!(
            "this request needs a token with scope '{}'; token '{}' has '{}'",
            needed.as_str(),
            record.name,
            scope.as_str()
        ))
        .into_response();
    }
    let now = now_ms();
    let due = {
        let mut seen = state
            .token_use()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let last = seen.get(id).copied().unwrap_or(0);
        if now - last > 60_000 {
            seen.insert(id.to_string(), now);
            true
        } else {
            false
        }
    };
    if due && let Err(e) = state.engine().store().touch_token(id, now).await {
        tracing::warn!(error = ?e, "recording token use failed");
    }
    req.extensions_mut().insert(Caller {
        token_id: record.id.clone(),
        name: record.name.clone(),
        scope,
    });
    next.run(req).await
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// A new token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(example = "ci")]
    pub name: String,
    pub scope: Scope,
}

/// A token (its secret only in the answer that creates it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scope: String,
    /// The bearer token: shown once, never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            scope: t.scope,
            token: None,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

/// Create an API token; the answer is the only time its secret is shown.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = TAG_TOKENS,
    operation_id = "create_token",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "Created", body = TokenView),
        (status = 400, description = "Body is not valid JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or scope", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Response, ApiError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::Unprocessable(
            "name must have 1 to 100 characters".into(),
        ));
    }
    let (record, token) = new_token(name, req.scope, &state.settings().auth.pepper);
    state.engine().store().create_token(&record).await?;
    let mut view = TokenView::from(record);
    view.token = Some(token);
    Ok(crate::error::created(&format!("/tokens/{}", view.id), view))
}

/// List the tokens (never their secrets).
#[utoipa::path(
    get,
    path = "/tokens",
    tag = TAG_TOKENS,
    operation_id = "list_tokens",
    responses((status = 200, description = "The tokens, oldest first", body = TokenList))
)]
pub async fn list_tokens(State(state): State<AppState>) -> Result<ApiJson<TokenList>, ApiError> {
    let items = state
        .engine()
        .store()
        .list_tokens()
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect();
    Ok(ApiJson(TokenList { items }))
}

/// Revoke a token; requests with it fail from now on.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = TAG_TOKENS,
    operation_id = "revoke_token",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such live token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.engine().store().revoke_token(&id, now_ms()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no live token '{id}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_routes() {
        let s = |m: Method, p: &str| required_scope(&m, p, false);
        assert_eq!(s(Method::GET, "/health"), None);
        assert_eq!(s(Method::GET, "/swagger-ui/index.html"), None);
        assert_eq!(s(Method::GET, "/metrics"), Some(Scope::Read));
        assert_eq!(required_scope(&Method::GET, "/metrics", true), None);
        assert_eq!(s(Method::GET, "/executions/x"), Some(Scope::Read));
        assert_eq!(s(Method::POST, "/executions"), Some(Scope::Submit));
        assert_eq!(s(Method::POST, "/executions/x/cancel"), Some(Scope::Submit));
        assert_eq!(s(Method::DELETE, "/executions/x"), Some(Scope::Admin));
        assert_eq!(s(Method::POST, "/models/select"), Some(Scope::Read));
        assert_eq!(s(Method::POST, "/models"), Some(Scope::Admin));
        assert_eq!(s(Method::GET, "/models"), Some(Scope::Read));
        assert_eq!(s(Method::GET, "/webhooks"), Some(Scope::Admin));
        assert_eq!(s(Method::DELETE, "/tokens/x"), Some(Scope::Admin));
    }

    #[test]
    fn tokens_parse_and_hash_with_the_pepper() {
        let pepper = Secret("pepper".into());
        let (record, token) = new_token("ci", Scope::Submit, &pepper);
        let (id, secret) = parse_token(&token).expect("parses");
        assert_eq!(id, record.id);
        assert_eq!(hash_secret(&pepper, secret), record.hash);
        assert_ne!(hash_secret(&Secret("other".into()), secret), record.hash);
        assert!(!record.hash.contains(secret));
        assert_eq!(format!("{pepper:?}"), "\"***\"");
        for bad in ["", "orc_", "orc_abc", "xyz_a_b", "orc__b"] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }
}
