"""Running the service locally for the tests, the load test and the reliability scenarios.

- models: three random-weight voices in the real RVC format plus the small demo encoder
  (`write_test_models`);
- a private local Ray cluster with Serve on a free port (`start_local_cluster`,
  `start_local_service`, `stop_local_service`) and apps on it (`app_args`, `deploy`,
  `wait_healthy`);
- live replicas with their process and node (`list_replicas`, `proxy_pids`, `rss_mb`, `resident_parts_mb`,
  `deployment_state`) and a background sampler of replica counts (`ReplicaSampler`);
- HTTP clients that classify every answer (`Outcome`, `post_convert`, `LoadLoop`) and
  `wait_for`.

Replicas are found through Ray's named actors (Serve names them
SERVE_REPLICA::<app>#<deployment>#<replica id> in the "serve" namespace); each is asked for
its pid and node id with Ray's built-in `__ray_call__`.

Needs the `serve` extra, plus httpx (`test`) for the HTTP helpers and psutil for `rss_mb`;
both are imported only when used. Local clusters started here use Ray's token auth, as the
README's command does: importing this module sets `RAY_AUTH_MODE=token` unless the caller
chose a mode (the token is then read from, or written to, ~/.ray/auth_token).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

os.environ.setdefault("RAY_AUTH_MODE", "token")  # must be set before Ray is imported

from rvc_pipeline.constants import CONTENT_DIMS  # noqa: E402
from rvc_pipeline.testing.audio import voiced_clip, wav_bytes  # noqa: E402

if TYPE_CHECKING:
    import httpx

#: The three test voices: (name, version, sample rate, pitch guidance, speakers, has index).
TEST_VOICES = (
    ("alice", "v2", 40000, True, 1, True),
    ("bob", "v2", 40000, True, 2, False),
    ("carol", "v2", 32000, False, 1, False),
)
#: The pitch-guided test voices, which the load loops convert into.
VOICES = tuple(name for name, _, _, f0, _, _ in TEST_VOICES if f0)
APP_NAME = "rvc"
HEALTH_TIMEOUT_S = 300.0
SYNTH_DEPLOYMENT = "VoiceSynthesizer"
INGRESS_DEPLOYMENT = "Ingress"
SERVE_NAMESPACE = "serve"
#: Serve names replica actors SERVE_REPLICA::<app>#<deployment>#<replica id>.
REPLICA_PREFIX = "SERVE_REPLICA::"
MB = 1024 * 1024

# ------------------------------------------------------------------ models and the app


def write_test_models(root: Path) -> Path:
    """Three random-weight voices in the real RVC format plus the small demo content encoder
    (assets/hubert_base); returns `root`."""
    from rvc_pipeline.demo import write_demo_encoder
    from rvc_pipeline.testing.voices import write_index, write_webui_voice

    root.mkdir(parents=True, exist_ok=True)
    for seed, (name, version, rate, f0, speakers, has_index) in enumerate(TEST_VOICES, start=1):
        write_webui_voice(root / f"{name}.pth", version, rate, f0=f0, n_speakers=speakers, seed=seed)
        if has_index:
            write_index(root / f"{name}.index", dim=CONTENT_DIMS[version], n=400, seed=seed)
    write_demo_encoder(root / "assets" / "hubert_base")
    return root


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_cluster(*, num_cpus: float) -> str:
    """Start a private Ray cluster (no dashboard) and Serve's proxy on a free port; returns its base URL."""
    import ray
    from ray import serve

    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


def start_local_service(app_args: Any, *, num_cpus: float) -> str:
    """Start a private Ray cluster and the app at its root; returns the base URL."""
    from ray import serve

    from serve_app.app import build_app

    url = start_local_cluster(num_cpus=num_cpus)
    serve.run(build_app(app_args), name=APP_NAME, route_prefix="/")
    return url


@contextlib.contextmanager
def local_service(args: Any = None, *, num_cpus: float) -> Iterator[str]:
    """A private cluster running the app (default: `app_args` on the test voices in a temporary
    folder), healthy; yields its base URL and shuts everything down afterwards."""
    with tempfile.TemporaryDirectory(prefix="rvc_local_service_") as tmp:
        if args is None:
            args = app_args(write_test_models(Path(tmp) / "models"))
        try:
            url = start_local_service(args, num_cpus=num_cpus)
            wait_healthy(url)
            yield url
        finally:
            stop_local_service()


