"""How many concurrent `WS /stream` sessions one machine holds in realtime.

    python -m load_tests.stream_sessions [--write] [--quick] [--sessions 1,2,3,4] [--block-ms 250] [--method pm]

Starts a private local Ray cluster with the app (as the other load tests do: the three
random-weight test voices of `serve_app.testing`, full-size v2 synthesizers; the content
encoder is a random-weight full-size HuBERT base unless `--encoder demo` picks the small demo
encoder), warms both pitch-guided voices up, then for N = 1, 2, 3, ... opens N sessions at
once. Each session streams espeak-ng speech at realtime pace: one block every `block_ms`
(the sessions' clocks staggered over one block), and times each block from its send to its
converted reply. After the blocks it asks for the session's counters ({"type": "stats"}).

Per N it records the client's p50/p95 round trip, the server's processing time per block
(p50: median over the sessions, p95: the worst session's), blocks dropped by the server
(`dropped`: a full queue answers with silence) and error replies. N holds when its p95
processing time is within the block length with nothing dropped and no errors; the sweep
stops at the first N that does not hold (or after the last N asked for).

`--write` writes the table and the figure to the `stream_sessions` section of
docs/realtime.md (`--doc` for another file). `--quick` is the test's size: thin voices and the
demo encoder, 1 and 2 sessions, a few blocks each.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from bench.report import command_line, plural, provenance, table, write_section
from serve_app import testing as service  # sets RAY_AUTH_MODE before anything imports Ray

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DOC = REPO_ROOT / "docs" / "realtime.md"
SECTION = "stream_sessions"
MODULE = "load_tests.stream_sessions"

#: Session counts of a full run, and of --quick.
DEFAULT_SESSIONS = "1,2,3,4,5,6,8"
QUICK_SESSIONS = "1,2"
DEFAULT_BLOCK_MS = 250.0
DEFAULT_METHOD = "pm"
#: Seconds each session streams per N (full run), and blocks per session with --quick.
STEP_SECONDS = 25.0
QUICK_BLOCKS = 6
#: Blocks per voice streamed once before measuring (models load, kernels warm up).
WARMUP_BLOCKS = 8
QUICK_WARMUP_BLOCKS = 2
#: The first blocks of every session are left out of the round trips (connection start).
SKIP_BLOCKS = 2
#: The stream's settings besides the block length: a browser microphone as /ui streams it.
STREAM_SETTINGS = {"sample_rate": 48000, "sample_format": "pcm_s16le", "extra_ms": 1000,
                   "crossfade_ms": 50, "silence_db": -70}
SPEECH_RATE = 16000
#: Seconds between the sessions' connecting and their first block (all sessions get "ready").
START_GRACE_S = 2.0
#: Longest wait for any one reply before the session counts as failed.
REPLY_TIMEOUT_S = 60.0
#: Spoken by espeak-ng and looped; each session starts at another point of it.
SPEECH_TEXT = (
    "The quick brown fox jumps over the lazy dog while the radio plays an old song. "
    "Streaming voice conversion turns every short block of the microphone into the target voice, "
    "and the listener hears it a fraction of a second later. Seven silver swans swam silently seaward, "
    "and nobody on the harbour wall said a single word about the weather."
)
#: Deployments as the report names them, with their AppArgs field.
DEPLOYMENTS = (("Ingress", "ingress"), ("ContentFeatures", "content"), ("PitchExtractor", "pitch"),
               ("VoiceSynthesizer", "synthesizer"))
#: Thin synthesizer layers of --quick (the v2 40 kHz layout, as bench.bench_pipeline --small).
THIN_VOICE = dict(upsample_initial_channel=32, hidden_channels=64, filter_channels=64, inter_channels=64)


# ------------------------------------------------------------------ results


@dataclasses.dataclass
class SessionResult:
    """What one session measured: round trips (ms, after SKIP_BLOCKS), the server's counters, errors."""

    voice: str
    round_trips_ms: list[float]
    stats: dict[str, Any]
    errors: list[str]


