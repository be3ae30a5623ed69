"""What models and guides share: named nodes declared inside plates and chains.

``Declaration`` holds the node-declaring machinery; ``genppl.Model`` (``dsl.model``) adds
guides, and ``genppl.Guide`` (``dsl.guide``) narrows it to a model's latents. Both derive
from this base rather than one from the other, so the model module can create guides
without the two modules importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import networkx as nx
import torch
from torch.distributions import constraints

from genppl.dsl.compiler import compiler
from genppl.dsl.nodes import (
    PREV_SUFFIX,
    ChainSpec,
    Node,
    NodeKind,
    Parent,
    PlateSpec,
    argument_names,
    caller_location,
    check_identifier,
)
from genppl.errors import ModelError, suggest

if TYPE_CHECKING:
    from pathlib import Path


T = TypeVar("T")

class Declaration:
    """Named nodes inside plates and chains: a model's or a guide's (see module doc)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: dict[str, Node] = {}
        self.plates: dict[str, PlateSpec] = {}
        self.chains: dict[str, ChainSpec] = {}
        self._device = torch.device("cpu")
        self._dtype = torch.get_default_dtype()
        self._plate_stack: list[str] = []
        self._chain: str | None = None
        self._pending_prev: list[tuple[str, str, str]] = []  # (node, base, where)
        self._graph_cache: nx.DiGraph | None = None
        self._derived: dict[type, Any] = {}

    # ------------------------------------------------------------------ structure contexts
    @contextmanager
    def plate(
        self,
        name: str,
        size: int | None = None,
        *,
        subsample_size: int | None = None,
        dim: int | None = None,
        sizes: str | None = None,
        symbol: str | None = None,
    ) -> Iterator[str]:
        """Declare nodes inside a plate of ``size`` independent copies (``pyro.plate``).

        ``size=None`` takes the size from the data at inference time. Re-entering a plate by
        name reuses it. ``subsample_size`` draws a random minibatch of that many indices per
        model call; observed data and inputs in the plate are indexed with it, and Pyro scales
        their log-likelihood by ``size / subsample_size``.

        ``sizes="lengths"`` makes a *ragged* plate inside the enclosing one: entry ``d`` of
        the enclosing plate has ``lengths[d]`` copies (zero allowed), where ``lengths`` is an
        input of the enclosing plate, declared here if it is not yet (documents of different
        lengths, each with its words, as Blei et al. draw LDA). Nodes inside read the
        enclosing plate's nodes at their own entry, and their data is one flat axis: the
        entries' copies concatenated in order (see ``docs/dsl.md``). ``symbol`` is the
        letter a size unknown until data arrive is drawn with (default: the name's first
        letter, upper case).
        """
        where = caller_location()
        check_identifier(name, "plate", where)
        if symbol is not None and (not isinstance(symbol, str) or not symbol):
            raise ModelError(f"plate {name!r} ({where}): symbol must be a non-empty string.")
        if self._plate_stack and self.plates[self._plate_stack[-1]].ragged:
            raise ModelError(f"plate {name!r} ({where}) is opened inside ragged plate "
                             f"{self._plate_stack[-1]!r}; a ragged plate is innermost.")
        spec = self.plates.get(name)
        if spec is None:
            if name in self.nodes or name in self.chains:
                raise ModelError(f"plate {name!r} ({where}) clashes with a node or chain name.")
            for value, label in ((size, "size"), (subsample_size, "subsample_size")):
                if value is not None and (not isinstance(value, int) or value < 1):
                    raise ModelError(
                        f"plate {name!r} ({where}): {label} must be a positive int, got {value!r}."
                    )
            if dim is not None and (not isinstance(dim, int) or dim >= 0):
                raise ModelError(f"plate {name!r} ({where}): dim must be a negative int.")
            parent = self._plate_stack[-1] if self._plate_stack else None
            if sizes is not None:
                self._check_ragged(name, sizes, size, subsample_size, dim, where)
            spec = PlateSpec(name, size, subsample_size, dim, parent, where, sizes, symbol)
            self.plates[name] = spec
        elif size is not None and spec.size is not None and size != spec.size:
            raise ModelError(
                f"plate {name!r} re-entered at {where} with size {size}, but it was declared "
                f"with size {spec.size} at {spec.declared_at}."
            )
        elif sizes is not None and sizes != spec.sizes:
            raise ModelError(f"plate {name!r} re-entered at {where} with sizes={sizes!r}, but "
                             f"it was declared with sizes={spec.sizes!r} at {spec.declared_at}.")
        if spec.ragged and tuple(self._plate_stack) != (spec.parent,):
            raise ModelError(f"ragged plate {name!r} ({where}) is re-entered outside its "
                             f"enclosing plate {spec.parent!r}; open it inside that plate only.")
        if name in self._plate_stack:
            raise ModelError(f"plate {name!r} ({where}) is already open; plates cannot nest twice.")
        self._plate_stack.append(name)
        self._invalidate()
        try:
            yield name
        finally:
            self._plate_stack.pop()

    def _check_ragged(self, name: str, sizes: str, size: int | None,
                      subsample_size: int | None, dim: int | None, where: str) -> None:
        """A ragged plate sits directly in one top-level plate (subsampled or not: a
        minibatch of its entries holds their copies), with its sizes an input of that plate
        (declared here if new)."""
        if len(self._plate_stack) != 1 or self._chain is not None:
            raise ModelError(f"ragged plate {name!r} ({where}) must be opened directly inside "
                             "one top-level plate (e.g. documents), outside any chain; it is "
                             f"inside {list(self._plate_stack) or 'no plate'}"
                             + (f" and chain {self._chain!r}." if self._chain else "."))
        outer = self.plates[self._plate_stack[0]]
        for value, label in ((size, "size"), (subsample_size, "subsample_size"), (dim, "dim")):
            if value is not None:
                raise ModelError(f"ragged plate {name!r} ({where}) takes no {label}=: its "
                                 f"sizes are read from input {sizes!r} per entry of plate "
                                 f"{outer.name!r}.")
        if not isinstance(sizes, str):
            raise ModelError(f"ragged plate {name!r} ({where}): sizes= names the input that "
                             f"holds each entry's size, e.g. sizes=\"lengths\"; got {sizes!r}.")
        check_identifier(sizes, "input", where)
        node = self.nodes.get(sizes)
        if node is None:
            self.input(sizes)
        elif node.kind != "input" or node.plates != (outer.name,) or node.event_dim:
            raise ModelError(f"ragged plate {name!r} ({where}): sizes={sizes!r} must be an input "
                             f"of plate {outer.name!r} with one value per entry; it is the "
                             f"{node.kind} declared at {node.declared_at}.")

    @contextmanager
    def chain(
        self, name: str, length: int | None = None, *, reverse: bool = False
    ) -> Iterator[str]:
        """Declare nodes repeated along a time index ``name`` (HMMs, Kalman, diffusion).

        Inside, a factory argument ``z_prev`` reads node ``z`` at the previous step and an
        argument named like the chain reads the step index itself. A node reading a previous
        step gives ``init=`` for the first step. ``length=None`` takes the length from the
        leading dimension of the chain's observed data. ``reverse=True`` runs the steps from
        ``length - 1`` down to ``0`` (a diffusion model's reverse process).
        """
        where = caller_location()
        check_identifier(name, "chain", where)
        if self._chain is not None:
            raise ModelError(f"chain {name!r} ({where}) is opened inside chain {self._chain!r}; "
                             "chains do not nest. Declare a second chain after the first.")
        if name in self.chains or name in self.plates or name in self.nodes:
            raise ModelError(f"chain {name!r} ({where}) is already declared as a chain, plate "
                             "or node; give it a new name.")
        if length is not None and (not isinstance(length, int) or length < 1):
            raise ModelError(f"chain {name!r} ({where}): length must be a positive int.")
        ragged = [p for p in self._plate_stack if self.plates[p].ragged]
        if ragged:
            raise ModelError(f"chain {name!r} ({where}) is opened inside ragged plate "
                             f"{ragged[0]!r}; a ragged plate holds no chain.")
        self.chains[name] = ChainSpec(name, length, reverse, tuple(self._plate_stack), where)
        self._chain = name
        self._invalidate()
        try:
            yield name
        finally:
            self._chain = None
        self._check_pending_prev(name)

    # ------------------------------------------------------------------ node declarations
    def latent(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        init: Callable[..., Any] | None = None,
        enumerate: bool = True,
        infer: dict[str, Any] | None = None,
        parents: Sequence[str] | None = None,
    ) -> str:
        """A latent random variable whose distribution is ``fn(**parents)``.

        Latents with finite support are marked for exact enumeration in the compiled Pyro
        model unless ``enumerate=False``. ``parents=[...]`` names the parents explicitly
        (for factories built by code, whose node names are chosen by a caller): ``fn`` then
        receives their values positionally, in that order, whatever its argument names.
        """
        return self._declare_random(name, "latent", fn, init, enumerate, infer, parents)

    def observed(
        self, name: str, fn: Callable[..., Any], *, init: Callable[..., Any] | None = None,
        parents: Sequence[str] | None = None,
    ) -> str:
        """An observed random variable; its value comes from the data keyword ``name``.
        ``parents=`` as for ``latent``."""
        return self._declare_random(name, "observed", fn, init, True, None, parents)

    def deterministic(self, name: str, fn: Callable[..., Any], *, event_dim: int = 0,
                      parents: Sequence[str] | None = None) -> str:
        """A value computed from its parents, recorded as ``pyro.deterministic``.
        ``parents=`` as for ``latent``."""
        where = caller_location()
        fn, names = _explicit(fn, parents)
        parents = self._resolve(name, fn, where, names)
        self._add(Node(name, "deterministic", where, fn=fn, parents=parents, event_dim=event_dim,
                       plates=tuple(self._plate_stack), chain=self._chain))
        return name

    def param(self, name: str, init: Any, *, constraint: Any = constraints.real) -> str:
        """A learnable parameter (``pyro.param``) with its initial value and constraint.

        ``init`` is a tensor-like or a zero-argument callable; it is created on the model's
        device and, when floating point, in the model's dtype.
        """
        where = caller_location()
        self._require_global("param", name, where)
        if not isinstance(constraint, constraints.Constraint):
            raise ModelError(f"param {name!r} ({where}): constraint must be a "
                             "torch.distributions.constraints object, e.g. constraints.positive.")
        self._add(Node(name, "param", where, value=init, constraint=constraint))
        return name

    def module(self, name: str, module: torch.nn.Module) -> str:
        """A neural network trained with the model; children call it like a function."""
        where = caller_location()
        self._require_global("module", name, where)
        if not isinstance(module, torch.nn.Module):
            raise ModelError(f"module {name!r} ({where}): expected a torch.nn.Module, got "
                             f"{type(module).__name__}.")
        module.to(device=self.device, dtype=self.dtype)  # a module joins the model where it is
        self._add(Node(name, "module", where, value=module))
        return name

    def input(self, name: str, *, event_dim: int = 0) -> str:
        """A covariate given at inference time (by keyword ``name``), not modelled."""
        where = caller_location()
        self._add(Node(name, "input", where, event_dim=event_dim,
                       plates=tuple(self._plate_stack), chain=self._chain))
        return name

    def factor(self, name: str, fn: Callable[..., Any],
               scope: Sequence[str] | None = None) -> str:
        """An undirected log-potential over ``scope`` added to the log joint (``pyro.factor``).

        By default the scope is ``fn``'s argument names. For generated models (grids, factor
        graphs read from files) pass ``scope`` explicitly; ``fn`` then receives the scope's
        values positionally, in that order.
        """
        where = caller_location()
        fn, names = _explicit(fn, scope)
        parents = self._resolve(name, fn, where, names)
        if not parents:
            raise ModelError(f"factor {name!r} ({where}) has an empty scope; its function must "
                             "take the variables it couples as arguments.")
        self._add(Node(name, "factor", where, fn=fn, parents=parents,
                       plates=tuple(self._plate_stack), chain=self._chain))
        return name

    def cpt(
        self,
        name: str,
        parents: Sequence[str],
        table: Any,
        *,
        states: Sequence[str] | None = None,
        observed: bool = False,
    ) -> str:
        """A discrete node given by a conditional probability table.

        ``table[i, j, ..., k]`` is P(name = k | parents = (i, j, ...)), so its shape is the
        parents' cardinalities followed by this node's.
        """
        from genppl.dsl.tables import cpt_factory

        where = caller_location()
        parents = tuple(parents)
        for p in parents:
            if p not in self.nodes:
                raise ModelError(f"CPT {name!r} ({where}) has unknown parent {p!r}: declare it "
                                 f"before {name!r}." + suggest(p, self.nodes))
        fn, card = cpt_factory(self, name, parents, table, where)
        if states is not None and len(states) != card:
            raise ModelError(f"CPT {name!r} ({where}): {len(states)} state names for a table "
                             f"with {card} states.")
        resolved = tuple(Parent(p, p) for p in parents)
        self._check_parents(name, resolved, where)
        self._add(Node(name, "observed" if observed else "latent", where, fn=fn,
                       parents=resolved, plates=tuple(self._plate_stack), chain=self._chain,
                       states=tuple(states) if states is not None else None,
                       cardinality=card))
        return name

    def variable(
        self, name: str, cardinality: int, *, states: Sequence[str] | None = None
    ) -> str:
        """A discrete variable of an undirected model (MRF, Ising, RBM) with ``cardinality``
        states and a counting base measure: its distribution comes from the factors on it."""
        from genppl.dsl.tables import uniform_factory

        where = caller_location()
        if not isinstance(cardinality, int) or cardinality < 2:
            raise ModelError(f"variable {name!r} ({where}): cardinality must be an int >= 2.")
        if states is not None and len(states) != cardinality:
            raise ModelError(f"variable {name!r} ({where}): {len(states)} state names for "
                             f"cardinality {cardinality}.")
        self._add(Node(name, "latent", where, fn=uniform_factory(self, cardinality),
                       plates=tuple(self._plate_stack), chain=self._chain,
                       states=tuple(states) if states is not None else None,
                       cardinality=cardinality))
        return name

    # ------------------------------------------------------------------ views
    def __getitem__(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise ModelError(f"model {self.name!r} has no node {name!r}."
                             + suggest(name, self.nodes)) from None

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for node in self.nodes.values():
            kinds[node.kind] = kinds.get(node.kind, 0) + 1
        parts = ", ".join(f"{v} {k}" for k, v in kinds.items())
        return f"Model({self.name!r}: {parts})"

    def names(self, *kinds: NodeKind) -> list[str]:
        """Node names of the given kinds, in declaration order."""
        return [n.name for n in self.nodes.values() if n.kind in kinds]

    @property
    def latent_names(self) -> list[str]:
        return self.names("latent")

    @property
    def observed_names(self) -> list[str]:
        return self.names("observed")

    @property
    def graph(self) -> nx.DiGraph:
        """The static template graph (see ``docs/graph.md``), built from the declaration."""
        from genppl.dsl.to_graph import build_graph

        if self._graph_cache is None:
            self._graph_cache = build_graph(self)
        return self._graph_cache

    @property
    def pyro_model(self) -> Callable[..., Any]:
        """A plain Pyro model callable taking the data and inputs as keyword arguments
        (compiled by ``genppl.pyro``, reached through the seam ``genppl.dsl.compiler``)."""
        return compiler().program(self, generative=False)

    def prior_program(self) -> Callable[..., Any]:
        """The compiled model with observed nodes sampled when their data is absent."""
        return compiler().program(self, generative=True)

    @property
    def device(self) -> torch.device:
        """Where every tensor the model makes lives (see ``to``)."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of params, tables, floating data and literals in factories."""
        return self._dtype

    # ------------------------------------------------------------------ graph analysis
    def topological_order(self) -> list[str]:
        from genppl.graph import analysis

        return analysis.topological_order(self.graph)

    def markov_blanket(self, name: str) -> set[str]:
        from genppl.graph import analysis

        return analysis.markov_blanket(self.graph, name)

    def d_separated(self, xs: str | Sequence[str], ys: str | Sequence[str],
                    given: str | Sequence[str] = ()) -> bool:
        """Whether ``xs`` and ``ys`` are independent given ``given`` for every parameter value."""
        from genppl.graph import analysis

        return analysis.d_separated(self.graph, _as_set(xs), _as_set(ys), _as_set(given))

    def moral_graph(self) -> nx.Graph:
        from genppl.graph import analysis

        return analysis.moral_graph(self.graph)

    def elimination_order(self, heuristic: str = "min_fill") -> tuple[list[str], int]:
        """A greedy elimination order of the finite latent variables and its induced width.

        Chains are unrolled first, so the order speaks of individual steps (``z[3]``).
        """
        from genppl.graph import analysis

        g = self.graph
        unrolled = analysis.unroll(g) if g.graph["chains"] else g
        moral = analysis.moral_graph(unrolled)
        finite = [v for v in moral if unrolled.nodes[v]["kind"] == "latent"
                  and unrolled.nodes[v]["support"] == "finite"]
        sub = moral.subgraph(finite).copy()
        card = {v: unrolled.nodes[v]["cardinality"] or 2 for v in finite}
        order = analysis.elimination_order(sub, heuristic, card)
        return order, analysis.induced_width(sub, order)

    def render(self, path: str | Path) -> Path:
        """Draw the model in plate notation; the format follows the extension (svg/png/pdf)."""
        from genppl.graph.render import render

        return render(self.graph, path)

    def derived(self, kind: type[T]) -> T:
        """The one ``kind()`` this declaration keeps for state derived from it (a Bayesian
        network's tables, say), made on first use. It lives as long as the declaration and
        is dropped when the declaration changes, so callers hold no cache of their own keyed
        by the model."""
        held = self._derived.get(kind)
        if held is None:
            held = self._derived[kind] = kind()
        return held

    # ------------------------------------------------------------------ internals
    def _invalidate(self) -> None:
        self._graph_cache = None
        self._derived.clear()

    def _declare_random(self, name: str, kind: NodeKind, fn: Callable[..., Any],
                        init: Callable[..., Any] | None, enumerate: bool,
                        infer: dict[str, Any] | None,
                        explicit: Sequence[str] | None = None) -> str:
        where = caller_location()
        fn, names = _explicit(fn, explicit)
        parents = self._resolve(name, fn, where, names)
        init_parents: tuple[Parent, ...] = ()
        reads_prev = any(p.lag for p in parents)
        if reads_prev and init is None:
            raise ModelError(
                f"node {name!r} ({where}) reads a previous step "
                f"({', '.join(p.arg for p in parents if p.lag)}) but has no init=; give "
                "init=lambda ...: <distribution of the first step>."
            )
        if init is not None:
            if self._chain is None:
                raise ModelError(f"node {name!r} ({where}): init= is for chain nodes; declare "
                                 "it inside `with model.chain(...)`.")
            init_parents = self._resolve(name, init, where)
            if any(p.lag for p in init_parents):
                raise ModelError(f"node {name!r} ({where}): the init= factory is the first "
                                 "step and cannot read a previous step.")
        self._add(Node(name, kind, where, fn=fn, parents=parents, init_fn=init,
                       init_parents=init_parents, plates=tuple(self._plate_stack),
                       chain=self._chain, enumerate=enumerate, infer=dict(infer or {})))
        return name

    def _add(self, node: Node) -> None:
        check_identifier(node.name, node.kind, node.declared_at)
        node = self._placed(node)
        clash = self.nodes.get(node.name)
        if clash is not None:
            raise ModelError(f"{node.kind} {node.name!r} ({node.declared_at}) duplicates the "
                             f"{clash.kind} declared at {clash.declared_at}; names are unique.")
        if node.name in self.plates or node.name in self.chains:
            raise ModelError(f"{node.kind} {node.name!r} ({node.declared_at}) has the name of "
                             "a plate or chain; rename one of them.")
        if node.name.endswith(PREV_SUFFIX) and node.chain is not None:
            raise ModelError(f"node {node.name!r} ({node.declared_at}): names ending in "
                             f"{PREV_SUFFIX!r} are reserved inside chains for previous steps.")
        self.nodes[node.name] = node
        self._invalidate()

    def _placed(self, node: Node) -> Node:
        """``node`` with ``flattened`` set when it sits in a ragged plate (see ``Node``)."""
        ragged = [self.plates[p] for p in node.plates if self.plates[p].ragged]
        return replace(node, flattened=ragged[0].parent) if ragged else node

    def _require_global(self, kind: str, name: str, where: str) -> None:
        if self._plate_stack or self._chain:
            raise ModelError(f"{kind} {name!r} ({where}) is declared inside a plate or chain; "
                             f"declare {kind}s at the top level (they are shared by all items).")

    def _resolve(self, name: str, fn: Callable[..., Any], where: str,
                 names: Sequence[str] | None = None) -> tuple[Parent, ...]:
        parents = []
        for arg in argument_names(fn, name, where) if names is None else names:
            parents.append(self._resolve_arg(name, arg, where))
        resolved = tuple(parents)
        self._check_parents(name, resolved, where)
        return resolved

    def _resolve_arg(self, name: str, arg: str, where: str) -> Parent:
        if arg == name:
            raise ModelError(f"node {name!r} ({where}) reads itself; inside a chain read the "
                             f"previous step as {name}{PREV_SUFFIX!s}.")
        if arg in self.nodes:
            return Parent(arg, arg)
        if self._chain is not None and arg == self._chain:
            return Parent(arg, None)
        if self._chain is not None and arg.endswith(PREV_SUFFIX):
            base = arg[: -len(PREV_SUFFIX)]
            if base == name or base in self.nodes:
                if base != name and self.nodes[base].chain != self._chain:
                    raise ModelError(f"node {name!r} ({where}) reads {arg!r}, but {base!r} is "
                                     f"not in chain {self._chain!r}.")
            else:
                self._pending_prev.append((name, base, where))
            return Parent(arg, base, lag=1)
        external = self._resolve_external(arg)
        if external is not None:
            return external
        hint = ""
        if arg.endswith(PREV_SUFFIX) and self._chain is None:
            hint = f" ({arg!r} reads a previous step, which only exists inside a chain.)"
        raise ModelError(f"node {name!r} ({where}) has unknown parent {arg!r}: declare it before "
                         f"{name!r}.{hint}" + suggest(arg, self.nodes))

    def _resolve_external(self, arg: str) -> Parent | None:
        """Hook for guides, which may read the model's data nodes."""
        return None

    def _check_parents(self, name: str, parents: tuple[Parent, ...], where: str) -> None:
        plates = set(self._plate_stack)
        for p in parents:
            if p.node is None or p.node not in self.nodes:
                continue
            parent = self.nodes[p.node]
            outside = [pl for pl in parent.plates if pl not in plates]
            if outside:
                raise ModelError(
                    f"node {name!r} ({where}) reads {p.node!r}, which is inside plate "
                    f"{outside[0]!r}; a node outside a plate cannot read its per-item values. "
                    f"Declare {name!r} inside plate {outside[0]!r} too."
                )
            if parent.chain is not None and self._chain is not None and parent.chain != self._chain:
                raise ModelError(f"node {name!r} ({where}) in chain {self._chain!r} reads "
                                 f"{p.node!r} of chain {parent.chain!r}; chains are separate.")

    def _check_pending_prev(self, chain: str) -> None:
        pending, self._pending_prev = self._pending_prev, []
        for name, base, where in pending:
            if base not in self.nodes or self.nodes[base].chain != chain:
                raise ModelError(
                    f"node {name!r} ({where}) reads {base + PREV_SUFFIX!r}, but chain {chain!r} "
                    f"has no node {base!r}." + suggest(base, [
                        n for n, v in self.nodes.items() if v.chain == chain]))


def _explicit(fn: Callable[..., Any], names: Sequence[str] | None
              ) -> tuple[Callable[..., Any], tuple[str, ...] | None]:
    """A factory and its explicit parent names: with ``names`` (``parents=``, a factor's
    ``scope=``), ``fn`` is wrapped to take the parents' values by position, in that order;
    without, its argument names are the parents (``None``: read them off ``fn``)."""
    if names is None:
        return fn, None
    if isinstance(names, str):
        raise ModelError(f"parents={names!r}: pass a list of node names, e.g. [{names!r}].")
    names = tuple(names)
    return _Positional(fn, names), names


class _Positional:
    """Call ``fn`` with parent values by position, in the order of an explicit parent list."""

    def __init__(self, fn: Callable[..., Any], names: tuple[str, ...]) -> None:
        self.fn = fn
        self.names = names

    def __call__(self, **values: Any) -> Any:
        return self.fn(*(values[n] for n in self.names))


def _as_set(names: str | Sequence[str]) -> set[str]:
    return {names} if isinstance(names, str) else set(names)
