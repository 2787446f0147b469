/*
 * static-fallback (C): when forwarding fails, answer with a branded maintenance page and
 * `retry-after` instead of the gateway's JSON error. The same policy as the Rust
 * `static-fallback` plugin; the config is documented in README.md.
 */
#include <stdlib.h>
#include <string.h>

#include "levee.h"
#include "levee_json.h"

#define MAX_EXTRA_HEADERS 32 /* keep in step with the init error message */
#define MAX_HEADERS (MAX_EXTRA_HEADERS + 3)

/** The validated config of this instance (one route's config per instance). */
static struct {
  uint16_t status;
  uint32_t retry_after;
  /** The whole body when given by `html` or `body`; NULL for the built-in page. */
  char *body;
  size_t body_len;
  /** The brand, HTML-escaped, for the built-in page. */
  char *brand_html;
  /** Every response header: the defaults the config's `headers` do not override, then those. */
  size_t header_count;
  char *header_names[MAX_HEADERS];
  char *header_values[MAX_HEADERS];
  /** on[kind]: serve the page for this failure kind. */
  bool on[LEVEE_FAILURE_KINDS];
} config;

// === impl the page ===

static const char PAGE_HEAD[] =
    "<!doctype html>\n"
    "<html lang=\"en\">\n"
    "<head>\n"
    "<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>";
static const char PAGE_STYLE[] =
    ": back soon</title>\n"
    "<style>\n"
    "body{margin:0;font-family:system-ui,sans-serif;background:#f4f6f8;color:#1f2933}\n"
    "main{max-width:34rem;margin:12vh auto;padding:2rem;background:#fff;border-radius:12px;"
    "box-shadow:0 2px 12px rgba(0,0,0,.08)}\n"
    "h1{margin-top:0;font-size:1.6rem}.ref{color:#616e7c;font-size:.85rem}\n"
    "</style>\n"
    "</head>\n"
    "<body>\n"
    "<main>\n"
    "<h1>";

/** The built-in page for one request, as `*resp`'s body. */
static bool set_builtin_page(levee_response_t *resp, const levee_string_t *request_id) {
  levee_buf_t page = {0};
  levee_buf_str(&page, PAGE_HEAD);
  levee_buf_str(&page, config.brand_html);
  levee_buf_str(&page, PAGE_STYLE);
  levee_buf_str(&page, config.brand_html);
  levee_buf_str(&page, " is down for maintenance</h1>\n<p>We are working on it. ");
  levee_buf_str(&page, "Please try again in ");
  levee_buf_u64(&page, config.retry_after);
  levee_buf_str(&page, " seconds.</p>\n<p class=\"ref\">Reference: ");
  levee_buf_html(&page, request_id->ptr, request_id->len);
  levee_buf_str(&page, "</p>\n</main>\n</body>\n</html>\n");
  bool ok = !page.failed && levee_response_body(resp, page.ptr, page.len);
  levee_buf_free(&page);
  return ok;
}

/** `len` bytes of `text`, HTML-escaped, in a new NUL-terminated buffer (NULL on failure). */
static char *html_escape(const char *text, size_t len) {
  levee_buf_t buf = {0};
  levee_buf_html(&buf, text, len);
  char *out = levee_buf_cstr(&buf);
  levee_buf_free(&buf);
  return out;
}

// === impl config ===

/** A heap copy of a NUL-terminated string (strdup is not in C11). */
static char *dup_text(const char *text) {
  size_t len = strlen(text) + 1;
  char *out = malloc(len);
  if (out != NULL) memcpy(out, text, len);
  return out;
}

static void reset_config(void) {
  free(config.body);
  free(config.brand_html);
  for (size_t i = 0; i < config.header_count; i++) {
    free(config.header_names[i]);
    free(config.header_values[i]);
  }
  memset(&config, 0, sizeof config);
}

/** Reads an optional integer member into `*out` within [min, max]. */
static bool read_int(levee_json_t root, const char *key, int64_t min, int64_t max, int64_t *out,
                     levee_string_t *err) {
  levee_json_t value;
  if (!levee_json_get(root, key, &value) || levee_json_kind(value) == LEVEE_JSON_NULL) {
    return true;
  }
  int64_t n;
  if (!levee_json_int(value, &n) || n < min || n > max) {
    levee_buf_t message = {0};
    levee_buf_str(&message, key);
    levee_buf_str(&message, " must be an integer from ");
    levee_buf_i64(&message, min);
    levee_buf_str(&message, " to ");
    levee_buf_i64(&message, max);
    return levee_init_error_buf(err, &message);
  }
  *out = n;
  return true;
}

