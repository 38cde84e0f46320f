"""Typed arguments of the app builder (`serve_config.yaml` -> `build_app`).

Defaults suit a 2-core laptop: one replica per deployment at 0.5 CPU each, so the whole
graph fits on 2 cores; GPU fractions apply only where the cluster has a GPU, so the same
file starts on a laptop and on a GPU node.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from .heap import Allocator, allocator_env


class Autoscaling(BaseModel):
    """Ray Serve autoscaling for one deployment (replaces `num_replicas`)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    # Optional Serve knobs; unset (None) keeps Serve's own defaults (30 s up, 600 s down, 30 s window).
    upscale_delay_s: Optional[float] = Field(None, ge=0, description="load must persist this long before scaling up")
    downscale_delay_s: Optional[float] = Field(None, ge=0, description="idleness must persist this long before scaling down")
    look_back_period_s: Optional[float] = Field(None, gt=0, description="window the ongoing-request average is taken over")


class DeploymentSettings(BaseModel):
    """Replicas and resources of one deployment."""

    num_replicas: int = Field(1, ge=1, description="fixed replica count (ignored when autoscaling is set)")
    autoscaling: Optional[Autoscaling] = Field(None, description="min_replicas, max_replicas, target_ongoing_requests, ...: replaces num_replicas")
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPU fraction per replica; used only where a GPU exists")
    resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources per replica, e.g. {synth_node: 1} to pin it to such nodes"
    )
    max_ongoing_requests: int = Field(16, ge=1, description="concurrent requests per replica")
    max_queued_requests: int = Field(-1, description="queued requests per caller before 503 (-1: unbounded)")
    graceful_shutdown_timeout_s: float = Field(20.0, ge=0, description="seconds a stopping replica may finish its requests")
    allocator: Allocator = Field(
        "system", description="C heap allocator of the replicas: system (glibc's malloc) or jemalloc (the copy Ray "
        "ships, preloaded): flat memory over long runs, but slower heavy torch work (docs/performance.md, bench_allocator)")

    def deployment_options(self, *, gpu_available: bool) -> dict:
        """Keyword arguments for `Deployment.options(...)`; the allocator's environment variables go
        into the replicas' runtime environment (merged by Ray with the application's own env_vars)."""
        actor: dict = {"num_cpus": self.num_cpus}
        env_vars = allocator_env(self.allocator)
        if env_vars:
            actor["runtime_env"] = {"env_vars": env_vars}
        if gpu_available and self.num_gpus > 0:
            actor["num_gpus"] = self.num_gpus
        if self.resources:
            actor["resources"] = dict(self.resources)
        options: dict = {
            "ray_actor_options": actor,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.model_dump(exclude_none=True)
            options["num_replicas"] = "auto"
        else:
            options["num_replicas"] = self.num_replicas
        return options


class ServiceLimits(BaseModel):
    """Request limits, each mapped to an HTTP status when exceeded."""

    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1, description="multipart body size; 413 beyond")
    max_duration_s: float = Field(300.0, gt=0, description="decoded audio length; 413 beyond")
    request_timeout_s: float = Field(300.0, gt=0, description="one conversion, end to end; 504 beyond")
    max_in_flight: int = Field(8, ge=1, description="conversions in progress per ingress replica; 503 beyond")
    max_tts_chars: int = Field(1000, ge=1, description="text length of /tts; 413 beyond")
    max_stream_sessions: int = Field(8, ge=1, description="/stream sessions per ingress replica; close code 1013 beyond")
    stream_idle_timeout_s: float = Field(30.0, gt=0, description="a /stream session that sends nothing this long is closed")
    max_stream_message_bytes: int = Field(1 << 20, ge=1024, description="largest /stream message (audio block or JSON); "
                                          "close code 1009 beyond")


#: Each deployment's defaults; a config that sets some of a deployment's keys keeps the rest.
#: The ingress and ContentFeatures run on jemalloc: on glibc their private memory crept up
#: (docs/reliability.md), and their work costs little more on jemalloc; a whole conversion (synthesis
#: and pitch) ran much slower (docs/performance.md, bench_allocator), so those stay on glibc.
DEPLOYMENT_DEFAULTS = {
    "ingress": DeploymentSettings(num_cpus=0.5, max_ongoing_requests=32, allocator="jemalloc"),
    "content": DeploymentSettings(num_cpus=0.5, num_gpus=0.2, max_ongoing_requests=32, allocator="jemalloc"),
    "pitch": DeploymentSettings(num_cpus=0.5, num_gpus=0.1, max_ongoing_requests=16),
    "synthesizer": DeploymentSettings(num_cpus=0.5, num_gpus=0.3, max_ongoing_requests=16),
}


