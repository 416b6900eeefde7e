"""Compiled updates (`compile=none|default|max|auto`): torch.compile of an agent's whole update step.

What is compiled is `Agent.update_step(batch, schedule)`: for SAC the critic step, the actor and
temperature steps and the Polyak update of the targets, optimiser steps included (mtrl/agents/optim.py
steps Adam on explicit gradients, and static balancers take their gradients from torch.func, so nothing
breaks the graph). The Python counters stay outside: `Agent.schedule()` turns them into a few booleans
the compiled function specialises on (at most four variants for SAC). On the CPU the acting policy's forward is
compiled with it (`compile_acting`).

Modes:
- ``none``: eager PyTorch (no compilation).
- ``default``: CPU: TorchInductor's C++ kernels (``mode="default"``) with `CPU_INDUCTOR_OPTIONS`. CUDA:
  Inductor's kernels replayed as CUDA graphs (``mode="reduce-overhead"``): one graph launch per update instead of
  ~1,000 kernels.
- ``max``: ``mode="max-autotune"`` (CUDA: autotuned GEMMs, plus CUDA graphs); CPU:
  ``"max-autotune-no-cudagraphs"``. Much longer compilation.
- ``auto``: ``default`` on CUDA. On CPU ``default`` where it is measured to pay: the update is one graph (every
  balancer static: uniform, the default) and the run makes at least `CPU_COMPILE_MIN_UPDATES` updates
  (compiling costs up to about a minute; `benchmarks/compile_cpu.py` measured the compiled update at 0.58x
  the eager one at 2 x 64 and 0.87x at 3 x 400, paying for itself within about 2,300 updates); else ``none``.

With every network on a static balancer (uniform, the default) the update is compiled with
``fullgraph=True``: one graph, no host synchronisation. On the CPU that graph (and the acting forward) is compiled
ahead of time, one graph per schedule and batch shape, and called without Dynamo's per-call guard evaluation
(`PrecompiledGraphs`: 0.94x the update at 2 x 64, 0.84x acting at 3 x 400). With other balancers (gradient methods' host
K x K solve, famo/igb/igbv2's host weight maths) torch.compile runs without fullgraph and never with
CUDA graphs: the per-task gradients (vmap of grad), losses, targets and optimiser steps are compiled,
and the graph breaks around the host step, which stays eager. An agent planned for unequal task counts
(a curriculum setting batch shares, CDS filtering) keeps the eager update: compiled shapes are static,
and every new count vector would recompile. The choice is made here, once (the agent's `UpdatePlan`).
"""

from __future__ import annotations

import dataclasses
import types
import warnings
from typing import TYPE_CHECKING, Any, Callable, Hashable

import torch
from torch import Tensor

from mtrl.agents.narrow_matmuls import NarrowMatmuls
from mtrl.batch import Batch
from mtrl.config.schema import COMPILE_MODES
from mtrl.errors import UserError

if TYPE_CHECKING:
    from mtrl.agents.acting import ActingPolicy
    from mtrl.agents.base import Agent

UpdateStep = Callable[[Batch, tuple[bool, ...]], dict[str, Tensor]]


#: On CPU `compile=auto` compiles one-graph updates of runs with at least this many updates (the compilation,
#: up to about a minute, was paid back within about 2,300 updates at every measured size: benchmarks/compile_cpu.py).
CPU_COMPILE_MIN_UPDATES = 10_000


def resolve_mode(mode: str, device: torch.device, one_graph: bool = True, planned_updates: int | None = None) -> str:
    """`auto` -> `default` on CUDA; on CPU `default` when the update is one graph (`one_graph`: every balancer
    static) in a run of at least `CPU_COMPILE_MIN_UPDATES` updates (`planned_updates`; None: unknown, no
    compilation), else `none`; other modes unchanged."""
    if mode not in COMPILE_MODES:
        raise UserError(f"compile={mode!r} is not allowed; expected one of {', '.join(COMPILE_MODES)}")
    if mode != "auto":
        return mode
    if device.type == "cuda":
        return "default"
    long_run = planned_updates is not None and planned_updates >= CPU_COMPILE_MIN_UPDATES
    return "default" if one_graph and long_run else "none"


