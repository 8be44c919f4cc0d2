"""CPU rehearsal of the one-command GPU run (benchmarks/gpu_run.sh): the test step, every timing section at tiny
shapes and the report all run here, so the short GPU lease is not the first time this code executes. Nothing in
a rehearsal may fail or be skipped but for a stated reason (peers whose kernels need CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_report  # noqa: E402
import gpu_timing  # noqa: E402

from lrnn_lm.kernels import ops  # noqa: E402

# About a minute of CPU: in CI (which runs slow tests), not in a GPU run's `-m "not slow"`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_run")
    env = {**os.environ, "OUT": str(out), "REHEARSE": "1", "BUDGET_S": "600", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    r = subprocess.run(
        ["bash", "benchmarks/gpu_run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    return {"report": json.loads((out / "gpu_report.json").read_text()), "md": (out / "gpu_report.md").read_text()}


def test_the_test_step_ran_on_the_device_it_was_given(rehearsal):
    tests = rehearsal["report"]["tests"]
    assert tests["counts"]["passed"] >= 4 and not tests["failures"], tests


def test_every_timing_item_ran_or_was_skipped_for_a_stated_reason(rehearsal):
    timing = rehearsal["report"]["timing"]
    assert timing["mode"] == "rehearsal"
    sections = timing["sections"]
    assert set(sections["kernels"]) == set(ops())
    for op, r in sections["kernels"].items():
        assert r["status"] == "ok" and r["signed"]["median_ms"] > 0 and r["signed_time_over_unsigned"] > 0, op
        peers = [k for k, v in r.items() if isinstance(v, dict) and "skipped" in v]
        assert peers, f"{op}: its peers must be listed (skipped on CPU)"
    training = sections["training"]
    assert set(gpu_timing.TRAIN_CONFIGS) <= set(training)
    for name, r in training.items():
        if name.startswith("peer/fla_deltanet"):
            assert r["status"] == "skipped: fla's DeltaNet runs Triton kernels that need CUDA", r
        else:
            assert r["status"] == "ok" and r["tokens_per_s"] > 0 and r["params"] > 0, (name, r)
    e2e = sections["e2e"]
    assert all(r["status"] == "ok" for r in e2e.values()), e2e
    assert e2e["train_py"]["loss_falling"] and e2e["checkpoint"]["checkpoints_verified_steps"]
    assert e2e["from_pretrained_generate"]["new_tokens"] > 0


def test_the_markdown_report_says_it_is_a_rehearsal(rehearsal):
    md = rehearsal["md"]
    assert "REHEARSAL" in md and "## Kernels" in md and "## Training step" in md and "## End to end" in md


def test_a_missing_test_report_is_said_not_hidden(tmp_path):
    assert gpu_report.read_tests(tmp_path / "pytest.xml")["status"].startswith("missing")
    (tmp_path / "pytest.xml").write_text(
        '<testsuites><testsuite><testcase classname="a" name="t1"/><testcase classname="a" name="t2">'
        '<failure message="boom"/></testcase><testcase classname="a" name="t3"><skipped message="why"/>'
        "</testcase></testsuite></testsuites>"
    )
    tests = gpu_report.read_tests(tmp_path / "pytest.xml")
    assert tests["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert tests["failures"][0]["test"] == "a::t2" and tests["skip_reasons"] == {"why": 1}
    assert gpu_report.main([str(tmp_path)]) == 1  # a failed test fails the run


def test_timing_refuses_to_run_without_a_gpu_unless_rehearsing(tmp_path):
    assert gpu_timing.main(["--out", str(tmp_path)]) == 2
    assert not (tmp_path / "timing.json").exists()


def test_an_item_past_the_budget_is_recorded_as_skipped(tmp_path):
    run = gpu_timing.Run(tmp_path, rehearse=True, budget_s=-1, repeats=2)
    run.item("kernels", "ssd", lambda: {"never": "run"})
    assert json.loads((tmp_path / "timing.json").read_text())["sections"]["kernels"]["ssd"] == {
        "status": "skipped: budget"
    }