class AppArgs(BaseModel):
    """Everything `serve_config.yaml` can set (`args:` of the application)."""

    models_dir: Optional[str] = Field(None, description="voices folder (default $RVC_MODELS_DIR or ./models)")
    content_encoder: Optional[str] = Field(
        None, description="the contentvec encoder (hubert_base.pt or transformers folder) for voices that name no other; "
        "default assets/hubert_base.pt in models_dir")
    encoder_paths: dict[str, str] = Field(
        default_factory=dict, description="content encoder name -> its file or folder elsewhere (default "
        "assets/NAME.pt or assets/NAME/ in models_dir; names: contentvec, spin, spin-v2, chinese-hubert-base, "
        "japanese-hubert-base, korean-hubert-base, or your own)")
    voice_encoders: dict[str, str] = Field(
        default_factory=dict, description="voice name -> encoder name, over the embedder_model its file names "
        "(required for voices trained with a 'custom' embedder)")
    encoders_per_replica: int = Field(2, ge=1, description="content encoders cached per ContentFeatures replica (LRU)")
    rmvpe: Optional[str] = Field(None, description="rmvpe.pt (enables f0_method=rmvpe)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda where the cluster has a GPU, else cpu")
    precision: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="fp32 is exact")
    torch_threads: int = Field(1, ge=1, description="torch and FAISS threads per replica (results depend on it)")
    voices_per_replica: int = Field(2, ge=1, description="voices cached per VoiceSynthesizer replica (LRU)")
    demo_fallback: bool = Field(True, description="provide an untrained demo voice/encoder when none exist")
    demo_dir: Optional[str] = Field(None, description="where demo assets go (default $RVC_CACHE_DIR/demo)")
    batching: Literal["auto", "on", "off"] = Field(
        "auto", description="batch chunks across concurrent requests in ContentFeatures and VoiceSynthesizer; "
        "auto: on a GPU only (CPU results stay exact: batched ones match to float rounding)")
    feature_batch_size: int = Field(8, ge=1, description="chunks batched per HuBERT call (when batching)")
    feature_batch_wait_s: float = Field(0.005, ge=0, description="longest wait to fill a HuBERT batch (when batching)")
    synthesis_batch_size: int = Field(4, ge=1, description="chunks of one voice synthesised per call (when batching)")
    synthesis_batch_wait_s: float = Field(0.01, ge=0, description="longest wait to fill a synthesis batch (when batching)")
    api_keys_file: Optional[str] = Field(
        None, description="YAML/JSON file of API keys (salted hashes; `python -m serve_app.api_keys new`); "
        "re-read when it changes. None with api_keys_env None: the HTTP API is open (docs/security.md)")
    api_keys_env: Optional[str] = Field(None, description="name of an environment variable holding the key file's text instead")
    cors_origins: list[str] = Field(
        default_factory=list, description="browser origins allowed to call the API (CORS); empty: same-origin only")
    limits: ServiceLimits = ServiceLimits()
    ingress: DeploymentSettings = DEPLOYMENT_DEFAULTS["ingress"]
    content: DeploymentSettings = DEPLOYMENT_DEFAULTS["content"]
    pitch: DeploymentSettings = DEPLOYMENT_DEFAULTS["pitch"]
    synthesizer: DeploymentSettings = DEPLOYMENT_DEFAULTS["synthesizer"]

    @field_validator("ingress", "content", "pitch", "synthesizer", mode="before")
    @classmethod
    def _over_deployment_defaults(cls, value: object, info: ValidationInfo) -> object:
        """A partial mapping (`content: {graceful_shutdown_timeout_s: 30}`) changes only the keys it
        names: the deployment's own defaults (GPU fraction, concurrency, allocator) stay."""
        if isinstance(value, dict):
            return {**DEPLOYMENT_DEFAULTS[info.field_name].model_dump(), **value}
        return value


def _type_text(annotation: object) -> str:
    """A field's type in words: "float", "str or null", "one of auto, cpu, cuda"."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        named = [_type_text(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def settings_markdown() -> str:
    """Every `serve_config.yaml` argument with its type, default and meaning, written from these models."""
    lines = ["| argument | type | default | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str, defaults: BaseModel) -> None:
        for name, field in model.model_fields.items():
            value = getattr(defaults, name)
            key = f"{prefix}{name}"
            if isinstance(value, BaseModel):
                walk(type(value), f"{key}.", value)
                continue
            kind = _type_text(field.annotation)
            limits = " ".join(f"{m.__class__.__name__.lower()} {v}" for m in field.metadata
                              for v in [getattr(m, m.__class__.__name__.lower(), None)] if v is not None)
            meaning = (field.description or "") + (f" ({limits})" if limits else "")
            lines.append(f"| `{key}` | {kind} | `{value!r}` | {meaning} |")

    walk(AppArgs, "", AppArgs())
    return "\n".join(lines) + "\n"
