//! Image routes: list, inspect, remove, pull with a progress stream (server-sent events), import
//! from an uploaded archive, save as a `docker load` archive, tag, history, prune, and the
//! registries images are pulled from (credentials go in, never come out). Each route works on
//! the engine named by `?engine=` (the default engine otherwise).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use porthole_engine::api::{
    ImageSource, ImportOptions, PullOptions, PullProgress, RegistryConfig, RegistryCredentials,
};
use porthole_engine::{Engine, EngineError};
use serde::Deserialize;

use super::{ApiError, ApiResult, EngineQuery};
use crate::AppState;

/// The largest archive an import accepts.
const MAX_IMPORT_BYTES: usize = 32 << 30;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/images", get(list_images))
        .route("/api/images/pull", post(pull_image))
        .route("/api/images/import", post(import_image).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)))
        .route("/api/images/save", get(save_images))
        .route("/api/images/tag", post(tag_image))
        .route("/api/images/history", get(image_history))
        .route("/api/images/prune", post(prune_images))
        .route("/api/images/{*reference}", get(inspect_image).delete(remove_image))
        .route("/api/registries", get(list_registries))
        .route("/api/registries/{registry}", put(configure_registry).delete(remove_registry))
}

fn engine_of(state: &AppState, engine: Option<&str>) -> ApiResult<Arc<dyn Engine>> {
    Ok(state.engines.get(engine)?.1)
}

async fn list_images(State(state): State<AppState>, Query(q): Query<EngineQuery>) -> ApiResult<Response> {
    Ok(Json(engine_of(&state, q.engine.as_deref())?.list_images().await?).into_response())
}

