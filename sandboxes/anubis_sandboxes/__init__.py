"""Stand-ins for everything outside Anubis, for the demo, the tests and the benchmarks.

Not production code, and not installed in the production image: the IES sandboxes (one module
per integration type, named after it, e.g. `kroton.py` for integrations of type `kroton`), the
kit they share (`server.py`), a Slack-compatible webhook sink and the demo world with its order
generator (`demo/`). `anubis-sandbox --help` serves them.
"""
