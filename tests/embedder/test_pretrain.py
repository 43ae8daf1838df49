"""Pretraining: each loss term on a case whose answer is known, masking, checkpoints, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecg_atlas.embedder import load_encoder
from ecg_atlas.embedder.discover import find_ecgs
from ecg_atlas.embedder.model import PRESETS
from ecg_atlas.embedder.pretrain import PretrainConfig, PretrainingModel, pretrain, span_mask
from ecg_atlas.embedder.pretrain.checkpoints import fairseq_state_dict, load_for_pretraining
from ecg_atlas.embedder.pretrain.data import mask_leads, patient_split
from ecg_atlas.embedder.pretrain.objective import GumbelQuantizer, cmsc_loss, infonce_logits, sample_negatives


def test_span_mask_matches_the_recipe():
    rng = np.random.default_rng(0)
    mask = span_mask(8, 156, mask_prob=0.65, mask_length=10, min_masks=2, rng=rng)
    counts = mask.sum(axis=1)
    assert (counts == counts[0]).all()  # same number of masked steps in every row
    single = np.mean([span_mask(1, 156, mask_prob=0.65, mask_length=10, min_masks=2, rng=rng).mean()
                      for _ in range(300)])
    assert 0.44 < single < 0.54  # ≈ 49 % of a segment with overlapping spans (spec §8)
    # rows are trimmed to the batch's smallest count, so larger batches mask a little less
    assert span_mask(64, 156, mask_prob=0.65, mask_length=10, min_masks=2, rng=rng).mean() < single
    tiny = span_mask(4, 20, mask_prob=0.01, mask_length=3, min_masks=2, rng=rng)
    assert (tiny.sum(axis=1) >= 3).all()  # min_masks spans even when mask_prob asks for none


def test_quantizer_perplexity_and_codes():
    q = GumbelQuantizer(dim=8, num_vars=5, groups=2, vq_dim=6).eval()
    with torch.no_grad():
        q.weight_proj.weight.zero_()
        q.weight_proj.bias.zero_()
    _, perplexity = q(torch.randn(32, 8), tau=2.0)
    assert perplexity.item() == pytest.approx(10.0, rel=1e-5)  # uniform use: all G·V codes
    with torch.no_grad():
        q.weight_proj.bias.copy_(torch.tensor([50.0, 0, 0, 0, 0, 0, 0, 50.0, 0, 0]))
    quantised, perplexity = q(torch.randn(32, 8), tau=2.0)
    assert perplexity.item() == pytest.approx(2.0, abs=1e-3)  # one code per group
    codebooks = q.vars.view(2, 5, 3)
    expected = torch.cat([codebooks[0, 0], codebooks[1, 2]])
    assert torch.allclose(quantised, expected.expand(32, 6))


def test_negatives_come_from_other_steps_of_the_same_segment():
    batch, steps = 3, 7
    y = torch.arange(batch * steps, dtype=torch.float32).view(batch, steps, 1)
    negs = sample_negatives(y, 50, torch.Generator().manual_seed(0))
    assert negs.shape == (50, batch, steps, 1)
    value = negs[..., 0].long()
    row = value // steps
    assert (row == torch.arange(batch).view(1, batch, 1)).all()
    assert (value != y[..., 0].long().unsqueeze(0)).all()  # never the positive itself


def test_infonce_known_value_and_repeated_codes():
    temp, n = 0.1, 4
    y = torch.tensor([[[1.0, 0, 0, 0, 0]]])
    negs = torch.eye(5)[1:1 + n].view(n, 1, 1, 5)  # orthogonal to y
    logits = infonce_logits(y, y, negs, temp)
    assert logits.shape == (1, 1 + n)
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(1, dtype=torch.long))
    assert loss.item() == pytest.approx(-math.log(math.exp(10) / (math.exp(10) + n)), abs=1e-6)
    negs[0] = y  # a distractor identical to the positive is excluded, not counted against it
    assert torch.isinf(infonce_logits(y, y, negs, temp)[0, 1])


def test_cmsc_known_values():
    p, temp = 4, 0.1
    z = torch.eye(p)
    loss = cmsc_loss(z, z, torch.arange(p), temp)
    assert loss.item() == pytest.approx(-math.log(math.exp(10) / (math.exp(10) + p - 1)), abs=1e-6)
    shuffled = cmsc_loss(z, z[[1, 0, 3, 2]], torch.arange(p), temp)
    assert shuffled.item() > 9  # pairs that do not match are penalised hard
    # two rows of one recording: both columns are positives, their log-probabilities averaged
    two = cmsc_loss(z, z, torch.tensor([0, 0, 1, 2]), temp)
    assert two.item() > loss.item()


def test_random_lead_masking_zeroes_whole_leads_at_the_rate():
    x = np.ones((200, 12, 50), dtype=np.float32)
    masked = mask_leads(x, 0.5, np.random.default_rng(0))
    per_lead = masked.max(axis=2)
    assert set(np.unique(masked)) == {0.0, 1.0} and (masked.min(axis=2) == per_lead).all()
    assert 0.45 < (per_lead == 0).mean() < 0.55


def test_patient_split_is_stable_and_about_a_fifth():
    keys = [f"p{i}" for i in range(2000)]
    splits = [patient_split(k) for k in keys]
    assert splits == [patient_split(k) for k in keys]
    assert 0.17 < splits.count("test") / len(keys) < 0.23


def test_total_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    cfg = PretrainConfig(latent_vars=16, final_dim=32)
    model = PretrainingModel(PRESETS["tiny"], cfg).eval()
    x = torch.randn(4, 12, 2500)
    mask = torch.from_numpy(span_mask(4, 156, mask_prob=0.65, mask_length=10, min_masks=2,
                                      rng=np.random.default_rng(0)))
    out = model(x, mask, torch.arange(2), 0, torch.Generator().manual_seed(0))
    expected = (out["infonce"] + 0.1 * out["diversity"] + 10 * out["feature_penalty"] + out["cmsc"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    conv = model.encoder_model.feature_extractor(x)
    assert out["feature_penalty"].item() == pytest.approx(conv.pow(2).mean().item(), rel=1e-5)


def test_written_checkpoint_has_the_reference_layout(tmp_path, parity_dir):
    """Same key names and shapes as the real fairseq-signals tiny pretraining checkpoint."""
    reference = torch.load(parity_dir / "tiny_pretrained.pt", map_location="cpu", weights_only=True)
    model = PretrainingModel(PRESETS["tiny"], PretrainConfig(latent_vars=16, final_dim=32))
    ours = fairseq_state_dict(model)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in reference["model"].items()}


def test_continued_pretraining_keeps_the_published_heads(parity_dir):
    model, optimizer_state, updates, _, _ = load_for_pretraining(parity_dir / "tiny_pretrained.pt",
                                                                 PretrainConfig(), {"dropout": 0.1})
    reference = torch.load(parity_dir / "tiny_pretrained.pt", map_location="cpu", weights_only=True)["model"]
    assert torch.equal(model.quantizer.vars, reference["quantizer.vars"])
    assert torch.equal(model.mask_emb, reference["mask_emb"])
    assert model.cfg.latent_vars == 16 and model.cfg.final_dim == 32
    assert optimizer_state is None and updates == 0  # not our file: fresh optimizer


@pytest.mark.slow
def test_train_save_load_resume(tmp_path, ecg_dir, parity_dir):
    sources = list(find_ecgs([ecg_dir / "cinc_georgia"]))
    result = pretrain(sources, tmp_path, init=str(parity_dir / "tiny_pretrained.pt"), max_updates=4,
                      pairs_per_batch=4, log_every=2, save_every=2, device="cpu")
    assert result.updates == 4 and len(result.history) == 2 and result.curve.stat().st_size > 10_000
    assert all(np.isfinite(r["loss"]) for r in result.history)
    encoder = load_encoder(result.checkpoint)  # readable by the normal loader
    assert encoder.dim == 64
    before = load_encoder(parity_dir / "tiny_pretrained.pt").model.state_dict()
    after = encoder.model.state_dict()
    assert not torch.equal(before["encoder.layers.0.fc1.weight"], after["encoder.layers.0.fc1.weight"])
    resumed = pretrain(sources, tmp_path, resume=True, max_updates=6, pairs_per_batch=4, log_every=2,
                       device="cpu")
    assert resumed.updates == 6 and len(resumed.history) == 3  # picked up at update 4

    from ecg_atlas.embedder.pretrain.export import export_release

    release = tmp_path / "release.pt"
    digest = export_release(resumed.checkpoint, release, name="unit-v0", notes={"recipe": "test"})
    payload = torch.load(release, map_location="cpu", weights_only=True)
    assert payload["last_optimizer_state"] is None and "quantizer.vars" in payload["model"]  # heads kept
    assert payload["extra_state"]["ecg_atlas_release"] == {"name": "unit-v0", "num_updates": 6, "logged_updates": 3,
                                                          "recipe": "test"}
    assert release.stat().st_size < resumed.checkpoint.stat().st_size / 2  # no Adam moments
    released = load_encoder(release, expected_sha256=digest)
    np.testing.assert_array_equal(released.embed(np.zeros((1, 12, 2500), np.float32) + 0.1),
                                  load_encoder(resumed.checkpoint).embed(np.zeros((1, 12, 2500), np.float32) + 0.1))


def test_pairs_are_adjacent_windows_of_one_record(ecg_dir):
    from ecg_atlas.embedder import preprocess, read_ecg
    from ecg_atlas.embedder.pretrain.data import PairStream

    sources = list(find_ecgs([ecg_dir / "cinc_ptb" / "S0001.hea"]))  # 38.4 s: 7 windows, 3 pairs
    record = np.concatenate(list(preprocess(read_ecg(ecg_dir / "cinc_ptb" / "S0001"))), axis=-1)
    for random_offset in (False, True):
        stream = PairStream(sources, random_offset=random_offset).pairs()
        pairs = [next(stream) for _ in range(3)]
        for first, second, index in pairs:
            assert index == 0  # the one source's index: CMSC groups its pairs as one record
            joined = np.concatenate([first, second], axis=-1)
            starts = [s for s in range(0, record.shape[-1] - 4999)
                      if np.array_equal(record[:, s:s + 5000], joined)] if random_offset else \
                [s for s in range(0, record.shape[-1] - 4999, 5000) if np.array_equal(record[:, s:s + 5000], joined)]
            assert len(starts) == 1  # two adjacent 5-s windows of this record


def test_batches_carry_record_ids_and_cap_pairs_per_record(ecg_dir):
    from ecg_atlas.embedder.pretrain.data import PairStream

    long_record = find_ecgs([ecg_dir / "cinc_ptb" / "S0001.hea"])  # 3 pairs
    short = find_ecgs([ecg_dir / "cinc_ptbxl" / "HR00001.hea"])  # 10 s: 1 pair
    sources = list(long_record) + list(short)
    stream = PairStream(sources, max_pairs_per_record=1, shuffle_buffer=1)
    first_pass = [next(stream.pairs()) for _ in range(1)]
    assert first_pass[0][2] in (0, 1)
    pairs = stream.pairs()
    indices = [next(pairs)[2] for _ in range(20)]
    assert sorted(set(indices)) == [0, 1] and abs(indices.count(0) - indices.count(1)) <= 1  # capped: 1 each per pass
    batch, records = next(PairStream(sources, shuffle_buffer=4).batches(3, mask_leads_prob=0.0))
    assert batch.shape == (6, 12, 2500) and batch.dtype == np.float32
    assert records.shape == (3,) and set(records.tolist()) <= {0, 1}


def test_an_update_reads_nothing_back_from_the_device():
    """No .item()/.any() or boolean-mask gather in the forward and backward of an update (each is a
    GPU sync), and the gathers by host-side positions give what the boolean mask gives."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ecg_atlas.embedder.pretrain.objective import masked_positions

    class Syncs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.found = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            boolean_index = name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()) if i is not None)
            if name in ("_local_scalar_dense", "nonzero", "is_nonzero", "masked_select") or boolean_index:
                self.found.append(name)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = PretrainingModel(PRESETS["tiny"], PretrainConfig(latent_vars=16, final_dim=32)).train()
    x = torch.randn(4, 12, 2500)
    mask_np = span_mask(4, 156, mask_prob=0.65, mask_length=10, min_masks=2, rng=np.random.default_rng(0))
    mask, positions = torch.from_numpy(mask_np), torch.from_numpy(masked_positions(mask_np))
    assert torch.equal(positions, mask.nonzero()[:, 1].view(4, -1))
    watch = Syncs()
    with watch:
        out = model(x, mask, torch.arange(2), 0, torch.Generator().manual_seed(0), positions=positions)
        out["loss"].backward()
    assert watch.found == []
    model.eval()
    with torch.no_grad():
        a = model(x, mask, torch.arange(2), 0, torch.Generator().manual_seed(1), positions=positions)
        b = model(x, mask, torch.arange(2), 0, torch.Generator().manual_seed(1))  # positions found from the mask
    assert a["loss"].item() == b["loss"].item()
