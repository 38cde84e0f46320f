# rvc-serve: the Ray Serve RVC service in one image (see docs/docker.md).
#
#   CPU (default, small):  docker build -t rvc-serve:cpu .
#   CUDA 12.8:             docker build -t rvc-serve:cu128 --build-arg TORCH_VARIANT=cu128 .
#
#   docker run --rm -p 8003:8003 --shm-size=2g -v "$PWD/models:/models" rvc-serve:cpu
#   docker run --rm -p 8003:8003 --shm-size=8g --gpus all -v "$PWD/models:/models" rvc-serve:cu128
#
# Ray keeps its object store in /dev/shm: give the container --shm-size (Ray warns when
# /dev/shm is under ~30% of the container's memory and falls back to slower /tmp).

ARG PYTHON_IMAGE=python:3.10-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# cpu -> https://download.pytorch.org/whl/cpu (no CUDA libraries, small image)
# cu128 (or cu126, cu130...) -> https://download.pytorch.org/whl/<variant> (CUDA libraries as
# nvidia-* wheels; no CUDA base image needed, only an NVIDIA driver on the host).
# TORCH_INDEX overrides the whole index URL (e.g. a mirror).
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG TORCH_VERSION=2.9.1

# pyworld 0.3.5 ships only a source distribution: it needs a C++ compiler here (never in
# the final image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv "$VIRTUAL_ENV"

# torch first, from the PyTorch index, so the project's `torch==2.9.1` pin is already
# satisfied (2.9.1+cpu matches ==2.9.1) and pip does not fetch the CUDA build from PyPI.
RUN pip install --index-url "${TORCH_INDEX}" \
        "torch==${TORCH_VERSION}" "torchaudio==${TORCH_VERSION}"

# Dependencies change less often than the code: install them from pyproject.toml alone
# (an empty package skeleton), then the real code on top without touching dependencies.
WORKDIR /src
COPY pyproject.toml README.md ./
RUN mkdir -p rvc_pipeline serve_app \
 && touch rvc_pipeline/__init__.py serve_app/__init__.py \
 && pip install ".[serve]" \
 && pip uninstall -y rvc-serve
COPY rvc_pipeline ./rvc_pipeline
COPY serve_app ./serve_app
RUN pip install --no-deps . \
 && python -c "import torch, ray, serve_app.app; print('torch', torch.__version__, 'ray', ray.__version__)"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

# espeak-ng: /tts speech; libsndfile1: soundfile's decoder (the wheel bundles one, the
# system copy covers builds without it); wget: KubeRay's default pod probes call it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng libsndfile1 wget \
 && rm -rf /var/lib/apt/lists/*

ARG APP_UID=1000
RUN useradd --create-home --uid "${APP_UID}" --shell /bin/bash rvc \
 && mkdir -p /models /var/cache/rvc-serve /app \
 && chown rvc:rvc /models /var/cache/rvc-serve /app \
 && echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/rvc-venv.sh

COPY --from=builder /opt/venv /opt/venv
COPY --chown=rvc:rvc serve_config.yaml /app/serve_config.yaml

# One torch/BLAS thread per process: Ray runs several replicas per container and each
# replica sets its own torch threads from serve_config.yaml (`torch_threads`).
# /etc/profile.d keeps the venv on PATH for login shells (KubeRay runs `bash -lc`).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    PYTHONUNBUFFERED=1 \
    RAY_AUTH_MODE=token \
    RVC_MODELS_DIR=/models \
    RVC_CACHE_DIR=/var/cache/rvc-serve

USER rvc
WORKDIR /app
VOLUME ["/models"]
EXPOSE 8003

# /health answers 200 with status "ok" once every deployment is up; Ray plus the models
# take a while to start, hence the long start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import json, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8003/health', timeout=8); sys.exit(0 if json.load(r).get('status') == 'ok' else 1)"]

CMD ["serve", "run", "serve_config.yaml"]
