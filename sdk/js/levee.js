// Levee plugin helpers for JavaScript guests.
//
// A plugin is an ES module that exports `policy` (the WIT `levee:policy/policy` interface) and
// may import the host functions from `levee:policy/host@0.1.0`. This module holds the small
// conveniences every plugin needs: header lookup, byte/text conversion, and constructors for
// the WIT variants, so plugin code reads like the Rust SDK's.
//
// How WIT values look in JavaScript (componentize-js / jco conventions):
// - records are objects with camelCase fields (`pathWithQuery`, `healthyEndpoints`);
// - variants are `{ tag: 'kebab-case-name', val }` (no `val` for cases without a payload);
// - enums are their kebab-case strings (`'connect-failure'`, `'half-open'`);
// - flags are objects of booleans (`{ onRequest: true, onResponse: false, ... }`);
// - `list<u8>` is a `Uint8Array`, tuples are arrays, `option<T>` is `T | undefined`;
// - `u64`/`s64` are `BigInt` (`nowMs()` returns one, `counterAdd` takes one);
// - a `result<T, string>` export returns `T`, or throws to return the error (throw a string).
//
// Import it from a plugin with a relative path; `build.mjs` makes sure the paths resolve.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string (a `list<u8>`). */
export function bytes(text) {
  return encoder.encode(text);
}

/** A UTF-8 string from bytes (invalid sequences become U+FFFD). */
export function text(data) {
  return decoder.decode(data);
}

/** The first value of header `name` (lower case) in a header list, as a string, or undefined. */
export function header(headers, name) {
  const lower = name.toLowerCase();
  for (const [key, value] of headers) {
    if (key === lower) {
      return text(value);
    }
  }
  return undefined;
}

/** Turns `{ name: value }` or `[[name, value]]` into a WIT header list (names lower-cased). */
export function headerList(headers = {}) {
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  return entries.map(([name, value]) => [
    String(name).toLowerCase(),
    value instanceof Uint8Array ? value : bytes(String(value)),
  ]);
}

/** A header mutation: `set` replaces every value of a name, `remove` deletes names. */
export function mutation(set = {}, remove = []) {
  return { set: headerList(set), remove: remove.map((name) => name.toLowerCase()) };
}

/** A local response; `body` may be a string or bytes. */
export function response(status, headers = {}, body = '') {
  return {
    status,
    headers: headerList(headers),
    body: body instanceof Uint8Array ? body : bytes(body),
  };
}

/** `request-action` constructors. */
export const RequestAction = {
  /** Forward the request, after the (optional) header mutation. */
  proceed: (m = mutation()) => ({ tag: 'proceed', val: m }),
  /** Answer locally with a response built by `response()`. */
  respond: (resp) => ({ tag: 'respond', val: resp }),
  /** Forward to another cluster. */
  routeTo: (cluster) => ({ tag: 'route-to', val: cluster }),
};

/** `response-action` constructors. */
export const ResponseAction = {
  /** Send the upstream response on, after the (optional) header mutation. */
  proceed: (m = mutation()) => ({ tag: 'proceed', val: m }),
  /** Send it on and store it under `key` for `ttlSeconds`. */
  proceedAndStore: (key, ttlSeconds, m = mutation()) => ({
    tag: 'proceed-and-store',
    val: { mutation: m, key, ttlSeconds },
  }),
  /** Replace the upstream response. */
  replace: (resp) => ({ tag: 'replace', val: resp }),
};

/** `fallback-decision` constructors. */
export const Fallback = {
  propagate: () => ({ tag: 'propagate' }),
  retry: (delayMs = 0, cluster = undefined) => ({ tag: 'retry', val: { cluster, delayMs } }),
  serve: (resp) => ({ tag: 'serve', val: resp }),
  serveCached: (key) => ({ tag: 'serve-cached', val: key }),
  degrade: (cluster) => ({ tag: 'degrade', val: cluster }),
  shed: (status = 503) => ({ tag: 'shed', val: status }),
};

/** The `hooks` flags value for the hooks a plugin implements. */
export function hooks({ onRequest = false, onResponse = false, onUpstreamFailure = false } = {}) {
  return { onRequest, onResponse, onUpstreamFailure };
}

/**
 * Parses the `init` config bytes as JSON. `null` (no config on the route) gives `{}`.
 * Throws a string (the `init` error) when the bytes are not a JSON object.
 */
export function parseConfig(config) {
  let value;
  try {
    value = JSON.parse(text(config));
  } catch (err) {
    throw `config is not JSON: ${err}`;
  }
  if (value === null || value === undefined) {
    return {};
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw 'config must be a JSON object';
  }
  return value;
}
