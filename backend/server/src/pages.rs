//! Server-rendered page shells (askama templates from `web/templates/`).

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    version: &'static str,
}

/// `GET /`.
pub async fn index() -> Response {
    render(IndexPage { version: crate::VERSION })
}

fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::error!("page template failed: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, "page could not be rendered").into_response()
        }
    }
}
