"""Checks megamind's live WebSocket protocol (JSON-RPC 2.0) with an independent client:
the Python `websockets` library, which shares no code with the server.

usage:
  check_ws.py --analytics ws://127.0.0.1:P/ --sessions ws://127.0.0.1:Q/ --http http://127.0.0.1:H
              [--admin-token A --developer-token D --dashboard-token B]
              [--ring-capacity N] [--client-queue N] [--max-message-bytes N] [--idle-timeout S]
              [--burst N --requests-per-second R] --only SECTION...

The server must run with the short windows of the integration tests (1 minute windows
sliding by 1 second, no allowed lateness, a 200 ms idle advance) and publish `health`
once a second. Each section states which server settings it needs (the options above
tell the script what the server was started with):

  auth       tokens: an unauthenticated client may only ping/auth, `auth` gives each
             token's role, a wrong token in the URL is closed with 1008, a client that
             never authenticates is closed with 1008 after ~10 s
  roles      tokens: dashboard cannot add events or act on alerts, developer can add
             events, admin acknowledges and resolves a real alert (latency events over
             HTTP breaching latency_mean_high) and a custom one (alert_command over HTTP)
  filters    exact topic vs `metrics/*` vs `*`, unsubscribe, invalid patterns; the session
             monitor serves only sessions/*
  snapshot   snapshots of every topic family, unknown topics refused
  history    recent updates of a topic, limits, since_ms
  resume     a forced disconnect, more updates, resume: contiguous sequences, no duplicates
  gap        --ring-capacity small: resume past the ring answers -32003 {oldest, seq}
  lagged     --client-queue small: while this script posts large session events (one per
             request, a steady stream), a client subscribed to `*` that stops reading is
             closed with 4001 "lagged...", and a reading client keeps receiving
  abandoned  --client-queue small, --idle-timeout short: a client that reads nothing is
             dropped: the server's end of its TCP connection is closed (/proc/net/tcp)
             within the idle timeout plus 10 s of the hub giving up on it
  bursts     --client-queue (megamind demo): a client subscribed to `*` that reads as fast
             as it can stays connected
  unknown_method  tokens: an unknown method is -32601 for every role
  unknown_alert   tokens: acting on an alert that does not exist is -32602
  malformed  open server: invalid JSON -32700, binary -32600, unknown method -32601,
             10 bad requests in a row close with 1008
  answers_before_close  open server: the 10 bad requests that close a client are all
             answered before the close frame
  close_handshake  open server: 10 clients that send 200 more requests after 10 bad ones
             all see the close frame 1008 (not a reset, 1006)
  size       --max-message-bytes: a message within it is answered, one above closes 1009
  rate       --burst small, --requests-per-second low: requests beyond the burst -32002

Prints one JSON line (the summary) on stdout; exits 1 if any check failed, each failure
explained on stderr (lines `check_ws FAILED: ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
UNKNOWN_METHOD = -32601
INVALID_PARAMS = -32602
FAILED = -32000
FORBIDDEN = -32001
RATE_LIMITED = -32002
GAP = -32003

# Longest wait for something the server produces (an answer, a closed window, an alert,
# a close frame). Windows close about 2 s after their events; health comes every second.
WAIT = 30.0
# The server closes a client that never authenticates after this long.
AUTH_TIMEOUT = 10.0

SECTIONS = [
    "auth",
    "roles",
    "unknown_method",
    "unknown_alert",
    "filters",
    "snapshot",
    "history",
    "resume",
    "gap",
    "lagged",
    "abandoned",
    "bursts",
    "malformed",
    "answers_before_close",
    "close_handshake",
    "size",
    "rate",
]


class CheckFailed(AssertionError):
    """A failed check; its message says what was expected and what came back."""


PASSED = 0


def check(condition: bool, message: str) -> None:
    global PASSED
    if not condition:
        raise CheckFailed(message)
    PASSED += 1


def brief(value: Any, limit: int = 1200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def now_ms() -> int:
    return int(time.time() * 1000)


def event_time() -> int:
    """Now plus one second: with no allowed lateness an event stamped exactly now could
    find its pane closed by the idle ticker (see tests/it/http_api.rs)."""
    return now_ms() + 1000


def contiguous(seqs: list[int]) -> bool:
    return bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def server_side_state(server_port: int, client_port: int) -> tuple[str, int] | None:
    """(state, bytes in the send queue) of the server's end of a loopback connection, from
    /proc/net/tcp: state "01" is ESTABLISHED. None when the socket is gone."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as table:
            for line in table.read().splitlines()[1:]:
                fields = line.split()
                local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
                if local == server_port and remote == client_port:
                    return fields[3], int(fields[4].split(":")[0], 16)
    return None


