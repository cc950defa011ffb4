"""The one thread every model call of a served process runs on (``specquant.model_thread``)."""
from __future__ import annotations

import threading

import pytest

from specquant.model_thread import END, Failed, ModelThread


def test_calls_and_generators_from_many_threads_run_on_one():
    mt, seen = ModelThread("test models"), set()

    def where():
        seen.add(threading.get_ident())
        return threading.get_ident()

    def items(n):
        for i in range(n):
            where()
            yield i

    out = {}

    def caller(i):
        out[i] = (mt.call(where), list(mt.iterate(lambda: items(3))))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(seen) == 1 and threading.get_ident() not in seen
    assert all(v == (next(iter(seen)), [0, 1, 2]) for v in out.values()) and len(out) == 6
    assert mt.call(lambda: mt.call(where)) in seen  # on the thread itself: inline, no deadlock


def test_errors_reach_the_caller_and_a_closed_reader_stops_the_producer():
    mt = ModelThread("test models")
    with pytest.raises(ZeroDivisionError):
        mt.call(lambda: 1 / 0)

    def boom():
        yield 1
        raise ValueError("bad input")

    got = []
    with pytest.raises(ValueError, match="bad input"):
        for x in mt.iterate(boom):
            got.append(x)
    assert got == [1]
    made, stopped = [], threading.Event()

    def endless():
        try:
            i = 0
            while True:
                made.append(i)
                yield i
                i += 1
        finally:
            stopped.set()

    it = mt.iterate(endless)
    assert next(it) == 0
    it.close()
    assert stopped.wait(10)  # the producer ran ahead of the reader, then stopped
    n = mt.call(lambda: len(made))
    assert mt.call(lambda: len(made)) == n
    fed = []
    done = threading.Event()
    mt.feed(boom, lambda x: (fed.append(x), x is END and done.set()))
    assert done.wait(10) and fed[0] == 1 and isinstance(fed[1], Failed) and fed[2] is END
