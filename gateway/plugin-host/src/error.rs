//! Errors from loading plugins. Each one fails the reload that asked for it; the old snapshot
//! keeps serving. Faults during calls are not errors: they become an [`Outcome`].
//!
//! [`Outcome`]: crate::Outcome

use crate::types::FaultKind;

/// Why a plugin could not be loaded or bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The engine could not be created.
    #[error("cannot create the wasm engine: {detail}")]
    Engine {
        /// wasmtime's message.
        detail: String,
    },
    /// The bytes are not a valid WebAssembly component (a core module, or garbage).
    #[error("not a valid WebAssembly component: {detail}")]
    Compile {
        /// wasmtime's message.
        detail: String,
    },
    /// The component does not implement the `levee:policy` `plugin` world.
    #[error("the component does not match the levee:policy plugin world: {detail}")]
    WorldMismatch {
        /// What does not match.
        detail: String,
    },
    /// The component imports something the host does not provide.
    #[error(
        "the component imports `{import}`, which the host does not provide \
         (only levee:policy/host and WASI, which is denied)"
    )]
    UnknownImport {
        /// The import's name.
        import: String,
    },
    /// The plugin's memory limit is above the engine's.
    #[error(
        "plugin `{plugin}`: limits.memory {limit} bytes is above the engine's maximum of {max}"
    )]
    MemoryLimit {
        /// The plugin.
        plugin: String,
        /// Its limit.
        limit: u64,
        /// The engine's maximum.
        max: u64,
    },
    /// `init` rejected the route's config.
    #[error("plugin `{plugin}` rejected its config: {message}")]
    Init {
        /// The plugin.
        plugin: String,
        /// The plugin's message.
        message: String,
    },
    /// Instantiating the plugin or running `init` faulted.
    #[error("plugin `{plugin}` faulted during init ({kind}): {detail}")]
    InitFault {
        /// The plugin.
        plugin: String,
        /// How it faulted.
        kind: FaultKind,
        /// wasmtime's message.
        detail: String,
    },
    /// Two plugins in one set have the same name.
    #[error("plugin `{name}` is defined twice")]
    Duplicate {
        /// The name.
        name: String,
    },
}
