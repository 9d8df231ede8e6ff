//! Authentication until accounts exist: access tokens (only their SHA-256 is stored), the admin
//! token created on first start, the login flow that turns a token into an HttpOnly cookie, and
//! the middleware every request passes through.

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use chrono::Utc;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

use crate::AppState;

pub const COOKIE: &str = "porthole_token";

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: i64,
    pub name: String,
}

/// A new random token: `ph_` and 32 random bytes in hex.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("ph_{}", hex::encode(bytes))
}

pub(crate) fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Stores a new admin token under `name` and returns the token (the only time it is seen).
pub async fn create_token(pool: &SqlitePool, name: &str) -> Result<String, sqlx::Error> {
    let token = generate_token();
    sqlx::query("INSERT INTO access_tokens (name, token_hash, role, created_at) VALUES (?, ?, 'admin', ?)")
        .bind(name)
        .bind(hash(&token))
        .bind(Utc::now().to_rfc3339())
        .execute(pool)
        .await?;
    Ok(token)
}

/// On a database without any usable token, creates the first admin token and returns it.
pub async fn bootstrap(pool: &SqlitePool) -> Result<Option<String>, sqlx::Error> {
    let (active,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM access_tokens WHERE revoked_at IS NULL").fetch_one(pool).await?;
    if active > 0 {
        return Ok(None);
    }
    create_token(pool, "admin (created at first start)").await.map(Some)
}

/// The principal a token stands for, if it is valid and not revoked.
pub async fn verify(pool: &SqlitePool, token: &str) -> Result<Option<Principal>, sqlx::Error> {
    if !token.starts_with("ph_") || token.len() > 128 {
        return Ok(None);
    }
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT id, name FROM access_tokens WHERE token_hash = ? AND revoked_at IS NULL")
            .bind(hash(token))
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(token_id, name)| Principal { token_id, name }))
}

/// The token a request carries: `Authorization: Bearer`, else the login cookie.
pub fn token_from(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some(token.trim().to_string());
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')).map(str::to_string))
}

/// Paths anyone may reach: the login flow, the health probe and the page assets.
fn is_public(path: &str) -> bool {
    path == "/login" || path == "/healthz" || path.starts_with("/static/")
}

/// A terminal WebSocket that brings a share link: the handler checks the link itself (for that
/// one terminal only), so no token is required here.
fn is_share_link_websocket(path: &str, query: Option<&str>) -> bool {
    let Some(rest) = path.strip_prefix("/api/terminals/").and_then(|r| r.strip_suffix("/ws")) else { return false };
    !rest.is_empty() && !rest.contains('/') && has_link(query)
}

/// The page a share link opens, `/terminals/{id}?link=SECRET`: a shell that reveals nothing
/// (the link is checked by the WebSocket the page opens), so guests without a token get it.
fn is_share_link_page(path: &str, query: Option<&str>) -> bool {
    let Some(id) = path.strip_prefix("/terminals/") else { return false };
    !id.is_empty() && !id.contains('/') && has_link(query)
}

fn has_link(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("link=")))
}

/// Requires a valid token on every request but the public ones. API clients get a JSON 401;
/// browsers are sent to the login page.
pub async fn require_auth(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query();
    if is_public(&path) || is_share_link_websocket(&path, query) || is_share_link_page(&path, query) {
        return next.run(request).await;
    }
    let principal = match token_from(request.headers()) {
        Some(token) => match verify(&state.db, &token).await {
            Ok(p) => p,
            Err(err) => {
                tracing::error!("token check failed: {err}");
                return crate::api::ApiError::internal().into_response();
            }
        },
        None => None,
    };
    match principal {
        Some(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        None if path.starts_with("/api/") || path == "/api" => crate::api::ApiError::unauthenticated().into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginParams {
    token: Option<String>,
}

/// `GET /login` (the form, or `?token=` from the link printed at first start).
pub async fn login_page(State(state): State<AppState>, Query(params): Query<LoginParams>) -> Response {
    match params.token {
        Some(token) => log_in(&state, &token).await,
        None => crate::pages::login(None, StatusCode::OK),
    }
}

/// `POST /login` from the form.
pub async fn login_form(State(state): State<AppState>, Form(params): Form<LoginParams>) -> Response {
    log_in(&state, params.token.as_deref().unwrap_or_default()).await
}

async fn log_in(state: &AppState, token: &str) -> Response {
    match verify(&state.db, token.trim()).await {
        Ok(Some(_)) => {
            let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", token.trim());
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Ok(None) => crate::pages::login(Some("That token is not valid (or was revoked)."), StatusCode::UNAUTHORIZED),
        Err(err) => {
            tracing::error!("token check failed: {err}");
            crate::pages::login(
                Some("The server could not check the token; try again."),
                StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}

/// `POST /logout`.
pub async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("porthole_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// `GET /api/whoami`.
pub async fn whoami(axum::Extension(principal): axum::Extension<Principal>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "name": principal.name, "token_id": principal.token_id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_bearer_or_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b; porthole_token=ph_abc; c=d"));
        assert_eq!(token_from(&headers).as_deref(), Some("ph_abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer ph_xyz"));
        assert_eq!(token_from(&headers).as_deref(), Some("ph_xyz"));
        assert_eq!(token_from(&HeaderMap::new()), None);
    }

    #[test]
    fn generated_tokens_are_long_random_and_hashed() {
        let a = generate_token();
        assert_eq!(a.len(), 3 + 64);
        assert_ne!(a, generate_token());
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), a);
    }

    #[test]
    fn only_terminal_websockets_with_a_link_skip_the_token_check() {
        assert!(is_share_link_websocket("/api/terminals/abc/ws", Some("link=phl_x&name=a")));
        assert!(!is_share_link_websocket("/api/terminals/abc/ws", Some("offset=3")));
        assert!(!is_share_link_websocket("/api/terminals/abc/ws", None));
        assert!(!is_share_link_websocket("/api/terminals/abc/links", Some("link=x")));
        assert!(!is_share_link_websocket("/api/terminals/a/b/ws", Some("link=x")));
        assert!(!is_share_link_websocket("/api/containers/abc/ws", Some("link=x")));
    }

    #[test]
    fn only_the_terminal_page_with_a_link_skips_the_token_check() {
        assert!(is_share_link_page("/terminals/abc", Some("link=phl_x")));
        assert!(is_share_link_page("/terminals/abc", Some("name=a&link=phl_x")));
        assert!(!is_share_link_page("/terminals/abc", None));
        assert!(!is_share_link_page("/terminals/abc", Some("offset=1&blink=x")));
        assert!(!is_share_link_page("/terminals/", Some("link=x")));
        assert!(!is_share_link_page("/terminals/abc/ws", Some("link=x")));
        assert!(!is_share_link_page("/containers/abc", Some("link=x")));
        assert!(!is_share_link_page("/", Some("link=x")));
    }

    #[test]
    fn only_login_health_and_assets_are_public() {
        for public in ["/login", "/healthz", "/static/app.js"] {
            assert!(is_public(public), "{public}");
        }
        for private in ["/", "/api/containers", "/login/x", "/staticx", "/api"] {
            assert!(!is_public(private), "{private}");
        }
    }
}
