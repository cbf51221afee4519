"""A1111's `modules.shared_state`: the `State` class of `shared.state` (progress of the running job, interrupt and
skip flags), here the core's `modules.state.State`."""

from modules.state import State

__all__ = ["State"]
