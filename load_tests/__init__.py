"""Load test (Locust) and reliability scenarios; run from the repository root:

    python -m load_tests.run_load_test
    python -m load_tests.reliability

The local service they start comes from `serve_app.testing`. The locustfile imports only
installed packages and its sibling `clips`/`load_plan` modules, because Locust loads it
with its own folder on sys.path rather than as part of this package.
"""
