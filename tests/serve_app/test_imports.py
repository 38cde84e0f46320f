"""The dependency direction: rvc_pipeline never imports the serving stack."""

from __future__ import annotations

import subprocess
import sys


def test_rvc_pipeline_does_not_import_serving_frameworks():
    code = (
        "import sys, rvc_pipeline, rvc_pipeline.cli, rvc_pipeline.demo\n"
        "bad = [m for m in ('ray', 'fastapi', 'pydantic', 'starlette', 'serve_app') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
