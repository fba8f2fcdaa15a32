"""Any PyTorch classifier as a layered network: the named modules whose outputs are the representations,
and the head (the rest of the network after the last of them).

The paper analyses a ResMLP's residual blocks; nothing in the method needs more than (i) the outputs of a
few modules, recorded with forward hooks and flattened to (n, d_l), and (ii) a map from the last recorded
output back to the network's logits. :class:`LayeredNetwork` holds both for any ``torch.nn.Module``:

>>> net = LayeredNetwork.from_module(model, ["block2", "fc1", "fc2"], example=x[:64])
>>> layers = net.record(x)          # [(n, 784), (n, 128), (n, 64)] float32
>>> logits = net.head(layers[-1])   # (n, classes), equal to model(x)

The head is found by cutting the network's ``torch.fx`` graph after the last named module (every
operation that depends on that module's output, in the original order). Where the graph cannot be cut
there (a skip connection around the layer, control flow that fx cannot trace), pass ``head=`` explicitly:
a module that maps the layer's output, in its own shape, to the logits. Either head is checked on the
example batch: it must reproduce the network's logits, else :class:`NetworkError` says by how much not.

Networks come from code, never from a pickle: :func:`build_network` imports a constructor given as
``package.module:function`` and calls it with keyword arguments; :func:`load_weights` reads a safetensors
file and checks every tensor's name and shape before loading.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from kaepipe.errors import KaepipeError
from kaepipe.tensor_io import load_safetensors

HeadLike = nn.Module | Callable[[torch.Tensor], torch.Tensor]


class NetworkError(KaepipeError, ValueError):
    """A network, its layer names, its head or its weights do not fit together."""


# --------------------------------------------------------------------------------------------
# Named modules
# --------------------------------------------------------------------------------------------

def module_names(model: nn.Module) -> list[str]:
    """The qualified names of every submodule, in registration order (the root's name '' left out)."""
    return [name for name, _ in model.named_modules() if name]


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule of a qualified name; the error lists the names that exist (closest first)."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    names = module_names(model)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
    raise NetworkError(f"{type(model).__name__} has no module named {name!r}{hint}; its modules are: {shown}")


def check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """The layer names, checked: at least two, distinct, each a submodule of the network."""
    layers = [str(name) for name in layers]
    if len(layers) < 2:
        raise NetworkError(f"give at least two layer names (the first and the last representation), got {layers}")
    dup = sorted({n for n in layers if layers.count(n) > 1})
    if dup:
        raise NetworkError(f"layer names repeated: {dup}")
    for name in layers:
        get_module(model, name)
    return layers


# --------------------------------------------------------------------------------------------
# Recording representations
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def record(model: nn.Module, layers: Sequence[str], x: torch.Tensor, batch_size: int = 4096,
           flatten: bool = True, with_output: bool = False
           ) -> list[torch.Tensor] | tuple[list[torch.Tensor], torch.Tensor]:
    """The outputs of the named modules for inputs x, recorded with forward hooks in eval mode.

    x: (n, ...) on the model's device. Returns one tensor per layer on that device: (n, d_l) when
    `flatten`, else in the module's own output shape; with `with_output`, also the network's own output
    (its logits) of the same forward pass. A module called more than once per forward pass, or one that
    returns something other than a tensor, is refused (its representation is ambiguous).
    """
    layers = check_layers(model, layers)
    store: list[list[torch.Tensor]] = [[] for _ in layers]
    calls = [0] * len(layers)

    def hook(i: int) -> Callable:
        def fn(_module, _inputs, out) -> None:
            if not isinstance(out, torch.Tensor):
                raise NetworkError(f"module {layers[i]!r} returns {type(out).__name__}, not a tensor; name a module "
                                   "whose output is the representation")
            calls[i] += 1
            store[i].append(out.detach().flatten(1) if flatten else out.detach())
        return fn

    handles = [get_module(model, name).register_forward_hook(hook(i)) for i, name in enumerate(layers)]
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for batches, start in enumerate(range(0, len(x), batch_size), start=1):
            outputs.append(model(x[start:start + batch_size]))
            for name, c in zip(layers, calls):
                if c != batches:
                    raise NetworkError(f"module {name!r} ran {c - batches + 1} times in one forward pass; name a "
                                       "module that runs once (its output is then one representation)")
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    recorded = [torch.cat(chunks) for chunks in store]
    if not with_output:
        return recorded
    if not all(isinstance(o, torch.Tensor) for o in outputs):
        raise NetworkError(f"the network must return logits (n, classes); it returned {type(outputs[0]).__name__}")
    return recorded, torch.cat(outputs)


# --------------------------------------------------------------------------------------------
# The head: the network after a named module
# --------------------------------------------------------------------------------------------

class _LeafTracer(fx.Tracer):
    """An fx tracer that keeps the named layers as single calls (not traced into)."""

    def __init__(self, leaves: Sequence[str]) -> None:
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


def head_after(model: nn.Module, layer: str) -> fx.GraphModule:
    """The network's remainder after the module `layer`: a module mapping that module's output (in its own
    shape) to the network's output, cut from the network's fx graph.

    Every operation that depends on the layer's output is kept, in the original order, with the parameters
    and buffers it reads. Raises NetworkError when fx cannot trace the network, when the module is called
    more than once, or when the remainder also reads a value computed before the layer from the input
    (a skip connection around it): give the head explicitly then.
    """
    get_module(model, layer)
    try:
        graph = _LeafTracer([layer]).trace(model)
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, ...) on untraceable code
        raise NetworkError(f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {exc}); give the "
                           f"head after {layer!r} explicitly (a module mapping its output to the logits)") from exc
    cut = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(cut) != 1:
        raise NetworkError(f"module {layer!r} is called {len(cut)} times in {type(model).__name__}'s traced forward "
                           "pass; the head after it is ambiguous: give it explicitly")
    after: set[fx.Node] = {cut[0]}
    for node in graph.nodes:  # graph.nodes is in topological order
        if any(a in after for a in node.all_input_nodes):
            after.add(node)
    needed_before = {a for n in after if n is not cut[0] for a in n.all_input_nodes if a not in after}
    leaks = [a for a in needed_before if _reads_input(a)]
    if leaks:
        raise NetworkError(f"the remainder of {type(model).__name__} after {layer!r} also reads "
                           f"{', '.join(sorted(a.name for a in leaks))}, computed from the input before it (a skip "
                           "connection around the layer?); give the head explicitly")
    out_node = next(n for n in graph.nodes if n.op == "output")
    if not any(a in after for a in out_node.all_input_nodes):
        raise NetworkError(f"the output of {type(model).__name__} does not depend on module {layer!r}")
    constants = _ancestors(needed_before)  # attributes and constants the remainder reads
    head = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut[0]: head.placeholder("h")}
    for node in graph.nodes:
        if node is cut[0] or node.op == "placeholder":
            continue
        if node in after or node.op == "output" or node in constants:
            env[node] = head.node_copy(node, lambda a: env[a])
    return fx.GraphModule(model, head, class_name=f"{type(model).__name__}HeadAfter_{layer.replace('.', '_')}")


