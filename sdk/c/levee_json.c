/*
 * levee_json.c: the JSON reader declared in levee_json.h.
 *
 * `levee_json_parse` is the only function that sees untrusted text: it validates the whole
 * document with a recursive-descent skipper. Every other function works on views that came
 * out of a successful parse, so they only need to skip values, never to diagnose them.
 */
#include "levee_json.h"

#include <stdlib.h>
#include <string.h>

#define LEVEE_JSON_MAX_DEPTH 64

// === impl validation ===

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
    p++;
  }
  return p;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Skips a string starting at the opening quote; returns the position after the closing one. */
static const char *skip_string(const char *p, const char *end) {
  p++; /* opening quote */
  while (p < end) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') {
      return p + 1;
    }
    if (c < 0x20) {
      return NULL;
    }
    if (c == '\\') {
      p++;
      if (p >= end) return NULL;
      switch (*p) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
          p++;
          break;
        case 'u':
          if (end - p < 5) return NULL;
          for (int i = 1; i <= 4; i++) {
            if (hex_value(p[i]) < 0) return NULL;
          }
          p += 5;
          break;
        default:
          return NULL;
      }
    } else {
      p++;
    }
  }
  return NULL;
}

static const char *skip_digits(const char *p, const char *end) {
  const char *start = p;
  while (p < end && *p >= '0' && *p <= '9') p++;
  return p == start ? NULL : p;
}

static const char *skip_number(const char *p, const char *end) {
  if (p < end && *p == '-') p++;
  if (p < end && *p == '0') {
    p++;
  } else {
    p = skip_digits(p, end);
    if (p == NULL) return NULL;
  }
  if (p < end && *p == '.') {
    p = skip_digits(p + 1, end);
    if (p == NULL) return NULL;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    p = skip_digits(p, end);
  }
  return p;
}

static const char *skip_literal(const char *p, const char *end, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(end - p) < n || memcmp(p, word, n) != 0) return NULL;
  return p + n;
}

/* Skips one value at `p` (no leading whitespace); NULL when it is not valid JSON. */
static const char *skip_value(const char *p, const char *end, int depth) {
  if (p >= end || depth > LEVEE_JSON_MAX_DEPTH) return NULL;
  switch (*p) {
    case '"':
      return skip_string(p, end);
    case 't':
      return skip_literal(p, end, "true");
    case 'f':
      return skip_literal(p, end, "false");
    case 'n':
      return skip_literal(p, end, "null");
    case '[': {
      p = skip_ws(p + 1, end);
      if (p < end && *p == ']') return p + 1;
      for (;;) {
        p = skip_value(p, end, depth + 1);
        if (p == NULL) return NULL;
        p = skip_ws(p, end);
        if (p >= end) return NULL;
        if (*p == ']') return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1, end);
      }
    }
    case '{': {
      p = skip_ws(p + 1, end);
      if (p < end && *p == '}') return p + 1;
      for (;;) {
        if (p >= end || *p != '"') return NULL;
        p = skip_string(p, end);
        if (p == NULL) return NULL;
        p = skip_ws(p, end);
        if (p >= end || *p != ':') return NULL;
        p = skip_ws(p + 1, end);
        p = skip_value(p, end, depth + 1);
        if (p == NULL) return NULL;
        p = skip_ws(p, end);
        if (p >= end) return NULL;
        if (*p == '}') return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1, end);
      }
    }
    default:
      if (*p == '-' || (*p >= '0' && *p <= '9')) return skip_number(p, end);
      return NULL;
  }
}

bool levee_json_parse(const uint8_t *data, size_t len, levee_json_t *root) {
  const char *start = (const char *)data;
  const char *end = start + len;
  const char *p = skip_ws(start, end);
  const char *value_end = skip_value(p, end, 0);
  if (value_end == NULL || skip_ws(value_end, end) != end) {
    return false;
  }
  root->ptr = p;
  root->len = (size_t)(value_end - p);
  return true;
}

// === impl access ===

levee_json_kind_t levee_json_kind(levee_json_t value) {
  if (value.ptr == NULL || value.len == 0) return LEVEE_JSON_INVALID;
  switch (value.ptr[0]) {
    case 'n': return LEVEE_JSON_NULL;
    case 't': case 'f': return LEVEE_JSON_BOOL;
    case '"': return LEVEE_JSON_STRING;
    case '[': return LEVEE_JSON_ARRAY;
    case '{': return LEVEE_JSON_OBJECT;
    default: return LEVEE_JSON_NUMBER;
  }
}

