"""serve-stale (Python): keep the last good copy of GET responses, and serve it when the
upstream fails. The same policy, config and counters as the Rust ``serve-stale`` plugin.

- ``on-response``: a GET answered 200 is sent on with ``proceed-and-store`` under the key
  ``"GET <authority><path-with-query>"`` for ``ttl_seconds``. Responses that must not be shared
  are not kept: ``cache-control: no-store`` or ``private``, a ``set-cookie``, or a request with
  ``authorization``. In ``plugin`` mode the plugin also ``cache-put``s a head entry beside it
  (key + ``#head``: the time stored and the headers a body needs, ``content-type`` and co.).
- ``on-upstream-failure`` of a GET, for a failure kind in ``on``:
  - ``mode: "plugin"`` (default): ``cache-get`` the body and ``serve`` it as a 200 with the kept
    headers, ``x-levee-stale: plugin`` (name: ``mark_header``) and ``age``, so the marking is the
    plugin's;
  - ``mode: "host"``: answer ``serve-cached(key)``; the host rebuilds the stored response
    (original status and headers) and marks it its own way;
  - with no copy stored, or for another method: ``propagate``.

Config (JSON, every key optional):
    ttl_seconds   how long a copy may be served, 1 to 604800       (default 300)
    mode          "plugin" or "host", see above                     (default "plugin")
    mark_header   the marking header in "plugin" mode               (default "x-levee-stale")
    on            failure kinds that serve the copy      (default: every kind but rate-limited)

Counters: ``stored``, ``served_stale``, ``stale_miss``.
"""

import json
from typing import Any, Dict, Optional

from componentize_py_types import Err
from levee_sdk import (
    DefaultPolicy,
    failure_kind,
    header,
    kind_name,
    mutation,
    parse_config,
    response,
)
from wit_world.imports import host
from wit_world.imports.types import (
    FallbackDecision,
    FallbackDecision_Propagate,
    FallbackDecision_Serve,
    FallbackDecision_ServeCached,
    FailureKind,
    Hooks,
    LogLevel,
    RequestHead,
    ResponseAction,
    ResponseAction_Proceed,
    ResponseAction_ProceedAndStore,
    ResponseHead,
    StoreSpec,
    UpstreamFailure,
)

MAX_TTL_SECONDS = 7 * 24 * 3600
HEAD_SUFFIX = "#head"
# Response headers kept with the copy in plugin mode: those needed to use the body.
KEPT_HEADERS = (
    "content-type",
    "content-encoding",
    "content-language",
    "etag",
    "last-modified",
    "vary",
)


class Settings:
    """The validated config of one instance."""

    def __init__(self, config: Dict[str, Any]) -> None:
        ttl = config.get("ttl_seconds", 300)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_SECONDS:
            raise Err(f"ttl_seconds must be an integer from 1 to {MAX_TTL_SECONDS}")
        self.ttl_seconds: int = ttl

        on = config.get("on")
        if on is None:
            # A rate limit is the gateway refusing on purpose: a stale copy should not undo it.
            self.on = set(FailureKind) - {FailureKind.RATE_LIMITED}
        elif isinstance(on, list) and all(isinstance(name, str) for name in on):
            self.on = {failure_kind(name) for name in on}
        else:
            raise Err("on must be a list of failure kinds")

        mode = config.get("mode", "plugin")
        if mode not in ("plugin", "host"):
            raise Err('mode must be "plugin" or "host"')
        self.mode: str = mode

        name = config.get("mark_header", "x-levee-stale")
        if not isinstance(name, str) or not name:
            raise Err("mark_header must be a non-empty string")
        self.mark_header: str = name.lower()


# One component instance serves one route's config: `init` sets it, the hooks read it.
SETTINGS: Optional[Settings] = None


def settings() -> Settings:
    if SETTINGS is None:
        raise RuntimeError("hook called before init")
    return SETTINGS


def cache_key(req: RequestHead) -> str:
    return f"{req.method} {req.authority}{req.path_with_query}"


def shareable(req: RequestHead, resp: ResponseHead) -> bool:
    """Whether the response may be kept and served to anyone."""
    if header(req.headers, "authorization") is not None:
        return False
    if header(resp.headers, "set-cookie") is not None:
        return False
    cache_control = (header(resp.headers, "cache-control") or "").lower()
    directives = {part.strip().split("=")[0].strip() for part in cache_control.split(",")}
    return not ({"no-store", "private"} & directives)


class Policy(DefaultPolicy):
    """The exported ``levee:policy/policy`` interface (``on-request`` is the default, unused)."""

    def init(self, config: bytes) -> Hooks:
        global SETTINGS
        SETTINGS = Settings(parse_config(config))
        return Hooks.ON_RESPONSE | Hooks.ON_UPSTREAM_FAILURE

    def on_response(self, req: RequestHead, resp: ResponseHead) -> ResponseAction:
        if req.method != "GET" or resp.status != 200 or not shareable(req, resp):
            return ResponseAction_Proceed(mutation())
        conf = settings()
        key = cache_key(req)
        if conf.mode == "plugin":
            kept = [
                [name, value.decode("latin-1")]
                for name, value in resp.headers
                if name in KEPT_HEADERS
            ]
            head = {"stored_ms": host.now_ms(), "headers": kept}
            host.cache_put(key + HEAD_SUFFIX, json.dumps(head).encode(), conf.ttl_seconds * 1000)
        host.counter_add("stored", 1)
        return ResponseAction_ProceedAndStore(StoreSpec(mutation(), key, conf.ttl_seconds))

    def on_upstream_failure(self, req: RequestHead, failure: UpstreamFailure) -> FallbackDecision:
        conf = settings()
        if req.method != "GET" or failure.kind not in conf.on:
            return FallbackDecision_Propagate()
        key = cache_key(req)
        if conf.mode == "host":
            host.counter_add("served_stale", 1)
            return FallbackDecision_ServeCached(key)

        body = host.cache_get(key)
        raw_head = host.cache_get(key + HEAD_SUFFIX)
        if body is None or raw_head is None:
            host.counter_add("stale_miss", 1)
            return FallbackDecision_Propagate()
        try:
            head = json.loads(raw_head)
            stored = int(head["stored_ms"])
            headers = [(str(name), str(value).encode("latin-1")) for name, value in head["headers"]]
        except (ValueError, KeyError, TypeError):
            host.counter_add("stale_miss", 1)
            return FallbackDecision_Propagate()
        age_seconds = max(0, host.now_ms() - stored) // 1000
        headers += [(conf.mark_header, b"plugin"), ("age", str(age_seconds).encode())]
        host.counter_add("served_stale", 1)
        host.log(
            LogLevel.INFO,
            f"serving stale copy of {key} for {req.request_id} ({kind_name(failure.kind)})",
        )
        return FallbackDecision_Serve(response(200, headers, body))
