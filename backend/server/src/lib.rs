//! The Porthole server: configuration, the HTTP router, pages and assets, and graceful shutdown.
//!
//! See `docs/ARCHITECTURE.md` for how a request travels from the browser to a container.

pub mod api;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod db;
pub mod engines;
pub mod pages;
pub mod security;
pub mod telemetry;
pub mod terminals;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use porthole_engine::native::{NativeConfig, NativeEngine};
use porthole_engine::Engine;
use serde::Serialize;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::cli::ServeOptions;
use crate::engines::EngineSet;
use crate::security::Origins;
use crate::terminals::TerminalRegistry;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub static_dir: Option<Arc<PathBuf>>,
    /// The engines this server drives, by name; the first is the default.
    pub engines: Arc<EngineSet>,
    pub db: sqlx::SqlitePool,
    pub terminals: Arc<TerminalRegistry>,
    /// Foreign origins allowed to use the API (CORS) and open WebSockets.
    pub origins: Arc<Origins>,
}

impl AppState {
    /// A server with one engine, named `native`.
    pub fn new(engine: Arc<dyn Engine>, db: sqlx::SqlitePool) -> Self {
        Self::with_engines(EngineSet::with_engines(vec![("native".to_string(), engine)]), db)
    }

    pub fn with_engines(engines: Arc<EngineSet>, db: sqlx::SqlitePool) -> Self {
        AppState {
            static_dir: None,
            engines,
            terminals: TerminalRegistry::new(db.clone()),
            db,
            origins: Arc::new(Origins::default()),
        }
    }
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    engine: String,
}

/// `GET /healthz`: whether the server and its engine answer. Says nothing else about the host.
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let engine = match state.engines.get(None) {
        Ok((_, engine)) => engine,
        Err(err) => {
            tracing::warn!("health check: {}", err.detail());
            let body = Health { status: "engine_unavailable", version: VERSION, engine: "unavailable".into() };
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
        }
    };
    match engine.info().await {
        Ok(info) => (StatusCode::OK, Json(Health { status: "ok", version: VERSION, engine: info.backend })),
        Err(err) => {
            tracing::warn!("health check: engine unavailable: {}", err.detail());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health { status: "engine_unavailable", version: VERSION, engine: "unavailable".into() }),
            )
        }
    }
}

/// The application's routes, with shared state applied.
pub fn router(state: AppState) -> Router {
    let cors = state.origins.cors_layer();
    let router = Router::new()
        .route("/", get(pages::index))
        .route("/launch", get(pages::launch))
        .route("/images", get(pages::images))
        .route("/containers/{id}", get(pages::container))
        .route("/terminals/{id}", get(pages::terminal))
        .route("/healthz", get(health))
        .route("/login", get(auth::login_page).post(auth::login_form))
        .route("/logout", axum::routing::post(auth::logout))
        .route("/static/{*path}", get(assets::serve_asset))
        .merge(api::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_auth));
    // Outside authentication, so preflight requests (which carry no credentials) are answered.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(CompressionLayer::new()).layer(TraceLayer::new_for_http()).with_state(state)
}

/// The server future [`serve_app`] returns.
pub type AppServer =
    axum::serve::Serve<axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>, Router, Router>;

/// Serves the application on a bound listener. Nagle's algorithm is off on every connection:
/// a keystroke's echo is one tiny WebSocket frame and must not wait for the client's delayed
/// ACK (tens of milliseconds).
pub fn serve_app(listener: tokio::net::TcpListener, state: AppState) -> AppServer {
    use axum::serve::ListenerExt;
    fn no_delay(stream: &mut tokio::net::TcpStream) {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {err}");
        }
    }
    let listener = listener.tap_io(no_delay as fn(&mut tokio::net::TcpStream));
    axum::serve(listener, router(state))
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("the server failed: {0}")]
    Server(#[source] std::io::Error),
    #[error("cannot start the container engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Database(#[from] db::DbError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot create the first access token: {0}")]
    Token(#[source] sqlx::Error),
}

/// `porthole token create`: a new admin token, printed once.
pub async fn create_token(data_dir: &std::path::Path, name: &str) -> Result<String, ServeError> {
    std::fs::create_dir_all(data_dir).map_err(ServeError::Server)?;
    let db = db::open(data_dir).await?;
    auth::create_token(&db, name).await.map_err(ServeError::Token)
}

/// Runs the server until SIGINT or SIGTERM, then finishes in-flight requests and returns.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let shim_exe = match &options.shim {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(ServeError::Server)?,
    };
    let data_dir = options.data_dir.clone();
    let engines = EngineSet::open(&options.engines, || async move {
        let engine = NativeEngine::open(NativeConfig { root: data_dir, shim_exe, starter_image: true }).await?;
        Ok(Arc::new(engine) as Arc<dyn Engine>)
    })
    .await
    .map_err(|e| {
        tracing::error!("engine: {}", e.detail());
        ServeError::Engine(e.message().to_string())
    })?;
    for status in engines.statuses() {
        let state = if status.available { "available" } else { "unavailable (retrying)" };
        tracing::info!("engine '{}': {} at {}, {state}", status.name, status.backend, status.address);
    }
    let db = db::open(&options.data_dir).await?;
    let first_token = auth::bootstrap(&db).await.map_err(ServeError::Token)?;
    let origins = Origins::new(&options.allow_origin).map_err(ServeError::Config)?;
    let mut state = AppState::with_engines(engines.clone(), db);
    state.static_dir = options.static_dir.clone().map(Arc::new);
    state.origins = Arc::new(origins);
    match state.terminals.restore(&engines).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("{n} terminal(s) of the previous run restored"),
        Err(err) => tracing::warn!("cannot restore terminals: {err}"),
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: options.listen, source })?;
    let local = listener.local_addr().map_err(ServeError::Server)?;
    tracing::info!("Porthole {VERSION} listening on http://{local}/");
    if let Some(token) = first_token {
        // Shown once, like Jupyter's: only its hash is stored.
        eprintln!(
            "\n    First start: an admin access token was created. Log in with:\n\n        http://{local}/login?token={token}\n\n    (only its hash is stored: keep it, or make a new one with `porthole token create`)\n"
        );
    }
    serve_app(listener, state).with_graceful_shutdown(shutdown_signal()).await.map_err(ServeError::Server)?;
    tracing::info!("Porthole stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!("cannot watch SIGTERM ({err}); only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}
