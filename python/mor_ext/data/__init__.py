"""Multi-role agent data: the trajectory format, converters, generation, verification, tokenisation.

    trajectory.py      the format (Tool, ToolCall, Turn, Trajectory) and its validation
    jsonl.py           read / validate / atomically write JSON Lines of trajectories
    converters.py      glaive, xLAM/APIGen, ToolACE, ToolBench -> trajectories
    tools.py           built-in tools with real implementations (the generator's library)
    synthetic.py       the synthetic trajectory generator (decontaminated against BFCL)
    decontamination.py the check that no training name or query overlaps BFCL
    tokenize.py        trajectory -> input_ids, role_ids, labels (and inference prompts)
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
