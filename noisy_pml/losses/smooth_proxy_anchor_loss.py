"""Smooth Proxy-Anchor loss (Roig et al. 2020), sparse in the positives and fast at large C."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin
from pytorch_metric_learning.reducers import DivisorReducer
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from ..utils.checks import check_finite, check_labels, check_positive, check_probabilities

POSITIVE_SETS = ("confidence", "labels")


class SmoothProxyAnchorLoss(WeightRegularizerMixin, BaseMetricLossFunction):
    r"""Proxy-Anchor loss whose terms are weighted by per-sample class confidences.

    C. Roig, D. Varas, I. Masuda, J. C. Riveiro, E. Bou-Balust, "Smooth Proxy-Anchor Loss for
    Noisy Metric Learning", arXiv:2006.05142 (2020); base loss: Kim et al., "Proxy Anchor Loss for
    Deep Metric Learning", CVPR 2020. With :math:`s(x,p)` the similarity of sample :math:`x` to
    proxy :math:`p`, confidences :math:`c(x,p)\in[0,1]` and the smoothing
    :math:`S(c)=\sigma(k(c-\mu))`:

    .. math::
        L = \frac{1}{|P^+|}\sum_{p\in P^+}\log\Big(1+\sum_{x\in X_p^+}
              S(c(x,p))\,e^{-\alpha(s(x,p)-\delta)}\Big)
          + \frac{1}{|P|}\sum_{p\in P}\log\Big(1+\sum_{x\in X_p^-}
              (1-S(c(x,p)))\,e^{\alpha(s(x,p)+\delta)}\Big)

    Every weight enters the exponent as its logarithm (``logsigmoid``), so a weight of exactly 0
    (a hard step, ``smoothing_sharpness=inf``) removes its term exactly. Reconstructed choices
    (R), all configurable:

    * (R) smoothing ``S(c) = sigmoid(k (c - mu))`` with ``smoothing_position`` mu = 0.5 and
      ``smoothing_sharpness`` k = 10; ``k = inf`` is the hard step ``1[c >= mu]``.
    * (R) ``positive_set="confidence"`` (relabelling): :math:`X_p^+=\{x: c(x,p)\ge\tau\}` with
      ``positive_threshold`` tau = mu, so a sample may be positive for another class than its
      noisy label, or for none; ``"labels"``: :math:`X_p^+` = samples labelled p.
      :math:`X_p^-` is every other sample. :math:`P^+` counts proxies with at least one positive
      of non-zero weight, after selection.
    * (R) ``weighted_negatives=True`` uses the weight ``1 - S(c)``; ``False`` uses 1.
    * Confidences come from a frozen module: no gradient flows into them.

    Without confidences the loss is Proxy-Anchor on the labels (every weight 1), identical to
    ``pytorch_metric_learning.losses.ProxyAnchorLoss``, including miner weights, which enter both
    exponents as ``(w - 1)`` like PML does.

    Confidences reach the loss either directly, ``loss(embeddings, labels, confidences=c)`` with
    ``c`` of shape (B, C), or through ``confidence_source``: a callable returning the current
    batch's (B, C) confidences (e.g. :class:`noisy_pml.trainers.ConfidenceTable`, which learns the
    batch's sample indices from a PML trainer's ``data_and_label_getter``).

    The positive term touches only the sparse positive pairs; the negative term is one
    log-sum-exp pass over a single B x C buffer, fused with the cosine matmul and its backward in a
    custom autograd function (a second ``backward`` through the same graph is not supported).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.1,
        alpha: float = 32,
        smoothing_position: float = 0.5,
        smoothing_sharpness: float = 10.0,
        positive_threshold: float | None = None,
        positive_set: str = "confidence",
        weighted_negatives: bool = True,
        confidence_source: Callable[[], torch.Tensor | None] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if positive_set not in POSITIVE_SETS:
            raise ValueError(f"positive_set must be one of {POSITIVE_SETS}, got {positive_set!r}")
        check_positive("num_classes", num_classes)
        check_positive("alpha", alpha)
        if not smoothing_sharpness > 0:
            raise ValueError(f"smoothing_sharpness must be > 0, got {smoothing_sharpness}")
        self.proxies = torch.nn.Parameter(torch.Tensor(num_classes, embedding_size))
        self.weight_init_func(self.proxies)
        self.num_classes = int(num_classes)
        self.margin = margin
        self.alpha = alpha
        self.smoothing_position = smoothing_position
        self.smoothing_sharpness = smoothing_sharpness
        self.positive_threshold = (
            smoothing_position if positive_threshold is None else positive_threshold
        )
        self.positive_set = positive_set
        self.weighted_negatives = weighted_negatives
        self.confidence_source = confidence_source
        self._confidences: torch.Tensor | None = None
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "alpha", "margin", "smoothing_position",
                           "smoothing_sharpness", "positive_threshold"],
            is_stat=False,
        )
        self.add_to_recordable_attributes(
            list_of_names=["mean_confidence", "relabelled_share", "num_pos_proxies"],
            is_stat=True,
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple: tuple | None = None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        confidences: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """PML's forward plus ``confidences`` (B, C) in [0, 1]; None asks ``confidence_source``."""
        if confidences is None and self.confidence_source is not None:
            confidences = self.confidence_source()
        self._confidences = confidences
        try:
            return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        finally:
            self._confidences = None

    def cast_types(self, dtype: torch.dtype, device: torch.device) -> None:
        self.proxies.data = c_f.to_device(self.proxies.data, device=device, dtype=dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        check_finite("embeddings", embeddings)
        check_labels("labels", labels, self.num_classes, length=len(embeddings))
        dtype, device = embeddings.dtype, embeddings.device
        self.cast_types(dtype, device)
        B, C = len(embeddings), self.num_classes
        # miner weights w in [0, 1] enter both exponents as (w - 1), as in PML's ProxyAnchorLoss
        row_bias = None
        if indices_tuple is not None:
            row_bias = lmu.convert_to_weights(indices_tuple, labels, dtype=dtype) - 1

        c, pos_rows, pos_cols, pos_logw, neg_logw = self._weights(self._confidences, labels, B, C)
        # affine maps s -> exponent read off distance.margin (distances work as well as
        # similarities): alpha * margin(s, delta) for positives, alpha * margin(-delta, s) else
        a_pos, b_pos = _affine(lambda s: self.alpha * self.distance.margin(s, self.margin))
        a_neg, b_neg = _affine(lambda s: self.alpha * self.distance.margin(-self.margin, s))

        query, ref = self._matmul_operands(embeddings)
        pos_term, neg_term = _ProxyAnchorTerms.apply(
            query, ref, pos_rows, pos_cols, pos_logw, neg_logw, row_bias,
            (a_pos, b_pos, a_neg, b_neg), C,
        )
        # P+: proxies with a positive of non-zero weight (zero-weight positives stay out of X_p-)
        num_pos_proxies = int(torch.unique(pos_cols[pos_logw > -math.inf]).numel())
        if self.collect_stats:
            self._record_stats(c, labels, pos_rows, num_pos_proxies, pos_cols)

        loss_indices = c_f.torch_arange_from_size(self.proxies)
        loss_dict = {
            "pos_loss": {"losses": pos_term, "indices": loss_indices,
                         "reduction_type": "element", "divisor": num_pos_proxies},
            "neg_loss": {"losses": neg_term, "indices": loss_indices,
                         "reduction_type": "element", "divisor": C},
        }
        self.add_weight_regularization_to_loss_dict(loss_dict, self.proxies)
        return loss_dict

    def _weights(self, confidences, labels, B, C):
        """c, the sparse positives (rows, cols, log S(c)) and the dense log(1 - S(c))."""
        if confidences is None:  # plain Proxy-Anchor: positives = labels, every weight 1
            rows = torch.arange(B, device=labels.device)
            zeros = torch.zeros(B, dtype=self.proxies.dtype, device=labels.device)
            return None, rows, labels, zeros, None
        if not isinstance(confidences, torch.Tensor):
            raise TypeError(f"confidences must be a torch.Tensor, got {type(confidences).__name__}")
        if tuple(confidences.shape) != (B, C):
            check_probabilities("confidences", confidences, (B, C))  # raises: wrong shape
        lo, hi = torch.aminmax(confidences.detach())  # one pass; NaN propagates into lo, hi
        if not (lo >= 0 and hi <= 1):
            check_probabilities("confidences", confidences, (B, C))  # raises, naming the values
        c = confidences.detach().to(device=labels.device, dtype=self.proxies.dtype)
        if self.positive_set == "confidence":
            rows, cols = torch.nonzero(c >= self.positive_threshold, as_tuple=True)
        else:
            rows, cols = torch.arange(B, device=labels.device), labels
        pos_logw = self._log_smooth(c[rows, cols], sign=1.0)
        neg_logw = self._log_smooth(c, sign=-1.0) if self.weighted_negatives else None
        return c, rows, cols, pos_logw, neg_logw

    def _log_smooth(self, c: torch.Tensor, sign: float) -> torch.Tensor:
        """log S(c) (sign=+1) or log(1 - S(c)) (sign=-1), exact in the tails."""
        mu, k = self.smoothing_position, self.smoothing_sharpness
        if math.isinf(k):  # hard step S(c) = 1[c >= mu]: weights exactly 0 or 1
            on = (c >= mu) if sign > 0 else (c < mu)
            return torch.zeros_like(c).masked_fill_(~on, -math.inf)
        return torch.nn.functional.logsigmoid(c.sub(mu).mul_(sign * k))

    def _matmul_operands(self, embeddings):
        """(query, ref) with s = query @ ref.T for dot-product similarities, else (s, None)."""
        d = self.distance
        if type(d) in (CosineSimilarity, DotProductSimilarity) and d.power == 1:
            if d.normalize_embeddings:
                return d.normalize(embeddings), d.normalize(self.proxies)
            return embeddings, self.proxies
        return self.distance(embeddings, self.proxies), None

    def _record_stats(self, c, labels, pos_rows, num_pos_proxies, pos_cols):
        self.num_pos_proxies = num_pos_proxies
        if c is None:
            self.mean_confidence, self.relabelled_share = 1.0, 0.0
            return
        self.mean_confidence = c.gather(1, labels[:, None]).mean().item()
        # a sample is relabelled when its positive set differs from {its label}
        B = len(labels)
        n_pos = torch.bincount(pos_rows, minlength=B)
        own = torch.zeros(B, dtype=torch.bool, device=labels.device)
        own[pos_rows[pos_cols == labels[pos_rows]]] = True
        self.relabelled_share = ((n_pos != 1) | ~own).float().mean().item()

    def get_default_reducer(self):
        return DivisorReducer()

    def get_default_distance(self):
        return CosineSimilarity()

    def get_default_weight_init_func(self):
        return c_f.TorchInitWrapper(torch.nn.init.kaiming_normal_, mode="fan_out")

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.distance(embeddings, self.proxies)


def _affine(f: Callable[[float], float]) -> tuple[float, float]:
    """Slope and intercept of an affine map of the similarity."""
    b = f(0.0)
    return f(1.0) - b, b


class _ProxyAnchorTerms(torch.autograd.Function):
    """Per-proxy positive and negative log(1 + sum w exp(z)) terms, fused with s = q @ r.T.

    Positive pairs are a sparse list (rows, cols); the negative term runs over one B x C buffer
    that holds s, then the exponent, then its exp (kept for backward and turned in place into the
    gradient). With ref None, ``query`` is the similarity matrix itself.
    """

    @staticmethod
    def forward(ctx, query, ref, rows, cols, pos_logw, neg_logw, row_bias, coefs, C):
        a_pos, b_pos, a_neg, b_neg = coefs
        with torch.no_grad():
            s = query @ ref.T if ref is not None else query.clone()
            # positives: z+ = alpha * margin(s, delta) + log S(c) (+ miner bias), sparse
            z_pos = s[rows, cols].mul_(a_pos).add_(b_pos).add_(pos_logw)
            if row_bias is not None:
                z_pos.add_(row_bias[rows])
            m_pos = torch.zeros(C, dtype=s.dtype, device=s.device)
            m_pos = m_pos.scatter_reduce(0, cols, z_pos, "amax", include_self=True)
            e_pos = (z_pos - m_pos[cols]).exp_()
            sum_pos = torch.exp(-m_pos).scatter_add_(0, cols, e_pos)
            pos_term = m_pos + sum_pos.log()
            # negatives: z- = alpha * margin(-delta, s) + log(1 - S(c)) (+ miner bias), dense
            z = s.mul_(a_neg).add_(b_neg)
            if neg_logw is not None:
                z.add_(neg_logw)
            if row_bias is not None:
                z.add_(row_bias[:, None])
            z.index_put_((rows, cols), torch.tensor(-math.inf, dtype=z.dtype, device=z.device))
            m_neg = z.amax(dim=0).clamp_min_(0)  # the "+1" is exp(0): shift at least 0
            e = z.sub_(m_neg).exp_()
            sum_neg = e.sum(dim=0).add_(torch.exp(-m_neg))
            neg_term = m_neg + sum_neg.log()
        ctx.save_for_backward(query, ref, rows, cols, e_pos, sum_pos, sum_neg)
        ctx.e, ctx.coefs, ctx.has_ref = e, (a_pos, a_neg), ref is not None
        return pos_term, neg_term

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_pos, g_neg):
        query, ref, rows, cols, e_pos, sum_pos, sum_neg = ctx.saved_tensors
        a_pos, a_neg = ctx.coefs
        if ctx.e is None:
            raise RuntimeError(
                "SmoothProxyAnchorLoss: backward through the same graph twice is not supported"
            )
        # d neg_p / d s_xp = a_neg * softmax weight; d pos_p / d s_xp likewise on the positives
        grad_s = ctx.e.mul_((g_neg * a_neg / sum_neg)[None, :])
        ctx.e = None
        grad_s.index_put_((rows, cols), e_pos * (g_pos * a_pos / sum_pos)[cols], accumulate=True)
        if not ctx.has_ref:
            return grad_s, None, None, None, None, None, None, None, None
        grad_q = grad_s @ ref if ctx.needs_input_grad[0] else None
        grad_r = grad_s.T @ query if ctx.needs_input_grad[1] else None
        return grad_q, grad_r, None, None, None, None, None, None, None