#: Inductor settings of every CPU compilation: a C++ wrapper calls the kernels (no Python between them), and random
#: numbers come from ATen's generator, so a compiled update draws exactly the eager update's noise (Inductor's own
#: per-element random kernels were slower here). Together 0.91x the update at 2 x 64 (interleaved in one process).
CPU_INDUCTOR_OPTIONS = {"cpp_wrapper": True, "fallback_random": True}

#: And of the CPU update's. Inductor's tiling heuristics off: they turn vectorisation off for kernels with many
#: strided loads, and the policy's per-action sums (rows of act_dim = 4 values, read at strides 4 and 8) then ran as
#: scalar libm exp / log1p loops (0.37 ms of the ~6.5 ms update at 2 x 64; vectorised across rows 0.12 ms: update
#: 0.95x). Not for acting, whose 3 x 400 forward they slowed (0.27 against 0.23 ms). `NarrowMatmuls`: matmuls
#: compute only the columns that are read (the actor step's action gradient), and narrow ones transposed (0.95x).
CPU_UPDATE_OPTIONS = {"cpp.enable_tiling_heuristics": False, "post_grad_custom_pre_pass": NarrowMatmuls()}


#: Dynamo guards that only re-check the agent's module structure (submodule and parameter dicts, hooks, instance
#: attributes shadowing class ones) and aliasing between its tensors, which never change once an agent is built.
#: Checking them was about 60 % of the guard time (0.28 of 0.44 ms per update at 2 x 64, 3.7 % of the update).
#: What stays: every tensor's dtype, shape and strides, the lengths of lists, the Python values the update reads
#: (config, schedule, counts) and the types of the objects it reads them from.
STRUCTURE_GUARDS = frozenset(
    {
        "DICT_KEYS_MATCH",
        "NOT_PRESENT_IN_GENERIC_DICT",
        "EMPTY_NN_MODULE_HOOKS_DICT",
        "DUPLICATE_INPUT",
        "NO_TENSOR_ALIASING",
        "DICT_CONTAINS",
        "DICT_NOT_CONTAINS",
        "CLOSURE_MATCH",
    }
)


def update_guards(entries: list[Any]) -> list[bool]:
    """torch.compile's `guard_filter_fn`: keep every guard but the `STRUCTURE_GUARDS` and those on globals (torch's
    own modules). Each agent also compiles its own copy of the update's code (`own_code`), so another agent's
    graphs are never candidates. Only for one-graph updates: Dynamo fails to build the guards of a graph break's
    resume function under a filter."""
    return [not (entry.is_global or entry.guard_type in STRUCTURE_GUARDS) for entry in entries]


def saved_guards(entries: list[Any]) -> list[bool]:
    """The `update_guards` that an ahead-of-time compiled graph can keep (Dynamo serialises them, and not every
    kind: object identities, dict versions)."""
    unsupported = torch._dynamo.guards.CheckFunctionManager.UNSUPPORTED_SERIALIZATION_GUARD_TYPES
    return [keep and entry.guard_type not in unsupported for keep, entry in zip(update_guards(entries), entries)]


def own_code(method: Callable) -> Callable:
    """`method` bound to a copy of its function with a code object of its own: Dynamo keeps compiled graphs per
    code object, so one agent's graphs are never looked up for another agent."""
    fn = method.__func__  # type: ignore[attr-defined]
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__, copy.__qualname__ = fn.__kwdefaults__, fn.__qualname__
    return types.MethodType(copy, method.__self__)  # type: ignore[attr-defined]


def compile_options(mode: str, device: torch.device, cuda_graphs: bool, update: bool = True) -> dict[str, Any]:
    """torch.compile's `options` for one of our modes (`cuda_graphs`: whether CUDA graphs may be used): the Inductor
    settings of a torch mode (CPU: plus `CPU_INDUCTOR_OPTIONS`, and `CPU_UPDATE_OPTIONS` for an `update`)."""
    graphs = cuda_graphs and device.type == "cuda"
    if mode == "max":
        name = "max-autotune" if graphs else "max-autotune-no-cudagraphs"
    else:
        name = "reduce-overhead" if graphs else "default"
    cpu = {**CPU_INDUCTOR_OPTIONS, **(CPU_UPDATE_OPTIONS if update else {})} if device.type == "cpu" else {}
    return {**torch._inductor.list_mode_options(name), **cpu}


