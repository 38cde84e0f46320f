"""Shared fixtures: small random-weight models in the real formats, made once per session
(written by `rvc_pipeline.testing`), and the helpers that skip a test when something it
needs is absent: `espeak_speech` (espeak-ng) and `shared_fixture` (../shared/fixtures)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

# FAISS's OpenMP pool thrashes against torch on two cores; one search thread is faster here.
os.environ.setdefault("RVC_FAISS_THREADS", "1")
# Local clusters run with Ray's token auth, as the README's command does. Ray reads the mode
# once, when first imported, so it is set here, before any test module imports Ray.
os.environ["RAY_AUTH_MODE"] = "token"

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Reference-format fixtures beside the checkout (absent in a clone elsewhere).
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"

# Two cores here: keep torch from oversubscribing when several libraries spawn threads.
torch.set_num_threads(min(torch.get_num_threads(), 2))


@pytest.fixture(scope="session")
def shared_fixture() -> Callable[[str], Path]:
    """`find(relative)`: the path of a reference fixture under ../shared/fixtures (e.g.
    "voices/webui-v2-40k.pth"); skips the test when it is absent."""

    def find(relative: str) -> Path:
        path = SHARED_FIXTURES / relative
        if not path.exists():
            pytest.skip(f"reference fixture {relative} not present (expected under {SHARED_FIXTURES})")
        return path

    return find


@pytest.fixture(scope="session")
def shared_voices_dir(shared_fixture) -> Path:
    """The reference-written voices in ../shared/fixtures/voices; skips when absent."""
    return shared_fixture("voices")


@pytest.fixture(scope="session")
def espeak_speech() -> Callable[..., np.ndarray]:
    """`rvc_pipeline.testing.audio.espeak_speech`; skips the test when espeak-ng is not installed."""
    from rvc_pipeline.errors import AssetNotFoundError
    from rvc_pipeline.testing.audio import espeak_speech as speak

    try:
        speak("test")
    except AssetNotFoundError as e:
        pytest.skip(str(e))
    return speak


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models folder with random-weight voices (v2 40k + index, v1 48k no-f0, v2 32k) and HuBERT."""
    from rvc_pipeline.testing.hubert import write_fairseq_hubert
    from rvc_pipeline.testing.voices import write_index, write_webui_voice

    root = tmp_path_factory.mktemp("models")
    write_webui_voice(root / "alice.pth", version="v2", sr=40000, f0=True, seed=1)
    write_index(root / "alice.index", dim=768, n=600, seed=1)
    write_webui_voice(root / "bob.pth", version="v1", sr=48000, f0=False, seed=2)
    write_webui_voice(root / "carol.pth", version="v2", sr=32000, f0=True, n_speakers=3, seed=3)
    (root / "assets").mkdir()
    write_fairseq_hubert(root / "assets" / "hubert_base.pt")
    return root


@pytest.fixture(scope="session")
def encoder(models_dir):
    from rvc_pipeline import load_content_encoder

    return load_content_encoder(models_dir / "assets" / "hubert_base.pt", device="cpu")


@pytest.fixture(scope="session")
def pitch_estimator():
    from rvc_pipeline import PitchEstimator

    return PitchEstimator(device="cpu")


@pytest.fixture(scope="session")
def voice_v2(models_dir):
    from rvc_pipeline import load_voice

    return load_voice(models_dir / "alice.pth", models_dir / "alice.index", name="alice", device="cpu")


@pytest.fixture(scope="session")
def voice_v1_nof0(models_dir):
    from rvc_pipeline import load_voice

    return load_voice(models_dir / "bob.pth", name="bob", device="cpu")


@pytest.fixture(scope="session")
def voice_v2_32k(models_dir):
    from rvc_pipeline import load_voice

    return load_voice(models_dir / "carol.pth", name="carol", device="cpu")
