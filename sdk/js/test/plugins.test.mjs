// Runs the three polyglot example plugins (C, JavaScript, Python) as real components, through
// jco, against the fake host in harness.mjs. Build them first:
//
//   sdk/build-all.sh target/plugins/polyglot && (cd sdk/js && npm test)
//
// or point LEVEE_WASM_DIR at the directory that holds the .wasm files.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  bytes,
  cleanup,
  failure,
  FakeHost,
  header,
  instantiate,
  request,
  text,
  wasmDir,
  worldOf,
} from './harness.mjs';

const config = (value) => bytes(JSON.stringify(value));

function wasm(name) {
  const path = join(wasmDir, `${name}.wasm`);
  assert.ok(existsSync(path), `${path} is missing: run sdk/build-all.sh ${wasmDir}`);
  return path;
}

/** The component's world imports only the Levee host and exports the policy interface. */
async function assertLeveeOnly(path) {
  const world = await worldOf(path);
  assert.match(world, /export levee:policy\/policy@0\.1\.0;/);
  const imports = [...world.matchAll(/^\s*import ([^;]+);/gm)].map((m) => m[1]).sort();
  assert.deepEqual(imports, ['levee:policy/host@0.1.0', 'levee:policy/types@0.1.0']);
}

/** Calls `init`; returns the hooks, or throws the error string. */
function init(policy, value) {
  try {
    return policy.init(value === undefined ? bytes('null') : config(value));
  } catch (err) {
    throw new Error(String(err?.payload ?? err));
  }
}

after(cleanup);

describe('static-fallback-c', () => {
  let path;
  before(() => {
    path = wasm('static-fallback-c');
  });

  test('imports only the host', async () => {
    await assertLeveeOnly(path);
  });

  test('serves the branded page with retry-after for every failure kind by default', async () => {
    const host = new FakeHost();
    const policy = await instantiate(path, host);
    assert.deepEqual(init(policy, { brand: 'Acme <Shop>' }), {
      onRequest: false,
      onResponse: false,
      onUpstreamFailure: true,
    });
    for (const kind of ['connect-failure', 'timeout', 'upstream-5xx', 'circuit-open']) {
      const decision = policy.onUpstreamFailure(request({ requestId: 'abc-42' }), failure(kind));
      assert.equal(decision.tag, 'serve', kind);
      const resp = decision.val;
      assert.equal(resp.status, 503);
      assert.equal(header(resp.headers, 'retry-after'), '30');
      assert.equal(header(resp.headers, 'content-type'), 'text/html; charset=utf-8');
      assert.equal(header(resp.headers, 'cache-control'), 'no-store');
      const body = text(resp.body);
      assert.match(body, /Acme &lt;Shop&gt;/, 'brand is HTML-escaped');
      assert.match(body, /abc-42/, 'request id is on the page');
    }
    assert.equal(host.counter('served'), 4n);
  });

  test('custom status, page, headers, and only the configured kinds', async () => {
    const host = new FakeHost();
    const policy = await instantiate(path, host);
    init(policy, {
      status: 502,
      retry_after: 120,
      html: '<p>back soon</p>',
      headers: { 'x-brand': 'acme' },
      on: ['timeout', 'upstream-5xx'],
    });
    const served = policy.onUpstreamFailure(request(), failure('timeout'));
    assert.equal(served.tag, 'serve');
    assert.equal(served.val.status, 502);
    assert.equal(text(served.val.body), '<p>back soon</p>');
    assert.equal(header(served.val.headers, 'retry-after'), '120');
    assert.equal(header(served.val.headers, 'x-brand'), 'acme');
    assert.deepEqual(policy.onUpstreamFailure(request(), failure('connect-failure')), {
      tag: 'propagate',
    });
    assert.equal(host.counter('served'), 1n);
  });

  test('a plain-text body is sent as text/plain', async () => {
    const policy = await instantiate(path, new FakeHost());
    init(policy, { body: 'down for maintenance' });
    const served = policy.onUpstreamFailure(request(), failure('reset'));
    assert.equal(text(served.val.body), 'down for maintenance');
    assert.equal(header(served.val.headers, 'content-type'), 'text/plain; charset=utf-8');
  });

  test('bad config is rejected by init', async () => {
    const policy = await instantiate(path, new FakeHost());
    assert.throws(() => init(policy, { status: 99 }), /status/);
    assert.throws(() => init(policy, { on: ['meteor'] }), /meteor/);
    assert.throws(() => init(policy, { headers: { 'x-a': 1 } }), /headers/);
    assert.throws(() => init(policy, [1, 2]), /object/);
  });
});

