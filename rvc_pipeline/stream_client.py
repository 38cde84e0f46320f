"""A client of the service's `WS /stream` (protocol: serve_app/streaming.py, docs/streaming.md).

    with StreamClient("ws://127.0.0.1:8003/stream", "alice", sample_rate=48000, f0_method="pm") as client:
        out = client.convert_block(block)   # (block_samples,) float32 at 48 kHz in and out

    report = stream_file("in.wav", "out.wav", "ws://127.0.0.1:8003/stream", "alice")  # `rvc stream`

Uses the `websockets` package's threaded client; a sender thread keeps realtime pace while
the caller's thread reads replies, so a slow block shows as latency, not as a slower clock.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import decode_audio, resample, write_audio
from .constants import SAMPLE_RATE
from .errors import RVCError
from .stream import SAMPLE_FORMATS, decode_samples, encode_samples
#: Seconds to wait for the server's answer to the settings.
CONNECT_TIMEOUT_S = 120.0


class StreamError(RVCError):
    """The server refused the session or a block: `error` is its code, `detail` its words."""

    def __init__(self, error: str, detail: str, close_code: int | None = None) -> None:
        super().__init__(f"{error}: {detail}" + (f" (closed with {close_code})" if close_code else ""))
        self.error, self.detail, self.close_code = error, detail, close_code


class StreamClient:
    """One /stream session. `settings` and `latency_ms` are the server's effective values
    once connected; blocks are (block_samples,) float arrays at `sample_rate`."""

    def __init__(self, url: str, voice: str, *, sample_rate: int = 48000, sample_format: str = "pcm_s16le",
                 block_ms: float = 250, extra_ms: float = 1000, crossfade_ms: float = 50, silence_db: float = -60,
                 api_key: str | None = None, stats_every: int = 0, **options: Any) -> None:
        if sample_format not in SAMPLE_FORMATS:
            raise ValueError(f"sample_format must be one of {', '.join(SAMPLE_FORMATS)}, got {sample_format!r}")
        self.url = url
        self.start = {"type": "start", "voice": voice, "sample_rate": int(sample_rate), "sample_format": sample_format,
                      "block_ms": block_ms, "extra_ms": extra_ms, "crossfade_ms": crossfade_ms,
                      "silence_db": silence_db, "stats_every": stats_every, **options}
        self.api_key = api_key
        self.settings: dict[str, Any] = {}
        self.latency_ms = 0.0
        self.messages: list[dict[str, Any]] = []  # JSON messages received besides replies asked for
        self._socket: Any = None
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> StreamClient:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def connect(self) -> dict[str, Any]:
        """Open the socket, send the settings, wait for "ready"; the effective settings."""
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        self._exit = contextlib.ExitStack()
        self._socket = self._exit.enter_context(
            connect(self.url, additional_headers=headers, max_size=None, open_timeout=CONNECT_TIMEOUT_S))
        self._socket.send(json.dumps(self.start))
        reply = self._json(CONNECT_TIMEOUT_S)
        if reply.get("type") != "ready":
            raise StreamError(str(reply.get("error")), str(reply.get("detail")), self._socket.close_code)
        self.settings, self.latency_ms = reply["settings"], float(reply["latency_ms"])
        return self.settings

    def close(self) -> None:
        if self._socket is not None:
            self._exit.close()
            self._socket = None

    @property
    def block_samples(self) -> int:
        return int(self.settings["block_samples"])

    def encode(self, block: np.ndarray) -> bytes:
        """(block_samples,) float in [-1, 1] -> wire bytes."""
        return encode_samples(block, self.settings["sample_format"])

    def decode(self, data: bytes) -> np.ndarray:
        """Wire bytes -> (n,) float32."""
        return decode_samples(data, self.settings["sample_format"])

    def send_block(self, block: np.ndarray) -> None:
        self._socket.send(self.encode(block))

    def receive_block(self, timeout: float | None = None) -> np.ndarray:
        """The next converted block; JSON messages on the way are kept in `messages` (errors raise)."""
        while True:
            message = self._socket.recv(timeout=timeout)
            if isinstance(message, bytes):
                return self.decode(message)
            body = json.loads(message)
            if body.get("type") == "error":
                raise StreamError(str(body.get("error")), str(body.get("detail")))
            self.messages.append(body)

    def convert_block(self, block: np.ndarray, timeout: float | None = None) -> np.ndarray:
        """Send one block and wait for its converted block."""
        self.send_block(block)
        return self.receive_block(timeout)

    def request(self, body: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Send a JSON message ("stats" or "update") and return the server's JSON answer (errors raise)."""
        self._socket.send(json.dumps(body))
        reply = self._json(timeout)
        if reply.get("type") == "error":
            raise StreamError(str(reply.get("error")), str(reply.get("detail")))
        return reply

    def _json(self, timeout: float) -> dict[str, Any]:
        while True:
            try:
                message = self._socket.recv(timeout=timeout)
            except Exception as e:  # closed: report the server's last word
                raise StreamError("closed", str(e), self._socket.close_code) from None
            if isinstance(message, str):
                return json.loads(message)


