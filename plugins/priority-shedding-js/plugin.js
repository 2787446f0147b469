// priority-shedding (JavaScript): when the upstream cluster is overloaded, refuse requests whose
// priority header is not one of the kept values, with 503 and `retry-after`, so the capacity
// left goes to the traffic that matters. The same policy as the Rust `priority-shedding` plugin.
//
// Config (JSON, every key optional):
//   header             request header carrying the priority          (default "x-priority")
//   keep               priorities never shed                          (default ["high"])
//   cluster            cluster whose health decides                   (default: the route's name)
//   max_in_flight      overloaded at this many in-flight requests     (default: not checked)
//   min_healthy_ratio  overloaded when healthy/total is below it      (default: not checked)
//   max_error_rate     overloaded when the error rate reaches it      (default: not checked)
//   status             status of a shed response                      (default 503)
//   retry_after        seconds in `retry-after`                       (default 5)
// An open circuit always counts as overloaded. Counters: `shed`, `unknown_cluster`.
// (`status` and `max_error_rate` are extras over the Rust plugin; the rest matches it.)

import { upstreamHealth, counterAdd, log } from 'levee:policy/host@0.1.0';
import {
  header,
  hooks,
  parseConfig,
  RequestAction,
  response,
} from '../../sdk/js/levee.js';

/** The parsed config of this instance (set by `init`). */
let settings = null;
/** Whether the unknown-cluster warning was logged by this instance. */
let warnedUnknown = false;

function number(config, key, fallback, min, max) {
  const value = config[key];
  if (value === undefined || value === null) {
    return fallback;
  }
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw `${key} must be a number from ${min} to ${max}`;
  }
  return value;
}

function parse(bytes) {
  const config = parseConfig(bytes);
  const keep = config.keep ?? ['high'];
  if (!Array.isArray(keep) || keep.some((v) => typeof v !== 'string')) {
    throw 'keep must be a list of strings';
  }
  const name = config.header ?? 'x-priority';
  if (typeof name !== 'string' || name === '') {
    throw 'header must be a non-empty string';
  }
  if (config.cluster !== undefined && typeof config.cluster !== 'string') {
    throw 'cluster must be a string';
  }
  return {
    header: name.toLowerCase(),
    keep: new Set(keep.map((v) => v.trim().toLowerCase())),
    cluster: config.cluster,
    maxInFlight: number(config, 'max_in_flight', undefined, 0, 2 ** 32 - 1),
    minHealthyRatio: number(config, 'min_healthy_ratio', undefined, 0, 1),
    maxErrorRate: number(config, 'max_error_rate', undefined, 0, 1),
    status: number(config, 'status', 503, 100, 599),
    retryAfter: number(config, 'retry_after', 5, 0, 86400),
  };
}

/** Why the cluster counts as overloaded, or undefined when it does not. */
function overload(health) {
  if (health.circuit === 'open') {
    return 'circuit-open';
  }
  if (settings.maxInFlight !== undefined && health.inFlight >= settings.maxInFlight) {
    return 'in-flight';
  }
  if (
    settings.minHealthyRatio !== undefined &&
    health.totalEndpoints > 0 &&
    health.healthyEndpoints / health.totalEndpoints < settings.minHealthyRatio
  ) {
    return 'unhealthy-endpoints';
  }
  if (settings.maxErrorRate !== undefined && health.errorRate >= settings.maxErrorRate) {
    return 'error-rate';
  }
  return undefined;
}

export const policy = {
  init(config) {
    settings = parse(config);
    return hooks({ onRequest: true });
  },

  onRequest(req) {
    const priority = (header(req.headers, settings.header) ?? '').trim().toLowerCase();
    if (settings.keep.has(priority)) {
      return RequestAction.proceed();
    }
    const cluster = settings.cluster ?? req.route;
    const health = upstreamHealth(cluster);
    if (health === undefined) {
      counterAdd('unknown_cluster', 1n);
      if (!warnedUnknown) {
        warnedUnknown = true;
        log('warn', `no cluster named \`${cluster}\`; not shedding (set \`cluster\`)`);
      }
      return RequestAction.proceed();
    }
    const reason = overload(health);
    if (reason === undefined) {
      return RequestAction.proceed();
    }
    counterAdd('shed', 1n);
    log('debug', `shed ${req.requestId} (priority "${priority}", ${cluster}: ${reason})`);
    const body = JSON.stringify({
      error: 'shed',
      reason,
      priority: priority === '' ? null : priority,
      retry_after: settings.retryAfter,
    });
    return RequestAction.respond(
      response(
        settings.status,
        {
          'content-type': 'application/json',
          'retry-after': String(settings.retryAfter),
          'x-levee-shed': 'priority',
        },
        body,
      ),
    );
  },

  onResponse(_req, _resp) {
    return { tag: 'proceed', val: { set: [], remove: [] } };
  },

  onUpstreamFailure(_req, _failure) {
    return { tag: 'propagate' };
  },
};
