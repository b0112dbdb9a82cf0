"""A minimal Chrome DevTools protocol client, for tests and benchmarks of the HTML report.

Test and benchmark tooling, not part of any plugin. Starts headless Chromium with its DevTools port on 127.0.0.1,
opens one page and runs script in it; collects the page's uncaught exceptions and console errors::

    browser = DevTools("/usr/bin/chromium", tmp_folder)
    browser.call("Page.navigate", {"url": "file:///.../report.html"})
    browser.wait("document.readyState === 'complete'")
    rows = browser.js("document.querySelectorAll('#s-list article').length")
    browser.close()
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path


class DevTools:
    """Headless Chromium driven over the DevTools protocol (on 127.0.0.1): open a page, run script in it."""

    def __init__(self, chromium: str, tmp: Path) -> None:
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--allow-file-access-from-files", f"--user-data-dir={tmp / 'cdp-profile'}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        self.port = None
        while time.monotonic() < deadline and self.port is None:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
        if self.port is None:
            raise RuntimeError("chromium did not open its DevTools port")
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._connect())
        self.seq = 0
        self.events: list[dict] = []
        self.call("Runtime.enable")
        self.call("Log.enable")

    async def _connect(self) -> None:
        import aiohttp

        self.http = aiohttp.ClientSession()
        targets = await (await self.http.get(f"http://127.0.0.1:{self.port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def _call(self, method: str, params: dict | None = None) -> dict:
        self.seq += 1
        await self.ws.send_json({"id": self.seq, "method": method, "params": params or {}})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), timeout=60)
            if msg.get("method") in ("Runtime.exceptionThrown", "Log.entryAdded", "Runtime.consoleAPICalled"):
                self.events.append(msg)
            if msg.get("id") == self.seq:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def errors(self) -> list[str]:
        """The page's uncaught exceptions, console errors and browser log errors so far."""
        out = []
        for e in self.events:
            p = e["params"]
            if e["method"] == "Runtime.exceptionThrown":
                out.append(str(p["exceptionDetails"].get("exception", {}).get("description") or p))
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(str(p.get("args")))
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.loop.run_until_complete(self._call(method, params))

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait(self, expression: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true: {expression}")
            time.sleep(0.05)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.close())
        self.loop.close()
        self.proc.kill()
        self.proc.wait()