/** Reads an optional string member; `*out` stays NULL when absent. */
static bool read_string(levee_json_t root, const char *key, char **out, size_t *len,
                        levee_string_t *err) {
  levee_json_t value;
  if (!levee_json_get(root, key, &value) || levee_json_kind(value) == LEVEE_JSON_NULL) {
    return true;
  }
  if (levee_json_kind(value) != LEVEE_JSON_STRING) {
    levee_buf_t message = {0};
    levee_buf_str(&message, key);
    levee_buf_str(&message, " must be a string");
    return levee_init_error_buf(err, &message);
  }
  *out = levee_json_string(value, len);
  return *out != NULL || levee_init_error(err, "out of memory");
}

/** An HTTP field name: one or more token characters (RFC 9110), any case. */
static bool valid_header_name(const char *name) {
  if (name[0] == '\0') return false;
  for (const char *p = name; *p != '\0'; p++) {
    char c = *p;
    bool token = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
    if (!token) return false;
  }
  return true;
}

/** An HTTP field value: visible characters, spaces, tabs and obs-text; no CR, LF or NUL. */
static bool valid_header_value(const char *value, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)value[i];
    if ((c < 0x20 && c != '\t') || c == 0x7F) return false;
  }
  return true;
}

static bool add_header(const char *name, const char *value, levee_string_t *err) {
  if (config.header_count == MAX_HEADERS) return levee_init_error(err, "too many headers");
  size_t i = config.header_count;
  config.header_names[i] = dup_text(name);
  config.header_values[i] = dup_text(value);
  if (config.header_names[i] == NULL || config.header_values[i] == NULL) {
    free(config.header_names[i]);
    free(config.header_values[i]);
    return levee_init_error(err, "out of memory");
  }
  for (char *p = config.header_names[i]; *p != '\0'; p++) {
    if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
  }
  config.header_count++;
  return true;
}

/** Whether the config's `headers` object sets `name` (any case). */
static bool overridden(levee_json_t headers, const char *name) {
  levee_json_t cursor = {0}, key, value;
  while (levee_json_next(headers, &cursor, &key, &value)) {
    char *got = levee_json_string(key, NULL);
    bool same = got != NULL && strlen(got) == strlen(name);
    for (size_t i = 0; same && got[i] != '\0'; i++) {
      char c = got[i] >= 'A' && got[i] <= 'Z' ? (char)(got[i] - 'A' + 'a') : got[i];
      same = c == name[i];
    }
    free(got);
    if (same) return true;
  }
  return false;
}

/**
 * Fills config.header_*: `content-type`, `retry-after` and `cache-control: no-store` unless
 * `headers` sets them (a `headers` entry wins), then every `headers` entry.
 */
static bool read_headers(levee_json_t root, const char *content_type, levee_string_t *err) {
  levee_json_t headers = {"{}", 2}, cursor = {0}, name, value;
  if (levee_json_get(root, "headers", &headers) && levee_json_kind(headers) == LEVEE_JSON_NULL) {
    headers = (levee_json_t){"{}", 2};
  }
  if (levee_json_kind(headers) != LEVEE_JSON_OBJECT) {
    return levee_init_error(err, "headers must be an object of name: string");
  }

  levee_buf_t retry_after = {0};
  levee_buf_u64(&retry_after, config.retry_after);
  char *retry_after_text = levee_buf_cstr(&retry_after);
  levee_buf_free(&retry_after);
  bool ok = retry_after_text != NULL || levee_init_error(err, "out of memory");
  if (ok && !overridden(headers, "content-type")) {
    ok = add_header("content-type", content_type, err);
  }
  if (ok && !overridden(headers, "retry-after")) {
    ok = add_header("retry-after", retry_after_text, err);
  }
  if (ok && !overridden(headers, "cache-control")) {
    ok = add_header("cache-control", "no-store", err);
  }
  free(retry_after_text);

  size_t extra = 0;
  while (ok && levee_json_next(headers, &cursor, &name, &value)) {
    if (levee_json_kind(value) != LEVEE_JSON_STRING) {
      return levee_init_error(err, "headers must be an object of name: string");
    }
    if (++extra > MAX_EXTRA_HEADERS) {
      return levee_init_error(err, "headers: at most 32 entries");
    }
    size_t value_len = 0;
    char *name_text = levee_json_string(name, NULL);
    char *value_text = levee_json_string(value, &value_len);
    if (name_text == NULL || value_text == NULL) {
      ok = levee_init_error(err, "out of memory");
    } else if (!valid_header_name(name_text)) {
      levee_buf_t message = {0};
      levee_buf_str(&message, "headers: invalid header name ");
      levee_buf_str(&message, name_text);
      ok = levee_init_error_buf(err, &message);
    } else if (!valid_header_value(value_text, value_len)) {
      levee_buf_t message = {0};
      levee_buf_str(&message, "headers: invalid value for ");
      levee_buf_str(&message, name_text);
      ok = levee_init_error_buf(err, &message);
    } else {
      ok = add_header(name_text, value_text, err);
    }
    free(name_text);
    free(value_text);
  }
  return ok;
}

