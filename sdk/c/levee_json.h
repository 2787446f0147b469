/*
 * levee_json.h: a small JSON reader for plugin configs.
 *
 * `init` receives the route's config as JSON text. This reader validates it once
 * (`levee_json_parse`), then hands out views (`levee_json_t`, a slice of the input, no copies)
 * that can be looked up and converted. Only strings are copied, when they are read
 * (`levee_json_string`, which unescapes into a malloc'd, NUL-terminated buffer).
 *
 * Limits: nesting depth 64; numbers are read as 64-bit integers or doubles with strtod-like
 * rules (no locale); \u escapes (with surrogate pairs) become UTF-8.
 */
#ifndef LEVEE_JSON_H
#define LEVEE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A view of one JSON value inside the parsed text (not NUL-terminated). */
typedef struct {
  const char *ptr;
  size_t len;
} levee_json_t;

/** The type of a JSON value. */
typedef enum {
  LEVEE_JSON_INVALID = 0,
  LEVEE_JSON_NULL,
  LEVEE_JSON_BOOL,
  LEVEE_JSON_NUMBER,
  LEVEE_JSON_STRING,
  LEVEE_JSON_ARRAY,
  LEVEE_JSON_OBJECT,
} levee_json_kind_t;

/**
 * Validates `len` bytes as one JSON document (surrounding whitespace allowed) and sets `*root`
 * to its value. Returns false for anything that is not exactly one valid JSON value.
 */
bool levee_json_parse(const uint8_t *data, size_t len, levee_json_t *root);

/** The type of a value from this reader. */
levee_json_kind_t levee_json_kind(levee_json_t value);

/**
 * Looks up member `key` of an object. Returns false when `object` is not an object or has no
 * such member (the last one wins when a key repeats).
 */
bool levee_json_get(levee_json_t object, const char *key, levee_json_t *out);

/**
 * Iterates an array or object. Start with `*cursor = (levee_json_t){0}`; each call sets
 * `*value` (and `*key` for objects, when not NULL) and returns true, then false at the end.
 */
bool levee_json_next(levee_json_t container, levee_json_t *cursor, levee_json_t *key,
                     levee_json_t *value);

/** Reads an integer (no fraction or exponent) that fits in int64. */
bool levee_json_int(levee_json_t value, int64_t *out);

/** Reads a number as a double. */
bool levee_json_double(levee_json_t value, double *out);

/** Reads `true` or `false`. */
bool levee_json_bool(levee_json_t value, bool *out);

/**
 * Unescapes a string into a new NUL-terminated buffer (free it with `free`), setting `*len`
 * when not NULL. Returns NULL when `value` is not a string or memory runs out.
 */
char *levee_json_string(levee_json_t value, size_t *len);

/** True when `value` is a string equal to `text`. */
bool levee_json_string_is(levee_json_t value, const char *text);

#ifdef __cplusplus
}
#endif

#endif /* LEVEE_JSON_H */