def is_static(agent: "Agent") -> bool:
    """Whether every trained network's balancer is static (the update then has no host work)."""
    return all(objective.balancer.static for objective in agent.objectives.values())


def mark_static_tensors(agent: "Agent") -> None:
    """Tell CUDA graphs which tensors live across updates at fixed addresses: parameters, buffers and
    optimiser states (mutated in place by the update, never copied in or out of the graph)."""
    for value in vars(agent).values():
        if isinstance(value, torch.nn.Module):
            for tensor in [*value.parameters(), *value.buffers()]:
                torch._dynamo.mark_static_address(tensor)
        elif isinstance(value, torch.optim.Optimizer):
            for group in value.param_groups:
                for p in group["params"]:
                    torch._dynamo.mark_static_address(p)
                    for tensor in value.state[p].values():
                        torch._dynamo.mark_static_address(tensor)


#: A precompiled graph re-checks Dynamo's guards on its second call (the first on inputs it was not traced on) and
#: then every this many calls.
GUARD_CHECK_EVERY = 1000


def signature(value: Any) -> Hashable:
    """What a graph specialises on in one call argument: each tensor's shape, strides, dtype, device and
    requires_grad (through dataclasses, tuples and lists); other values as they are."""
    if isinstance(value, Tensor):
        return (value.shape, value.stride(), value.dtype, value.device, value.requires_grad)
    if dataclasses.is_dataclass(value):
        return tuple(signature(getattr(value, field.name)) for field in dataclasses.fields(value))
    if isinstance(value, (tuple, list)):
        return tuple(signature(item) for item in value)
    return value


class PrecompiledGraphs:
    """`fn(owner, *args)` compiled ahead of time (torch.compile's `aot_compile`, full graph), one graph per call
    signature, each then called directly: Dynamo evaluates no guards per call. That was 0.5 of a compiled 6.2 ms
    update at 2 x 64 and 45 us of a 0.2 ms acting call at 3 x 400 (one thread, in one process).

    The key is what changes between calls: the arguments' `signature` (tensor shapes, strides, dtypes; flags such
    as the update's schedule) and the grad and inference modes. What else the graph reads (the owner's modules,
    parameters, optimiser states and config) is fixed once the owner is built; Dynamo's guards over all of it are
    checked on each graph's second call and every `GUARD_CHECK_EVERY` calls, and a failure stops with an error.
    """

    def __init__(self, fn: Callable, owner: object, name: str, options: dict[str, Any], backend: str):
        options = {**options, "guard_filter_fn": saved_guards}
        self.compiler = torch.compile(fn, fullgraph=True, backend=backend, options=options)
        self.owner, self.name = owner, name
        self.graphs: dict[Hashable, tuple[Any, list[int]]] = {}  # key -> (graph, [calls]): one lookup per call

    def __reduce__(self) -> tuple[type, tuple]:
        """Compiling a graph pickles the owner's state into its guards: there a plain object stands for this one
        (its graphs' guard managers cannot be pickled)."""
        return object, ()

    def __deepcopy__(self, memo: dict) -> "PrecompiledGraphs":
        raise TypeError(f"a compiled {self.name} cannot be copied (its graphs run on its owner): copy before compiling")

    def key(self, *args: Any) -> Hashable:
        """Which graph a call with `args` runs: their `signature` and the grad and inference modes."""
        return (signature(args), torch.is_grad_enabled(), torch.is_inference_mode_enabled())

    def __call__(self, *args: Any) -> Any:
        return self.call(self.key(*args), *args)

    def call(self, key: Hashable, *args: Any) -> Any:
        """Run the graph of `key`, which must be `self.key(*args)`: a caller whose arguments keep their signature
        from call to call (the acting policy's own buffers) computes it once (at 3 x 400 it was 5 of the 7 us
        this wrapper took per acting call)."""
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = (self.compiler.aot_compile(((self.owner, *args), {})), [0])
            entry[0].disable_guard_check()
        graph, calls = entry
        calls[0] += 1
        if (calls[0] == 2 or calls[0] % GUARD_CHECK_EVERY == 0) and not graph.guard_check(self.owner, *args):
            reason = graph._artifacts.guard_manager.check_verbose(graph.prepare_f_locals(self.owner, *args))
            raise RuntimeError(
                f"the compiled {self.name} no longer matches what it was compiled for "
                f"({str(reason.verbose_code_parts[:1])[:300]}): something it reads changed after compilation; "
                "compile again (agent.compile) after changing an agent"
            )
        return graph(self.owner, *args)