class Client:
    """One WebSocket connection: a reader task sorts what arrives into answers (by id),
    answers without an id, and update notifications (in arrival order)."""

    def __init__(self, ws: ClientConnection, name: str):
        self.ws = ws
        self.name = name
        self.next_id = 1
        self.pending: dict[int, asyncio.Future[dict]] = {}
        self.null_answers: list[dict] = []
        self.updates: list[dict] = []
        self.stray: list[dict] = []
        self.closed: tuple[int | None, str | None] | None = None
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if isinstance(message, dict) and message.get("method") == "update":
                    self.updates.append(message["params"])
                elif isinstance(message, dict) and message.get("id") in self.pending:
                    future = self.pending.pop(message["id"])
                    if not future.done():
                        future.set_result(message)
                elif isinstance(message, dict) and message.get("id") is None:
                    self.null_answers.append(message)
                else:
                    self.stray.append(message)
                self.changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = (self.ws.close_code, self.ws.close_reason)
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(CheckFailed(f"{self.name}: connection closed {self.closed} before the answer"))
            self.pending.clear()
            self.changed.set()

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    def expect(self, ident: int) -> asyncio.Future[dict]:
        """The future answer with id `ident` (to a message sent by hand)."""
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        # Fetch the exception of an answer nobody waits for any more (no asyncio warning).
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self.pending[ident] = future
        return future

    async def send_request(self, method: str, params: Any = None) -> tuple[int, asyncio.Future[dict]]:
        """Sends a request without waiting; returns its id and future answer."""
        ident = self.next_id
        self.next_id += 1
        future = self.expect(ident)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
        if params is not None:
            message["params"] = params
        await self.ws.send(json.dumps(message))
        return ident, future

    async def request(self, method: str, params: Any = None, timeout: float = WAIT) -> dict:
        """Sends a request; returns the whole answer."""
        ident, future = await self.send_request(method, params)
        try:
            answer = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise CheckFailed(f"{self.name}: no answer to {method} within {timeout:.0f}s (closed: {self.closed})") from None
        check(answer.get("jsonrpc") == "2.0" and answer.get("id") == ident, f"{self.name}: answer to {method} is not JSON-RPC 2.0 with id {ident}: {brief(answer)}")
        return answer

    async def result(self, method: str, params: Any = None) -> Any:
        answer = await self.request(method, params)
        check("result" in answer and "error" not in answer, f"{self.name}: {method} {brief(params)} failed: {brief(answer)}")
        return answer["result"]

    async def error(self, method: str, params: Any, code: int) -> dict:
        answer = await self.request(method, params)
        error = answer.get("error")
        check(
            isinstance(error, dict) and error.get("code") == code and isinstance(error.get("message"), str) and "result" not in answer,
            f"{self.name}: {method} {brief(params)} must fail with {code}, got {brief(answer)}",
        )
        return error

    async def until(self, what: str, probe: Callable[[], Any], timeout: float = WAIT, allow_closed: bool = False) -> Any:
        """Waits until `probe()` is truthy (re-checked whenever something arrives)."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if self.closed is not None and not allow_closed:
                raise CheckFailed(f"{self.name}: closed {self.closed} while waiting for {what}; {len(self.updates)} updates seen")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed(
                    f"{self.name}: timed out after {timeout:.0f}s waiting for {what}; {len(self.updates)} updates, "
                    f"last: {brief(self.updates[-3:])}"
                )
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_closed(self, timeout: float = WAIT) -> tuple[int | None, str | None]:
        await self.until("the server to close the connection", lambda: self.closed is not None, timeout, allow_closed=True)
        assert self.closed is not None
        return self.closed

    async def barrier(self) -> None:
        """A ping round trip: the answer is queued behind every update published before."""
        check(await self.result("ping") == "pong", f"{self.name}: ping")

    def seqs(self, topic: str) -> list[int]:
        return [update["seq"] for update in self.updates if update["topic"] == topic]

    def topics(self) -> set[str]:
        return {update["topic"] for update in self.updates}

    def last(self, topic: str) -> dict | None:
        for update in reversed(self.updates):
            if update["topic"] == topic:
                return update
        return None

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 10)
        except Exception:
            self.ws.transport.abort()
        await asyncio.wait_for(self.reader, 10)


async def open_client(url: str, name: str, token: str | None = None, **options: Any) -> Client:
    if token is not None:
        url = f"{url}?token={urllib.parse.quote(token)}"
    # No client keepalive: the server pings, and the library answers while it reads.
    ws = await connect(url, ping_interval=None, open_timeout=15, close_timeout=5, max_size=8 << 20, **options)
    return Client(ws, name)


class Checker:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run = secrets.token_hex(3)
        self.failures: list[str] = []
        self.sections: dict[str, str] = {}
        self.clients: list[Client] = []
        self.tokens = {
            role: token
            for role, token in [("admin", args.admin_token), ("developer", args.developer_token), ("dashboard", args.dashboard_token)]
            if token
        }

    # -- helpers ------------------------------------------------------------------------

    async def client(self, name: str, role: str | None = "dashboard", server: str = "analytics", **options: Any) -> Client:
        """A client of `server`; with tokens configured, `role`'s token goes in the URL (role
        None: no token). Closed when the section ends."""
        url = self.args.analytics if server == "analytics" else self.args.sessions
        token = self.tokens.get(role) if role else None
        opened = await open_client(url, name, token, **options)
        self.clients.append(opened)
        return opened

    def need(self, condition: bool, what: str) -> None:
        if not condition:
            raise CheckFailed(f"this section needs {what} (see --help)")

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request = urllib.request.Request(self.args.http + path, data=data, method=method, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    async def post_events(self, events: list[dict]) -> None:
        body = "".join(json.dumps(event) + "\n" for event in events)
        status, answer = await asyncio.to_thread(self.http, "POST", "/v1/events", body)
        check(status == 200 and answer == {"accepted": len(events), "rejected": []}, f"POST /v1/events: {status} {brief(answer)}")

    async def http_get(self, path: str) -> Any:
        status, answer = await asyncio.to_thread(self.http, "GET", path)
        check(status == 200, f"GET {path}: {status} {brief(answer)}")
        return answer

    async def http_until(self, what: str, path: str, probe: Callable[[Any], Any], timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            answer = await self.http_get(path)
            found = probe(answer)
            if found:
                return found
            if time.monotonic() >= deadline:
                raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}; GET {path}: {brief(answer)}")
            await asyncio.sleep(0.1)

    def metric(self, name: str, value: float, session: str | None = None, ts: int | None = None) -> dict:
        event: dict[str, Any] = {"type": "metric", "ts": ts or event_time(), "name": name, "value": value}
        if session:
            event["session_id"] = session
        return event

    # -- sections -----------------------------------------------------------------------

    async def auth(self) -> None:
        self.need(len(self.tokens) == 3, "--admin-token, --developer-token and --dashboard-token")
        timer = asyncio.create_task(self.never_authenticated())
        try:
            anon = await self.client("unauthenticated", role=None)
            check(await anon.result("ping") == "pong", "ping before auth")
            for method, params in [
                ("subscribe", {"topics": ["health"]}),
                ("snapshot", {"topic": "health"}),
                ("history", {"topic": "health"}),
                ("resume", {"topic": "health", "since": 0}),
                ("events.add", {"events": []}),
                ("alerts.acknowledge", {"alert_id": "x"}),
            ]:
                await anon.error(method, params, FORBIDDEN)
            await anon.error("auth", {"token": "not-a-token"}, FORBIDDEN)
            await anon.error("auth", {"token": ""}, FORBIDDEN)
            await anon.error("auth", {}, INVALID_PARAMS)
            await anon.barrier()
            check(anon.updates == [], f"updates before auth: {brief(anon.updates)}")
            check(await anon.result("auth", {"token": self.tokens["dashboard"]}) == {"role": "dashboard"}, "auth as dashboard")
            subscribed = await anon.result("subscribe", {"topics": ["health"]})
            check(subscribed.get("subscribed") == ["health"], f"subscribe after auth: {brief(subscribed)}")
            await anon.until("a health update after auth", lambda: anon.seqs("health"))
            await anon.error("events.add", {"events": []}, FORBIDDEN)
            check(await anon.result("auth", {"token": self.tokens["admin"]}) == {"role": "admin"}, "auth again, as admin")

            # A token in the URL authenticates the connection; `auth` with it names the role.
            for role, token in self.tokens.items():
                client = await self.client(f"url-{role}", role=role)
                check(await client.result("snapshot", {"topic": "health"}) is not None, f"{role}: snapshot without auth")
                check(await client.result("auth", {"token": token}) == {"role": role}, f"{role}: auth answers the role")

            # A wrong token in the URL: the server closes the connection with 1008.
            wrong = await open_client(self.args.analytics, "wrong-token", "wrong-token")
            self.clients.append(wrong)
            code, reason = await wrong.wait_closed()
            check(code == 1008, f"wrong token in the URL: closed with {code} {reason!r}, expected 1008")
            check(wrong.updates == [] and wrong.stray == [], "a refused client got messages")
        finally:
            await timer

    async def never_authenticated(self) -> None:
        """A client that only pings is closed with 1008 once the auth timeout passes."""
        idle = await self.client("never-authenticates", role=None)
        started = time.monotonic()
        # Pings stop 2 s before the deadline: one in flight when the server closes would be
        # unread input, and the reset that causes loses the close frame (close_handshake).
        while idle.closed is None and time.monotonic() - started < AUTH_TIMEOUT - 2:
            try:
                await idle.request("ping", timeout=5)
            except (CheckFailed, ConnectionClosed):
                break
            # Wait for the close (not for time): a ping every 2 s shows that traffic does
            # not extend the deadline to authenticate.
            try:
                await idle.until("close", lambda: idle.closed is not None, timeout=2, allow_closed=True)
            except CheckFailed:
                pass
        code, reason = await idle.wait_closed(timeout=WAIT)
        elapsed = time.monotonic() - started
        check(code == 1008, f"a client that never authenticated was closed with {code} {reason!r}, expected 1008")
        check(AUTH_TIMEOUT - 2 <= elapsed <= AUTH_TIMEOUT + 4, f"closed {elapsed:.1f}s after connecting, expected ~{AUTH_TIMEOUT:.0f}s")

    async def roles(self) -> None:
        self.need(len(self.tokens) == 3, "--admin-token, --developer-token and --dashboard-token")
        run = self.run
        dashboard = await self.client("dashboard", role="dashboard")
        developer = await self.client("developer", role="developer")
        admin = await self.client("admin", role="admin")

        event = self.metric(f"ws_dev_{run}", 42.0)
        await dashboard.error("events.add", {"events": [event]}, FORBIDDEN)
        for client in (dashboard, developer):
            await client.error("alerts.acknowledge", {"alert_id": "whatever"}, FORBIDDEN)
            await client.error("alerts.resolve", {"alert_id": "whatever"}, FORBIDDEN)

        # developer: events.add ingests like HTTP (and can read what it added).
        topic = f"metrics/ws_dev_{run}"
        await developer.result("subscribe", {"topics": [topic]})
        added = await developer.result("events.add", {"events": [event]})
        check(added == {"accepted": 1, "rejected": []}, f"events.add: {brief(added)}")
        rejected = await developer.result("events.add", {"events": [{"type": "metric", "name": "x"}]})
        check(rejected.get("accepted") == 0 and len(rejected.get("rejected", [])) == 1, f"events.add of an invalid event: {brief(rejected)}")
        await developer.error("events.add", {"events": "nope"}, INVALID_PARAMS)
        window = await developer.until(
            f"a window of the event added over events.add on {topic}",
            lambda: next((u["data"] for u in developer.updates if u["topic"] == topic and u["data"].get("kind") == "window"), None),
        )
        check(window.get("count") == 1 and window.get("mean") == 42.0, f"the window of the added event: {brief(window)}")
        status, _ = await asyncio.to_thread(self.http, "GET", "/v1/metrics?name=" + f"ws_dev_{run}")
        check(status == 200, "GET /v1/metrics")

        # A real alert: latency events over HTTP breach latency_mean_high (mean 100 > 70).
        hot = f"ws-hot-{run}"
        for client in (dashboard, admin):
            await client.result("subscribe", {"topics": ["alerts"]})
        ts = event_time()
        await self.post_events([self.metric("latency_ms", value, session=hot, ts=ts) for value in (90.0, 100.0, 110.0)])

        def alert_update(client: Client, status: str, key: Callable[[dict], bool]) -> Callable[[], dict | None]:
            return lambda: next(
                (u["data"] for u in client.updates if u["topic"] == "alerts" and u["data"].get("kind") == "alert_record" and key(u["data"]) and u["data"].get("status") == status),
                None,
            )

        is_hot = lambda record: (record.get("key") or {}).get("session_id") == hot  # noqa: E731
        firing = await admin.until(f"a firing alert for {hot} on `alerts`", alert_update(admin, "firing", is_hot))
        check(firing.get("rule_id") == "latency_mean_high" and firing.get("severity") == "high", f"the alert: {brief(firing)}")
        alert_id = firing["id"]
        await dashboard.until("the same alert on the dashboard client", alert_update(dashboard, "firing", is_hot))
        await dashboard.error("alerts.acknowledge", {"alert_id": alert_id}, FORBIDDEN)
        await developer.error("alerts.acknowledge", {"alert_id": alert_id}, FORBIDDEN)
        await dashboard.error("alerts.resolve", {"alert_id": alert_id}, FORBIDDEN)

        acked = await admin.result("alerts.acknowledge", {"alert_id": alert_id, "actor": "check_ws", "note": "looking"})
        record = acked.get("alert", {})
        check(record.get("id") == alert_id and record.get("status") == "acknowledged", f"alerts.acknowledge: {brief(acked)}")
        check((record.get("acknowledged") or {}).get("by") == "check_ws", f"acknowledged by: {brief(record)}")
        check((record.get("acknowledged") or {}).get("note") == "looking", f"acknowledgement note: {brief(record)}")
        is_it = lambda record: record.get("id") == alert_id  # noqa: E731
        await dashboard.until("the acknowledgement on `alerts`", alert_update(dashboard, "acknowledged", is_it))
        await self.http_until(
            "the alert acknowledged in /v1/breaches",
            "/v1/breaches",
            lambda body: any(a["id"] == alert_id and a["status"] == "acknowledged" and a["acknowledged"]["by"] == "check_ws" for a in body["alerts"]),
        )

        resolved = await admin.result("alerts.resolve", {"alert_id": alert_id, "actor": "check_ws"})
        record = resolved.get("alert", {})
        check(record.get("status") == "resolved" and (record.get("resolved") or {}).get("by") == "check_ws", f"alerts.resolve: {brief(resolved)}")
        await dashboard.until("the resolution on `alerts`", alert_update(dashboard, "resolved", is_it))
        again = await admin.error("alerts.resolve", {"alert_id": alert_id}, FAILED)
        check("resolved" in again["message"], f"resolving twice: {brief(again)}")
        await admin.error("alerts.acknowledge", {"alert": alert_id}, INVALID_PARAMS)

        # A custom alert raised by an alert_command event over HTTP, resolved over WebSocket.
        custom = f"ws-custom-{run}"
        await self.post_events([{"type": "alert_command", "ts": now_ms(), "command": "create", "alert_id": custom, "title": "check_ws custom alert", "severity": "low"}])
        await admin.until(f"the custom alert {custom} on `alerts`", alert_update(admin, "firing", lambda record: record.get("id") == custom))
        resolved = await admin.result("alerts.resolve", {"alert_id": custom, "actor": "check_ws", "note": "done"})
        check(resolved.get("alert", {}).get("status") == "resolved", f"resolving the custom alert: {brief(resolved)}")

    async def filters(self) -> None:
        run = self.run
        name_a, name_b, session = f"ws_a_{run}", f"ws_b_{run}", f"ws-s-{run}"
        exact = await self.client("exact")
        prefix = await self.client("prefix")
        everything = await self.client("everything")
        answer = await exact.result("subscribe", {"topics": [f"metrics/{name_a}"]})
        check(answer == {"subscribed": [f"metrics/{name_a}"], "seq": {f"metrics/{name_a}": 0}}, f"subscribe to an unused exact topic: {brief(answer)}")
        answer = await prefix.result("subscribe", {"topics": ["metrics/*"]})
        check(answer == {"subscribed": ["metrics/*"], "seq": {}}, f"subscribe to metrics/*: {brief(answer)}")
        answer = await everything.result("subscribe", {"topics": ["*"]})
        check(answer == {"subscribed": ["*"], "seq": {}}, f"subscribe to *: {brief(answer)}")
        for bad in (["metrics/*/x"], ["me*trics"], ["**"], [], [""], [1], "metrics/*"):
            await exact.error("subscribe", {"topics": bad}, INVALID_PARAMS)
        await exact.error("subscribe", {}, INVALID_PARAMS)

        ts = event_time()
        await self.post_events([
            self.metric(name_a, 1.0, ts=ts),
            self.metric(name_b, 2.0, ts=ts),
            {"type": "session", "ts": ts, "session_id": session, "kind": "started"},
        ])
        wanted = {f"metrics/{name_a}", f"metrics/{name_b}", f"sessions/{session}", "health"}
        await everything.until(f"updates on {sorted(wanted)}", lambda: wanted <= everything.topics())
        await prefix.until("updates on both metrics", lambda: {f"metrics/{name_a}", f"metrics/{name_b}"} <= prefix.topics())
        await exact.until(f"an update on metrics/{name_a}", lambda: exact.seqs(f"metrics/{name_a}"))
        for client in (exact, prefix, everything):
            await client.barrier()
        check(exact.topics() == {f"metrics/{name_a}"}, f"the exact subscriber got {sorted(exact.topics())}")
        check(all(topic.startswith("metrics/") for topic in prefix.topics()), f"metrics/* got {sorted(prefix.topics())}")
        for client in (exact, prefix, everything):
            for topic in client.topics():
                check(contiguous(client.seqs(topic)), f"{client.name}: sequences of {topic} are not contiguous: {client.seqs(topic)}")

        # unsubscribe: no more updates of the topic after the answer.
        answer = await exact.result("unsubscribe", {"topics": [f"metrics/{name_a}"]})
        check(answer == {"unsubscribed": [f"metrics/{name_a}"]}, f"unsubscribe: {brief(answer)}")
        answer = await exact.result("unsubscribe", {"topics": [f"metrics/{name_a}"]})
        check(answer == {"unsubscribed": []}, f"unsubscribing twice: {brief(answer)}")
        seen = len(exact.updates)
        after = max(everything.seqs(f"metrics/{name_a}"))
        await everything.until(f"two more updates on metrics/{name_a}", lambda: max(everything.seqs(f"metrics/{name_a}")) >= after + 2)
        await exact.barrier()
        check(len(exact.updates) == seen, f"updates after unsubscribe: {brief(exact.updates[seen:])}")

        # The session monitor serves sessions/* only.
        monitor = await self.client("session-monitor", server="sessions")
        for refused in (["metrics/*"], ["*"], ["health"], ["alerts"], [f"metrics/{name_a}"]):
            error = await monitor.error("subscribe", {"topics": refused}, INVALID_PARAMS)
            check("sessions" in error["message"], f"the refusal names what is served: {brief(error)}")
        await monitor.error("snapshot", {"topic": "health"}, INVALID_PARAMS)
        await monitor.error("resume", {"topic": "health", "since": 0}, INVALID_PARAMS)
        answer = await monitor.result("subscribe", {"topics": ["sessions/*"]})
        check(answer == {"subscribed": ["sessions/*"], "seq": {}}, f"sessions/* on the monitor: {brief(answer)}")
        await self.post_events([{"type": "session", "ts": event_time(), "session_id": session, "kind": "operation", "operation": "edit", "duration_ms": 12}])
        await monitor.until(f"an update on sessions/{session}", lambda: monitor.seqs(f"sessions/{session}"))
        await monitor.barrier()
        check(all(topic.startswith("sessions/") for topic in monitor.topics()), f"the monitor sent {sorted(monitor.topics())}")
        snapshot = await monitor.result("snapshot", {"topic": f"sessions/{session}"})
        check(((snapshot["data"].get("session") or {}).get("state") or {}).get("session_id") == session, f"session snapshot on the monitor: {brief(snapshot)}")

    async def snapshot(self) -> None:
        run = self.run
        client = await self.client("snapshots")
        health = await client.result("snapshot", {"topic": "health"})
        check(health.get("topic") == "health" and isinstance(health.get("seq"), int), f"health snapshot: {brief(health)}")
        status = health["data"].get("status", {})
        check(isinstance(status.get("events_accepted"), int) and isinstance(status.get("uptime_seconds"), (int, float)), f"health status: {brief(health)}")
        check(health["data"].get("websocket", {}).get("clients", 0) >= 1, f"health counts clients: {brief(health)}")

        # Subscribing after a snapshot: the updates continue the snapshot's sequence.
        answer = await client.result("subscribe", {"topics": ["health"]})
        start = answer["seq"]["health"]
        check(start >= health["seq"], f"subscribe seq {start} before the snapshot's {health['seq']}")
        await client.until("two health updates", lambda: len(client.seqs("health")) >= 2)
        seqs = client.seqs("health")
        check(start <= seqs[0] <= start + 1 and contiguous(seqs), f"health updates after subscribe seq {start}: {seqs}")

        name, session = f"ws_snap_{run}", f"ws-snap-{run}"
        topic = f"metrics/{name}"
        await client.result("subscribe", {"topics": [topic, f"sessions/{session}"]})
        ts = event_time()
        await self.post_events([self.metric(name, value, ts=ts) for value in (1.0, 2.0, 3.0)] + [
            {"type": "session", "ts": ts, "session_id": session, "kind": "started", "user_id": "u-ws"},
        ])
        await client.until(f"a window on {topic}", lambda: client.seqs(topic))
        snap = await client.result("snapshot", {"topic": topic})
        check(snap.get("topic") == topic and snap.get("seq", 0) >= 1, f"snapshot of {topic}: {brief(snap)}")
        windows = snap["data"]
        check(isinstance(windows, list) and len(windows) == 1, f"one series in {topic}: {brief(snap)}")
        check(windows[0]["key"]["name"] == name and windows[0]["count"] == 3 and windows[0]["mean"] == 2.0, f"the window: {brief(windows[0])}")
        await client.until(f"an update on sessions/{session}", lambda: client.seqs(f"sessions/{session}"))
        snap = await client.result("snapshot", {"topic": f"sessions/{session}"})
        state = (snap["data"].get("session") or {}).get("state") or {}
        check(state.get("session_id") == session and state.get("user_id") == "u-ws", f"session snapshot: {brief(snap)}")

        for family, kind in [("metrics", list), ("sessions", list), ("alerts", list), ("breaches", list), ("models", dict)]:
            snap = await client.result("snapshot", {"topic": family})
            check(snap.get("topic") == family and isinstance(snap.get("data"), kind), f"snapshot of {family}: {brief(snap)}")
        metrics = (await client.result("snapshot", {"topic": "metrics"}))["data"]
        check(any(w["key"]["name"] == name for w in metrics), f"the metrics snapshot lacks {name}")
        check(all(w["key"].get("session_id") is None for w in metrics), "the metrics snapshot holds session series")
        for bad in ({"topic": "nope"}, {"topic": "health/extra"}, {"topic": ""}, {"topic": "x" * 600}, {"topic": 7}, {}):
            await client.error("snapshot", bad, INVALID_PARAMS)
        unknown = await client.result("snapshot", {"topic": f"metrics/never_{run}"})
        check(unknown["data"] == [] and unknown["seq"] == 0, f"snapshot of an unused metric: {brief(unknown)}")

    async def history(self) -> None:
        client = await self.client("history")
        await client.result("subscribe", {"topics": ["health"]})
        await client.until("four health updates", lambda: len(client.seqs("health")) >= 4)
        live = {update["seq"]: update for update in client.updates if update["topic"] == "health"}
        latest = max(live)
        recent = await client.result("history", {"topic": "health", "limit": 3})
        updates = recent.get("updates")
        check(recent.get("topic") == "health" and isinstance(updates, list) and len(updates) == 3, f"history limit 3: {brief(recent)}")
        seqs = [update["seq"] for update in updates]
        check(contiguous(seqs) and seqs[-1] >= latest, f"history seqs {seqs}, latest seen {latest}")
        for update in updates:
            if update["seq"] in live:
                check(update == live[update["seq"]], f"history entry differs from the live update: {brief(update)} vs {brief(live[update['seq']])}")
        everything = (await client.result("history", {"topic": "health"}))["updates"]
        seqs = [update["seq"] for update in everything]
        check(contiguous(seqs) and seqs[-1] >= latest and (seqs[0] == 1 or len(seqs) == 100), f"default history of health: {seqs}")
        future = await client.result("history", {"topic": "health", "since_ms": now_ms() + 3_600_000})
        check(future["updates"] == [], f"history since the future: {brief(future)}")
        since = await client.result("history", {"topic": "health", "since_ms": now_ms() - 2500})
        check(1 <= len(since["updates"]) <= 4, f"history of the last 2.5 s of health: {brief(since)}")
        empty = await client.result("history", {"topic": f"metrics/never_{self.run}"})
        check(empty == {"topic": f"metrics/never_{self.run}", "updates": []}, f"history of an unused topic: {brief(empty)}")
        for bad in ({"topic": "health", "limit": 0}, {"topic": "health", "limit": 1001}, {"topic": "health", "since_ms": "x"}, {"topic": "health", "since_ms": -1}, {}):
            await client.error("history", bad, INVALID_PARAMS)

    async def resume(self) -> None:
        run = self.run
        name = f"ws_resume_{run}"
        topics = ["health", f"metrics/{name}"]
        watcher = await self.client("watcher")
        first = await self.client("resumer-1")
        for client in (watcher, first):
            await client.result("subscribe", {"topics": topics})
        # One event feeds a window closing every second for a minute: steady updates.
        await self.post_events([self.metric(name, 5.0)])
        await first.until("three updates on each topic", lambda: all(len(first.seqs(topic)) >= 3 for topic in topics))
        # Forced disconnect: the TCP connection drops without a close handshake.
        first.ws.transport.abort()
        await first.wait_closed(timeout=10)
        before = {topic: first.seqs(topic) for topic in topics}
        for topic, seqs in before.items():
            check(contiguous(seqs), f"before the disconnect, {topic}: {seqs}")
        # More updates while disconnected (watched by the other client).
        await watcher.until(
            "two more updates on each topic while disconnected",
            lambda: all(watcher.seqs(topic) and max(watcher.seqs(topic)) >= before[topic][-1] + 2 for topic in topics),
        )
        second = await self.client("resumer-2")
        answers = {}
        for topic in topics:
            answer = await second.result("resume", {"topic": topic, "since": before[topic][-1]})
            check(answer.get("topic") == topic and answer.get("replayed", 0) >= 2 and answer.get("seq") == before[topic][-1] + answer["replayed"], f"resume {topic}: {brief(answer)}")
            answers[topic] = answer
        await second.until(
            "live updates after the replay on each topic",
            lambda: all(second.seqs(topic) and max(second.seqs(topic)) >= answers[topic]["seq"] + 1 for topic in topics),
        )
        original = {(u["topic"], u["seq"]): u for u in watcher.updates}
        for topic in topics:
            after = second.seqs(topic)
            joined = before[topic] + after
            check(contiguous(joined), f"{topic}: sequences across the reconnect are not contiguous without duplicates: {before[topic]} + {after}")
            for update in second.updates:
                if update["topic"] == topic and (topic, update["seq"]) in original:
                    check(update == original[(topic, update["seq"])], f"replayed update differs: {brief(update)}")
        latest = answers["health"]["seq"]
        now = await second.result("resume", {"topic": "health", "since": max(second.seqs("health"))})
        check(now.get("replayed") in (0, 1), f"resume from the latest seq (after {latest}): {brief(now)}")
        future = await second.error("resume", {"topic": "health", "since": 10**9}, GAP)
        check(future.get("data", {}).get("seq", 0) >= latest, f"resume from the future: {brief(future)}")
        await second.error("resume", {"topic": "health"}, INVALID_PARAMS)
        await second.error("resume", {"topic": "health", "since": -1}, INVALID_PARAMS)

    async def gap(self) -> None:
        capacity = self.args.ring_capacity
        self.need(capacity is not None and capacity <= 5, "--ring-capacity of at most 5")
        watcher = await self.client("gap-watcher")
        await watcher.result("subscribe", {"topics": ["health"]})
        await watcher.until("a health update", lambda: watcher.seqs("health"))
        since = watcher.seqs("health")[0]
        await watcher.until(f"{capacity + 2} more health updates", lambda: max(watcher.seqs("health")) >= since + capacity + 2, timeout=WAIT + capacity)
        client = await self.client("gap")
        error = await client.error("resume", {"topic": "health", "since": since}, GAP)
        data = error.get("data") or {}
        check("gap" in error["message"] and data.get("topic") == "health", f"the gap answer: {brief(error)}")
        oldest, seq = data.get("oldest"), data.get("seq")
        check(isinstance(oldest, int) and isinstance(seq, int) and oldest > since + 1 and seq >= since + capacity + 2, f"gap data after seq {since}: {brief(error)}")
        # The ring holds the last `capacity` updates (seq may have moved on by one since).
        check(seq - oldest in (capacity - 1, capacity), f"ring of {capacity}: oldest {oldest}, seq {seq}")
        # Within the ring, resume replays (a fresh client: the refused resume subscribed
        # the first one, whose live updates would interleave).
        inside = await self.client("gap-inside")
        start = seq - (capacity - 1)
        answer = await inside.result("resume", {"topic": "health", "since": start})
        check(answer.get("replayed", 0) >= capacity - 1, f"resume from {start} inside the ring: {brief(answer)}")
        await inside.until("the replayed updates", lambda: len(inside.seqs("health")) >= answer["replayed"])
        replayed = inside.seqs("health")[: answer["replayed"]]
        check(replayed == list(range(start + 1, answer["seq"] + 1)), f"replayed {replayed} for resume from {start}, seq {answer['seq']}")
        # The recovery a client makes after a gap: snapshot, then resume from its seq.
        other = await self.client("gap-recovery")
        snapshot = await other.result("snapshot", {"topic": "health"})
        answer = await other.result("resume", {"topic": "health", "since": snapshot["seq"]})
        await other.until("two updates after the snapshot", lambda: len(other.seqs("health")) >= 2)
        seqs = other.seqs("health")
        check(seqs[0] == snapshot["seq"] + 1 and contiguous(seqs), f"after snapshot seq {snapshot['seq']}: {seqs} ({brief(answer)})")
        await client.barrier()

    async def traffic(self, stop: asyncio.Event, session: str) -> int:
        """Posts one large session error event per request until `stop`: every request
        makes one ~8 KB update on sessions/{session}, a steady stream without bursts.
        Returns how many were posted."""
        posted = 0
        text = "x" * 8000
        while not stop.is_set():
            event = {"type": "session", "ts": now_ms(), "session_id": session, "kind": "error", "message": f"{posted} {text}"}
            status, answer = await asyncio.to_thread(self.http, "POST", "/v1/events", json.dumps(event))
            if status != 200:
                raise CheckFailed(f"traffic: POST /v1/events answered {status} {brief(answer)}")
            posted += 1
        return posted

    async def slow_client(self, topics: list[str] | None = None) -> tuple[ClientConnection, int]:
        """A client subscribed to `topics` (default `*`) that reads nothing: a tiny receive
        buffer, and the library stops taking data off the socket after one undelivered
        frame. Returns it and its local port."""
        address = urllib.parse.urlsplit(self.args.analytics)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (address.hostname, address.port))
        port = sock.getsockname()[1]
        url = self.args.analytics + (f"?token={urllib.parse.quote(self.tokens['dashboard'])}" if self.tokens else "")
        slow = await connect(url, sock=sock, max_queue=1, ping_interval=None, open_timeout=15, close_timeout=5)
        await slow.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"topics": topics or ["*"]}}))
        return slow, port

    async def lagged(self) -> None:
        queue = self.args.client_queue
        self.need(queue is not None and queue <= 64, "--client-queue of at most 64")
        session = f"ws-lag-{self.run}"
        # Both clients take only the topics this section compares: with `*` every derived
        # update of the traffic (error families, novel errors, predictions) comes too, and
        # the reading client itself can lag.
        topics = ["health", f"sessions/{session}"]
        reader = await self.client("reading")
        await reader.result("subscribe", {"topics": topics})
        await reader.until("health", lambda: reader.seqs("health"))
        lagged_before = reader.last("health")["data"]["websocket"]["lagged_disconnects"]

        # The slow client: it stops reading until the server has given up on it.
        slow, _ = await self.slow_client(topics)
        stop = asyncio.Event()
        traffic = None
        try:
            # The server's socket buffer on loopback grows to 4 MB: fill it with big updates.
            traffic = asyncio.create_task(self.traffic(stop, session))
            started = time.monotonic()

            def kicked() -> dict | None:
                if traffic.done():
                    traffic.result()  # a failed POST fails the section
                    raise CheckFailed("the traffic generator stopped")
                last = reader.last("health")
                return last if last and last["data"]["websocket"]["lagged_disconnects"] > lagged_before else None

            at_kick = await reader.until("the hub to count a lagged disconnect (health.websocket.lagged_disconnects)", kicked, timeout=90)
            updates_at_kick = len(reader.seqs(f"sessions/{session}"))
            print(f"check_ws: lagged after {time.monotonic() - started:.1f}s; the reader got {updates_at_kick} traffic updates", file=sys.stderr)
            check(updates_at_kick >= queue, f"the hub gave up after only {updates_at_kick} updates (queue {queue})")

            # Traffic goes on; now read the slow client: what was queued, then the close frame.
            received = 0
            deadline = time.monotonic() + WAIT
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise CheckFailed(f"the lagged client was not closed within {WAIT:.0f}s of being counted ({received} frames read)")
                    try:
                        await asyncio.wait_for(slow.recv(), remaining)
                    except asyncio.TimeoutError:
                        continue
                    received += 1
            except ConnectionClosed:
                pass
            code, reason = slow.close_code, slow.close_reason or ""
            check(code == 4001 and reason.startswith("lagged"), f"the slow client was closed with {code} {reason!r}, expected 4001 'lagged...'")
            check(received < updates_at_kick, f"the slow client read {received} frames, the reader {updates_at_kick}")

            # The reading client was not disturbed and keeps receiving, traffic included.
            seq = at_kick["seq"]
            traffic_seen = len(reader.seqs(f"sessions/{session}"))
            await reader.until("two more health updates on the reading client", lambda: max(reader.seqs("health")) >= seq + 2)
            await reader.until("more traffic on the reading client", lambda: len(reader.seqs(f"sessions/{session}")) >= traffic_seen + 10)
        finally:
            stop.set()
            slow.transport.abort()
            if traffic is not None:
                posted = await asyncio.wait_for(traffic, WAIT)
                print(f"check_ws: posted {posted} traffic events", file=sys.stderr)
        await reader.barrier()
        counted = reader.last("health")["data"]["websocket"]["lagged_disconnects"] - lagged_before
        print(f"check_ws: health.websocket.lagged_disconnects grew by {counted} for one lagged client", file=sys.stderr)
        check(reader.closed is None, f"the reading client was closed: {reader.closed}")
        for topic in ("health", f"sessions/{session}"):
            check(contiguous(reader.seqs(topic)), f"the reading client missed updates of {topic}: {reader.seqs(topic)[:50]}...")

    async def abandoned(self) -> None:
        """A client that never reads again is let go: once the hub gave up on it and the
        idle timeout passed, the server closes its TCP connection instead of keeping it,
        and megabytes of unsent updates, for as long as the peer stays silent."""
        idle = self.args.idle_timeout
        self.need(idle is not None and idle <= 10 and self.args.client_queue is not None, "--idle-timeout of at most 10 s and --client-queue")
        session = f"ws-abandoned-{self.run}"
        watcher = await self.client("watcher")
        await watcher.result("subscribe", {"topics": ["health"]})
        await watcher.until("health", lambda: watcher.seqs("health"))
        lagged_before = watcher.last("health")["data"]["websocket"]["lagged_disconnects"]
        server_port = urllib.parse.urlsplit(self.args.analytics).port
        slow, client_port = await self.slow_client()
        stop = asyncio.Event()
        traffic = asyncio.create_task(self.traffic(stop, session))
        try:
            def kicked() -> bool:
                if traffic.done():
                    traffic.result()
                    raise CheckFailed("the traffic generator stopped")
                return watcher.last("health")["data"]["websocket"]["lagged_disconnects"] > lagged_before

            await watcher.until("the hub to give up on the silent client", kicked, timeout=90)
            stop.set()
            await asyncio.wait_for(traffic, WAIT)
            given_up = time.monotonic()
            check(server_side_state(server_port, client_port) is not None, "the server's end of the silent client's connection is not in /proc/net/tcp")
            # The server pings every second at most, and the idle timeout is short: the
            # connection must be gone (or closing) well within idle + 10 s.
            deadline = given_up + idle + 10
            while True:
                state = server_side_state(server_port, client_port)
                if state is None or state[0] != "01":
                    break
                if time.monotonic() >= deadline:
                    raise CheckFailed(
                        f"{time.monotonic() - given_up:.0f}s after the hub gave up on a client that reads nothing (idle timeout "
                        f"{idle:.0f}s), the server still holds its connection open (ESTABLISHED, {state[1]} bytes unsent)"
                    )
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            slow.transport.abort()
        await watcher.barrier()

    async def bursts(self) -> None:
        """A client that reads everything at once must not be taken for a lagging one, at
        any allowed client_queue, with the demo's traffic."""
        queue = self.args.client_queue
        self.need(queue is not None, "--client-queue (and traffic: megamind demo)")
        reader = await self.client("fast-reader")
        await reader.result("subscribe", {"topics": ["*"]})
        started = time.monotonic()
        try:
            await reader.until("a health update", lambda: reader.seqs("health"))
            first = reader.seqs("health")[0]
            await reader.until("five more health updates", lambda: max(reader.seqs("health")) >= first + 5)
        except CheckFailed:
            if reader.closed is None:
                raise
            raise CheckFailed(
                f"a client reading as fast as it can, subscribed to `*`, was closed {reader.closed} after "
                f"{time.monotonic() - started:.1f}s and {len(reader.updates)} updates (client_queue {queue})"
            ) from None
        await reader.barrier()
        check(reader.closed is None, f"the fast reader was closed: {reader.closed}")

    async def malformed(self) -> None:
        client = await self.client("malformed", role="admin")

        async def null_answer(code: int, what: str) -> None:
            count = len(client.null_answers)
            await client.until(f"the answer to {what}", lambda: len(client.null_answers) > count)
            error = client.null_answers[count].get("error") or {}
            check(error.get("code") == code and client.null_answers[count].get("id") is None, f"{what}: expected {code}, got {brief(client.null_answers[count])}")

        await client.send_raw("{not json")
        await null_answer(PARSE_ERROR, "invalid JSON")
        await client.barrier()
        await client.send_raw(b"\x00\x01binary")
        await null_answer(INVALID_REQUEST, "a binary frame")
        await client.barrier()
        await client.send_raw("[1, 2]")
        await null_answer(INVALID_REQUEST, "a JSON array")
        for message, code in [
            ({"jsonrpc": "2.0", "id": 77}, INVALID_REQUEST),
            ({"jsonrpc": "1.0", "id": 78, "method": "ping"}, INVALID_REQUEST),
            ({"id": 79, "method": "ping"}, INVALID_REQUEST),
            ({"jsonrpc": "2.0", "id": 80, "method": 5}, INVALID_REQUEST),
        ]:
            future = client.expect(message["id"])
            await client.send_raw(json.dumps(message))
            answer = await asyncio.wait_for(future, WAIT)
            check((answer.get("error") or {}).get("code") == code, f"{brief(message)}: expected {code}, got {brief(answer)}")
        await client.error("no.such.method", {}, UNKNOWN_METHOD)
        await client.error("subscribe", {"topics": "health"}, INVALID_PARAMS)
        await client.barrier()

        # Binary frames count as bad requests too.
        binary = await self.client("binary", role="admin")
        for _ in range(10):
            await binary.send_raw(b"\xff")
        code, reason = await binary.wait_closed()
        check(code == 1008, f"after 10 binary frames: closed with {code} {reason!r}, expected 1008")

        # Nine bad requests and a good one: the count starts again.
        for _ in range(9):
            await client.send_raw("{bad")
        await client.barrier()
        check(client.closed is None, f"closed after 9 bad requests: {client.closed}")
        # Ten in a row: ten answers, then close 1008.
        count = len(client.null_answers)
        for _ in range(10):
            await client.send_raw("{bad")
        code, reason = await client.wait_closed()
        check(code == 1008, f"after 10 bad requests in a row: closed with {code} {reason!r}, expected 1008")
        answers = client.null_answers[count:]
        check(all(a["error"]["code"] == PARSE_ERROR for a in answers), f"answers before the close: {brief(answers)}")


    async def answers_before_close(self) -> None:
        """When the server closes a client for its bad requests, it has answered every
        request it read: the answers go out before the close frame."""
        for attempt in range(3):
            client = await self.client(f"answered-{attempt}", role="admin")
            await client.barrier()
            for _ in range(10):
                await client.send_raw("{bad")
            code, reason = await client.wait_closed()
            check(code == 1008, f"after 10 bad requests in a row: closed with {code} {reason!r}, expected 1008")
            answers = client.null_answers
            check(all(a["error"]["code"] == PARSE_ERROR for a in answers), f"answers before the close: {brief(answers)}")
            check(len(answers) == 10, f"{len(answers)} of the 10 bad requests were answered before the close frame (1008 {reason!r})")

    async def close_handshake(self) -> None:
        """A client the server closes for bad requests sees the close frame (1008 and its
        reason) even when it had sent more before it noticed: the server must not tear the
        TCP connection down with unread input (a reset, which loses the close frame)."""
        codes = []
        for attempt in range(10):
            client = await self.client(f"keeps-sending-{attempt}", role="admin")
            await client.barrier()
            try:
                for _ in range(10):
                    await client.send_raw("{bad")
                for _ in range(200):
                    await client.send_request("ping")
            except ConnectionClosed:
                pass  # the server closed while we were still sending
            code, reason = await client.wait_closed()
            codes.append(None if code is None else int(code))
            await client.close()
        counts = {str(code): codes.count(code) for code in sorted(set(codes), key=str)}
        check(all(code == 1008 for code in codes), f"close codes seen by 10 clients that sent 200 more requests after 10 bad ones: {counts} (1006: the connection ended without a close frame)")

    async def unknown_method(self) -> None:
        """A method that does not exist is unknown (-32601) whatever the role; -32001
        "needs the admin role" would send a user after a token for nothing."""
        self.need(len(self.tokens) == 3, "--admin-token, --developer-token and --dashboard-token")
        for role in ("admin", "developer", "dashboard"):
            client = await self.client(f"{role}-unknown-method", role=role)
            await client.error("no.such.method", {}, UNKNOWN_METHOD)

    async def unknown_alert(self) -> None:
        """An alert that does not exist is a wrong parameter (-32602), like every other
        "invalid `field`" answer, not a failed request (-32000)."""
        self.need(len(self.tokens) == 3, "--admin-token, --developer-token and --dashboard-token")
        admin = await self.client("admin-unknown-alert", role="admin")
        for method in ("alerts.acknowledge", "alerts.resolve"):
            error = await admin.error(method, {"alert_id": f"no-such-alert-{self.run}"}, INVALID_PARAMS)
            check("alert_id" in error["message"], f"{method}: the answer names the field: {brief(error)}")

    async def size(self) -> None:
        limit = self.args.max_message_bytes
        self.need(limit is not None, "--max-message-bytes")
        client = await self.client("size", role="admin")
        base = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": ""}}
        fits = dict(base, params={"pad": "x" * (limit - len(json.dumps(base)) - 16)})
        check(len(json.dumps(fits)) < limit, "test message within the limit")
        future = client.expect(1)
        client.next_id = 2
        await client.send_raw(json.dumps(fits))
        answer = await asyncio.wait_for(future, WAIT)
        check(answer.get("result") == "pong", f"a {len(json.dumps(fits))}-byte request (limit {limit}): {brief(answer)}")
        too_big = dict(base, id=2, params={"pad": "x" * (limit + 100)})
        await client.send_raw(json.dumps(too_big))
        code, reason = await client.wait_closed()
        check(code == 1009, f"a {len(json.dumps(too_big))}-byte message (limit {limit}): closed with {code} {reason!r}, expected 1009")
        check(client.stray == [] and client.null_answers == [], f"answers to the oversized message: {brief(client.null_answers + client.stray)}")
        fresh = await self.client("after-size", role="admin")
        await fresh.barrier()

    async def rate(self) -> None:
        burst, rate = self.args.burst, self.args.requests_per_second
        self.need(burst is not None and burst <= 20 and rate is not None and rate <= 2, "--burst of at most 20 and --requests-per-second of at most 2")
        burst = int(burst)
        client = await self.client("rate", role="admin")
        extra = 4
        futures = []
        started = time.monotonic()
        for _ in range(burst + extra):
            futures.append((await client.send_request("ping"))[1])
        # Refusals carry the request's id, like every answer.
        await client.until(f"{burst + extra} answers", lambda: sum(f.done() for f in futures) >= burst + extra)
        elapsed = time.monotonic() - started
        answers = [f.result() for f in futures if f.done()]
        pongs = [answer for answer in answers if "result" in answer]
        limited = [answer for answer in answers if "error" in answer]
        check(all(answer.get("result") == "pong" for answer in pongs), f"answered requests: {brief(pongs)}")
        check(all((answer.get("error") or {}).get("code") == RATE_LIMITED for answer in limited), f"refused requests: {brief(limited)}")
        allowed = burst + int(elapsed * rate) + 1
        check(burst <= len(pongs) <= allowed, f"{len(pongs)} of {burst + extra} requests answered in {elapsed:.2f}s (burst {burst}, {rate}/s)")
        check(len(limited) >= burst + extra - allowed and len(limited) >= 1, f"{len(limited)} requests refused as rate limited")
        # The bucket refills: a request gets through again (probing at most every 0.7 s,
        # so the refusals in between stay below the 10 that close the connection).
        deadline = time.monotonic() + WAIT
        while True:
            ident, future = await client.send_request("ping")
            await client.until("an answer to the probe", lambda: future.done())
            if "result" in future.result():
                check(future.result().get("result") == "pong", f"probe: {brief(future.result())}")
                break
            check((future.result().get("error") or {}).get("code") == RATE_LIMITED, f"probe: {brief(future.result())}")
            if time.monotonic() >= deadline:
                raise CheckFailed("the rate limit never let a request through again")
            try:
                await client.until("nothing (pacing the probes)", lambda: client.closed is not None, timeout=0.7, allow_closed=True)
            except CheckFailed:
                pass
        check(client.closed is None, f"closed: {client.closed}")
        # A client that keeps flooding is closed (1008) after ten refusals in a row (exactly
        # burst + 10 requests: what a client sends after that is covered by close_handshake).
        flood = await self.client("flood", role="admin")
        for _ in range(burst + 10):
            await flood.send_request("ping")
        code, reason = await flood.wait_closed()
        check(code == 1008, f"a flooding client was closed with {code} {reason!r}, expected 1008")

    # -- running ------------------------------------------------------------------------

    async def run_sections(self, names: list[str]) -> None:
        for name in names:
            started = time.monotonic()
            try:
                await asyncio.wait_for(getattr(self, name)(), self.args.section_timeout)
                self.sections[name] = "ok"
            except Exception as error:
                self.sections[name] = "FAILED"
                self.failures.append(f"{name}: {describe(error)}")
            finally:
                stray = [(client.name, message) for client in self.clients for message in client.stray]
                if stray and self.sections[name] == "ok":
                    self.sections[name] = "FAILED"
                    self.failures.append(f"{name}: answers to nothing that was asked: {brief(stray)}")
                for client in self.clients:
                    try:
                        await client.close()
                    except Exception:
                        pass
                self.clients = []
            print(f"check_ws: {name} {self.sections[name]} ({time.monotonic() - started:.1f}s)", file=sys.stderr)


