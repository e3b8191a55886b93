"""SmoothProxyAnchorLoss equals PML's ProxyAnchorLoss and a literal reference; options, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import ProxyAnchorLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.regularizers import RegularFaceRegularizer

import noisy_pml.losses.smooth_proxy_anchor_loss as spa
from noisy_pml.losses import SmoothProxyAnchorLoss

B, C, D = 24, 7, 5
MU = 0.5  # explicit smoothing position (= tau) shared with reference_loss, not the default
OPTIONS = [(ps, wn) for ps in ("confidence", "labels") for wn in (True, False)]
# the fused kernel's code paths: positive similarities from sparse dot products or gathered from
# the full matrix; negative log-sum-exp without shift (bounded cosine) or with a per-proxy max
PATHS = [(sparse, shift) for sparse in (True, False) for shift in (False, True)]


@pytest.fixture(params=PATHS, ids=[f"{'sparse' if a else 'gather'}-{'shift' if b else 'noshift'}"
                                   for a, b in PATHS])
def kernel_path(request, monkeypatch):
    sparse, shift = request.param
    monkeypatch.setattr(spa, "SPARSE_DOTS_MAX_SHARE", math.inf if sparse else 0.0)
    if shift:
        monkeypatch.setattr(spa, "_needs_shift", lambda *args: True)
    return request.param


def _pair(dtype=torch.float64, **kwargs):
    """A PML ProxyAnchorLoss and a SmoothProxyAnchorLoss sharing the same proxies."""
    pml = ProxyAnchorLoss(C, D, **{k: v for k, v in kwargs.items() if k in ("reducer", "distance",
                                                                            "weight_regularizer")})
    ours = SmoothProxyAnchorLoss(C, D, **kwargs)
    pml, ours = pml.to(dtype), ours.to(dtype)
    ours.proxies.data.copy_(pml.proxies.data)
    return pml, ours


def _batch(dtype=torch.float64):
    emb = torch.randn(B, D, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, C - 1, (B,))  # class C-1 has no sample: a proxy without positives
    return emb, labels


def _grads(loss_fn, emb, labels, **kw):
    loss = loss_fn(emb, labels, **kw)
    return (loss, *torch.autograd.grad(loss, [emb, loss_fn.proxies]))


def _assert_same(a, b, tol=1e-12):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def reference_loss(emb, labels, proxies, c, alpha=32.0, delta=0.1, mu=MU, k=10.0, tau=MU,
                   positive_set="confidence", weighted_negatives=True, unselected="ignore"):
    """The spec's formula, one proxy and one sample at a time.

    ``unselected``: a sample x whose own label y is not selected (c(x, y) < tau) is, for proxy
    y, a weighted negative ("negative"), in neither sum ("ignore"), or a positive weighted by
    S(c) ("positive").
    """
    s = F.normalize(emb) @ F.normalize(proxies).T
    S = torch.sigmoid(k * (c - mu))
    n, m = s.shape
    pos_terms, neg_sum = [], 0.0
    for p in range(m):
        if positive_set == "confidence":
            pos = [x for x in range(n) if c[x, p] >= tau]
        else:
            pos = [x for x in range(n) if labels[x] == p]
        dropped = []  # own-label pairs that are not selected
        if positive_set == "confidence" and unselected != "negative":
            dropped = [x for x in range(n) if labels[x] == p and c[x, p] < tau]
        if unselected == "positive":
            pos, dropped = pos + dropped, []
        if pos:
            inner = sum(S[x, p] * torch.exp(-alpha * (s[x, p] - delta)) for x in pos)
            pos_terms.append(torch.log(1 + inner))
        inner = 0.0
        for x in range(n):
            if x not in pos and x not in dropped:
                w = (1 - S[x, p]) if weighted_negatives else 1.0
                inner = inner + w * torch.exp(alpha * (s[x, p] + delta))
        neg_sum = neg_sum + torch.log(1 + inner)
    return sum(pos_terms) / len(pos_terms) + neg_sum / m


@pytest.mark.parametrize("positive_set,weighted_negatives", OPTIONS)
def test_one_hot_confidences_with_sharp_step_equal_pml_proxy_anchor(positive_set,
                                                                    weighted_negatives,
                                                                    kernel_path):
    pml, ours = _pair(smoothing_sharpness=1e4, positive_set=positive_set,
                      weighted_negatives=weighted_negatives)
    emb, labels = _batch()
    c = F.one_hot(labels, C).double()
    _assert_same(_grads(pml, emb, labels), _grads(ours, emb, labels, confidences=c))


def test_without_confidences_is_pml_proxy_anchor_on_the_labels(kernel_path):
    pml, ours = _pair()  # default (soft) smoothing: unused without confidences
    emb, labels = _batch()
    _assert_same(_grads(pml, emb, labels), _grads(ours, emb, labels))


@pytest.mark.parametrize("positive_set,weighted_negatives", OPTIONS)
def test_matches_literal_formula_on_random_confidences(positive_set, weighted_negatives,
                                                        kernel_path):
    ours = SmoothProxyAnchorLoss(C, D, smoothing_position=MU, positive_set=positive_set,
                                 weighted_negatives=weighted_negatives).double()
    emb, labels = _batch()
    c = torch.rand(B, C, dtype=torch.float64) ** 2
    c[torch.arange(B), labels] = torch.rand(B, dtype=torch.float64)  # some labels look wrong
    expected = reference_loss(emb, labels, ours.proxies, c, positive_set=positive_set,
                              weighted_negatives=weighted_negatives)
    want = (expected, *torch.autograd.grad(expected, [emb, ours.proxies]))
    _assert_same(want, _grads(ours, emb, labels, confidences=c), tol=1e-10)


def test_relabelling_makes_confident_classes_positive():
    # "negative": the given label's pair stays a (weight-1) negative, as in Proxy-Anchor on the
    # new labels
    ours = SmoothProxyAnchorLoss(C, D, smoothing_position=MU, collect_stats=True,
                                 unselected="negative").double()
    emb, labels = _batch()
    c = torch.zeros(B, C, dtype=torch.float64)
    c[torch.arange(B), (labels + 1) % C] = 0.9  # every sample confidently belongs elsewhere
    loss = ours(emb, labels, confidences=c)
    relabelled = reference_loss(emb, (labels + 1) % C, ours.proxies, c)
    torch.testing.assert_close(loss, relabelled, rtol=1e-12, atol=1e-12)
    assert ours.relabelled_share == 1.0
    assert ours.mean_confidence == 0.0


def test_zero_weight_sample_changes_nothing():
    # hard step, positives = labels: sample 0 is below the threshold for its label and above it
    # for every other class, so all its weights are exactly 0
    ours = SmoothProxyAnchorLoss(C, D, smoothing_position=MU, smoothing_sharpness=math.inf,
                                 positive_set="labels").double()
    emb, labels = _batch()
    c = torch.rand(B, C, dtype=torch.float64)
    c[0] = 0.9
    c[0, labels[0]] = 0.2
    full = ours(emb, labels, confidences=c)
    (grad,) = torch.autograd.grad(full, [emb])
    rest = ours(emb[1:], labels[1:], confidences=c[1:])
    torch.testing.assert_close(full, rest, rtol=1e-12, atol=1e-12)
    assert torch.equal(grad[0], torch.zeros_like(grad[0]))


def test_proxies_without_positives_contribute_nothing_to_the_positive_term():
    ours = SmoothProxyAnchorLoss(C, D, smoothing_position=MU).double()
    emb, labels = _batch()
    c = torch.rand(B, C, dtype=torch.float64) * 0.4
    c[:, 0] = 0.8  # class 0 is everyone's; no one reaches the threshold for the others
    ours._confidences = c
    loss_dict = ours.compute_loss(emb, labels, None, emb, labels)
    pos = loss_dict["pos_loss"]
    assert pos["divisor"] == 1
    assert torch.equal(pos["losses"][1:], torch.zeros(C - 1, dtype=torch.float64))
    (grad,) = torch.autograd.grad(pos["losses"].sum(), [ours.proxies])
    assert torch.equal(grad[1:], torch.zeros_like(grad[1:]))


def test_with_a_miner_equals_pml(kernel_path):
    pml, ours = _pair()
    emb, labels = _batch()
    tuples = MultiSimilarityMiner(epsilon=0.1)(emb, labels)
    _assert_same(_grads(pml, emb, labels, indices_tuple=tuples),
                 _grads(ours, emb, labels, indices_tuple=tuples))


def test_with_a_reducer_and_a_weight_regulariser_equals_pml():
    pml, ours = _pair(reducer=MeanReducer(), weight_regularizer=RegularFaceRegularizer())
    emb, labels = _batch()
    _assert_same(_grads(pml, emb, labels), _grads(ours, emb, labels))


def test_with_a_distance_instead_of_a_similarity_equals_pml():
    pml, ours = _pair(distance=LpDistance())
    emb, labels = _batch()
    _assert_same(_grads(pml, emb, labels), _grads(ours, emb, labels))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_follows_input_dtype(dtype):
    ours = SmoothProxyAnchorLoss(C, D, smoothing_position=MU)
    emb, labels = _batch(dtype)
    c = torch.rand(B, C, dtype=dtype)
    loss = ours(emb, labels, confidences=c)
    loss.backward()
    assert loss.dtype == dtype and ours.proxies.dtype == dtype
    assert torch.isfinite(emb.grad).all() and torch.isfinite(ours.proxies.grad).all()
    expected = reference_loss(emb.double(), labels, ours.proxies.double(), c.double())
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-4)


def test_large_alpha_shifts_the_exponent_in_float32():
    # e^(alpha s) overflows float32 at alpha = 100: the kernel must detect it and shift by the max
    ours = SmoothProxyAnchorLoss(C, D, alpha=100.0, smoothing_position=MU)
    emb, labels = _batch(torch.float32)
    c = torch.rand(B, C)
    loss, g_emb, g_prox = _grads(ours, emb, labels, confidences=c)
    expected = reference_loss(emb.double(), labels, ours.proxies.double(), c.double(), alpha=100.0)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(g_emb).all() and torch.isfinite(g_prox).all()


def test_hard_step_dense_weights_equal_the_reference_limit(kernel_path):
    # k = inf: negative weights 1[c < mu] exactly, positive weights 1[c >= mu]
    ours = SmoothProxyAnchorLoss(C, D, smoothing_position=MU,
                                 smoothing_sharpness=math.inf).double()
    emb, labels = _batch()
    c = torch.rand(B, C, dtype=torch.float64)
    c[(c - MU).abs() < 0.01] += 0.02  # keep clear of mu: sigmoid(1e6 (c - mu)) is then a step
    expected = reference_loss(emb, labels, ours.proxies, c, k=1e6)
    want = (expected, *torch.autograd.grad(expected, [emb, ours.proxies]))
    _assert_same(want, _grads(ours, emb, labels, confidences=c), tol=1e-10)


def test_gradients_finite_at_the_edges():
    ours = SmoothProxyAnchorLoss(C, D, smoothing_sharpness=math.inf)
    labels = torch.arange(B) % C
    emb = ours.proxies.detach()[labels].clone().requires_grad_()  # s = 1 on the positives
    c = (torch.rand(B, C) > 0.5).float()  # confidences exactly 0 or 1
    ours(emb, labels, confidences=c).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(ours.proxies.grad).all()


def test_confidence_source_feeds_trainer_calls():
    c = torch.rand(B, C, dtype=torch.float64)
    ours = SmoothProxyAnchorLoss(C, D, confidence_source=lambda: c).double()
    emb, labels = _batch()
    torch.testing.assert_close(ours(emb, labels), ours(emb, labels, confidences=c))


def test_second_backward_through_the_same_graph_raises():
    ours = SmoothProxyAnchorLoss(C, D)
    emb, labels = _batch(torch.float32)
    loss = ours(emb, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("confidences", torch.rand(B, C + 1), "shape"),
        ("confidences", torch.rand(B, C) + 0.5, r"\[0, 1\]"),
        ("confidences", torch.full((B, C), float("nan")), "NaN"),
        ("labels", torch.full((B,), C), "labels"),
        ("embeddings", torch.full((B, D), float("nan")), "embeddings"),
    ],
)
def test_bad_input_raises_a_clear_error(field, value, match):
    ours = SmoothProxyAnchorLoss(C, D)
    args = {"embeddings": torch.randn(B, D), "labels": torch.randint(0, C, (B,)),
            "confidences": torch.rand(B, C)}
    args[field] = value
    with pytest.raises(ValueError, match=match):
        ours(args["embeddings"], args["labels"], confidences=args["confidences"])


def test_default_smoothing_position_is_the_validated_one_and_sets_the_threshold():
    # mu = 0.1 was chosen over 0.2 and 0.5 on validation classes (benchmarks/results/README.md)
    ours = SmoothProxyAnchorLoss(C, D)
    assert ours.smoothing_position == 0.1
    assert ours.positive_threshold == ours.smoothing_position
    assert SmoothProxyAnchorLoss(C, D, smoothing_position=0.3).positive_threshold == 0.3
    assert SmoothProxyAnchorLoss(C, D, positive_threshold=0.7).positive_threshold == 0.7


def test_bad_options_raise():
    with pytest.raises(ValueError, match="positive_set"):
        SmoothProxyAnchorLoss(C, D, positive_set="soft")
    with pytest.raises(ValueError, match="smoothing_sharpness"):
        SmoothProxyAnchorLoss(C, D, smoothing_sharpness=0)


@pytest.mark.parametrize(
    "name,value,error",
    [
        ("margin", float("nan"), ValueError),
        ("margin", float("inf"), ValueError),
        ("margin", -0.1, ValueError),
        ("margin", "0.1", TypeError),
        ("alpha", float("nan"), ValueError),
        ("alpha", 0, ValueError),
        ("smoothing_position", float("nan"), ValueError),
        ("smoothing_position", 1.5, ValueError),
        ("smoothing_position", -0.1, ValueError),
        ("smoothing_sharpness", float("nan"), ValueError),
        ("smoothing_sharpness", -1.0, ValueError),
        ("positive_threshold", float("nan"), ValueError),
        ("positive_threshold", 2.0, ValueError),
        ("num_classes", 0, ValueError),
        ("num_classes", 2.5, TypeError),
        ("embedding_size", -3, ValueError),
        ("confidence_source", 3, TypeError),
    ],
)
def test_non_finite_or_out_of_range_arguments_are_refused_by_name(name, value, error):
    kwargs = {"num_classes": C, "embedding_size": D, name: value}
    with pytest.raises(error, match=name):
        SmoothProxyAnchorLoss(**kwargs)


def test_unsupported_distance_is_refused_naming_the_supported_ones():
    from pytorch_metric_learning.distances import SNRDistance

    with pytest.raises(ValueError, match="SNRDistance.*supported: CosineSimilarity.*Poincare"):
        SmoothProxyAnchorLoss(C, D, distance=SNRDistance())


@pytest.mark.parametrize("name", ["PoincareDistance", "PoincareSimilarity"])
def test_poincare_distances_keep_the_proxies_inside_the_ball_and_train(name):
    import noisy_pml.distances as nd
    from noisy_pml.models import PoincareHead
    from noisy_pml.utils import hyperbolic as hyp

    torch.manual_seed(0)
    head = PoincareHead(8, D, c=0.5)
    loss_fn = SmoothProxyAnchorLoss(C, D, distance=getattr(nd, name)(c=0.5))
    proxies = loss_fn.proxy_points()
    assert (0.5 * proxies.pow(2).sum(1) < 1).all()  # kaiming-initialised vectors, mapped in
    torch.testing.assert_close(proxies, hyp.project(hyp.exp0(loss_fn.proxies, 0.5), 0.5))
    feats, labels = torch.randn(B, 8), torch.randint(0, C, (B,))
    conf = 0.8 * F.one_hot(labels, C) + 0.2 * torch.rand(B, C)
    opt = torch.optim.SGD([*head.parameters(), *loss_fn.parameters()], lr=0.05)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(head(feats), labels, confidences=conf)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(loss_fn.proxies.grad).all()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert (0.5 * loss_fn.proxy_points().pow(2).sum(1) < 1).all()
    assert loss_fn.get_logits(head(feats)).shape == (B, C)


@pytest.mark.parametrize("distance", ["cosine", "poincare"])
def test_empty_batch_gives_zero_like_pml_and_integer_embeddings_are_refused(distance):
    from noisy_pml.distances import PoincareSimilarity

    kwargs = {"distance": PoincareSimilarity()} if distance == "poincare" else {}
    ours = SmoothProxyAnchorLoss(C, D, **kwargs)
    emb = torch.zeros(0, D, requires_grad=True)
    loss = ours(emb, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(TypeError, match="floating-point"):
        ours(torch.ones(B, D, dtype=torch.long), torch.randint(0, C, (B,)))


@pytest.mark.parametrize("unselected", ["ignore", "positive", "negative"])
@pytest.mark.parametrize("weighted_negatives", [True, False])
def test_unselected_own_label_pairs_match_the_literal_formula(unselected, weighted_negatives,
                                                              kernel_path):
    ours = SmoothProxyAnchorLoss(C, D, smoothing_position=MU, unselected=unselected,
                                 weighted_negatives=weighted_negatives).double()
    emb, labels = _batch()
    c = torch.rand(B, C, dtype=torch.float64) ** 2
    c[torch.arange(B), labels] = torch.rand(B, dtype=torch.float64)  # about half unselected
    assert 0 < (c[torch.arange(B), labels] < MU).sum() < B
    expected = reference_loss(emb, labels, ours.proxies, c, unselected=unselected,
                              weighted_negatives=weighted_negatives)
    want = (expected, *torch.autograd.grad(expected, [emb, ours.proxies]))
    _assert_same(want, _grads(ours, emb, labels, confidences=c), tol=1e-10)


def test_ignore_removes_exactly_the_unselected_samples_own_proxy_terms():
    # sample 0's own label is unselected and it is selected for no class: under "ignore" its
    # own proxy's terms do not involve it (that proxy's gradient ignores where sample 0 lies);
    # under "negative" they do
    emb, labels = _batch()
    c = torch.rand(B, C, dtype=torch.float64) * 0.4  # below tau = MU everywhere
    c[torch.arange(1, B), labels[1:]] = 0.9  # every other sample's own label is selected
    y0 = int(labels[0])
    moved = emb.detach().clone()
    moved[0] = torch.randn(D, dtype=torch.float64)
    for unselected, independent in (("ignore", True), ("negative", False)):
        ours = SmoothProxyAnchorLoss(C, D, smoothing_position=MU, unselected=unselected).double()
        g = [torch.autograd.grad(ours(e, labels, confidences=c), ours.proxies)[0][y0]
             for e in (emb, moved)]
        assert torch.allclose(g[0], g[1], rtol=1e-12, atol=1e-15) == independent, unselected


def test_unselected_option_keeps_pml_equality_at_one_hot_confidences():
    for unselected in ("ignore", "positive"):
        pml, ours = _pair(smoothing_sharpness=1e4, unselected=unselected)
        emb, labels = _batch()
        c = F.one_hot(labels, C).double()
        _assert_same(_grads(pml, emb, labels), _grads(ours, emb, labels, confidences=c))


def test_unselected_share_is_recorded():
    ours = SmoothProxyAnchorLoss(C, D, smoothing_position=MU, unselected="ignore",
                                 collect_stats=True).double()
    emb, labels = _batch()
    c = torch.zeros(B, C, dtype=torch.float64)
    c[torch.arange(B), labels] = 1.0
    c[: B // 4, :][torch.arange(B // 4), labels[: B // 4]] = 0.2
    ours(emb, labels, confidences=c)
    assert ours.unselected_share == pytest.approx((B // 4) / B)
    assert ours.relabelled_share == pytest.approx((B // 4) / B)


def test_set_batch_info_feeds_the_next_forward_only():
    c = torch.rand(B, C, dtype=torch.float64)
    ours = SmoothProxyAnchorLoss(C, D).double()
    emb, labels = _batch()
    ours.set_batch_info(confidences=c)
    with_info = ours(emb, labels)
    torch.testing.assert_close(with_info, ours(emb, labels, confidences=c))
    assert not torch.allclose(ours(emb, labels), with_info)  # consumed: plain Proxy-Anchor


def test_set_batch_info_indices_go_through_a_confidence_table():
    from noisy_pml.trainers import ConfidenceTable

    table_values = torch.rand(50, C, dtype=torch.float64)
    ours = SmoothProxyAnchorLoss(C, D, confidence_source=ConfidenceTable(table_values)).double()
    emb, labels = _batch()
    idx = torch.randperm(50)[:B]
    ours.set_batch_info(indices=idx, instance_ids=idx)
    # the table holds the batch at once (wrappers that call confidence_source() see it too)
    torch.testing.assert_close(ours.confidence_source(), table_values[idx])
    torch.testing.assert_close(ours(emb, labels), ours(emb, labels, confidences=table_values[idx]))


def test_set_batch_info_indices_without_a_source_raise():
    with pytest.raises(ValueError, match="confidence_source"):
        SmoothProxyAnchorLoss(C, D).set_batch_info(indices=torch.arange(B))


def test_bad_unselected_option_raises():
    with pytest.raises(ValueError, match="unselected must be one of"):
        SmoothProxyAnchorLoss(C, D, unselected="drop")


@pytest.mark.parametrize("chunk", [1, 7, 40, 10**6])
def test_positive_positions_in_blocks_of_rows_equal_one_nonzero(chunk):
    from noisy_pml.losses.smooth_proxy_anchor_loss import flat_positions_at_least

    c = torch.rand(13, 9, generator=torch.Generator().manual_seed(0))
    want = torch.nonzero((c >= 0.7).view(-1)).squeeze(1)
    assert torch.equal(flat_positions_at_least(c, 0.7, chunk=chunk), want)
    assert flat_positions_at_least(c[:0], 0.7, chunk=chunk).numel() == 0  # empty batch


def _starved_batch(share_without_class: float, B: int = 20, C: int = 6):
    """Confidences where the first ``share`` of the rows have no class at 0.1 or above."""
    labels = torch.arange(B) % C
    conf = F.one_hot(labels, C).double() * 0.9
    conf[: int(share_without_class * B)] = 0.05
    return torch.randn(B, 8, dtype=torch.float64), labels, conf


def test_warns_once_when_most_of_a_batch_has_no_selected_class():
    loss = SmoothProxyAnchorLoss(6, 8)
    emb, labels, conf = _starved_batch(0.8)
    with pytest.warns(RuntimeWarning, match="80% of the batch's samples have no class"):
        loss(emb, labels, confidences=conf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: later batches stay silent
        loss(emb, labels, confidences=conf)


@pytest.mark.parametrize("positive_set, share", [("confidence", 0.4), ("labels", 0.8)])
def test_no_warning_while_most_samples_keep_a_positive(positive_set, share):
    loss = SmoothProxyAnchorLoss(6, 8, positive_set=positive_set)
    emb, labels, conf = _starved_batch(share)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(emb, labels, confidences=conf)
