"""Model monitoring: batch scores, feature drift and model decay, and their alerts."""
