"""Exit codes with a meaning beyond pass/fail, shared by the workloads and the launcher
(torch-free, so the launcher may import it)."""

# Training stopped on SIGTERM/SIGUSR1 after writing a step checkpoint: run it again to resume
# (the Slurm runner requeues the job). EX_TEMPFAIL of sysexits.h: "temporary failure; the user
# is invited to retry". Under torchrun, a torchrun that was itself signalled exits 128 + N.
PREEMPTED = 75
