//! The JSON HTTP API under `/api/`: containers and images over the engine interface, with every
//! engine error mapped to an HTTP status in one place ([`ApiError`]). Internal details are
//! logged, never returned.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use porthole_engine::api::{ContainerConfig, RemoveOptions};
use porthole_engine::{EngineError, ErrorKind};
use serde::Deserialize;
use serde_json::json;

use std::sync::Arc;

use porthole_engine::Engine;

use crate::AppState;

mod images;
mod streams;
pub mod terminals;

/// An error as the API returns it: `{"error": {"kind", "message"}}` with a matching status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub fn unauthenticated() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthenticated",
            message: "log in first: send an access token as 'Authorization: Bearer <token>'".into(),
        }
    }

    pub fn unauthenticated_link() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthenticated",
            message: "this share link is not valid: it was revoked, has expired, or is for another terminal".into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::FORBIDDEN, kind: "forbidden", message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, kind: "not_found", message: message.into() }
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::GATEWAY_TIMEOUT, kind: "timeout", message: message.into() }
    }

    pub fn internal() -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal", message: "internal error".into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, kind: "invalid_argument", message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// The one place engine error kinds become HTTP statuses.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        ApiError::from_engine(&err)
    }
}

impl ApiError {
    /// The client's view of an engine error (also for errors inside streams).
    pub fn from_engine(err: &EngineError) -> Self {
        let kind = err.kind();
        let message = if kind == ErrorKind::Internal {
            tracing::error!("engine: {}", err.detail());
            format!("internal error: {}", err.message())
        } else {
            tracing::debug!("engine: {}", err.detail());
            err.message().to_string()
        };
        ApiError { status: status_of(kind), kind: kind.as_str(), message }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::bad_request(format!("invalid request body: {}", rejection.body_text()))
    }
}

impl ApiError {
    /// `{"error": {"kind", "message"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "kind": self.kind, "message": self.message } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/info", get(info))
        .route("/api/engines", get(engines))
        .route("/api/whoami", get(crate::auth::whoami))
        .route("/api/containers", get(list_containers).post(create_container))
        .route("/api/containers/{id}", get(inspect_container).delete(remove_container))
        .route("/api/containers/{id}/start", post(start_container))
        .route("/api/containers/{id}/stop", post(stop_container))
        .route("/api/containers/{id}/restart", post(restart_container))
        .route("/api/containers/{id}/kill", post(kill_container))
        .route("/api/containers/{id}/wait", post(wait_container))
        .route("/api/containers/{id}/stats", get(container_stats))
        .merge(images::routes())
        .merge(terminals::routes())
        .merge(streams::routes())
        .fallback(|| async {
            ApiError { status: StatusCode::NOT_FOUND, kind: "not_found", message: "no such API route".into() }
        })
}

/// The API's description, kept beside the routes (a test checks the two agree).
pub const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Which engine a request means (`?engine=name`; the default engine when absent).
#[derive(Debug, Deserialize)]
pub struct EngineQuery {
    pub engine: Option<String>,
}

/// The engine a container lives on.
pub(crate) async fn on(state: &AppState, container: &str) -> ApiResult<Arc<dyn Engine>> {
    Ok(state.engines.locate(container).await?.1)
}

fn engine_named(state: &AppState, q: &EngineQuery) -> ApiResult<Arc<dyn Engine>> {
    Ok(state.engines.get(q.engine.as_deref())?.1)
}

async fn info(State(state): State<AppState>, Query(q): Query<EngineQuery>) -> ApiResult<Response> {
    Ok(Json(engine_named(&state, &q)?.info().await?).into_response())
}

/// `GET /api/engines`: every configured engine and whether it is available.
async fn engines(State(state): State<AppState>) -> Json<Vec<crate::engines::EngineStatus>> {
    Json(state.engines.statuses())
}

/// `docker ps` filters. Several given: all must match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    all: bool,
    /// Status: created, running, restarting, exited, removing, dead (implies `all`).
    status: Option<String>,
    /// Part of the name.
    name: Option<String>,
    /// `key` or `key=value`; comma-separated for several.
    label: Option<String>,
    /// The image reference the container was created from.
    image: Option<String>,
    /// Only this engine's containers.
    engine: Option<String>,
}

/// Whether a container's image is the one asked for: the reference as created (`busybox`
/// matches `busybox:latest`) or an image id (prefix).
fn same_image(reference: &str, image_id: &str, wanted: &str) -> bool {
    let id = image_id.trim_start_matches("sha256:");
    let wanted_id = wanted.trim_start_matches("sha256:");
    reference == wanted
        || (!wanted.rsplit('/').next().unwrap_or(wanted).contains(':') && reference == format!("{wanted}:latest"))
        || (wanted_id.len() >= 12 && id.starts_with(wanted_id))
}

