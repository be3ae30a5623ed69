"""Compile a declaration into a plain Pyro callable.

``PyroProgram(model)`` walks the nodes in declaration order and emits one Pyro primitive per
node: ``pyro.param``, ``pyro.module``, ``pyro.sample`` (finite latents marked for
enumeration), ``pyro.deterministic`` and ``pyro.factor``, inside ``pyro.plate`` contexts with
fixed dims and ``pyro.markov`` for chains. The result is an ordinary function of keyword
arguments, so ``pyro.infer.SVI``, ``MCMC`` and ``infer_discrete`` accept it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution

from genppl.distributions import exact_log_probs
from genppl.errors import ModelError, suggest
from genppl.pyro.at_entries import at_entries
from genppl.pyro.layout import (
    RaggedCopies,
    plate_dims,
    ragged_copies,
    resolve_sizes,
    to_pyro_layout,
)
from genppl.pyro.values import split_site

if TYPE_CHECKING:
    from genppl.dsl.model import Model
    from genppl.dsl.nodes import Node

#: ``collapse(chain, values, data, length)``: see ``PyroProgram``.
Collapse = Callable[[str, dict[str, Any], dict[str, torch.Tensor], int], None]
_USER_ERRORS = (ValueError, RuntimeError, TypeError, IndexError, KeyError, AssertionError)


def site_name(name: str, step: int | None) -> str:
    """Pyro site name of a node (at a chain step: ``z[3]``, which no identifier can clash with)."""
    return name if step is None else f"{name}[{step}]"


@contextmanager
def default_tensor_context(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Make literals inside user factories (``dist.Normal(0., 1.)``) follow the model."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        if device.type == "cpu":
            yield
        else:
            with device:
                yield
    finally:
        torch.set_default_dtype(old)


def bind_data(model: Model, data: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
    """The data an engine runs on (``None`` entries left out), converted (``as_data``) and
    checked once, before the engine's loop: NaN and infinite values are refused here
    (``_check_finite``) rather than on every call of the program, where the scan would cost
    a pass over the data per SVI step."""
    out = {k: as_data(model, k, v) for k, v in (data or {}).items() if v is not None}
    for name, t in out.items():
        node = model.nodes.get(name)
        if node is not None and node.kind in ("latent", "observed") and t.is_floating_point():
            _check_finite(node, t)
    return out


def as_data(model: Model, name: str, value: Any) -> torch.Tensor:
    """Data on the model's device; floating data in the model's dtype, integers kept exact.
    Only what the tensor's type and size tell is checked here (it runs on every call of a
    program); ``bind_data`` checks the values once."""
    try:
        t = torch.as_tensor(value, device=model.device)
        if t.is_floating_point() and t.dtype != model.dtype:
            # Python numbers go straight to the model's dtype: through torch's default
            # float32 first, 0.6 would reach a float64 model as 0.6000000238.
            is_array = isinstance(value, torch.Tensor) or hasattr(value, "__array__")
            t = t.to(model.dtype) if is_array else torch.as_tensor(
                value, dtype=model.dtype, device=model.device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"data {name!r} cannot become a tensor: {e}") from e
    if t.is_complex():
        raise ModelError(f"data {name!r} is complex ({t.dtype}); genppl's nodes take real "
                         "numbers, integers or booleans.")
    node = model.nodes.get(name)
    if node is None or node.kind not in ("latent", "observed"):
        return t
    if t.numel() == 0:
        raise ModelError(f"data for {node.kind} node {name!r} ({node.declared_at}) is empty "
                         f"(shape {tuple(t.shape)}); give at least one value, or leave "
                         f"{name!r} out of the data.")
    if t.dtype == torch.bool:  # True/False as the numbers 1/0 that distributions score
        return t.to(model.dtype)
    return t


def _check_finite(node: Node, t: torch.Tensor) -> None:
    """Refuse NaN and infinite data when it is bound, naming the node and the first bad
    entry: Pyro would otherwise fail later with a message about a site's support, or a
    NaN would flow silently into the log joint. NaN in a latent's data is allowed: it
    leaves that entry unobserved (engine 'exact' sums over it)."""
    bad = torch.isinf(t) if node.kind == "latent" else ~torch.isfinite(t)
    if not bool(bad.any()):
        return
    first = tuple(torch.nonzero(bad)[0].tolist())
    count = int(bad.sum())
    fix = ("give a state, or NaN to leave that entry unobserved" if node.kind == "latent"
           else "drop those entries, or set them to any valid value and mask them out (a "
           "boolean input and the distribution's .mask(...))")
    raise ModelError(f"data for {node.kind} node {node.name!r} ({node.declared_at}) holds "
                     f"{t[first].item()} at index {first} ({count} non-finite "
                     f"entr{'y' if count == 1 else 'ies'} in all); {fix}.")


def check_held(node: Node, d: Distribution, value: torch.Tensor) -> None:
    """Data a node is held at must fit it: its shape must broadcast to the distribution's
    (plates and event: an extra or a wrong axis would be broadcast into a different model
    by some engines, or fail deep in Pyro in others) and each value must lie in its support
    (``check_support``)."""
    want = tuple(d.shape())
    try:
        fits = tuple(torch.broadcast_shapes(value.shape, want)) == want
    except RuntimeError:
        fits = False
    if not fits:
        raise ModelError(f"data for {node.kind} node {node.name!r} ({node.declared_at}) has "
                         f"shape {tuple(value.shape)}, which does not fit its distribution's "
                         f"shape {want} (plates {list(node.layout_plates)}, then event axes); "
                         "give one value per plate entry, plates' axes leading.")
    check_support(node, d, value)


def check_support(node: Node, d: Distribution, value: torch.Tensor) -> None:
    """Each value a node is held at must lie in its support, unless the node is masked
    (padding may hold anything there) or Pyro's validation is off (``fit(validate=False)``
    asks for no check of values against supports)."""
    if _masked(d) or not is_validation_enabled():
        return
    try:
        inside = d.support.check(value)
    except RuntimeError:  # a support that varies with parameters laid out otherwise
        return
    if not bool(inside.all()):
        first = tuple(torch.nonzero(~inside)[0].tolist())
        raise ModelError(f"data for {node.kind} node {node.name!r} ({node.declared_at}) holds "
                         f"{value[first].item()} at index {first}, outside its support "
                         f"{d.support}; correct it, or mask or drop that entry.")


def check_data_sites(model: Model, trace: Any) -> None:
    """``check_held`` for every site of a traced run that holds data (the site's
    distribution is broadcast to its plates by then), once, before an engine's loop."""
    for site in trace.nodes.values():
        if site["type"] != "sample" or not site["is_observed"] or site_is_subsample(site):
            continue
        node = model.nodes.get(split_site(site["name"])[0])
        if node is not None:
            check_held(node, site["fn"], site["value"])