bool levee_json_next(levee_json_t container, levee_json_t *cursor, levee_json_t *key,
                     levee_json_t *value) {
  levee_json_kind_t kind = levee_json_kind(container);
  if (kind != LEVEE_JSON_ARRAY && kind != LEVEE_JSON_OBJECT) return false;
  const char *end = container.ptr + container.len - 1; /* the closing bracket */
  const char *p;
  if (cursor->ptr == NULL) {
    p = skip_ws(container.ptr + 1, end);
  } else {
    p = skip_ws(cursor->ptr + cursor->len, end);
    if (p >= end || *p != ',') return false;
    p = skip_ws(p + 1, end);
  }
  if (p >= end) return false;
  if (kind == LEVEE_JSON_OBJECT) {
    const char *key_end = skip_string(p, end);
    if (key_end == NULL) return false;
    if (key != NULL) {
      key->ptr = p;
      key->len = (size_t)(key_end - p);
    }
    p = skip_ws(key_end, end);
    p = skip_ws(p + 1, end); /* the colon */
  }
  const char *value_end = skip_value(p, end, 0);
  if (value_end == NULL) return false;
  value->ptr = p;
  value->len = (size_t)(value_end - p);
  *cursor = *value;
  return true;
}

bool levee_json_get(levee_json_t object, const char *key, levee_json_t *out) {
  if (levee_json_kind(object) != LEVEE_JSON_OBJECT) return false;
  levee_json_t cursor = {0}, name, value;
  bool found = false;
  while (levee_json_next(object, &cursor, &name, &value)) {
    if (levee_json_string_is(name, key)) {
      *out = value;
      found = true;
    }
  }
  return found;
}

bool levee_json_int(levee_json_t value, int64_t *out) {
  if (levee_json_kind(value) != LEVEE_JSON_NUMBER) return false;
  const char *p = value.ptr, *end = value.ptr + value.len;
  bool negative = false;
  if (*p == '-') {
    negative = true;
    p++;
  }
  uint64_t magnitude = 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9') return false; /* a fraction or an exponent */
    uint64_t digit = (uint64_t)(*p - '0');
    if (magnitude > (UINT64_MAX - digit) / 10) return false;
    magnitude = magnitude * 10 + digit;
  }
  if (negative) {
    if (magnitude > (uint64_t)INT64_MAX + 1) return false;
    *out = magnitude == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)magnitude;
  } else {
    if (magnitude > (uint64_t)INT64_MAX) return false;
    *out = (int64_t)magnitude;
  }
  return true;
}

bool levee_json_double(levee_json_t value, double *out) {
  if (levee_json_kind(value) != LEVEE_JSON_NUMBER) return false;
  char buffer[64];
  if (value.len >= sizeof buffer) return false;
  memcpy(buffer, value.ptr, value.len);
  buffer[value.len] = '\0';
  char *rest = NULL;
  *out = strtod(buffer, &rest);
  return rest == buffer + value.len;
}

bool levee_json_bool(levee_json_t value, bool *out) {
  if (levee_json_kind(value) != LEVEE_JSON_BOOL) return false;
  *out = value.ptr[0] == 't';
  return true;
}

/* Appends code point `cp` as UTF-8. */
static char *put_utf8(char *o, uint32_t cp) {
  if (cp < 0x80) {
    *o++ = (char)cp;
  } else if (cp < 0x800) {
    *o++ = (char)(0xC0 | (cp >> 6));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | (cp >> 12));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | (cp >> 18));
    *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

static uint32_t read_hex4(const char *p) {
  return (uint32_t)(hex_value(p[0]) << 12 | hex_value(p[1]) << 8 | hex_value(p[2]) << 4 |
                    hex_value(p[3]));
}

char *levee_json_string(levee_json_t value, size_t *len) {
  if (levee_json_kind(value) != LEVEE_JSON_STRING) return NULL;
  /* Unescaping never grows the text: \uXXXX (6 bytes) gives at most 3, a pair (12) gives 4. */
  char *out = malloc(value.len);
  if (out == NULL) return NULL;
  const char *p = value.ptr + 1, *end = value.ptr + value.len - 1;
  char *o = out;
  while (p < end) {
    if (*p != '\\') {
      *o++ = *p++;
      continue;
    }
    p++;
    char c = *p++;
    switch (c) {
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {
        uint32_t cp = read_hex4(p);
        p += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
          uint32_t low = read_hex4(p + 2);
          if (low >= 0xDC00 && low < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            p += 6;
          }
        }
        if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD; /* a lone surrogate */
        o = put_utf8(o, cp);
        break;
      }
      default: *o++ = c; break; /* \" \\ \/ */
    }
  }
  *o = '\0';
  if (len != NULL) *len = (size_t)(o - out);
  return out;
}

bool levee_json_string_is(levee_json_t value, const char *text) {
  if (levee_json_kind(value) != LEVEE_JSON_STRING) return false;
  size_t n = strlen(text);
  /* Fast path: no escapes, compare in place. */
  if (value.len == n + 2 && memcmp(value.ptr + 1, text, n) == 0) return true;
  if (memchr(value.ptr, '\\', value.len) == NULL) return false;
  size_t got_len;
  char *got = levee_json_string(value, &got_len);
  bool equal = got != NULL && got_len == n && memcmp(got, text, n) == 0;
  free(got);
  return equal;
}
