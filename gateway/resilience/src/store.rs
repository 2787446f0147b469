//! The response store: last-good responses for serve-stale, and the plugins' byte cache.
//!
//! One size-capped LRU holds both kinds of entry, so a single `cache.max_size` bounds the memory
//! of the whole feature:
//!
//! - **Responses** ([`ResponseStore::put`], [`ResponseStore::get`]) are whole upstream responses
//!   kept by the gateway (a route with `fallback.stale`) or at a plugin's request
//!   (`proceed-and-store`). Each reader passes the oldest age it accepts; an older copy is a miss
//!   but stays stored, since another route may accept it.
//! - **Plugin bytes** ([`ResponseStore::put_bytes`], [`ResponseStore::get_bytes`]) back the
//!   `cache-get` / `cache-put` host imports. Each plugin has its own namespace, so plugins never
//!   see each other's keys, and a namespace may be capped below the store size
//!   ([`ResponseStore::with_namespace_max_size`]) so one busy plugin cannot push everything
//!   else out: at its cap, a namespace evicts its own least recently used entries first.
//!
//! Every operation takes one uncontended-in-practice `Mutex` and is O(1) apart from the
//! evictions it causes (hashlink's linked hash map keeps the LRU order).
//!
//! # Size accounting
//!
//! An entry's size is its key and body bytes, its header names and values plus 32 bytes per
//! header (HPACK's per-field overhead, a fair guess at `HeaderMap`'s), plus [`ENTRY_OVERHEAD`]
//! for the map node and bookkeeping. `max_entry_size` applies to the body (or plugin value)
//! alone, as the config documents it.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hashlink::LinkedHashMap;
use http::HeaderMap;
use tokio::time::Instant;

/// Bytes counted for each entry on top of its keys, headers and body: the map node, the `Arc`
/// and the `Bytes` handles, rounded up.
pub const ENTRY_OVERHEAD: u64 = 128;

/// Bytes counted per header on top of its name and value (as HPACK counts a header field).
const HEADER_OVERHEAD: u64 = 32;

/// A stored upstream response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// Status code.
    pub status: u16,
    /// Response headers, as they will be served.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When the response was received; its age is measured from here.
    pub stored_at: Instant,
}

/// Counters shown in `/clusters` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Entries held now, of both kinds.
    pub entries: u64,
    /// Bytes held now, as accounted (see the module docs).
    pub bytes: u64,
    /// Lookups that found a fresh entry.
    pub hits: u64,
    /// Lookups that found nothing, or only a too-old or expired entry.
    pub misses: u64,
    /// Entries dropped to make room (not counting replacements and expiries).
    pub evictions: u64,
}

/// The shared response store. Shared as an `Arc` by the request path and the plugin host.
#[derive(Debug)]
pub struct ResponseStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_size: u64,
    max_entry_size: u64,
    max_namespace_size: u64,
    /// Every entry, least recently used first.
    entries: LinkedHashMap<Key, Entry, RandomState>,
    /// Per plugin namespace: its bytes and its own LRU order, for the namespace cap.
    namespaces: HashMap<Box<str>, Namespace>,
    stats: StoreStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Response(Box<str>),
    Plugin(Box<str>, Box<[u8]>),
}

#[derive(Debug)]
struct Entry {
    size: u64,
    value: Value,
}

#[derive(Debug)]
enum Value {
    Response(Arc<StoredResponse>),
    Bytes {
        value: Bytes,
        expires_at: Option<Instant>,
    },
}

#[derive(Debug, Default)]
struct Namespace {
    bytes: u64,
    order: LinkedHashMap<Box<[u8]>, (), RandomState>,
}

// === impl StoredResponse ===

impl StoredResponse {
    /// A response stored now.
    pub fn new(status: u16, headers: HeaderMap, body: Bytes) -> Self {
        StoredResponse {
            status,
            headers,
            body,
            stored_at: Instant::now(),
        }
    }

    /// Bytes this response counts for in the store under `key` (see the module docs).
    pub fn accounted_size(&self, key: &str) -> u64 {
        let headers: u64 = self
            .headers
            .iter()
            .map(|(name, value)| len_u64(name.as_str().len() + value.len()) + HEADER_OVERHEAD)
            .sum();
        len_u64(key.len()) + len_u64(self.body.len()) + headers + ENTRY_OVERHEAD
    }
}

