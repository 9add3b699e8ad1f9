import os
import threading

from kvmlite.eventloop import EventLoop


def test_reader_call_soon_and_timer():
    loop = EventLoop()
    loop.start()
    got: list[object] = []
    done = threading.Event()
    r, w = os.pipe()

    def on_read():
        got.append(os.read(r, 100))

    loop.add_reader(r, on_read)
    os.write(w, b"ping")
    loop.call_soon(lambda: got.append("soon"))

    def later():
        got.append("later")
        done.set()

    loop.call_soon(lambda: loop.call_later(0.05, later))
    assert done.wait(5)
    assert b"ping" in got and "soon" in got and got[-1] == "later"
    loop.remove_reader(r)
    loop.close()
    os.close(r)
    os.close(w)


def test_failing_callback_does_not_kill_loop():
    loop = EventLoop()
    loop.start()
    ok = threading.Event()
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(ok.set)
    assert ok.wait(5)
    loop.close()


def test_cancelled_timer_does_not_run():
    loop = EventLoop()
    ran = []
    done = threading.Event()

    def setup():
        h = loop.call_later(0.01, lambda: ran.append(1))
        h.cancel()
        loop.call_later(0.05, done.set)

    loop.start()
    loop.call_soon(setup)
    assert done.wait(5)
    assert ran == []
    loop.close()
