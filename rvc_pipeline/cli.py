"""`rvc`: convert files or folders, list the voices of a models folder, inspect a checkpoint.

    rvc convert INPUT OUTPUT --voice NAME_OR_PATH [options]
    rvc voices [--models-dir DIR]
    rvc info FILE.pth

Every input is checked before any model is loaded. Exit codes: 0 success, 1 some files
failed to convert, 2 bad arguments or inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from .catalog import VoiceCatalog
from .encoders import EncoderRef
from .errors import OptionError, RVCError
from .models_folder import VoiceEntry
from .options import OPTION_SPECS, ConversionOptions

EXIT_FAILED_FILES = 1
EXIT_USAGE = 2


def fatal(message: str) -> NoReturn:
    """Print an error to stderr and exit with the usage code."""
    print(f"rvc: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per conversion option, from the one schema (`OPTION_SPECS`); values are parsed
    by `ConversionOptions.from_mapping`, exactly as the HTTP form's are."""
    group = parser.add_argument_group("conversion options")
    for spec in OPTION_SPECS:
        group.add_argument(spec.flag, dest=spec.name, default=None, metavar=spec.type_name.upper(),
                           help=spec.describe())


def get_parser() -> argparse.ArgumentParser:
    """The argument parser of the `rvc` command."""
    parser = argparse.ArgumentParser(prog="rvc", description="Retrieval-based Voice Conversion inference")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and how long stages take")
    sub = parser.add_subparsers(dest="command", required=True)

    conv = sub.add_parser("convert", help="convert an audio file, or every audio file in a folder")
    conv.add_argument("input", type=Path, help="an audio file (WAV/FLAC/OGG/MP3) or a folder of them")
    conv.add_argument("output", type=Path, help="output file (format from its suffix) or folder (WAV files)")
    conv.add_argument("--voice", required=True, help="voice name in the models folder, or a path to a .pth")
    conv.add_argument("--index", type=Path, help="retrieval .index (default: the voice's own, if any)")
    conv.add_argument("--encoder", default=None, metavar="NAME_OR_PATH",
                      help="content encoder for this voice: a name in the models folder's assets/ (<name>.pt or "
                           "<name>/) or a path (default: the one the voice's file names, else contentvec)")
    _add_option_arguments(conv)
    conv.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    conv.add_argument(
        "--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="fp32 is exact; bf16 (CPU) / fp16 (CUDA) are fast"
    )
    conv.add_argument("--max-duration", type=float, default=None, help="refuse inputs longer than this many seconds")
    _add_models_arguments(conv)

    voices = sub.add_parser("voices", help="list the voices in a models folder")
    _add_models_arguments(voices)
    voices.add_argument("--json", action="store_true", help="print JSON instead of a table")

    info = sub.add_parser("info", help="print a voice checkpoint's metadata")
    info.add_argument("file", type=Path)

    stream = sub.add_parser("stream", help="stream an audio file through a running service's /stream, "
                                           "write the output and print latency figures")
    stream.add_argument("input", type=Path, help="an audio file (WAV/FLAC/OGG/MP3)")
    stream.add_argument("output", type=Path, help="output file (format from its suffix)")
    stream.add_argument("--url", default="ws://127.0.0.1:8003/stream", help="the service's /stream WebSocket URL")
    stream.add_argument("--voice", required=True, help="a voice the service lists at GET /voices")
    stream.add_argument("--fast", action="store_true", help="send as fast as the server answers, not at realtime pace")
    stream.add_argument("--sample-rate", type=int, default=48000, help="the stream's rate in Hz (multiple of 100)")
    stream.add_argument("--sample-format", choices=("pcm_s16le", "f32le"), default="pcm_s16le")
    stream.add_argument("--block-ms", type=float, default=250, help="block length (latency and cost per block)")
    stream.add_argument("--extra-ms", type=float, default=1000, help="left context the models see per block")
    stream.add_argument("--crossfade-ms", type=float, default=50, help="crossfade between blocks")
    stream.add_argument("--silence-db", type=float, default=-60, help="blocks quieter than this skip inference")
    stream.add_argument("--api-key", default=None, help="API key (default: $RVC_API_KEY)")
    stream.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_option_arguments(stream)
    return parser


def _add_models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=None, help="models folder (default: $RVC_MODELS_DIR or ./models)")
    parser.add_argument("--content-encoder", type=Path, default=None,
                        help="the contentvec encoder (hubert_base.pt or a transformers folder), for voices that name "
                             "no other; default <models>/assets/hubert_base.pt")
    parser.add_argument("--rmvpe", type=Path, default=None, help="rmvpe.pt (enables --f0-method rmvpe)")
    parser.add_argument("--no-demo", action="store_true",
                        help="never fall back to the untrained demo voice/encoder (the service's demo_fallback: false)")


