"""Random-weight models in the real on-disk formats, and test audio.

Shared by the test suite, the benchmarks, the load tests and `rvc_pipeline.demo` (the
untrained demo voice and encoder are written by these same writers):

- `voices`: RVC/Applio voice checkpoints (every flavour) and FAISS indexes.
- `hubert`: HuBERT content encoders, fairseq `.pt` and transformers folders.
- `rmvpe`: a random-weight `rmvpe.pt`.
- `audio`: tones, a voiced test clip, espeak-ng speech and WAV bytes.
- `files`: atomic writes.

Nothing here imports pytest: a missing tool raises an error (e.g. `AssetNotFoundError`
when espeak-ng is absent), and the tests decide to skip.
"""
