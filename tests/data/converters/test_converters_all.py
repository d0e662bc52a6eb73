"""What every converter guarantees: any malformed field is a TrajectoryError naming it, or a valid trajectory.

Every sample is hand-written (invented tools and queries) in the shape of its source format.
"""

from __future__ import annotations

import copy

import pytest

from mor_ext.data import TrajectoryError
from mor_ext.data.converters import CONVERTERS, from_toolace, from_toolbench

from converter_samples import assert_valid, SAMPLES, ODD_VALUES


@pytest.mark.parametrize("convert", [from_toolace, from_toolbench])
@pytest.mark.parametrize("speaker", [{"x": 1}, ["user"], None, 3])
def test_sharegpt_style_speaker_that_is_not_a_string(convert, speaker):
    """A non-string "from" is a TrajectoryError naming the field (on_error="skip" skips it), not a
    TypeError that aborts the whole conversion."""
    with pytest.raises(TrajectoryError, match="must be one of") as info:
        convert({"conversations": [{"from": speaker, "value": "hi"}]}, record_id=5)
    assert (info.value.record, info.value.field) == (5, "conversations[0].from")


@pytest.mark.parametrize("fmt", sorted(CONVERTERS))
def test_any_malformed_field_gives_a_trajectory_error_or_a_valid_trajectory(fmt):
    sample = SAMPLES[fmt]
    assert_valid(CONVERTERS[fmt](sample))
    with pytest.raises(TrajectoryError) as info:
        CONVERTERS[fmt](["not", "a", "dict"], record_id=0)
    assert info.value.field == "<record>"
    for key in sample:
        for odd in ODD_VALUES:
            try:
                traj = CONVERTERS[fmt]({**sample, key: odd}, record_id=1)
            except TrajectoryError as e:
                assert e.record == 1 and e.field
            else:
                assert_valid(traj)
    # Odd messages inside the conversation too.
    if "conversations" in sample:
        for i in range(len(sample["conversations"])):
            for odd in ODD_VALUES:
                record = copy.deepcopy(sample)
                record["conversations"][i] = odd
                with pytest.raises(TrajectoryError):
                    CONVERTERS[fmt](record, record_id=1)
