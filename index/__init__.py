"""Vectors and metadata at rest: DuckDB store, FAISS index, structured filters."""
