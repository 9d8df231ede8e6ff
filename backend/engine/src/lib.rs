//! Porthole's container engine.
//!
//! - [`api`]: the backend-neutral interface (traits, data, classified errors).
//! - [`native`]: the embedded engine — youki's libcontainer driven from one single-threaded
//!   shim process per container, overlayfs root filesystems, on-disk logs, a local image store.

pub mod api;
pub mod native;

pub use api::{Engine, EngineError, ErrorKind, Result};
