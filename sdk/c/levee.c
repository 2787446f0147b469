/*
 * levee.c: the helpers declared in levee.h, and weak default hooks.
 *
 * Everything that ends up in a hook's return value is allocated here with malloc, because the
 * generated bindings free it with `free` after the host has read it.
 */
#include "levee.h"

#include <stdlib.h>
#include <string.h>

// === impl strings ===

levee_string_t levee_string_n(const void *data, size_t len) {
  levee_string_t s = {NULL, 0};
  if (len == 0) return s;
  s.ptr = malloc(len);
  if (s.ptr == NULL) return s;
  memcpy(s.ptr, data, len);
  s.len = len;
  return s;
}

levee_string_t levee_string(const char *text) {
  return levee_string_n(text, strlen(text));
}

bool levee_string_eq(const levee_string_t *s, const char *text) {
  size_t n = strlen(text);
  return s->len == n && (n == 0 || memcmp(s->ptr, text, n) == 0);
}

char *levee_cstr(const levee_string_t *s) {
  char *out = malloc(s->len + 1);
  if (out == NULL) return NULL;
  if (s->len > 0) memcpy(out, s->ptr, s->len);
  out[s->len] = '\0';
  return out;
}

static levee_string_t lower_string(const char *name) {
  levee_string_t s = levee_string(name);
  for (size_t i = 0; i < s.len; i++) {
    if (s.ptr[i] >= 'A' && s.ptr[i] <= 'Z') s.ptr[i] = (uint8_t)(s.ptr[i] - 'A' + 'a');
  }
  return s;
}

// === impl headers ===

bool levee_headers_add(levee_headers_t *headers, const char *name, const void *value, size_t len) {
  plugin_tuple2_string_list_u8_t *grown =
      realloc(headers->ptr, (headers->len + 1) * sizeof *headers->ptr);
  if (grown == NULL) return false;
  headers->ptr = grown;
  plugin_tuple2_string_list_u8_t *entry = &headers->ptr[headers->len];
  entry->f0 = lower_string(name);
  levee_string_t copy = levee_string_n(value, len);
  entry->f1.ptr = copy.ptr;
  entry->f1.len = copy.len;
  if ((entry->f0.len == 0 && name[0] != '\0') || (copy.len == 0 && len != 0)) {
    free(entry->f0.ptr);
    free(copy.ptr);
    return false;
  }
  headers->len++;
  return true;
}

bool levee_headers_add_str(levee_headers_t *headers, const char *name, const char *value) {
  return levee_headers_add(headers, name, value, strlen(value));
}

const levee_bytes_t *levee_headers_get(const levee_headers_t *headers, const char *name) {
  for (size_t i = 0; i < headers->len; i++) {
    if (levee_string_eq(&headers->ptr[i].f0, name)) return &headers->ptr[i].f1;
  }
  return NULL;
}

// === impl responses and mutations ===

levee_response_t levee_response(uint16_t status) {
  levee_response_t resp;
  memset(&resp, 0, sizeof resp);
  resp.status = status;
  return resp;
}

bool levee_response_header(levee_response_t *resp, const char *name, const char *value) {
  return levee_headers_add_str(&resp->headers, name, value);
}

bool levee_response_body(levee_response_t *resp, const void *data, size_t len) {
  levee_string_t copy = levee_string_n(data, len);
  if (copy.len != len) return false;
  free(resp->body.ptr);
  resp->body.ptr = copy.ptr;
  resp->body.len = copy.len;
  return true;
}

levee_mutation_t levee_mutation(void) {
  levee_mutation_t mutation;
  memset(&mutation, 0, sizeof mutation);
  return mutation;
}

bool levee_mutation_set(levee_mutation_t *mutation, const char *name, const char *value) {
  return levee_headers_add_str(&mutation->set, name, value);
}

bool levee_mutation_remove(levee_mutation_t *mutation, const char *name) {
  levee_string_t *grown =
      realloc(mutation->remove.ptr, (mutation->remove.len + 1) * sizeof *mutation->remove.ptr);
  if (grown == NULL) return false;
  mutation->remove.ptr = grown;
  mutation->remove.ptr[mutation->remove.len++] = lower_string(name);
  return true;
}

// === impl decisions ===

void levee_request_proceed(levee_request_action_t *ret, levee_mutation_t mutation) {
  ret->tag = LEVEE_POLICY_TYPES_REQUEST_ACTION_PROCEED;
  ret->val.proceed = mutation;
}

void levee_request_respond(levee_request_action_t *ret, levee_response_t resp) {
  ret->tag = LEVEE_POLICY_TYPES_REQUEST_ACTION_RESPOND;
  ret->val.respond = resp;
}

void levee_request_route_to(levee_request_action_t *ret, const char *cluster) {
  ret->tag = LEVEE_POLICY_TYPES_REQUEST_ACTION_ROUTE_TO;
  ret->val.route_to = levee_string(cluster);
}

