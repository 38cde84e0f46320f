"""WS /stream on a real local Ray cluster: blocks out equal an in-process StreamConverter,
sessions are isolated, bad frames and settings get errors with the right close codes, and
the /ui files are served."""

from __future__ import annotations

import contextlib
import json
import threading

import numpy as np
import pytest

from rvc_pipeline import PitchEstimator, load_content_encoder, load_voice
from rvc_pipeline.stream import LocalStreamEngine, StreamConverter, StreamSettings
from rvc_pipeline.testing.audio import voiced_clip

from .conftest import STREAM_SESSIONS

sync_client = pytest.importorskip("websockets.sync.client")
httpx = pytest.importorskip("httpx")

SETTINGS = dict(sample_rate=16000, sample_format="f32le", block_ms=200, extra_ms=500, crossfade_ms=40, silence_db=-70)


def _ws_url(service) -> str:
    return service.url.replace("http://", "ws://") + "/stream"


def _blocks(f0_hz: float, n_blocks: int, block_samples: int) -> list[np.ndarray]:
    audio = voiced_clip(n_blocks * block_samples / 16000 + 0.1, f0_hz)
    return [audio[i * block_samples:(i + 1) * block_samples] for i in range(n_blocks)]


def _start(socket, voice: str, **extra) -> dict:
    socket.send(json.dumps({"type": "start", "voice": voice, **SETTINGS, "f0_method": "pm", **extra}))
    return json.loads(socket.recv(timeout=120))


def _in_process(service, voice_name: str, blocks: list[np.ndarray], **options) -> list[np.ndarray]:
    """The same blocks through StreamConverter + LocalStreamEngine in this process (1 torch thread)."""
    import torch

    torch.set_num_threads(1)
    models = service.models_dir
    index = models / f"{voice_name}.index"
    voice = load_voice(models / f"{voice_name}.pth", index if index.exists() else None, name=voice_name)
    engine = LocalStreamEngine(voice, load_content_encoder(service.encoder_path), PitchEstimator())
    converter = StreamConverter(StreamSettings(**SETTINGS, options={"f0_method": "pm", **options}), voice.sample_rate)
    return [converter.process(block, engine) for block in blocks]


def test_stream_blocks_equal_the_in_process_stream_converter(service):
    blocks = _blocks(140.0, 6, 3200)
    with sync_client.connect(_ws_url(service), max_size=None) as socket:
        ready = _start(socket, "alice", f0_up_key=2)
        assert ready["type"] == "ready" and ready["settings"]["block_samples"] == 3200
        assert ready["latency_ms"] == 200 + 40 + 10
        got = []
        for block in blocks:
            socket.send(block.astype("<f4").tobytes())
            reply = socket.recv(timeout=120)
            assert isinstance(reply, bytes) and len(reply) == 3200 * 4
            got.append(np.frombuffer(reply, dtype="<f4"))
        socket.send(json.dumps({"type": "stats"}))
        stats = json.loads(socket.recv(timeout=60))
    assert stats["type"] == "stats" and stats["blocks_in"] == stats["blocks_out"] == 6 and stats["dropped"] == 0
    want = _in_process(service, "alice", blocks, f0_up_key=2)
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=1e-5)
    assert np.abs(np.concatenate(got)[3200:]).max() > 0.01  # audio came back, not silence


def test_two_sessions_with_different_voices_never_mix(service):
    blocks = {"alice": _blocks(130.0, 5, 3200), "bob": _blocks(210.0, 5, 3200)}
    got: dict[str, list[np.ndarray]] = {"alice": [], "bob": []}
    errors: list[BaseException] = []

    def session(voice: str) -> None:
        try:
            with sync_client.connect(_ws_url(service), max_size=None) as socket:
                assert _start(socket, voice, seed=7)["type"] == "ready"
                for block in blocks[voice]:
                    socket.send(block.astype("<f4").tobytes())
                    got[voice].append(np.frombuffer(socket.recv(timeout=120), dtype="<f4"))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=session, args=(voice,)) for voice in blocks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for voice in blocks:
        want = _in_process(service, voice, blocks[voice], seed=7)
        np.testing.assert_allclose(np.concatenate(got[voice]), np.concatenate(want), atol=1e-5, err_msg=voice)


