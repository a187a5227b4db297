"""The one child-process mechanism (yolo_export/isolation.py): whatever the child does — return, raise, call exit,
crash, hang — the caller gets one Outcome and goes on; what the child reported before dying arrives."""

import os
import signal
import subprocess
import sys
import time

from yolo_export.isolation import run_here, run_isolated


def _returns(payload, report):
    report({"step": 1})
    print("library chatter")  # goes to stderr in the child: a caller's --json stdout stays one document
    return {"pid": os.getpid(), "twice": payload * 2}


def _raises(payload, report):
    report("exported")
    raise RuntimeError("runtime said no\nsecond line")


def _exits(payload, report):
    report("exported")
    sys.exit(3)  # a converter calling exit


def _hard_exit(payload, report):
    os._exit(7)


def _crashes(payload, report):
    report("exported")
    os.kill(os.getpid(), signal.SIGSEGV)


def _hangs(payload, report):
    # a grandchild in the child's process group: killed with it on timeout
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    report(proc.pid)
    time.sleep(600)


def test_value_and_messages(capfd):
    out = run_isolated(_returns, 21, timeout=120)
    assert out.error is None and out.value["twice"] == 42 and out.value["pid"] != os.getpid()
    assert out.messages == [{"step": 1}]
    assert "library chatter" not in capfd.readouterr().out
    here = run_here(_returns, 21)
    assert here.value["twice"] == 42 and here.value["pid"] == os.getpid() and here.messages == [{"step": 1}]


def test_failures_are_one_line_each():
    out = run_isolated(_raises, None, timeout=120)
    assert out.value is None and out.error == "runtime said no" and out.messages == ["exported"]
    assert run_here(_raises, None).error == "runtime said no"
    assert run_isolated(_exits, None, timeout=120).error == "called exit(3)"
    assert run_isolated(_hard_exit, None, timeout=120).error == "exited with code 7"
    crashed = run_isolated(_crashes, None, timeout=120)
    assert crashed.error == "crashed (SIGSEGV)" and crashed.messages == ["exported"]


def test_timeout_kills_the_child_and_what_it_started():
    # 10 s: time for the child to start its grandchild and report it on a busy machine (3 s left little room);
    # the child would sleep 600 s, so returning well before that shows the timeout, not the child, ended the call
    t0 = time.monotonic()
    out = run_isolated(_hangs, None, timeout=10)
    assert out.error == "timed out after 10 s" and time.monotonic() - t0 < 300
    assert out.messages, "the child did not report its grandchild within the timeout"
    grandchild, deadline = out.messages[0], time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"process {grandchild} started by the timed-out child is still running after 60 s")