@dataclasses.dataclass(frozen=True)
class Step:
    """One N: every session's figures together."""

    sessions: int
    blocks: int  # blocks answered, all sessions
    round_trip_p50_ms: float
    round_trip_p95_ms: float
    process_p50_ms: float  # median of the sessions' p50
    process_p95_ms: float  # the worst session's p95
    dropped: int
    errors: int
    block_ms: float
    error_examples: tuple[str, ...] = ()

    @property
    def over_block(self) -> bool:
        """Whether p95 processing exceeds the block length."""
        return not self.process_p95_ms <= self.block_ms

    @property
    def holds(self) -> bool:
        """Realtime: p95 processing within the block, nothing dropped, no errors."""
        return not self.over_block and self.dropped == 0 and self.errors == 0

    def row(self) -> list[str]:
        return [str(self.sessions), str(self.blocks), f"{self.round_trip_p50_ms:.0f}", f"{self.round_trip_p95_ms:.0f}",
                f"{self.process_p50_ms:.0f}", f"{self.process_p95_ms:.0f}", str(self.dropped), str(self.errors),
                "yes" if self.over_block else "no"]

    @staticmethod
    def header(block_ms: float) -> list[str]:
        return ["sessions", "blocks", "round trip p50 ms", "round trip p95 ms", "processing p50 ms",
                "processing p95 ms", "dropped", "errors", f"p95 > {block_ms:g} ms"]


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _stat(result: SessionResult, key: str) -> float:
    value = result.stats.get(key)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def summarize_step(results: Sequence[SessionResult], block_ms: float) -> Step:
    """One Step from its sessions' results (a session without stats counts as nan, so N does not hold)."""
    trips = [t for r in results for t in r.round_trips_ms]
    p50s = [_stat(r, "process_ms_p50") for r in results]
    p95s = [_stat(r, "process_ms_p95") for r in results]
    errors = [e for r in results for e in r.errors]
    return Step(
        sessions=len(results),
        blocks=sum(int(r.stats.get("blocks_out", 0)) for r in results),
        round_trip_p50_ms=_percentile(trips, 50), round_trip_p95_ms=_percentile(trips, 95),
        process_p50_ms=float(np.median(p50s)) if p50s else float("nan"),
        process_p95_ms=max(p95s, key=lambda v: np.inf if np.isnan(v) else v) if p95s else float("nan"),
        dropped=sum(int(r.stats.get("dropped", 0)) for r in results), errors=len(errors), block_ms=block_ms,
        error_examples=tuple(dict.fromkeys(errors))[:3],
    )


def sessions_held(steps: Sequence[Step]) -> int:
    """The largest N of the sweep up to which every N held (0 if even one session did not)."""
    held = 0
    for step in steps:
        if not step.holds:
            break
        held = step.sessions
    return held


# ------------------------------------------------------------------ audio and models


def speech(sample_rate: int) -> np.ndarray:
    """SPEECH_TEXT spoken by espeak-ng, float32 at `sample_rate`."""
    from rvc_pipeline.audio import resample
    from rvc_pipeline.testing.audio import espeak_speech

    audio = espeak_speech(SPEECH_TEXT)
    return resample(audio, SPEECH_RATE, sample_rate).astype(np.float32)


def encode_block(block: np.ndarray, sample_format: str) -> bytes:
    """One block in the stream's format (pcm_s16le or f32le)."""
    if sample_format == "f32le":
        return block.astype("<f4").tobytes()
    return (np.clip(block, -1.0, 1.0) * 32767).round().astype("<i2").tobytes()


