"""Client-side ingest: what runs beside the user's files on the way into a store.

* ``manifest`` — metadata CSVs and manifests (CSV or Parquet): one reader and one typing rule for
  `ecg-atlas ingest --metadata` and `ecg-atlas embed --engine ray --manifest`;
* ``sources`` — the source URI an ECG is stored with and the header fields taken from its file;
* ``pseudonym`` — patient ids found in files become patient keys only as keyed pseudonyms;
* ``stream`` — ``ingest_files``: ECG files read here and streamed to the server's Ingest RPC.

The CLI (``ecg_atlas.cli.ingest``) and the Ray job (``ecg_atlas.bulk.ray_job``) use these; nothing
here prints or imports torch.
"""
