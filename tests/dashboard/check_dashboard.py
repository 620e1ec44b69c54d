"""Checks megamind's live dashboard in a real browser: headless Chromium driven over the
DevTools protocol (CDP, spoken here with the `websockets` client library).

usage:
  check_dashboard.py --devtools ws://127.0.0.1:PORT/devtools/browser/ID
                     --url http://127.0.0.1:H/ [--screenshot PATH]...

The browser is started by the caller (tests/it/dashboard.rs). The dashboard's server must
be `megamind demo` (traffic flowing) with the short windows of the integration tests and
no WebSocket tokens (the dashboard is then admin). What it checks, in real time with
deadlines (the page's data arrives over a live WebSocket, so virtual time cannot help):

  - the page connects: #connection-status reads "live", #role "admin";
  - numbers move: #update-count and #events-total increase, #events-rate becomes
    positive, the sessions, latency and models tables fill;
  - an alert: latency events posted over HTTP breach latency_mean_high; its row
    (tr[data-alert-id]) appears with data-status "firing" and an `ack` button; a mouse
    click on the button makes data-status "acknowledged", and /v1/breaches shows the
    alert acknowledged by "dashboard";
  - anomalies and error families: a metric series of its own (100 steady points, then a
    spike) posted over HTTP shows up as a row of #anomalies-table (data-anomaly-series
    names the series); 20 error messages of a new kind posted over HTTP become a row of
    #families-table whose count grows when more arrive; then one message of a kind never
    seen appears in #novel-table; the demo's own families fill the table too;
  - insights: #success-model names a trained version of the session success model (no
    later than the server's own, read from /v1/insights), and the demo's insights and
    metric forecasts fill #insights-table and #forecasts-table;
  - a dropped connection: after the page's socket is closed it reconnects, resumes and
    goes on counting updates;
  - no JavaScript error or exception on the page;
  - a full-page screenshot (Page.captureScreenshot) written to every --screenshot PATH.

Prints one JSON line (the summary) on stdout; exits 1 if any check failed, each failure
explained on stderr (lines `check_dashboard FAILED: ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

# Longest wait for something the page or the server produces.
WAIT = 45.0
POLL = 0.1


class CheckFailed(AssertionError):
    """A failed check; its message says what was expected and what came back."""


PASSED = 0


def check(condition: bool, message: str) -> None:
    global PASSED
    if not condition:
        raise CheckFailed(message)
    PASSED += 1


def brief(value: Any, limit: int = 1500) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def log(message: str) -> None:
    print(f"check_dashboard: {message}", file=sys.stderr, flush=True)


class Cdp:
    """One DevTools connection to the browser; commands to a page go with its sessionId
    (flat mode)."""

    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.next_id = 1
        self.pending: dict[int, asyncio.Future[dict]] = {}
        self.events: list[dict] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if "id" in message and message["id"] in self.pending:
                    future = self.pending.pop(message["id"])
                    if not future.done():
                        future.set_result(message)
                elif "method" in message:
                    self.events.append(message)
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(CheckFailed("the DevTools connection closed"))

    async def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = WAIT) -> dict:
        ident = self.next_id
        self.next_id += 1
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        try:
            answer = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise CheckFailed(f"DevTools: no answer to {method} within {timeout:.0f}s") from None
        if "error" in answer:
            raise CheckFailed(f"DevTools: {method} failed: {brief(answer['error'])}")
        return answer.get("result", {})

    async def event(self, method: str, session: str, since: int, timeout: float = WAIT) -> dict:
        """The first `method` event of `session` at index `since` or later."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.events[since:]:
                if message["method"] == method and message.get("sessionId") == session:
                    return message
            if time.monotonic() >= deadline:
                raise CheckFailed(f"DevTools: no {method} within {timeout:.0f}s")
            await asyncio.sleep(POLL)


