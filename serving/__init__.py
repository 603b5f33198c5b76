"""StreamFlow serving: FastAPI app over the champion model and the online store."""

# Before anything imports Feast: `import feast` (its metrics module, Feast 0.6x) sets
# PROMETHEUS_MULTIPROC_DIR when it is unset, and prometheus_client, which picks its value class
# once at its own import, would then keep every metric of this single-process server in mmap'd
# files under /tmp, with a lock and a getpid per increment (a tenth of a /predict's CPU).
import prometheus_client  # noqa: F401
