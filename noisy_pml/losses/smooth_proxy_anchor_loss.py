"""Smooth Proxy-Anchor loss (Roig et al. 2020), sparse in the positives and fast at large C."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin
from pytorch_metric_learning.reducers import DivisorReducer
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from ..distances import PoincareDistance
from ..utils import hyperbolic as hyp
from ..utils.checks import (
    check_finite,
    check_finite_number,
    check_labels,
    check_positive,
    check_positive_int,
    check_probabilities,
    check_rate,
)

POSITIVE_SETS = ("confidence", "labels")
UNSELECTED = ("negative", "ignore", "positive")
# distances the loss supports; PoincareDistance covers PoincareSimilarity (a subclass)
SUPPORTED_DISTANCES = (DotProductSimilarity, LpDistance, PoincareDistance)
# a batch in which more than this share of the samples has no class selected draws a warning;
# checked on the first batches only (the confidences are fixed: those batches are a fair sample,
# and later batches skip the host sync of the check)
STARVED_SHARE = 0.5
STARVED_CHECKS = 20


def _check_distance(distance) -> None:
    """Refuse distances the loss was not built for, naming the supported ones."""
    if not isinstance(distance, SUPPORTED_DISTANCES):
        raise ValueError(
            f"SmoothProxyAnchorLoss does not support distance={type(distance).__name__}; "
            "supported: CosineSimilarity, DotProductSimilarity, LpDistance (pytorch-metric-"
            "learning) and PoincareDistance, PoincareSimilarity (noisy_pml.distances)"
        )


class SmoothProxyAnchorLoss(WeightRegularizerMixin, BaseMetricLossFunction):
    r"""Proxy-Anchor loss whose terms are weighted by per-sample class confidences.

    C. Roig, D. Varas, I. Masuda, J. C. Riveiro, E. Bou-Balust, "Smooth Proxy-Anchor Loss for
    Noisy Metric Learning", arXiv:2006.05142 (2020); base loss: Kim et al., "Proxy Anchor Loss for
    Deep Metric Learning", CVPR 2020. With $s(x,p)$ the similarity of sample $x$ to
    proxy $p$, confidences $c(x,p)\in[0,1]$ and the smoothing
    $S(c)=\sigma(k(c-\mu))$:

    $$
    \begin{aligned}
    L = {} & \frac{1}{|P^+|}\sum_{p\in P^+}\log\Big(1+\sum_{x\in X_p^+}
    S(c(x,p))\,e^{-\alpha(s(x,p)-\delta)}\Big) \\
    & + \frac{1}{|P|}\sum_{p\in P}\log\Big(1+\sum_{x\in X_p^-}
    (1-S(c(x,p)))\,e^{\alpha(s(x,p)+\delta)}\Big)
    \end{aligned}
    $$

    Every weight enters the exponent as its logarithm (log 0 = -inf), so a weight of exactly 0
    (a hard step, ``smoothing_sharpness=inf``) removes its term exactly. Reconstructed choices
    (R), all configurable:

    * (R) smoothing ``S(c) = sigmoid(k (c - mu))`` with ``smoothing_position`` mu = 0.1 and
      ``smoothing_sharpness`` k = 10; ``k = inf`` is the hard step ``1[c >= mu]``. The default
      mu = 0.1 was chosen on the validation classes of CUB and Cars196 over 0.2 and 0.5 (see
      benchmarks/results/README.md); the spec's first reconstruction was 0.5, which with one-vs-all
      BCE confidences over many classes selects almost no positives. With a calibrated,
      softmax-like confidence source a higher mu may suit.
    * (R) ``positive_set="confidence"`` (relabelling): $X_p^+=\{x: c(x,p)\ge\tau\}$ with
      ``positive_threshold`` tau = mu, so a sample may be positive for another class than its
      noisy label, or for none; ``"labels"``: $X_p^+$ = samples labelled p.
      $X_p^-$ is every other sample. $P^+$ counts proxies with at least one positive
      of non-zero weight, after selection.
    * (R) ``weighted_negatives=True`` uses the weight ``1 - S(c)``; ``False`` uses 1.
    * (R) ``unselected``: what becomes of the pair $(x, \tilde y_x)$ of a sample and its own
      (given) label when relabelling does not select it ($c(x, \tilde y_x) < \tau$).
      ``"ignore"`` (default): the pair is dropped from both sums (no pull, no push from its own
      proxy; the sample still pushes every other proxy and pulls any proxy it is selected for);
      ``"negative"``: it is a negative of its own proxy with weight $1 - S(c)$ (pushed away; the
      default before 0.1.0, the literal reading of "all other samples are its negatives");
      ``"positive"``: it stays a positive of its own proxy with the small weight $S(c)$ (a
      soft pull; with a hard step $S(c) = 0$ and this equals ``"ignore"``).
      ``"ignore"`` was chosen on the validation classes of Cars196 and CUB (3 seeds, clean and
      symmetric 50 %): it halves the clean-label cost on Cars196 (R@1 -0.21 vs -0.46 against
      Proxy-Anchor) and has the best MAP@R, with R@1 gains equal within noise
      (benchmarks/results/spa_v3_select/).
    * Confidences come from a frozen module: no gradient flows into them.

    Relabelling needs confidences that reach tau. Where phase 1 is uncertain (weak features,
    many classes, early stopping that lands early) most samples can have no class at or above
    tau and so no positive at all: fine-tuning Lite0 at 96 px on Cars196, 82 % of the samples at
    symmetric 30 % noise, and Smooth PA fell 6.5 R@1 below Proxy-Anchor
    (benchmarks/results/phase1_selection/). The loss warns once when one of its first 20
    batches has more than half of its samples without a selected class.

    Without confidences the loss is Proxy-Anchor on the labels (every weight 1), identical to
    ``pytorch_metric_learning.losses.ProxyAnchorLoss``, including miner weights, which enter both
    exponents as ``(w - 1)`` like PML does.

    Confidences reach the loss either directly, ``loss(embeddings, labels, confidences=c)`` with
    ``c`` of shape (B, C), or through ``confidence_source``: a callable returning the current
    batch's (B, C) confidences (e.g. [`noisy_pml.trainers.ConfidenceTable`][], which learns the
    batch's sample indices from a PML trainer's ``data_and_label_getter``).

    The positive term touches only the sparse positive pairs; the negative term uses a single
    B x C buffer, fused with the cosine matmul and its backward in a custom autograd function (a
    second ``backward`` through the same graph is not supported): the dense log-weights
    log(1 - S(c)) are written into it, the matmul adds ``alpha s`` to them (``addmm_``), then one
    ``exp_`` and a column sum; with cosine similarity the exponent is bounded, so no max-shift
    pass is needed. In backward the per-proxy scale is folded into the two matmuls.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.1,
        alpha: float = 32,
        smoothing_position: float = 0.1,
        smoothing_sharpness: float = 10.0,
        positive_threshold: float | None = None,
        positive_set: str = "confidence",
        weighted_negatives: bool = True,
        confidence_source: Callable[[], torch.Tensor | None] | None = None,
        unselected: str = "ignore",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if positive_set not in POSITIVE_SETS:
            raise ValueError(f"positive_set must be one of {POSITIVE_SETS}, got {positive_set!r}")
        check_positive_int("num_classes", num_classes)
        check_positive_int("embedding_size", embedding_size)
        check_finite_number("margin", margin)
        if margin < 0:
            raise ValueError(f"margin must be >= 0 (the delta of Proxy-Anchor), got {margin}")
        check_positive("alpha", alpha)
        check_finite_number("smoothing_position", smoothing_position)
        check_rate("smoothing_position", smoothing_position, allow_one=True)
        if isinstance(smoothing_sharpness, bool) or not isinstance(
            smoothing_sharpness, (int, float)
        ):
            raise TypeError(
                f"smoothing_sharpness must be a number, got {type(smoothing_sharpness).__name__}"
            )
        if not smoothing_sharpness > 0:  # NaN fails this too; inf is the hard step
            raise ValueError(f"smoothing_sharpness must be > 0 (or inf), got {smoothing_sharpness}")
        if positive_threshold is not None:
            check_finite_number("positive_threshold", positive_threshold)
            check_rate("positive_threshold", positive_threshold, allow_one=True)
        if confidence_source is not None and not callable(confidence_source):
            raise TypeError(
                f"confidence_source must be a callable or None, got "
                f"{type(confidence_source).__name__}"
            )
        _check_distance(self.distance)
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
        if unselected not in UNSELECTED:
            raise ValueError(f"unselected must be one of {UNSELECTED}, got {unselected!r}")
        self.unselected = unselected
        self._confidences: torch.Tensor | None = None
        self._batch_info: dict = {}
        self._starved_checks_left = STARVED_CHECKS
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "alpha", "margin", "smoothing_position",
                           "smoothing_sharpness", "positive_threshold"],
            is_stat=False,
        )
        self.add_to_recordable_attributes(
            list_of_names=["mean_confidence", "relabelled_share", "unselected_share",
                           "num_pos_proxies"],
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
        """PML's forward plus ``confidences`` (B, C) in [0, 1].

        Without ``confidences`` the batch's confidences come, in this order, from the last
        `set_batch_info` call (its ``confidences``, or its ``indices`` looked up through
        ``confidence_source``), then from ``confidence_source()``; with none of these the loss
        is Proxy-Anchor on the labels. Batch info is consumed by this call.
        """
        info, self._batch_info = self._batch_info, {}
        if confidences is None:
            confidences = info.get("confidences")
        if confidences is None and info.get("indices") is not None:
            confidences = self._lookup(info["indices"])
        if confidences is None and self.confidence_source is not None:
            confidences = self.confidence_source()
        self._confidences = confidences
        try:
            return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        finally:
            self._confidences = None

    def set_batch_info(
        self,
        indices: torch.Tensor | None = None,
        instance_ids: torch.Tensor | None = None,
        confidences: torch.Tensor | None = None,
        **kwargs,
    ) -> None:
        """Per-sample side information for the next forward call (the project's convention).

        Args:
            indices: (B,) dataset indices of the batch; their confidences are looked up through
                ``confidence_source`` (which must accept them, e.g. a `ConfidenceTable`).
            instance_ids: accepted for the convention; unused by this loss.
            confidences: (B, C) confidences of the batch, used as given.
            **kwargs: other components' side information; ignored.
        """
        if indices is not None and confidences is None and self.confidence_source is None:
            raise ValueError(
                "set_batch_info(indices=...) needs confidence_source (e.g. a ConfidenceTable) "
                "to look the batch's confidences up; got confidence_source=None"
            )
        if indices is not None and hasattr(self.confidence_source, "set_batch_info"):
            # handed over now, so that wrappers calling confidence_source() (e.g. the
            # distributed wrapper, which gathers confidences) see this batch as well
            self.confidence_source.set_batch_info(indices=indices)
        self._batch_info = {"indices": indices, "confidences": confidences}

    def _lookup(self, indices: torch.Tensor) -> torch.Tensor:
        source = self.confidence_source
        if hasattr(source, "set_batch_info"):  # already holds the indices (set_batch_info)
            return source()
        try:
            return source(indices)
        except TypeError as e:
            raise TypeError(
                "confidence_source must accept the batch indices (a ConfidenceTable, or a "
                f"callable taking indices) when set_batch_info(indices=...) is used: {e}"
            ) from e

    def cast_types(self, dtype: torch.dtype, device: torch.device) -> None:
        if not dtype.is_floating_point:
            raise TypeError(f"embeddings must be a floating-point tensor, got dtype {dtype}")
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

        c, pos_rows, pos_cols, pos_logw, neg_logw, n_sel = self._weights(
            self._confidences, labels, B, C
        )
        # affine maps s -> exponent read off distance.margin (distances work as well as
        # similarities): alpha * margin(s, delta) for positives, alpha * margin(-delta, s) else
        a_pos, b_pos = _affine(lambda s: self.alpha * self.distance.margin(s, self.margin))
        a_neg, b_neg = _affine(lambda s: self.alpha * self.distance.margin(-self.margin, s))

        query, ref, bounded = self._matmul_operands(embeddings)
        pos_term, neg_term = _ProxyAnchorTerms.apply(
            query, ref, pos_rows, pos_cols, pos_logw, neg_logw, row_bias,
            (a_pos, b_pos, a_neg, b_neg), C, bounded,
        )
        # P+: proxies with a positive of non-zero weight (zero-weight positives stay out of X_p-)
        num_pos_proxies = int(torch.unique(pos_cols[pos_logw > -math.inf]).numel())
        if self.collect_stats:
            self._record_stats(c, labels, pos_rows[:n_sel], num_pos_proxies, pos_cols[:n_sel])

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
        """c, the sparse positives (rows, cols, log S(c)), the dense log(1 - S(c)) or None, and
        the number of selected positives (the first entries; with ``unselected`` "ignore" or
        "positive", the unselected own-label pairs follow, with log-weight -inf or log S(c): a
        listed pair is never a negative, and a -inf one adds nothing to the positive term).

        Every pass over B x C counts at large C: one ``aminmax`` (range and NaN check), one
        comparison + ``nonzero`` (the positive list, reused to exclude them from the negatives)
        and, with weighted negatives, one fresh buffer written three times (affine, sigmoid,
        log) that the autograd function then reuses as its only B x C buffer.
        """
        if confidences is None:  # plain Proxy-Anchor: positives = labels, every weight 1
            rows = torch.arange(B, device=labels.device)
            zeros = torch.zeros(B, dtype=self.proxies.dtype, device=labels.device)
            return None, rows, labels, zeros, None, B
        if not isinstance(confidences, torch.Tensor):
            raise TypeError(f"confidences must be a torch.Tensor, got {type(confidences).__name__}")
        if tuple(confidences.shape) != (B, C):
            check_probabilities("confidences", confidences, (B, C))  # raises: wrong shape
        lo, hi = torch.aminmax(confidences.detach())  # one pass; NaN propagates into lo, hi
        if not (lo >= 0 and hi <= 1):
            check_probabilities("confidences", confidences, (B, C))  # raises, naming the values
        c = confidences.detach().to(device=labels.device, dtype=self.proxies.dtype)
        if self.positive_set == "confidence":
            flat = flat_positions_at_least(c, self.positive_threshold)
            rows, cols = flat.div(C, rounding_mode="floor"), flat.remainder(C)
            if self._starved_checks_left > 0:
                self._warn_if_starved(rows, B)
        else:
            rows, cols = torch.arange(B, device=labels.device), labels
        pos_logw = self._log_smooth(c[rows, cols])  # sparse: gathered after selection
        n_sel = len(rows)
        if self.unselected != "negative" and self.positive_set == "confidence":
            own = c.gather(1, labels[:, None]).squeeze(1)
            u = torch.nonzero(own < self.positive_threshold).squeeze(1)  # unselected own pairs
            u_logw = torch.full_like(own[u], -math.inf) if self.unselected == "ignore" \
                else self._log_smooth(own[u])
            rows, cols = torch.cat([rows, u]), torch.cat([cols, labels[u]])
            pos_logw = torch.cat([pos_logw, u_logw])
        neg_logw = self._log_one_minus_smooth(c) if self.weighted_negatives else None
        return c, rows, cols, pos_logw, neg_logw, n_sel

    def _warn_if_starved(self, rows: torch.Tensor, B: int) -> None:
        """Warn (once per loss) when most of the batch has no selected class: no positive."""
        self._starved_checks_left -= 1
        has_positive = torch.zeros(B, dtype=torch.bool, device=rows.device)
        share = 1.0 - float(has_positive.index_fill_(0, rows, True).float().mean())
        if share > STARVED_SHARE:
            self._starved_checks_left = 0
            warnings.warn(
                f"SmoothProxyAnchorLoss: {share:.0%} of the batch's samples have no class with "
                f"confidence >= positive_threshold={self.positive_threshold:g}, so no positive "
                "pair; training on the rest can collapse. The confidences are too low for the "
                "threshold (phase 1 stopped early, or features too weak for this many "
                "classes): check the share over the whole confidence table, and train phase 1 "
                "longer or lower the threshold (benchmarks/results/phase1_selection/).",
                RuntimeWarning,
                stacklevel=4,
            )

    def _log_smooth(self, c: torch.Tensor) -> torch.Tensor:
        """log S(c) = -softplus(-k (c - mu)) on the (sparse) positive confidences."""
        mu, k = self.smoothing_position, self.smoothing_sharpness
        if math.isinf(k):  # hard step S(c) = 1[c >= mu]: weights exactly 0 or 1
            return torch.zeros_like(c).masked_fill_(c < mu, -math.inf)
        return torch.nn.functional.logsigmoid(c.sub(mu).mul_(k))

    def _log_one_minus_smooth(self, c: torch.Tensor) -> torch.Tensor:
        """Dense log(1 - S(c)) = log sigmoid(k (mu - c)) in one fresh buffer and three passes.

        sigmoid then log (both vectorised) instead of logsigmoid/softplus, whose log1p kernel
        is ~20x slower on CPU; an underflowing sigmoid gives log 0 = -inf, i.e. the term is
        removed exactly, and only for weights below the dtype's smallest normal number.
        """
        mu, k = self.smoothing_position, self.smoothing_sharpness
        if math.isinf(k):  # hard step: 1 - S(c) = 1[c < mu]
            zero = torch.zeros((), dtype=c.dtype, device=c.device)
            return torch.where(c >= mu, -math.inf, zero)
        k_mu = torch.tensor(k * mu, dtype=c.dtype, device=c.device)
        return torch.add(k_mu, c, alpha=-k).sigmoid_().log_()

    def _matmul_operands(self, embeddings):
        """(query, ref, bounded): s = query @ ref.T, |s| <= 1 if bounded; ref None: s = query."""
        d = self.distance
        if type(d) in (CosineSimilarity, DotProductSimilarity) and d.power == 1:
            if d.normalize_embeddings:
                return d.normalize(embeddings), d.normalize(self.proxies), True
            return embeddings, self.proxies, False
        return self.distance(embeddings, self.proxy_points()), None, False

    def proxy_points(self) -> torch.Tensor:
        r"""The proxies the distance sees: ``proxies`` itself, or with a Poincare distance
        $\mathrm{project}(\exp_0(v_p))$, inside the ball (differentiable in $v_p$ and in a
        learnable curvature)."""
        if not isinstance(self.distance, PoincareDistance):
            return self.proxies
        k = hyp.curvature(self.distance.curvature, self.proxies)
        eps = hyp.BALL_EPS.get(self.proxies.dtype, 4e-3)
        return hyp._project(hyp._exp0(self.proxies, k.sqrt()), k, eps)

    def _record_stats(self, c, labels, pos_rows, num_pos_proxies, pos_cols):
        self.num_pos_proxies = num_pos_proxies
        if c is None:
            self.mean_confidence, self.relabelled_share, self.unselected_share = 1.0, 0.0, 0.0
            return
        self.mean_confidence = c.gather(1, labels[:, None]).mean().item()
        # a sample is relabelled when its positive set differs from {its label}
        B = len(labels)
        n_pos = torch.bincount(pos_rows, minlength=B)
        own = torch.zeros(B, dtype=torch.bool, device=labels.device)
        own[pos_rows[pos_cols == labels[pos_rows]]] = True
        self.relabelled_share = ((n_pos != 1) | ~own).float().mean().item()
        self.unselected_share = (~own).float().mean().item()

    def get_default_reducer(self):
        return DivisorReducer()

    def get_default_distance(self):
        return CosineSimilarity()

    def get_default_weight_init_func(self):
        return c_f.TorchInitWrapper(torch.nn.init.kaiming_normal_, mode="fan_out")

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.distance(embeddings, self.proxy_points())


# elements of the boolean mask one chunk of `flat_positions_at_least` compares on a CPU: 1 MiB
# stays in cache between the comparison and the nonzero that reads it back
CPU_MASK_CHUNK = 1 << 20


def flat_positions_at_least(
    c: torch.Tensor, threshold: float, chunk: int = CPU_MASK_CHUNK
) -> torch.Tensor:
    """Row-major flat indices ``i * C + j`` of the entries ``c[i, j] >= threshold``.

    On a CPU a (B, C) matrix is compared in blocks of rows of about ``chunk`` elements: one
    B x C boolean mask would be freshly allocated, written, then read again by ``nonzero``
    (at B = 1024, C = 100,000 that took 0.5 s on one core, blocks of rows take 0.3 s). On
    other devices one comparison and one ``nonzero``.
    """
    C = c.shape[1]
    step = max(1, chunk // max(C, 1))
    if c.device.type != "cpu" or len(c) <= step:
        return torch.nonzero((c >= threshold).view(-1)).squeeze(1)
    parts = [
        torch.nonzero((c[i : i + step] >= threshold).view(-1)).squeeze(1).add_(i * C)
        for i in range(0, len(c), step)
    ]
    return torch.cat(parts)


def _affine(f: Callable[[float], float]) -> tuple[float, float]:
    """Slope and intercept of an affine map of the similarity."""
    b = f(0.0)
    return f(1.0) - b, b


# the positive similarities come from sparse dot products when the P x d gathers cost less than
# this share of the B x C buffer, else they are gathered from a full similarity matrix
SPARSE_DOTS_MAX_SHARE = 0.25


def _needs_shift(bounded: bool, a: float, b: float, B: int, dtype: torch.dtype) -> bool:
    """Whether the negative log-sum-exp needs a per-proxy max shift in ``dtype``.

    Without a shift, exp(z) with z = a s + log w (+ miner bias <= 0) is at most e^|a| when
    |s| <= 1, so the sum cannot overflow if |a| + log B < log(max); a term flushed to zero
    (z < log(tiny)) is negligible next to the "+1" when e^(b + z) < eps, i.e. when
    b - log(eps) < -log(tiny). Both hold for cosine similarity, alpha = 32 in float32/64.
    """
    if B == 0:  # an empty batch: nothing to sum, no shift (and no amax over zero rows)
        return False
    if not bounded:
        return True
    fi = torch.finfo(dtype)
    return not (abs(a) + math.log(B) + 1 < math.log(fi.max)
                and b - math.log(fi.eps) + 1 < -math.log(fi.tiny))


class _ProxyAnchorTerms(torch.autograd.Function):
    """Per-proxy positive and negative log(1 + sum w exp(z)) terms, fused with s = q @ r.T.

    Positive pairs are a sparse list (rows, cols). The negative term uses one B x C buffer: the
    dense log-weights (if any) receive ``a s`` from the matmul itself (``addmm_`` with beta 1),
    the positives are set to -inf, then ``exp_`` in place and a column sum; that buffer is kept
    for backward and turned in place into the gradient. With ``neg_logw`` given, this function
    overwrites it. With ref None, ``query`` is the similarity matrix itself.
    """

    @staticmethod
    def forward(ctx, query, ref, rows, cols, pos_logw, neg_logw, row_bias, coefs, C, bounded):
        a_pos, b_pos, a_neg, b_neg = coefs
        B = query.shape[0]
        sparse = ref is not None and len(rows) * query.shape[1] <= SPARSE_DOTS_MAX_SHARE * B * C
        with torch.no_grad():
            # z = a s + log(1 - S(c)) (+ miner bias), built in the B x C buffer
            if ref is None:
                s_pos = query[rows, cols]
                z = neg_logw.add_(query, alpha=a_neg) if neg_logw is not None \
                    else query.mul(a_neg)
            elif sparse:
                s_pos = (query[rows] * ref[cols]).sum(1)
                if neg_logw is not None:
                    z = neg_logw.addmm_(query, ref.T, alpha=a_neg)
                else:
                    z = torch.addmm(torch.zeros((), dtype=query.dtype, device=query.device),
                                    query, ref.T, alpha=a_neg)
            else:
                s = query @ ref.T
                s_pos = s[rows, cols]
                z = neg_logw.add_(s, alpha=a_neg) if neg_logw is not None else s.mul_(a_neg)
                del s
            if row_bias is not None:
                z.add_(row_bias[:, None])
            # positives: z+ = alpha * margin(s, delta) + log S(c) (+ miner bias), sparse
            z_pos = s_pos.mul_(a_pos).add_(b_pos).add_(pos_logw)
            if row_bias is not None:
                z_pos.add_(row_bias[rows])
            m_pos = torch.zeros(C, dtype=z.dtype, device=z.device)
            m_pos = m_pos.scatter_reduce(0, cols, z_pos, "amax", include_self=True)
            e_pos = (z_pos - m_pos[cols]).exp_()
            sum_pos = torch.exp(-m_pos).scatter_add_(0, cols, e_pos)
            pos_term = m_pos + sum_pos.log()
            # negatives: log(1 + e^b sum_x exp(z)) = softplus(b + m + log sum_x exp(z - m))
            z.index_put_((rows, cols), torch.tensor(-math.inf, dtype=z.dtype, device=z.device))
            if _needs_shift(bounded, a_neg, b_neg, B, z.dtype):
                m = z.amax(dim=0)
                m = torch.where(m == -math.inf, 0.0, m)  # a proxy whose samples are all positive
                z.sub_(m)
            else:
                m = torch.zeros(C, dtype=z.dtype, device=z.device)
            e = z.exp_()
            bm = m.add_(b_neg)
            neg_term = torch.logaddexp(bm + e.sum(dim=0).log(), torch.zeros_like(bm))
            # d neg_p / d z_xp = e_xp * exp(b + m_p - neg_p)
            neg_scale = (bm - neg_term).exp_()
        ctx.save_for_backward(query, ref, rows, cols, e_pos, sum_pos, neg_scale)
        ctx.e, ctx.coefs, ctx.has_ref, ctx.sparse = e, (a_pos, a_neg), ref is not None, sparse
        return pos_term, neg_term

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_pos, g_neg):
        query, ref, rows, cols, e_pos, sum_pos, neg_scale = ctx.saved_tensors
        a_pos, a_neg = ctx.coefs
        if ctx.e is None:
            raise RuntimeError(
                "SmoothProxyAnchorLoss: backward through the same graph twice is not supported"
            )
        # d neg_p / d s_xp = a_neg * e_xp * neg_scale_p; d pos_p / d s_xp likewise, sparse
        col = g_neg * a_neg * neg_scale
        pos_grad = e_pos * (g_pos * a_pos / sum_pos)[cols]
        e, ctx.e = ctx.e, None  # e is 0 on the positive pairs
        if ctx.sparse:  # the column scale goes into the matmuls: no pass over B x C
            # positives as a sparse (B, C) matrix (sparse.mm is far faster than index_add_ on CPU)
            g_pos_sparse = torch.sparse_coo_tensor(
                torch.stack([rows, cols]), pos_grad, e.shape, check_invariants=False
            )
            grad_q = grad_r = None
            if ctx.needs_input_grad[0]:
                grad_q = (e @ (ref * col[:, None])).add_(torch.sparse.mm(g_pos_sparse, ref))
            if ctx.needs_input_grad[1]:
                grad_r = (e.T @ query).mul_(col[:, None])
                grad_r.add_(torch.sparse.mm(g_pos_sparse.t(), query))
            return grad_q, grad_r, None, None, None, None, None, None, None, None
        grad_s = e.mul_(col[None, :]).index_put_((rows, cols), pos_grad, accumulate=True)
        if not ctx.has_ref:
            return grad_s, None, None, None, None, None, None, None, None, None
        grad_q = grad_s @ ref if ctx.needs_input_grad[0] else None
        grad_r = grad_s.T @ query if ctx.needs_input_grad[1] else None
        return grad_q, grad_r, None, None, None, None, None, None, None, None