def stop_local_service() -> None:
    """Shut down Serve and the private cluster (safe to call when nothing started)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def wait_healthy(url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> dict:
    """Poll GET /health until it answers 200 with status ok; returns its body."""
    import httpx

    deadline, last = time.time() + timeout_s, "no answer"
    while time.time() < deadline:
        try:
            response = httpx.get(f"{url}/health", timeout=15)
            if response.status_code == 200 and response.json().get("status") == "ok":
                return response.json()
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.5)
    raise RuntimeError(f"{url}/health was not ok within {timeout_s:.0f} s (last: {last}); check the Serve logs")


def app_args(models_dir: Path, *, limits: Optional[dict] = None, synth: Optional[dict] = None,
             ingress: Optional[dict] = None, **fields: Any):
    """AppArgs for a CPU app with small replicas (0.25 CPU each, 1 torch thread); dicts override
    fields of the limits and deployments (over each deployment's own defaults, such as the
    ingress's allocator), `fields` those of AppArgs itself."""
    from serve_app.config import AppArgs, ServiceLimits

    def deployment(**extra: Any) -> dict[str, Any]:
        return {"num_cpus": 0.25, "graceful_shutdown_timeout_s": 2, **extra}

    return AppArgs(**{
        "models_dir": str(models_dir), "device": "cpu", "torch_threads": 1, "voices_per_replica": 2,
        "demo_fallback": False,
        "limits": ServiceLimits(**{"request_timeout_s": 60, "max_in_flight": 16, **(limits or {})}),
        "ingress": deployment(**{"max_ongoing_requests": 32, **(ingress or {})}),
        "content": deployment(max_ongoing_requests=32), "pitch": deployment(), "synthesizer": deployment(**(synth or {})),
        **fields,
    })


def deploy(args: Any, name: str, base_url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> str:
    """serve.run the app under /<name> and wait for /health; returns its URL."""
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(args), name=name, route_prefix=f"/{name}")
    url = f"{base_url}/{name}"
    wait_healthy(url, timeout_s)
    return url


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


def import_psutil() -> Any:
    """The psutil module: installed, or the copy Ray ships (on sys.path once ray is imported)."""
    try:
        import psutil
    except ImportError:
        import ray  # noqa: F401
        import psutil
    return psutil


def rss_mb(pid: int) -> float:
    """Resident memory of a local process in MB (nan if it is gone)."""
    psutil = import_psutil()
    try:
        return psutil.Process(pid).memory_info().rss / MB
    except psutil.Error:
        return float("nan")


#: The parts of resident memory Linux reports in /proc/<pid>/status, by what backs the pages.
RESIDENT_KINDS = {
    "RssAnon": "private",  # the process's own heap and stacks: where a leak grows
    "RssFile": "files",  # mapped files (libraries, model files), paged in as code paths are first used
    "RssShmem": "shared",  # shared memory: Ray's object store (/dev/shm) and IPC buffers, counted in every mapper
}


def resident_parts_mb(pid: int) -> dict[str, float]:
    """Resident memory of a local process split as `RESIDENT_KINDS` plus "total" (VmRSS), in MB,
    from one read of /proc/<pid>/status.

    Linux only (elsewhere the parts are nan and "total" is psutil's RSS; all nan if the process
    is gone). The split matters for leak checks: pages of Ray's object store become resident in
    each process that reads or writes an object there, so a process's RSS rises as the store's
    allocator moves through it, without the process owning that memory.
    """
    fields = {**RESIDENT_KINDS, "VmRSS": "total"}
    parts = {kind: float("nan") for kind in fields.values()}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in fields:
                    parts[fields[key]] = int(value.split()[0]) * 1024 / MB
    except (OSError, ValueError):
        parts["total"] = rss_mb(pid)
    return parts


def deployment_state(app: str, deployment: str) -> str:
    """Serve's status of one deployment with its replica states, e.g. 'HEALTHY {RUNNING: 1}'."""
    from ray import serve

    try:
        dep = serve.status().applications[app].deployments[deployment]
        status = getattr(dep.status, "value", dep.status)
        return f"{status} {dict(dep.replica_states)}"
    except Exception as e:
        return f"unknown ({type(e).__name__})"


@dataclass
class ReplicaSampler:
    """Samples running replicas per deployment every `interval_s` in a daemon thread.

    Needs a Ray connection (the runner's own cluster, or `ray.init(address=...)`).
    Each sample is (epoch seconds, {deployment: running replicas}); `starting` holds the
    replicas still starting at that moment.
    """

    app_name: str = APP_NAME
    interval_s: float = 2.0
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    starting: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample_once(self) -> None:
        """Record one sample (errors are kept, not raised)."""
        from ray import serve

        try:
            app = serve.status().applications.get(self.app_name)
        except Exception as e:  # a transient controller error must not end the run
            self.errors.append(repr(e))
            return
        if app is None:
            self.errors.append(f"no application named {self.app_name!r}")
            return
        now = time.time()
        running, starting = {}, {}
        for name, deployment in app.deployments.items():
            states = {str(getattr(k, "value", k)): v for k, v in deployment.replica_states.items()}
            running[name] = states.get("RUNNING", 0)
            starting[name] = states.get("STARTING", 0)
        self.samples.append((now, running))
        self.starting.append((now, starting))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        """Begin sampling in the background."""
        self._thread = threading.Thread(target=self._loop, name="replica-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


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


def post_convert(client: "httpx.Client", url: str, audio: bytes, voice: str, method: str,
                 timeout_s: float) -> Outcome:
    """POST /convert and classify the answer (a 200 must carry a readable WAV)."""
    import httpx
    import soundfile as sf

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


class LoadLoop:
    """`clients` threads posting 1 s conversions (pm) in a loop until stopped; every outcome is kept."""

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
        import httpx

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
    """Poll `condition` until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return False
