"""Facts of the RVC formats that several modules rely on, each defined once here.

Modules keep their old names for these as aliases (e.g. `pipeline.WINDOW`,
`pitch.base.HOP_LENGTH`, `retrieval.VERSION_DIMS`), so either spelling works.
"""

from __future__ import annotations

#: Content-encoder and pitch input rate: HuBERT and every F0 extractor run on 16 kHz audio.
SAMPLE_RATE = 16000
#: Samples per 10 ms pitch frame at 16 kHz (RVC `self.window = 160`, the extractors' hop).
WINDOW = 160
#: Frames per second of pitch and synthesis (10 ms frames; a voice's hop is sample_rate / 100).
FRAMES_PER_SECOND = SAMPLE_RATE // WINDOW
#: Content-feature width per model version: v1 256 (HuBERT final_proj), v2 768 (layer 12).
CONTENT_DIMS: dict[str, int] = {"v1": 256, "v2": 768}

#: Every pitch method name (the `f0_method` option); rmvpe needs the user's weights.
PITCH_METHODS: tuple[str, ...] = ("pm", "harvest", "dio", "crepe", "crepe-tiny", "rmvpe", "fcpe")
#: The signal-processing methods: no model file and no torch model to load (Praat and WORLD).
CLASSIC_PITCH_METHODS: tuple[str, ...] = ("pm", "harvest", "dio")

#: The 360-bin pitch scale shared by CREPE and RMVPE: bin i is 20 * i + CENTS_OFFSET cents above 10 Hz.
PITCH_CLASSES = 360
CENTS_PER_BIN = 20.0
CENTS_OFFSET = 1997.3794084376191