class Page:
    def __init__(self, cdp: Cdp, session: str):
        self.cdp = cdp
        self.session = session

    async def send(self, method: str, params: dict | None = None) -> dict:
        return await self.cdp.send(method, params, self.session)

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CheckFailed(f"evaluating {expression!r} threw: {brief(result['exceptionDetails'])}")
        return result["result"].get("value")

    async def until(self, what: str, expression: str, accept: Callable[[Any], bool], timeout: float = WAIT) -> Any:
        """Evaluates `expression` until `accept` takes its value (re-checked every 100 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expression)
            if accept(value):
                return value
            if time.monotonic() >= deadline:
                raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}; last value of `{expression}`: {brief(value)}")
            await asyncio.sleep(POLL)

    async def text(self, selector: str) -> str | None:
        return await self.eval(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")

    async def number(self, selector: str) -> float | None:
        text = await self.text(selector)
        try:
            return float(text) if text is not None else None
        except ValueError:
            return None


class Checker:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run = secrets.token_hex(3)
        self.failures: list[str] = []
        self.observed: dict[str, Any] = {}
        self.page: Page | None = None
        origin = args.url.split("/", 3)
        self.http_base = "/".join(origin[:3])

    def http(self, method: str, path: str, body: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.http_base + path, data=body.encode() if body is not None else None, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    async def breaches_until(self, what: str, probe: Callable[[dict], Any], timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status, body = await asyncio.to_thread(self.http, "GET", "/v1/breaches?limit=1")
            check(status == 200, f"GET /v1/breaches: {status} {brief(body)}")
            found = probe(body)
            if found:
                return found
            if time.monotonic() >= deadline:
                raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}; /v1/breaches: {brief(body)}")
            await asyncio.sleep(POLL)

    async def post_events(self, events: list[dict]) -> None:
        body = "".join(json.dumps(event) + "\n" for event in events)
        status, answer = await asyncio.to_thread(self.http, "POST", "/v1/events", body)
        check(status == 200 and answer == {"accepted": len(events), "rejected": []}, f"POST /v1/events: {status} {brief(answer)}")

    async def check_anomalies(self, page: Page) -> None:
        """The anomaly and error-family panels show live data from the pipeline."""
        # The demo's own error families reach the table.
        families = await page.until("rows in #families-table", "document.querySelectorAll('#families-table tbody tr').length", lambda v: v >= 1)
        self.observed["families_rows_demo"] = families
        check(families >= 1, "families-table")

        # A numeric anomaly: 100 steady points, then a spike, on a series of our own.
        probe = f"p{self.run}"
        series = f"dash_probe_ms{{probe={probe}}}"
        base = int(time.time() * 1000) + 1000
        values = [50.0 + (i % 7) * 0.5 for i in range(100)] + [500.0] + [50.0 + (i % 7) * 0.5 for i in range(5)]
        await self.post_events([
            {"type": "metric", "ts": base + 5 * i, "name": "dash_probe_ms", "labels": {"probe": probe}, "value": v}
            for i, v in enumerate(values)
        ])
        row = f"#anomalies-table tr[data-anomaly-series={json.dumps(series)}]"
        cells = await page.until(
            f"the anomaly row {row}",
            f"(() => {{ const r = document.querySelector({json.dumps(row)}); return r ? [...r.cells].map((c) => c.textContent) : null; }})()",
            lambda v: v is not None,
        )
        check(cells[0] == series and float(cells[1]) == 500.0, f"the anomaly row: {cells}")
        check(float(cells[2]) > 5.0 and float(cells[4]) >= 0.5, f"the anomaly row's z and score: {cells}")
        self.observed["anomaly_row"] = cells
        count = await page.number("#anomaly-count")
        check(count is not None and count >= 1, f"#anomaly-count: {count}")

        # An error family of our own: 20 messages of a new kind, from one session.
        session = f"dash-err-{self.run}"
        base = int(time.time() * 1000) + 1000

        def errors(start: int, n: int, text: str) -> list[dict]:
            return [
                {"type": "session", "ts": base + i, "session_id": session, "kind": "error", "message": text.format(i=i)}
                for i in range(start, start + n)
            ]

        await self.post_events(errors(0, 20, "dashprobe zeppelin mooring failed at berth {i}"))
        family = "#families-table tr[data-family-id]"
        find = f"""(() => {{
          const r = [...document.querySelectorAll({json.dumps(family)})].find((r) => r.cells[0].textContent.startsWith('dashprobe zeppelin'));
          return r ? [r.dataset.familyId, r.cells[0].textContent, Number(r.cells[1].textContent)] : null;
        }})()"""
        found = await page.until("our error family in #families-table", find, lambda v: v is not None)
        check(found[1] == "dashprobe zeppelin mooring failed at berth <num>", f"the family's template: {found}")
        self.observed["family_row"] = found
        await self.post_events(errors(100, 10, "dashprobe zeppelin mooring failed at berth {i}"))
        grown = await page.until(f"the count of family {found[0]} to grow", find, lambda v: v is not None and v[2] >= found[2] + 10)
        check(grown[0] == found[0], f"the family kept its id: {found} then {grown}")

        # A message of a kind never seen: a novel error row.
        novel = f"{probe} quasar lattice desynchronised beyond recovery"
        await self.post_events([{"type": "session", "ts": int(time.time() * 1000) + 1000, "session_id": session, "kind": "error", "message": novel}])
        cells = await page.until(
            "the novel error in #novel-table",
            f"(() => {{ const r = [...document.querySelectorAll('#novel-table tbody tr')].find((r) => r.cells[0].textContent === {json.dumps(novel)}); return r ? [...r.cells].map((c) => c.textContent) : null; }})()",
            lambda v: v is not None,
        )
        check(cells == [novel, session], f"the novel error row: {cells}")
        self.observed["novel_row"] = cells

    async def check_insights(self, page: Page) -> None:
        """The insights panels show the success model, live insights and forecasts."""
        shown = await page.until(
            "#success-model to name a trained version",
            "document.getElementById('success-model').textContent",
            lambda v: isinstance(v, str) and v.startswith("session-success v"),
        )
        match = re.match(r"^session-success v(\d+): trained on (\d+), \d+% train acc\.$", shown)
        check(match is not None, f"#success-model: {shown!r}")
        status, answer = await asyncio.to_thread(self.http, "GET", "/v1/insights")
        check(status == 200, f"GET /v1/insights: {status} {brief(answer)}")
        server = (answer.get("success_model") or {}).get("version", "")
        check(
            server.startswith("v") and int(match.group(1)) <= int(server[1:]),
            f"the page shows v{match.group(1)}, the server's model is {server!r}",
        )
        self.observed["success_model"] = shown
        for table in ("insights-table", "forecasts-table"):
            rows = await page.until(f"rows in #{table}", f"document.querySelectorAll('#{table} tbody tr').length", lambda v: v >= 1)
            self.observed[table] = rows
            check(rows >= 1, table)

    async def run_checks(self, cdp: Cdp) -> None:
        target = await cdp.send("Target.createTarget", {"url": "about:blank"})
        attached = await cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(cdp, attached["sessionId"])
        self.page = page
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            await page.send(domain)
        await page.send("Emulation.setDeviceMetricsOverride", {"width": 1440, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        since = len(cdp.events)
        await page.send("Page.navigate", {"url": self.args.url})
        await cdp.event("Page.loadEventFired", page.session, since)
        started = time.monotonic()

        # Connected, as admin (no tokens configured).
        await page.until('#connection-status "live"', "document.getElementById('connection-status').textContent", lambda v: v == "live")
        log(f"live after {time.monotonic() - started:.1f}s")
        check(True, "live")
        await page.until('#role "admin"', "document.getElementById('role').textContent", lambda v: v == "admin")
        check(True, "admin")

        # Numbers move.
        updates = await page.number("#update-count") or 0
        events = await page.number("#events-total") or 0
        await page.until("#update-count to increase", "Number(document.getElementById('update-count').textContent)", lambda v: v > updates + 20)
        await page.until("#events-total to increase", "Number(document.getElementById('events-total').textContent)", lambda v: v > events)
        await page.until("#events-rate to be positive", "Number(document.getElementById('events-rate').textContent)", lambda v: v > 0)
        for table in ("sessions-table", "latency-table", "models-table"):
            rows = await page.until(f"rows in #{table}", f"document.querySelectorAll('#{table} tbody tr').length", lambda v: v >= 1)
            self.observed[table] = rows
            check(rows >= 1, table)
        self.observed["update_count_first"] = updates
        self.observed["events_total_first"] = events

        await self.check_anomalies(page)
        await self.check_insights(page)

        # An alert: latency well above latency_mean_high's 70 ms for a session of our own.
        hot = f"dash-hot-{self.run}"
        ts = int(time.time() * 1000) + 1000
        body = "".join(json.dumps({"type": "metric", "ts": ts, "name": "latency_ms", "session_id": hot, "value": v}) + "\n" for v in (150.0, 200.0, 250.0))
        status, answer = await asyncio.to_thread(self.http, "POST", "/v1/events", body)
        check(status == 200 and answer == {"accepted": 3, "rejected": []}, f"POST /v1/events: {status} {brief(answer)}")
        alert = await self.breaches_until(
            f"a firing alert for {hot}",
            lambda b: next((a for a in b["alerts"] if (a.get("key") or {}).get("session_id") == hot and a["status"] == "firing"), None),
        )
        alert_id = alert["id"]
        row = f'tr[data-alert-id="{alert_id}"]'
        await page.until(
            f"the alert row {row} with data-status firing and an ack button",
            f"(() => {{ const r = document.querySelector({json.dumps(row)}); return r ? [r.dataset.status, !!r.querySelector('button.ack')] : null; }})()",
            lambda v: v == ["firing", True],
        )
        check(True, "alert row")

        # A real mouse click on the row's ack button (the table re-renders on updates, so
        # check what is under the pointer right before pressing).
        clicked = False
        for _ in range(20):
            spot = await page.eval(
                f"""(() => {{
                  const b = document.querySelector({json.dumps(row + ' button.ack')});
                  if (!b) return null;
                  b.scrollIntoView({{block: 'center'}});
                  const r = b.getBoundingClientRect();
                  const x = r.left + r.width / 2, y = r.top + r.height / 2;
                  const hit = document.elementFromPoint(x, y);
                  return {{x, y, ok: !!hit && hit.closest('button.ack') !== null && hit.closest('tr')?.dataset.alertId === {json.dumps(alert_id)}}};
                }})()"""
            )
            if spot and spot["ok"]:
                for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
                    params = {"type": kind, "x": spot["x"], "y": spot["y"], "button": "left", "clickCount": 1}
                    if kind == "mouseMoved":
                        params = {"type": kind, "x": spot["x"], "y": spot["y"]}
                    await page.send("Input.dispatchMouseEvent", params)
                clicked = True
                break
            await asyncio.sleep(POLL)
        check(clicked, f"the ack button of {row} never stood still under the pointer")
        await page.until(
            f"{row} data-status acknowledged",
            f"document.querySelector({json.dumps(row)})?.dataset.status ?? null",
            lambda v: v == "acknowledged",
        )
        cell = await page.text(f"{row} td:nth-child(3)")
        check(cell is not None and "acknowledged by dashboard" in cell, f"the status cell of the row: {cell!r}")
        record = await self.breaches_until(
            "the alert acknowledged by dashboard in /v1/breaches",
            lambda b: next((a for a in b["alerts"] if a["id"] == alert_id and a["status"] == "acknowledged"), None),
        )
        check((record.get("acknowledged") or {}).get("by") == "dashboard", f"/v1/breaches: {brief(record)}")
        check(not await page.eval(f"!!document.querySelector({json.dumps(row + ' button.ack')})"), "an acknowledged alert still offers ack")
        self.observed["alert_id"] = alert_id

        # A dropped connection: the page reconnects, resumes and goes on.
        before = await page.number("#update-count") or 0
        await page.eval("state.socket.close(4000, 'test: drop'); true")
        await page.until("#connection-status to show the drop", "document.getElementById('connection-status').textContent", lambda v: v != "live")
        await page.until("#connection-status live again", "document.getElementById('connection-status').textContent", lambda v: v == "live")
        await page.until("#update-count to increase after the reconnect", "Number(document.getElementById('update-count').textContent)", lambda v: v > before + 20)
        check(
            await page.eval(f"document.querySelector({json.dumps(row)})?.dataset.status ?? null") == "acknowledged",
            "the acknowledged alert after the reconnect",
        )

        self.observed["update_count"] = await page.number("#update-count")
        self.observed["events_total"] = await page.number("#events-total")
        self.observed["seconds_live"] = round(time.monotonic() - started, 1)

        # The screenshot: the whole page, with the acknowledged alert (the pointer moved
        # off the buttons, so none shows a hover frame).
        await page.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 1, "y": 1})
        await page.eval("window.scrollTo(0, 0); true")
        shot = await page.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        png = base64.b64decode(shot["data"])
        check(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000, f"screenshot of {len(png)} bytes")
        for path in self.args.screenshot:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "wb") as out:
                out.write(png)
            log(f"screenshot ({len(png)} bytes) written to {path}")

        # No script errors on the page (a missing favicon is not one).
        problems = []
        for message in cdp.events:
            if message.get("sessionId") != page.session:
                continue
            params = message.get("params", {})
            if message["method"] == "Runtime.exceptionThrown":
                problems.append(params.get("exceptionDetails"))
            elif message["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                problems.append(params.get("args"))
            elif message["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                if "favicon" not in (entry.get("url") or "") and "favicon" not in entry.get("text", ""):
                    problems.append(entry)
        check(problems == [], f"errors on the page: {brief(problems)}")
        await cdp.send("Target.closeTarget", {"targetId": target["targetId"]})


async def main_async(args: argparse.Namespace, checker: Checker) -> None:
    async with connect(args.devtools, max_size=256 << 20, ping_interval=None, open_timeout=15) as ws:
        cdp = Cdp(ws)
        version = await cdp.send("Browser.getVersion")
        log(f"browser {version.get('product')}")
        checker.observed["browser"] = version.get("product")
        try:
            await checker.run_checks(cdp)
        except BaseException:
            if args.failure_screenshot and checker.page is not None:
                try:
                    shot = await checker.page.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
                    with open(args.failure_screenshot, "wb") as out:
                        out.write(base64.b64decode(shot["data"]))
                    log(f"the page at the failure: {args.failure_screenshot}")
                except Exception:
                    pass
            raise
        finally:
            try:
                await cdp.send("Browser.close", timeout=10)
            except Exception:
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devtools", required=True, help="the browser's DevTools WebSocket URL")
    parser.add_argument("--url", required=True, help="the dashboard, http://127.0.0.1:PORT/")
    parser.add_argument("--screenshot", action="append", default=[], help="where to write the screenshot (repeatable)")
    parser.add_argument("--failure-screenshot", help="where to write a screenshot of the page when a check fails")
    parser.add_argument("--timeout", type=float, default=240.0, help="deadline for the whole run, seconds")
    args = parser.parse_args()
    started = time.monotonic()
    checker = Checker(args)

    async def body() -> None:
        await asyncio.wait_for(main_async(args, checker), args.timeout)

    try:
        asyncio.run(body())
    except CheckFailed as error:
        checker.failures.append(str(error))
    except BaseException as error:
        checker.failures.append(f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
    summary = {
        "ok": not checker.failures,
        "checks_passed": PASSED,
        "failures": len(checker.failures),
        "observed": checker.observed,
        "seconds": round(time.monotonic() - started, 2),
    }
    for failure in checker.failures:
        print(f"check_dashboard FAILED: {failure}", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return 0 if not checker.failures else 1


if __name__ == "__main__":
    sys.exit(main())
