//! Engine errors, classified by kind (after moby's errdefs) so that every caller maps them to a
//! user-facing outcome (HTTP status, UI message) in one place.

use std::fmt;

/// What kind of failure an [`EngineError`] is. The server maps each kind to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The container, image, exec or volume does not exist.
    NotFound,
    /// The object exists but is in the wrong state, or a name is taken.
    Conflict,
    /// The request itself is wrong (bad reference, unknown user, bad limit, ...).
    InvalidArgument,
    /// The backend (a Docker daemon, the host) cannot be reached or lacks a capability.
    Unavailable,
    /// This backend does not implement the operation.
    NotImplemented,
    /// Anything else: a bug or an unexpected host failure. Details are logged, not shown.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine failure: a kind, a message that is safe to show to the user, and an optional
/// internal cause that is only ever logged.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EngineError { kind, message: message.into(), source: None }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotImplemented, message)
    }

    /// An internal failure: `context` says what was being done (shown), `source` says why (logged).
    pub fn internal(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        EngineError { kind: ErrorKind::Internal, message: context.into(), source: Some(source.into()) }
    }

    /// Attach an internal cause without changing kind or message.
    pub fn with_source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message meant for users: never contains internal causes.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The full chain, for logs.
    pub fn detail(&self) -> String {
        let mut out = self.message.clone();
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Adds context to fallible host operations, turning them into internal errors.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E> Context<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| EngineError::internal(what(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_contains_the_cause_but_message_does_not() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "EACCES on /secret");
        let e = EngineError::internal("could not prepare the root filesystem", io);
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.message(), "could not prepare the root filesystem");
        assert!(!e.to_string().contains("/secret"));
        assert!(e.detail().contains("EACCES on /secret"));
    }
}
