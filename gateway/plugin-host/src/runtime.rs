//! The process-wide engine: configuration, the epoch ticker, and compilation with a content-hash
//! cache.
//!
//! There is one [`PluginRuntime`] per process. Its `Engine` uses the pooling allocator (slots
//! reserved up front, sized by [`EngineParams`]), copy-on-write memory images (an instance
//! starts from the module's mapped image instead of copying its data segments), and epoch
//! interruption: a ticker thread bumps the epoch every `epoch_tick`, and each call gets a
//! deadline of that many ticks. Fuel is off: it costs 40-60% on interpreter-style guests, epochs
//! cost little (see `PLUGIN-NOTES.md`).
//!
//! Compilation (Cranelift, 40-60 ms for a small Rust guest, seconds for JS or Python) happens
//! off the request path, when a config is loaded. The result is cached by the sha256 of the
//! `.wasm` bytes, so a reload with an unchanged file compiles nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, EngineWeak, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings;
use crate::error::PluginError;
use crate::instance::HostState;
use crate::params::{EngineParams, PluginParams};
use crate::plugin::Plugin;
use crate::services::HostServices;

/// A component compiled and linked against the `plugin` world, ready to instantiate.
pub struct CompiledPlugin {
    digest: [u8; 32],
    version: String,
    imports: Vec<String>,
    pub(crate) pre: bindings::PluginPre<HostState>,
    compile_time: Duration,
}

/// The engine, the host linker and the compile cache. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    params: EngineParams,
    linker: Linker<HostState>,
    /// Compiled components by content hash. Weak, so a version no snapshot uses any more is
    /// freed; a reload keeps the old snapshot (and so its plugins) alive while it compiles.
    cache: Mutex<HashMap<[u8; 32], Weak<CompiledPlugin>>>,
    cache_hits: AtomicU64,
    compiles: AtomicU64,
}

// === impl PluginRuntime ===