describe('priority-shedding-js', () => {
  let path;
  before(() => {
    path = wasm('priority-shedding-js');
  });

  test('imports only the host', async () => {
    await assertLeveeOnly(path);
  });

  test('sheds low priority only while the cluster is overloaded', async () => {
    const host = new FakeHost();
    const policy = await instantiate(path, host);
    assert.deepEqual(init(policy, { cluster: 'api', max_in_flight: 10 }), {
      onRequest: true,
      onResponse: false,
      onUpstreamFailure: false,
    });
    const low = request({ headers: [['x-priority', 'low']] });
    const high = request({ headers: [['x-priority', 'High ']] });

    host.setHealth('api', { inFlight: 9 });
    assert.equal(policy.onRequest(low).tag, 'proceed');

    host.setHealth('api', { inFlight: 10 });
    const shed = policy.onRequest(low);
    assert.equal(shed.tag, 'respond');
    assert.equal(shed.val.status, 503);
    assert.equal(header(shed.val.headers, 'retry-after'), '5');
    assert.equal(header(shed.val.headers, 'x-levee-shed'), 'priority');
    assert.deepEqual(JSON.parse(text(shed.val.body)), {
      error: 'shed',
      reason: 'in-flight',
      priority: 'low',
      retry_after: 5,
    });
    assert.equal(policy.onRequest(high).tag, 'proceed', 'kept priorities pass');
    assert.equal(policy.onRequest(request()).tag, 'respond', 'no header is not kept');
    assert.equal(host.counter('shed'), 2n);
  });

  test('open circuit and unhealthy endpoints count as overload', async () => {
    const host = new FakeHost();
    const policy = await instantiate(path, host);
    init(policy, {
      keep: ['gold'],
      header: 'x-tier',
      retry_after: 9,
      status: 429,
      min_healthy_ratio: 0.5,
    });
    const bronze = request({ route: 'shop', headers: [['x-tier', 'bronze']] });

    host.setHealth('shop', { circuit: 'open' });
    const open = policy.onRequest(bronze);
    assert.equal(open.val.status, 429);
    assert.equal(JSON.parse(text(open.val.body)).reason, 'circuit-open');
    assert.equal(header(open.val.headers, 'retry-after'), '9');

    host.setHealth('shop', { healthyEndpoints: 1, totalEndpoints: 4 });
    assert.equal(JSON.parse(text(policy.onRequest(bronze).val.body)).reason, 'unhealthy-endpoints');

    host.setHealth('shop', { healthyEndpoints: 2, totalEndpoints: 4 });
    assert.equal(policy.onRequest(bronze).tag, 'proceed', 'at the ratio is not overloaded');

    const gold = request({ route: 'shop', headers: [['x-tier', 'gold']] });
    host.setHealth('shop', { circuit: 'open' });
    assert.equal(policy.onRequest(gold).tag, 'proceed');
  });

  test('by default only an open circuit sheds', async () => {
    const host = new FakeHost();
    const policy = await instantiate(path, host);
    init(policy);
    host.setHealth('shop', { healthyEndpoints: 0, totalEndpoints: 4, inFlight: 5000 });
    assert.equal(policy.onRequest(request()).tag, 'proceed');
    host.setHealth('shop', { circuit: 'open' });
    assert.equal(policy.onRequest(request()).tag, 'respond');
  });

  test('an unknown cluster fails open, is counted, and warns once', async () => {
    const host = new FakeHost();
    const policy = await instantiate(path, host);
    init(policy, { cluster: 'nope' });
    assert.equal(policy.onRequest(request()).tag, 'proceed');
    assert.equal(policy.onRequest(request()).tag, 'proceed');
    assert.equal(host.counter('unknown_cluster'), 2n);
    assert.deepEqual(host.logs, [['warn', 'no cluster named `nope`; not shedding (set `cluster`)']]);
  });

  test('bad config is rejected by init', async () => {
    const policy = await instantiate(path, new FakeHost());
    assert.throws(() => init(policy, { keep: 'high' }), /keep/);
    assert.throws(() => init(policy, { min_healthy_ratio: 2 }), /min_healthy_ratio/);
    assert.throws(() => init(policy, { status: 700 }), /status/);
  });
});

