"""Multi-role agent data: the trajectory format, converters, generation, verification, tokenisation.

    trajectory.py       the format (Tool, ToolCall, Turn, Trajectory) and its validation
    jsonl.py            read / validate / atomically write JSON Lines of trajectories
    converters/         glaive, xLAM/APIGen, ToolACE, ToolBench -> trajectories (one module per source,
                        plus the shared call parser, schema normalisation and episode builder)
    synthetic/          the synthetic generator: task tables (data) apart from generator.py
    verification.py     reject or repair unreliable calls (the MoRAgent paper's filter)
    completion.py       fill placeholder thoughts, observations and answers
    decontamination.py  the check that no training name or query overlaps BFCL
    tokenize.py         trajectory -> input_ids, role_ids, labels (and inference prompts)

Tools (their type, validation, execution and the built-in catalogue) live in :mod:`mor_ext.tools`;
``Tool`` here is that type. May import ``mor_ext.tools``, ``mor_ext.spec`` and ``mor_ext.files``.
"""

from .jsonl import read_trajectories, validate_file, write_trajectories
from .trajectory import (
    CONTEXT_TURNS,
    ROLE_TURNS,
    Tool,
    ToolCall,
    Trajectory,
    TrajectoryError,
    Turn,
    parse_calls,
    parse_next,
    parse_trajectory,
    render_content,
)

__all__ = [
    "CONTEXT_TURNS", "ROLE_TURNS", "Tool", "ToolCall", "Trajectory", "TrajectoryError", "Turn",
    "parse_calls", "parse_next", "parse_trajectory", "render_content",
    "read_trajectories", "validate_file", "write_trajectories",
]
