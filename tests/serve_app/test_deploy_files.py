"""The deployment files (serve_config.yaml, the KubeRay RayService, the Dockerfile) agree
with the app's arguments and with each other. Light: parses files, starts nothing."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from serve_app.config import AppArgs

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "serve_config.yaml"
RAYSERVICE = REPO / "deploy" / "kuberay" / "rayservice.yaml"
DOCKERFILE = REPO / "Dockerfile"


def serve_config() -> dict:
    """The default Serve config file, parsed."""
    return yaml.safe_load(SERVE_CONFIG.read_text())


def rayservice() -> dict:
    """The RayService manifest, parsed."""
    return yaml.safe_load(RAYSERVICE.read_text())


def rayservice_serve_config() -> dict:
    """The Serve config embedded (as a YAML string) in the RayService."""
    return yaml.safe_load(rayservice()["spec"]["serveConfigV2"])


def only_app(config: dict) -> dict:
    """The single application of a Serve config."""
    (app,) = config["applications"]
    return app


@pytest.mark.parametrize("load", [serve_config, rayservice_serve_config], ids=["serve_config", "rayservice"])
def test_serve_configs_pass_args_the_app_accepts(load):
    app = only_app(load())
    assert app["import_path"] == "serve_app.app:build_app"
    AppArgs.model_validate(app["args"] or {})  # raises on an unknown value or a typo'd field type


@pytest.mark.parametrize("load", [serve_config, rayservice_serve_config], ids=["serve_config", "rayservice"])
def test_serve_configs_have_no_unknown_arguments(load):
    """Pydantic ignores unknown keys: catch a misspelt argument that would silently do nothing."""
    args = only_app(load())["args"] or {}
    assert set(args) <= set(AppArgs.model_fields), set(args) - set(AppArgs.model_fields)
    for name in ("ingress", "content", "pitch", "synthesizer", "limits"):
        field = AppArgs.model_fields[name].annotation
        assert set(args.get(name) or {}) <= set(field.model_fields), (name, args.get(name))


def test_container_and_cluster_listen_where_the_image_exposes():
    exposed = re.search(r"^EXPOSE\s+(\d+)", DOCKERFILE.read_text(), re.M)
    assert exposed, "Dockerfile has no EXPOSE"
    port = int(exposed.group(1))
    assert serve_config()["http_options"] == rayservice_serve_config()["http_options"]
    assert serve_config()["http_options"]["host"] == "0.0.0.0"
    assert serve_config()["http_options"]["port"] == port
    head = rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"containerPort": port, "name": "serve"} in head["ports"]


def test_rayservice_ray_version_matches_the_pinned_ray():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    pinned = next(d.split("==")[1] for d in deps if d.startswith("ray[serve]=="))
    assert rayservice()["spec"]["rayClusterConfig"]["rayVersion"] == pinned


def test_every_rayservice_pod_mounts_the_models_folder_at_the_same_path():
    cluster = rayservice()["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    models_dir = only_app(rayservice_serve_config())["args"]["models_dir"]
    for group in groups:
        mounts = group["template"]["spec"]["containers"][0]["volumeMounts"]
        assert any(m["mountPath"] == models_dir for m in mounts), group.get("groupName", "head")


def test_dockerfile_runs_a_config_it_copies_into_the_image():
    text = DOCKERFILE.read_text()
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M)
    assert cmd, "Dockerfile has no exec-form CMD"
    argv = json.loads(cmd.group(1))
    assert argv[:2] == ["serve", "run"]
    config = argv[2]
    assert (REPO / config).is_file(), f"CMD runs {config}, which is not in the repository"
    assert re.search(rf"^COPY\b.*\b{re.escape(config)}\b", text, re.M), f"{config} is never copied into the image"
    assert "ENV" in text and "RVC_MODELS_DIR=/models" in text


def test_dockerignore_keeps_tests_and_benchmarks_out_of_the_image():
    lines = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "**", "the context should start from nothing and re-include what the image needs"
    assert not any(l.lstrip("!").startswith(("tests", "bench")) for l in lines[1:] if l.startswith("!"))


def _restated_defaults(given: dict, defaults: object, prefix: str = "") -> list[str]:
    """Arguments whose value is the default: copies that would drift when a default changes."""
    from pydantic import BaseModel

    found = []
    for name, value in given.items():
        default = getattr(defaults, name)
        if isinstance(default, BaseModel) and isinstance(value, dict):
            found += _restated_defaults(value, default, f"{prefix}{name}.")
        elif value == default:
            found.append(f"{prefix}{name}")
    return found


@pytest.mark.parametrize("load", [serve_config, rayservice_serve_config], ids=["serve_config", "rayservice"])
def test_serve_configs_state_only_what_they_change(load):
    """Defaults live in serve_app/config.py (and docs/configuration.md, written from it), nowhere else."""
    assert _restated_defaults(only_app(load())["args"] or {}, AppArgs()) == []


def test_reference_docs_are_written_from_the_schema():
    """README's options table and docs/configuration.md equal what the schema writes now."""
    import subprocess
    import sys

    check = subprocess.run([sys.executable, str(REPO / "scripts" / "write_reference_docs.py"), "--check"],
                           capture_output=True, text=True, cwd=REPO)
    assert check.returncode == 0, check.stdout + check.stderr


def test_nothing_in_the_repository_turns_ray_auth_off():
    """Token auth stays on in every run path: no script, config or code sets RAY_AUTH_MODE=disabled
    (docs say what turning it off would expose without giving the command)."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    offenders = []
    for name in tracked:
        path = REPO / name
        if path.suffix in {".png", ".pth", ".index"} or not path.is_file() or name.endswith("test_deploy_files.py"):
            continue
        text = path.read_text(errors="replace")
        if re.search(r"RAY_AUTH_MODE\W{0,4}disabled|RAY_AUTH_MODE\", \"disabled", text):
            offenders.append(name)
    assert offenders == []


def test_rayservice_runs_token_auth_from_a_secret():
    cluster = rayservice()["spec"]["rayClusterConfig"]
    assert cluster["authOptions"]["mode"] == "token" and cluster["authOptions"]["secretName"]
    assert "RAY_AUTH_MODE=token" in DOCKERFILE.read_text()
