/*
 * Native tests of the static-fallback C plugin, with the generated bindings compiled for the
 * build machine and the host imports faked below. Run under AddressSanitizer, they also prove
 * the plugin frees its arguments and returns only heap memory (what the bindings free):
 *
 *   plugins/static-fallback-c/test/run.sh
 *
 * Prints "N passed, N failed" and exits non-zero on any failure or leak.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "levee.h"

static int passed, failed;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (cond) {                                                                  \
      passed++;                                                                  \
    } else {                                                                     \
      failed++;                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
    }                                                                            \
  } while (0)

// === the fake host (the generated bindings call these raw imports) ===

static int64_t served_counter;

void __wasm_import_levee_policy_host_upstream_health(uint8_t *name, size_t len, uint8_t *ret) {
  (void)name;
  (void)len;
  ret[0] = 0; /* none */
}

void __wasm_import_levee_policy_host_cache_get(uint8_t *key, size_t len, uint8_t *ret) {
  (void)key;
  (void)len;
  ret[0] = 0; /* none */
}

int32_t __wasm_import_levee_policy_host_cache_put(uint8_t *key, size_t key_len, uint8_t *value,
                                                  size_t value_len, int32_t ttl) {
  (void)key, (void)key_len, (void)value, (void)value_len, (void)ttl;
  return 1;
}

void __wasm_import_levee_policy_host_counter_add(uint8_t *name, size_t len, int64_t delta) {
  if (len == 6 && memcmp(name, "served", 6) == 0) served_counter += delta;
}

void __wasm_import_levee_policy_host_log(int32_t level, uint8_t *message, size_t len) {
  (void)level, (void)message, (void)len;
}

int64_t __wasm_import_levee_policy_host_now_ms(void) {
  return 1700000000000;
}

// === helpers: arguments are heap memory owned by the hook, as the bindings pass them ===

static levee_bytes_t config_bytes(const char *json) {
  levee_string_t s = levee_string(json);
  return (levee_bytes_t){s.ptr, s.len};
}

static levee_request_t request(const char *request_id) {
  levee_request_t req;
  memset(&req, 0, sizeof req);
  req.method = levee_string("GET");
  req.authority = levee_string("shop.example");
  req.path_with_query = levee_string("/cart");
  req.route = levee_string("shop");
  req.request_id = levee_string(request_id);
  levee_headers_add_str(&req.headers, "accept", "text/html");
  levee_headers_add_str(&req.headers, "x-request-id", request_id);
  return req;
}

static levee_failure_t failure(levee_failure_kind_t kind) {
  levee_failure_t f;
  memset(&f, 0, sizeof f);
  f.kind = kind;
  f.cluster = levee_string("shop");
  f.attempt = 1;
  return f;
}

static bool init(const char *json, char **error) {
  levee_bytes_t config = config_bytes(json);
  levee_hooks_t hooks = 0;
  levee_string_t err = {NULL, 0};
  bool ok = exports_levee_policy_policy_init(&config, &hooks, &err);
  *error = ok ? NULL : levee_cstr(&err);
  plugin_string_free(&err);
  if (ok && hooks != LEVEE_HOOK_ON_UPSTREAM_FAILURE) {
    fprintf(stderr, "unexpected hooks %u\n", hooks);
    return false;
  }
  return ok;
}

static char *body_text(const levee_response_t *resp) {
  levee_string_t s = {resp->body.ptr, resp->body.len};
  return levee_cstr(&s);
}

static bool header_is(const levee_response_t *resp, const char *name, const char *value) {
  const levee_bytes_t *got = levee_headers_get(&resp->headers, name);
  return got != NULL && got->len == strlen(value) && memcmp(got->ptr, value, got->len) == 0;
}

// === tests ===

static void test_default_page(void) {
  char *error = NULL;
  CHECK(init("{\"brand\": \"Acme <Shop>\"}", &error));
  for (levee_failure_kind_t kind = 0; kind < LEVEE_FAILURE_KINDS; kind++) {
    levee_request_t req = request("req-<1>");
    levee_failure_t f = failure(kind);
    levee_fallback_t ret;
    exports_levee_policy_policy_on_upstream_failure(&req, &f, &ret);
    CHECK(ret.tag == LEVEE_POLICY_TYPES_FALLBACK_DECISION_SERVE);
    CHECK(ret.val.serve.status == 503);
    CHECK(header_is(&ret.val.serve, "retry-after", "30"));
    CHECK(header_is(&ret.val.serve, "content-type", "text/html; charset=utf-8"));
    char *body = body_text(&ret.val.serve);
    CHECK(body != NULL && strstr(body, "<h1>Acme &lt;Shop&gt; is down") != NULL);
    CHECK(body != NULL && strstr(body, "Reference: req-&lt;1&gt;") != NULL);
    CHECK(body != NULL && strstr(body, "try again in 30 seconds") != NULL);
    free(body);
    levee_policy_types_fallback_decision_free(&ret);
  }
  CHECK(served_counter == LEVEE_FAILURE_KINDS);
}

