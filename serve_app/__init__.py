"""serve_app: the Ray Serve deployment graph of the RVC service.

`serve run serve_config.yaml` builds it through `serve_app.app:build_app`. Builds on
`rvc_pipeline`'s public API; nothing runs at import.
"""
