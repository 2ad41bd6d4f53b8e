"""Load and latency benchmark of the call server beside a plain aiortc relay.

Run it with `tests/run-in-netns .venv/bin/python -m bench`; see bench/README.md.
"""
