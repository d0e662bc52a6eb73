"""Evaluating tuned models on public benchmarks.

    bfcl/    the Berkeley Function Calling Leaderboard (``bfcl-eval``): ``mor-ext eval bfcl``, scored by
             BFCL's own checker (:mod:`mor_ext.eval.bfcl`)

Layering: sits above the runtime; may import ``mor_ext.agent``, ``mor_ext.models``,
``mor_ext.adapters``, ``mor_ext.data``, ``mor_ext.tools``, ``mor_ext.spec`` and ``mor_ext.patching``
(public helpers); never ``demo``, ``train`` or ``cli`` (the demo and the CLI call this package).
Benchmark data is read for evaluation only: nothing here writes training data.
"""