def test_bad_frames_get_an_error_and_the_session_goes_on(service):
    block = _blocks(150.0, 1, 3200)[0].astype("<f4").tobytes()
    with sync_client.connect(_ws_url(service), max_size=None) as socket:
        assert _start(socket, "alice")["type"] == "ready"
        socket.send(block[:-4])  # one sample short
        error = json.loads(socket.recv(timeout=60))
        assert error["type"] == "error" and error["error"] == "invalid_block" and "12800 bytes" in error["detail"]
        socket.send("not json")
        assert json.loads(socket.recv(timeout=60))["error"] == "invalid_request"
        socket.send(json.dumps({"type": "update", "index_rate": 7}))
        assert json.loads(socket.recv(timeout=60))["error"] == "invalid_option"
        socket.send(json.dumps({"type": "update", "f0_up_key": 5, "voice": "bob"}))
        updated = json.loads(socket.recv(timeout=120))
        assert updated["type"] == "updated" and updated["voice"] == "bob"
        assert updated["settings"]["options"]["f0_up_key"] == 5
        socket.send(block)
        assert len(socket.recv(timeout=120)) == len(block)


@pytest.mark.parametrize("start, error, code", [
    ({"voice": "nobody"}, "voice_not_found", 1008),
    ({"voice": "alice", "block_ms": 5}, "invalid_option", 1008),
    ({"voice": "alice", "auto_key": "male"}, "invalid_option", 1008),
    ({"voice": "alice", "no_such_option": 1}, "invalid_request", 1008),
])
def test_bad_settings_close_the_session_with_policy_code(service, start, error, code):
    with sync_client.connect(_ws_url(service), max_size=None) as socket:
        socket.send(json.dumps({**SETTINGS, **start}))
        reply = json.loads(socket.recv(timeout=60))
        assert reply["type"] == "error" and reply["error"] == error
        with pytest.raises(Exception):
            socket.recv(timeout=30)
        assert socket.close_code == code


def test_sessions_beyond_the_limit_get_overloaded_1013(service):
    with contextlib.ExitStack() as stack:
        for _ in range(STREAM_SESSIONS):
            socket = stack.enter_context(sync_client.connect(_ws_url(service), max_size=None))
            assert _start(socket, "alice")["type"] == "ready"
        with sync_client.connect(_ws_url(service), max_size=None) as extra:
            reply = json.loads(extra.recv(timeout=60))
            assert reply["error"] == "overloaded"
            with pytest.raises(Exception):
                extra.recv(timeout=30)
            assert extra.close_code == 1013


def test_ui_files_are_served_with_a_strict_policy(service):
    page = httpx.get(f"{service.url}/ui", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="ui/app.js"' in page.text  # relative: the service may run under a route prefix
    assert httpx.get(f"{service.url}/ui/worklet.js", timeout=30).headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{service.url}/ui/..%2Fingress.py", timeout=30).status_code == 404


def _jumps(audio: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(audio.astype(np.float64)))


def test_rvc_stream_writes_the_inputs_length_without_boundary_clicks(service, tmp_path, capsys):
    import soundfile as sf

    from rvc_pipeline.cli import main

    source, target = tmp_path / "in.wav", tmp_path / "out.wav"
    clip = voiced_clip(2.4, 150.0)
    sf.write(source, clip, 16000)
    code = main(["stream", str(source), str(target), "--url", _ws_url(service), "--voice", "alice", "--fast",
                 "--sample-rate", "16000", "--block-ms", "200", "--extra-ms", "500", "--crossfade-ms", "40",
                 "--f0-method", "pm", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    out, rate = sf.read(target, dtype="float32")
    assert rate == 16000 and out.shape[0] == clip.shape[0]  # aligned and cut to the input's length
    assert report["blocks"] == len(report["round_trip_ms"]) and report["server"]["blocks_out"] == report["blocks"]
    # Block joins sit at multiples of the block minus the dropped delay (crossfade + search).
    delay, block = (40 + 10) * 16, 3200
    boundaries = np.arange(block - delay, out.shape[0] - 1, block)
    jumps = _jumps(out)
    inside = np.delete(jumps, boundaries - 1)
    voiced = slice(1600, out.shape[0] - 1600)  # away from the clip's fade in and out
    assert jumps[boundaries - 1][(boundaries > 1600) & (boundaries < out.shape[0] - 1600)].max() \
        <= 3 * np.median(inside[voiced])


def test_a_gate_above_the_signal_silences_every_block_without_inference(service):
    blocks = _blocks(150.0, 4, 3200)
    with sync_client.connect(_ws_url(service), max_size=None) as socket:
        assert _start(socket, "alice", silence_db=-3)["type"] == "ready"  # the clip peaks near -10 dBFS
        for block in blocks:
            socket.send(block.astype("<f4").tobytes())
            assert not np.frombuffer(socket.recv(timeout=60), dtype="<f4").any()
        socket.send(json.dumps({"type": "stats"}))
        stats = json.loads(socket.recv(timeout=60))
    assert stats["gated"] == stats["blocks_in"] == 4
