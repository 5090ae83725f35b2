"""Partitioning: strategies that turn a graph and a platform into a Plan, and the Plan itself."""

from .compile import CompiledPlan, StageProgram, Transfer, compile_plan
from .plan import Plan, load_plan

__all__ = ["CompiledPlan", "Plan", "StageProgram", "Transfer", "compile_plan", "load_plan"]
