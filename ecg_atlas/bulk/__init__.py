"""Bulk work past one process: embedding on Ray Data into Parquet shards, and their import.

``shards``: the shard file format (one Parquet file per fixed slice of the input, written
atomically) and how a store reads it back. ``ray_job``: the Ray Data job that writes them
(``ecg-atlas embed --engine ray``; needs the ``ecg-atlas[ray]`` extra). Importing shards into a
store is ``Store.import_shards`` (``ecg-atlas import``, or the ``Import`` RPC).
"""
