//! Cross-origin rules: which foreign origins may use the API from a browser (CORS, closed
//! unless configured) and the Origin check every WebSocket upgrade passes, so another site
//! cannot open a terminal with the user's cookie (cross-site WebSocket hijacking).

use axum::http::{header, HeaderMap, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The origins allowed besides the server's own, as `scheme://host[:port]`.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    allowed: Vec<String>,
}

impl Origins {
    /// Checks and normalises configured origins (`https://Example.com/` → `https://example.com`).
    pub fn new(configured: &[String]) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for origin in configured {
            let normal = normalize(origin).ok_or_else(|| {
                format!("'{origin}' is not an origin: write scheme://host[:port], e.g. https://example.com")
            })?;
            allowed.push(normal);
        }
        Ok(Origins { allowed })
    }

    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
    }

    /// Whether a WebSocket upgrade with these headers may proceed. Browsers always send Origin
    /// on WebSocket requests, so a request without one is not a browser and cannot carry a
    /// victim's cookie against their will; one with an Origin must be this server (same
    /// host and port as the request's Host) or configured.
    pub fn websocket_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else { return true };
        let Some(origin) = origin.to_str().ok().and_then(normalize) else { return false };
        if self.allowed.contains(&origin) {
            return true;
        }
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
        let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or_default();
        let scheme = origin.split_once("://").map(|(s, _)| s).unwrap_or_default();
        let host = host.to_ascii_lowercase();
        authority == host || authority == strip_default_port(&host, scheme)
    }

    /// The CORS layer: `None` (no CORS headers at all) unless origins are configured.
    pub fn cors_layer(&self) -> Option<CorsLayer> {
        if self.allowed.is_empty() {
            return None;
        }
        let origins: Vec<HeaderValue> = self.allowed.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .max_age(std::time::Duration::from_secs(600)),
        )
    }
}

fn strip_default_port<'a>(host: &'a str, scheme: &str) -> &'a str {
    match scheme {
        "http" => host.strip_suffix(":80").unwrap_or(host),
        "https" => host.strip_suffix(":443").unwrap_or(host),
        _ => host,
    }
}

/// `scheme://host[:port]` in lower case without a trailing slash or default port; `None` for
/// anything else (paths, `null`, other schemes).
fn normalize(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https") || authority.is_empty() {
        return None;
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    Some(format!("{scheme}://{}", strip_default_port(authority, scheme)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn own_origin_and_configured_origins_pass_others_do_not() {
        let origins = Origins::new(&["https://Demo.example.org/".to_string()]).unwrap();
        assert!(origins.websocket_allowed(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")));
        assert!(origins.websocket_allowed(&headers(Some("https://demo.example.org"), "127.0.0.1:8080")));
        assert!(origins.websocket_allowed(&headers(None, "127.0.0.1:8080")));
        assert!(origins.websocket_allowed(&headers(Some("https://porthole.lan"), "porthole.lan:443")));
        assert!(!origins.websocket_allowed(&headers(Some("http://evil.example"), "127.0.0.1:8080")));
        assert!(!origins.websocket_allowed(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080")));
        assert!(!origins.websocket_allowed(&headers(Some("null"), "127.0.0.1:8080")));
    }

    #[test]
    fn bad_configured_origins_are_refused_with_the_reason() {
        let err = Origins::new(&["example.com".to_string()]).unwrap_err();
        assert!(err.contains("scheme://host"), "{err}");
        assert!(Origins::new(&["https://example.com/path".to_string()]).is_err());
        assert!(Origins::new(&[]).unwrap().cors_layer().is_none());
    }
}
