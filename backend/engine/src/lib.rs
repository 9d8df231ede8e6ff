//! Porthole's container engine.
//!
//! - [`api`]: the backend-neutral interface (traits, data, classified errors).
//! - [`native`]: the embedded engine — youki's libcontainer driven from one single-threaded
//!   shim process per container, overlayfs root filesystems, on-disk logs, a local image store.
//! - [`docker`]: the Docker backend — the same interface on an existing Docker daemon, through
//!   the Docker Engine API.
//! - [`conformance`]: the behaviour every backend must show, run by the test crates per backend.

pub mod api;
pub mod conformance;
pub mod docker;
pub mod native;

pub use api::{Engine, EngineError, ErrorKind, Result};
