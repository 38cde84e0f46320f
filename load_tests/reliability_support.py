"""Building blocks of the reliability scenarios (load_tests/reliability.py) and their tests:
the app on random-weight voices, live replica actors with their process and node, resident
memory, and HTTP clients that classify every answer.

Replicas are found through Ray's named actors (Serve names them
SERVE_REPLICA::<app>#<deployment>#<replica id> in the "serve" namespace); each is asked for
its pid and node id with Ray's built-in `__ray_call__`.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # must be set before Ray is imported

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

try:
    import psutil  # noqa: E402
except ImportError:  # Ray ships a copy and puts it on sys.path when imported
    import ray  # noqa: E402,F401
    import psutil  # noqa: E402

from load_tests.service import free_port, write_test_models as write_models  # noqa: E402,F401  (shared with the load test)

VOICES = ("alice", "bob")
CLIP_SECONDS = 1.5
SAMPLE_RATE = 16000
SYNTH_DEPLOYMENT = "VoiceSynthesizer"
INGRESS_DEPLOYMENT = "Ingress"
SERVE_NAMESPACE = "serve"
#: Serve names replica actors SERVE_REPLICA::<app>#<deployment>#<replica id>.
REPLICA_PREFIX = "SERVE_REPLICA::"
MB = 1024 * 1024

# ------------------------------------------------------------------ inputs and the app


def voiced_clip(seconds: float = CLIP_SECONDS, f0_hz: float = 150.0) -> np.ndarray:
    """(N,) float32 at 16 kHz: a harmonic tone with vibrato, voiced enough for every pitch method."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = f0_hz * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    audio = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    return (0.3 * audio * envelope / np.max(np.abs(audio))).astype(np.float32)


def wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def app_args(models_dir: Path, *, limits: Optional[dict] = None, synth: Optional[dict] = None,
             ingress: Optional[dict] = None):
    """AppArgs for a CPU app with small replicas (0.25 CPU each); dicts override fields."""
    from serve_app.config import AppArgs, DeploymentSettings, ServiceLimits

    def deployment(**extra: Any) -> DeploymentSettings:
        return DeploymentSettings(**{"num_cpus": 0.25, "graceful_shutdown_timeout_s": 2, **extra})

    return AppArgs(
        models_dir=str(models_dir), device="cpu", torch_threads=1, voices_per_replica=2, demo_fallback=False,
        limits=ServiceLimits(**{"request_timeout_s": 60, "max_in_flight": 16, **(limits or {})}),
        ingress=deployment(**{"max_ongoing_requests": 32, **(ingress or {})}),
        content=deployment(max_ongoing_requests=32), pitch=deployment(), synthesizer=deployment(**(synth or {})),
    )


def deploy(args: Any, name: str, base_url: str, timeout_s: float = 300) -> str:
    """serve.run the app under /<name> and wait for /health; returns its URL."""
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(args), name=name, route_prefix=f"/{name}")
    url = f"{base_url}/{name}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the app {name!r} did not answer /health within {timeout_s:.0f} s")


# ------------------------------------------------------------------ replicas and memory


@dataclass(frozen=True)
class Replica:
    """One live replica actor of a deployment."""

    deployment: str
    replica_id: str
    actor_name: str
    pid: int
    node_id: str


def _actor_identity(actor_name: str) -> tuple[int, str]:
    """(pid, node id) of a named actor in the serve namespace, asked from inside the actor."""
    import ray

    handle = ray.get_actor(actor_name, namespace=SERVE_NAMESPACE)

    def identity(_self: Any) -> tuple[int, str]:
        import os as _os

        import ray as _ray

        return _os.getpid(), _ray.get_runtime_context().get_node_id()

    return ray.get(handle.__ray_call__.remote(identity), timeout=10)


def list_replicas(app: str, deployment: Optional[str] = None) -> list[Replica]:
    """Live replica actors of `app` (optionally one deployment), from Ray's named actors."""
    import ray

    found = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if entry["namespace"] != SERVE_NAMESPACE or not name.startswith(REPLICA_PREFIX):
            continue
        app_name, dep, replica_id = name[len(REPLICA_PREFIX):].split("#", 2)
        if app_name != app or (deployment is not None and dep != deployment):
            continue
        try:
            pid, node_id = _actor_identity(name)
        except Exception:  # died or still starting: not a live replica
            continue
        found.append(Replica(dep, replica_id, name, pid, node_id))
    return sorted(found, key=lambda r: (r.deployment, r.replica_id))


