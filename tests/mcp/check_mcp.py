"""Checks megamind's MCP server end to end through the official Python client (`mcp`).

usage:
  check_mcp.py --transport stdio --binary PATH --generation 2025-11-25|2026-07-28
  check_mcp.py --transport http --url http://127.0.0.1:PORT/mcp [--token T] --generation ...
  check_mcp.py ... --call TOOL --arguments JSON     # one call instead of the checks

With stdio the script starts `PATH mcp --workers 2` itself: the server gets this process's
MEGAMIND* variables (the SDK passes nothing else through) and, unless
MEGAMIND__STORE__PATH is set, a store in a fresh temporary directory. The checks expect the
short windows the integration tests configure (1 minute sliding by 1 second, no allowed
lateness, a short idle advance): see --window-seconds and --slide-seconds.

What it checks, per protocol generation (2025-11-25: initialize, resources/subscribe;
2026-07-28: server/discover, subscriptions/listen):
  - tools/list: exactly the 16 tools, each with an input and an output schema;
  - every tool called with valid arguments, its structuredContent checked (the client also
    validates it against the tool's outputSchema), including windows that close after the
    events were added (polled with a deadline), the ML views, the whole alert lifecycle and
    stopping/starting the intake;
  - invalid arguments and business failures answer isError with the field or reason named;
    an unknown tool is a JSON-RPC error;
  - a session resource: an update notification arrives after the session's events, and
    reading it shows them.

Prints one JSON line (the summary) on stdout; exits 1 if any check failed, each failure
explained on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2
import mcp.types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, listen
from mcp.shared.exceptions import MCPError

LEGACY = "2025-11-25"
MODERN = "2026-07-28"

TOOLS = {
    "realtime_start_monitoring",
    "realtime_stop_monitoring",
    "realtime_get_status",
    "realtime_subscribe_session",
    "realtime_add_event",
    "realtime_get_metrics",
    "realtime_get_analytics",
    "ml_performance_status",
    "ml_record_prediction",
    "ml_record_outcome",
    "ml_get_performance_metrics",
    "alerts_get_active",
    "alerts_acknowledge",
    "alerts_resolve",
    "alerts_create_custom",
    "dashboard_realtime",
}

# Longest wait for something the pipeline produces (a closed window, a notification, an
# applied alert command). With 1 s slides and a 200 ms idle advance it takes ~2 s.
WAIT_SECONDS = 20.0
POLL_SECONDS = 0.1


class CheckFailed(AssertionError):
    """A failed check; its message says what was expected and what came back."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def now_ms() -> int:
    return int(time.time() * 1000)


def event_time() -> int:
    """Now plus one second: with no allowed lateness, an event stamped exactly now could
    find its pane closed by the idle ticker right at a second boundary (see the HTTP
    tests). A second ahead is well within the allowed future skew."""
    return now_ms() + 1000


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def brief(value: Any, limit: int = 1500) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