void levee_response_proceed(levee_response_action_t *ret, levee_mutation_t mutation) {
  ret->tag = LEVEE_POLICY_TYPES_RESPONSE_ACTION_PROCEED;
  ret->val.proceed = mutation;
}

void levee_response_store(levee_response_action_t *ret, levee_mutation_t mutation, const char *key,
                          uint32_t ttl_seconds) {
  ret->tag = LEVEE_POLICY_TYPES_RESPONSE_ACTION_PROCEED_AND_STORE;
  ret->val.proceed_and_store.mutation = mutation;
  ret->val.proceed_and_store.key = levee_string(key);
  ret->val.proceed_and_store.ttl_seconds = ttl_seconds;
}

void levee_response_replace(levee_response_action_t *ret, levee_response_t resp) {
  ret->tag = LEVEE_POLICY_TYPES_RESPONSE_ACTION_REPLACE;
  ret->val.replace = resp;
}

void levee_fallback_propagate(levee_fallback_t *ret) {
  ret->tag = LEVEE_POLICY_TYPES_FALLBACK_DECISION_PROPAGATE;
}

void levee_fallback_retry(levee_fallback_t *ret, const char *cluster, uint32_t delay_ms) {
  ret->tag = LEVEE_POLICY_TYPES_FALLBACK_DECISION_RETRY;
  ret->val.retry.cluster.is_some = cluster != NULL;
  if (cluster != NULL) ret->val.retry.cluster.val = levee_string(cluster);
  ret->val.retry.delay_ms = delay_ms;
}

void levee_fallback_serve(levee_fallback_t *ret, levee_response_t resp) {
  ret->tag = LEVEE_POLICY_TYPES_FALLBACK_DECISION_SERVE;
  ret->val.serve = resp;
}

void levee_fallback_serve_cached(levee_fallback_t *ret, const char *key) {
  ret->tag = LEVEE_POLICY_TYPES_FALLBACK_DECISION_SERVE_CACHED;
  ret->val.serve_cached = levee_string(key);
}

void levee_fallback_degrade(levee_fallback_t *ret, const char *cluster) {
  ret->tag = LEVEE_POLICY_TYPES_FALLBACK_DECISION_DEGRADE;
  ret->val.degrade = levee_string(cluster);
}

void levee_fallback_shed(levee_fallback_t *ret, uint16_t status) {
  ret->tag = LEVEE_POLICY_TYPES_FALLBACK_DECISION_SHED;
  ret->val.shed = status;
}

// === impl failure kinds ===

static const char *const FAILURE_KIND_NAMES[LEVEE_FAILURE_KINDS] = {
    [LEVEE_POLICY_TYPES_FAILURE_KIND_CONNECT_FAILURE] = "connect-failure",
    [LEVEE_POLICY_TYPES_FAILURE_KIND_RESET] = "reset",
    [LEVEE_POLICY_TYPES_FAILURE_KIND_TIMEOUT] = "timeout",
    [LEVEE_POLICY_TYPES_FAILURE_KIND_UPSTREAM_5XX] = "upstream-5xx",
    [LEVEE_POLICY_TYPES_FAILURE_KIND_CIRCUIT_OPEN] = "circuit-open",
    [LEVEE_POLICY_TYPES_FAILURE_KIND_NO_HEALTHY_ENDPOINT] = "no-healthy-endpoint",
    [LEVEE_POLICY_TYPES_FAILURE_KIND_OVERLOADED] = "overloaded",
    [LEVEE_POLICY_TYPES_FAILURE_KIND_RATE_LIMITED] = "rate-limited",
};

const char *levee_failure_kind_name(levee_failure_kind_t kind) {
  return kind < LEVEE_FAILURE_KINDS ? FAILURE_KIND_NAMES[kind] : "unknown";
}

bool levee_failure_kind_parse(const char *name, levee_failure_kind_t *out) {
  for (levee_failure_kind_t kind = 0; kind < LEVEE_FAILURE_KINDS; kind++) {
    if (strcmp(FAILURE_KIND_NAMES[kind], name) == 0) {
      *out = kind;
      return true;
    }
  }
  return false;
}

// === impl building text ===

static bool buf_reserve(levee_buf_t *buf, size_t extra) {
  if (buf->failed) return false;
  if (buf->cap - buf->len >= extra) return true;
  size_t cap = buf->cap == 0 ? 64 : buf->cap;
  while (cap - buf->len < extra) {
    if (cap > SIZE_MAX / 2) {
      buf->failed = true;
      return false;
    }
    cap *= 2;
  }
  char *grown = realloc(buf->ptr, cap);
  if (grown == NULL) {
    buf->failed = true;
    return false;
  }
  buf->ptr = grown;
  buf->cap = cap;
  return true;
}

