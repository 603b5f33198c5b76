"""StreamFlow serving: FastAPI app over the champion model and the online store."""
