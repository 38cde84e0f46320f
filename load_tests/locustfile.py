"""Locust load test of the RVC service: users POST /convert with short spoken clips.

    locust -f load_tests/locustfile.py --headless --host http://127.0.0.1:8003 \\
        --load-max-users 8 --load-ramp-up 60 --load-hold 90 --load-ramp-down 30 --load-idle 90

The clips (1-3 s, 16 kHz WAV) are spoken once by espeak-ng at start-up; voices are the
names GET /voices returns (or --load-voices a,b,c), taken round-robin. The shape ramps
users up, holds, ramps down and then holds at 0 users so scale-down can be observed.
Any non-200 answer (503 overload included) counts as a failure and the users keep going.
With --load-request-log FILE every request is appended to FILE as one JSON line
({"t": start epoch s, "ms": latency, "status": HTTP code or 0, "ok": bool, "audio_s": the clip's
seconds}); the runner
(`python -m load_tests.run_load_test`) builds its report from that file. Its first line,
{"event": "start", "t": epoch s}, is when the load plan's clock started.

Locust imports this file with its folder on sys.path (not as part of the `load_tests`
package), so it imports only installed packages and its siblings `clips` and `load_plan`.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from typing import Any, TextIO

from locust import HttpUser, LoadTestShape, between, events, task

from clips import fetch_voices, make_clips, wav_seconds  # siblings: Locust puts this folder on sys.path
from load_plan import USER_WAIT_S, LoadPlan, add_plan_arguments, plan_from_arguments

REQUEST_TIMEOUT_S = 180
CONVERT_NAME = "POST /convert"

_clips: list[bytes] = []
_clip_seconds: dict[int, float] = {}  # id(clip) -> its duration
_voices: list[str] = []
_voice_cycle: Any = None
_cycle_lock = threading.Lock()
_log: TextIO | None = None
_plan_start_epoch: float | None = None


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("RVC load plan")
    add_plan_arguments(group, prefix="load-")
    group.add_argument("--load-voices", default="", help="comma-separated voice names (default: all of GET /voices)")
    group.add_argument("--load-f0-method", default="harvest", help="f0_method sent with each conversion")
    group.add_argument("--load-request-log", default="", help="append one JSON line per request to this file")


def plan_from_options(options: Any) -> LoadPlan:
    """The LoadPlan the command line asks for."""
    return plan_from_arguments(options, prefix="load-")


@events.test_start.add_listener
def _prepare(environment: Any, **_: Any) -> None:
    global _voice_cycle, _log
    options = environment.parsed_options
    _clips[:] = make_clips()
    _clip_seconds.update({id(clip): wav_seconds(clip) for clip in _clips})
    requested = [v.strip() for v in (options.load_voices or "").split(",") if v.strip()]
    _voices[:] = requested or fetch_voices(environment.host)
    if not _voices:
        raise RuntimeError(f"{environment.host}/voices lists no usable voice; add voices to the models folder")
    _voice_cycle = itertools.cycle(_voices)
    if options.load_request_log:
        _log = open(options.load_request_log, "a", encoding="utf-8")
        _log.write(json.dumps({"event": "start", "t": _plan_start_epoch or time.time()}) + "\n")


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, response: Any = None,
            exception: Any = None, start_time: float | None = None, context: Any = None, **_: Any) -> None:
    if _log is None or name != CONVERT_NAME:
        return
    status = getattr(response, "status_code", 0) or 0
    row = {"t": start_time if start_time is not None else time.time() - response_time / 1000,
           "ms": response_time, "status": status, "ok": exception is None and status == 200,
           "audio_s": (context or {}).get("audio_s")}
    _log.write(json.dumps(row) + "\n")
    _log.flush()


@events.quitting.add_listener
def _close(**_: Any) -> None:
    if _log is not None:
        _log.close()


def next_voice() -> str:
    """The next voice, round-robin over all users."""
    with _cycle_lock:
        return next(_voice_cycle)


class ConvertUser(HttpUser):
    """Converts a random clip into the next voice, with a short pause between requests."""

    wait_time = between(*USER_WAIT_S)

    @task
    def convert(self) -> None:
        voice = next_voice()
        clip = random.choice(_clips)
        data = {"voice_name": voice, "f0_method": self.environment.parsed_options.load_f0_method}
        files = {"audio": ("clip.wav", clip, "audio/wav")}
        with self.client.post("/convert", data=data, files=files, name=CONVERT_NAME, timeout=REQUEST_TIMEOUT_S,
                              catch_response=True, context={"audio_s": _clip_seconds[id(clip)]}) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")


class RampHoldRampIdle(LoadTestShape):
    """Users follow the LoadPlan; the run ends when the plan does."""

    def tick(self) -> tuple[int, float] | None:
        global _plan_start_epoch
        if _plan_start_epoch is None:  # the first tick comes before test_start
            _plan_start_epoch = time.time() - self.get_run_time()
        plan = plan_from_options(self.runner.environment.parsed_options)
        users = plan.users_at(self.get_run_time())
        if users is None:
            return None
        return users, max(1.0, float(plan.max_users))
