"""batch_getter: one data_and_label_getter handing each batch's indices to its receivers."""

import pytest
import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.trainers import MetricLossOnly

from noisy_pml.trainers import batch_getter


class Receiver:
    def __init__(self):
        self.seen = []

    def set_batch_info(self, indices=None, instance_ids=None, confidences=None):
        self.seen.append(indices)


class LegacyReceiver:
    def __init__(self):
        self.seen = []

    def set_batch_info(self, sample_indices=None, instance_ids=None):
        self.seen.append(sample_indices)


def _batch(b=4, two=False):
    x = torch.randn(b, 3)
    labels, index = torch.arange(b) % 2, torch.arange(10, 10 + b)
    return ((x, x + 1, labels, index) if two else (x, labels, index)), x, labels, index


def test_single_layout_returns_data_and_labels_and_hands_indices_to_every_receiver():
    a, b = Receiver(), LegacyReceiver()
    batch, x, labels, index = _batch()
    data, lab = batch_getter(a, b)(batch)
    assert data is x and lab is labels
    assert torch.equal(a.seen[0], index) and torch.equal(b.seen[0], index)


def test_two_stream_and_concat_layouts():
    r = Receiver()
    batch, x, labels, index = _batch(two=True)
    v1, v2, lab = batch_getter(r, layout="two_stream")(batch)
    assert torch.equal(v1, x) and torch.equal(v2, x + 1) and lab is labels
    data, lab2 = batch_getter(r, layout="concat")(batch)
    assert torch.equal(data, torch.cat([x, x + 1])) and torch.equal(lab2, labels.repeat(2))
    assert all(torch.equal(s, index) for s in r.seen)  # B indices, not 2B


def test_wrong_batches_and_receivers_are_clear_errors():
    with pytest.raises(ValueError, match="layout must be one of"):
        batch_getter(layout="stacked")
    with pytest.raises(TypeError, match="no set_batch_info"):
        batch_getter(object())
    batch, *_ = _batch()
    with pytest.raises(ValueError, match=r"expects \(view_1, view_2, label, index\)"):
        batch_getter(layout="concat")(batch)
    with pytest.raises(ValueError, match="return_index=True"):
        batch_getter()(batch[:2])
    with pytest.raises(ValueError, match="one index per label"):
        batch_getter()((batch[0], batch[1], torch.arange(3)))


class RecordingLoss(losses.ContrastiveLoss):
    def __init__(self):
        super().__init__()
        self.indices, self.seen = None, []

    def set_batch_info(self, indices=None):
        self.indices = indices

    def forward(self, embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None):
        self.seen.append((self.indices, labels.clone()))
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)


class Indexed(torch.utils.data.Dataset):
    def __init__(self, n=16):
        self.x, self.y = torch.randn(n, 5), torch.arange(n) % 4

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def test_pml_trainer_hands_each_batch_its_own_indices():
    ds, loss = Indexed(), RecordingLoss()
    trunk = torch.nn.Linear(5, 4)
    MetricLossOnly(
        models={"trunk": trunk},
        optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), 0.1)},
        batch_size=8,
        loss_funcs={"metric_loss": loss},
        dataset=ds,
        data_and_label_getter=batch_getter(loss),
        dataloader_num_workers=0,
    ).train(num_epochs=1)
    assert len(loss.seen) == 2
    for indices, labels in loss.seen:
        assert torch.equal(ds.y[indices], labels)  # the indices belong to this batch