def _masked(d: Distribution) -> bool:
    while d is not None:
        if isinstance(d, MaskedDistribution):
            return True
        d = getattr(d, "base_dist", None)
    return False


class PyroProgram:
    """The Pyro callable of a model or guide (see module docstring)."""

    def __init__(self, model: Model, name: str, *, generative: bool = False,
                 lenient: bool = False, collapse: Collapse | None = None,
                 skip: frozenset[str] = frozenset()) -> None:
        self.model = model
        # Nodes not run at all (no site, no value): those whose part of the joint another
        # mechanism accounts for, when nothing that runs reads them (the finite latents the
        # exact engine sums out, and what hangs below them).
        self.skip = skip
        # Chains handed to ``collapse`` (with the values of every node before them, the data
        # and the chain's length) instead of being run step by step: a linear-Gaussian chain
        # marginalised exactly (``genppl.tabulation.gaussian_chains``).
        self.collapse = collapse
        self.__name__ = name
        self.generative = generative
        # Lenient runs (inspecting a model before data exists) skip what an absent input
        # reaches instead of failing, so the rest of the model can still be traced.
        self.lenient = lenient
        # A guide runs in its model's plates and reads its model's data.
        self.owner: Model = getattr(model, "model", model)
        self.dims = plate_dims(self.owner)
        self.max_plate_nesting = max((-d for d in self.dims.values()), default=0)
        self.blocks = _blocks(model, skip)
        # Data for a latent is evidence: the latent is conditioned on it (observed, so never
        # enumerated), as the exact engine reads it.
        self.data_names = [n.name for n in self.owner.nodes.values()
                           if n.kind in ("observed", "input", "latent")]

    def __repr__(self) -> str:
        return f"<pyro program of {self.model.name!r}>"

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        return self.execute(*self.bind(kwargs))

    def bind(self, kwargs: dict[str, Any], sizes: dict[str, int] | None = None
             ) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, int]]:
        """``(data, plate sizes, chain lengths)`` for ``execute``: names checked, values
        converted and checked (``as_data``), sizes read from the data or given."""
        unknown = [k for k in kwargs if k not in self.data_names]
        if unknown:
            raise ModelError(f"{self.model.name!r} got data {unknown[0]!r}, which is not a "
                             "random node or input." + suggest(unknown[0], self.data_names))
        data = {k: as_data(self.model, k, v) for k, v in kwargs.items() if v is not None}
        plate_sizes, lengths = resolve_sizes(self.owner, data, given=sizes)
        return data, plate_sizes, lengths

    def execute(self, data: dict[str, torch.Tensor], sizes: dict[str, int],
                lengths: dict[str, int]) -> dict[str, Any]:
        """Run with prepared data and every plate size and chain length known."""
        model = self.model
        for name, value in data.items():  # a longer time axis would be silently truncated
            node = self.owner.nodes.get(name)
            if node is not None and node.chain is not None and (
                    value.dim() == 0 or value.shape[0] != lengths[node.chain]):
                steps = value.shape[0] if value.dim() else 0
                raise ModelError(
                    f"data for chain node {name!r} ({node.declared_at}) has {steps} steps on "
                    f"axis 0, but chain {node.chain!r} has length {lengths[node.chain]}. Data "
                    "axes are: time, " + ", ".join((*node.layout_plates, "then event.")))
        # A minibatch no smaller than the plate is the whole plate (Pyro itself rejects
        # subsample_size > size, e.g. placeholder sizes when drawing the graph, or small data).
        plates = {
            name: pyro.plate(name, sizes[name],
                             subsample_size=(None if spec.subsample_size is None
                                             else min(spec.subsample_size, sizes[name])),
                             dim=self.dims[name], device=model.device)
            for name, spec in model.plates.items() if not spec.ragged
        }
        indices = {name: p.indices for name, p in plates.items()
                   if model.plates[name].subsample_size is not None}
        ragged = ragged_copies(self.owner, data, sizes, indices)
        scales = self._ragged_plates(ragged, sizes, plates, indices)
        run = _Run(self, data, sizes, plates, indices, ragged, scales)
        with default_tensor_context(model.device, model.dtype):
            for block in self.blocks:
                if isinstance(block, str) and self.collapse is not None:
                    self.collapse(block, run.values, data, lengths[block])
                elif isinstance(block, str):
                    run.chain(block, lengths[block])
                else:
                    run.node(block, None, block.fn, block.parents)
        return run.values

    def _ragged_plates(self, ragged: dict[str, RaggedCopies], sizes: dict[str, int],
                       plates: dict[str, Any], indices: dict[str, torch.Tensor]
                       ) -> dict[str, float]:
        """Add each ragged plate to ``plates`` (none where the run holds no copy: its nodes
        then have nothing to score or draw, and Pyro has no plate of size 0) and, where
        its enclosing plate is subsampled, its copies' positions to ``indices``. Returns
        the extra scale of such a plate's sites: a minibatch of B of D documents carries
        all of its documents' words, so they count D / B times, like the documents, not
        N / n (Pyro's scale of n copies of N, which the plate keeps so that its entries
        stay the flat data's)."""
        scales = {}
        for name, copies in ragged.items():
            outer = self.owner.plates[name].parent
            held = sizes[name] if copies.positions is None else copies.positions.shape[0]
            if held:
                plates[name] = pyro.plate(name, sizes[name], subsample=copies.positions,
                                          dim=self.dims[name], device=self.model.device)
            if copies.positions is not None:
                indices[name] = copies.positions
                chosen = indices[outer].shape[0]  # type: ignore[index]
                scales[name] = sizes[outer] / chosen * held / sizes[name]  # type: ignore[index]
        return scales


