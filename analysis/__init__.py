"""What researchers do with stored vectors: linear probes, cohorts, plots."""
