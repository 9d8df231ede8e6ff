//! Server-rendered page shells (askama templates from `web/templates/`). They carry no data
//! beyond the id in their URL: the bundle (`static/app.js`) fetches everything through the API,
//! so a shell reveals nothing to whoever can load it (which matters for share-link guests).

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

/// What pages may load and connect to: only this server; no inline scripts. Inline styles stay
/// allowed because xterm.js sizes its rows with them.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

#[derive(Template)]
#[template(path = "index.html")]
struct ContainersPage {
    version: &'static str,
    section: &'static str,
}

#[derive(Template)]
#[template(path = "launch.html")]
struct LaunchPage {
    version: &'static str,
    section: &'static str,
}

#[derive(Template)]
#[template(path = "images.html")]
struct ImagesPage {
    version: &'static str,
    section: &'static str,
}

#[derive(Template)]
#[template(path = "container.html")]
struct ContainerPage {
    version: &'static str,
    section: &'static str,
    id: String,
}

#[derive(Template)]
#[template(path = "terminal.html")]
struct TerminalPage {
    id: String,
    /// Opened with a share link: no navigation, nothing but the terminal.
    guest: bool,
}

/// `GET /`: the containers list.
pub async fn index() -> Response {
    render(ContainersPage { version: crate::VERSION, section: "containers" })
}

/// `GET /launch`.
pub async fn launch() -> Response {
    render(LaunchPage { version: crate::VERSION, section: "launch" })
}

/// `GET /images`.
pub async fn images() -> Response {
    render(ImagesPage { version: crate::VERSION, section: "images" })
}

/// Ids as the engine and the terminal registry make them; anything else is not a page.
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such page").into_response()
}

/// `GET /containers/{id}`.
pub async fn container(Path(id): Path<String>) -> Response {
    if !plausible_id(&id) {
        return not_found();
    }
    render(ContainerPage { version: crate::VERSION, section: "containers", id })
}

#[derive(Debug, Deserialize)]
pub struct TerminalQuery {
    link: Option<String>,
}

/// `GET /terminals/{id}`: for signed-in users, and with `?link=` for share-link guests (the
/// auth middleware lets exactly that through; the WebSocket checks the link).
pub async fn terminal(Path(id): Path<String>, Query(query): Query<TerminalQuery>) -> Response {
    if !plausible_id(&id) {
        return not_found();
    }
    render(TerminalPage { id, guest: query.link.is_some() })
}

fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut response = Html(html).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
            // Share-link secrets live in page URLs: never send them anywhere as a referrer.
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(err) => {
            tracing::error!("page template failed: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, "page could not be rendered").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
}

/// The login form, with an error when a token was refused.
pub fn login(error: Option<&str>, status: StatusCode) -> Response {
    let mut response = render(LoginPage { error });
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ids_are_plain_identifiers() {
        assert!(plausible_id("3f2a9c0d1e4b"));
        assert!(plausible_id("eager_turing"));
        for bad in ["", "a/b", "<script>", "a b", "a\"b"] {
            assert!(!plausible_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_guest_terminal_page_has_no_navigation_and_escapes_its_id() {
        let html = TerminalPage { id: "abc".into(), guest: true }.render().unwrap();
        assert!(html.contains(r#"data-terminal="abc""#), "{html}");
        assert!(!html.contains("/logout") && !html.contains(r#"href="/images""#), "{html}");
        let html = TerminalPage { id: "abc".into(), guest: false }.render().unwrap();
        assert!(html.contains(r#"href="/images""#), "{html}");
    }
}
