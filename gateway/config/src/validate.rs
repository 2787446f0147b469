//! Turns the parsed file into a checked [`Config`], collecting every problem on the way.
//!
//! Each section and each list item is read on its own, so a broken route does not hide the
//! errors of the next one. Semantic checks then run over everything that did parse. Values are
//! only assembled into a `Config` when nothing at all was wrong.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::DnsName;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use crate::FileSystem;
use crate::model::*;
use crate::raw::*;
use crate::tree::{Issue, child};
use crate::units::{Dur, describe};

mod plugins;
mod resilience;

const TOP_KEYS: &[&str] = &[
    "listeners",
    "admin",
    "routes",
    "clusters",
    "shutdown",
    "log",
    "cache",
    "plugins",
];

/// Most structural errors reported for one list item or section; past this the item is
/// probably not what the user meant at all.
const MAX_ERRORS_PER_ITEM: usize = 16;

const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Checks a parsed file. Returns the config only when no problem was found; the problems are
/// always returned (empty on success).
pub(crate) fn check(
    root: Option<Value>,
    base_dir: &Path,
    fs: &dyn FileSystem,
) -> (Option<Config>, Vec<Issue>) {
    let mut checker = Checker {
        base_dir,
        fs,
        issues: Vec::new(),
    };
    let config = checker.config(root);
    if checker.issues.is_empty() {
        (config, checker.issues)
    } else {
        (None, checker.issues)
    }
}

struct Checker<'a> {
    base_dir: &'a Path,
    fs: &'a dyn FileSystem,
    issues: Vec<Issue>,
}

/// One list item that parsed, with its key path (`routes[2]`).
struct Item<T> {
    key: String,
    raw: T,
}

// === impl Checker: structure ===

