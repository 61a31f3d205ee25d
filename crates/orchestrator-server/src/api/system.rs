//! `/tools`, `/health` and `/ready`.

use super::*;

/// List the tools this server offers, with their actions and parameter schemas.
#[utoipa::path(
    get,
    path = "/tools",
    tag = TAG_TOOLS,
    operation_id = "list_tools",
    responses((status = 200, description = "The tools", body = ToolList))
)]
pub async fn list_tools(State(state): State<AppState>) -> ApiJson<ToolList> {
    let items = state
        .engine()
        .tools()
        .describe()
        .into_iter()
        .map(|(id, description, actions)| ToolView {
            id,
            description,
            actions: actions
                .into_iter()
                .map(|a| ActionView {
                    name: a.name,
                    description: a.description,
                    parameters: a.parameters,
                })
                .collect(),
        })
        .collect();
    ApiJson(ToolList { items })
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = TAG_SYSTEM,
    operation_id = "get_health",
    responses((status = 200, description = "Alive", body = Health))
)]
pub async fn health() -> ApiJson<Health> {
    ApiJson(Health {
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// Readiness: the database answers and is migrated.
#[utoipa::path(
    get,
    path = "/ready",
    tag = TAG_SYSTEM,
    operation_id = "get_ready",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Database unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<ApiJson<Readiness>, ApiError> {
    let store = state.engine().store();
    match store.ping().await {
        Ok(()) => Ok(ApiJson(Readiness {
            status: "ready".to_string(),
            database: store.backend().to_string(),
        })),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            Err(ApiError::Unavailable(
                "the database does not answer".to_string(),
            ))
        }
    }
}
