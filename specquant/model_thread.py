"""One thread for every model call a long-running process makes (the page, ``specquant serve``).

llama.cpp's CPU backend runs each pass in an OpenMP team owned by the calling thread. A second
calling thread gets a second team, and the idle one keeps the cores busy: measured on a 2-core
Zen 4 VM (SmolLM2-135M, four prompts, 64 tokens each, plain decoding), the same runs took 2.0x
as long once they ran on another thread than the one that ran them first (2.5 s -> 5.1 s), and
the first thread's runs stayed slow afterwards; with OMP_WAIT_POLICY=active 3.5x. A web server
runs handlers on pool threads, so loading, calibration and every run go through this one thread
instead. (The CLI and the bench already run on one thread: the main one.)

``call(fn)`` runs ``fn`` there and returns its result; ``iterate(make)`` runs the generator
``make()`` there and hands its items to the caller as they come; ``feed(make, put)`` calls
``put(item)`` there for each item and returns at once (one thread hop fewer: what the HTTP
server uses). Called from the model thread itself, ``call`` and ``iterate`` run inline.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


class Failed:
    """What ``feed`` puts when the generator raised."""

    def __init__(self, error: BaseException):
        self.error = error


END = object()  # what ``feed`` puts last


class ModelThread:
    def __init__(self, name: str = "specquant models"):
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._name = name
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            job()

    def here(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the model thread (after the jobs queued before it)."""
        if self.here():
            return fn()
        self._start()
        box: queue.Queue = queue.Queue(maxsize=1)

        def job():
            try:
                box.put(fn())
            except BaseException as e:  # noqa: BLE001 - raised again in the caller
                box.put(Failed(e))

        self._jobs.put(job)
        out = box.get()
        if isinstance(out, Failed):
            raise out.error
        return out

    def feed(self, make: Callable[[], Iterator[T]], put: Callable[[object], None],
             gone: threading.Event | None = None) -> None:
        """Queue a job that puts each item of ``make()``, then ``END`` (after ``Failed(error)`` if it
        raised); it stops at the next item once ``gone`` is set."""
        self._start()

        def job():
            try:
                gen = make()
                for item in gen:
                    put(item)
                    if gone is not None and gone.is_set():
                        gen.close()
                        break
            except BaseException as e:  # noqa: BLE001 - handed to the reader
                put(Failed(e))
            finally:
                put(END)

        self._jobs.put(job)

    def iterate(self, make: Callable[[], Iterator[T]]) -> Iterator[T]:
        """The items of ``make()``, produced on the model thread. A caller that stops reading (the
        generator is closed) makes the producer stop at its next item."""
        if self.here():
            yield from make()
            return
        items: queue.Queue = queue.Queue()
        gone = threading.Event()
        self.feed(make, items.put, gone)
        try:
            while (item := items.get()) is not END:
                if isinstance(item, Failed):
                    raise item.error
                yield item
        finally:
            gone.set()


MODELS = ModelThread()  # the process's one