impl Checker<'_> {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue {
            key: key.into(),
            at: None,
            message: message.into(),
        });
    }

    fn config(&mut self, root: Option<Value>) -> Option<Config> {
        let Some(root) = root else {
            self.err("", "the file is empty; at least `listeners` is required");
            return None;
        };
        let Value::Object(mut top) = root else {
            self.err(
                "",
                format!(
                    "expected a mapping with `listeners`, `routes`, ... at the top, found {}",
                    describe(&root)
                ),
            );
            return None;
        };
        for key in top.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                let message = format!("unknown key `{key}`, expected one of {}", list(TOP_KEYS));
                self.issues.push(Issue {
                    key: key.clone(),
                    at: None,
                    message,
                });
            }
        }

        let listener_values = match top.remove("listeners") {
            None => {
                self.err(
                    "",
                    "missing key `listeners`: at least one listener is required",
                );
                Vec::new()
            }
            Some(v) => {
                let items = self.list(v, "listeners");
                if items.is_empty() {
                    self.err("listeners", "at least one listener is required");
                }
                items
            }
        };
        let route_values = top
            .remove("routes")
            .map(|v| self.list(v, "routes"))
            .unwrap_or_default();
        let cluster_values = top
            .remove("clusters")
            .map(|v| self.list(v, "clusters"))
            .unwrap_or_default();
        let plugin_values = top
            .remove("plugins")
            .map(|v| self.list(v, "plugins"))
            .unwrap_or_default();

        self.unique_names(&listener_values, "listeners", "listener");
        self.unique_names(&route_values, "routes", "route");
        self.unique_names(&cluster_values, "clusters", "cluster");
        self.unique_names(&plugin_values, "plugins", "plugin");
        // Names of broken clusters and plugins count too: a typo inside a cluster must not also
        // make every route that uses it fail.
        let cluster_names: Vec<String> = names(&cluster_values).into_iter().flatten().collect();
        let plugin_names: Vec<String> = names(&plugin_values).into_iter().flatten().collect();

        let listeners = self.items::<RawListener>(listener_values, "listeners");
        let routes = self.items::<RawRoute>(route_values, "routes");
        let clusters = self.items::<RawCluster>(cluster_values, "clusters");
        let plugins = self.items::<RawPlugin>(plugin_values, "plugins");
        let admin = self.section::<RawAdmin>(&mut top, "admin");
        let shutdown = self.section::<RawShutdown>(&mut top, "shutdown");
        let log = self.section::<RawLog>(&mut top, "log");
        let cache = self.section::<RawCache>(&mut top, "cache");

        let listeners: Vec<Listener> = listeners
            .into_iter()
            .map(|item| self.listener(&item.key, item.raw))
            .collect();
        self.distinct_listener_addresses(&listeners);
        let admin = self.admin(admin, &listeners);
        let routes: Vec<Route> = routes
            .into_iter()
            .map(|item| self.route(&item.key, item.raw, &cluster_names, &plugin_names))
            .collect();
        let clusters: Vec<Cluster> = clusters
            .into_iter()
            .map(|item| self.cluster(&item.key, item.raw))
            .collect();
        let shutdown = self.shutdown(shutdown);
        let log = self.log(log);
        let cache = self.cache(cache);
        let plugins: Vec<Plugin> = plugins
            .into_iter()
            .map(|item| self.plugin(&item.key, item.raw))
            .collect();

        Some(Config {
            listeners,
            admin,
            routes,
            clusters,
            shutdown,
            log,
            cache,
            plugins,
        })
    }

    /// A section that must be a list; `null` is an empty list.
    fn list(&mut self, value: Value, key: &str) -> Vec<Value> {
        match value {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => {
                self.err(key, format!("expected a list, found {}", describe(&other)));
                Vec::new()
            }
        }
    }

    fn items<T: DeserializeOwned>(&mut self, values: Vec<Value>, section: &str) -> Vec<Item<T>> {
        let mut out = Vec::new();
        for (i, value) in values.into_iter().enumerate() {
            let key = format!("{section}[{i}]");
            if let Some(raw) = self.deserialize::<T>(value, &key) {
                out.push(Item { key, raw });
            }
        }
        out
    }

    fn section<T: DeserializeOwned>(
        &mut self,
        top: &mut Map<String, Value>,
        key: &str,
    ) -> Option<T> {
        match top.remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.deserialize(v, key),
        }
    }

    /// Reads one item. After an error the offending key is removed and the item read again,
    /// so one run reports every broken key of the item, not just the first; an item with any
    /// error is then left out of the semantic checks, which would only add noise about it.
    fn deserialize<T: DeserializeOwned>(&mut self, mut value: Value, key: &str) -> Option<T> {
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_ITEM {
            let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(v) => return removed.is_empty().then_some(v),
                Err(e) => e,
            };
            let mut parts: Vec<Part> = Vec::new();
            for segment in e.path() {
                parts.push(match segment {
                    Segment::Seq { index } => Part::Index(*index),
                    Segment::Map { key } | Segment::Enum { variant: key } => Part::Key(key.clone()),
                    Segment::Unknown => Part::Unknown,
                });
            }
            let message = plain_words(&e.into_inner().to_string());
            // Point at the unknown key itself, not at the mapping that holds it.
            if let Some(field) = quoted_after(&message, "unknown field `")
                && parts.last() != Some(&Part::Key(field.to_owned()))
            {
                parts.push(Part::Key(field.to_owned()));
            }
            let full = parts.iter().fold(key.to_owned(), |acc, part| match part {
                Part::Index(i) => format!("{acc}[{i}]"),
                Part::Key(k) => child(&acc, k),
                Part::Unknown => child(&acc, "?"),
            });
            // A required key we removed ourselves was already reported as broken.
            if let Some(field) = quoted_after(&message, "missing field `")
                && removed.contains(&child(&full, field))
            {
                return None;
            }
            self.err(full.clone(), message);
            if !remove(&mut value, &parts) {
                return None;
            }
            removed.push(full);
        }
        None
    }

    fn unique_names(&mut self, values: &[Value], section: &str, what: &str) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, name) in names(values).into_iter().enumerate() {
            let Some(name) = name else { continue };
            let key = format!("{section}[{i}].name");
            if name.is_empty() {
                self.err(key, format!("a {what} name must not be empty"));
            } else if let Some(first) = seen.get(&name) {
                self.err(
                    key,
                    format!("duplicate {what} name `{name}` (first used by {section}[{first}])"),
                );
            } else {
                seen.insert(name, i);
            }
        }
    }
}

/// One step of a key path inside an item.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Key(String),
    Index(usize),
    Unknown,
}

