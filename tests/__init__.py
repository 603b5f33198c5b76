"""StreamFlow tests: they mirror the packages and build small real stores in tmp dirs."""
