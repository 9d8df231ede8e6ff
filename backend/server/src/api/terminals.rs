//! Terminal routes: create a shared terminal on a container, list and inspect terminals, manage
//! share links, and the WebSocket clients connect to (`/api/terminals/{id}/ws`).

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult};
use crate::auth::Principal;
use crate::terminals::{links, session, Creator, Participant, Role, TerminalError, TerminalRequest};
use crate::AppState;

/// Largest keystroke or paste message a client may send.
const MAX_INPUT_MESSAGE: usize = 1 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/containers/{id}/terminals", post(create_terminal))
        .route("/api/terminals", get(list_terminals))
        .route("/api/terminals/{id}", get(terminal_info))
        .route("/api/terminals/{id}/links", get(list_links).post(create_link))
        .route("/api/terminals/{id}/links/{link}", delete(revoke_link))
        .route("/api/terminals/{id}/ws", get(connect))
}

impl From<TerminalError> for ApiError {
    fn from(err: TerminalError) -> Self {
        match err {
            TerminalError::NotFound(_) => ApiError::not_found(err.to_string()),
            TerminalError::Forbidden(message) => ApiError::forbidden(message),
            TerminalError::Invalid(message) => ApiError::bad_request(message),
            TerminalError::Engine(err) => ApiError::from(err),
            TerminalError::Database(err) => {
                tracing::error!("terminal database: {err}");
                ApiError::internal()
            }
        }
    }
}

fn ws_path(id: &str) -> String {
    format!("/api/terminals/{id}/ws")
}

async fn create_terminal(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(container): Path<String>,
    body: Result<Json<TerminalRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    let creator = Creator { token_id: principal.token_id, name: principal.name.clone() };
    let (engine_name, engine) = state.engines.locate(&container).await.map_err(ApiError::from)?;
    let terminal = state.terminals.create(engine, &engine_name, &container, request, creator).await?;
    let mut info = serde_json::to_value(terminal.info()).map_err(|_| ApiError::internal())?;
    info["ws"] = json!(ws_path(&terminal.id));
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn list_terminals(State(state): State<AppState>) -> Json<Vec<crate::terminals::TerminalInfo>> {
    Json(state.terminals.list().iter().map(|t| t.info()).collect())
}

async fn terminal_info(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.terminals.get(&id)?.info()).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLink {
    role: Role,
    /// Lifetime in seconds (default one hour, at most 30 days).
    #[serde(default)]
    expires_in: Option<u64>,
}

fn owned_terminal(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<std::sync::Arc<crate::terminals::Terminal>> {
    let terminal = state.terminals.get(id)?;
    if !terminal.is_owner(principal.token_id) {
        return Err(ApiError::forbidden("only the terminal's owner can manage its share links"));
    }
    Ok(terminal)
}

async fn create_link(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<NewLink>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    let terminal = owned_terminal(&state, &principal, &id)?;
    if request.role == Role::Owner {
        return Err(ApiError::bad_request("a share link grants 'viewer' or 'writer', never 'owner'"));
    }
    let lifetime = Duration::from_secs(request.expires_in.unwrap_or(3600));
    if lifetime.is_zero() || lifetime > links::MAX_LIFETIME {
        return Err(ApiError::bad_request(format!(
            "expires_in must be between 1 and {} seconds",
            links::MAX_LIFETIME.as_secs()
        )));
    }
    let (info, secret) = links::create(&state.db, &terminal.id, request.role, lifetime, principal.token_id)
        .await
        .map_err(TerminalError::from)?;
    let mut body = serde_json::to_value(&info).map_err(|_| ApiError::internal())?;
    body["secret"] = json!(secret);
    body["url"] = json!(format!("/terminals/{}?link={secret}", terminal.id));
    body["ws"] = json!(format!("{}?link={secret}", ws_path(&terminal.id)));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_links(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let terminal = owned_terminal(&state, &principal, &id)?;
    let links = links::list(&state.db, &terminal.id).await.map_err(TerminalError::from)?;
    Ok(Json(links).into_response())
}

async fn revoke_link(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, link)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let terminal = owned_terminal(&state, &principal, &id)?;
    if !links::revoke(&state.db, &terminal.id, &link).await.map_err(TerminalError::from)? {
        return Err(ApiError::not_found(format!("no active share link {link} on this terminal")));
    }
    terminal.link_revoked(&link);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ConnectQuery {
    /// Resume from this stream offset (what the client received before it lost the connection).
    offset: Option<u64>,
    /// A share link's secret, instead of an access token.
    link: Option<String>,
    /// The name others see for a share-link guest.
    name: Option<String>,
}

fn guest_name(name: Option<&str>) -> String {
    let cleaned: String = name.unwrap_or_default().chars().filter(|c| !c.is_control()).take(40).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "guest".to_string()
    } else {
        cleaned.to_string()
    }
}

/// `GET /api/terminals/{id}/ws`: the Origin is checked first, then the credentials (a token,
/// or a share link for this terminal), then the upgrade.
async fn connect(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    if !state.origins.websocket_allowed(&headers) {
        tracing::warn!(terminal = %id, origin = ?headers.get("origin"), "WebSocket from a foreign origin refused");
        return Err(ApiError::forbidden("this origin may not open WebSockets here"));
    }
    let participant = match (&query.link, principal) {
        (Some(secret), _) => {
            let grant = links::verify(&state.db, secret).await.map_err(TerminalError::from)?;
            match grant {
                Some(grant) if grant.terminal_id == id => {
                    Participant { token_id: None, name: guest_name(query.name.as_deref()), link: Some(grant) }
                }
                _ => return Err(ApiError::unauthenticated_link()),
            }
        }
        (None, Some(Extension(principal))) => {
            Participant { token_id: Some(principal.token_id), name: principal.name, link: None }
        }
        (None, None) => return Err(ApiError::unauthenticated()),
    };
    let terminal = state.terminals.get(&id)?;
    let upgrade = upgrade.map_err(|e| ApiError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    let resume = query.offset;
    Ok(upgrade
        .max_message_size(MAX_INPUT_MESSAGE)
        .on_upgrade(move |socket| session::run(socket, terminal, participant, resume)))
}