/// Removes the key at `parts` from `value`; `false` when there is no key to remove there
/// (the item itself, a list element, or a path that cannot be followed).
fn remove(value: &mut Value, parts: &[Part]) -> bool {
    let Some((Part::Key(last), path)) = parts.split_last() else {
        return false;
    };
    let mut at = value;
    for part in path {
        let next = match (part, at) {
            (Part::Key(k), Value::Object(map)) => map.get_mut(k),
            (Part::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match at {
        Value::Object(map) => map.remove(last).is_some(),
        _ => false,
    }
}

/// The text between `prefix` and the next backtick: the name in serde's "unknown field `x`".
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('`').next())
}

/// The `name` of each item that has a text one.
fn names(values: &[Value]) -> Vec<Option<String>> {
    values
        .iter()
        .map(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Rewrites serde's wording in the words of the file: no internal type names.
fn plain_words(message: &str) -> String {
    let message = match message.find("expected struct ") {
        Some(at) => format!("{}expected a mapping", &message[..at]),
        None => message.to_owned(),
    };
    message
        .replace("invalid type: map", "invalid type: mapping")
        .replace("expected a sequence", "expected a list")
        .replace("invalid type: sequence", "invalid type: list")
}

fn list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

// === impl Checker: values ===

impl Checker<'_> {
    /// A duration that must be above zero.
    fn positive(&mut self, key: &str, value: Option<Dur>, default: Duration) -> Duration {
        let d = value.map_or(default, |d| d.0);
        if d.is_zero() {
            self.err(key, "must be greater than zero");
        }
        d
    }

    fn range(
        &mut self,
        key: &str,
        value: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
        unit: &str,
    ) -> u64 {
        let v = value.unwrap_or(default);
        if v < min || v > max {
            let message = if max == u64::MAX {
                format!("must be at least {min}{unit}, found {v}")
            } else {
                format!("must be between {min}{unit} and {max}{unit}, found {v}")
            };
            self.err(key, message);
        }
        v
    }

    /// A path in the file, resolved against the config file's directory, that must exist.
    fn file(&mut self, key: &str, written: &str) -> PathBuf {
        if written.trim().is_empty() {
            self.err(key, "a file path must not be empty");
            return PathBuf::new();
        }
        let path = Path::new(written);
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        };
        if !self.fs.is_file(&full) {
            self.err(
                key,
                format!(
                    "file `{written}` not found (looked for `{}`)",
                    full.display()
                ),
            );
        }
        full
    }

    /// A path in the file, resolved like [`Self::file`], whose content becomes part of the
    /// config (a fallback's `body_file`): read now, through the file system.
    fn read_file(&mut self, key: &str, written: &str) -> (PathBuf, Vec<u8>) {
        if written.trim().is_empty() {
            self.err(key, "a file path must not be empty");
            return (PathBuf::new(), Vec::new());
        }
        let path = Path::new(written);
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        };
        match self.fs.read(&full) {
            Ok(content) => (full, content),
            Err(e) => {
                let message = if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "file `{written}` not found (looked for `{}`)",
                        full.display()
                    )
                } else {
                    format!("file `{written}` could not be read: {e}")
                };
                self.err(key, message);
                (full, Vec::new())
            }
        }
    }

    /// `None` (after reporting) when `text` is not `IP:port`.
    fn listener_address(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.err(
                    key,
                    format!(
                        "`{text}` is not an `IP:port` address (e.g. `127.0.0.1:8080`, `[::]:443`)"
                    ),
                );
                None
            }
        }
    }
}

// === impl Checker: sections ===

