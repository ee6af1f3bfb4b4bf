"""Infrastructure shared by every stage: atomic file writes, downloads, provenance records and their audit, the
Slurm launcher, and the lifetime of processes."""