def can_precompile(fn: Callable) -> bool:
    """Whether this torch compiles ahead of time (torch.compile's `aot_compile`; torch 2.13 has it)."""
    return hasattr(torch.compile(fn), "aot_compile")


def precompile(method: Callable, name: str, options: dict[str, Any], backend: str) -> "PrecompiledGraphs | Callable":
    """`method` (bound) as `PrecompiledGraphs`, or where this torch cannot compile ahead of time (no `aot_compile`)
    torch.compile's usual guarded function (with a warning)."""
    if not can_precompile(method.__func__):  # type: ignore[attr-defined]
        warnings.warn(
            f"torch {torch.__version__} has no aot_compile: the compiled {name} checks guards per call", stacklevel=2
        )
        return torch.compile(
            own_code(method), fullgraph=True, backend=backend, options={**options, "guard_filter_fn": update_guards}
        )
    return PrecompiledGraphs(method.__func__, method.__self__, name, options, backend)  # type: ignore[attr-defined]


def compile_acting(acting: "ActingPolicy", mode: str, backend: str = "inductor") -> None:
    """Compile the acting policy's forward on the CPU (`mode`: default or max) with the CPU Inductor settings,
    precompiled: one graph per deterministic flag and batch shape. On 10 observations, each call right after an
    update, it took 0.12 against the guarded compiled forward's 0.18 ms at 2 x 64 and 0.25 against 0.29 ms at
    3 x 400 (one thread, in one process; eager took about twice the compiled time at 2 x 64)."""
    options = compile_options(mode, torch.device("cpu"), False, update=False) if backend == "inductor" else {}
    acting.actions = precompile(acting.policy.actions, "acting policy", options, backend)


def compile_update(
    agent: "Agent", mode: str, cuda_graphs: bool = True, backend: str = "inductor", planned_updates: int | None = None
) -> UpdateStep:
    """The update step to use for `mode` (`agent.update_step` itself for none); `cuda_graphs=False` keeps
    CUDA graphs off even where the mode would use them (to time Inductor's kernels alone); `backend`:
    torch.compile's (inductor; eager or aot_eager check the tracing alone, quickly); `planned_updates`: how many
    updates the run will make (what `auto` weighs on CPU)."""
    mode = resolve_mode(mode, agent.device, is_static(agent), planned_updates)
    if mode == "none" or not agent.plan.equal_counts:
        agent.plan_updates(dataclasses.replace(agent.plan, compiled=False))
        return agent.update_step
    agent.plan_updates(dataclasses.replace(agent.plan, compiled=True))
    if agent.device.type == "cpu":  # on CUDA acting stays eager (not measured there yet)
        compile_acting(agent.acting, mode, backend)
    static = is_static(agent)
    graphs = cuda_graphs and static and backend == "inductor" and agent.device.type == "cuda"
    options = compile_options(mode, agent.device, graphs) if backend == "inductor" else {}
    if static and agent.device.type == "cpu":
        return precompile(agent.update_step, "update", options, backend)
    compiled = torch.compile(
        own_code(agent.update_step),
        fullgraph=static,
        backend=backend,
        options={**options, "guard_filter_fn": update_guards} if static else options,
    )
    if graphs:
        mark_static_tensors(agent)

    if not graphs:
        return compiled

    def step(batch: Batch, schedule: tuple[bool, ...]) -> dict[str, Tensor]:
        """The compiled update replayed as CUDA graphs."""
        # CUDA graphs reuse their output memory on the next replay: keep copies of the metrics.
        torch.compiler.cudagraph_mark_step_begin()
        return {name: value.clone() for name, value in compiled(batch, schedule).items()}

    return step
