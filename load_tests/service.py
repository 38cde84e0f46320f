"""The service under test: random-weight voices, a local Ray cluster with the app, and a
background sampler of replica counts (`serve.status()`).

`RAY_AUTH_MODE` must be set before `ray` is imported; the runner does that.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The three test voices: (name, version, sample rate, pitch guidance, speakers, has index).
TEST_VOICES = (
    ("alice", "v2", 40000, True, 1, True),
    ("bob", "v2", 40000, True, 2, False),
    ("carol", "v2", 32000, False, 1, False),
)
CONTENT_DIM_V2 = 768
APP_NAME = "rvc"
HEALTH_TIMEOUT_S = 300.0


def write_test_models(root: Path) -> Path:
    """Three random-weight voices in the real RVC format plus the small demo content encoder."""
    from rvc_pipeline.demo import write_demo_encoder
    from tests.factories.voices import write_index, write_webui_voice

    root.mkdir(parents=True, exist_ok=True)
    for seed, (name, version, rate, f0, speakers, has_index) in enumerate(TEST_VOICES, start=1):
        write_webui_voice(root / f"{name}.pth", version, rate, f0=f0, n_speakers=speakers, seed=seed)
        if has_index:
            write_index(root / f"{name}.index", dim=CONTENT_DIM_V2, n=400, seed=seed)
    write_demo_encoder(root / "assets" / "hubert_base")
    return root


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_service(app_args: Any, *, num_cpus: float) -> str:
    """Start a private Ray cluster and the app on a free port; returns the base URL."""
    import ray
    from ray import serve

    from serve_app.app import build_app

    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(app_args), name=APP_NAME, route_prefix="/")
    return f"http://127.0.0.1:{port}"


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
        time.sleep(1.0)
    raise RuntimeError(f"{url}/health was not ok within {timeout_s:.0f} s (last: {last}); check the Serve logs")


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
