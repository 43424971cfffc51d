"""Shared by the Python tests (not a test itself: no *_test.py name): the
pass/fail count behind `check` and the closing line the suite reads.

    from testlib import check, finish
    check(cond, "what should hold")
    sys.exit(finish())
"""
import sys

_count = {"passed": 0, "failed": 0}


def check(cond, what):
    """Counts a pass, or a failure printed with `what`."""
    if cond:
        _count["passed"] += 1
    else:
        _count["failed"] += 1
        print("FAIL:", what, file=sys.stderr)
    return bool(cond)


def failures():
    return _count["failed"]


def finish():
    """Prints "# passed N failed M"; returns the exit status (1 if any failed)."""
    print("# passed %d failed %d" % (_count["passed"], _count["failed"]))
    return 1 if _count["failed"] else 0