def session_blocks(audio: np.ndarray, block_samples: int, n_blocks: int, offset: int, sample_format: str) -> list[bytes]:
    """`n_blocks` consecutive blocks of the looped `audio`, starting `offset` samples in."""
    need = offset + block_samples * n_blocks
    looped = np.tile(audio, need // audio.shape[0] + 1)
    return [encode_block(looped[offset + i * block_samples:offset + (i + 1) * block_samples], sample_format)
            for i in range(n_blocks)]


def write_models(root: Path, *, quick: bool, encoder: str) -> Path:
    """The voices and content encoder of the run: --quick thin voices and the demo encoder;
    otherwise the load tests' voices and, with encoder "base", a full-size HuBERT base."""
    if quick:
        from rvc_pipeline.demo import write_demo_encoder
        from rvc_pipeline.testing.voices import standard_config, write_webui_voice

        root.mkdir(parents=True, exist_ok=True)
        config = dataclasses.replace(standard_config("v2", 40000, 1), **THIN_VOICE)
        for seed, name in enumerate(service.VOICES, start=1):
            write_webui_voice(root / f"{name}.pth", "v2", 40000, f0=True, config=config, seed=seed)
        write_demo_encoder(root / "assets" / "hubert_base")
        return root
    models = service.write_test_models(root)
    if encoder == "base":
        from rvc_pipeline.content import HubertConfig
        from rvc_pipeline.testing.hubert import write_fairseq_hubert

        shutil.rmtree(models / "assets" / "hubert_base")
        write_fairseq_hubert(models / "assets" / "hubert_base.pt", small=False, config=HubertConfig())
    return models


def models_line(quick: bool, encoder: str) -> str:
    """What the models are, for the report."""
    if quick:
        return "Models: thin random-weight v2 40 kHz test voices (--quick) and the small demo content encoder"
    enc = ("a random-weight full-size HuBERT base (95 M parameters)" if encoder == "base"
           else "the small untrained demo content encoder (about 25 M parameters)")
    return (f"Models: the load tests' random-weight voices (full-size v2 synthesizers; sessions alternate "
            f"{' and '.join(service.VOICES)}, 40 kHz, pitch-guided) and {enc}")


# ------------------------------------------------------------------ the service


def service_args(models: Path, max_sessions: int) -> Any:
    """The load tests' CPU app (`serve_app.testing.app_args`) on `models`, with room for `max_sessions` streams."""
    return service.app_args(models, limits={"max_stream_sessions": max_sessions + 1, "request_timeout_s": 60})


def replica_counts(args: Any) -> dict[str, str]:
    """Deployment -> its replica count from the app args ("min-max auto" when autoscaling)."""
    counts = {}
    for name, attr in DEPLOYMENTS:
        settings = getattr(args, attr)
        scaling = settings.autoscaling
        counts[name] = (f"{scaling.min_replicas}-{scaling.max_replicas} auto" if scaling is not None
                        else str(settings.num_replicas))
    return counts


def replicas_line(args: Any, running: dict[str, int]) -> str:
    """Replicas per deployment (configured, and running when the sweep began), CPUs and threads."""
    parts = []
    for name, attr in DEPLOYMENTS:
        configured = replica_counts(args)[name]
        live = running.get(name)
        seen = f" ({live} running)" if live is not None and str(live) != configured else ""
        parts.append(f"{name} {configured}{seen} x {getattr(args, attr).num_cpus:g} CPU")
    return (f"Replicas: {', '.join(parts)}; {plural(args.torch_threads, 'torch thread')} per replica; "
            f"every session is held by the Ingress replica")


def running_replicas() -> dict[str, int]:
    """Running replicas per deployment of the local app right now."""
    sampler = service.ReplicaSampler(app_name=service.APP_NAME)
    sampler.sample_once()
    return sampler.samples[-1][1] if sampler.samples else {}


# ------------------------------------------------------------------ sessions


def start_message(voice: str, block_ms: float, method: str) -> dict[str, Any]:
    """The session's first message."""
    return {"type": "start", "voice": voice, "block_ms": block_ms, **STREAM_SETTINGS, "f0_method": method}


async def _recv_json(ws: Any, kind: str) -> dict[str, Any]:
    """The next text message of `kind` (binary messages before it are skipped); errors raise."""
    while True:
        message = await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S)
        if isinstance(message, bytes):
            continue
        body = json.loads(message)
        if body.get("type") == kind:
            return body
        if body.get("type") == "error":
            raise RuntimeError(f"{body.get('error')}: {body.get('detail')}")


