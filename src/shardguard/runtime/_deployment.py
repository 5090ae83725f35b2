"""What a worker runs for one plan, built whole from a validated ``Deploy`` message.

    deployment = build(Deploy.from_wire(message), security, threads=1)   # raises, or is whole
    worker.deployment = deployment                                        # then swapped in

Nothing here touches the running deployment: a deploy message that fails any check
(its fields, an ONNX model onnxruntime refuses, an artifact that refers to data
outside the message) raises before the worker changes anything. onnxruntime
resolves an ONNX tensor's external data against the working directory when a model
is loaded from bytes, so an artifact could make a worker read its own files (its
secret key among them): every tensor of every graph is checked for external data
before onnxruntime sees the model.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..defences.ballots import Ballots, copy_link, copy_of
from ..defences.verifier import Verifier
from ..defences.workers import stored_intact, worker_hooks
from ..errors import MalformedMessage
from ..hooks import WorkerHook
from ..protocol import wire
from ..protocol.control import COORDINATOR, OUTPUT, Behave, Deploy, Port
from .linksec import Inbox, LinkSecurity


@dataclass
class Stage:
    name: str
    session: Any  # onnxruntime.InferenceSession
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    stored: bytearray  # the ONNX model as deployed (M7: digests checked on demand)
    sha256: str
    check: Verifier | None = None  # a Freivalds verifier stage (M4): its secret pool
    compute_s: float = 0.0
    cpu_s: float = 0.0  # the worker thread's CPU time running it (compute_s is wall time)
    runs: int = 0

    @property
    def codecs(self) -> dict[str, wire.Codec]:
        """Each int8 output's scale and zero point, by tensor id (what its header carries)."""
        return {p.tensor: (p.scale, p.zero_point) for p in self.outputs
                if p.scale is not None and p.zero_point is not None}

    def is_piece(self, tensor: str) -> bool:
        """Whether ``tensor`` is one of several pieces of one tensor this stage receives."""
        node = tensor.rsplit(":", 1)[-1]
        return sum(p.tensor.rsplit(":", 1)[-1] == node for p in self.inputs) > 1


@dataclass
class Deployment:
    """One plan's stages on this worker, and everything needed to route their messages."""

    message: Deploy
    stages: dict[str, Stage]
    schema: dict[str, wire.Expected]  # link -> what this worker accepts on it
    inbox: Inbox
    hooks: list[WorkerHook]  # the defences' worker halves (``defences/workers.py``)
    ballots: Ballots
    by_link: dict[str, Stage] = field(default_factory=dict)

    @property
    def security(self) -> LinkSecurity:
        return self.inbox.security

    @property
    def vote(self) -> dict[str, int]:
        return dict(self.message.vote)

    def verify(self) -> dict[str, bool]:
        """Each stored stage model against the digest it was deployed with (M7)."""
        return {s.name: stored_intact(s.stored, s.sha256) for s in self.stages.values()}

    def route_ok(self, header: wire.Header, me: str) -> bool:
        """Every stage in the route on one of its plan's devices, and this device a receiver.

        The route is covered by the header tag (and the seal), so a member holding keys
        still cannot claim a stage the plan did not give it.
        """
        hosts = self.message.hosts
        for stage, device in header.route.items():
            base = copy_of(stage)[0]
            if base == OUTPUT:
                if device != COORDINATOR:
                    return False
            elif device not in hosts.get(base, ()):
                return False
        dst = header.link.split(">", 1)[1]
        receivers = [header.route.get(dst)] + [header.route.get(f"{dst}@{j}")
                                               for j in range(1, self.vote.get(dst, 1))]
        return me in receivers


def build(message: Deploy, security: LinkSecurity, threads: int = 1) -> Deployment:
    """A complete deployment from ``message``, or an exception and nothing changed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    stages: dict[str, Stage] = {}
    for art in message.stages:
        refuse_outside_references(art.onnx, art.stage)
        check = Verifier.from_wire(art.check) if art.check is not None else None
        try:
            session = ort.InferenceSession(art.onnx, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types
            raise MalformedMessage(f"stage {art.stage}: onnxruntime refuses the model "
                                   f"({str(exc)[:200]})") from exc
        names = {i.name for i in session.get_inputs()}
        if names != {p.name for p in art.inputs}:
            raise MalformedMessage(f"stage {art.stage}: ports {sorted(p.name for p in art.inputs)}"
                                   f" are not the model's inputs {sorted(names)}")
        stages[art.stage] = Stage(art.stage, session, art.inputs, art.outputs,
                                  bytearray(art.onnx), art.digest, check)
    security.configure(message.protection, message.publics)
    vote = dict(message.vote)
    tensors: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = defaultdict(dict)
    codecs: dict[str, dict[str, wire.Codec]] = defaultdict(dict)  # int8: what a stage expects
    for s in stages.values():
        for p in s.inputs:
            tensors[p.link][p.tensor] = (p.dtype, p.shape)
            if p.scale is not None and p.zero_point is not None:
                codecs[p.link][p.tensor] = (p.scale, p.zero_point)
    for link in list(tensors):  # a voted stage's copies send on links of their own
        for j in range(1, vote.get(link.split(">", 1)[0], 1)):
            tensors[copy_link(link, j)] = tensors[link]
            codecs[copy_link(link, j)] = codecs[link]
    schema = {link: wire.Expected(t, message.max_batch, security.sealed(link), codecs[link])
              for link, t in tensors.items()}
    deployment = Deployment(message, stages, schema, Inbox(security), worker_hooks(message),
                            Ballots(vote))
    deployment.by_link = {p.link: s for s in stages.values() for p in s.inputs}
    return deployment


def refuse_outside_references(model: bytes, stage: str) -> None:
    """Raise ``MalformedMessage`` if the ONNX ``model`` refers to data outside itself."""
    import onnx

    try:
        proto = onnx.load_model_from_string(model)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise MalformedMessage(f"stage {stage}: not an ONNX model ({exc})") from exc
    for where, tensor in _tensors(proto.graph, "graph"):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise MalformedMessage(f"stage {stage}: tensor {tensor.name!r} in {where} refers to "
                                   f"external data {location!r:.80}; artifacts must carry all "
                                   "their data")
    for function in proto.functions:
        for node in function.node:
            for where, tensor in _node_tensors(node, f"function {function.name}"):
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    raise MalformedMessage(f"stage {stage}: {where} refers to external data")


def _tensors(graph: Any, where: str) -> Iterator[tuple[str, Any]]:
    for t in graph.initializer:
        yield where, t
    for sparse in graph.sparse_initializer:
        yield where, sparse.values
        yield where, sparse.indices
    for node in graph.node:
        yield from _node_tensors(node, where)


def _node_tensors(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    here = f"{where}, node {node.name or node.op_type}"
    for attr in node.attribute:
        if attr.HasField("t"):
            yield here, attr.t
        yield from ((here, t) for t in attr.tensors)
        if attr.HasField("sparse_tensor"):
            yield here, attr.sparse_tensor.values
        if attr.HasField("g"):
            yield from _tensors(attr.g, here)
        for g in attr.graphs:
            yield from _tensors(g, here)


def fault_injection() -> Callable[[Behave, str], WorkerHook]:
    """What makes a worker's hook from a ``behave`` message and the worker's name: the
    threats' worker half (D3, D4, D5 at rest, a faulty wire). Loaded only for a worker started with
    ``--allow-fault-injection``: without the flag no code that corrupts outputs is loaded."""
    faults: Callable[[Behave, str], WorkerHook] = importlib.import_module(
        "shardguard.threats.faults").Faults
    return faults
