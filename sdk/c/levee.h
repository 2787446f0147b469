/*
 * levee.h: helpers for Levee policy plugins written in C.
 *
 * The bindings themselves (`plugin.h`, `plugin.c`, `plugin_component_type.o`) are generated from
 * sdk/wit/levee.wit by `wit-bindgen c` at build time (sdk/c/build.sh), so they cannot drift from
 * the contract. This header adds short names for the generated types, builders for responses,
 * header lists and mutations, constructors for every decision, and the host functions with C
 * strings.
 *
 * Memory rules of the generated bindings (the ones that matter):
 * - Arguments of an exported hook are owned by the hook: free them before returning
 *   (`levee_request_free(req)`, ...). Pooled instances are reused, so a leak adds up.
 * - Whatever a hook returns is freed by the bindings after the host has copied it, so it must be
 *   heap memory. Every builder here copies its input into fresh heap memory.
 * - Values returned by host imports (`levee_cache_get`) belong to the caller.
 *
 * Hooks you do not define get weak defaults from levee.c (proceed / propagate, arguments freed),
 * so a plugin defines `exports_levee_policy_policy_init` and only the hooks it lists there.
 */
#ifndef LEVEE_H
#define LEVEE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* === short names for the generated types === */

typedef plugin_string_t levee_string_t;
typedef plugin_list_u8_t levee_bytes_t;
typedef levee_policy_types_header_list_t levee_headers_t;
typedef levee_policy_types_request_head_t levee_request_t;
typedef levee_policy_types_response_head_t levee_response_head_t;
typedef levee_policy_types_local_response_t levee_response_t;
typedef levee_policy_types_header_mutation_t levee_mutation_t;
typedef levee_policy_types_upstream_failure_t levee_failure_t;
typedef levee_policy_types_failure_kind_t levee_failure_kind_t;
typedef levee_policy_types_cluster_health_t levee_cluster_health_t;
typedef levee_policy_types_request_action_t levee_request_action_t;
typedef levee_policy_types_response_action_t levee_response_action_t;
typedef levee_policy_types_fallback_decision_t levee_fallback_t;
typedef levee_policy_types_hooks_t levee_hooks_t;
typedef levee_policy_types_log_level_t levee_log_level_t;

#define LEVEE_HOOK_ON_REQUEST LEVEE_POLICY_TYPES_HOOKS_ON_REQUEST
#define LEVEE_HOOK_ON_RESPONSE LEVEE_POLICY_TYPES_HOOKS_ON_RESPONSE
#define LEVEE_HOOK_ON_UPSTREAM_FAILURE LEVEE_POLICY_TYPES_HOOKS_ON_UPSTREAM_FAILURE

#define LEVEE_LOG_TRACE LEVEE_POLICY_TYPES_LOG_LEVEL_TRACE
#define LEVEE_LOG_DEBUG LEVEE_POLICY_TYPES_LOG_LEVEL_DEBUG
#define LEVEE_LOG_INFO LEVEE_POLICY_TYPES_LOG_LEVEL_INFO
#define LEVEE_LOG_WARN LEVEE_POLICY_TYPES_LOG_LEVEL_WARN
#define LEVEE_LOG_ERROR LEVEE_POLICY_TYPES_LOG_LEVEL_ERROR

/** The number of failure kinds (they are numbered 0 to LEVEE_FAILURE_KINDS - 1). */
#define LEVEE_FAILURE_KINDS 8

/* Freeing hook arguments. */
#define levee_request_free levee_policy_types_request_head_free
#define levee_response_head_free levee_policy_types_response_head_free
#define levee_failure_free levee_policy_types_upstream_failure_free

/* === strings and bytes === */

/** A heap copy of a NUL-terminated string (empty on allocation failure). */
levee_string_t levee_string(const char *text);

/** A heap copy of `len` bytes as a string (empty on allocation failure). */
levee_string_t levee_string_n(const void *data, size_t len);

/** True when `s` holds exactly `text`. */
bool levee_string_eq(const levee_string_t *s, const char *text);

/** A NUL-terminated heap copy of `s` (free it), or NULL when memory runs out. */
char *levee_cstr(const levee_string_t *s);

/* === headers === */

/** Appends a header (name lower-cased, both copied). False when memory runs out. */
bool levee_headers_add(levee_headers_t *headers, const char *name, const void *value, size_t len);

/** Appends a header with a NUL-terminated value. */
bool levee_headers_add_str(levee_headers_t *headers, const char *name, const char *value);

/** The first value of header `name` (lower case), or NULL. Borrowed from `headers`. */
const levee_bytes_t *levee_headers_get(const levee_headers_t *headers, const char *name);

/* === responses and mutations === */

/** An empty response with `status` (200 to 599; anything else is a plugin fault). */
levee_response_t levee_response(uint16_t status);

