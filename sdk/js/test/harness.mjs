// A guest-side test harness: runs a built plugin component in Node, against an in-memory fake
// of the Levee host, so the C, JavaScript and Python example plugins can be checked before the
// gateway's wasmtime host exists. It transpiles the component with jco (a dependency of
// componentize-js) and instantiates it with the fake host as its only import, so it also proves
// the component needs no WASI.

import { mkdtemp, readFile, writeFile, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { transpile, componentWit } from '@bytecodealliance/jco';

const here = dirname(fileURLToPath(import.meta.url));

/** Where the built example components are: $LEVEE_WASM_DIR, else target/plugins/polyglot. */
export const wasmDir = resolve(
  process.env.LEVEE_WASM_DIR ?? join(here, '..', '..', '..', 'target', 'plugins', 'polyglot'),
);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string. */
export const bytes = (s) => encoder.encode(s);
/** A string from UTF-8 bytes. */
export const text = (b) => decoder.decode(b);

/** The in-memory host: cache with TTLs, counters, log lines, a settable clock, cluster health. */
export class FakeHost {
  constructor() {
    this.now = 1_700_000_000_000n;
    this.cache = new Map();
    this.counters = new Map();
    this.logs = [];
    this.clusters = new Map();
  }

  /** Sets the health `upstream-health(name)` returns (camelCase `cluster-health` fields). */
  setHealth(name, health) {
    this.clusters.set(name, {
      healthyEndpoints: 3,
      totalEndpoints: 3,
      circuit: 'closed',
      errorRate: 0,
      p50Ms: 5,
      p99Ms: 20,
      inFlight: 0,
      ...health,
    });
  }

  /** Moves the clock forward. */
  advance(ms) {
    this.now += BigInt(ms);
  }

  /** What the host does for `proceed-and-store`: keep the body under the key. */
  store(key, body, ttlSeconds) {
    this.cache.set(key, { value: body, expires: this.now + BigInt(ttlSeconds) * 1000n });
  }

  counter(name) {
    return this.counters.get(name) ?? 0n;
  }

  /** The import object for `levee:policy/host`. */
  imports() {
    return {
      upstreamHealth: (cluster) => this.clusters.get(cluster),
      cacheGet: (key) => {
        const entry = this.cache.get(key);
        if (entry === undefined || entry.expires <= this.now) {
          return undefined;
        }
        return entry.value;
      },
      cachePut: (key, value, ttlMs) => {
        this.cache.set(key, { value: Uint8Array.from(value), expires: this.now + BigInt(ttlMs) });
        return true;
      },
      counterAdd: (name, delta) => {
        this.counters.set(name, this.counter(name) + delta);
      },
      log: (level, message) => {
        this.logs.push([level, message]);
      },
      nowMs: () => this.now,
    };
  }
}

const transpiled = new Map();

/** The WIT world of a component, as text. */
export async function worldOf(path) {
  return componentWit(await readFile(path));
}

/** Transpiles a component once per process; returns its generated ES module. */
async function module(path) {
  if (!transpiled.has(path)) {
    transpiled.set(
      path,
      (async () => {
        const { files } = await transpile(await readFile(path), {
          name: 'plugin',
          instantiation: 'async',
          quiet: true,
        });
        const dir = await mkdtemp(join(tmpdir(), 'levee-plugin-test-'));
        for (const [name, data] of Object.entries(files)) {
          await mkdir(dirname(join(dir, name)), { recursive: true });
          await writeFile(join(dir, name), data);
        }
        const generated = await import(pathToFileURL(join(dir, 'plugin.js')).href);
        return { dir, generated };
      })(),
    );
  }
  return transpiled.get(path);
}

/** Removes the transpiled files. */
export async function cleanup() {
  for (const pending of transpiled.values()) {
    const { dir } = await pending;
    await rm(dir, { recursive: true, force: true });
  }
  transpiled.clear();
}

/**
 * A fresh instance of the component at `path`, with `host` as its `levee:policy/host` import
 * and nothing else. Returns its `policy` export (camelCase functions).
 */
export async function instantiate(path, host) {
  const { dir, generated } = await module(path);
  const instance = await generated.instantiate(
    (name) => compiled(join(dir, name)),
    { 'levee:policy/host': host.imports() },
  );
  return instance.policy;
}

const modules = new Map();
/** A core module compiled once per process (instances are cheap, compiles of 12 MB are not). */
function compiled(path) {
  if (!modules.has(path)) {
    modules.set(path, readFile(path).then((data) => WebAssembly.compile(data)));
  }
  return modules.get(path);
}

/** A request head (camelCase `request-head`) with defaults. */
export function request(overrides = {}) {
  return {
    method: 'GET',
    authority: 'shop.example',
    pathWithQuery: '/items?page=2',
    headers: [],
    route: 'shop',
    requestId: 'req-1',
    ...overrides,
    headers: (overrides.headers ?? []).map(([n, v]) => [n, typeof v === 'string' ? bytes(v) : v]),
  };
}

/** An `upstream-failure` with defaults. */
export function failure(kind, overrides = {}) {
  return {
    kind,
    cluster: 'shop',
    attempt: 1,
    status: undefined,
    elapsedMs: 1200,
    circuit: 'closed',
    ...overrides,
  };
}

/** The first value of a header in a header list, as text. */
export function header(headers, name) {
  const found = headers.find(([n]) => n === name);
  return found === undefined ? undefined : text(found[1]);
}