void levee_buf_bytes(levee_buf_t *buf, const void *data, size_t len) {
  if (len == 0 || !buf_reserve(buf, len)) return;
  memcpy(buf->ptr + buf->len, data, len);
  buf->len += len;
}

void levee_buf_str(levee_buf_t *buf, const char *text) {
  levee_buf_bytes(buf, text, strlen(text));
}

void levee_buf_string(levee_buf_t *buf, const levee_string_t *s) {
  levee_buf_bytes(buf, s->ptr, s->len);
}

void levee_buf_u64(levee_buf_t *buf, uint64_t n) {
  char digits[20];
  size_t i = sizeof digits;
  do {
    digits[--i] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);
  levee_buf_bytes(buf, digits + i, sizeof digits - i);
}

void levee_buf_i64(levee_buf_t *buf, int64_t n) {
  if (n < 0) {
    levee_buf_bytes(buf, "-", 1);
    levee_buf_u64(buf, (uint64_t)0 - (uint64_t)n);
  } else {
    levee_buf_u64(buf, (uint64_t)n);
  }
}

void levee_buf_html(levee_buf_t *buf, const void *text, size_t len) {
  const char *p = text;
  for (size_t i = 0; i < len; i++) {
    switch (p[i]) {
      case '&': levee_buf_str(buf, "&amp;"); break;
      case '<': levee_buf_str(buf, "&lt;"); break;
      case '>': levee_buf_str(buf, "&gt;"); break;
      case '"': levee_buf_str(buf, "&quot;"); break;
      case '\'': levee_buf_str(buf, "&#39;"); break;
      default: levee_buf_bytes(buf, &p[i], 1); break;
    }
  }
}

char *levee_buf_cstr(const levee_buf_t *buf) {
  if (buf->failed) return NULL;
  char *out = malloc(buf->len + 1);
  if (out == NULL) return NULL;
  if (buf->len > 0) memcpy(out, buf->ptr, buf->len);
  out[buf->len] = '\0';
  return out;
}

void levee_buf_free(levee_buf_t *buf) {
  free(buf->ptr);
  buf->ptr = NULL;
  buf->len = 0;
  buf->cap = 0;
  buf->failed = false;
}

// === impl the host ===

void levee_log(levee_log_level_t level, const char *message) {
  levee_string_t s;
  plugin_string_set(&s, message);
  levee_policy_host_log(level, &s);
}

void levee_log_buf(levee_log_level_t level, const levee_buf_t *buf) {
  levee_string_t s = {(uint8_t *)buf->ptr, buf->len};
  levee_policy_host_log(level, &s);
}

void levee_counter_add(const char *name, int64_t delta) {
  levee_string_t s;
  plugin_string_set(&s, name);
  levee_policy_host_counter_add(&s, delta);
}

bool levee_upstream_health(const char *cluster, levee_cluster_health_t *out) {
  levee_string_t s;
  plugin_string_set(&s, cluster);
  return levee_policy_host_upstream_health(&s, out);
}

bool levee_cache_get(const char *key, levee_bytes_t *out) {
  levee_string_t s;
  plugin_string_set(&s, key);
  return levee_policy_host_cache_get(&s, out);
}

bool levee_cache_put(const char *key, const void *data, size_t len, uint32_t ttl_ms) {
  levee_string_t s;
  plugin_string_set(&s, key);
  levee_bytes_t value = {(uint8_t *)data, len};
  return levee_policy_host_cache_put(&s, &value, ttl_ms);
}

uint64_t levee_now_ms(void) {
  return levee_policy_host_now_ms();
}

// === impl init ===

bool levee_init_error(levee_string_t *err, const char *message) {
  *err = levee_string(message);
  return false;
}

bool levee_init_error_buf(levee_string_t *err, levee_buf_t *message) {
  *err = message->failed ? levee_string("out of memory") : levee_string_n(message->ptr, message->len);
  levee_buf_free(message);
  return false;
}

// === impl default hooks ===
//
// Weak, so a plugin's own definition wins at link time. The host calls only the hooks `init`
// returned, so these run only if a plugin lists a hook it does not define.

__attribute__((weak)) void exports_levee_policy_policy_on_request(levee_request_t *req,
                                                                   levee_request_action_t *ret) {
  levee_request_free(req);
  levee_request_proceed(ret, levee_mutation());
}

__attribute__((weak)) void exports_levee_policy_policy_on_response(levee_request_t *req,
                                                                    levee_response_head_t *resp,
                                                                    levee_response_action_t *ret) {
  levee_request_free(req);
  levee_response_head_free(resp);
  levee_response_proceed(ret, levee_mutation());
}

__attribute__((weak)) void exports_levee_policy_policy_on_upstream_failure(
    levee_request_t *req, levee_failure_t *failure, levee_fallback_t *ret) {
  levee_request_free(req);
  levee_failure_free(failure);
  levee_fallback_propagate(ret);
}
