"""Load a page in headless Chromium and check it, through the DevTools protocol over a pipe.

Chromium runs with --remote-debugging-pipe: it reads protocol messages on fd 3 and writes
them on fd 4, each JSON message ended by a NUL byte. No port is opened, nothing is
downloaded and no Python package beyond the standard library is needed, so the check works
on a closed network and cannot collide with another process's debugging port. Console
errors, uncaught exceptions and failed loads come as protocol events, so they are seen
whether or not the page has a script of its own.

    with Browser() as b:                       # raises BrowserMissing when it cannot start
        page = b.check("file:///.../index.html", screenshot=Path("shot.png"))
        page["errors"], page["claims"], page["images"], page["scroll_width"]
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe"]
WIDTH, HEIGHT = 1280, 900

# What the page is asked, once it has loaded: its claims rows, whether every image
# decodes, and whether it is wider than the window.
CHECKS = """(async () => {
  const images = await Promise.all([...document.images].map(img => img.decode().then(
      () => ({alt: img.alt, ok: img.naturalWidth > 0, width: img.naturalWidth}),
      () => ({alt: img.alt, ok: false, width: 0}))));
  const claims = [...document.querySelectorAll('#claims tr.claim')].map(tr => ({
      id: tr.dataset.id, verdict: tr.dataset.verdict,
      shown: (tr.querySelector('.verdict') || {}).textContent || ''}));
  return {images, claims, title: document.title,
          coverage: (document.getElementById('coverage') || {}).textContent || '',
          scroll_width: document.documentElement.scrollWidth,
          body_width: document.body.scrollWidth, inner_width: window.innerWidth,
          height: document.documentElement.scrollHeight};
})()"""


class BrowserMissing(RuntimeError):
    """Chromium is not installed or does not start here."""


def find_chromium() -> Optional[str]:
    env = os.environ.get("QUADRUN_CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, executable: Optional[str] = None, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        self.timeout = timeout
        self.proc = None
        self._id = 0
        self._buffer = b""
        self.events: list = []

    # -- process ---------------------------------------------------------------------------
    def __enter__(self) -> "Browser":
        if not self.executable:
            raise BrowserMissing("no chromium on PATH (apt-get install chromium, or set "
                                 "QUADRUN_CHROMIUM)")
        self.profile = tempfile.mkdtemp(prefix="quadrun-chromium-")
        to_chrome_r, self._write = os.pipe()
        self._read, from_chrome_w = os.pipe()

        def wire():  # in the child: its fd 3 reads our messages, fd 4 writes its own
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [self.executable, *FLAGS, f"--user-data-dir={self.profile}",
                f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, preexec_fn=wire, pass_fds=(3, 4))
        except OSError as exc:
            self._cleanup()
            raise BrowserMissing(f"{self.executable} does not start: {exc}") from None
        finally:
            os.close(to_chrome_r)
            os.close(from_chrome_w)
        try:
            self.call("Browser.getVersion", timeout=30)
        except Exception as exc:
            err = b""
            if self.proc.poll() is not None and self.proc.stderr:
                err = self.proc.stderr.read()[-400:]
            self.__exit__(None, None, None)
            raise BrowserMissing(f"{self.executable} did not answer on its pipe ({exc}); "
                                 f"{err.decode(errors='replace').strip()}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except Exception:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        for fd in ("_write", "_read"):
            if hasattr(self, fd):
                try:
                    os.close(getattr(self, fd))
                except OSError:
                    pass
                delattr(self, fd)
        if getattr(self, "profile", None):
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- protocol ----------------------------------------------------------------------------
    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None) -> int:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self._write, data)
            data = data[n:]
        return self._id

    def _next(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise EOFError("chromium closed its pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
             timeout: Optional[float] = None) -> dict:
        mid = self.send(method, params, session)
        deadline = time.time() + (timeout or self.timeout)
        while True:
            msg = self._next(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, session: Optional[str], timeout: Optional[float] = None) -> dict:
        for i, msg in enumerate(self.events):
            if msg.get("method") == method and msg.get("sessionId") == session:
                return self.events.pop(i)
        deadline = time.time() + (timeout or self.timeout)
        while True:
            msg = self._next(deadline)
            if msg.get("method") == method and msg.get("sessionId") == session:
                return msg
            self.events.append(msg)

    # -- the check ------------------------------------------------------------------------------
    def check(self, url: str, screenshot: Optional[Path] = None, max_height: int = 8000) -> dict:
        """Load `url` in a fresh 1280-px-wide tab; return its console errors, exceptions and
        failed loads (`errors`), claims rows, images, widths; save a full-page screenshot."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": HEIGHT,
                                                        "deviceScaleFactor": 1, "mobile": False},
                  session=session)
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session)
        result = self.call("Runtime.evaluate", {"expression": CHECKS, "awaitPromise": True,
                                                "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"the page check failed: {result['exceptionDetails']}")
        page = result["result"]["value"]
        time.sleep(0.2)   # late console messages
        self._drain(0.3)
        errors = []
        for msg in self.events:
            if msg.get("sessionId") != session:
                continue
            m, p = msg.get("method"), msg.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                     for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                errors.append("exception: " + str(p.get("exceptionDetails", {}).get("text")))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
        page["errors"] = errors
        if screenshot is not None:
            height = min(int(page.get("height") or HEIGHT), max_height)
            shot = self.call("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}},
                session=session, timeout=120)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            page["screenshot"] = str(screenshot)
        self.call("Target.closeTarget", {"targetId": target})
        return page

    def _drain(self, seconds: float) -> None:
        deadline = time.time() + seconds
        try:
            while True:
                self.events.append(self._next(deadline))
        except TimeoutError:
            pass
