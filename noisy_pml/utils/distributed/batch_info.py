"""Per-sample side information of a batch (indices, instance ids, confidences): held by a
wrapper, gathered over ranks in the embeddings' order, and handed to the wrapped component."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields

import torch

from .gather import all_gather_ints, comm_device, gather_rows, offset_instance_ids

FIELDS = ("indices", "instance_ids", "confidences")


@dataclass
class BatchInfo:
    """The batch's dataset indices and confidences (one per image or per row) and instance ids
    (one per row); ``None`` where not given."""

    indices: torch.Tensor | None = None
    instance_ids: torch.Tensor | None = None
    confidences: torch.Tensor | None = None

    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


def component_views(component: torch.nn.Module) -> int | None:
    """The ``views`` a component (or its ``thresholds``) stacks per batch, if it says."""
    for obj in (component, getattr(component, "thresholds", None)):
        v = getattr(obj, "views", None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def resolve_views(component: torch.nn.Module, views: int | None) -> int:
    """``views`` given to a wrapper, checked against the component's own (default: its own, 1)."""
    own = component_views(component)
    if views is None:
        return own or 1
    if not isinstance(views, int) or views < 1:
        raise ValueError(f"views must be an int >= 1, got {views!r}")
    if own is not None and own != views:
        raise ValueError(
            f"views={views} but the wrapped {type(component).__name__} stacks views={own} per "
            "batch: the gathered batch would pair the wrong rows; pass the same number"
        )
    return views


def _params(fn) -> tuple[set[str], bool]:
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params}
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def route(
    component: torch.nn.Module, info: BatchInfo, optional: tuple[str, ...] = ()
) -> tuple[dict, dict]:
    """Where each given field goes: ``(set_batch_info kwargs, forward kwargs)``.

    A field goes to ``set_batch_info(field=...)`` when the component takes it there, else to
    ``forward(field=...)`` (confidences prefer ``forward``, as Smooth Proxy-Anchor's call takes
    them). Raises ValueError naming the field the component cannot take, unless the field is
    ``optional`` (then it is dropped).
    """
    setter = getattr(component, "set_batch_info", None)
    s_names, s_var = _params(setter) if setter is not None else (set(), False)
    f_names, _ = _params(component.forward)
    to_setter, to_forward = {}, {}
    for name in FIELDS:
        value = getattr(info, name)
        if value is None:
            continue
        if name == "confidences" and name in f_names:
            to_forward[name] = value
        elif name in s_names or s_var:
            to_setter[name] = value
        elif name in f_names:
            to_forward[name] = value
        elif name not in optional:
            raise ValueError(_refusal(component, name))
    return to_setter, to_forward


def _refusal(component, name: str) -> str:
    return (
        f"{type(component).__name__} takes no per-sample {name} (neither "
        f"set_batch_info({name}=...) nor forward({name}=...)); do not pass {name} to its wrapper"
    )


def deliver(component: torch.nn.Module, info: BatchInfo, optional: tuple[str, ...] = ()) -> dict:
    """Hand ``info`` to ``component`` (one ``set_batch_info`` call); returns the forward kwargs.
    Fields in ``optional`` the component cannot take are dropped instead of refused."""
    to_setter, to_forward = route(component, info, optional)
    if to_setter:
        component.set_batch_info(**to_setter)
    return to_forward


def header(info: BatchInfo, rows: int) -> list[int]:
    """This rank's sizes: rows, then per field its length (-1: absent) and width, then images."""
    out = [rows]
    for name in FIELDS:
        t = getattr(info, name)
        out += [-1, 0] if t is None else [len(t), t.shape[1] if t.dim() > 1 else 0]
    ids = info.instance_ids
    out.append(0 if ids is None else len(torch.unique(torch.as_tensor(ids))))
    return out


def gather_info(info: BatchInfo, table: torch.Tensor, views: int, device) -> BatchInfo:
    """The global ``BatchInfo`` in the gathered embeddings' order (``table``: every rank's
    `header`). Per-image fields (length rows / views) are gathered image by image, per-row
    fields view by view. Raises ValueError, identically on every rank, on inconsistent ranks."""
    rows = table[:, 0].tolist()
    out = BatchInfo()
    for k, name in enumerate(FIELDS):
        lengths, widths = table[:, 1 + 2 * k].tolist(), table[:, 2 + 2 * k].tolist()
        if all(n < 0 for n in lengths):
            continue
        if any(n < 0 for n in lengths) or len(set(widths)) > 1:
            raise ValueError(
                f"{name} was given on some ranks and not on others (or with different widths): "
                f"lengths per rank {lengths}, widths {widths}; every rank must pass the same fields"
            )
        if lengths == rows:
            v = views
        elif all(n * views == r for n, r in zip(lengths, rows, strict=True)):
            v = 1
        else:
            raise ValueError(
                f"{name} has {lengths} entries per rank for {rows} embedding rows in views={views} "
                "blocks: expected one per row or one per image"
            )
        t = torch.as_tensor(getattr(info, name), device=device)
        if name == "instance_ids":
            t = offset_instance_ids(t, table[:, -1].tolist())
        setattr(out, name, gather_rows(t, lengths, views=v))
    return out


def gather_header(info: BatchInfo, embeddings: torch.Tensor) -> torch.Tensor:
    """Every rank's `header`, as a (W, 8) table."""
    return all_gather_ints(header(info, len(embeddings)), comm_device(embeddings))