impl Checker<'_> {
    fn listener(&mut self, key: &str, raw: RawListener) -> Listener {
        // Port 0 never clashes, so a bad address adds no follow-on errors.
        let address = self
            .listener_address(&child(key, "address"), &raw.address)
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let tls = raw.tls.map(|tls| {
            let tls_key = child(key, "tls");
            if tls.certificates.is_empty() {
                self.err(
                    child(&tls_key, "certificates"),
                    "at least one certificate is required",
                );
            }
            let certificates = tls
                .certificates
                .iter()
                .enumerate()
                .map(|(i, pair)| {
                    let pair_key = format!("{tls_key}.certificates[{i}]");
                    CertificatePair {
                        cert: self.file(&child(&pair_key, "cert"), &pair.cert),
                        key: self.file(&child(&pair_key, "key"), &pair.key),
                    }
                })
                .collect();
            let min_version = match tls.min_version {
                None | Some(RawTlsVersion::Tls12) => TlsVersion::Tls12,
                Some(RawTlsVersion::Tls13) => TlsVersion::Tls13,
            };
            let client_auth = tls.client_auth.map(|auth| ClientAuth {
                ca_file: self.file(&format!("{tls_key}.client_auth.ca_file"), &auth.ca_file),
                mode: match auth.mode {
                    None | Some(RawClientAuthMode::Required) => ClientAuthMode::Required,
                    Some(RawClientAuthMode::Optional) => ClientAuthMode::Optional,
                },
                forward_client_cert: auth.forward_client_cert.unwrap_or(false),
            });
            ListenerTls {
                certificates,
                min_version,
                client_auth,
            }
        });
        let limits = self.listener_limits(&child(key, "limits"), raw.limits);
        let path_normalization =
            raw.path_normalization
                .map_or_else(PathNormalization::default, |raw| PathNormalization {
                    merge_slashes: raw
                        .merge_slashes
                        .unwrap_or(PathNormalization::default().merge_slashes),
                    action: match raw.action {
                        None | Some(RawPathAction::Normalize) => PathAction::Normalize,
                        Some(RawPathAction::Reject) => PathAction::Reject,
                    },
                });
        Listener {
            name: raw.name,
            address,
            tls,
            limits,
            path_normalization,
            trust_client_headers: raw.trust_client_headers.unwrap_or(false),
        }
    }

    fn listener_limits(&mut self, key: &str, raw: Option<RawListenerLimits>) -> ListenerLimits {
        let raw = raw.unwrap_or(RawListenerLimits {
            header_read_timeout: None,
            max_header_size: None,
            max_headers: None,
            max_connections: None,
            max_connections_per_client: None,
            idle_timeout: None,
            send_timeout: None,
            http2_max_concurrent_streams: None,
            http2_max_pending_resets: None,
        });
        let k = |name: &str| child(key, name);
        let max_header_size = raw.max_header_size.map(|s| s.0);
        let header_size_key = k("max_header_size");
        let max_header_size = {
            let v = max_header_size.unwrap_or(64 * 1024);
            if !(1024..=1024 * 1024).contains(&v) {
                self.err(
                    header_size_key,
                    format!("must be between 1KiB and 1MiB, found {v} bytes"),
                );
            }
            v
        };
        let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        ListenerLimits {
            header_read_timeout: self.positive(
                &k("header_read_timeout"),
                raw.header_read_timeout,
                Duration::from_secs(10),
            ),
            max_header_size,
            max_headers: u32_of(self.range(
                &k("max_headers"),
                raw.max_headers.map(u64::from),
                100,
                1,
                1024,
                "",
            )),
            max_connections: u32_of(self.range(
                &k("max_connections"),
                raw.max_connections.map(u64::from),
                10_000,
                1,
                u64::MAX,
                "",
            )),
            max_connections_per_client: raw.max_connections_per_client.map(|v| {
                u32_of(self.range(
                    &k("max_connections_per_client"),
                    Some(u64::from(v)),
                    1,
                    1,
                    u64::MAX,
                    "",
                ))
            }),
            idle_timeout: self.positive(
                &k("idle_timeout"),
                raw.idle_timeout,
                Duration::from_secs(60),
            ),
            send_timeout: self.positive(
                &k("send_timeout"),
                raw.send_timeout,
                Duration::from_secs(30),
            ),
            http2_max_concurrent_streams: u32_of(self.range(
                &k("http2_max_concurrent_streams"),
                raw.http2_max_concurrent_streams.map(u64::from),
                100,
                1,
                u64::MAX,
                "",
            )),
            http2_max_pending_resets: u32_of(self.range(
                &k("http2_max_pending_resets"),
                raw.http2_max_pending_resets.map(u64::from),
                20,
                1,
                u64::MAX,
                "",
            )),
        }
    }

    /// Two listeners on the same port where one address covers the other cannot both bind.
    /// Port 0 asks the OS for a free port, so it never clashes.
    fn distinct_listener_addresses(&mut self, listeners: &[Listener]) {
        for (i, later) in listeners.iter().enumerate() {
            if let Some(earlier) = listeners[..i]
                .iter()
                .find(|l| overlaps(l.address, later.address))
            {
                self.err(
                    format!("listeners[{i}].address"),
                    format!(
                        "address `{}` clashes with listener `{}` on `{}`",
                        later.address, earlier.name, earlier.address
                    ),
                );
            }
        }
    }

    fn admin(&mut self, raw: Option<RawAdmin>, listeners: &[Listener]) -> Admin {
        let raw = raw.unwrap_or(RawAdmin {
            address: None,
            token_file: None,
        });
        let address = match &raw.address {
            Some(text) => self.listener_address("admin.address", text),
            None => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9901))),
        };
        let token_file = raw
            .token_file
            .as_deref()
            .map(|f| self.file("admin.token_file", f));
        let Some(address) = address else {
            return Admin {
                address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                token_file,
            };
        };
        if token_file.is_none() && !address.ip().is_loopback() {
            self.err(
                "admin.address",
                format!(
                    "admin address `{address}` is not loopback; set `admin.token_file` so that \
                     admin requests need a token"
                ),
            );
        }
        if let Some(l) = listeners.iter().find(|l| overlaps(l.address, address)) {
            self.err(
                "admin.address",
                format!(
                    "admin address `{address}` clashes with listener `{}` on `{}`",
                    l.name, l.address
                ),
            );
        }
        Admin {
            address,
            token_file,
        }
    }

    fn route(
        &mut self,
        key: &str,
        raw: RawRoute,
        cluster_names: &[String],
        plugin_names: &[String],
    ) -> Route {
        let matcher = self.route_match(&child(key, "match"), raw.matcher);
        if !cluster_names.contains(&raw.cluster) {
            let known = if cluster_names.is_empty() {
                "no clusters are defined".to_owned()
            } else {
                let names: Vec<&str> = cluster_names.iter().map(String::as_str).collect();
                format!("defined: {}", list(&names))
            };
            self.err(
                child(key, "cluster"),
                format!("no cluster named `{}` ({known})", raw.cluster),
            );
        }
        let timeout = self.positive(&child(key, "timeout"), raw.timeout, Duration::from_secs(15));
        Route {
            name: raw.name,
            matcher,
            cluster: raw.cluster,
            timeout,
            max_body_size: raw.max_body_size.map(|s| s.0),
            retry: raw
                .retry
                .map(|r| self.retry(&child(key, "retry"), r, timeout)),
            fallback: raw
                .fallback
                .map(|f| self.fallback(&child(key, "fallback"), f)),
            rate_limit: raw
                .rate_limit
                .map(|r| self.rate_limit(&child(key, "rate_limit"), r)),
            fault: raw.fault.map(|f| self.fault(&child(key, "fault"), f)),
            plugins: self.route_plugins(
                &child(key, "plugins"),
                raw.plugins.unwrap_or_default(),
                plugin_names,
            ),
        }
    }

    fn route_match(&mut self, key: &str, raw: Option<RawMatch>) -> RouteMatch {
        let Some(raw) = raw else {
            return RouteMatch {
                host: None,
                path: PathMatch::Prefix("/".into()),
                methods: Vec::new(),
                headers: Vec::new(),
            };
        };
        let host = raw.host.as_deref().and_then(|h| match host_pattern(h) {
            Ok(host) => Some(host),
            Err(message) => {
                self.err(child(key, "host"), message);
                None
            }
        });
        let path = match (raw.path, raw.path_prefix) {
            (Some(_), Some(_)) => {
                self.err(
                    child(key, "path_prefix"),
                    "`path` and `path_prefix` cannot both be given; use `path` for one exact path \
                     or `path_prefix` for a subtree",
                );
                PathMatch::Prefix("/".into())
            }
            (Some(p), None) => {
                self.http_path(&child(key, "path"), &p);
                PathMatch::Exact(p)
            }
            (None, Some(p)) => {
                self.http_path(&child(key, "path_prefix"), &p);
                PathMatch::Prefix(p)
            }
            (None, None) => PathMatch::Prefix("/".into()),
        };
        let methods = raw
            .methods
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                if !is_token(&m) {
                    self.err(
                        format!("{key}.methods[{i}]"),
                        format!("`{m}` is not a valid HTTP method"),
                    );
                }
                m.to_ascii_uppercase()
            })
            .collect();
        let headers = raw
            .headers
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let name = self.header_name(&format!("{key}.headers[{i}].name"), &h.name);
                let value = h.value.map(|v| v.0);
                if let Some(v) = &value
                    && v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
                {
                    // No request can carry such a value, so the route could never match.
                    self.err(
                        format!("{key}.headers[{i}].value"),
                        "a header value must not contain control characters or line breaks",
                    );
                } else if let Some(v) = &value
                    && v.trim_matches([' ', '\t']) != v
                {
                    // HTTP parsers strip surrounding whitespace from field values (RFC 9110
                    // §5.5), so a value that keeps it could never match.
                    self.err(
                        format!("{key}.headers[{i}].value"),
                        "a header value must not start or end with spaces or tabs",
                    );
                }
                HeaderMatch { name, value }
            })
            .collect();
        RouteMatch {
            host,
            path,
            methods,
            headers,
        }
    }

    fn http_path(&mut self, key: &str, path: &str) {
        if !path.starts_with('/') {
            self.err(key, format!("`{path}` must start with `/`"));
        } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.err(
                key,
                format!("`{path}` must not contain spaces or control characters"),
            );
        } else if path.contains(['?', '#']) {
            // Routing matches the path alone; a query or fragment here could never match.
            self.err(
                key,
                format!("`{path}` must be a path only, without `?` query or `#` fragment"),
            );
        }
    }

    fn header_name(&mut self, key: &str, name: &str) -> String {
        if !is_token(name) {
            self.err(key, format!("`{name}` is not a valid header name"));
        }
        name.to_ascii_lowercase()
    }

    fn cluster(&mut self, key: &str, raw: RawCluster) -> Cluster {
        let k = |name: &str| child(key, name);
        let lb = match raw.lb.unwrap_or(RawLbPolicy::LeastRequest) {
            RawLbPolicy::RoundRobin => LbPolicy::RoundRobin,
            RawLbPolicy::Random => LbPolicy::Random,
            RawLbPolicy::LeastRequest => LbPolicy::LeastRequest,
            RawLbPolicy::PeakEwma => LbPolicy::PeakEwma,
            RawLbPolicy::RingHash => LbPolicy::RingHash,
            RawLbPolicy::Maglev => LbPolicy::Maglev,
        };
        let hashing = matches!(lb, LbPolicy::RingHash | LbPolicy::Maglev);
        let lb_word = lb.as_str();
        let hash_on = match raw.hash_on {
            None => {
                if hashing {
                    self.err(
                        k("lb"),
                        format!(
                            "`{lb_word}` needs `hash_on`: `{{ header: NAME }}`, `{{ cookie: NAME }}` \
                             or `client_ip`"
                        ),
                    );
                }
                None
            }
            Some(h) => {
                if !hashing {
                    self.err(
                        k("hash_on"),
                        format!(
                            "`hash_on` only applies to `ring-hash` and `maglev`, not `{lb_word}`"
                        ),
                    );
                }
                Some(match h {
                    RawHashOn::Header(name) => {
                        HashOn::Header(self.header_name(&format!("{key}.hash_on.header"), &name))
                    }
                    RawHashOn::Cookie(name) => {
                        if !is_token(&name) {
                            self.err(
                                format!("{key}.hash_on.cookie"),
                                format!("`{name}` is not a valid cookie name"),
                            );
                        }
                        HashOn::Cookie(name)
                    }
                    RawHashOn::ClientIp => HashOn::ClientIp,
                })
            }
        };

        let endpoints: Vec<Endpoint> = raw
            .endpoints
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, e)| self.endpoint(&format!("{key}.endpoints[{i}]"), e))
            .collect();
        let discovery = raw.discovery.map(|d| {
            let dns_key = format!("{key}.discovery.dns");
            if let Err(message) = host_port(&d.dns) {
                self.err(dns_key, message);
            }
            DnsDiscovery {
                dns: d.dns,
                refresh: self.positive(
                    &format!("{key}.discovery.refresh"),
                    d.refresh,
                    Duration::from_secs(10),
                ),
            }
        });
        if endpoints.is_empty() && discovery.is_none() {
            self.err(
                key,
                "a cluster needs `endpoints` or `discovery`; it has neither, so it could never \
                 serve a request",
            );
        }
        let tls = raw.tls.map(|tls| {
            let sni = tls.sni.to_ascii_lowercase();
            if DnsName::try_from(sni.as_str()).is_err() {
                self.err(
                    format!("{key}.tls.sni"),
                    format!("`{}` is not a valid DNS name", tls.sni),
                );
            }
            let ca_file = tls
                .ca_file
                .as_deref()
                .map(|f| self.file(&format!("{key}.tls.ca_file"), f));
            let client_cert = match (tls.cert.as_deref(), tls.key.as_deref()) {
                (Some(cert), Some(key_file)) => Some(CertificatePair {
                    cert: self.file(&format!("{key}.tls.cert"), cert),
                    key: self.file(&format!("{key}.tls.key"), key_file),
                }),
                (None, None) => None,
                (Some(_), None) => {
                    self.err(
                        format!("{key}.tls.key"),
                        "`cert` needs its private key in `key`",
                    );
                    None
                }
                (None, Some(_)) => {
                    self.err(
                        format!("{key}.tls.cert"),
                        "`key` needs its certificate chain in `cert`",
                    );
                    None
                }
            };
            UpstreamTls {
                sni,
                ca_file,
                client_cert,
            }
        });
        Cluster {
            name: raw.name,
            lb,
            hash_on,
            endpoints,
            discovery,
            connect_timeout: self.positive(
                &k("connect_timeout"),
                raw.connect_timeout,
                Duration::from_secs(2),
            ),
            idle_timeout: self.positive(
                &k("idle_timeout"),
                raw.idle_timeout,
                Duration::from_secs(30),
            ),
            max_idle_per_endpoint: raw.max_idle_per_endpoint.unwrap_or(64),
            protocol: match raw.protocol.unwrap_or(RawProtocol::Http1) {
                RawProtocol::Http1 => UpstreamProtocol::Http1,
                RawProtocol::Http2 => UpstreamProtocol::Http2,
            },
            tls,
            health_check: raw
                .health_check
                .map(|h| self.health_check(&k("health_check"), h)),
            outlier_detection: self
                .outlier_detection(&k("outlier_detection"), raw.outlier_detection),
            circuit_breaker: raw
                .circuit_breaker
                .map(|b| self.circuit_breaker(&k("circuit_breaker"), b)),
            limits: self.cluster_limits(&k("limits"), raw.limits),
            panic_threshold: raw.panic_threshold.map_or(0.5, |r| r.0),
            panic_mode: match raw.panic_mode.unwrap_or(RawPanicMode::Spread) {
                RawPanicMode::Spread => PanicMode::Spread,
                RawPanicMode::FailFast => PanicMode::FailFast,
            },
        }
    }

    fn endpoint(&mut self, key: &str, raw: RawEndpoint) -> Endpoint {
        let address_key = child(key, "address");
        let address = match raw.address.trim().parse::<SocketAddr>() {
            Ok(a) => {
                if a.port() == 0 {
                    self.err(
                        address_key,
                        format!("`{a}` has port 0; an endpoint needs a real port"),
                    );
                }
                a
            }
            Err(_) => {
                let message = if host_port(&raw.address).is_ok() {
                    format!(
                        "`{}` is a host name; static endpoints must be `IP:port`, use \
                         `discovery.dns` to resolve names",
                        raw.address
                    )
                } else {
                    format!("`{}` is not an `IP:port` address", raw.address)
                };
                self.err(address_key, message);
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
            }
        };
        let weight = self.range(
            &child(key, "weight"),
            raw.weight.map(u64::from),
            1,
            1,
            128,
            "",
        );
        let priority = self.range(
            &child(key, "priority"),
            raw.priority.map(u64::from),
            0,
            0,
            16,
            "",
        );
        Endpoint {
            address,
            weight: u32::try_from(weight).unwrap_or(1),
            priority: u32::try_from(priority).unwrap_or(0),
        }
    }

    fn shutdown(&mut self, raw: Option<RawShutdown>) -> Shutdown {
        let raw = raw.unwrap_or(RawShutdown {
            drain_delay: None,
            drain_timeout: None,
        });
        Shutdown {
            // Zero is fine here: it means "stop accepting at once".
            drain_delay: raw.drain_delay.map_or(Duration::from_secs(5), |d| d.0),
            drain_timeout: self.positive(
                "shutdown.drain_timeout",
                raw.drain_timeout,
                Duration::from_secs(30),
            ),
        }
    }

    fn log(&mut self, raw: Option<RawLog>) -> Log {
        let raw = raw.unwrap_or(RawLog {
            level: None,
            access_log: None,
        });
        let level = raw.level.unwrap_or_else(|| "info".to_owned());
        if !is_level_filter(&level) {
            self.err(
                "log.level",
                format!(
                    "`{level}` is not a log level; use one of {} or `target=level` directives \
                     separated by commas",
                    list(LOG_LEVELS)
                ),
            );
        }
        Log {
            level,
            access_log: raw.access_log.unwrap_or(true),
        }
    }
}

