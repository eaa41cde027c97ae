"""Coverage-guided fuzzing (atheris) of the parsers the hostile agent and the issuer reach.

``oracles`` holds the pure invariant checks (also used by tests/fuzz), ``targets`` names the
fuzz targets with their seed corpus and dictionary, ``run`` drives libFuzzer in a child.
"""