def proxy_pids() -> dict[str, int]:
    """label -> pid of Serve's HTTP proxies (the process in front of every app)."""
    import ray

    pids = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == SERVE_NAMESPACE and "SERVE_PROXY_ACTOR" in entry["name"]:
            try:
                pids["proxy"] = _actor_identity(entry["name"])[0]
            except Exception:
                pass
    return pids


def rss_mb(pid: int) -> float:
    """Resident memory of a local process in MB (nan if it is gone)."""
    try:
        return psutil.Process(pid).memory_info().rss / MB
    except psutil.Error:
        return float("nan")


# ------------------------------------------------------------------ requests


@dataclass
class Outcome:
    """What one HTTP request ended with, from the client's side."""

    started: float
    seconds: float
    status: Optional[int] = None  # None: no HTTP answer
    kind: str = "ok"  # ok | json_error | bad_body | timeout | connection_error
    error: str = ""

    @property
    def finished(self) -> float:
        return self.started + self.seconds


def post_convert(client: httpx.Client, url: str, audio: bytes, voice: str, method: str,
                 timeout_s: float) -> Outcome:
    """POST /convert and classify the answer (a 200 must carry a readable WAV)."""
    started = time.monotonic()
    data = {"voice_name": voice, "f0_method": method, "seed": "1"}
    try:
        r = client.post(f"{url}/convert", data=data, files={"audio": ("in.wav", audio, "audio/wav")},
                        timeout=timeout_s)
    except httpx.TimeoutException as e:
        return Outcome(started, time.monotonic() - started, None, "timeout", type(e).__name__)
    except httpx.TransportError as e:
        return Outcome(started, time.monotonic() - started, None, "connection_error", f"{type(e).__name__}: {e}")
    seconds = time.monotonic() - started
    if r.status_code == 200:
        try:
            sf.read(io.BytesIO(r.content))
            return Outcome(started, seconds, 200)
        except Exception as e:
            return Outcome(started, seconds, 200, "bad_body", f"200 without a readable WAV: {e}")
    try:
        body = r.json()
        return Outcome(started, seconds, r.status_code, "json_error", f"{body['error']}: {str(body['detail'])[:160]}")
    except Exception:
        return Outcome(started, seconds, r.status_code, "bad_body", r.text[:160])


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    """'200', '503 json', 'timeout'... -> count."""
    counts: dict[str, int] = {}
    for o in outcomes:
        key = "200" if o.kind == "ok" else (f"{o.status} {o.kind}" if o.status else o.kind)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def error_examples(outcomes: list[Outcome], limit: int = 4) -> list[str]:
    seen: list[str] = []
    for o in outcomes:
        text = f"{o.status or '-'} {o.kind}: {o.error}"
        if o.kind != "ok" and text not in seen:
            seen.append(text)
    return seen[:limit]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")



# ------------------------------------------------------------------ load and waiting


class LoadLoop:
    """`clients` threads posting conversions in a loop until stopped; every outcome is kept."""

    def __init__(self, url: str, clients: int, timeout_s: float) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.audio = wav_bytes(voiced_clip(1.0))
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> "LoadLoop":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 10)

    def _loop(self, index: int) -> None:
        with httpx.Client() as client:
            n = index
            while not self._stop.is_set():
                o = post_convert(client, self.url, self.audio, VOICES[n % len(VOICES)], "pm", self.timeout_s)
                n += 1
                with self._lock:
                    self.outcomes.append(o)
                if o.kind != "ok":
                    time.sleep(0.2)  # a failing client retries, it does not spin

    def count(self, predicate: Callable[[Outcome], bool]) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if predicate(o))


def wait_for(condition: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return False


def deployment_state(app: str, deployment: str) -> str:
    """Serve's status of one deployment with its replica states, e.g. 'HEALTHY {RUNNING: 1}'."""
    from ray import serve

    try:
        dep = serve.status().applications[app].deployments[deployment]
        status = getattr(dep.status, "value", dep.status)
        return f"{status} {dict(dep.replica_states)}"
    except Exception as e:
        return f"unknown ({type(e).__name__})"