async def until(what: str, probe: Callable[[], Awaitable[tuple[bool, Any]]], timeout: float = WAIT_SECONDS) -> Any:
    """Calls `probe` until it reports success, at most `timeout` seconds; fails with the
    last value seen otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        ok, last = await probe()
        if ok:
            return last
        if time.monotonic() >= deadline:
            raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {brief(last)}")
        await anyio.sleep(POLL_SECONDS)


class Checker:
    """One connected session and the checks run over it."""

    def __init__(self, session: ClientSession, args: argparse.Namespace, updates: anyio.abc.ObjectReceiveStream):
        self.session = session
        self.args = args
        self.updates = updates
        self.run = secrets.token_hex(4)
        self.passed = 0
        self.failures: list[str] = []
        self.protocol_version: str | None = None
        self.server: str | None = None

    # -- helpers ------------------------------------------------------------------------

    def ok(self, condition: bool, message: str) -> None:
        check(condition, message)
        self.passed += 1

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """Calls a tool that must succeed; returns its structuredContent."""
        result = await self.session.call_tool(name, arguments or {})
        check(
            not result.is_error,
            f"{name}({brief(arguments)}) answered isError: {text_of(result)}",
        )
        structured = result.structured_content
        check(isinstance(structured, dict), f"{name}: no structuredContent object: {brief(result.model_dump())}")
        # rmcp mirrors the structured result as text for clients that read only content.
        text = text_of(result)
        check(
            text != "" and json.loads(text) == structured,
            f"{name}: the text content does not mirror structuredContent: {brief(text)}",
        )
        self.passed += 1
        return structured

    async def call_error(self, name: str, arguments: dict[str, Any], *needles: str) -> str:
        """Calls a tool that must answer isError with a message containing every needle."""
        result = await self.session.call_tool(name, arguments)
        text = text_of(result)
        check(
            bool(result.is_error),
            f"{name}({brief(arguments)}) should answer isError, got: {brief(result.model_dump())}",
        )
        for needle in needles:
            check(
                needle.lower() in text.lower(),
                f"{name}({brief(arguments)}): the error message should mention {needle!r}; got {text!r}",
            )
        self.passed += 1
        return text

    async def add(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Adds events that must all be accepted."""
        arguments = {"event": events[0]} if len(events) == 1 else {"events": events}
        result = await self.call("realtime_add_event", arguments)
        self.ok(
            result == {"accepted": len(events), "rejected": []},
            f"realtime_add_event of {len(events)} valid event(s): got {brief(result)}",
        )
        return result

    async def series(self, **arguments: Any) -> list[dict[str, Any]]:
        result = await self.call("realtime_get_metrics", arguments)
        check(
            result["count"] == len(result["series"]),
            f"realtime_get_metrics: count {result['count']} but {len(result['series'])} series",
        )
        return result["series"]

    async def read_session(self, uri: str) -> dict[str, Any] | None:
        """The session resource as JSON, or None while the session is unknown."""
        try:
            read = await self.session.read_resource(uri)
        except MCPError as error:
            if "no session" in error.message:
                return None
            raise
        check(len(read.contents) == 1, f"resources/read {uri}: expected one content, got {len(read.contents)}")
        content = read.contents[0]
        check(str(content.uri) == uri, f"resources/read {uri}: content uri is {content.uri}")
        check(
            content.mime_type == "application/json",
            f"resources/read {uri}: mimeType {content.mime_type!r}, expected application/json",
        )
        check(isinstance(content, types.TextResourceContents), f"resources/read {uri}: not text: {content!r}")
        return json.loads(content.text)

    # -- sections -----------------------------------------------------------------------

    async def connect(self) -> None:
        if self.args.generation == LEGACY:
            init = await self.session.initialize()
            self.ok(
                init.protocol_version == LEGACY,
                f"initialize negotiated {init.protocol_version}, expected {LEGACY}",
            )
            info = init.server_info
            caps = init.capabilities
        else:
            discovered = await self.session.discover()
            self.ok(
                MODERN in discovered.supported_versions,
                f"server/discover lists {discovered.supported_versions}, expected {MODERN} among them",
            )
            self.ok(
                self.session.protocol_version == MODERN,
                f"the client adopted {self.session.protocol_version}, expected {MODERN}",
            )
            info = self.session.server_info
            caps = discovered.capabilities
        self.protocol_version = self.session.protocol_version
        self.ok(info is not None and info.name == "megamind", f"server info: {info!r}")
        self.server = f"{info.name} {info.version}"
        self.ok(caps.tools is not None, f"capabilities lack tools: {caps!r}")
        self.ok(
            caps.resources is not None and caps.resources.subscribe,
            f"capabilities lack resources.subscribe: {caps!r}",
        )

    async def tools_list(self) -> None:
        listed = await self.session.list_tools()
        names = [tool.name for tool in listed.tools]
        self.ok(len(names) == len(set(names)), f"tools/list repeats names: {sorted(names)}")
        self.ok(
            set(names) == TOOLS,
            f"tools/list: missing {sorted(TOOLS - set(names))}, unexpected {sorted(set(names) - TOOLS)}",
        )
        for tool in listed.tools:
            self.ok(bool(tool.description), f"tool {tool.name} has no description")
            self.ok(
                isinstance(tool.input_schema, dict) and tool.input_schema.get("type") == "object",
                f"tool {tool.name}: inputSchema is not an object schema: {brief(tool.input_schema)}",
            )
            self.ok(
                isinstance(tool.output_schema, dict) and tool.output_schema.get("type") == "object",
                f"tool {tool.name}: outputSchema is missing or not an object schema: {brief(tool.output_schema)}",
            )
        by_name = {tool.name: tool for tool in listed.tools}
        add_schema = by_name["realtime_add_event"].input_schema
        self.ok(
            {"event", "events"} <= set(add_schema.get("properties", {})),
            f"realtime_add_event inputSchema lacks event/events: {brief(add_schema)}",
        )
        metrics_out = by_name["realtime_get_metrics"].output_schema
        self.ok(
            {"count", "series"} <= set(metrics_out.get("required", [])),
            f"realtime_get_metrics outputSchema does not require count and series: {brief(metrics_out)}",
        )

    async def status(self) -> None:
        result = await self.call("realtime_get_status")
        self.ok(
            close(result["window_length_seconds"], self.args.window_seconds)
            and close(result["window_slide_seconds"], self.args.slide_seconds),
            f"realtime_get_status window shape {result['window_length_seconds']}/{result['window_slide_seconds']} s, "
            f"expected {self.args.window_seconds}/{self.args.slide_seconds}",
        )
        status = result["status"]
        for field in (
            "uptime_seconds",
            "workers",
            "services",
            "events_per_second",
            "events_accepted",
            "rejected",
            "late_events",
            "queue_depth",
            "queue_capacity",
            "watermark_ms",
            "series",
            "sessions",
            "firing_alerts",
        ):
            self.ok(field in status, f"realtime_get_status: status lacks {field!r}: {brief(status)}")
        self.ok(status["workers"] >= 1, f"realtime_get_status: workers {status['workers']}")
        ingest = [service for service in status["services"] if service["name"] == "ingest"]
        self.ok(
            len(ingest) == 1 and ingest[0]["state"] == "running",
            f"realtime_get_status: the ingest service should be running: {brief(status['services'])}",
        )

    async def events_and_metrics(self) -> None:
        name = f"check.latency_{self.run}"
        ts = event_time()
        values = {"a": [12.5, 7.25, 30.0], "b": [0.25, 50.0]}
        await self.add([{"type": "metric", "name": name, "value": values["a"][0], "labels": {"host": "a"}, "ts": ts}])
        await self.add(
            [{"type": "metric", "name": name, "value": v, "labels": {"host": "a"}, "ts": ts} for v in values["a"][1:]]
            + [{"type": "metric", "name": name, "value": v, "labels": {"host": "b"}, "ts": ts} for v in values["b"]]
        )
        # A batch with one bad record: the rest is accepted, the bad one explained.
        mixed = await self.call(
            "realtime_add_event",
            {
                "events": [
                    {"type": "metric", "name": f"{name}_other", "value": 1.0, "ts": ts},
                    {"type": "metric", "name": f"{name}_other", "value": "fast", "ts": ts},
                ]
            },
        )
        self.ok(mixed["accepted"] == 1, f"mixed batch: expected 1 accepted, got {brief(mixed)}")
        self.ok(
            len(mixed["rejected"]) == 1
            and mixed["rejected"][0]["index"] == 1
            and mixed["rejected"][0]["field"] == "value"
            and mixed["rejected"][0]["reason"] == "invalid_type",
            f"mixed batch: expected record 1 rejected for `value` (invalid_type), got {brief(mixed['rejected'])}",
        )

        async def both_hosts() -> tuple[bool, Any]:
            found = await self.series(name=name)
            counts = sorted(entry["count"] for entry in found)
            return counts == [2, 3], found

        found = await until(f"the windows of {name} (3 samples on host a, 2 on host b)", both_hosts)
        by_host = {entry["key"]["labels"]["host"]: entry for entry in found}
        self.ok(set(by_host) == {"a", "b"}, f"realtime_get_metrics hosts: {brief(found)}")
        for host, samples in values.items():
            window = by_host[host]
            self.ok(window["key"]["name"] == name, f"series key name: {brief(window['key'])}")
            self.ok(
                window["key"].get("session_id") is None,
                f"series key should carry no session: {brief(window['key'])}",
            )
            self.ok(window["count"] == len(samples), f"host {host}: count {window['count']} != {len(samples)}")
            self.ok(close(window["sum"], sum(samples)), f"host {host}: sum {window['sum']} != {sum(samples)}")
            self.ok(close(window["min"], min(samples)), f"host {host}: min {window['min']} != {min(samples)}")
            self.ok(close(window["max"], max(samples)), f"host {host}: max {window['max']} != {max(samples)}")
            mean = sum(samples) / len(samples)
            self.ok(close(window["mean"], mean), f"host {host}: mean {window['mean']} != {mean}")
            self.ok(
                window["start"] <= ts < window["end"]
                and close(window["end"] - window["start"], self.args.window_seconds * 1000),
                f"host {host}: window [{window['start']}, {window['end']}) should be {self.args.window_seconds} s "
                f"and contain the events at {ts}",
            )
            self.ok(
                close(window["rate"], len(samples) / self.args.window_seconds),
                f"host {host}: rate {window['rate']} != {len(samples) / self.args.window_seconds}",
            )
        only_b = await self.series(name=name, labels={"host": "b"})
        self.ok(
            len(only_b) == 1 and only_b[0]["key"]["labels"] == {"host": "b"},
            f"realtime_get_metrics labels filter host=b: {brief(only_b)}",
        )
        by_prefix = await self.series(prefix=f"check.latency_{self.run}")
        self.ok(
            {entry["key"]["name"] for entry in by_prefix} == {name, f"{name}_other"},
            f"realtime_get_metrics prefix filter: {brief(by_prefix)}",
        )
        limited = await self.series(name=name, limit=1)
        self.ok(len(limited) == 1, f"realtime_get_metrics limit=1 returned {len(limited)} series")

    async def ml(self) -> None:
        model = f"ranker_{self.run}"
        ts = event_time()
        predictions = [
            {
                "model_id": model,
                "model_version": "v1",
                "prediction_id": f"{self.run}-p{index}",
                "predicted": "relevant",
                "confidence": confidence,
                "latency_ms": latency,
                "features": {"length": float(index)},
                "ts": ts,
            }
            for index, (confidence, latency) in enumerate([(0.9, 10.0), (0.8, 20.0), (0.7, 30.0)])
        ]
        one = await self.call("ml_record_prediction", {"prediction": predictions[0]})
        self.ok(one == {"accepted": 1, "rejected": []}, f"ml_record_prediction (one): {brief(one)}")
        many = await self.call("ml_record_prediction", {"predictions": predictions[1:]})
        self.ok(many == {"accepted": 2, "rejected": []}, f"ml_record_prediction (batch): {brief(many)}")
        outcome = await self.call(
            "ml_record_outcome",
            {"outcome": {"prediction_id": f"{self.run}-p0", "actual": "relevant", "model_id": model, "ts": ts}},
        )
        self.ok(outcome == {"accepted": 1, "rejected": []}, f"ml_record_outcome: {brief(outcome)}")
        outcomes = await self.call(
            "ml_record_outcome",
            {"outcomes": [{"prediction_id": f"{self.run}-p{i}", "actual": "irrelevant", "ts": ts} for i in (1, 2)]},
        )
        self.ok(outcomes == {"accepted": 2, "rejected": []}, f"ml_record_outcome (batch): {brief(outcomes)}")

        async def model_seen() -> tuple[bool, Any]:
            status = await self.call("ml_performance_status")
            mine = [entry for entry in status["models"] if entry["model_id"] == model]
            return len(mine) == 1 and mine[0]["predictions"] == 3, status

        status = await until(f"model {model} with 3 predictions in ml_performance_status", model_seen)
        self.ok(isinstance(status["note"], str) and status["note"] != "", "ml_performance_status: empty note")
        entry = next(entry for entry in status["models"] if entry["model_id"] == model)
        self.ok(entry["model_version"] == "v1", f"ml_performance_status version: {brief(entry)}")
        self.ok(close(entry["latency_p50_ms"], 20.0), f"latency p50 {entry['latency_p50_ms']} != 20")
        self.ok(close(entry["latency_p99_ms"], 30.0), f"latency p99 {entry['latency_p99_ms']} != 30")
        self.ok(
            entry["confidence_mean"] is not None and close(entry["confidence_mean"], 0.8),
            f"confidence mean {entry['confidence_mean']} != 0.8",
        )
        self.ok(
            close(entry["predictions_per_second"], 3 / self.args.window_seconds),
            f"predictions/s {entry['predictions_per_second']} != {3 / self.args.window_seconds}",
        )

        # The join: p0 right, p1 and p2 wrong -> accuracy 1/3 over 3 matched pairs.
        async def accuracy_seen() -> tuple[bool, Any]:
            status = await self.call("ml_performance_status")
            mine = [entry for entry in status["models"] if entry["model_id"] == model]
            return len(mine) == 1 and mine[0]["matched"] == 3, mine

        tracked = (await until(f"model {model} with 3 matched outcomes", accuracy_seen))[0]
        self.ok(close(tracked["accuracy"], 1 / 3), f"ml accuracy {tracked['accuracy']} != 1/3")
        self.ok(tracked["pending"] == 0 and tracked["total_predictions"] == 3, f"ml counts: {brief(tracked)}")
        low, high = tracked["accuracy_interval"]
        self.ok(0 < low < 1 / 3 < high < 1, f"ml Wilson interval {tracked['accuracy_interval']}")

        metrics = await self.call("ml_get_performance_metrics", {"model_id": model})
        self.ok(metrics["model_id"] == model, f"ml_get_performance_metrics model: {brief(metrics)}")
        self.ok(
            [version["model_version"] for version in metrics["versions"]] == ["v1"],
            f"ml_get_performance_metrics versions: {brief(metrics['versions'])}",
        )
        self.ok(
            len(metrics["latency_windows"]) == 1
            and metrics["latency_windows"][0]["count"] == 3
            and close(metrics["latency_windows"][0]["max"], 30.0),
            f"ml_get_performance_metrics latency window: {brief(metrics['latency_windows'])}",
        )
        self.ok(
            len(metrics["confidence_windows"]) == 1 and close(metrics["confidence_windows"][0]["min"], 0.7),
            f"ml_get_performance_metrics confidence window: {brief(metrics['confidence_windows'])}",
        )
        versioned = await self.call("ml_get_performance_metrics", {"model_id": model, "model_version": "v1"})
        self.ok(len(versioned["versions"]) == 1, f"ml_get_performance_metrics v1: {brief(versioned)}")
        await self.call_error(
            "ml_get_performance_metrics", {"model_id": model, "model_version": "v9"}, "no predictions", "v9"
        )
        await self.call_error("ml_get_performance_metrics", {"model_id": f"nobody_{self.run}"}, "no predictions")
        await self.call_error("ml_get_performance_metrics", {"model_id": ""}, "model_id")
        await self.call_error(
            "ml_record_prediction",
            {"prediction": {**predictions[0], "prediction_id": f"{self.run}-bad"}, "predictions": predictions},
            "prediction",
            "not both",
        )
        # A confidence outside 0..1 is rejected by the decoder with the field named.
        bad = await self.call(
            "ml_record_prediction",
            {"prediction": {**predictions[0], "prediction_id": f"{self.run}-bad", "confidence": 1.5}},
        )
        self.ok(
            bad["accepted"] == 0 and len(bad["rejected"]) == 1 and bad["rejected"][0]["field"] == "confidence",
            f"ml_record_prediction with confidence 1.5: expected a rejection of `confidence`, got {brief(bad)}",
        )

    async def session_resource(self) -> None:
        session_id = f"sess_{self.run}"
        uri = f"megamind://sessions/{session_id}"
        operation = f"search_{self.run}"
        templates = await self.session.list_resource_templates()
        self.ok(
            [template.uri_template for template in templates.resource_templates] == ["megamind://sessions/{id}"],
            f"resources/templates/list: {brief([t.model_dump() for t in templates.resource_templates])}",
        )
        before = await self.call("realtime_subscribe_session", {"session_id": session_id})
        self.ok(
            before["resource_uri"] == uri and before["known"] is False and before["session"] is None,
            f"realtime_subscribe_session before any event: {brief(before)}",
        )
        self.ok(await self.read_session(uri) is None, f"{uri} should not be readable before its first event")

        first = [
            {"type": "session", "session_id": session_id, "kind": "started", "user_id": "ada", "ts": event_time()},
            {
                "type": "session",
                "session_id": session_id,
                "kind": "operation",
                "operation": operation,
                "duration_ms": 120.0,
                "tokens": 50,
                "success": True,
                "ts": event_time(),
            },
            {"type": "session", "session_id": session_id, "kind": "error", "message": "boom", "ts": event_time()},
        ]
        second = [
            {
                "type": "session",
                "session_id": session_id,
                "kind": "operation",
                "operation": operation,
                "duration_ms": 80.0,
                "tokens": 25,
                "success": True,
                "ts": event_time(),
            }
        ]

        async def updated_to(events: int, next_update: Callable[[], Awaitable[str]]) -> dict[str, Any]:
            """Waits for update notifications about `uri` until reading it shows `events`
            events. The notification is the trigger: nothing is read without one."""
            seen: list[Any] = []
            with anyio.move_on_after(WAIT_SECONDS):
                while True:
                    updated = await next_update()
                    check(updated == uri, f"an update notification for {updated}, but only {uri} is subscribed")
                    view = await self.read_session(uri)
                    seen.append(None if view is None else view["state"]["events"])
                    if view is not None and view["state"]["events"] == events:
                        return view
            raise CheckFailed(
                f"no update notification for {uri} after which it shows {events} events within "
                f"{WAIT_SECONDS:.0f}s (events seen after each notification: {seen})"
            )

        if self.args.generation == LEGACY:
            with subscribe_warnings_off():
                try:
                    await self.session.subscribe_resource("megamind://nothing/here")
                    raise CheckFailed("resources/subscribe to megamind://nothing/here should be a JSON-RPC error")
                except MCPError as error:
                    self.ok("megamind://sessions/" in error.message, f"subscribe error message: {error.message!r}")
                await self.session.subscribe_resource(uri)
            self.passed += 1

            async def next_update() -> str:
                return await self.updates.receive()

            await self.add(first)
            view = await updated_to(3, next_update)
            await self.add(second)
            view = await updated_to(4, next_update)
            with subscribe_warnings_off():
                await self.session.unsubscribe_resource(uri)
        else:
            async with listen(self.session, resource_subscriptions=[uri, "megamind://nothing/here"]) as subscription:
                self.ok(
                    subscription.honored.resource_subscriptions == [uri],
                    f"subscriptions/listen honored {subscription.honored!r}, expected only {uri}",
                )
                events = subscription.__aiter__()

                async def next_update() -> str:
                    while True:
                        event = await events.__anext__()
                        if isinstance(event, ResourceUpdated):
                            return event.uri

                await self.add(first)
                view = await updated_to(3, next_update)
                await self.add(second)
                view = await updated_to(4, next_update)
            self.passed += 1

        state = view["state"]
        self.ok(set(view) == {"state", "history"}, f"session resource keys: {sorted(view)}")
        self.ok(isinstance(view["history"], list), f"session history is not a list: {brief(view)}")
        self.ok(
            state["session_id"] == session_id
            and state["user_id"] == "ada"
            and state["status"] == "active"
            and state["operations"] == 2
            and state["errors"] == 1
            and state["tokens"] == 75
            and state["last_operation"] == operation
            and state["last_error"] == "boom",
            f"session state after 4 events: {brief(state)}",
        )
        self.ok(
            close(state["error_rate"], 1 / 3) and close(state["duration_mean_ms"], 100.0),
            f"session error rate / mean duration: {brief(state)}",
        )
        listed = await self.session.list_resources()
        self.ok(
            uri in [str(resource.uri) for resource in listed.resources],
            f"resources/list lacks {uri}: {[str(r.uri) for r in listed.resources]}",
        )
        after = await self.call("realtime_subscribe_session", {"session_id": session_id})
        self.ok(
            after["known"] is True
            and after["resource_uri"] == uri
            and after["session"]["state"]["events"] == 4
            and after["session"]["state"]["session_id"] == session_id,
            f"realtime_subscribe_session after the events: {brief(after)}",
        )
        await self.call_error("realtime_subscribe_session", {"session_id": ""}, "session_id")
        try:
            await self.session.read_resource("megamind://elsewhere/x")
            raise CheckFailed("resources/read of megamind://elsewhere/x should be a JSON-RPC error")
        except MCPError as error:
            self.ok("megamind://elsewhere/x" in error.message, f"read error message: {error.message!r}")

        # Analytics: the session ranks by error rate; the operation's window closes.
        async def analytics_ready() -> tuple[bool, Any]:
            result = await self.call("realtime_get_analytics", {"limit": 50})
            ops = [entry for entry in result["slowest_operations"] if entry["operation"] == operation]
            return len(ops) == 1 and ops[0]["count"] == 2, result

        analytics = await until(f"operation {operation} with 2 durations in realtime_get_analytics", analytics_ready)
        for field in (
            "sessions",
            "top_sessions_by_error_rate",
            "slowest_operations",
            "breach_counts",
            "active_alerts",
            "trends",
        ):
            self.ok(field in analytics, f"realtime_get_analytics lacks {field!r}: {brief(analytics)}")
        self.ok(analytics["sessions"].get("active", 0) >= 1, f"analytics sessions: {brief(analytics['sessions'])}")
        ranked = [entry for entry in analytics["top_sessions_by_error_rate"] if entry["session_id"] == session_id]
        self.ok(
            len(ranked) == 1
            and ranked[0]["errors"] == 1
            and ranked[0]["operations"] == 2
            and close(ranked[0]["error_rate"], 1 / 3)
            and ranked[0]["status"] == "active",
            f"analytics top_sessions_by_error_rate for {session_id}: {brief(analytics['top_sessions_by_error_rate'])}",
        )
        op = next(entry for entry in analytics["slowest_operations"] if entry["operation"] == operation)
        self.ok(
            close(op["mean_ms"], 100.0) and close(op["p95_ms"], 120.0),
            f"analytics slowest operation {operation}: {brief(op)}",
        )
        limited = await self.call("realtime_get_analytics", {"limit": 1})
        self.ok(
            len(limited["top_sessions_by_error_rate"]) <= 1 and len(limited["slowest_operations"]) <= 1,
            f"realtime_get_analytics limit=1: {brief(limited)}",
        )
        per_session = await self.series(session_id=session_id)
        self.ok(
            all(entry["key"]["session_id"] == session_id for entry in per_session)
            and "session.duration_ms" in {entry["key"]["name"] for entry in per_session},
            f"realtime_get_metrics session_id={session_id}: {brief(per_session)}",
        )

    async def alerts(self) -> None:
        alert_id = f"custom_{self.run}"
        actor = f"oncall_{self.run}"
        created = await self.call(
            "alerts_create_custom",
            {
                "title": f"disk almost full ({self.run})",
                "severity": "high",
                "message": "92% used",
                "labels": {"host": "db1"},
                "alert_id": alert_id,
                "actor": actor,
            },
        )
        alert = created["alert"]
        self.ok(
            alert["id"] == alert_id
            and alert["status"] == "firing"
            and alert["severity"] == "high"
            and alert["labels"] == {"host": "db1"}
            and alert["message"] == "92% used"
            and alert.get("rule_id") is None,
            f"alerts_create_custom: {brief(alert)}",
        )
        await self.call_error(
            "alerts_create_custom", {"title": "again", "alert_id": alert_id}, "alert_id", "already exists"
        )
        await self.call_error("alerts_create_custom", {"title": "   "}, "title")

        active = await self.call("alerts_get_active")
        mine = [entry for entry in active["alerts"] if entry["id"] == alert_id]
        self.ok(len(mine) == 1 and mine[0]["status"] == "firing", f"alerts_get_active: {brief(active)}")
        self.ok(
            active["count"] == len(active["alerts"]) and active["by_status"].get("firing", 0) >= 1,
            f"alerts_get_active count/by_status: {brief(active)}",
        )
        critical = await self.call("alerts_get_active", {"min_severity": "critical"})
        self.ok(
            all(entry["id"] != alert_id for entry in critical["alerts"]),
            f"alerts_get_active min_severity=critical includes the high alert: {brief(critical)}",
        )
        high = await self.call("alerts_get_active", {"min_severity": "high", "limit": 1000})
        self.ok(
            any(entry["id"] == alert_id for entry in high["alerts"]),
            f"alerts_get_active min_severity=high lacks the alert: {brief(high)}",
        )
        # Filters: labels, state, exact severities, session.
        for filters, expected in (
            ({"labels": {"host": "db1"}, "state": "firing"}, True),
            ({"labels": {"host": "db2"}}, False),
            ({"state": "acknowledged"}, False),
            ({"severity": ["low", "critical"]}, False),
            ({"severity": ["high"]}, True),
            ({"session": f"no_such_session_{self.run}"}, False),
        ):
            filtered = await self.call("alerts_get_active", filters)
            found = any(entry["id"] == alert_id for entry in filtered["alerts"])
            self.ok(found == expected, f"alerts_get_active {filters}: expected {expected}, got {brief(filtered)}")
        await self.call_error("alerts_get_active", {"state": "resolved"}, "state")
        dashboard = await self.call("dashboard_realtime")
        self.ok(
            any(entry["id"] == alert_id for entry in dashboard["alerts"]),
            f"dashboard_realtime alerts lack {alert_id}: {brief(dashboard['alerts'])}",
        )
        analytics = await self.call("realtime_get_analytics")
        self.ok(
            analytics["active_alerts"].get("high", 0) >= 1,
            f"realtime_get_analytics active_alerts: {brief(analytics['active_alerts'])}",
        )

        acknowledged = await self.call(
            "alerts_acknowledge", {"alert_id": alert_id, "actor": actor, "note": "looking into it"}
        )
        alert = acknowledged["alert"]
        self.ok(
            alert["id"] == alert_id
            and alert["status"] == "acknowledged"
            and alert.get("acknowledged", {}).get("by") == actor
            and alert["acknowledged"].get("note") == "looking into it",
            f"alerts_acknowledge: expected acknowledged by {actor}, got {brief(alert)}",
        )
        active = await self.call("alerts_get_active")
        mine = [entry for entry in active["alerts"] if entry["id"] == alert_id]
        self.ok(
            len(mine) == 1 and mine[0]["status"] == "acknowledged" and active["by_status"].get("acknowledged", 0) >= 1,
            f"alerts_get_active after acknowledging: {brief(active)}",
        )

        resolved = await self.call("alerts_resolve", {"alert_id": alert_id, "actor": actor, "comment": "cleaned up"})
        alert = resolved["alert"]
        self.ok(
            alert["status"] == "resolved"
            and alert.get("resolved", {}).get("by") == actor
            and alert["resolved"].get("note") == "cleaned up",
            f"alerts_resolve: expected resolved by {actor}, got {brief(alert)}",
        )
        active = await self.call("alerts_get_active")
        self.ok(
            all(entry["id"] != alert_id for entry in active["alerts"]),
            f"alerts_get_active still lists the resolved alert: {brief(active)}",
        )
        await self.call_error("alerts_acknowledge", {"alert_id": alert_id, "actor": actor}, "already resolved")
        await self.call_error("alerts_resolve", {"alert_id": alert_id}, "already resolved")
        await self.call_error("alerts_acknowledge", {"alert_id": f"nope_{self.run}"}, "alert_id", f"nope_{self.run}")
        await self.call_error("alerts_resolve", {"alert_id": ""}, "alert_id")

        # Without an id the server derives one; the alert comes back firing.
        derived = await self.call("alerts_create_custom", {"title": f"derived id ({self.run})"})
        self.ok(
            derived["alert"]["status"] == "firing"
            and derived["alert"]["severity"] == "medium"
            and derived["alert"]["id"] != "",
            f"alerts_create_custom without id/severity: {brief(derived)}",
        )
        await self.call("alerts_resolve", {"alert_id": derived["alert"]["id"]})

        # Escalation (the server runs with a policy: critical alerts escalate after 1 s
        # unacknowledged): the step shows on the alert, by "escalation", with its reason;
        # acknowledging stops the chain.
        urgent_id = f"urgent_{self.run}"
        await self.call(
            "alerts_create_custom",
            {"title": f"replica down ({self.run})", "severity": "critical", "alert_id": urgent_id},
        )
        deadline = time.monotonic() + 20
        escalated: dict[str, Any] = {}
        while time.monotonic() < deadline:
            active = await self.call("alerts_get_active", {"severity": ["critical"], "limit": 1000})
            mine = [entry for entry in active["alerts"] if entry["id"] == urgent_id]
            if mine and mine[0].get("escalated"):
                escalated = mine[0]
                break
            await anyio.sleep(0.2)
        self.ok(
            escalated.get("escalation_step") == 1
            and escalated["escalated"]["by"] == "escalation"
            and escalated["escalated"].get("note") == "step 1: unacknowledged for 1s"
            and escalated["escalated"]["at"] == escalated["since"] + 1000
            and escalated["status"] == "firing",
            f"alerts_get_active shows the escalation: {brief(escalated)}",
        )
        acked = await self.call("alerts_acknowledge", {"alert_id": urgent_id, "actor": actor})
        self.ok(
            acked["alert"]["status"] == "acknowledged" and acked["alert"].get("escalation_step") == 1,
            f"alerts_acknowledge keeps the escalation history: {brief(acked)}",
        )
        await self.call("alerts_resolve", {"alert_id": urgent_id, "actor": actor})

    async def dashboard(self) -> None:
        dashboard = await self.call("dashboard_realtime")
        for field in ("status", "series", "sessions", "alerts", "breaches", "models"):
            self.ok(field in dashboard, f"dashboard_realtime lacks {field!r}")
        self.ok(
            close(dashboard["status"]["window_length_seconds"], self.args.window_seconds)
            and dashboard["status"]["status"]["events_accepted"] >= 5,
            f"dashboard_realtime status: {brief(dashboard['status'])}",
        )
        names = {entry["key"]["name"] for entry in dashboard["series"]}
        self.ok(
            f"check.latency_{self.run}" in names,
            f"dashboard_realtime series lack check.latency_{self.run}: {sorted(names)[:50]}",
        )
        self.ok(
            all(entry["key"].get("session_id") is None for entry in dashboard["series"]),
            "dashboard_realtime series include per-session series",
        )
        self.ok(
            any(entry["session_id"] == f"sess_{self.run}" for entry in dashboard["sessions"]),
            f"dashboard_realtime sessions lack sess_{self.run}: {brief(dashboard['sessions'])}",
        )
        self.ok(
            any(entry["model_id"] == f"ranker_{self.run}" for entry in dashboard["models"]["models"]),
            f"dashboard_realtime models lack ranker_{self.run}: {brief(dashboard['models'])}",
        )

    async def monitoring(self) -> None:
        event = {"type": "metric", "name": f"check.paused_{self.run}", "value": 1.0}
        stopped = await self.call("realtime_stop_monitoring", {"services": ["ingest"]})
        try:
            self.ok(stopped["changed"] == ["ingest"], f"realtime_stop_monitoring changed: {brief(stopped)}")
            self.ok(
                any(s["name"] == "ingest" and s["state"] == "stopped" for s in stopped["services"]),
                f"realtime_stop_monitoring services: {brief(stopped['services'])}",
            )
            again = await self.call("realtime_stop_monitoring", {"services": ["ingest"]})
            self.ok(again["changed"] == [], f"stopping a stopped intake changed {again['changed']}")
            await self.call_error("realtime_add_event", {"event": event}, "monitoring is stopped")
            status = await self.call("realtime_get_status")
            self.ok(
                any(s["name"] == "ingest" and s["state"] == "stopped" for s in status["status"]["services"]),
                f"realtime_get_status while stopped: {brief(status['status']['services'])}",
            )
            # Queries keep working while the intake is stopped.
            await self.call("realtime_get_metrics", {"prefix": "check."})
        finally:
            started = await self.call("realtime_start_monitoring", {"services": ["ingest"]})
        self.ok(started["changed"] == ["ingest"], f"realtime_start_monitoring changed: {brief(started)}")
        ingest = [s for s in started["services"] if s["name"] == "ingest"]
        self.ok(
            len(ingest) == 1 and ingest[0]["state"] == "running" and ingest[0]["uptime_seconds"] is not None,
            f"realtime_start_monitoring services: {brief(started['services'])}",
        )
        await self.add([event])
        everything = await self.call("realtime_start_monitoring", {})
        self.ok(
            "ingest" not in everything["changed"]
            and {s["name"] for s in everything["services"]} >= {"ingest"},
            f"realtime_start_monitoring with no list: {brief(everything)}",
        )
        await self.call_error("realtime_start_monitoring", {"services": ["kafka"]}, "services[0]", "kafka")
        await self.call_error("realtime_stop_monitoring", {"services": ["ingest", "nope"]}, "services[1]")
        status = await self.call("realtime_get_status")
        self.ok(
            any(s["name"] == "ingest" and s["state"] == "running" for s in status["status"]["services"]),
            f"an invalid stop must change nothing: {brief(status['status']['services'])}",
        )

    async def errors(self) -> None:
        """Every case runs, so one report lists every error answer that falls short."""
        valid_event = {"type": "metric", "name": f"check.errors_{self.run}", "value": 1}
        cases: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
            # Invalid argument types: the message must name the offending field.
            ("realtime_get_metrics", {"limit": "ten"}, ("limit",)),
            ("realtime_get_metrics", {"name": 42}, ("name",)),
            ("alerts_get_active", {"min_severity": "urgent"}, ("min_severity",)),
            ("ml_record_prediction", {"prediction": {"model_id": "m", "prediction_id": "p", "predicted": "x",
                                                     "confidence": "high", "latency_ms": 1}}, ("confidence",)),
            # Missing required and unknown arguments.
            ("alerts_acknowledge", {}, ("alert_id",)),
            ("realtime_get_metrics", {"colour": "red"}, ("colour",)),
            # Out-of-range limits.
            ("realtime_get_metrics", {"limit": 0}, ("limit", "at least 1")),
            ("realtime_get_metrics", {"limit": 5000}, ("limit", "at most 1000")),
            ("realtime_get_analytics", {"limit": 51}, ("limit", "at most 50")),
            ("alerts_get_active", {"limit": 1001}, ("limit", "at most 1000")),
            # Both or neither of event/events, and an empty batch.
            ("realtime_add_event", {"event": valid_event, "events": [valid_event]}, ("event", "not both")),
            ("realtime_add_event", {}, ("event",)),
            ("realtime_add_event", {"events": []}, ("events", "empty")),
            # Unknown alert ids.
            ("alerts_acknowledge", {"alert_id": f"ghost_{self.run}"}, ("alert_id", f"ghost_{self.run}")),
            ("alerts_resolve", {"alert_id": f"ghost_{self.run}"}, ("alert_id", f"ghost_{self.run}")),
        ]
        problems: list[str] = []
        for name, arguments, needles in cases:
            try:
                await self.call_error(name, arguments, *needles)
            except CheckFailed as failure:
                problems.append(str(failure))
        # An event with a wrong field type is answered per record, not as a tool error.
        rejected = await self.call("realtime_add_event", {"event": {**valid_event, "value": [1]}})
        if not (
            rejected["accepted"] == 0
            and len(rejected["rejected"]) == 1
            and rejected["rejected"][0]["field"] == "value"
            and rejected["rejected"][0]["reason"] == "invalid_type"
        ):
            problems.append(f"an event with an array `value` should be rejected for `value`: {brief(rejected)}")
        # An unknown tool is a protocol error, not a result.
        try:
            result = await self.session.call_tool(f"no_such_tool_{self.run}", {})
            problems.append(f"calling an unknown tool should raise a JSON-RPC error; got {brief(result.model_dump())}")
        except MCPError as error:
            if not (f"no_such_tool_{self.run}" in error.message or "not found" in error.message.lower()):
                problems.append(f"unknown tool error message: code {error.code}, {error.message!r}")
        self.passed += len(cases) + 2 - len(problems)
        check(not problems, f"{len(problems)} error answer(s) fall short:\n  - " + "\n  - ".join(problems))