describe('serve-stale-py', () => {
  let path;
  before(() => {
    path = wasm('serve-stale-py');
  });

  test('imports only the host', async () => {
    await assertLeveeOnly(path);
  });

  test('stores GET 200 and serves the copy, marked, when the upstream fails', async () => {
    const host = new FakeHost();
    const policy = await instantiate(path, host);
    assert.deepEqual(init(policy, { ttl_seconds: 60 }), {
      onRequest: false,
      onResponse: true,
      onUpstreamFailure: true,
    });
    const req = request();
    const ok = {
      status: 200,
      headers: [
        ['content-type', bytes('application/json')],
        ['etag', bytes('"v1"')],
        ['x-internal', bytes('no')],
      ],
    };
    const action = policy.onResponse(req, ok);
    assert.equal(action.tag, 'proceed-and-store');
    assert.equal(action.val.key, 'GET shop.example/items?page=2');
    assert.equal(action.val.ttlSeconds, 60);
    host.store(action.val.key, bytes('{"items":[1,2]}'), action.val.ttlSeconds);
    assert.equal(host.counter('stored'), 1n);

    host.advance(7_500);
    const decision = policy.onUpstreamFailure(req, failure('timeout'));
    assert.equal(decision.tag, 'serve');
    assert.equal(decision.val.status, 200);
    assert.equal(text(decision.val.body), '{"items":[1,2]}');
    assert.equal(header(decision.val.headers, 'x-levee-stale'), 'plugin');
    assert.equal(header(decision.val.headers, 'content-type'), 'application/json');
    assert.equal(header(decision.val.headers, 'etag'), '"v1"');
    assert.equal(header(decision.val.headers, 'x-internal'), undefined, 'only kept headers');
    assert.equal(header(decision.val.headers, 'age'), '7');
    assert.equal(host.counter('served_stale'), 1n);

    host.advance(60_000);
    assert.equal(policy.onUpstreamFailure(req, failure('timeout')).tag, 'propagate', 'expired');
    assert.equal(host.counter('stale_miss'), 1n);
  });

  test('does not store other methods, statuses or unshareable responses', async () => {
    const policy = await instantiate(path, new FakeHost());
    init(policy);
    const ok = { status: 200, headers: [] };
    assert.equal(policy.onResponse(request(), ok).tag, 'proceed-and-store');
    assert.equal(policy.onResponse(request({ method: 'POST' }), ok).tag, 'proceed');
    assert.equal(policy.onResponse(request(), { status: 500, headers: [] }).tag, 'proceed');
    const priv = { status: 200, headers: [['cache-control', bytes('max-age=60, Private')]] };
    assert.equal(policy.onResponse(request(), priv).tag, 'proceed');
    const noStore = { status: 200, headers: [['cache-control', bytes('no-store')]] };
    assert.equal(policy.onResponse(request(), noStore).tag, 'proceed');
    const cookie = { status: 200, headers: [['set-cookie', bytes('s=1')]] };
    assert.equal(policy.onResponse(request(), cookie).tag, 'proceed');
    const authorized = request({ headers: [['authorization', 'Bearer x']] });
    assert.equal(policy.onResponse(authorized, ok).tag, 'proceed');
    assert.equal(policy.onUpstreamFailure(request({ method: 'POST' }), failure('reset')).tag, 'propagate');
  });

  test('host marking answers serve-cached; kinds outside `on` propagate', async () => {
    const policy = await instantiate(path, new FakeHost());
    init(policy, { mode: 'host', on: ['connect-failure'] });
    assert.deepEqual(policy.onUpstreamFailure(request(), failure('connect-failure')), {
      tag: 'serve-cached',
      val: 'GET shop.example/items?page=2',
    });
    assert.equal(policy.onUpstreamFailure(request(), failure('timeout')).tag, 'propagate');
  });

  test('a rate limit is not undone by default; the mark header is configurable', async () => {
    const host = new FakeHost();
    const policy = await instantiate(path, host);
    init(policy, { mark_header: 'X-Stale' });
    const action = policy.onResponse(request(), { status: 200, headers: [] });
    host.store(action.val.key, bytes('copy'), action.val.ttlSeconds);
    assert.equal(policy.onUpstreamFailure(request(), failure('rate-limited')).tag, 'propagate');
    const served = policy.onUpstreamFailure(request(), failure('circuit-open'));
    assert.equal(header(served.val.headers, 'x-stale'), 'plugin');
  });

  test('bad config is rejected by init', async () => {
    const policy = await instantiate(path, new FakeHost());
    assert.throws(() => init(policy, { ttl_seconds: 0 }), /ttl_seconds/);
    assert.throws(() => init(policy, { mode: 'both' }), /mode/);
    assert.throws(() => init(policy, { on: ['meteor'] }), /meteor/);
    assert.throws(() => init(policy, 'x'), /object/);
  });
});
