//! Checks of the top-level `cache` and `plugins`, and of the plugins each route names.

use std::time::Duration;

use crate::model::*;
use crate::raw::*;
use crate::tree::child;

use super::{Checker, list};

/// Plugin memory bounds: below 1 MiB no real component instantiates; 256 MiB is the largest
/// slot the gateway's wasmtime pooling allocator reserves for an instance.
const PLUGIN_MEMORY: (u64, u64) = (1 << 20, 256 << 20);

// === impl Checker: cache and plugins ===

impl Checker<'_> {
    pub(super) fn cache(&mut self, raw: Option<RawCache>) -> Cache {
        let raw = raw.unwrap_or(RawCache {
            max_size: None,
            max_entry_size: None,
        });
        let max_size = raw.max_size.map_or(64 << 20, |s| s.0);
        let max_entry_size = match raw.max_entry_size {
            None => max_size.min(1 << 20),
            Some(entry) => {
                if entry.0 > max_size {
                    self.err(
                        "cache.max_entry_size",
                        format!(
                            "{} bytes is more than `max_size` ({max_size} bytes)",
                            entry.0
                        ),
                    );
                }
                entry.0
            }
        };
        Cache {
            max_size,
            max_entry_size,
        }
    }

    pub(super) fn plugin(&mut self, key: &str, raw: RawPlugin) -> Plugin {
        let k = |name: &str| child(key, name);
        let path = self.file(&k("path"), &raw.path);
        let limits = raw.limits.unwrap_or(RawPluginLimits {
            memory: None,
            deadline: None,
            cache_entries: None,
            counters: None,
        });
        let memory_key = format!("{key}.limits.memory");
        let memory = limits.memory.map_or(32 << 20, |s| s.0);
        if !(PLUGIN_MEMORY.0..=PLUGIN_MEMORY.1).contains(&memory) {
            self.err(
                memory_key,
                format!("must be between 1MiB and 256MiB, found {memory} bytes"),
            );
        }
        let deadline_key = format!("{key}.limits.deadline");
        let deadline = limits.deadline.map_or(Duration::from_millis(5), |d| d.0);
        if !(Duration::from_millis(1)..=Duration::from_secs(10)).contains(&deadline) {
            self.err(
                deadline_key,
                format!(
                    "must be between 1ms and 10s, found {}",
                    super::human(deadline)
                ),
            );
        }
        let recycle_after = self.range(
            &k("recycle_after"),
            raw.recycle_after.map(u64::from),
            10_000,
            1,
            u64::MAX,
            "",
        );
        Plugin {
            name: raw.name,
            path,
            on_error: match raw.on_error.unwrap_or(RawPluginOnError::FailOpen) {
                RawPluginOnError::FailOpen => PluginOnError::FailOpen,
                RawPluginOnError::FailClosed => PluginOnError::FailClosed,
                RawPluginOnError::Reload => PluginOnError::Reload,
            },
            isolation: match raw.isolation.unwrap_or(RawPluginIsolation::Pooled) {
                RawPluginIsolation::Pooled => PluginIsolation::Pooled,
                RawPluginIsolation::PerRequest => PluginIsolation::PerRequest,
            },
            limits: PluginLimits {
                memory,
                deadline,
                cache_entries: limits.cache_entries.unwrap_or(10_000),
                counters: limits.counters.unwrap_or(100),
            },
            recycle_after: u32::try_from(recycle_after).unwrap_or(10_000),
        }
    }

    /// The plugins a route runs: each defined at the top level, each at most once.
    pub(super) fn route_plugins(
        &mut self,
        key: &str,
        raw: Vec<RawRoutePlugin>,
        defined: &[String],
    ) -> Vec<RoutePlugin> {
        let mut out: Vec<RoutePlugin> = Vec::with_capacity(raw.len());
        for (i, plugin) in raw.into_iter().enumerate() {
            let name_key = format!("{key}[{i}].name");
            if !defined.contains(&plugin.name) {
                let known = if defined.is_empty() {
                    "no plugins are defined in the top-level `plugins`".to_owned()
                } else {
                    let names: Vec<&str> = defined.iter().map(String::as_str).collect();
                    format!("defined: {}", list(&names))
                };
                self.err(
                    name_key,
                    format!("no plugin named `{}` ({known})", plugin.name),
                );
            } else if let Some(first) = out.iter().position(|p| p.name == plugin.name) {
                self.err(
                    name_key,
                    format!(
                        "plugin `{}` is already listed at {key}[{first}]; a route runs a \
                         plugin once",
                        plugin.name
                    ),
                );
            }
            let mut names = |field: &str, names: Option<Vec<String>>| {
                names.map(|names| {
                    names
                        .iter()
                        .enumerate()
                        .map(|(j, name)| {
                            self.header_name(&format!("{key}[{i}].{field}[{j}]"), name)
                        })
                        .collect()
                })
            };
            let request_headers = names("request_headers", plugin.request_headers);
            let response_headers = names("response_headers", plugin.response_headers);
            let public_config = plugin.public_config.unwrap_or_default();
            for (j, public) in public_config.iter().enumerate() {
                let known = match &plugin.config {
                    Some(serde_json::Value::Object(map)) => map.contains_key(public),
                    _ => false,
                };
                if !known {
                    self.err(
                        format!("{key}[{i}].public_config[{j}]"),
                        format!("`{public}` is not a key of this plugin's `config`"),
                    );
                }
            }
            out.push(RoutePlugin {
                name: plugin.name,
                config: plugin
                    .config
                    .map_or_else(|| "null".to_owned(), |v| v.to_string()),
                public_config,
                request_headers,
                response_headers,
            });
        }
        out
    }
}
