"""Headless Chromium for tests, driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

Chromium reads protocol commands from file descriptor 3 and writes replies and events to descriptor 4, one JSON
message per NUL-terminated record; no port, no websocket and nothing to download.  :func:`render` opens one
local page in a fresh profile and returns what a reader would get: console errors and uncaught exceptions, the
requests it made, each <img>'s load state, the rendered text and a full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-pipe"]


def chromium() -> str | None:
    """Path of the chromium binary (Debian's package), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Rendered:
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    text: str = ""
    screenshot: bytes = b""


class _Pipe:
    def __init__(self, binary: str, profile: str):
        cmd_r, self._cmd_w = os.pipe()   # we write commands, chromium reads fd 3
        self._ev_r, ev_w = os.pipe()     # chromium writes fd 4, we read

        def child_fds() -> None:
            a, b = os.dup(cmd_r), os.dup(ev_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     close_fds=False, preexec_fn=child_fds)
        os.close(cmd_r)
        os.close(ev_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._ev_r], [], [], left)[0]:
                raise TimeoutError("chromium: no reply from the DevTools pipe")
            chunk = os.read(self._ev_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe: " + self.proc.stderr.read().decode()[-2000:])
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"chromium: {method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        os.close(self._cmd_w)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._ev_r)


PROBE = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth,
                                                 src: i.src.slice(0, 40)})),
  text: document.body.innerText,
  height: Math.ceil(document.documentElement.scrollHeight),
  width: Math.ceil(document.documentElement.scrollWidth)})"""


def render(page: Path, binary: str, timeout: float = 60) -> Rendered:
    """Open ``page`` (a local file) in headless Chromium with a fresh profile; see the module docstring."""
    with tempfile.TemporaryDirectory(prefix="trainrecon-chromium-") as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired", timeout=timeout)
            probe = json.loads(pipe.send("Runtime.evaluate", {"expression": PROBE, "returnByValue": True},
                                         session=session)["result"]["value"])
            height = min(int(probe["height"]), 16000)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": 1200, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
            shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                             session=session, timeout=timeout)["data"]
        finally:
            pipe.close()
    out = Rendered(images=probe["images"], text=probe["text"], screenshot=base64.b64decode(shot))
    for e in pipe.events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            out.errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.errors.append("log: " + p["entry"].get("text", ""))
        elif e.get("method") == "Network.requestWillBeSent":
            out.requests.append(p.get("request", {}).get("url", "")[:80])
        elif e.get("method") == "Network.loadingFailed":
            out.errors.append("network: " + p.get("errorText", ""))
    return out
