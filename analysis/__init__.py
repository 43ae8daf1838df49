"""What researchers do with stored vectors: linear probes, cohorts, plots.

Layers (each usable alone):

* arrays — ``splits`` (patient-disjoint train/val/test, split columns, k-fold by patient),
  ``metrics`` (AUROC / AUPRC, patient-bootstrap CIs), ``probe`` (``train_probe``,
  ``cross_validate_probe``, ``fit_probe``, ``LinearProbe``), ``cohort`` (``run_cohort``: PCA →
  UMAP → HDBSCAN with a ``progress(stage, percent)`` callback), ``enrichment`` (Fisher + BH),
  ``ecg_paper`` (the one 12-lead page layout, shared with the web atlas, and every ECG drawn to
  PNG: pages, saliency, exemplar grids, neighbour panels), ``plots`` (the cohort map),
  ``figures`` (headless matplotlib, atomic PNG writes);
* store — ``targets`` (labels from metadata columns), ``store_io`` (cohorts from filters; probes and
  cluster runs kept in the store; the finetuned head as the built-in ``ecgfm-head`` probe);
* verbs — ``tasks`` (``train_stored_probe``, ``evaluate_stored_probe``, ``cluster_stored``,
  ``explain_ecg``): what ``ecg-atlas probe|cluster|explain`` run and the RPCs will call.
"""
