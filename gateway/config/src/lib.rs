//! Levee config: YAML in, a validated [`Config`] out, or errors that name the file, line,
//! column and key path of every problem found.
//!
//! This crate reads no files and knows nothing of tokio, hyper or wasmtime: the caller hands it
//! the text and a [`FileSystem`] to check that referenced files exist.

mod model;

pub use model::*;
