"""Retrieval blending against a brute-force numpy k-NN, and the index error cases."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import pytest

from rvc_pipeline.errors import OptionError, RetrievalIndexError
from rvc_pipeline import retrieval
from rvc_pipeline.retrieval import RetrievalIndex, set_search_threads

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "voices"


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread() -> Iterator[None]:
    """Tiny indexes: OpenMP wake-up would cost more than the work (restored afterwards)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def make_index(tmp_path: Path, dim: int = 32, n: int = 600, kind: str = "IVF8,Flat", seed: int = 0,
               nprobe: int | None = None) -> tuple[Path, np.ndarray]:
    """Build and save an index the way RVC's train_index does (factory, train, add in order)."""
    data = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    index = faiss.index_factory(dim, kind)
    index.train(data)
    index.add(data)
    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
    path = tmp_path / f"added_{kind.replace(',', '_')}_{dim}.index"
    faiss.write_index(index, str(path))
    return path, data


def brute_force_blend(feats: np.ndarray, data: np.ndarray, index_rate: float, k: int = 8) -> np.ndarray:
    """RVC's step 8c with exact squared-L2 neighbours computed in float64 numpy."""
    d2 = ((feats[:, None, :].astype(np.float64) - data[None, :, :]) ** 2).sum(-1)
    ix = np.argsort(d2, axis=1)[:, :k]
    score = np.take_along_axis(d2, ix, axis=1)
    w = (1.0 / score) ** 2
    w /= w.sum(axis=1, keepdims=True)
    r = (data[ix] * w[:, :, None]).sum(axis=1)
    return (index_rate * r + (1 - index_rate) * feats).astype(np.float32)


@pytest.mark.parametrize("kind,nprobe", [("Flat", None), ("IVF8,Flat", 8)])
def test_blend_equals_brute_force_knn(tmp_path: Path, kind: str, nprobe: int | None) -> None:
    path, data = make_index(tmp_path, kind=kind, nprobe=nprobe)
    index = RetrievalIndex.load(path, 32)
    feats = np.random.default_rng(1).standard_normal((50, 32)).astype(np.float32)
    for rate in (1.0, 0.75):
        np.testing.assert_allclose(index.blend(feats, rate), brute_force_blend(feats, data, rate), rtol=1e-5, atol=1e-5)


def test_index_rate_zero_returns_features_unchanged(tmp_path: Path) -> None:
    index = RetrievalIndex.load(make_index(tmp_path)[0], 32)
    feats = np.random.default_rng(2).standard_normal((10, 32)).astype(np.float32)
    out = index.blend(feats, 0.0)
    np.testing.assert_array_equal(out, feats)
    assert out is not feats


def test_vectors_are_reconstructed_in_id_order(tmp_path: Path) -> None:
    path, data = make_index(tmp_path)
    index = RetrievalIndex.load(path, 32)
    assert (index.dim, index.ntotal) == (32, 600)
    np.testing.assert_array_equal(index.vectors, data)
    assert index.vectors.dtype == np.float32 and not index.vectors.flags.writeable


def test_exact_match_takes_all_the_weight(tmp_path: Path) -> None:
    """RVC divides by a zero score here (NaN); the epsilon gives the match all the weight."""
    path, data = make_index(tmp_path, kind="Flat")
    index = RetrievalIndex.load(path, 32)
    out = index.blend(data[:5], 1.0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, data[:5], atol=1e-6)


def test_missing_neighbours_are_dropped(tmp_path: Path) -> None:
    """Fewer stored vectors than k: FAISS pads with id -1, which must not pick big_npy[-1]."""
    path, data = make_index(tmp_path, n=3, kind="Flat")
    index = RetrievalIndex.load(path, 32)
    feats = np.random.default_rng(3).standard_normal((4, 32)).astype(np.float32)
    scores, ids = index.search(feats)
    assert (ids[:, 3:] == -1).all()
    np.testing.assert_allclose(index.blend(feats, 1.0), brute_force_blend(feats, data, 1.0, k=3), rtol=1e-5, atol=1e-5)


def test_frame_with_no_neighbour_keeps_its_features(tmp_path: Path) -> None:
    index = RetrievalIndex.load(make_index(tmp_path)[0], 32)
    feats = np.ones((3, 32), np.float32)
    scores = np.full((3, 8), np.finfo(np.float32).max, np.float32)
    ids = np.full((3, 8), -1, np.int64)
    np.testing.assert_array_equal(index._weighted_neighbours(scores, ids, feats), feats)


def test_dimension_mismatch_names_both_sides(tmp_path: Path) -> None:
    path, _ = make_index(tmp_path, dim=256, n=400)
    with pytest.raises(RetrievalIndexError, match=r"has 256-dim vectors but voice 'alice' is v2 \(768-dim\)"):
        RetrievalIndex.load(path, 768, voice_name="alice")


@pytest.mark.parametrize("kind", ["IVF8,Flat", "Flat", "PCA64,Flat"])
def test_header_check_reads_the_width_without_loading(tmp_path: Path, kind: str) -> None:
    path, _ = make_index(tmp_path, dim=256, n=400, kind=kind)
    retrieval.check_index_header(path, 256)  # the right width passes
    with pytest.raises(RetrievalIndexError, match=r"has 256-dim vectors but voice 'alice' is v2 \(768-dim\)"):
        retrieval.check_index_header(path, 768, voice_name="alice")


def test_header_check_refuses_what_is_not_an_index(tmp_path: Path) -> None:
    junk = tmp_path / "junk.index"
    for content in (b"", b"IwF", b"\x00\x01\x02\x03\x00\x03\x00\x00", b"this is not faiss"):
        junk.write_bytes(content)
        with pytest.raises(RetrievalIndexError, match="not a FAISS index"):
            retrieval.check_index_header(junk, 768)
    with pytest.raises(RetrievalIndexError, match="cannot be read"):
        retrieval.check_index_header(tmp_path / "missing.index", 768)