/** Adds a header to a response. */
bool levee_response_header(levee_response_t *resp, const char *name, const char *value);

/** Sets (replaces) the body of a response with a copy of `len` bytes. */
bool levee_response_body(levee_response_t *resp, const void *data, size_t len);

/** An empty header mutation. */
levee_mutation_t levee_mutation(void);

/** Adds a `set` entry (replaces every value of `name`). */
bool levee_mutation_set(levee_mutation_t *mutation, const char *name, const char *value);

/** Adds a name to `remove`. */
bool levee_mutation_remove(levee_mutation_t *mutation, const char *name);

/* === decisions: each fills `*ret` and takes ownership of the values passed in === */

void levee_request_proceed(levee_request_action_t *ret, levee_mutation_t mutation);
void levee_request_respond(levee_request_action_t *ret, levee_response_t resp);
void levee_request_route_to(levee_request_action_t *ret, const char *cluster);

void levee_response_proceed(levee_response_action_t *ret, levee_mutation_t mutation);
void levee_response_store(levee_response_action_t *ret, levee_mutation_t mutation, const char *key,
                          uint32_t ttl_seconds);
void levee_response_replace(levee_response_action_t *ret, levee_response_t resp);

void levee_fallback_propagate(levee_fallback_t *ret);
/** Retry on `cluster`, or on the same cluster when NULL, after `delay_ms`. */
void levee_fallback_retry(levee_fallback_t *ret, const char *cluster, uint32_t delay_ms);
void levee_fallback_serve(levee_fallback_t *ret, levee_response_t resp);
void levee_fallback_serve_cached(levee_fallback_t *ret, const char *key);
void levee_fallback_degrade(levee_fallback_t *ret, const char *cluster);
void levee_fallback_shed(levee_fallback_t *ret, uint16_t status);

/* === failure kinds === */

/** The WIT name of a failure kind (`"connect-failure"`), or `"unknown"`. */
const char *levee_failure_kind_name(levee_failure_kind_t kind);

/** Parses a WIT failure-kind name; false when it names none. */
bool levee_failure_kind_parse(const char *name, levee_failure_kind_t *out);

/* === building text ===
 *
 * wasi-libc's printf family links stdio, which imports WASI (fd_write, fd_seek, fd_close), and a
 * plugin gets no WASI. Build text with this growable buffer instead.
 */

/** A growable byte buffer. Zero-initialize it: `levee_buf_t b = {0};`. */
typedef struct {
  char *ptr;
  size_t len;
  size_t cap;
  /** Set when an allocation failed; appends are then ignored. */
  bool failed;
} levee_buf_t;

void levee_buf_bytes(levee_buf_t *buf, const void *data, size_t len);
void levee_buf_str(levee_buf_t *buf, const char *text);
/** Appends a string's bytes. */
void levee_buf_string(levee_buf_t *buf, const levee_string_t *s);
void levee_buf_u64(levee_buf_t *buf, uint64_t n);
void levee_buf_i64(levee_buf_t *buf, int64_t n);
/** Appends `len` bytes with &, <, >, " and ' replaced by HTML entities. */
void levee_buf_html(levee_buf_t *buf, const void *text, size_t len);
/** A NUL-terminated copy of the contents (free it), or NULL after a failure. */
char *levee_buf_cstr(const levee_buf_t *buf);
/** Frees the buffer and resets it. */
void levee_buf_free(levee_buf_t *buf);

/* === the host === */

/** Logs `message` at `level`. */
void levee_log(levee_log_level_t level, const char *message);

/** Logs the contents of `buf` at `level`. */
void levee_log_buf(levee_log_level_t level, const levee_buf_t *buf);

/** Adds `delta` to counter `name`. */
void levee_counter_add(const char *name, int64_t delta);

/** The health of `cluster`; false when there is no such cluster. */
bool levee_upstream_health(const char *cluster, levee_cluster_health_t *out);

/** The cached value under `key` (free it with `plugin_list_u8_free`); false when absent. */
bool levee_cache_get(const char *key, levee_bytes_t *out);

/** Stores a copy of `len` bytes under `key` for `ttl_ms`; false when the host refuses. */
bool levee_cache_put(const char *key, const void *data, size_t len, uint32_t ttl_ms);

/** Milliseconds since the Unix epoch, from the host. */
uint64_t levee_now_ms(void);

/* === init === */

/**
 * Sets `*err` to `message` and returns false: `return levee_init_error(err, "...")` from
 * `exports_levee_policy_policy_init` rejects the config.
 */
bool levee_init_error(levee_string_t *err, const char *message);

/** Like levee_init_error, with the contents of `message` (which it frees). */
bool levee_init_error_buf(levee_string_t *err, levee_buf_t *message);

#ifdef __cplusplus
}
#endif

#endif /* LEVEE_H */