static void test_configured(void) {
  char *error = NULL;
  CHECK(init("{\"status\": 502, \"retry_after\": 5, \"body\": \"down\","
             " \"headers\": {\"X-Brand\": \"acme\"}, \"on\": [\"timeout\"]}",
             &error));
  levee_request_t req = request("r2");
  levee_failure_t f = failure(LEVEE_POLICY_TYPES_FAILURE_KIND_TIMEOUT);
  levee_fallback_t ret;
  exports_levee_policy_policy_on_upstream_failure(&req, &f, &ret);
  CHECK(ret.tag == LEVEE_POLICY_TYPES_FALLBACK_DECISION_SERVE);
  CHECK(ret.val.serve.status == 502);
  CHECK(header_is(&ret.val.serve, "x-brand", "acme"));
  CHECK(header_is(&ret.val.serve, "retry-after", "5"));
  CHECK(header_is(&ret.val.serve, "content-type", "text/plain; charset=utf-8"));
  CHECK(ret.val.serve.body.len == 4 && memcmp(ret.val.serve.body.ptr, "down", 4) == 0);
  levee_policy_types_fallback_decision_free(&ret);

  req = request("r3");
  f = failure(LEVEE_POLICY_TYPES_FAILURE_KIND_RESET);
  exports_levee_policy_policy_on_upstream_failure(&req, &f, &ret);
  CHECK(ret.tag == LEVEE_POLICY_TYPES_FALLBACK_DECISION_PROPAGATE);
  levee_policy_types_fallback_decision_free(&ret);
}

static void test_rejected(void) {
  const char *bad[][2] = {
      {"{\"status\": 199}", "status must be an integer from 200 to 599"},
      {"{\"html\": \"a\", \"body\": \"b\"}", "give html or body, not both"},
      {"{\"headers\": {\"bad name\": \"x\"}}", "headers: invalid header name bad name"},
      {"{\"headers\": {\"x-a\": \"1\\r\\nx-b: 2\"}}", "headers: invalid value for x-a"},
      {"{\"retry_after\": -1}", "retry_after must be an integer from 0 to 86400"},
      {"{\"on\": [\"meteor\"]}", "on: unknown failure kind meteor"},
      {"{\"on\": \"timeout\"}", "on must be a list of failure kinds"},
      {"{\"headers\": {\"x\": 1}}", "headers must be an object of name: string"},
      {"{\"brand\": 7}", "brand must be a string"},
      {"[1]", "config must be a JSON object"},
      {"{", "config is not valid JSON"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *error = NULL;
    CHECK(!init(bad[i][0], &error));
    bool same = error != NULL && strcmp(error, bad[i][1]) == 0;
    if (!same) fprintf(stderr, "config %s: got error \"%s\"\n", bad[i][0], error);
    CHECK(same);
    free(error);
  }
  /* null (no config on the route) means every default. */
  char *error = NULL;
  CHECK(init("null", &error));
}

static void test_headers_override_defaults(void) {
  char *error = NULL;
  CHECK(init("{\"html\": \"<p>x</p>\", \"headers\": {\"Content-Type\": \"text/html\","
             " \"Retry-After\": \"Wed, 21 Oct 2026 07:28:00 GMT\", \"x-a\": \"1\"}}",
             &error));
  levee_request_t req = request("r6");
  levee_failure_t f = failure(LEVEE_POLICY_TYPES_FAILURE_KIND_OVERLOADED);
  levee_fallback_t ret;
  exports_levee_policy_policy_on_upstream_failure(&req, &f, &ret);
  CHECK(ret.tag == LEVEE_POLICY_TYPES_FALLBACK_DECISION_SERVE);
  const levee_headers_t *h = &ret.val.serve.headers;
  CHECK(h->len == 4); /* cache-control, content-type, retry-after, x-a: no duplicates */
  CHECK(header_is(&ret.val.serve, "content-type", "text/html"));
  CHECK(header_is(&ret.val.serve, "retry-after", "Wed, 21 Oct 2026 07:28:00 GMT"));
  CHECK(header_is(&ret.val.serve, "cache-control", "no-store"));
  CHECK(header_is(&ret.val.serve, "x-a", "1"));
  levee_policy_types_fallback_decision_free(&ret);
}

static void test_default_hooks(void) {
  /* Hooks the plugin does not define come from levee.c and must free their arguments too. */
  levee_request_t req = request("r4");
  levee_request_action_t action;
  exports_levee_policy_policy_on_request(&req, &action);
  CHECK(action.tag == LEVEE_POLICY_TYPES_REQUEST_ACTION_PROCEED);
  levee_policy_types_request_action_free(&action);

  req = request("r5");
  levee_response_head_t head = {200, {NULL, 0}};
  levee_headers_add_str(&head.headers, "content-type", "text/plain");
  levee_response_action_t response_action;
  exports_levee_policy_policy_on_response(&req, &head, &response_action);
  CHECK(response_action.tag == LEVEE_POLICY_TYPES_RESPONSE_ACTION_PROCEED);
  levee_policy_types_response_action_free(&response_action);
}

int main(void) {
  test_default_page();
  test_configured();
  test_rejected();
  test_headers_override_defaults();
  test_default_hooks();
  /* Leave no config allocated, so LeakSanitizer sees only real leaks. */
  char *error = NULL;
  init("{\"status\": 0}", &error);
  free(error);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
