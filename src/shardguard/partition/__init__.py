"""Partitioning: strategies that turn a graph and a platform into a Plan, and the Plan itself.

    planned = make_plan(graph, ModelRef(ref="resnet-small", input_shape=[1, 28, 28]),
                        load_platform("rpi4x4-ethernet"), strategy="pipeline", objective="latency")
    planned.plan.save(Path("plan.yaml"))
    bound = bind("plan.yaml")          # model, graph, platform, compiled programs, cost
"""

from .auto import STRATEGIES, make_plan, plan
from .bind import Bound, bind
from .build import Planned
from .compile import CompiledPlan, StageProgram, Transfer, compile_plan
from .plan import ModelRef, Plan, load_plan

__all__ = ["STRATEGIES", "Bound", "CompiledPlan", "ModelRef", "Plan", "Planned", "StageProgram",
           "Transfer", "bind", "compile_plan", "load_plan", "make_plan", "plan"]
