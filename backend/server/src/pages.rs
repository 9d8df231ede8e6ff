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

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    version: &'static str,
    error: Option<&'a str>,
}

/// The login form, with an error when a token was refused.
pub fn login(error: Option<&str>, status: StatusCode) -> Response {
    let mut response = render(LoginPage { version: crate::VERSION, error });
    *response.status_mut() = status;
    response
}