async def run_session(url: str, voice: str, audio: np.ndarray, block_ms: float, method: str, n_blocks: int,
                      start_at: float, offset: int) -> SessionResult:
    """One session: connect, start, send `n_blocks` blocks on a realtime clock from `start_at`
    (the event loop's time), time each reply, then read the counters."""
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    trips: list[float] = []
    errors: list[str] = []
    stats: dict[str, Any] = {}
    try:
        async with connect(url, max_size=None, open_timeout=REPLY_TIMEOUT_S) as ws:
            await ws.send(json.dumps(start_message(voice, block_ms, method)))
            settings = (await _recv_json(ws, "ready"))["settings"]
            fmt = settings.get("sample_format", STREAM_SETTINGS["sample_format"])
            blocks = session_blocks(audio, settings["block_samples"], n_blocks, offset, fmt)
            sent: list[float] = []

            async def sender() -> None:
                begin = max(start_at, loop.time())
                for k, block in enumerate(blocks):
                    await asyncio.sleep(max(0.0, begin + k * block_ms / 1000 - loop.time()))
                    sent.append(time.perf_counter())
                    await ws.send(block)

            sending = asyncio.create_task(sender())
            try:
                answered = 0
                while answered < n_blocks:
                    message = await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S)
                    now = time.perf_counter()
                    if isinstance(message, str):
                        body = json.loads(message)
                        if body.get("type") != "error":
                            continue
                        errors.append(f"{body.get('error')}: {str(body.get('detail'))[:120]}")
                    elif len(message) != settings["bytes_per_block"]:
                        errors.append(f"a reply of {len(message)} bytes, not {settings['bytes_per_block']}")
                    elif answered >= SKIP_BLOCKS:
                        trips.append((now - sent[answered]) * 1000)
                    answered += 1
                await sending
            finally:
                sending.cancel()
            await ws.send(json.dumps({"type": "stats"}))
            stats = await _recv_json(ws, "stats")
    except Exception as e:  # the session failed: what it measured so far still counts
        errors.append(f"{type(e).__name__}: {str(e)[:160]}")
    return SessionResult(voice, trips, stats, errors)


async def run_step(url: str, sessions: int, audio: np.ndarray, block_ms: float, method: str,
                   n_blocks: int) -> list[SessionResult]:
    """`sessions` concurrent sessions (voices alternating, clocks staggered over one block)."""
    loop = asyncio.get_running_loop()
    base = loop.time() + START_GRACE_S
    spacing = audio.shape[0] // max(sessions, 1)
    return list(await asyncio.gather(*[
        run_session(url, service.VOICES[i % len(service.VOICES)], audio, block_ms, method, n_blocks,
                    base + i * block_ms / 1000 / sessions, i * spacing)
        for i in range(sessions)
    ]))


def sweep(url: str, counts: Sequence[int], audio: np.ndarray, block_ms: float, method: str, n_blocks: int,
          warmup_blocks: int) -> list[Step]:
    """Warm up, then each N in turn until one does not hold."""
    ws_url = url.replace("http://", "ws://", 1) + "/stream"
    warm = asyncio.run(run_step(ws_url, len(service.VOICES), audio, block_ms, method, warmup_blocks))
    failed = [e for r in warm for e in r.errors]
    if failed:
        raise RuntimeError(f"the warm-up sessions failed: {failed[:3]}")
    steps = []
    for n in counts:
        step = summarize_step(asyncio.run(run_step(ws_url, n, audio, block_ms, method, n_blocks)), block_ms)
        print(f"  {n} sessions: round trip p50 {step.round_trip_p50_ms:.0f} ms, p95 {step.round_trip_p95_ms:.0f} ms; "
              f"processing p95 {step.process_p95_ms:.0f} ms; dropped {step.dropped}, errors {step.errors}"
              + (f" ({'; '.join(step.error_examples)})" if step.errors else ""), flush=True)
        steps.append(step)
        if not step.holds:
            break
    return steps


# ------------------------------------------------------------------ report


def figure_line(steps: Sequence[Step], block_ms: float, cores: int) -> str:
    """The headline: how many sessions the machine holds."""
    held = sessions_held(steps)
    first_over = next((s for s in steps if not s.holds), None)
    if first_over is None:
        limit = f"at least {held} (the most this run tried; none went over)"
    else:
        why = []
        if first_over.over_block:
            why.append(f"p95 processing {first_over.process_p95_ms:.0f} ms > {block_ms:g} ms")
        if first_over.dropped:
            why.append(f"{first_over.dropped} blocks dropped")
        if first_over.errors:
            why.append(f"{plural(first_over.errors, 'error')}")
        limit = f"{held} (at {first_over.sessions}: {', '.join(why)})"
    return (f"**Sessions this {cores}-core machine holds in realtime: {limit}.** A session holds while the p95 "
            f"processing time of a {block_ms:g} ms block stays within {block_ms:g} ms, with no block dropped "
            "and no error.")


