"""A third, minimal IES defined only in the test suite: proof that a new IES is one package
plus one configuration entry (see `docs/adding-an-ies.md`)."""
