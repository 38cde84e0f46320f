"""rvc_pipeline: faithful RVC (Retrieval-based Voice Conversion) inference in plain PyTorch.

    from rvc_pipeline import load_voice, load_content_encoder, PitchEstimator, convert, decode_audio
    voice = load_voice("models/alice.pth", "models/alice.index")
    encoder = load_content_encoder("models/assets/hubert_base.pt")
    result = convert(decode_audio("in.wav"), voice, encoder, PitchEstimator())
    # or each voice with the encoder its checkpoint names, from models/assets/:
    result = convert(decode_audio("in.wav"), voice, ContentEncoders("models"), PitchEstimator())
    # result.audio: (M,) float32 at result.sample_rate

Never imports a serving framework; `serve_app` builds on these names only.
"""

from .audio import decode_audio, encode_wav, write_audio
from .output_format import OUTPUT_FORMATS, encode_audio
from .content import ContentEncoder, load_content_encoder
from .encoders import ContentEncoders, EncoderRef
from .errors import (
    AssetNotFoundError,
    AudioError,
    AudioTooLongError,
    CheckpointError,
    OptionError,
    OptionParseError,
    RetrievalIndexError,
    RVCError,
    UnsupportedCheckpointError,
    VoiceNotFoundError,
)
from .models_folder import ModelsFolder
from .options import OPTION_SPECS, ChunkingConfig, ConversionOptions, OptionSpec
from .pipeline import (
    ConversionResult,
    Prepared,
    PitchTrack,
    convert,
    estimate_pitch,
    extract_features,
    finish,
    prepare,
    ChunkJob,
    synthesize_chunk,
    synthesize_chunks,
)
from .pitch import DEFAULT_PITCH_METHOD, PITCH_METHODS, PitchEstimator
from .voice import Voice, describe_checkpoint, load_voice

__version__ = "0.1.0"

__all__ = [
    "AssetNotFoundError",
    "AudioError",
    "AudioTooLongError",
    "CheckpointError",
    "ChunkJob",
    "ChunkingConfig",
    "ContentEncoder",
    "ContentEncoders",
    "ConversionOptions",
    "ConversionResult",
    "DEFAULT_PITCH_METHOD",
    "EncoderRef",
    "ModelsFolder",
    "OPTION_SPECS",
    "OUTPUT_FORMATS",
    "OptionError",
    "OptionParseError",
    "OptionSpec",
    "PITCH_METHODS",
    "PitchEstimator",
    "PitchTrack",
    "Prepared",
    "RVCError",
    "RetrievalIndexError",
    "UnsupportedCheckpointError",
    "Voice",
    "VoiceNotFoundError",
    "convert",
    "decode_audio",
    "describe_checkpoint",
    "encode_audio",
    "encode_wav",
    "estimate_pitch",
    "extract_features",
    "finish",
    "load_content_encoder",
    "load_voice",
    "prepare",
    "synthesize_chunk",
    "synthesize_chunks",
    "write_audio",
]
