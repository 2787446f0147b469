//! The plugins of one config snapshot, by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::PluginError;
use crate::params::PluginParams;
use crate::plugin::Plugin;
use crate::runtime::PluginRuntime;
use crate::services::HostServices;
use crate::status::PluginStatus;

/// The plugins a snapshot defines. Routes bind them with [`Plugin::bind`].
#[derive(Debug, Clone, Default)]
pub struct PluginSet {
    plugins: BTreeMap<String, Arc<Plugin>>,
}

// === impl PluginSet ===

impl PluginSet {
    /// Loads every plugin in `sources` (params, and the `.wasm` bytes the gateway read).
    ///
    /// A plugin whose name, bytes and params are unchanged from `previous` is carried over as
    /// it is, with its breaker state and counters; a changed one is loaded fresh (unchanged
    /// bytes still skip compilation, through the runtime's content-hash cache). Any error fails
    /// the whole set, so a reload either applies every plugin or none.
    pub fn load<'a>(
        runtime: &PluginRuntime,
        sources: impl IntoIterator<Item = (PluginParams, &'a [u8])>,
        services: &Arc<dyn HostServices>,
        previous: Option<&PluginSet>,
    ) -> Result<Self, PluginError> {
        let mut plugins = BTreeMap::new();
        for (params, wasm) in sources {
            if plugins.contains_key(&params.name) {
                return Err(PluginError::Duplicate { name: params.name });
            }
            let compiled = runtime.compile(wasm)?;
            let carried = previous
                .and_then(|set| set.get(&params.name))
                .filter(|old| old.version() == compiled.version() && *old.params() == params);
            let plugin = match carried {
                Some(old) => Arc::clone(old),
                None => runtime.instantiate_plugin(params, compiled, Arc::clone(services))?,
            };
            plugins.insert(plugin.name().to_owned(), plugin);
        }
        Ok(Self { plugins })
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// The plugins, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// How many plugins there are.
    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Every plugin's status, by name.
    pub fn status(&self) -> Vec<PluginStatus> {
        self.plugins.values().map(|p| p.status()).collect()
    }
}
