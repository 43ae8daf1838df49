"""Fine-tuning an encoder on a user's labels (`ecg-atlas finetune`).

``types`` holds the one value the stages hand each other (``FinetuneData``); ``sources`` builds it
from ECG files + a manifest or from a store; ``train`` runs the (optionally distributed) training
loop; ``evaluate`` judges the result beside the frozen-probe and random-init baselines;
``report`` writes ``report.json`` and ``MODEL_CARD.md``. The fine-tuned model file itself is
written and read by ``ecg_atlas.embedder.finetuned`` so that every ``--checkpoint`` loads it.
"""