/// A duration as the file writes it (`250ms`, `5m`), for messages.
fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Whether two bind addresses would fight over the same socket.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || b.port() == 0 || a.port() != b.port() {
        return false;
    }
    let same_family = a.is_ipv4() == b.is_ipv4();
    a.ip() == b.ip() || (same_family && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}

/// An RFC 9110 token (methods, header names, cookie names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A route host: `api.example.com`, `*.example.com`, an IP, or `[v6]`. Lower-cased.
fn host_pattern(text: &str) -> Result<HostMatch, String> {
    let lower = text.to_ascii_lowercase();
    let bad = |why: &str| format!("`{text}` is not a valid host pattern: {why}");
    if let Some(suffix) = lower.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err(bad("only one leading `*.` wildcard is allowed"));
        }
        if !is_host(suffix) || suffix.parse::<IpAddr>().is_ok() || suffix.starts_with('[') {
            return Err(bad("the part after `*.` must be a DNS name"));
        }
        return Ok(HostMatch::Suffix(suffix.to_owned()));
    }
    if lower.contains('*') {
        return Err(bad(
            "only a leading `*.` wildcard is allowed, as in `*.example.com`",
        ));
    }
    if lower.contains(':') && !lower.starts_with('[') {
        return Err(bad("give the host without a port"));
    }
    if !is_host(&lower) {
        return Err(bad("expected a DNS name or an IP address"));
    }
    Ok(HostMatch::Exact(lower))
}

