"""Adapters to what the domain runs against: snapshot tables, Feast's stores, the MLflow registry,
the ONNX model, alert delivery, the pipeline lock."""