@dataclass
class StreamReport:
    """What `stream_file` measured: round trips (send of a block to its reply) in ms,
    the server's own stats, and the output written."""

    blocks: int
    block_ms: float
    latency_ms: float
    round_trip_ms: list[float] = field(default_factory=list)
    server_stats: dict[str, Any] = field(default_factory=dict)
    output_samples: int = 0
    sample_rate: int = 0

    def summary(self) -> str:
        """One paragraph for people."""
        trips = np.asarray(self.round_trip_ms)
        stats = self.server_stats
        return (f"{self.blocks} blocks of {self.block_ms:g} ms; algorithmic latency {self.latency_ms:.0f} ms; "
                f"round trip p50 {np.percentile(trips, 50):.0f} ms, p95 {np.percentile(trips, 95):.0f} ms, "
                f"max {trips.max():.0f} ms; server processing p50 {stats.get('process_ms_p50') or 0:.0f} ms, "
                f"p95 {stats.get('process_ms_p95') or 0:.0f} ms; gated {stats.get('gated', 0)}, "
                f"dropped {stats.get('dropped', 0)}")


def stream_file(source: str | Path, target: str | Path, url: str, voice: str, *, fast: bool = False,
                sample_rate: int = 48000, **settings: Any) -> StreamReport:
    """Stream an audio file through the service and write the converted audio to `target`.

    The file is decoded, resampled to `sample_rate` and sent block by block at realtime pace
    (`fast`: as fast as the server answers). One extra block of silence flushes the tail, the
    first crossfade + search samples (the stream's delay) are dropped, and the output is cut to
    the input's length: it lines up with the input sample for sample.
    """
    audio = resample(decode_audio(source), SAMPLE_RATE, sample_rate)
    with StreamClient(url, voice, sample_rate=sample_rate, **settings) as client:
        n = client.block_samples
        delay = (client.settings["crossfade_ms"] + client.settings["sola_search_ms"]) * sample_rate // 1000
        blocks = -(-(audio.shape[0] + delay) // n)
        padded = np.zeros(blocks * n, dtype=np.float32)
        padded[: audio.shape[0]] = audio
        sent_at: list[float] = [0.0] * blocks
        failure: list[BaseException] = []

        def send_all() -> None:
            started = time.perf_counter()
            try:
                for i in range(blocks):
                    if not fast:  # realtime pace: block i leaves when its last sample would have been recorded
                        time.sleep(max(0.0, started + (i + 1) * n / sample_rate - time.perf_counter()))
                    sent_at[i] = time.perf_counter()
                    client.send_block(padded[i * n:(i + 1) * n])
                    if fast and i >= 4:  # keep a few blocks in flight, never flood the server's queue
                        while received[0] < i - 2:
                            time.sleep(0.001)
            except BaseException as e:  # surfaced by the reader
                failure.append(e)

        received = [0]
        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        out, trips = [], []
        for i in range(blocks):
            out.append(client.receive_block(timeout=CONNECT_TIMEOUT_S))
            trips.append((time.perf_counter() - sent_at[i]) * 1000)
            received[0] = i + 1
        sender.join()
        if failure:
            raise failure[0]
        stats = client.request({"type": "stats"})
    converted = np.concatenate(out)[delay: delay + audio.shape[0]]
    write_audio(target, converted, sample_rate)
    return StreamReport(blocks=blocks, block_ms=client.settings["block_ms"], latency_ms=client.latency_ms,
                        round_trip_ms=trips, server_stats=stats, output_samples=converted.shape[0],
                        sample_rate=sample_rate)
