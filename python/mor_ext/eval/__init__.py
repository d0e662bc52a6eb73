"""Evaluating tuned models: on a public benchmark (BFCL) and on tools never seen in training.

    bfcl/    the Berkeley Function Calling Leaderboard (``bfcl-eval``): ``mor-ext eval bfcl``, scored by
             BFCL's own checker (:mod:`mor_ext.eval.bfcl`)
    heldout.py  tool generalisation in the project's own terms: the agent on synthetic episodes over
             tool families never seen in training (``mor-ext data generate --split heldout``)
    first_calls.py  agent episodes that end at the first executor turn (both evaluations' answers)
    loading.py  the model to score: base, MoR adapter or merged LoRA

Layering: sits above the runtime; may import ``mor_ext.agent``, ``mor_ext.models``,
``mor_ext.adapters``, ``mor_ext.data``, ``mor_ext.tools``, ``mor_ext.spec`` and ``mor_ext.patching``
(public helpers); never ``demo``, ``train`` or ``cli`` (the demo and the CLI call this package).
Benchmark data is read for evaluation only: nothing here writes training data.
"""
