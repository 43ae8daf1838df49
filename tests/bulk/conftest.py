"""One local Ray cluster (2 CPUs) for the bulk tests, and the sample corpus embedded once on it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray  # the ecg-atlas[ray] extra: `make test` installs it

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def corpus_shards(ray_cluster, ecg_dir, tiny_checkpoint, tmp_path_factory):
    """The whole sample corpus through `run_job`: (shard folder, its summary, the inputs)."""
    from ecg_atlas.bulk.ray_job import JobOptions, inputs_from_paths, run_job

    out = tmp_path_factory.mktemp("shards")
    inputs = inputs_from_paths([ecg_dir])
    summary = run_job(inputs, out, JobOptions(checkpoint=str(tiny_checkpoint), shard_size=50), progress=False)
    return out, summary, inputs
