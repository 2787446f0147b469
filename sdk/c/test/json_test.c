/*
 * Native tests for levee_json.c (no Wasm needed):
 *
 *   cc -std=c11 -Wall -Wextra -Werror -I sdk/c sdk/c/levee_json.c sdk/c/test/json_test.c \
 *     -o /tmp/json_test && /tmp/json_test
 *
 * Prints "N passed, N failed" and exits non-zero on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "levee_json.h"

static int passed, failed;

#define CHECK(cond)                                                    \
  do {                                                                 \
    if (cond) {                                                        \
      passed++;                                                        \
    } else {                                                           \
      failed++;                                                        \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                  \
  } while (0)

static bool parse(const char *text, levee_json_t *root) {
  return levee_json_parse((const uint8_t *)text, strlen(text), root);
}

static void test_validation(void) {
  levee_json_t root;
  const char *valid[] = {
      "null", " true ", "false", "0", "-12.5e+3", "\"a\\u00e9\\n\"", "[]", "{}",
      "[1, [2, {\"a\": [null]}]]", "{\"a\":1,\"a\":2}", "\n{ \"k\" : \"v\" }\n",
  };
  for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
    CHECK(parse(valid[i], &root));
  }
  const char *invalid[] = {
      "", " ", "nul", "01", "1.", "-", "[1,]", "{\"a\"}", "{\"a\":1,}", "{a:1}", "\"abc",
      "\"\\x\"", "\"\\u12g4\"", "[1] [2]", "\"tab\there\"", "{\"a\":1}}", "tru",
  };
  for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
    bool ok = parse(invalid[i], &root);
    if (ok) fprintf(stderr, "accepted invalid: %s\n", invalid[i]);
    CHECK(!ok);
  }
  /* Depth limit: 100 nested arrays are refused, 10 are fine. */
  char deep[256];
  memset(deep, '[', 100);
  memset(deep + 100, ']', 100);
  deep[200] = '\0';
  CHECK(!parse(deep, &root));
  CHECK(parse("[[[[[[[[[[]]]]]]]]]]", &root));
}

static void test_access(void) {
  levee_json_t root, v;
  CHECK(parse("{\"status\": 503, \"ratio\": 0.25, \"on\": [\"timeout\", \"reset\"],"
              " \"headers\": {\"x-a\": \"1\", \"x-b\": \"two\"}, \"flag\": true,"
              " \"big\": 99999999999999999999, \"neg\": -7, \"esc\\u0041\": \"ok\"}",
              &root));
  CHECK(levee_json_kind(root) == LEVEE_JSON_OBJECT);

  int64_t n = 0;
  CHECK(levee_json_get(root, "status", &v) && levee_json_int(v, &n) && n == 503);
  CHECK(levee_json_get(root, "neg", &v) && levee_json_int(v, &n) && n == -7);
  CHECK(levee_json_get(root, "big", &v) && !levee_json_int(v, &n));
  double d = 0;
  CHECK(levee_json_get(root, "ratio", &v) && !levee_json_int(v, &n));
  CHECK(levee_json_double(v, &d) && d == 0.25);
  bool b = false;
  CHECK(levee_json_get(root, "flag", &v) && levee_json_bool(v, &b) && b);
  CHECK(!levee_json_get(root, "missing", &v));
  CHECK(levee_json_get(root, "escA", &v) && levee_json_string_is(v, "ok"));

  levee_json_t on, cursor = {0}, item;
  CHECK(levee_json_get(root, "on", &on) && levee_json_kind(on) == LEVEE_JSON_ARRAY);
  int count = 0;
  while (levee_json_next(on, &cursor, NULL, &item)) {
    CHECK(levee_json_string_is(item, count == 0 ? "timeout" : "reset"));
    count++;
  }
  CHECK(count == 2);

  levee_json_t headers, key;
  cursor = (levee_json_t){0};
  CHECK(levee_json_get(root, "headers", &headers));
  count = 0;
  while (levee_json_next(headers, &cursor, &key, &item)) {
    char *name = levee_json_string(key, NULL);
    char *value = levee_json_string(item, NULL);
    CHECK(name != NULL && value != NULL);
    CHECK(strcmp(name, count == 0 ? "x-a" : "x-b") == 0);
    CHECK(strcmp(value, count == 0 ? "1" : "two") == 0);
    free(name);
    free(value);
    count++;
  }
  CHECK(count == 2);

  /* Empty containers iterate nothing. */
  CHECK(parse("[ ]", &root));
  cursor = (levee_json_t){0};
  CHECK(!levee_json_next(root, &cursor, NULL, &item));
}

static void test_strings(void) {
  levee_json_t v;
  size_t len = 0;
  CHECK(parse("\"a\\\"b\\\\c\\/d\\n\\u00e9\\u20ac\\ud83d\\ude00\\ud800x\"", &v));
  char *s = levee_json_string(v, &len);
  const char *want = "a\"b\\c/d\n\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbdx";
  CHECK(s != NULL && len == strlen(want) && memcmp(s, want, len) == 0);
  free(s);
  CHECK(parse("\"\"", &v));
  s = levee_json_string(v, &len);
  CHECK(s != NULL && len == 0 && s[0] == '\0');
  free(s);
  CHECK(parse("12", &v) && levee_json_string(v, NULL) == NULL);
  CHECK(!levee_json_string_is(v, "12"));
}

int main(void) {
  test_validation();
  test_access();
  test_strings();
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