def _brief(error: Exception, limit: int = 400) -> str:
    """An exception's message without the tensors torch sometimes prints in full."""
    text = str(error)
    return text if len(text) <= limit else text[:limit] + " ... (message truncated)"


_ABSENT = object()  # the value of an input without data in a lenient run


def _blocks(model: Model, skip: frozenset[str]) -> list[Node | str]:
    """Declaration order with each chain collapsed to one block at its first node; nodes in
    ``skip``, and chains all of whose nodes are, left out."""
    blocks: list[Node | str] = []
    for node in model.nodes.values():
        if node.name in skip:
            continue
        if node.chain is None:
            blocks.append(node)
        elif node.chain not in blocks:
            blocks.append(node.chain)
    return blocks


class _Run:
    """State of one execution: values so far, plates, data."""

    def __init__(self, program: PyroProgram, data: dict[str, torch.Tensor],
                 sizes: dict[str, int], plates: dict[str, Any],
                 indices: dict[str, torch.Tensor], ragged: dict[str, RaggedCopies],
                 scales: dict[str, float]) -> None:
        self.program = program
        self.model = program.model
        self.data = data
        self.sizes = sizes
        self.plates = plates
        self.indices = indices
        # the copies of each ragged plate this run holds (``ragged_copies``), and the extra
        # scale of a subsampled one's sites (``PyroProgram._ragged_plates``)
        self.ragged = ragged
        self.scales = scales
        self.values: dict[str, Any] = {}
        self.event_dims: dict[str, int] = {}  # of sampled values (others: the node's)
        self.prev: dict[str, Any] = {}

    def chain(self, name: str, length: int) -> None:
        spec = self.model.chains[name]
        nodes = [n for n in self.model.nodes.values()
                 if n.chain == name and n.name not in self.program.skip]
        steps = range(length - 1, -1, -1) if spec.reverse else range(length)
        for i, step in enumerate(pyro.markov(steps)):
            for node in nodes:
                if i == 0 and node.init_fn is not None:
                    self.node(node, step, node.init_fn, node.init_parents)
                else:
                    self.node(node, step, node.fn, node.parents)
            # (a factor has no value for the next step to read)
            self.prev = {n.name: self.values[n.name] for n in nodes if n.name in self.values}

    def node(self, node: Node, step: int | None, fn: Any, parents: tuple) -> None:
        kind = node.kind
        if kind == "param":
            value = pyro.param(node.name, lambda: self._param_init(node),
                               constraint=node.constraint)
            if value.is_floating_point() and (value.dtype, value.device) != (
                    self.model.dtype, self.model.device):
                value = value.to(self.model.device, self.model.dtype)  # stored before a .to()
            self.values[node.name] = value
            return
        if kind == "module":
            self.values[node.name] = pyro.module(node.name, node.value)
            return
        if any(p not in self.plates for p in node.layout_plates):
            return  # a ragged plate of which this run holds no copy: nothing to score
        args = {p.arg: (step if p.node is None else
                        self.prev[p.node] if p.lag else self.values[p.node]) for p in parents}
        read_rows = node.flattened is not None and self._reads_rows(node, parents, args)
        if node.flattened is not None and not read_rows:
            args = {p.arg: self._at_entries(node, p.node, args[p.arg]) for p in parents}
        if self.program.lenient and any(v is _ABSENT for v in args.values()):
            self.values[node.name] = _ABSENT
            return
        site = site_name(node.name, step)
        with ExitStack() as stack:
            for plate in node.layout_plates:
                stack.enter_context(self.plates[plate])
                if plate in self.scales:
                    stack.enter_context(poutine.scale(scale=self.scales[plate]))
            if kind == "input":
                value = self._data(node, step, node.event_dim)
                if value is None and self.program.lenient:
                    value = _ABSENT
                elif value is None:
                    raise ModelError(f"input {node.name!r} ({node.declared_at}) was not given; "
                                     f"pass {node.name}=... to the model or engine.")
            elif kind == "deterministic":
                value = pyro.deterministic(site, self._call(node, fn, args),
                                           event_dim=node.event_dim)
            elif kind == "factor":
                pyro.factor(site, self._log_potential(node, fn, args))
                return
            else:
                d = self._distribution(node, fn, args, parents, read_rows)
                value = self._sample(node, site, step, d)
        self.values[node.name] = value

    def _reads_rows(self, node: Node, parents: tuple, args: dict[str, Any]) -> bool:
        """Whether a random node of a ragged plate reads its enclosing plate's entries
        (``AtEntries``) rather than its parents gathered per copy: it does when none of its
        parents lies in the ragged plate and one varies along the enclosing plate."""
        if node.kind not in ("latent", "observed"):
            return False
        if any(p.node is not None and self.model.nodes[p.node].flattened is not None
               for p in parents):
            return False
        return any(self._entry_axis(node, p.node, args[p.arg]) is not None for p in parents)

    def _distribution(self, node: Node, fn: Any, args: dict[str, Any], parents: tuple,
                      read_rows: bool) -> Distribution:
        """The node's distribution: its factory's result, or, for a node that reads its
        enclosing plate's entries, the factory's result for those entries read at each
        copy's (``at_entries``). A family ``at_entries`` cannot read, or a factory that
        cannot run on the entries (one that also reads a tensor with a value per copy),
        is called again with its parents gathered per copy."""
        if not read_rows:
            return self._checked(node, self._call(node, fn, args))
        outer = node.flattened
        ragged = next(p for p in node.plates if self.model.plates[p].ragged)
        try:
            d = self._checked(node, self._call(node, fn, args))
            read = at_entries(exact_log_probs(d), self.ragged[ragged].entries,
                              self.program.dims[outer], self._held(outer))
        except ModelError:
            read = None
        if read is not None:
            return read
        args = {p.arg: self._at_entries(node, p.node, args[p.arg]) for p in parents}
        return self._checked(node, self._call(node, fn, args))

    @staticmethod
    def _checked(node: Node, d: Any) -> Distribution:
        if not isinstance(d, Distribution):
            raise ModelError(f"node {node.name!r} ({node.declared_at}): the factory returned "
                             f"{type(d).__name__}, not a distribution; return e.g. "
                             "dist.Normal(loc, scale).")
        return d

    def _held(self, plate: str) -> int:
        """The entries of ``plate`` this run holds: its minibatch's, or all of them."""
        return self.indices[plate].shape[0] if plate in self.indices else self.sizes[plate]

    def _at_entries(self, node: Node, parent: str | None, value: Any) -> Any:
        """A parent of a node in a ragged plate, read at each copy's entry of the enclosing
        plate (``theta[doc_of_word]``): the ragged plate shares the enclosing plate's batch
        dim, so the gather keeps it there. Parents outside that plate, or broadcast along
        it, are read as they are."""
        axis = self._entry_axis(node, parent, value)
        if axis is None:
            return value
        ragged = next(p for p in node.plates if self.model.plates[p].ragged)
        return value.index_select(axis, self.ragged[ragged].entries)

    def _entry_axis(self, node: Node, parent: str | None, value: Any) -> int | None:
        """The axis of ``value`` (a parent's) along the enclosing plate of ``node``'s ragged
        plate, or None where the parent does not vary along it."""
        outer = node.flattened
        if parent is None or outer not in self.model.nodes[parent].plates or (
                self.model.nodes[parent].flattened is not None):
            return None
        if not isinstance(value, torch.Tensor):
            return None
        event_dim = self.event_dims.get(parent, self.model.nodes[parent].event_dim)
        axis = value.dim() - event_dim + self.program.dims[outer]
        if axis < 0 or value.shape[axis] == 1:
            if self.model.nodes[parent].is_random and self._held(outer) > 1:
                # A latent of the enclosing plate not laid out along it: enumerated. Pyro's
                # enumeration shares one value per plate entry only with nested plates, so
                # the flat copies cannot be matched to their entry's value.
                raise ModelError(
                    f"node {node.name!r} ({node.declared_at}) reads {parent!r} of plate "
                    f"{outer!r} from a ragged plate while {parent!r} is enumerated; Pyro's "
                    "enumeration cannot follow a ragged plate. Declare it with "
                    "enumerate=False, or use an engine that does not enumerate it in Pyro.")
            return None
        return axis

    def _sample(self, node: Node, site: str, step: int | None, d: Distribution
                ) -> torch.Tensor:
        d = exact_log_probs(d)  # a probability of 0 scores -inf at the site, not log eps
        obs = None
        infer = dict(node.infer)
        if node.kind == "observed":
            obs = self._data(node, step, d.event_dim)
            if obs is None and not self.program.generative:
                raise ModelError(f"observed node {node.name!r} ({node.declared_at}) has no data; "
                                 f"pass {node.name}=... (or use the 'prior' engine to sample it).")
        elif node.name in self.data:  # a latent given as data is conditioned on
            obs = self._data(node, step, d.event_dim)
        elif node.enumerate and d.has_enumerate_support:
            infer.setdefault("enumerate", "parallel")
        if obs is not None and self.program.generative:
            check_support(node, d, obs)  # nothing scores it here, so Pyro never checks it
        self._check_batch_shape(node, d)
        self.event_dims[node.name] = d.event_dim
        try:
            return pyro.sample(site, d, obs=obs, infer=infer)
        except _USER_ERRORS as e:
            raise ModelError(
                f"node {node.name!r} ({node.declared_at}): Pyro rejected the sample site: "
                f"{type(e).__name__}: {_brief(e)}. Check that the distribution's batch shape "
                f"{tuple(d.batch_shape)} matches plates {node.plates} (use .to_event(n) for "
                "event dims)."
            ) from e

    def _check_batch_shape(self, node: Node, d: Distribution) -> None:
        """Refuse a distribution whose batch shape has an axis no plate explains: an axis of
        size > 1 where no plate is active, or of another size than the plate there. Inside
        the model's plates it would be summed as if it were a plate's; outside them, in a
        run that enumerates nothing (drawing from the prior), it would make every draw of
        the node that many draws, each read as one -- a factory that indexes a param with
        its parent's value along the wrong axis (``probs[:, z]`` for ``Vindex(probs)[...,
        z]``) does this silently. Left of the model's plates a run that enumerates keeps
        its enumeration axes, which Pyro checks."""
        from pyro.poutine.runtime import get_plates

        frames = {f.dim: f.size for f in get_plates() if f.dim is not None}
        nesting = self.program.max_plate_nesting
        for axis in range(-1, -len(d.batch_shape) - 1, -1):
            size = d.batch_shape[axis]
            if size == 1 or frames.get(axis) == size:
                continue
            if axis < -nesting and not self.program.generative:
                continue  # an enumeration axis, or a vectorised plate of particles
            plate = next((p for p, dim in self.program.dims.items() if dim == axis), None)
            where = (f"the axis of plate {plate!r} (size {frames.get(axis)})"
                     if plate is not None and axis in frames else "no plate's axis")
            raise ModelError(
                f"node {node.name!r} ({node.declared_at}): its distribution has batch shape "
                f"{tuple(d.batch_shape)}, whose axis {axis} of size {size} is {where}. Every "
                f"batch axis must be a plate of the node ({', '.join(node.plates) or 'none'}, "
                "the innermost rightmost) or of size 1: index tables along a parent's "
                "value with pyro.ops.indexing.Vindex (Vindex(probs)[..., z]) and declare "
                "per-draw dimensions with .to_event(n).")

    def _call(self, node: Node, fn: Any, args: dict[str, Any]) -> Any:
        try:
            return fn(**args)
        except ModelError:
            raise
        except _USER_ERRORS as e:
            shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in args.items()
                               if isinstance(v, torch.Tensor))
            raise ModelError(f"node {node.name!r} ({node.declared_at}): its factory raised "
                             f"{type(e).__name__}: {_brief(e)}" + (f" (parent shapes {shapes})"
                                                                   if shapes else "")) from e

    def _log_potential(self, node: Node, fn: Any, args: dict[str, Any]) -> torch.Tensor:
        value = self._call(node, fn, args)
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        return value

    def _data(self, node: Node, step: int | None, event_dim: int) -> torch.Tensor | None:
        value = self.data.get(node.name)
        if value is None:
            return None
        if step is not None:
            if value.dim() == 0 or value.shape[0] <= step:
                raise ModelError(f"data for chain node {node.name!r} ({node.declared_at}) needs "
                                 "the time axis first, one entry per step.")
            value = value[step]
        return to_pyro_layout(node, value, self.program.dims, self.sizes, self.indices)

    def _param_init(self, node: Node) -> torch.Tensor:
        init = node.value() if callable(node.value) else node.value
        try:
            t = as_data(self.model, node.name, init)
        except ModelError as e:
            raise ModelError(f"param {node.name!r} ({node.declared_at}): initial value is not "
                             f"tensor-like: {e}") from e
        if not bool(node.constraint.check(t).all()):
            raise ModelError(f"param {node.name!r} ({node.declared_at}): initial value violates "
                             f"its constraint {node.constraint}.")
        return t.clone()