/// A DNS name or an IP address (IPv6 in brackets).
fn is_host(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    s.parse::<IpAddr>().is_ok() || (!s.ends_with('.') && DnsName::try_from(s).is_ok())
}

/// `host:port` for DNS discovery.
fn host_port(text: &str) -> Result<(), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` must be `host:port`, e.g. `web.internal:8080`"
        ));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("`{text}` has no valid port (1 to 65535) after `:`")),
    }
    if !is_host(host) {
        return Err(format!("`{host}` in `{text}` is not a valid host name"));
    }
    Ok(())
}

/// A level word, or comma-separated `level` / `target=level` directives. Bare targets are
/// refused even though `EnvFilter` takes them, because a typo like `inf` would silently turn
/// on trace logging for a target named `inf`.
fn is_level_filter(s: &str) -> bool {
    let is_level = |w: &str| LOG_LEVELS.contains(&w.trim().to_ascii_lowercase().as_str());
    !s.trim().is_empty()
        && s.split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((target, level)) => {
                    let target = target.trim();
                    !target.is_empty()
                        && target
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_:-.".contains(c))
                        && is_level(level)
                }
                None => is_level(directive),
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_allow_only_a_leading_wildcard_and_lower_case() {
        assert_eq!(
            host_pattern("API.Example.com"),
            Ok(HostMatch::Exact("api.example.com".into()))
        );
        assert_eq!(
            host_pattern("*.Example.com"),
            Ok(HostMatch::Suffix("example.com".into()))
        );
        assert_eq!(
            host_pattern("127.0.0.1"),
            Ok(HostMatch::Exact("127.0.0.1".into()))
        );
        assert!(host_pattern("api.*.com").is_err());
        assert!(host_pattern("*example.com").is_err());
        assert!(host_pattern("*.*.com").is_err());
        assert!(host_pattern("api.example.com:8080").is_err());
        assert!(host_pattern("bad host").is_err());
        // Found by fuzzing: no request host can match a wildcard over an IP address.
        assert!(host_pattern("*.1.2.3.4").is_err());
        assert!(host_pattern("*.[::1]").is_err());
    }

    #[test]
    fn log_filters_accept_levels_and_directives_only() {
        assert!(is_level_filter("info"));
        assert!(is_level_filter("WARN"));
        assert!(is_level_filter("info,levee=debug,hyper::proto=warn"));
        assert!(!is_level_filter("loud"));
        assert!(!is_level_filter("levee"));
        assert!(!is_level_filter(""));
        assert!(!is_level_filter("levee=loud"));
    }

    #[test]
    fn unspecified_addresses_overlap_specific_ones_on_the_same_port() {
        let a: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:81".parse().unwrap();
        let z: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(overlaps(a, b));
        assert!(!overlaps(b, c));
        assert!(!overlaps(z, z));
    }
}
