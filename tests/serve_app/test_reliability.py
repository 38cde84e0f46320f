"""Reliability on the shared local cluster, on an app of its own (deleted afterwards):
a burst beyond the in-flight limit gets quick 503 JSON answers, and a killed synthesis
replica is replaced while clients keep converting. The longer runs (memory over 100
conversions, two nodes) are `python -m load_tests.reliability`; both use serve_app.testing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")

from rvc_pipeline.testing.audio import voiced_clip, wav_bytes  # noqa: E402
from serve_app.testing import (  # noqa: E402
    SERVE_NAMESPACE,
    SYNTH_DEPLOYMENT,
    LoadLoop,
    app_args,
    deploy,
    list_replicas,
    post_convert,
    wait_for,
)

APP = "reliability"
MAX_IN_FLIGHT = 2
REQUEST_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def app_url(ray_cluster, models_dir) -> str:
    """Its own app, so killing a replica here never touches the session's `service`."""
    from ray import serve

    args = app_args(models_dir, limits={"max_in_flight": MAX_IN_FLIGHT, "request_timeout_s": REQUEST_TIMEOUT_S})
    url = deploy(args, APP, ray_cluster)
    yield url
    serve.delete(APP)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return wav_bytes(voiced_clip(1.0))


def test_burst_beyond_the_limit_gets_quick_503_then_serves(app_url, clip):
    with httpx.Client() as client:
        assert post_convert(client, app_url, clip, "alice", "pm", 120).kind == "ok"  # voice loaded
    burst = 8 * MAX_IN_FLIGHT
    with ThreadPoolExecutor(burst) as pool, httpx.Client(limits=httpx.Limits(max_connections=burst)) as client:
        outcomes = list(pool.map(lambda _: post_convert(client, app_url, clip, "alice", "pm", 120), range(burst)))
    served = [o for o in outcomes if o.kind == "ok"]
    rejected = [o for o in outcomes if o.status == 503]
    assert len(served) + len(rejected) == burst, [o.error for o in outcomes]
    assert served and len(rejected) >= burst // 2
    assert all(o.kind == "json_error" and o.error.startswith("overloaded") for o in rejected)
    assert max(o.seconds for o in rejected) < min(o.seconds for o in served) + 1.0  # refused, not queued
    with httpx.Client() as client:
        assert post_convert(client, app_url, clip, "bob", "pm", 120).kind == "ok"


def test_killed_synthesis_replica_is_replaced_under_load(app_url, clip):
    import ray

    (victim,) = list_replicas(APP, SYNTH_DEPLOYMENT)
    with LoadLoop(app_url, clients=MAX_IN_FLIGHT, timeout_s=REQUEST_TIMEOUT_S + 10) as load:
        assert wait_for(lambda: load.count(lambda o: o.kind == "ok") >= 2, 60)
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim.actor_name, namespace=SERVE_NAMESPACE), no_restart=True)
        recovered = wait_for(lambda: load.count(lambda o: o.kind == "ok" and o.started > killed_at + 0.5) >= 2, 90)
    assert recovered, f"no conversion succeeded after the kill: {[o.error for o in load.outcomes[-5:]]}"
    (successor,) = list_replicas(APP, SYNTH_DEPLOYMENT)
    assert successor.replica_id != victim.replica_id
    failures = [o for o in load.outcomes if o.kind != "ok"]
    # Every failure is an HTTP answer with a JSON 503 (no hang, no reset, no bare 500).
    assert all(o.status == 503 and o.kind == "json_error" for o in failures), [(o.status, o.error) for o in failures]
    assert max(o.seconds for o in load.outcomes) < REQUEST_TIMEOUT_S


def test_custom_resources_reach_the_replica_actor_options():
    """`resources` pins a deployment to nodes that carry them (e.g. a GPU node's label)."""
    from serve_app.config import DeploymentSettings

    pinned = DeploymentSettings(num_cpus=0, resources={"synth_node": 1}).deployment_options(gpu_available=False)
    assert pinned["ray_actor_options"] == {"num_cpus": 0, "resources": {"synth_node": 1}}
    plain = DeploymentSettings().deployment_options(gpu_available=False)
    assert "resources" not in plain["ray_actor_options"]