def _reads_input(node: fx.Node) -> bool:
    """Whether a node depends on a placeholder (the network's input)."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n.op == "placeholder":
            return True
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return False


def _ancestors(nodes: set[fx.Node]) -> set[fx.Node]:
    """The nodes and everything they depend on (constants and attributes the head reads)."""
    seen, todo = set(), list(nodes)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


class FlatHead(nn.Module):
    """A head that takes flattened representations (n, d) and reshapes them to the layer's output shape."""

    def __init__(self, head: HeadLike, shape: Sequence[int]) -> None:
        super().__init__()
        self.head = head if isinstance(head, nn.Module) else _Wrapped(head)
        self.shape = tuple(int(s) for s in shape)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h.reshape(len(h), *self.shape))


class _Wrapped(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fn(h)


# --------------------------------------------------------------------------------------------
# The layered network
# --------------------------------------------------------------------------------------------

class LayeredNetwork:
    """A classifier with named representation layers and its head.

    module: the network (x (n, ...) -> logits (n, classes)); layers: the names of the modules whose outputs
    are the representations L_0 .. L_m (first to last); shapes: each layer's per-sample output shape;
    head: a FlatHead, flattened last-layer representations (n, d_m) -> logits (n, classes).
    """

    def __init__(self, module: nn.Module, layers: Sequence[str], head: FlatHead, shapes: Sequence[tuple[int, ...]]):
        self.module, self.layers, self.head, self.shapes = module, list(layers), head, [tuple(s) for s in shapes]

    @classmethod
    def with_shapes(cls, module: nn.Module, layers: Sequence[str], shapes: Sequence[Sequence[int]],
                    head: HeadLike | None = None) -> LayeredNetwork:
        """Wrap a network whose layer shapes are known (e.g. from its checkpoint), without an example batch:
        the head is cut from its fx graph unless given. Nothing is run: check it with `check_head` on the layers
        and logits of one `record(..., with_output=True)` pass."""
        layers = check_layers(module, layers)
        if len(shapes) != len(layers):
            raise NetworkError(f"{len(shapes)} layer shapes for {len(layers)} layers {layers}")
        remainder = head if head is not None else head_after(module, layers[-1])
        return cls(module, layers, FlatHead(remainder, shapes[-1]), shapes)

    @classmethod
    def from_module(cls, module: nn.Module, layers: Sequence[str], example: torch.Tensor,
                    head: HeadLike | None = None, rtol: float = 1e-4, atol: float = 1e-5) -> LayeredNetwork:
        """Wrap a network: check the layer names, find the head (or take the given one) and check on the
        `example` inputs (a few samples, on the network's device) that head(last layer) reproduces the
        network's logits to (rtol, atol)."""
        layers = check_layers(module, layers)
        if len(example) == 0:
            raise NetworkError("the example batch is empty; give a few input samples")
        outs, logits = record(module, layers, example, flatten=False, with_output=True)
        shapes = [tuple(o.shape[1:]) for o in outs]
        remainder = head if head is not None else head_after(module, layers[-1])
        flat = FlatHead(remainder, shapes[-1])
        net = cls(module, layers, flat, shapes)
        net.check_head(outs[-1].flatten(1), logits, rtol=rtol, atol=atol, given=head is not None)
        return net

    @property
    def widths(self) -> list[int]:
        """Flattened width d_l of each layer."""
        return [int(np.prod(s)) for s in self.shapes]

    @torch.no_grad()
    def check_head(self, last: torch.Tensor, want: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5,
                   given: bool = False) -> None:
        """Raise NetworkError unless head(last) equals `want`, the network's logits for the inputs whose
        flattened last layer is `last` (both from one `record(..., with_output=True)` pass)."""
        was_training = self.module.training  # the head may share the network's modules
        try:
            got = self.head.eval()(last)
        except Exception as exc:  # a head that does not take this layer's output
            raise NetworkError(f"the head ({'given' if given else 'found after ' + repr(self.layers[-1])}) does "
                               f"not take layer {self.layers[-1]!r}'s output of shape {self.shapes[-1]} per "
                               f"sample: {type(exc).__name__}: {exc}") from exc
        finally:
            self.module.train(was_training)
        if not isinstance(want, torch.Tensor) or want.ndim != 2:
            raise NetworkError(f"the network must return logits (n, classes); it returned "
                               f"{tuple(want.shape) if isinstance(want, torch.Tensor) else type(want).__name__}")
        if got.shape != want.shape or not torch.allclose(got, want, rtol=rtol, atol=atol):
            diff = (got - want).abs().max().item() if got.shape == want.shape else float("nan")
            raise NetworkError(f"the head after {self.layers[-1]!r} does not reproduce the network's logits (shape "
                               f"{tuple(got.shape)} vs {tuple(want.shape)}, largest difference {diff:.3g}); "
                               "give the head explicitly")

    def record(self, x: torch.Tensor, batch_size: int = 4096, with_output: bool = False
               ) -> list[torch.Tensor] | tuple[list[torch.Tensor], torch.Tensor]:
        """Flattened representations [(n, d_l)] of every layer for inputs x (on the network's device); with
        `with_output`, also the network's logits (n, classes) of the same forward pass."""
        return record(self.module, self.layers, x, batch_size, with_output=with_output)

    def to(self, device: torch.device | str) -> LayeredNetwork:
        self.module.to(device)
        self.head.to(device)
        return self


# --------------------------------------------------------------------------------------------
# Networks from code and safetensors weights
# --------------------------------------------------------------------------------------------

def import_object(spec: str) -> Any:
    """The object named by ``package.module:attribute`` (attribute may be dotted)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise NetworkError(f"constructor {spec!r}: expected 'package.module:function' (one colon)")
    mod_name, attr = spec.split(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise NetworkError(f"constructor {spec!r}: cannot import module {mod_name!r} ({exc}); is its package "
                           "installed in this environment?") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            raise NetworkError(f"constructor {spec!r}: {mod_name} has no attribute {part!r}"
                               + (f" (did you mean {', '.join(close)}?)" if close else ""))
        obj = getattr(obj, part)
    return obj


def build_network(constructor: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Call the constructor ``package.module:function`` with keyword arguments; it must return a Module."""
    fn = import_object(constructor)
    if not callable(fn):
        raise NetworkError(f"constructor {constructor!r} is not callable")
    try:
        model = fn(**dict(kwargs or {}))
    except TypeError as exc:
        raise NetworkError(f"constructor {constructor!r} with arguments {dict(kwargs or {})}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise NetworkError(f"constructor {constructor!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def weight_problems(model: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What keeps a state dict of these tensor shapes from loading into the model (empty: it fits)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"missing tensor {k!r} (shape {own[k]})" for k in own if k not in shapes]
    problems += [f"unexpected tensor {k!r}" for k in shapes if k not in own]
    problems += [f"tensor {k!r} has shape {tuple(shapes[k])}, the network's is {own[k]}"
                 for k in own if k in shapes and tuple(shapes[k]) != own[k]]
    return problems


def load_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Load a state dict into the model after checking every name and shape; the error names `source` (the file)
    and lists the problems (missing, unexpected, wrong shape)."""
    problems = weight_problems(model, {k: tuple(v.shape) for k, v in tensors.items()})
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... ({len(problems)} in all)" if len(problems) > 8 else "")
        raise NetworkError(f"{source}: weights do not fit {type(model).__name__}: {shown}")
    model.load_state_dict(tensors, strict=True)


def load_weights(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a safetensors state dict into the model after checking every name and shape (`load_state`); returns
    the file's metadata."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise NetworkError(f"{path}: network weights must be a .safetensors file (nothing is unpickled); "
                           "save them with safetensors.torch.save_file(model.state_dict(), path)")
    tensors, meta = load_safetensors(path)
    load_state(model, tensors, path)
    return meta
