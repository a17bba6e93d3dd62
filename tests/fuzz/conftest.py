"""Fuzzing with hypothesis: the budget (profiles), the per-case time guard, the one-line-error check and the
case counter shared by the tests in this folder.

Profiles: `ci` (the default, part of the normal suite: a few dozen examples per target, derandomized so a run
is repeatable, well under a minute in all) and `long` (OPENMAGNET_FUZZ=long: thousands of examples per target,
random seeds; the documented longer run, see bench/results/fuzz.md). Neither keeps an example database (no
.hypothesis folder): a failure prints its reproducing example instead.

Every case runs under `guard()`: hypothesis' deadline flags a slow case, and a SIGALRM raises `Hang` (a
BaseException, so no `except Exception` in the code under test can swallow it; the guard turns it into an
AssertionError, so hypothesis reports the case) when a case runs past HANG_SECONDS; faulthandler kills the
process, with every thread's traceback, if even that cannot interrupt it (a hang inside C code).

Set OPENMAGNET_FUZZ_REPORT=path.json to write the number of cases tried per target.
"""
import collections
import contextlib
import datetime
import faulthandler
import functools
import json
import math
import os
import re
import signal
import time

import pytest
from hypothesis import HealthCheck, Phase, settings

LONG = os.environ.get("OPENMAGNET_FUZZ", "ci") == "long"
HANG_SECONDS = 120 if LONG else 60  # a case past this is a hang, whatever the machine's load
_COMMON = dict(database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
# ci does not shrink a failing case (minutes with model calls): it prints the case as found
settings.register_profile("ci", max_examples=20, derandomize=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate], **_COMMON)
settings.register_profile("long", max_examples=1000, derandomize=False, **_COMMON)
settings.load_profile("long" if LONG else "ci")

CASES = collections.Counter()  # target -> cases tried
SPENT = collections.Counter()  # target -> seconds spent in its cases
ERRORS = collections.defaultdict(collections.Counter)  # target -> {error type: cases that ended in it}
MESSAGES = collections.defaultdict(collections.Counter)  # target -> {the error's gist: cases}
_CURRENT = {"target": "", "counted": True}  # the case of the last guard(), and whether its error was counted
# the long run gives each target this many seconds (then its remaining examples return at once, uncounted)
TARGET_SECONDS = float(os.environ.get("OPENMAGNET_FUZZ_SECONDS", "180")) if LONG else math.inf


class OutOfTime(BaseException):
    """A target used its TARGET_SECONDS: a BaseException, so that hypothesis stops at once (it catches Exception
    only) and `budget` ends the test there, passed."""


def out_of_time(target: str) -> bool:
    """Ends the test (OutOfTime) once `target` has used its TARGET_SECONDS; never in the ci profile. Called by
    guard() before a case runs (so every case that starts runs whole), and first thing in tests whose every draw
    is made by @given before the body."""
    if SPENT[target] > TARGET_SECONDS:
        raise OutOfTime(target)
    return False


def budget(ci: int, long: int, deadline: float = 20.0):
    """Decorator (above @given, and above any @example) for one target: `ci` examples in the normal suite, `long`
    under OPENMAGNET_FUZZ=long (or fewer, when the target's TARGET_SECONDS run out first), and a deadline
    (seconds) per case, generous because these tests share small machines with other jobs."""
    chosen = settings(max_examples=long if LONG else ci, deadline=datetime.timedelta(seconds=deadline))

    def apply(test):
        test = chosen(test)

        @functools.wraps(test)
        def run(*args, **kwargs):
            try:
                return test(*args, **kwargs)
            except OutOfTime:
                return None
        return run
    return apply


class Hang(BaseException):
    """A fuzz case ran past HANG_SECONDS."""


@contextlib.contextmanager
def guard(target: str, seconds: float = HANG_SECONDS):
    """Count one case of `target` and run it under the hang guards. In the long run, a target past its time
    budget ends here (OutOfTime), after the case's draws: ending a case before a draw that an earlier case of the
    same prefix made would make hypothesis report an inconsistent strategy (FlakyStrategyDefinition)."""
    out_of_time(target)
    CASES[target] += 1
    _CURRENT.update(target=target, counted=False)

    def alarm(signum, frame):
        raise Hang(f"{target}: a case ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(2 * seconds + 30, exit=True)
    start = time.perf_counter()
    try:
        yield
    except Hang as exc:  # past the code under test: an ordinary failure, so hypothesis prints the case
        raise AssertionError(str(exc)) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
        SPENT[target] += time.perf_counter() - start


def check_one_line(err: BaseException, names: str = "", types=(ValueError, OSError)) -> str:
    """The documented error: one of `types`, one line, naming `names` (the file, when given). Returns the message."""
    assert isinstance(err, types), f"{type(err).__name__} is not one of the documented errors: {err!r}"[:2000]
    message = str(err)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"[:2000]
    assert len(message) < 10_000, f"a {len(message)}-character message"
    assert names in message, f"the message does not name {names!r}: {message!r}"[:2000]
    if not _CURRENT["counted"]:  # the first error of a case says how it ended
        ERRORS[_CURRENT["target"]][type(err).__name__] += 1
        MESSAGES[_CURRENT["target"]][gist(message)] += 1
        _CURRENT["counted"] = True
    return message


def gist(message: str) -> str:
    """The error without its particulars: paths, numbers and quoted values become '_'."""
    text = re.sub(r"(/[^\s:]+)+", "_", message)
    text = re.sub(r"'[^']*'|\"[^\"]*\"|-?\d[\d.,e+-]*", "_", text)
    return text[:90]


def pytest_sessionfinish(session):
    report = os.environ.get("OPENMAGNET_FUZZ_REPORT")
    if report and CASES:
        with open(report, "w") as f:
            json.dump({"profile": "long" if LONG else "ci", "cases": dict(sorted(CASES.items())),
                       "errors": {k: dict(v) for k, v in sorted(ERRORS.items())},
                       "messages": {k: dict(v.most_common(8)) for k, v in sorted(MESSAGES.items())},
                       "seconds": {k: round(v, 1) for k, v in sorted(SPENT.items())}}, f, indent=1)


def pytest_terminal_summary(terminalreporter):
    if CASES:
        terminalreporter.write_line(f"fuzz ({'long' if LONG else 'ci'} profile) cases: "
                                    + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())))


@pytest.fixture(autouse=True)
def _no_leftover_alarm():
    yield
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0, "a guard left its alarm running"


@pytest.fixture(scope="module")
def model():
    """The music10 fixture model set up for fast fuzzing of generation inputs (one step a stage, 0.3-s clips)."""
    from tests.conftest import load_fixture_model

    m = load_fixture_model("music10")
    saved = (m.duration, m.params)
    m.set_generation_params(decoding_steps=[1, 1, 1, 1])
    m.duration = 0.3
    yield m
    m.duration, m.params = saved