def report_lines(steps: Sequence[Step], command: str, extra: Sequence[str], block_ms: float, cores: int) -> list[str]:
    """The markdown section."""
    return [
        f"Concurrent `WS /stream` sessions, each streaming espeak-ng speech at realtime pace (one {block_ms:g} ms "
        "block sent every block length) to a local service; round trip: a block's send to its converted "
        "reply, at the client; processing: the server's push-to-reply time per block ({\"type\": \"stats\"}; "
        "p50 the median session's, p95 the worst session's); dropped: blocks the server answered with "
        "silence because its queue was full. Dropped and silence-gated blocks count in the server's times at "
        "about 0 ms, so where many are dropped the processing p50 falls toward 0 while the round trip grows.",
        "",
        *provenance(command, extra),
        "",
        *table(Step.header(block_ms), [s.row() for s in steps]),
        "",
        figure_line(steps, block_ms, cores),
    ]


# ------------------------------------------------------------------ command line


def parse_counts(text: str) -> list[int]:
    """"1,2,4" -> [1, 2, 4] (ascending, positive)."""
    counts = sorted({int(part) for part in text.split(",") if part.strip()})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"--sessions needs positive session counts, got {text!r}")
    return counts


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=parse_counts, default=None,
                        help=f"session counts to try, ascending (default {DEFAULT_SESSIONS}; --quick {QUICK_SESSIONS})")
    parser.add_argument("--block-ms", type=float, default=DEFAULT_BLOCK_MS, help="block length (ms)")
    parser.add_argument("--method", default=DEFAULT_METHOD, help="f0_method of every session")
    parser.add_argument("--seconds", type=float, default=STEP_SECONDS, help="seconds each session streams per N")
    parser.add_argument("--encoder", choices=("base", "demo"), default="base",
                        help="content encoder: a full-size HuBERT base or the small demo encoder (--quick: demo)")
    parser.add_argument("--quick", action="store_true", help="thin models, 1 and 2 sessions, a few blocks (tests)")
    parser.add_argument("--write", action="store_true", help=f"write the {SECTION} section of --doc")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="markdown file for --write (default docs/realtime.md)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    counts = args.sessions or parse_counts(QUICK_SESSIONS if args.quick else DEFAULT_SESSIONS)
    n_blocks = QUICK_BLOCKS if args.quick else max(SKIP_BLOCKS + 1, round(args.seconds * 1000 / args.block_ms))
    warmup = QUICK_WARMUP_BLOCKS if args.quick else WARMUP_BLOCKS
    encoder = "demo" if args.quick else args.encoder
    cores = os.cpu_count() or 1
    audio = speech(STREAM_SETTINGS["sample_rate"])
    with tempfile.TemporaryDirectory(prefix="rvc_stream_sessions_") as tmp:
        models = write_models(Path(tmp) / "models", quick=args.quick, encoder=encoder)
        app = service_args(models, max(counts))
        with service.local_service(app, num_cpus=cores) as url:
            running = running_replicas()
            print(f"service up; replicas running: {running}", flush=True)
            steps = sweep(url, counts, audio, args.block_ms, args.method, n_blocks, warmup)
    extra = [
        f"Service: the load tests' local app (`serve_app.testing.app_args`) on a {cores}-CPU Ray cluster on the "
        "same machine as the client",
        replicas_line(app, running),
        models_line(args.quick, encoder),
        f"Stream: {STREAM_SETTINGS['sample_rate']} Hz {STREAM_SETTINGS['sample_format']}, block {args.block_ms:g} ms, "
        f"context (extra) {STREAM_SETTINGS['extra_ms']} ms, crossfade {STREAM_SETTINGS['crossfade_ms']} ms, "
        f"silence gate {STREAM_SETTINGS['silence_db']} dBFS, f0 `{args.method}`; {plural(n_blocks, 'block')} per "
        f"session per N after a warm-up of {warmup} blocks per voice; the first {SKIP_BLOCKS} blocks of each "
        "session are left out of the round trips",
    ]
    lines = report_lines(steps, command_line(MODULE, argv), extra, args.block_ms, cores)
    print("\n".join(lines), flush=True)
    if args.write:
        write_section(args.doc, SECTION, lines)
    return 0 if steps else 1


if __name__ == "__main__":
    sys.exit(main())