def _catalog(args: argparse.Namespace) -> VoiceCatalog:
    """The voices and encoder the service would use with the same folder: the models folder, with
    the labelled untrained demo standing in where it has no voices or encoder. Notices go to stderr."""
    catalog = VoiceCatalog(args.models_dir, content_encoder=args.content_encoder, rmvpe=args.rmvpe,
                           demo_fallback=not args.no_demo)
    for notice in catalog.notices(labelled=False):
        print(f"rvc: {notice}", file=sys.stderr)
    return catalog


def _resolve_voice(catalog: VoiceCatalog, name_or_path: str) -> VoiceEntry:
    """A voice name (as the service resolves it) or a path to a .pth file or voice folder."""
    text = str(name_or_path)
    if "/" in text or "\\" in text or text.lower().endswith(".pth"):
        return catalog.folder.resolve_voice_argument(text)
    return catalog.find_voice(text)


def _voice_encoder(catalog: VoiceCatalog, voice_name: str, metadata: dict, choice: str | None) -> EncoderRef:
    """The encoder to convert with: --encoder (a name in the models folder, or a path), else the
    one the voice's checkpoint names (`embedder_model`), as the service picks it."""
    if choice is None:
        return catalog.encoder_for_voice(voice_name, metadata)
    if "/" in choice or "\\" in choice or choice.lower().endswith(".pt"):
        path = Path(choice).expanduser().absolute()
        if not (path.is_file() or (path / "config.json").is_file()):
            return EncoderRef(path.name, None, f"--encoder {choice}: no such file (or folder with config.json)")
        return EncoderRef(path.name, path)
    return catalog.find_encoder(choice)


def _option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The conversion options from the flags; --f0-curve names a CSV file, whose text is the value."""
    values = {spec.name: getattr(args, spec.name) for spec in OPTION_SPECS}
    if values.get("f0_curve"):
        path = Path(values["f0_curve"])
        try:
            values["f0_curve"] = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise OptionError(f"--f0-curve {path}: cannot read it as UTF-8 text ({type(e).__name__})") from None
    return values


def _collect_jobs(source: Path, target: Path, format_name: str | None = None) -> list[tuple[Path, Path]]:
    """(input, output) pairs. Outputs in a folder get the suffix of `format_name` (.wav by
    default); a named output file must have a suffix that agrees with it."""
    from .audio import SUPPORTED_SUFFIXES
    from .output_format import OUTPUT_FORMATS

    suffix = OUTPUT_FORMATS[format_name].suffix if format_name in OUTPUT_FORMATS else ".wav"
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not files:
            fatal(f"no audio files ({', '.join(sorted(SUPPORTED_SUFFIXES))}) in folder {source}")
        if target.exists() and not target.is_dir():
            fatal(f"input is a folder, so the output must be a folder too, but {target} is a file")
        return [(f, target / f"{f.stem}{suffix}") for f in files]
    if not source.is_file():
        fatal(f"input {source} does not exist")
    if target.is_dir():
        return [(source, target / f"{source.stem}{suffix}")]
    if target.suffix.lower() not in SUPPORTED_SUFFIXES:
        fatal(f"cannot tell the output format from {target.name!r}; use one of {', '.join(sorted(SUPPORTED_SUFFIXES))}")
    if format_name is not None and OUTPUT_FORMATS[format_name].suffix != target.suffix.lower():
        fatal(f"--output-format {format_name} writes {OUTPUT_FORMATS[format_name].suffix} files, but the output is "
              f"{target.name!r}; name it *{OUTPUT_FORMATS[format_name].suffix} or drop --output-format")
    return [(source, target)]


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert one file or a folder; returns the exit code."""
    try:
        options = ConversionOptions.from_mapping(_option_values(args))
        catalog = _catalog(args)
        voice_entry = _resolve_voice(catalog, args.voice)
        rmvpe_path = catalog.rmvpe_path
        if args.encoder is not None:  # checked before any model loads; the voice's own is known once it has
            _voice_encoder(catalog, voice_entry.name, {}, args.encoder).require()
    except RVCError as e:
        fatal(str(e))
    if args.index is not None and not args.index.is_file():
        fatal(f"index {args.index} does not exist")
    if options.f0_method == "rmvpe" and rmvpe_path is None:
        fatal(f"--f0-method rmvpe needs rmvpe.pt in {catalog.folder.assets_dir} (or --rmvpe / RVC_RMVPE)")
    jobs = _collect_jobs(args.input, args.output, options.output_format if args.output_format is not None else None)

    from tqdm import tqdm

    from . import audio as audio_io
    from .content import load_content_encoder
    from .device import resolve_device, resolve_dtype
    from .pipeline import convert
    from .pitch import PitchEstimator
    from .voice import load_voice

    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.precision, device)
        voice = load_voice(
            voice_entry.pth_path, args.index or voice_entry.index_path, name=voice_entry.name, device=device, dtype=dtype
        )
        voice.check_speaker(options.speaker_id)
        encoder_path = _voice_encoder(catalog, voice.name, voice.metadata, args.encoder).require()
        encoder = load_content_encoder(encoder_path, device=device, dtype=dtype)
        estimator = PitchEstimator(device=device, rmvpe_path=rmvpe_path)
    except RVCError as e:
        fatal(str(e))

    failures = 0
    progress = tqdm(jobs, unit="file", disable=len(jobs) == 1 and not args.verbose)
    for source, target in progress:
        progress.set_postfix_str(source.name)
        try:
            wav = audio_io.decode_audio(source, max_duration_s=args.max_duration)
            result = convert(wav, voice, encoder, estimator, options)
            target.parent.mkdir(parents=True, exist_ok=True)
            audio_io.write_audio(target, result.audio, result.sample_rate, options.output_format
                                 if args.output_format is not None else None)
        except RVCError as e:
            failures += 1
            tqdm.write(f"rvc: {source}: {e}", file=sys.stderr)
            continue
        logging.getLogger("rvc").info(
            "%s -> %s (%s)%s", source, target, ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()),
            f"; auto_key chose {result.auto_key:+d} semitones" if options.auto_key != "off" else "",
        )
    if failures:
        print(f"rvc: {failures} of {len(jobs)} files failed", file=sys.stderr)
        return EXIT_FAILED_FILES
    return 0


