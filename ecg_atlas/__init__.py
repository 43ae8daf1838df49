"""ECG Atlas: ECG-FM embeddings, vector search, probes and cohorts behind one gRPC service."""

__version__ = "0.1.0"
