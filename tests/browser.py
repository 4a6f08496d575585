"""Open a local HTML page in headless Chromium and record what it did: console errors, uncaught
exceptions, network requests, and the values of JavaScript probes evaluated in the rendered page.

The browser is driven over the Chrome DevTools Protocol on ``--remote-debugging-pipe`` (JSON
messages terminated by a NUL byte; Chromium reads commands on fd 3 and writes replies and events on
fd 4), with the standard library only. Why not the simpler ``--enable-logging=stderr`` and
``--log-net-log``: this Chromium (Debian 156) logs every console message at the same ``INFO:CONSOLE``
level, so ``console.log`` and ``console.error`` cannot be told apart, and the net log also holds the
browser's own requests (time and component-update pings that happen even with
``--disable-background-networking``), which cannot be attributed to the page reliably. Over the
protocol, the page's own session reports

- ``Runtime.consoleAPICalled`` with ``type`` (``error`` and ``assert`` count as errors),
- ``Runtime.exceptionThrown`` (uncaught exceptions and unhandled promise rejections),
- ``Log.entryAdded`` with ``level`` (browser-side errors such as a failed resource load),
- ``Network.requestWillBeSent`` with the URL of every request the page starts (images, fetch, XHR,
  stylesheets, fonts, ...); every URL other than ``file:``, ``data:``, ``blob:``, ``about:`` and
  ``chrome:`` counts as a network request.

Host names resolve to nothing (``--host-resolver-rules``), so a page that does make a request is
recorded without anything leaving the machine.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--window-size=1280,1600",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
)

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-error:", "devtools:")


class BrowserError(RuntimeError):
    """Chromium could not be started, or did not answer in time."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium() -> str:
    """Debian's ``chromium`` via apt (as root); raises BrowserError with the reason when it cannot."""
    path = find_chromium()
    if path:
        return path
    if os.geteuid() != 0:
        raise BrowserError("chromium is not installed and the tests are not running as root, so they cannot "
                           "install it: run `apt-get install -y chromium` first")
    if not shutil.which("apt-get"):
        raise BrowserError("chromium is not installed and apt-get is not available to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BrowserError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{tail}")
    path = find_chromium()
    if not path:
        raise BrowserError("apt-get install chromium succeeded but no chromium executable is on PATH")
    return path


@dataclass
class PageResult:
    """What a page did while it loaded and while the probes ran."""

    url: str
    loaded: bool
    console: list[tuple[str, str]] = field(default_factory=list)  # (type, text) of every console call
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page requested
    probes: dict[str, object] = field(default_factory=dict)
    screenshots: dict[str, Path] = field(default_factory=dict)  # name -> PNG of the viewport

    @property
    def network_requests(self) -> list[str]:
        """Requested URLs that are not local (file:, data:, blob:, about:, chrome:)."""
        return [u for u in self.requests if not u.lower().startswith(LOCAL_SCHEMES)]


def _remote_text(obj: dict) -> str:
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description") or obj.get("unserializableValue") or obj.get("type", ""))


