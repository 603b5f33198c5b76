"""StreamFlow serving: FastAPI app over the Production model and the online store."""
