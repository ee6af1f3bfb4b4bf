"""The signals torchrun hands on to its workers (`--signals-to-handle`): its default list plus SIGUSR1, Slurm's
time-limit warning, which would otherwise kill torchrun and with it its workers (`lifetime.die_with_launcher`)
before they save. Free of torch, so the workflow's launcher can import it."""
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
