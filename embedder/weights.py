"""Which encoder runs when none is configured (torch-free, so client-side commands stay light)."""

#: An UNTRAINED placeholder until the bundled open encoder (pretraining issue) ships in the package;
#: every entry point (serve, quickstart, config) reads this one name.
DEFAULT_ENCODER = "random:small"