def describe(error: BaseException) -> str:
    if isinstance(error, CheckFailed):
        return str(error)
    if isinstance(error, asyncio.TimeoutError):
        return f"the section did not finish in time\n{traceback.format_exc()}"
    return f"{type(error).__name__}: {error}\n{traceback.format_exc()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--analytics", required=True, help="ws://HOST:PORT/ of the analytics stream")
    parser.add_argument("--sessions", required=True, help="ws://HOST:PORT/ of the session monitor")
    parser.add_argument("--http", required=True, help="http://HOST:PORT of the HTTP API")
    parser.add_argument("--admin-token")
    parser.add_argument("--developer-token")
    parser.add_argument("--dashboard-token")
    parser.add_argument("--ring-capacity", type=int)
    parser.add_argument("--client-queue", type=int)
    parser.add_argument("--max-message-bytes", type=int)
    parser.add_argument("--idle-timeout", type=float, help="seconds")
    parser.add_argument("--burst", type=float)
    parser.add_argument("--requests-per-second", type=float)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, required=True, help="the sections to run, in order")
    parser.add_argument("--section-timeout", type=float, default=150.0, help="deadline of one section, seconds")
    args = parser.parse_args()
    args.http = args.http.rstrip("/")

    started = time.monotonic()
    checker = Checker(args)
    try:
        asyncio.run(checker.run_sections(args.only))
    except BaseException as error:
        checker.failures.append(f"run: {describe(error)}")
    summary = {
        "ok": not checker.failures and all(checker.sections.get(name) == "ok" for name in args.only),
        "sections": checker.sections,
        "checks_passed": PASSED,
        "failures": len(checker.failures),
        "seconds": round(time.monotonic() - started, 2),
    }
    for failure in checker.failures:
        print(f"check_ws FAILED: {failure}", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
