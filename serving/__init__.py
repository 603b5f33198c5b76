"""StreamFlow serving: FastAPI app over the champion model and the online store."""

# Before anything imports Feast: `import feast` (its metrics module, Feast 0.6x) sets
# PROMETHEUS_MULTIPROC_DIR when it is unset, and prometheus_client, which picks its value class
# once at its own import, would then keep every metric of this single-process server in mmap'd
# files under a temp dir (behind a lock and a pid check per update) instead of in memory.
import prometheus_client  # noqa: F401
