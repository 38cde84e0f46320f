"""Write the reference tables that come from the code's one schema:

- README.md, between the `options` markers: every conversion option (rvc_pipeline.options.OPTION_SPECS),
- docs/configuration.md: every serve_config.yaml argument (serve_app.config.AppArgs).

    python scripts/write_reference_docs.py           # rewrite both
    python scripts/write_reference_docs.py --check   # exit 1 if either is out of date

tests/test_reference_docs.py runs the check, so a changed default or range cannot drift from the docs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rvc_pipeline.options import options_markdown
from serve_app.config import settings_markdown

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
BEGIN, END = "<!-- options:begin (scripts/write_reference_docs.py) -->", "<!-- options:end -->"

CONFIGURATION_HEAD = """# Service configuration

Every argument `serve_config.yaml` (and the KubeRay manifest's `serveConfigV2`) can set under
`args:`, with its type, default and meaning. Written by `python scripts/write_reference_docs.py`
from `serve_app/config.py`; the YAML files state only what they change.

"""


def readme_text(current: str) -> str:
    """README.md with the options table between the markers replaced."""
    head, found, rest = current.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"README.md lacks the markers {BEGIN} ... {END}")
    return f"{head}{BEGIN}\n{options_markdown()}{END}{tail}"


def configuration_text() -> str:
    return CONFIGURATION_HEAD + settings_markdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the files are up to date")
    args = parser.parse_args(argv)
    wanted = {README: readme_text(README.read_text()), CONFIGURATION: configuration_text()}
    stale = [path for path, text in wanted.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(REPO)} is out of date: run python scripts/write_reference_docs.py")
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
