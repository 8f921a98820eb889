"""The decision API (`POST /v1/decide`): Feast online features + the hot-reloadable policy, failing open.

`create_app(settings, ...)` builds the ASGI app (`freqcap serve` runs it with uvicorn); `live.serve_in_thread`
runs it on loopback for the demo, tests and benchmarks.
"""
