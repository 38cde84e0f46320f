"""The GPU path: CUDA fp32 matches the CPU, fp16 stays close, batching holds on the GPU.

Skipped without CUDA; `bench/gpu_check.sh` runs these (`pytest -m cuda`) on a GPU machine.
Noise is zeroed where devices are compared (CUDA and CPU generators draw different numbers).
"""

from __future__ import annotations

import pytest
import torch

from rvc_pipeline import ChunkingConfig, ConversionOptions, load_voice
from rvc_pipeline.pipeline import synthesize_chunk, synthesize_chunks
from rvc_pipeline.testing.audio import snr_db

from .test_pipeline import _chunk_job

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture
def no_noise(monkeypatch):
    from rvc_pipeline.synth import nsf, synthesizer

    def zeros(shape, generator, device, dtype):
        return torch.zeros(shape, device=device, dtype=dtype)

    monkeypatch.setattr(nsf, "gaussian_noise", zeros)
    monkeypatch.setattr(synthesizer, "gaussian_noise", zeros)


def _synth(voice, job):
    return synthesize_chunk(voice, job.features, job.pitch, job.chunk_samples, job.options, job.chunking, job.seed)


def test_cuda_fp32_matches_the_cpu_and_fp16_stays_close(models_dir, voice_v2, no_noise):
    job = _chunk_job(voice_v2, 4.0, 1, ConversionOptions(f0_method="pm", index_rate=0.5))
    cpu = _synth(voice_v2, job)
    gpu32 = load_voice(models_dir / "alice.pth", models_dir / "alice.index", device="cuda", dtype=torch.float32)
    gpu16 = load_voice(models_dir / "alice.pth", models_dir / "alice.index", device="cuda", dtype=torch.float16)
    assert snr_db(cpu, _synth(gpu32, job)) > 50
    assert snr_db(cpu, _synth(gpu16, job)) > 20


def test_cuda_batches_equal_single_chunks(models_dir):
    voice = load_voice(models_dir / "alice.pth", models_dir / "alice.index", device="cuda", dtype=torch.float16)
    jobs = [_chunk_job(voice, s, i, ConversionOptions(f0_method="pm")) for i, s in enumerate((2.5, 3.7, 3.1))]
    for job, out in zip(jobs, synthesize_chunks(voice, jobs)):
        alone = _synth(voice, job)
        assert out.shape == alone.shape and snr_db(alone, out) > 35


def test_gpu_chunking_and_voice_memory_on_the_device(models_dir):
    assert ChunkingConfig.for_device("cuda", torch.float16) in (ChunkingConfig.GPU_FP16, ChunkingConfig.LOW_MEMORY)
    before = torch.cuda.memory_allocated()
    voice = load_voice(models_dir / "alice.pth", device="cuda", dtype=torch.float16)
    assert torch.cuda.memory_allocated() - before >= voice.weight_bytes() > 0
