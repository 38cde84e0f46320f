"""Time a 10 s conversion through the HTTP service against rvc_pipeline.convert() in-process.

    RAY_AUTH_MODE=disabled python bench/bench_serve.py [--models-dir DIR] [--repeat 3]

Starts a local Ray cluster and the app (CPU, 1 torch thread per replica; the in-process
run uses 1 thread as well), converts the same 10 s clip both ways and prints the median
times and the serving overhead (target: < 10 % + 50 ms).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _speech_10s() -> np.ndarray:
    import subprocess

    import soundfile as sf

    from rvc_pipeline.audio import resample

    text = "The quick brown fox jumps over the lazy dog. " * 4
    wav = subprocess.run(["espeak-ng", "--stdout", "-s", "150", text], check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    audio = resample(audio, rate, 16000)
    return np.resize(audio, 16000 * 10).astype(np.float32)


def _models(root: Path) -> tuple[Path, Path]:
    """A random v2 40k voice (real size) and the small demo HuBERT, unless a folder is given."""
    from rvc_pipeline.demo import write_demo_encoder, write_demo_voice

    write_demo_voice(root / "bench.pth")
    return root, write_demo_encoder(root / "assets" / "hubert_base")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", type=Path, default=None, help="use this folder's voice --voice instead")
    parser.add_argument("--voice", default="bench")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--f0-method", default="harvest")
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from rvc_pipeline import ConversionOptions, ModelsFolder, PitchEstimator, convert, load_content_encoder, load_voice

    tmp = Path(tempfile.mkdtemp(prefix="rvc-bench-"))
    root = args.models_dir or _models(tmp)[0]
    folder = ModelsFolder(root)
    entry, encoder_path = folder.find_voice(args.voice), folder.content_encoder_path()
    audio = _speech_10s()
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    upload = buf.getvalue()

    from rvc_pipeline.audio import decode_audio

    torch.set_num_threads(1)
    voice = load_voice(entry.pth_path, entry.index_path, name=entry.name, device="cpu")
    encoder = load_content_encoder(encoder_path, device="cpu")
    estimator = PitchEstimator(device="cpu")
    options = ConversionOptions(f0_method=args.f0_method)
    local = []
    for _ in range(args.repeat + 1):
        started = time.perf_counter()
        convert(decode_audio(upload), voice, encoder, estimator, options)
        local.append(time.perf_counter() - started)
    local = local[1:]  # first run warms caches

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import httpx
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import AppArgs

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8013})
    serve.run(build_app(AppArgs(models_dir=str(root), device="cpu", torch_threads=1, demo_fallback=False)),
              name="bench", route_prefix="/")
    remote, stages = [], ""
    with httpx.Client(timeout=600) as client:
        for _ in range(args.repeat + 1):
            started = time.perf_counter()
            r = client.post("http://127.0.0.1:8013/convert", data={"voice_name": args.voice, "f0_method": args.f0_method},
                            files={"audio": ("a.wav", upload, "audio/wav")})
            remote.append(time.perf_counter() - started)
            r.raise_for_status()
            stages = r.headers["x-stage-times"]
    remote = remote[1:]  # first request loads the voice
    serve.shutdown()
    ray.shutdown()

    t_local, t_http = statistics.median(local), statistics.median(remote)
    overhead = t_http - t_local
    budget = 0.10 * t_local + 0.050
    print(f"in-process convert(): median {t_local:.3f} s over {len(local)} runs {[round(x, 3) for x in local]}")
    print(f"HTTP /convert:        median {t_http:.3f} s over {len(remote)} runs {[round(x, 3) for x in remote]}")
    print(f"last stage times: {stages}")
    print(f"overhead {overhead * 1000:+.0f} ms ({overhead / t_local * 100:+.1f} %); budget {budget * 1000:.0f} ms "
          f"-> {'OK' if overhead <= budget else 'OVER'}")


if __name__ == "__main__":
    main()