impl PluginRuntime {
    /// Creates the engine and starts its epoch ticker thread. The thread ends by itself once
    /// the engine (every runtime clone, plugin and instance) is gone.
    pub fn new(mut params: EngineParams) -> Result<Self, PluginError> {
        // Clamped once here, so the ticker and each plugin's deadline in ticks agree.
        params.epoch_tick = params.epoch_tick.max(MIN_EPOCH_TICK);
        let engine = Engine::new(&engine_config(&params)).map_err(|e| PluginError::Engine {
            detail: format!("{e:#}"),
        })?;
        spawn_ticker(engine.weak(), params.epoch_tick).map_err(|e| PluginError::Engine {
            detail: format!("cannot start the epoch ticker thread: {e}"),
        })?;
        let mut linker = Linker::new(&engine);
        bindings::Plugin::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| PluginError::Engine {
            detail: format!("{e:#}"),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                params,
                linker,
                cache: Mutex::new(HashMap::new()),
                cache_hits: AtomicU64::new(0),
                compiles: AtomicU64::new(0),
            }),
        })
    }

    /// The engine's parameters.
    pub fn params(&self) -> &EngineParams {
        &self.inner.params
    }

    /// Compiles `wasm` (a component's bytes) and links it against the `plugin` world, or
    /// returns the cached result for identical bytes. Slow (Cranelift): call it off the request
    /// path.
    ///
    /// Fails if the bytes are not a valid component, if it does not export
    /// `levee:policy/policy` with the right types, or if it imports anything but
    /// `levee:policy/host` and WASI. WASI imports are linked to functions that trap: a plugin
    /// gets no filesystem, network, environment, clock or randomness beyond the `host` imports.
    pub fn compile(&self, wasm: &[u8]) -> Result<Arc<CompiledPlugin>, PluginError> {
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        if let Some(compiled) = self.cached(&digest) {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(compiled);
        }
        let started = Instant::now();
        let component =
            Component::new(&self.inner.engine, wasm).map_err(|e| PluginError::Compile {
                detail: format!("{e:#}"),
            })?;
        let pre = self.link(&component)?;
        let imports = component
            .component_type()
            .imports(&self.inner.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let compiled = Arc::new(CompiledPlugin {
            digest,
            version: hex(&digest),
            imports,
            pre,
            compile_time: started.elapsed(),
        });
        self.inner.compiles.fetch_add(1, Ordering::Relaxed);
        let mut cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, weak| weak.strong_count() > 0);
        cache.insert(digest, Arc::downgrade(&compiled));
        Ok(compiled)
    }

    /// Compiles `wasm` (see [`compile`](Self::compile)) and wraps it as the plugin described by
    /// `params`, with its own breaker and counters, serving `services` to the guest.
    pub fn load(
        &self,
        params: PluginParams,
        wasm: &[u8],
        services: Arc<dyn HostServices>,
    ) -> Result<Arc<Plugin>, PluginError> {
        self.check(&params)?;
        let compiled = self.compile(wasm)?;
        self.instantiate_plugin(params, compiled, services)
    }

    /// Wraps an already compiled component as the plugin described by `params`.
    pub fn instantiate_plugin(
        &self,
        params: PluginParams,
        compiled: Arc<CompiledPlugin>,
        services: Arc<dyn HostServices>,
    ) -> Result<Arc<Plugin>, PluginError> {
        self.check(&params)?;
        Ok(Arc::new(Plugin::new(
            self.inner.engine.clone(),
            self.inner.params.epoch_tick,
            params,
            compiled,
            services,
        )))
    }

    fn check(&self, params: &PluginParams) -> Result<(), PluginError> {
        if params.limits.memory > self.inner.params.max_memory {
            return Err(PluginError::MemoryLimit {
                plugin: params.name.clone(),
                limit: params.limits.memory,
                max: self.inner.params.max_memory,
            });
        }
        Ok(())
    }

    /// Compilations served from the content-hash cache so far.
    pub fn cache_hits(&self) -> u64 {
        self.inner.cache_hits.load(Ordering::Relaxed)
    }

    /// Components compiled so far (cache misses).
    pub fn compiles(&self) -> u64 {
        self.inner.compiles.load(Ordering::Relaxed)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Arc<CompiledPlugin>> {
        let cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.get(digest).and_then(Weak::upgrade)
    }

    fn link(&self, component: &Component) -> Result<bindings::PluginPre<HostState>, PluginError> {
        let engine = &self.inner.engine;
        let ty = component.component_type();
        for (name, _) in ty.imports(engine) {
            if !(name.starts_with("wasi:") || name.starts_with("levee:policy/")) {
                return Err(PluginError::UnknownImport {
                    import: name.to_owned(),
                });
            }
        }
        if !ty
            .exports(engine)
            .any(|(name, _)| name.starts_with("levee:policy/policy@"))
        {
            return Err(PluginError::WorldMismatch {
                detail: "it does not export `levee:policy/policy`".to_owned(),
            });
        }
        let mut linker = self.inner.linker.clone();
        linker
            .define_unknown_imports_as_traps(component)
            .map_err(|e| PluginError::WorldMismatch {
                detail: format!("{e:#}"),
            })?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::WorldMismatch {
                detail: format!("{e:#}"),
            })?;
        bindings::PluginPre::new(pre).map_err(|e| PluginError::WorldMismatch {
            detail: format!("{e:#}"),
        })
    }
}

impl fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("params", &self.inner.params)
            .field("compiles", &self.compiles())
            .field("cache_hits", &self.cache_hits())
            .finish_non_exhaustive()
    }
}

fn engine_config(params: &EngineParams) -> Config {
    let instances = params.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    // A Rust or C component holds one memory and a few core instances and tables (the main
    // module plus wit-component's shim and fixup modules); componentize-js/py ones a few more.
    // Slots are virtual-memory reservations, so generous counts cost address space, not RAM.
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(8))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(8))
        .max_memory_size(usize::try_from(params.max_memory).unwrap_or(usize::MAX));
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .epoch_interruption(true)
        .consume_fuel(false)
        .wasm_component_model(true);
    config
}

/// The shortest epoch tick: a shorter one would keep a core busy waking the ticker.
const MIN_EPOCH_TICK: Duration = Duration::from_micros(100);

fn spawn_ticker(engine: EngineWeak, tick: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("levee-plugin-epoch".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

// === impl CompiledPlugin ===

impl CompiledPlugin {
    /// The sha256 of the `.wasm` bytes.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The sha256 of the `.wasm` bytes, in lower-case hex: the plugin's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The interfaces the component imports (`levee:policy/host`, and any WASI ones, which
    /// are linked to functions that trap).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// How long Cranelift took to compile it.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
}

impl fmt::Debug for CompiledPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledPlugin")
            .field("version", &self.version)
            .field("compile_time", &self.compile_time)
            .finish_non_exhaustive()
    }
}