static bool read_kinds(levee_json_t root, levee_string_t *err) {
  levee_json_t on, cursor = {0}, item;
  if (!levee_json_get(root, "on", &on) || levee_json_kind(on) == LEVEE_JSON_NULL) {
    for (size_t kind = 0; kind < LEVEE_FAILURE_KINDS; kind++) config.on[kind] = true;
    return true;
  }
  if (levee_json_kind(on) != LEVEE_JSON_ARRAY) {
    return levee_init_error(err, "on must be a list of failure kinds");
  }
  while (levee_json_next(on, &cursor, NULL, &item)) {
    char *name = levee_json_string(item, NULL);
    levee_failure_kind_t kind;
    bool known = name != NULL && levee_failure_kind_parse(name, &kind);
    if (!known) {
      levee_buf_t message = {0};
      levee_buf_str(&message, "on: unknown failure kind ");
      levee_buf_str(&message, name != NULL ? name : "(not a string)");
      free(name);
      return levee_init_error_buf(err, &message);
    }
    free(name);
    config.on[kind] = true;
  }
  return true;
}

static bool parse_config(const levee_bytes_t *bytes, levee_string_t *err) {
  levee_json_t root;
  if (!levee_json_parse(bytes->ptr, bytes->len, &root)) {
    return levee_init_error(err, "config is not valid JSON");
  }
  if (levee_json_kind(root) == LEVEE_JSON_NULL) {
    root.ptr = "{}";
    root.len = 2;
  }
  if (levee_json_kind(root) != LEVEE_JSON_OBJECT) {
    return levee_init_error(err, "config must be a JSON object");
  }

  int64_t status = 503, retry_after = 30;
  if (!read_int(root, "status", 200, 599, &status, err)) return false;
  if (!read_int(root, "retry_after", 0, 86400, &retry_after, err)) return false;
  config.status = (uint16_t)status;
  config.retry_after = (uint32_t)retry_after;

  char *html = NULL, *text = NULL, *brand = NULL;
  size_t html_len = 0, text_len = 0, brand_len = 0;
  bool ok = read_string(root, "html", &html, &html_len, err) &&
            read_string(root, "body", &text, &text_len, err) &&
            read_string(root, "brand", &brand, &brand_len, err);
  if (ok && html != NULL && text != NULL) {
    ok = levee_init_error(err, "give html or body, not both");
  }
  const char *content_type = "text/html; charset=utf-8";
  if (ok && html != NULL) {
    config.body = html;
    config.body_len = html_len;
    html = NULL;
  } else if (ok && text != NULL) {
    config.body = text;
    config.body_len = text_len;
    text = NULL;
    content_type = "text/plain; charset=utf-8";
  }
  if (ok) {
    config.brand_html = brand != NULL ? html_escape(brand, brand_len) : dup_text("Levee");
    ok = config.brand_html != NULL || levee_init_error(err, "out of memory");
  }
  free(html);
  free(text);
  free(brand);
  return ok && read_headers(root, content_type, err) && read_kinds(root, err);
}

// === impl policy ===

bool exports_levee_policy_policy_init(levee_bytes_t *bytes, levee_hooks_t *ret,
                                      levee_string_t *err) {
  reset_config();
  bool ok = parse_config(bytes, err);
  plugin_list_u8_free(bytes);
  if (!ok) {
    reset_config();
    return false;
  }
  *ret = LEVEE_HOOK_ON_UPSTREAM_FAILURE;
  return true;
}

void exports_levee_policy_policy_on_upstream_failure(levee_request_t *req, levee_failure_t *failure,
                                                     levee_fallback_t *ret) {
  if (failure->kind >= LEVEE_FAILURE_KINDS || !config.on[failure->kind]) {
    levee_fallback_propagate(ret);
    levee_request_free(req);
    levee_failure_free(failure);
    return;
  }

  levee_response_t resp = levee_response(config.status);
  bool ok = true;
  for (size_t i = 0; ok && i < config.header_count; i++) {
    ok = levee_response_header(&resp, config.header_names[i], config.header_values[i]);
  }
  if (ok) {
    ok = config.body != NULL ? levee_response_body(&resp, config.body, config.body_len)
                             : set_builtin_page(&resp, &req->request_id);
  }

  if (ok) {
    levee_fallback_serve(ret, resp);
    levee_counter_add("served", 1);
  } else {
    /* Out of memory: let the gateway's own fallback answer. */
    levee_policy_types_local_response_free(&resp);
    levee_fallback_propagate(ret);
  }
  levee_request_free(req);
  levee_failure_free(failure);
}