def test_trained_only_index_is_refused(tmp_path: Path) -> None:
    index = faiss.index_factory(32, "IVF4,Flat")
    index.train(np.random.default_rng(4).standard_normal((200, 32)).astype(np.float32))
    path = tmp_path / "trained_IVF4_Flat_nprobe_1_x_v2.index"
    faiss.write_index(index, str(path))
    with pytest.raises(RetrievalIndexError, match="trained_"):
        RetrievalIndex.load(path, 32)


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.index"
    junk.write_bytes(b"this is not faiss" * 20)
    with pytest.raises(RetrievalIndexError, match="could not read"):
        RetrievalIndex.load(junk, 768)
    with pytest.raises(RetrievalIndexError, match="does not exist"):
        RetrievalIndex.load(tmp_path / "missing.index", 768)
    with pytest.raises(RetrievalIndexError):
        RetrievalIndex.load(tmp_path, 768)


def test_inner_product_index_is_refused(tmp_path: Path) -> None:
    index = faiss.IndexFlatIP(32)
    index.add(np.random.default_rng(5).standard_normal((20, 32)).astype(np.float32))
    path = tmp_path / "ip.index"
    faiss.write_index(index, str(path))
    with pytest.raises(RetrievalIndexError, match="L2"):
        RetrievalIndex.load(path, 32)


def test_bad_arguments(tmp_path: Path) -> None:
    index = RetrievalIndex.load(make_index(tmp_path)[0], 32)
    feats = np.zeros((2, 32), np.float32)
    for rate in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(OptionError, match="index_rate"):
            index.blend(feats, rate)
    with pytest.raises(ValueError, match=r"\(T, 32\)"):
        index.blend(np.zeros((2, 31), np.float32), 0.5)
    assert index.blend(np.zeros((0, 32), np.float32), 0.5).shape == (0, 32)


def test_concurrent_blends_match_serial(tmp_path: Path) -> None:
    path, _ = make_index(tmp_path, n=2000, kind="IVF16,Flat")
    index = RetrievalIndex.load(path, 32)
    batches = [np.random.default_rng(10 + i).standard_normal((300, 32)).astype(np.float32) for i in range(8)]
    serial = [index.blend(b, 0.75) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda b: index.blend(b, 0.75), batches))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


def test_describe(tmp_path: Path) -> None:
    info = RetrievalIndex.load(make_index(tmp_path, nprobe=1)[0], 32).describe()
    assert info["kind"] == "IVF8,Flat" and info["nlist"] == 8 and info["nprobe"] == 1
    assert info["dim"] == 32 and info["ntotal"] == 600 and info["version"] is None


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures (../shared/fixtures) not present")
def test_webui_fixture_index() -> None:
    index = RetrievalIndex.load(FIXTURES / "webui-v2-40k.index", 768, voice_name="webui-v2-40k")
    assert (index.dim, index.ntotal) == (768, 1000)
    info = index.describe()
    assert info["kind"] == "IVF16,Flat" and info["nprobe"] == 1 and info["version"] == "v2"
    # ids 0..999 in insertion order: each stored vector finds itself first
    scores, ids = index.search(index.vectors[:20], k=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(20))
    feats = np.random.default_rng(6).standard_normal((40, 768)).astype(np.float32)
    out = index.blend(feats, 0.75)
    assert out.shape == (40, 768) and out.dtype == np.float32 and np.isfinite(out).all()
    with pytest.raises(RetrievalIndexError, match="v1 \\(256-dim\\)"):
        RetrievalIndex.load(FIXTURES / "webui-v2-40k.index", 256, voice_name="x")


def test_thread_count_from_env_is_applied_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(faiss, "omp_set_num_threads", calls.append)
    monkeypatch.setattr(retrieval, "_threads_from_env_applied", False)
    monkeypatch.setenv(retrieval.THREADS_ENV, "3")
    path = make_index(tmp_path)[0]
    RetrievalIndex.load(path, 32)
    RetrievalIndex.load(path, 32)
    assert calls == [3]
    set_search_threads(2)
    assert calls == [3, 2]
    with pytest.raises(OptionError):
        set_search_threads(0)
    monkeypatch.setattr(retrieval, "_threads_from_env_applied", False)
    monkeypatch.setenv(retrieval.THREADS_ENV, "many")
    with pytest.raises(OptionError, match="RVC_FAISS_THREADS"):
        RetrievalIndex.load(path, 32)


def test_bit_identical_to_the_reference_formula(tmp_path: Path) -> None:
    """RVC's own lines (vc/pipeline.py step 8c, torch mix included) on an nprobe-1 IVF index."""
    torch = pytest.importorskip("torch")
    path, data = make_index(tmp_path, dim=64, n=3000, kind="IVF32,Flat", nprobe=1)
    index = RetrievalIndex.load(path, 64)
    raw = faiss.read_index(str(path))
    big_npy = raw.reconstruct_n(0, raw.ntotal)
    feats = np.random.default_rng(7).standard_normal((400, 64)).astype(np.float32)
    for index_rate in (0.75, 0.33, 1.0):
        score, ix = raw.search(feats, k=8)
        weight = np.square(1 / score)
        weight /= weight.sum(axis=1, keepdims=True)
        npy = np.sum(big_npy[ix] * np.expand_dims(weight, axis=2), axis=1)
        expected = torch.from_numpy(npy) * index_rate + (1 - index_rate) * torch.from_numpy(feats)
        np.testing.assert_array_equal(index.blend(feats, index_rate), expected.numpy())
