//! Browser assets under `/static/`: the files built into the binary (rust-embed; read from disk
//! in debug builds), or a directory given with `--static-dir`.

use std::path::{Component, Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::AppState;

#[derive(RustEmbed)]
#[folder = "$CARGO_MANIFEST_DIR/../../static/"]
struct EmbeddedAssets;

/// `GET /static/{*path}`.
pub async fn serve_asset(State(state): State<AppState>, UrlPath(path): UrlPath<String>) -> Response {
    let body = match &state.static_dir {
        Some(dir) => read_from_dir(dir, &path).await,
        None => EmbeddedAssets::get(&path).map(|file| file.data.into_owned()),
    };
    match body {
        Some(bytes) => {
            let mime = mime_guess::from_path(&path).first_or_octet_stream();
            let mut response = bytes.into_response();
            if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Reads `path` below `dir`, refusing anything that could step outside it.
async fn read_from_dir(dir: &Path, path: &str) -> Option<Vec<u8>> {
    let relative = PathBuf::from(path);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    tokio::fs::read(dir.join(relative)).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn directory_assets_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"hello").unwrap();
        assert_eq!(read_from_dir(dir.path(), "a.txt").await.as_deref(), Some(&b"hello"[..]));
        assert_eq!(read_from_dir(dir.path(), "../etc/passwd").await, None);
        assert_eq!(read_from_dir(dir.path(), "/etc/passwd").await, None);
    }

    #[test]
    fn the_stylesheet_is_embedded() {
        assert!(EmbeddedAssets::get("style.css").is_some());
    }
}
