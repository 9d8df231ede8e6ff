//! The Porthole server: configuration, the HTTP router, pages and assets, and graceful shutdown.
//!
//! See `docs/ARCHITECTURE.md` for how a request travels from the browser to a container.

pub mod assets;
pub mod cli;
pub mod pages;
pub mod telemetry;

use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::cli::ServeOptions;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub static_dir: Option<Arc<PathBuf>>,
    pub engine_name: &'static str,
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    engine: &'static str,
}

async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: VERSION,
        engine: state.engine_name,
    })
}

/// The application's routes, with shared state applied.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::index))
        .route("/healthz", get(health))
        .route("/static/{*path}", get(assets::serve_asset))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Server(#[source] std::io::Error),
}

/// Runs the server until SIGINT or SIGTERM, then finishes in-flight requests and returns.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let state = AppState {
        static_dir: options.static_dir.clone().map(Arc::new),
        engine_name: "native",
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: options.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::Server)?;
    tracing::info!("Porthole {VERSION} listening on http://{local}/");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(ServeError::Server)?;
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
