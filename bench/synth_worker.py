"""One timed synthesis run of the `rvc_pipeline` found in a given checkout (run by bench_synth).

    python bench/synth_worker.py REPO INPUTS.npz OUT.npy --threads 2 --repeat 1

REPO is a checkout of this project (the current one or a `git worktree` of an older
commit); its `rvc_pipeline` is imported, never this one's. INPUTS holds the voice path,
the chunk's content features (T, C) at 50 frames/s and its pitch (coarse, f0) at 100
frames/s. Noise is zeroed (prior noise and NSF noise), so two checkouts that compute the
same function give the same samples. Prints one JSON line: every timed run's seconds.
OUT gets the last run's audio (float32 at the voice's rate).

This file is run as a script by path, so it imports nothing from `bench`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repo", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from rvc_pipeline import ConversionOptions, load_voice
    from rvc_pipeline import pipeline as stages
    from rvc_pipeline.options import ChunkingConfig
    from rvc_pipeline.synth import nsf, synthesizer

    def zeros(shape, generator, device, dtype):
        return torch.zeros(shape, device=device, dtype=dtype)

    nsf.gaussian_noise = synthesizer.gaussian_noise = zeros  # both modules look the name up at call time

    data = np.load(args.inputs)
    voice = load_voice(str(data["voice"]), device="cpu", dtype=torch.float32)
    features, coarse, f0 = data["features"], data["coarse"], data["f0"]
    samples = int(data["samples"])
    track = stages.PitchTrack(coarse, f0)
    options = ConversionOptions(index_rate=0.0)

    def run():
        return stages.synthesize_chunk(voice, features, track, samples, options, ChunkingConfig.CPU_FP32, 0)

    run()  # warm-up: first-call kernel setup
    times, audio = [], None
    for _ in range(args.repeat):
        started = time.perf_counter()
        audio = run()
        times.append(time.perf_counter() - started)
    np.save(args.out, np.asarray(audio, dtype=np.float32))
    print(json.dumps({"seconds": times, "module": str(Path(stages.__file__).resolve().parents[1])}))


if __name__ == "__main__":
    main()