def cmd_voices(args: argparse.Namespace) -> int:
    """List the voices of a models folder."""
    from .voice import describe_checkpoint

    catalog = _catalog(args)
    rows = []
    for entry in catalog.list_voices():
        try:
            info = describe_checkpoint(entry.pth_path)
        except RVCError as e:
            info = {"error": str(e)}
        rows.append(
            {
                "name": entry.name,
                "version": info.get("version"),
                "sample_rate": info.get("sample_rate"),
                "f0": info.get("f0"),
                "speakers": info.get("n_speakers"),
                "index": entry.index_path is not None,
                **_encoder_row(catalog, entry.name, info),
                "size_mb": round(entry.size_bytes / 1e6, 1),
                "demo": entry.demo,
                **({"error": info["error"]} if "error" in info else {}),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no voices in {catalog.root}: put <name>.pth (optionally with <name>.index) there, "
              "or drop --no-demo to try the untrained demo voice")
        return 0
    print(f"{'name':24} {'ver':4} {'rate':>6} {'f0':3} {'spk':>4} {'index':5} {'MB':>7} encoder")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:24} unreadable: {r['error']}")
            continue
        print(
            f"{r['name']:24} {r['version']:4} {r['sample_rate']:>6} {'yes' if r['f0'] else 'no':3} "
            f"{r['speakers']:>4} {'yes' if r['index'] else 'no':5} {r['size_mb']:>7} "
            f"{r['encoder']}{'' if r['encoder_present'] else ' (MISSING)'}"
            + ("  UNTRAINED DEMO: output is noise" if r["demo"] else "")
        )
    return 0


def _encoder_row(catalog: VoiceCatalog, voice_name: str, info: dict) -> dict:
    """The voice's content encoder and whether its files are there (nothing is loaded)."""
    if "error" in info:
        return {}
    ref = catalog.encoder_for_voice(voice_name, info.get("metadata"))
    return {"encoder": ref.name, "encoder_present": ref.present,
            **({"encoder_problem": ref.problem} if ref.problem else {})}


def cmd_info(args: argparse.Namespace) -> int:
    """Print a checkpoint's metadata as JSON."""
    from .voice import describe_checkpoint

    if not args.file.is_file():
        fatal(f"{args.file} does not exist")
    try:
        info = describe_checkpoint(args.file)
    except RVCError as e:
        fatal(str(e))
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    """Stream one file through a running service (rvc_pipeline.stream_client); returns the exit code."""
    import os

    from .stream_client import StreamError, stream_file

    if not args.input.is_file():
        fatal(f"input {args.input} does not exist")
    try:
        options = {k: v for k, v in _option_values(args).items() if v is not None}
        ConversionOptions.from_mapping(options)  # bad values are refused here, before connecting
    except RVCError as e:
        fatal(str(e))
    try:
        report = stream_file(args.input, args.output, args.url, args.voice, fast=args.fast,
                             sample_rate=args.sample_rate, sample_format=args.sample_format, block_ms=args.block_ms,
                             extra_ms=args.extra_ms, crossfade_ms=args.crossfade_ms, silence_db=args.silence_db,
                             api_key=args.api_key or os.environ.get("RVC_API_KEY"), **options)
    except StreamError as e:
        print(f"rvc: the service refused the stream: {e}", file=sys.stderr)
        return EXIT_FAILED_FILES
    except OSError as e:
        print(f"rvc: cannot stream to {args.url}: {e}", file=sys.stderr)
        return EXIT_FAILED_FILES
    if args.json:
        print(json.dumps({"blocks": report.blocks, "block_ms": report.block_ms, "latency_ms": report.latency_ms,
                          "round_trip_ms": report.round_trip_ms, "server": report.server_stats,
                          "output_samples": report.output_samples, "sample_rate": report.sample_rate}))
    else:
        print(f"{args.output}: {report.summary()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rvc` command."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"convert": cmd_convert, "voices": cmd_voices, "info": cmd_info, "stream": cmd_stream}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
