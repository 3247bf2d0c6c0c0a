"""An incremental retraining's cost as a fraction of the first full lifecycle.

One ``make demo`` run, on a fresh ``LLMOPS_HOME`` and free ports (the demo site's own port
excepted: the pages, and so the models, are the demo's), with the shipped
configuration (``include/llmops.yaml``) and the demo's settings (``retrain.cooldown`` 0): the
first lifecycle (``llmops_data`` → ``llmops_train`` → ``llmops_evaluate`` → ``llmops_deploy``,
from the trigger to the served champion), then the closed loop; the phases' wall times are the
demo's own (``llmops.demo.DemoPhases``). The incremental retraining is ``llmops_retrain`` →
``llmops_train`` → ``llmops_evaluate`` → ``llmops_deploy`` of the loop, from the drift event to
v2 served; both halves run on the same machine in the same run, so the ratio is what compares.
The loop's retraining runs under the demo's synthetic traffic (one request a second), which
the first lifecycle does not have: the ratio errs on the high side.

Rows (``retrain_`` prefix): ``first_lifecycle_s``, ``incremental_s`` and ``cost_fraction`` (goal
≤ 0.3), and each DAG of the loop (``<dag>_s``).

Run alone: ``.venv/bin/python bench/retrain.py [--work DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOOP = ("llmops_retrain", "llmops_train", "llmops_evaluate", "llmops_deploy")


def bench_retrain(work: Path) -> dict[str, Any]:
    from llmops.config import load_config
    from llmops.demo import DEMO_ENV, FIRST_LIFECYCLE, DemoPhases, run_demo
    from llmops.stack import Stack, isolated_env

    home = work / "retrain"
    home.mkdir()
    # Free ports for everything but the demo site: its URLs are part of the data (document ids,
    # the Q&A split by page), so another port would train another model than `make demo` does.
    site_port = load_config(environ={}).demo_site.port
    env = {**isolated_env(home), **DEMO_ENV, "LLMOPS_DEMO_SITE__PORT": str(site_port),
           "LLMOPS_DATA__SEED_URL": f"http://127.0.0.1:{site_port}/"}
    cfg = load_config(environ={**os.environ, **env})
    stack = Stack(cfg, env=env)
    phases = DemoPhases()
    log = home / "demo.log"
    try:
        with open(log, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = run_demo(cfg, stack=stack, phases=phases)
    finally:
        stack.stop(timeout=30)
    if code != 0:
        raise RuntimeError(f"the demo failed (exit {code}); its output: {log}")
    rows = dict(phases.rows)
    full, incremental = rows[FIRST_LIFECYCLE], sum(rows[dag] for dag in LOOP)
    return {"retrain_first_lifecycle_s": round(full, 1), "retrain_incremental_s": round(incremental, 1),
            "retrain_cost_fraction": round(incremental / full, 3),
            **{f"retrain_{dag}_s": round(rows[dag], 1) for dag in LOOP}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="where the demo's home goes (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(json.dumps(bench_retrain(work), indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
