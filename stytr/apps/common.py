"""What the ipywidgets apps share: images for image widgets, a debouncer, walking and closing a widget tree."""
from __future__ import annotations

import io
import threading
import time
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..viz import to_uint8_image


def to_png(image: Any) -> bytes:
    """PNG bytes of one image for an image widget (inputs as :func:`stytr.viz.to_uint8_image` takes them)."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8_image(image)).save(buf, format="PNG")
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """What an image widget shows, decoded: HxWx3 floats in [-1, 1]."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64) / 127.5 - 1


class Debouncer:
    """Calls ``callback`` once a burst of :meth:`schedule` calls has been quiet for ``delay_s``.

    Every call restarts the timer, so dragging a slider renders once the hand stops instead of once
    per intermediate value; a burst longer than ``max_wait_s`` still fires that often. The callback
    runs on the timer's thread.
    """

    def __init__(self, callback: Callable[[], Any], delay_s: float = 0.15, max_wait_s: float = 0.6):
        self.callback = callback
        self.delay_s, self.max_wait_s = float(delay_s), float(max_wait_s)
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._first_pending: float | None = None
        self._inflight = 0             # callbacks running on a timer thread

    def schedule(self) -> None:
        """(Re)start the timer; the callback runs when it expires."""
        with self._lock:
            now = time.perf_counter()
            if self._timer is not None:
                self._timer.cancel()
            if self._first_pending is None:
                self._first_pending = now
            waited = now - self._first_pending
            delay = 0.0 if waited >= self.max_wait_s else min(self.delay_s, self.max_wait_s - waited)
            self._timer = threading.Timer(delay, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            self._first_pending = None
            self._inflight += 1
        try:
            self.callback()
        finally:
            with self._lock:
                self._inflight -= 1

    def cancel(self) -> None:
        """Drop a pending call (one already running finishes)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._first_pending = None

    @property
    def pending(self) -> bool:
        return self._timer is not None or self._inflight > 0

    def wait(self, timeout: float = 5.0) -> bool:
        """Block until nothing is pending or running (True) or ``timeout`` seconds pass (False)."""
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            with self._lock:
                timer, busy = self._timer, self._inflight
            if timer is None and not busy:
                return True
            if timer is not None:
                timer.join(max(0.0, min(0.05, end - time.perf_counter())))
            else:
                time.sleep(0.005)
        return False


def widget_tree(root: Any) -> list[Any]:
    """``root`` and every widget below it (through ``children``), depth first."""
    out, stack = [], [root]
    while stack:
        wid = stack.pop()
        out.append(wid)
        stack.extend(reversed(getattr(wid, "children", ())))
    return out


def close_widgets(root: Any) -> None:
    """Close every widget of a tree with its layout and style models (one comm each, in the kernel
    and in a saved notebook's widget state)."""
    for wid in widget_tree(root):
        for attr in ("layout", "style"):
            sub = getattr(wid, attr, None)
            if sub is not None and hasattr(sub, "close"):
                sub.close()
        wid.close()
