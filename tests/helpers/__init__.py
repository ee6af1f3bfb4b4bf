"""Code the test modules share: fixtures data builders, fake hosts, the Slurm cluster, workflow runners.
Imported as `from helpers.NAME import ...` (tests/ is on the path); no test module imports another."""
