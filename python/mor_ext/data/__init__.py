"""Multi-role agent data: the trajectory format, converters, generation, verification, tokenisation."""

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
]
