"""Features: Feast's registry, the online store's month and the training dataset."""
