"""A1111's `modules.sd_schedulers`: the schedule types ("Schedule type" dropdown), by A1111's names.

Here a schedule is a diffusers scheduler setting (modules/sampling/samplers.py), not a sigma function, so
`Scheduler.function` is None: extensions read the list (names, labels, aliases) to offer or validate a schedule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from modules.sampling import samplers


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: Callable[..., Any] | None = None
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list[str] | None = None


schedulers = [Scheduler(s.name, s.label, aliases=list(s.aliases) or None) for s in samplers.SCHEDULE_TYPES]
schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