// === impl ResponseStore ===

impl ResponseStore {
    /// An empty store of at most `max_size` bytes, keeping bodies of at most `max_entry_size`
    /// bytes. Config defaults 64 MiB and 1 MiB. Namespaces are capped only by `max_size`.
    pub fn new(max_size: u64, max_entry_size: u64) -> Self {
        ResponseStore {
            inner: Mutex::new(Inner {
                max_size,
                max_entry_size,
                max_namespace_size: max_size,
                entries: LinkedHashMap::with_hasher(RandomState::new()),
                namespaces: HashMap::new(),
                stats: StoreStats::default(),
            }),
        }
    }

    /// Caps each plugin namespace at `max_namespace_size` bytes (default: the store size).
    pub fn with_namespace_max_size(self, max_namespace_size: u64) -> Self {
        self.lock().max_namespace_size = max_namespace_size;
        self
    }

    /// Applies new limits (a reload), evicting least recently used entries down to them.
    pub fn set_limits(&self, max_size: u64, max_entry_size: u64, max_namespace_size: u64) {
        let mut inner = self.lock();
        inner.max_size = max_size;
        inner.max_entry_size = max_entry_size;
        inner.max_namespace_size = max_namespace_size;
        inner.evict_until_fits(0);
        let names: Vec<Box<str>> = inner.namespaces.keys().cloned().collect();
        for name in names {
            inner.evict_namespace_until_fits(&name, 0);
        }
    }

    /// Stores `response` under `key`, replacing any earlier one and evicting least recently
    /// used entries to make room. `false` (nothing changed) when the body is over
    /// `max_entry_size` or the entry would not fit in the whole store.
    pub fn put(&self, key: &str, response: StoredResponse) -> bool {
        let size = response.accounted_size(key);
        let mut inner = self.lock();
        if len_u64(response.body.len()) > inner.max_entry_size || size > inner.max_size {
            return false;
        }
        let key = Key::Response(key.into());
        inner.remove(&key);
        inner.evict_until_fits(size);
        inner.stats.bytes += size;
        inner.stats.entries += 1;
        inner.entries.insert(
            key,
            Entry {
                size,
                value: Value::Response(Arc::new(response)),
            },
        );
        true
    }

    /// The response stored under `key` and its age, if it is at most `max_age` old.
    ///
    /// A hit makes the entry the most recently used. A too-old entry is a miss but is kept.
    pub fn get(&self, key: &str, max_age: Duration) -> Option<(Arc<StoredResponse>, Duration)> {
        let now = Instant::now();
        let mut inner = self.lock();
        let key = Key::Response(key.into());
        let found = match inner.entries.get(&key) {
            Some(Entry {
                value: Value::Response(response),
                ..
            }) => {
                let age = now.saturating_duration_since(response.stored_at);
                (age <= max_age).then(|| (Arc::clone(response), age))
            }
            _ => None,
        };
        if found.is_some() {
            inner.entries.to_back(&key);
            inner.stats.hits += 1;
        } else {
            inner.stats.misses += 1;
        }
        found
    }