@contextlib.contextmanager
def subscribe_warnings_off():
    """resources/subscribe is deprecated in the SDK for the 2026 generation; it is exactly
    what the 2025-11-25 generation uses, so its deprecation warning is noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.asynccontextmanager
async def open_streams(args: argparse.Namespace) -> AsyncIterator[tuple[Any, Any]]:
    if args.transport == "stdio":
        env = {key: value for key, value in os.environ.items() if key.startswith("MEGAMIND")}
        with contextlib.ExitStack() as stack:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="check-mcp-"))
            env.setdefault("MEGAMIND__STORE__PATH", os.path.join(workdir, "store", "megamind.db"))
            params = StdioServerParameters(
                command=args.binary,
                args=["mcp", "--workers", str(args.workers)],
                env=env,
                cwd=workdir,
            )
            async with stdio_client(params) as (read, write):
                yield read, write
    else:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http:
            async with streamable_http_client(args.url, http_client=http) as (read, write):
                yield read, write


SECTIONS = ["tools_list", "status", "events_and_metrics", "ml", "session_resource", "alerts", "dashboard", "monitoring", "errors"]


async def run_checks(args: argparse.Namespace) -> Checker:
    updates_in, updates_out = anyio.create_memory_object_stream[str](1000)

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates_in.send_nowait(str(message.params.uri))
        elif isinstance(message, Exception):
            print(f"check_mcp: transport exception: {message!r}", file=sys.stderr)

    async with open_streams(args) as (read, write):
        async with ClientSession(read, write, message_handler=on_message, read_timeout_seconds=30) as session:
            checker = Checker(session, args, updates_out)
            try:
                await checker.connect()
            except Exception as error:  # nothing else can run without a connection
                checker.failures.append(f"connect: {describe(error)}")
                return checker
            for name in SECTIONS:
                if args.only and name not in args.only:
                    continue
                started = time.monotonic()
                try:
                    await getattr(checker, name)()
                except Exception as error:
                    checker.failures.append(f"{name}: {describe(error)}")
                print(
                    f"check_mcp: {name} {'FAILED' if checker.failures and checker.failures[-1].startswith(name + ':') else 'ok'} "
                    f"({time.monotonic() - started:.1f}s)",
                    file=sys.stderr,
                )
            return checker


async def call_once(args: argparse.Namespace) -> dict[str, Any]:
    """`--call TOOL`: connects like the checks do, calls one tool, returns what came back."""
    async with open_streams(args) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=30) as session:
            if args.generation == LEGACY:
                await session.initialize()
            else:
                await session.discover()
            result = await session.call_tool(args.call, json.loads(args.arguments))
            return {
                "protocol_version": session.protocol_version,
                "isError": bool(result.is_error),
                "structuredContent": result.structured_content,
                "text": text_of(result),
            }


def describe(error: BaseException) -> str:
    if isinstance(error, CheckFailed):
        return str(error)
    if isinstance(error, MCPError):
        return f"unexpected JSON-RPC error {error.code}: {error.message}\n{traceback.format_exc()}"
    return f"{type(error).__name__}: {error}\n{traceback.format_exc()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=["stdio", "http"], required=True)
    parser.add_argument("--binary", help="the megamind executable (stdio)")
    parser.add_argument("--workers", type=int, default=2, help="worker threads of the stdio server")
    parser.add_argument("--url", help="the /mcp endpoint (http)")
    parser.add_argument("--token", help="bearer token (http)")
    parser.add_argument("--generation", choices=[LEGACY, MODERN], required=True)
    parser.add_argument("--window-seconds", type=float, default=60.0, help="configured window length")
    parser.add_argument("--slide-seconds", type=float, default=1.0, help="configured window slide")
    parser.add_argument("--timeout", type=float, default=240.0, help="deadline for the whole run, seconds")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--call", metavar="TOOL", help="instead of the checks: call TOOL once, print the result")
    parser.add_argument("--arguments", default="{}", help="the JSON arguments of --call")
    args = parser.parse_args()
    if args.transport == "stdio" and not args.binary:
        parser.error("--binary is required with --transport stdio")
    if args.transport == "http" and not args.url:
        parser.error("--url is required with --transport http")
    if args.call:
        answer: dict[str, Any] = {}

        async def once() -> None:
            with anyio.fail_after(args.timeout):
                answer.update(await call_once(args))

        anyio.run(once)
        print(json.dumps(answer), flush=True)
        return 0

    started = time.monotonic()
    checker: Checker | None = None
    failures: list[str] = []

    async def body() -> None:
        nonlocal checker
        with anyio.fail_after(args.timeout):
            checker = await run_checks(args)

    try:
        anyio.run(body)
    except BaseException as error:  # a timeout or a transport failure outside the checks
        failures.append(f"run: {describe(error)}")
    if checker is not None:
        failures = checker.failures + failures
    summary = {
        "ok": not failures,
        "transport": args.transport,
        "generation": args.generation,
        "protocol_version": checker.protocol_version if checker else None,
        "server": checker.server if checker else None,
        "checks_passed": checker.passed if checker else 0,
        "failures": len(failures),
        "seconds": round(time.monotonic() - started, 2),
    }
    for failure in failures:
        print(f"check_mcp FAILED: {failure}", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