const STATUSES: [&str; 6] = ["created", "running", "restarting", "exited", "removing", "dead"];

async fn list_containers(State(state): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    if let Some(status) = &q.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(ApiError::bad_request(format!(
                "status must be one of {}, not '{status}'",
                STATUSES.join(", ")
            )));
        }
    }
    let labels: Vec<(&str, Option<&str>)> = q
        .label
        .as_deref()
        .map(|l| {
            l.split(',').filter(|p| !p.is_empty()).map(|p| match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            })
        })
        .into_iter()
        .flatten()
        .collect();
    let all = q.all || q.status.is_some();
    let containers = state.engines.list_containers(all).await;
    let matching: Vec<serde_json::Value> = containers
        .into_iter()
        .filter(|(engine, _, _)| q.engine.as_deref().is_none_or(|e| e == engine))
        .filter(|(_, _, c)| q.status.as_deref().is_none_or(|s| c.state.status.as_str() == s))
        .filter(|(_, _, c)| q.name.as_deref().is_none_or(|n| c.name.contains(n)))
        .filter(|(_, _, c)| q.image.as_deref().is_none_or(|i| same_image(&c.image, &c.image_id, i)))
        .filter(|(_, _, c)| {
            labels.iter().all(|(k, v)| match (c.labels.get(*k), v) {
                (Some(actual), Some(wanted)) => actual == wanted,
                (Some(_), None) => true,
                (None, _) => false,
            })
        })
        .map(|(engine, available, c)| {
            let mut value = serde_json::to_value(c).unwrap_or_default();
            value["engine"] = json!(engine);
            value["engine_available"] = json!(available);
            value
        })
        .collect();
    Ok(Json(matching).into_response())
}

#[derive(Debug, Deserialize)]
struct CreateQuery {
    /// Start the container right away (`docker run -d`).
    #[serde(default)]
    start: bool,
    /// The engine to create it on (default: the first configured).
    engine: Option<String>,
}

async fn create_container(
    State(state): State<AppState>,
    Query(q): Query<CreateQuery>,
    body: Result<Json<ContainerConfig>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(config) = body?;
    let (engine_name, engine) = state.engines.get(q.engine.as_deref())?;
    let id = engine.create_container(config).await?;
    if q.start {
        if let Err(err) = engine.start_container(&id).await {
            // `docker run` semantics: the container exists, the start failed; say both.
            let mut api = ApiError::from(err);
            api.message = format!("container {id} was created but did not start: {}", api.message);
            return Err(api);
        }
    }
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "engine": engine_name }))).into_response())
}

async fn inspect_container(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(on(&state, &id).await?.inspect_container(&id).await?).into_response())
}

async fn start_container(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    on(&state, &id).await?.start_container(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct StopQuery {
    /// Seconds to wait before killing (default 10, as Docker).
    t: Option<u64>,
}

fn grace(q: &StopQuery) -> ApiResult<Duration> {
    match q.t {
        Some(t) if t > 3600 => Err(ApiError::bad_request("t must be at most 3600 seconds")),
        Some(t) => Ok(Duration::from_secs(t)),
        None => Ok(Duration::from_secs(10)),
    }
}

async fn stop_container(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<StatusCode> {
    on(&state, &id).await?.stop_container(&id, grace(&q)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart_container(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<StatusCode> {
    on(&state, &id).await?.restart_container(&id, grace(&q)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct KillQuery {
    signal: Option<String>,
}

async fn kill_container(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> ApiResult<StatusCode> {
    on(&state, &id).await?.kill_container(&id, q.signal.as_deref().unwrap_or("SIGKILL")).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn wait_container(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let code = on(&state, &id).await?.wait_container(&id).await?;
    Ok(Json(json!({ "exit_code": code })).into_response())
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    v: bool,
}

async fn remove_container(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    on(&state, &id).await?.remove_container(&id, RemoveOptions { force: q.force, volumes: q.v }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn container_stats(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(on(&state, &id).await?.stats(&id).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_its_status() {
        assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorKind::Conflict), StatusCode::CONFLICT);
        assert_eq!(status_of(ErrorKind::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorKind::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(ErrorKind::NotImplemented), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(status_of(ErrorKind::Internal), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn internal_causes_are_not_returned() {
        let err = EngineError::internal("cannot mount", std::io::Error::other("/var/lib/secret: EPERM"));
        let api = ApiError::from(err);
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!api.message.contains("secret"), "{}", api.message);
    }
}