async fn inspect_image(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    Query(q): Query<EngineQuery>,
) -> ApiResult<Response> {
    Ok(Json(engine_of(&state, q.engine.as_deref())?.inspect_image(&reference).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct RemoveImageQuery {
    #[serde(default)]
    force: bool,
    engine: Option<String>,
}

async fn remove_image(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    Query(q): Query<RemoveImageQuery>,
) -> ApiResult<StatusCode> {
    engine_of(&state, q.engine.as_deref())?.remove_image(&reference, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    secret: String,
}

impl From<Credentials> for RegistryCredentials {
    fn from(c: Credentials) -> Self {
        RegistryCredentials { username: c.username, secret: c.secret }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    reference: String,
    /// `os/arch[/variant]`; the engine's own platform by default.
    #[serde(default)]
    platform: Option<String>,
    /// For this pull only; otherwise the registry's configured credentials.
    #[serde(default)]
    credentials: Option<Credentials>,
}

fn sse_error(err: &EngineError) -> SseEvent {
    SseEvent::default().event("error").data(ApiError::from_engine(err).body().to_string())
}

/// `POST /api/images/pull`: server-sent events `progress` (resolved, then per layer), then
/// `done`, or `error`. Closing the stream cancels the pull; what was verified is kept.
async fn pull_image(
    State(state): State<AppState>,
    Query(q): Query<EngineQuery>,
    body: Result<Json<PullRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    let engine = engine_of(&state, q.engine.as_deref())?;
    let options = PullOptions { platform: request.platform, credentials: request.credentials.map(Into::into) };
    // Errors found before anything is fetched (a malformed reference) are plain HTTP errors.
    let progress = engine.pull_image(&request.reference, options).await?;
    let events = progress.map(|item| {
        let event = match item {
            Ok(done @ PullProgress::Done { .. }) => {
                SseEvent::default().event("done").data(serde_json::to_string(&done).unwrap_or_default())
            }
            Ok(progress) => {
                SseEvent::default().event("progress").data(serde_json::to_string(&progress).unwrap_or_default())
            }
            Err(err) => sse_error(&err),
        };
        Ok::<_, Infallible>(event)
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    /// The tag to give the image (required for a root filesystem tarball to be tagged).
    tag: Option<String>,
    /// Default command for a root filesystem tarball, as a JSON array (`["sh"]`).
    cmd: Option<String>,
    engine: Option<String>,
}

/// `POST /api/images/import`: the archive is the request body (a `docker save` archive, an OCI
/// layout tarball, or a root filesystem tarball; gzip or zstd compressed or not).
async fn import_image(State(state): State<AppState>, Query(q): Query<ImportQuery>, body: Body) -> ApiResult<Response> {
    let engine = engine_of(&state, q.engine.as_deref())?;
    let cmd =
        match q.cmd.as_deref() {
            Some(cmd) => Some(serde_json::from_str::<Vec<String>>(cmd).map_err(|_| {
                ApiError::bad_request("cmd must be a JSON array of strings, e.g. [\"sh\",\"-c\",\"...\"]")
            })?),
            None => None,
        };
    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(|e| EngineError::invalid(format!("the upload broke off: {e}"))))
        .boxed();
    let report = engine.import_image(ImageSource::Stream(stream), ImportOptions { reference: q.tag, cmd }).await?;
    Ok((StatusCode::CREATED, Json(report)).into_response())
}

#[derive(Debug, Deserialize)]
struct SaveQuery {
    /// Image references, comma-separated.
    refs: String,
    engine: Option<String>,
}

/// `GET /api/images/save?refs=a,b`: one tar archive `docker load` accepts.
async fn save_images(State(state): State<AppState>, Query(q): Query<SaveQuery>) -> ApiResult<Response> {
    let references: Vec<String> =
        q.refs.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_string).collect();
    if references.is_empty() {
        return Err(ApiError::bad_request("refs must name at least one image"));
    }
    let engine = engine_of(&state, q.engine.as_deref())?;
    let archive = engine.save_images(&references).await?;
    let body = archive.map(|chunk| {
        chunk.map_err(|e| {
            tracing::warn!("image save: {}", e.detail());
            std::io::Error::other("the archive could not be written")
        })
    });
    let name = if references.len() == 1 { references[0].replace(['/', ':'], "_") } else { "images".to_string() };
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.tar\"")),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagRequest {
    source: String,
    target: String,
}

async fn tag_image(
    State(state): State<AppState>,
    Query(q): Query<EngineQuery>,
    body: Result<Json<TagRequest>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(request) = body?;
    engine_of(&state, q.engine.as_deref())?.tag_image(&request.source, &request.target).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    #[serde(rename = "ref")]
    reference: String,
    engine: Option<String>,
}

async fn image_history(State(state): State<AppState>, Query(q): Query<HistoryQuery>) -> ApiResult<Response> {
    Ok(Json(engine_of(&state, q.engine.as_deref())?.image_history(&q.reference).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct PruneQuery {
    /// Also images with tags that no container uses (`docker image prune -a`).
    #[serde(default)]
    all: bool,
    engine: Option<String>,
}

async fn prune_images(State(state): State<AppState>, Query(q): Query<PruneQuery>) -> ApiResult<Response> {
    Ok(Json(engine_of(&state, q.engine.as_deref())?.prune_images(q.all).await?).into_response())
}

async fn list_registries(State(state): State<AppState>, Query(q): Query<EngineQuery>) -> ApiResult<Response> {
    Ok(Json(engine_of(&state, q.engine.as_deref())?.list_registries().await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryRequest {
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    credentials: Option<Credentials>,
}

/// `PUT /api/registries/{registry}`: how to reach a registry (`ghcr.io`, `host:5000`).
async fn configure_registry(
    State(state): State<AppState>,
    Path(registry): Path<String>,
    Query(q): Query<EngineQuery>,
    body: Result<Json<RegistryRequest>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(request) = body?;
    let config = RegistryConfig { insecure: request.insecure, credentials: request.credentials.map(Into::into) };
    engine_of(&state, q.engine.as_deref())?.configure_registry(&registry, config).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_registry(
    State(state): State<AppState>,
    Path(registry): Path<String>,
    Query(q): Query<EngineQuery>,
) -> ApiResult<StatusCode> {
    engine_of(&state, q.engine.as_deref())?.remove_registry(&registry).await?;
    Ok(StatusCode::NO_CONTENT)
}