class _Pipe:
    """NUL-delimited JSON messages over two pipes, with a deadline on every read."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.write_fd, data):]
        return self.next_id

    def _read_one(self, deadline: float) -> dict | None:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise BrowserError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 15.0) -> dict:
        msg_id = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(deadline)
            if msg is None:
                raise BrowserError(f"no answer to {method} within {timeout:.0f} s")
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def drain(self, until: float) -> None:
        """Collect events until the deadline."""
        while (msg := self._read_one(until)) is not None:
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if any(e["method"] == method for e in self.events):
                return True
            msg = self._read_one(deadline)
            if msg is None:
                return False
            if "method" in msg:
                self.events.append(msg)


def _spawn(chromium: str, profile: Path, log: Path) -> tuple[subprocess.Popen, _Pipe]:
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def map_fds() -> None:  # in the child: our pipe ends become fds 3 (commands in) and 4 (messages out)
        a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    with open(log, "wb") as err:
        proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err, close_fds=False,
                                preexec_fn=map_fds)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    return proc, _Pipe(to_chrome_w, from_chrome_r)


def load_page(path: Path, probes: dict[str, str] | None = None, chromium: str | None = None,
              timeout: float = 30.0, settle: float = 0.4, viewport: tuple[int, int] | None = None,
              screenshots: dict[str, str] | None = None, screenshot_dir: Path | None = None) -> PageResult:
    """Open ``path`` in a fresh headless Chromium profile and record what the page does.

    Waits for the load event, then ``settle`` seconds more for late work (timers, fetch), evaluates
    each probe (a JavaScript expression; its JSON-serialisable value is stored under its name), waits
    ``settle`` again, and classifies every event of the page's session.

    ``viewport`` = (width, height) emulates that window (device scale 1) before the page loads.
    ``screenshots`` maps a name to a JavaScript expression (say, one that scrolls to a section; "" for
    none) run after the probes, its value stored as the probe ``<name>:setup`` (a throw is an error):
    each is followed by a capture of the viewport, written to ``screenshot_dir/<name>.png`` and listed in
    :attr:`PageResult.screenshots`.
    """
    chromium = chromium or find_chromium()
    if not chromium:
        raise BrowserError("chromium is not installed")
    if screenshots and screenshot_dir is None:
        raise ValueError("screenshots need a screenshot_dir to be written to")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="report-browser-") as tmp:
        log = Path(tmp) / "chromium.log"
        proc, pipe = _spawn(chromium, Path(tmp) / "profile", log)
        try:
            try:
                pipe.call("Browser.getVersion", timeout=timeout)
                target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
                session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
                for domain in ("Runtime", "Log", "Network", "Page"):
                    pipe.call(f"{domain}.enable", session=session)
                if viewport is not None:
                    pipe.call("Emulation.setDeviceMetricsOverride",
                              {"width": viewport[0], "height": viewport[1], "deviceScaleFactor": 1,
                               "mobile": False}, session=session)
                pipe.events.clear()  # nothing of about:blank counts
                pipe.call("Page.navigate", {"url": url}, session=session)
                loaded = pipe.wait_for("Page.loadEventFired", timeout)
                pipe.drain(time.monotonic() + settle)
                values = {}
                for name, expr in (probes or {}).items():
                    res = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                                         "awaitPromise": True}, session=session, timeout=timeout)
                    if "exceptionDetails" in res:
                        raise BrowserError(f"probe {name!r} threw: {res['exceptionDetails'].get('exception')}")
                    values[name] = res["result"].get("value")
                shots = {}
                for name, setup in (screenshots or {}).items():
                    if setup:
                        res = pipe.call("Runtime.evaluate", {"expression": setup, "returnByValue": True},
                                        session=session, timeout=timeout)
                        if "exceptionDetails" in res:
                            raise BrowserError(f"screenshot {name!r}: its set-up threw: "
                                               f"{res['exceptionDetails'].get('exception')}")
                        values[f"{name}:setup"] = res["result"].get("value")
                        pipe.drain(time.monotonic() + settle)
                    shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session=session,
                                     timeout=timeout)
                    out = Path(screenshot_dir) / f"{name}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(base64.b64decode(shot["data"]))
                    shots[name] = out
                pipe.drain(time.monotonic() + settle)
            except BrowserError as exc:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
                raise BrowserError(f"{exc}\nchromium log tail:\n{tail}") from None
            try:
                pipe.send("Browser.close")
            except OSError:
                pass
        finally:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(pipe.write_fd)
            os.close(pipe.read_fd)
    result = PageResult(url=url, loaded=loaded, probes=values, screenshots=shots)
    for event in pipe.events:
        if event.get("sessionId") != session:
            continue
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(a) for a in params.get("args", []))
            result.console.append((params.get("type", ""), text))
            if params.get("type") in ("error", "assert"):
                result.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = _remote_text(details.get("exception", {})) if details.get("exception") else details.get("text")
            result.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                result.console_errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            result.requests.append(params.get("request", {}).get("url", ""))
    return result
