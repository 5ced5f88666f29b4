"""`pose`: the host-side launcher. Never imports torch."""