    /// Stores a plugin's `value` under `key` in `namespace`, for `ttl` (`None`: until evicted).
    ///
    /// `false` (nothing changed) when the value is over `max_entry_size` or the entry would not
    /// fit in the namespace or the store. At its cap, a namespace evicts its own least recently
    /// used entries before the store evicts anyone's.
    pub fn put_bytes(
        &self,
        namespace: &str,
        key: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> bool {
        self.put_bytes_capped(namespace, key, value, ttl, u32::MAX)
    }

    /// [`ResponseStore::put_bytes`], keeping at most `max_entries` entries in `namespace`: at
    /// the cap, the namespace's least recently used entry goes first.
    pub fn put_bytes_capped(
        &self,
        namespace: &str,
        key: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
        max_entries: u32,
    ) -> bool {
        let size = len_u64(namespace.len() + 2 * key.len() + value.len()) + ENTRY_OVERHEAD;
        let now = Instant::now();
        let mut inner = self.lock();
        if len_u64(value.len()) > inner.max_entry_size
            || size > inner.max_size
            || size > inner.max_namespace_size
        {
            return false;
        }
        let full_key = Key::Plugin(namespace.into(), key.into());
        inner.remove(&full_key);
        inner.evict_namespace_entries(namespace, max_entries);
        inner.evict_namespace_until_fits(namespace, size);
        inner.evict_until_fits(size);
        let ns = inner.namespaces.entry(namespace.into()).or_default();
        ns.bytes += size;
        ns.order.insert(key.into(), ());
        inner.stats.bytes += size;
        inner.stats.entries += 1;
        let expires_at = ttl.and_then(|ttl| now.checked_add(ttl));
        inner.entries.insert(
            full_key,
            Entry {
                size,
                value: Value::Bytes { value, expires_at },
            },
        );
        true
    }

    /// A plugin's value under `key` in `namespace`, unless missing or expired.
    ///
    /// A hit makes the entry the most recently used; an expired entry is removed.
    pub fn get_bytes(&self, namespace: &str, key: &[u8]) -> Option<Bytes> {
        let now = Instant::now();
        let mut inner = self.lock();
        let full_key = Key::Plugin(namespace.into(), key.into());
        let found = match inner.entries.get(&full_key) {
            Some(Entry {
                value: Value::Bytes { value, expires_at },
                ..
            }) => {
                if expires_at.is_some_and(|at| now >= at) {
                    Err(())
                } else {
                    Ok(value.clone())
                }
            }
            _ => return inner.miss(),
        };
        match found {
            Ok(value) => {
                inner.entries.to_back(&full_key);
                if let Some(ns) = inner.namespaces.get_mut(namespace) {
                    ns.order.to_back(key);
                }
                inner.stats.hits += 1;
                Some(value)
            }
            Err(()) => {
                inner.remove(&full_key);
                inner.miss()
            }
        }
    }

    /// Drops every entry of a plugin namespace (the plugin was removed).
    pub fn remove_namespace(&self, namespace: &str) {
        let mut inner = self.lock();
        let Some(ns) = inner.namespaces.remove(namespace) else {
            return;
        };
        for (key, ()) in ns.order {
            if let Some(entry) = inner.entries.remove(&Key::Plugin(namespace.into(), key)) {
                inner.stats.bytes -= entry.size;
                inner.stats.entries -= 1;
            }
        }
    }

    /// Entries, bytes, hits, misses and evictions.
    pub fn stats(&self) -> StoreStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Inner ===

impl Inner {
    fn miss<T>(&mut self) -> Option<T> {
        self.stats.misses += 1;
        None
    }

    /// Removes `key` with its accounting; not counted as an eviction.
    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.forget(key, &entry);
        Some(entry)
    }

    /// Updates the counters and namespace order for an entry already out of `entries`.
    fn forget(&mut self, key: &Key, entry: &Entry) {
        self.stats.bytes -= entry.size;
        self.stats.entries -= 1;
        if let Key::Plugin(namespace, key) = key
            && let Some(ns) = self.namespaces.get_mut(namespace)
        {
            ns.order.remove(key);
            ns.bytes -= entry.size;
            if ns.order.is_empty() {
                self.namespaces.remove(namespace);
            }
        }
    }

    /// Evicts least recently used entries until `incoming` more bytes fit in the store.
    fn evict_until_fits(&mut self, incoming: u64) {
        while self.stats.bytes + incoming > self.max_size {
            let Some((key, entry)) = self.entries.pop_front() else {
                return;
            };
            self.forget(&key, &entry);
            self.stats.evictions += 1;
        }
    }

    /// Evicts the namespace's least recently used entries until `incoming` more bytes fit in it.
    /// Evicts `namespace`'s least recently used entries until one more fits under
    /// `max_entries`.
    fn evict_namespace_entries(&mut self, namespace: &str, max_entries: u32) {
        let max = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        loop {
            let Some(ns) = self.namespaces.get_mut(namespace) else {
                return;
            };
            if ns.order.len() < max {
                return;
            }
            let Some(key) = ns.order.front().map(|(key, ())| key.clone()) else {
                return;
            };
            if self.remove(&Key::Plugin(namespace.into(), key)).is_none() {
                return;
            }
            self.stats.evictions += 1;
        }
    }

    fn evict_namespace_until_fits(&mut self, namespace: &str, incoming: u64) {
        loop {
            let Some(ns) = self.namespaces.get_mut(namespace) else {
                return;
            };
            if ns.bytes + incoming <= self.max_namespace_size {
                return;
            }
            let Some(key) = ns.order.front().map(|(key, ())| key.clone()) else {
                return;
            };
            if self.remove(&Key::Plugin(namespace.into(), key)).is_none() {
                // The order and the entries always agree; never loop if they did not.
                return;
            }
            self.stats.evictions += 1;
        }
    }
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http::header::CONTENT_TYPE;

    use super::*;

    #[test]
    fn a_namespace_keeps_at_most_its_entry_cap() {
        let store = ResponseStore::new(1 << 20, 1 << 10);
        for i in 0..5u8 {
            assert!(store.put_bytes_capped("p", &[i], Bytes::from_static(b"v"), None, 3));
        }
        let kept: Vec<u8> = (0..5u8)
            .filter(|i| store.get_bytes("p", &[*i]).is_some())
            .collect();
        assert_eq!(kept, vec![2, 3, 4], "the least recently used went first");
        // Another namespace has its own count.
        assert!(store.put_bytes_capped("q", b"x", Bytes::from_static(b"v"), None, 3));
        assert!(store.get_bytes("p", &[4]).is_some());
    }

    fn response(body_len: usize) -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        StoredResponse::new(200, headers, Bytes::from(vec![b'x'; body_len]))
    }

    /// A store that holds exactly `n` responses of `body_len` bytes under one-letter keys.
    fn store_for(n: u64, body_len: usize) -> ResponseStore {
        let one = response(body_len).accounted_size("k");
        ResponseStore::new(n * one, 1 << 20)
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn put_and_get_a_response() {
        let store = ResponseStore::new(1 << 20, 1 << 10);
        assert!(store.put("GET /a", response(100)));
        let (got, age) = store.get("GET /a", MINUTE).expect("stored");
        assert_eq!(
            (got.status, got.body.len(), age),
            (200, 100, Duration::ZERO)
        );
        assert_eq!(got.headers[CONTENT_TYPE], "text/plain");
        assert!(store.get("GET /b", MINUTE).is_none());
        let stats = store.stats();
        assert_eq!((stats.entries, stats.hits, stats.misses), (1, 1, 1));
        assert_eq!(stats.bytes, response(100).accounted_size("GET /a"));
    }

    #[tokio::test(start_paused = true)]
    async fn get_refuses_copies_older_than_max_age_but_keeps_them() {
        let store = ResponseStore::new(1 << 20, 1 << 10);
        assert!(store.put("k", response(10)));
        tokio::time::advance(Duration::from_secs(30)).await;
        let (_, age) = store.get("k", MINUTE).expect("30s old is fine");
        assert_eq!(age, Duration::from_secs(30));
        assert!(store.get("k", Duration::from_secs(10)).is_none());
        assert!(
            store.get("k", MINUTE).is_some(),
            "still stored for readers accepting it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn entry_over_max_entry_size_is_refused() {
        let store = ResponseStore::new(1 << 20, 100);
        assert!(store.put("k", response(100)));
        assert!(!store.put("k", response(101)));
        assert_eq!(
            store.get("k", MINUTE).expect("old copy kept").0.body.len(),
            100
        );
        assert!(!store.put_bytes("p", b"k", Bytes::from(vec![0; 101]), None));
        let tiny = ResponseStore::new(10, 100);
        assert!(!tiny.put("k", response(5)), "bigger than the whole store");
        assert_eq!(tiny.stats().entries, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn evicts_least_recently_used_by_size() {
        let store = store_for(3, 100);
        for key in ["a", "b", "c"] {
            assert!(store.put(key, response(100)));
        }
        assert!(
            store.get("a", MINUTE).is_some(),
            "a is now most recently used"
        );
        assert!(store.put("d", response(100)));
        assert!(
            store.get("b", MINUTE).is_none(),
            "b was least recently used"
        );
        for key in ["a", "c", "d"] {
            assert!(store.get(key, MINUTE).is_some(), "{key} kept");
        }
        let stats = store.stats();
        assert_eq!((stats.entries, stats.evictions), (3, 1));
        assert!(stats.bytes <= 3 * response(100).accounted_size("k"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_big_entry_evicts_several_small_ones() {
        let one = response(100).accounted_size("k");
        let store = ResponseStore::new(4 * one, 1 << 20);
        for key in ["a", "b", "c", "d"] {
            assert!(store.put(key, response(100)));
        }
        let medium = response(usize::try_from(one + 50).expect("small"));
        assert!(store.put("e", medium));
        assert!(store.get("a", MINUTE).is_none());
        assert!(store.get("b", MINUTE).is_none());
        assert!(store.get("c", MINUTE).is_some());
        assert_eq!(store.stats().evictions, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn replacing_a_key_is_not_an_eviction() {
        let store = store_for(2, 100);
        assert!(store.put("a", response(100)));
        assert!(store.put("a", response(90)));
        let stats = store.stats();
        assert_eq!((stats.entries, stats.evictions), (1, 0));
        assert_eq!(stats.bytes, response(90).accounted_size("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn plugin_bytes_are_namespaced_and_expire() {
        let store = ResponseStore::new(1 << 20, 1 << 10);
        assert!(store.put_bytes("auth", b"token", Bytes::from_static(b"v1"), Some(MINUTE)));
        assert!(store.put_bytes("other", b"token", Bytes::from_static(b"v2"), None));
        assert_eq!(
            store.get_bytes("auth", b"token").as_deref(),
            Some(&b"v1"[..])
        );
        assert_eq!(
            store.get_bytes("other", b"token").as_deref(),
            Some(&b"v2"[..])
        );
        assert!(
            store.get("token", MINUTE).is_none(),
            "responses are a separate namespace"
        );

        tokio::time::advance(MINUTE).await;
        assert!(
            store.get_bytes("auth", b"token").is_none(),
            "expired at its ttl"
        );
        assert!(store.get_bytes("other", b"token").is_some(), "no ttl: kept");
        assert_eq!(store.stats().entries, 1, "the expired entry was removed");
    }

    #[tokio::test(start_paused = true)]
    async fn namespace_cap_evicts_its_own_entries_first() {
        let entry = |ns: &str| len_u64(ns.len() + 2 + 10) + ENTRY_OVERHEAD;
        let store = ResponseStore::new(1 << 20, 1 << 10).with_namespace_max_size(2 * entry("p"));
        assert!(store.put("page", response(10)));
        assert!(store.put_bytes("q", b"1", Bytes::from(vec![0; 10]), None));
        assert!(store.put_bytes("p", b"1", Bytes::from(vec![0; 10]), None));
        assert!(store.put_bytes("p", b"2", Bytes::from(vec![0; 10]), None));
        assert!(
            store.get_bytes("p", b"1").is_some(),
            "1 is now most recent in p"
        );
        assert!(store.put_bytes("p", b"3", Bytes::from(vec![0; 10]), None));
        assert!(
            store.get_bytes("p", b"2").is_none(),
            "p's least recently used went"
        );
        assert!(store.get_bytes("p", b"1").is_some());
        assert!(store.get_bytes("p", b"3").is_some());
        assert!(
            store.get_bytes("q", b"1").is_some(),
            "other namespaces untouched"
        );
        assert!(store.get("page", MINUTE).is_some(), "responses untouched");
        assert_eq!(store.stats().evictions, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_and_responses_share_the_size_cap() {
        let one = response(100).accounted_size("k");
        let store = ResponseStore::new(2 * one, 1 << 20);
        assert!(store.put("k", response(100)));
        assert!(store.put_bytes("p", b"x", Bytes::from(vec![0; 100]), None));
        assert!(store.put("j", response(100)));
        assert!(
            store.get("k", MINUTE).is_none(),
            "oldest entry went for the new one"
        );
        assert!(store.stats().bytes <= 2 * one);
    }

    #[tokio::test(start_paused = true)]
    async fn remove_namespace_and_set_limits() {
        let store = ResponseStore::new(1 << 20, 1 << 10);
        for k in [b"a", b"b"] {
            assert!(store.put_bytes("p", k, Bytes::from_static(b"v"), None));
        }
        assert!(store.put("r1", response(100)));
        assert!(store.put("r2", response(100)));
        store.remove_namespace("p");
        assert!(store.get_bytes("p", b"a").is_none());
        assert_eq!(store.stats().entries, 2);

        store.set_limits(response(100).accounted_size("r2"), 1 << 10, 1 << 10);
        assert!(store.get("r1", MINUTE).is_none());
        assert!(store.get("r2", MINUTE).is_some());
        assert_eq!(store.stats().entries, 1);
    }
}
