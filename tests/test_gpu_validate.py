"""CPU rehearsal of benchmarks/gpu_validate.py, end to end: every section runs at tiny shapes (chunk for triton,
the scan's Triton kernel under the interpreter, fake CUDA events, tiny models, 5 training steps), so the one
short GPU run is not the first time any of this code executes. Nothing may be skipped without a stated,
expected reason."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrnn_lm.kernels.registry import KERNELS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_validate.py"
# The only skips a CPU rehearsal may record, by item; anything else skipped (e.g. for the budget) fails the test.
EXPECTED_SKIPS = {
    ("train_throughput", "peer/fla_deltanet_340m_neg"): "fla's DeltaNet runs Triton kernels that need CUDA",
    ("train_throughput", "peer/fla_deltanet_340m_pos"): "fla's DeltaNet runs Triton kernels that need CUDA",
    ("multi_gpu", "ddp_fsdp"): "no CUDA device (CPU rehearsal)",
}


def _load():
    spec = importlib.util.spec_from_file_location("gpu_validate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(out: Path, *extra: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(SCRIPT), "--rehearse", "--out", str(out), "--work", str(out / "work"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_validate")
    # A generous budget: on a loaded CI machine nothing may be skipped for time (measured: 40 s of CPU in all).
    r = _run(out, "--budget-s", "900")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    report = json.loads((out / "gpu_validate.json").read_text())
    assert "===== environment+kernel_correctness" in (out / "gpu_validate_sections.log").read_text()
    return {"report": report, "md": (out / "gpu_validate.md").read_text(), "stdout": r.stdout}


def test_every_section_ok_or_expected_skip(rehearsal):
    sections = rehearsal["report"]["sections"]
    assert list(sections) == [
        "environment",
        "kernel_correctness",
        "kernel_timing",
        "train_throughput",
        "e2e_smoke",
        "multi_gpu",
    ]
    for name, sec in sections.items():
        expected = "skipped: no CUDA device (CPU rehearsal)" if name == "multi_gpu" else "ok"
        assert sec["status"] == expected, (name, sec["status"], sec.get("log_tail"))
        assert sec["items"], name
        for item, entry in sec["items"].items():
            status = entry["status"]
            if (name, item) in EXPECTED_SKIPS:
                assert status == f"skipped: {EXPECTED_SKIPS[name, item]}", (name, item, status)
            else:
                assert status == "ok", (name, item, status, entry.get("traceback"))
    assert rehearsal["report"]["mode"] == "rehearsal"


def test_kernel_correctness_covers_the_whole_kernel_table(rehearsal):
    items = rehearsal["report"]["sections"]["kernel_correctness"]["items"]
    coverage = items["coverage"]["map"]
    assert set(coverage) == {f"{op}/{backend}" for op, backend in KERNELS}
    for key, item in coverage.items():
        if key.endswith("/naive"):
            assert item.startswith("reference")
        else:
            assert items[item]["status"] == "ok" and items[item]["max_rel_rmse"] is not None, (key, item)
    # The scan's own Triton kernel really ran (interpreter), with edge gates and packed sequences in both ranges.
    scan = items["selective_scan/triton"]
    assert "TRITON_INTERPRET" in scan["ran_as"]
    assert {f"{case}/{sign}" for case in ("random", "edges", "varlen") for sign in ("signed", "unsigned")} <= set(
        scan["cases"]
    )
    assert {"d_x", "d_dt", "d_A", "d_B", "d_C", "d_D", "d_z", "d_initial_state"} <= set(
        scan["cases"]["varlen/signed"]["rel_rmse"]
    )
    assert items["delta_rule/triton"]["ran_as"].startswith("chunk (rehearsal stand-in")


def test_timings_ran_through_the_event_timer(rehearsal):
    items = rehearsal["report"]["sections"]["kernel_timing"]["items"]
    scan = items["selective_scan/fwd+bwd"]
    assert scan["ours_signed"]["runs"] == 2 and scan["ours_signed"]["median_ms"] > 0
    assert scan["mamba_ssm"]["skipped"]
    assert items["selective_scan/forward_bandwidth"]["signed"]["achieved_GBps"] > 0
    assert items["delta_rule/fwd+bwd"]["signed_over_unsigned"] > 0
    assert items["ssd/fwd+bwd"]["signed_time_over_unsigned"] > 0
    assert items["gated_delta_rule+delta_product/fwd+bwd"]["ratios"]


def test_throughput_and_e2e_results(rehearsal):
    tt = rehearsal["report"]["sections"]["train_throughput"]["items"]
    for name in ("deltanet_340m_neg", "deltanet_340m_pos", "mamba_370m_neg", "mamba_370m_pos", "deltanet_1.3b_neg"):
        assert tt[name]["tokens_per_s"] > 0 and tt[name]["params"] > 0, name
    assert tt["peer/transformers_mamba_370m"]["params"] == tt["mamba_370m_pos"]["params"]
    e2e = rehearsal["report"]["sections"]["e2e_smoke"]["items"]
    assert e2e["train_py"]["loss_falling"] and e2e["train_py"]["summary"]["step"] == 5
    assert e2e["checkpoint"]["checkpoints_verified_steps"]
    assert e2e["from_pretrained_generate"]["new_tokens"] > 0
    assert e2e["lm_eval_cli"]["n_samples"]["effective"] == 4


def test_summary_puts_targets_beside_values(rehearsal):
    md = rehearsal["md"]
    assert "REHEARSAL" in md and "## Targets" in md
    for target in ("signed time <= 1.05x unsigned", "0.9x mamba_ssm", "50% of peak bandwidth", "40K tokens/s", "MFU"):
        assert target in md, target
    assert md in rehearsal["stdout"]


def test_one_process_per_section_as_on_a_gpu(tmp_path):
    """The GPU default: each section in its own process, each process's output kept."""
    r = _run(tmp_path, "--isolation", "section", "--sections", "environment,multi_gpu", "--budget-s", "300")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_validate.json").read_text())
    assert report["isolation"] == "section"
    assert report["sections"]["environment"]["status"] == "ok"
    assert report["sections"]["multi_gpu"]["status"] == "skipped: no CUDA device (CPU rehearsal)"
    log = (tmp_path / "gpu_validate_sections.log").read_text()
    assert "===== environment\n" in log and "===== multi_gpu\n" in log


def test_budget_skips_what_does_not_fit(tmp_path):
    r = _run(tmp_path, "--budget-s", "0.5", "--sections", "environment,e2e_smoke", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    sections = json.loads((tmp_path / "gpu_validate.json").read_text())["sections"]
    for name, sec in sections.items():
        if name in ("environment", "e2e_smoke"):
            assert sec["status"].startswith("skipped: budget"), (name, sec)
        else:
            assert sec["status"] == "skipped: not selected (--sections)", (name, sec)
    assert (tmp_path / "gpu_validate.md").is_file()


def test_section_status_and_target_rows():
    gv = _load()
    assert gv._section_status({"a": {"status": "ok"}, "b": {"status": "skipped: x"}}) == "ok"
    assert gv._section_status({"a": {"status": "skipped: x"}, "b": {"status": "skipped: x"}}) == "skipped: x"
    assert gv._section_status({"a": {"status": "failed: y"}, "b": {"status": "ok"}}) == "failed: ['a']"
    timing = {
        "selective_scan/fwd+bwd": {"signed_over_unsigned": 1.2, "ours_signed_speed_vs_mamba": 0.95},
        "selective_scan/forward_bandwidth": {"signed": {"fraction_of_peak": 0.4}},
    }
    report = {
        "mode": "gpu",
        "budget_s": 480,
        "sections": {
            "kernel_timing": {"status": "ok", "items": timing},
            "train_throughput": {
                "status": "ok",
                "items": {"deltanet_1.3b_neg": {"status": "ok", "tokens_per_s": 41000.0}},
            },
        },
    }
    rows = {target: (value, met) for target, value, met in gv._target_rows(report)}
    assert rows["selective_scan fwd+bwd: signed time <= 1.05x unsigned"] == ("1.200", "NO")
    assert rows["selective_scan (signed) speed >= 0.9x mamba_ssm selective_scan_fn"] == ("0.950", "yes")
    assert rows["selective_scan (signed) forward >= 50% of peak bandwidth"] == ("0.400", "NO")
    assert rows["ssd fwd+bwd: signed time <= 1.05x unsigned"] == ("n/a", "n/a")
    big = next(k for k in rows if k.startswith("deltanet_1.3b [-1,1] >= 40K"))
    assert rows[big][1] == "yes"
    assert "| kernel_timing | ok |" in gv.summarize(report)


def test_a_section_past_its_time_is_killed_and_recorded(tmp_path, monkeypatch):
    """The hard limit behind the budget: the section's process (and what it started) is killed, the report says so."""
    gv = _load()
    # The child gets a 30 s share, the parent's limit is 30 - 24 = 6 s: killed while starting up or training.
    monkeypatch.setitem(gv.KILL_GRACE_S, "rehearsal", -24.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["--rehearse", "--out", str(tmp_path), "--work", str(tmp_path / "work"), "--sections", "e2e_smoke"]
    assert gv.main([*args, "--budget-s", "30"]) == 1
    section = json.loads((tmp_path / "gpu_validate.json").read_text())["sections"]["e2e_smoke"]
    assert section["status"].startswith(("failed: timeout, killed after", "failed: never started")), section


def test_only_and_weights_select_a_rerun(tmp_path):
    """A rerun of chosen items (the second H200 call of 2026-11-30): the rest is recorded as not selected."""
    only = "environment/versions,kernel_timing/ssd*"
    r = _run(tmp_path, "--sections", "environment,kernel_timing", "--only", only, "--weights", "kernel_timing=0.9")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_validate.json").read_text())
    assert report["only"] == only.split(",") and report["weights"]["kernel_timing"] == 0.9
    env_items = report["sections"]["environment"]["items"]
    assert env_items["versions"]["status"] == "ok"
    assert env_items["device"]["status"] == "skipped: not selected (--only)"
    timing = report["sections"]["kernel_timing"]["items"]
    assert timing["ssd/fwd+bwd"]["status"] == "ok"
    assert timing["delta_rule/fwd+bwd"]["status"] == "skipped: not selected (--only)"


def test_weights_and_only_parsing():
    gv = _load()
    assert gv.parse_weights("") == {}
    assert gv.parse_weights("kernel_correctness=0.5, train_throughput=1") == {
        "kernel_correctness": 0.5,
        "train_throughput": 1.0,
    }
    for bad, named in [("kernel=0.5", "kernel=0.5"), ("environment=x", "'x'"), ("e2e_smoke=0", "e2e_smoke")]:
        with pytest.raises(ValueError, match=named):
            gv.parse_weights(bad)
    assert gv.selected("kernel_timing/ssd/fwd+bwd", ("kernel_timing/ssd*",))
    assert not gv.selected("kernel_timing/delta_rule/fwd+bwd", ("kernel_timing/ssd*",))
    assert gv.selected("anything/at_all", ())


def test_environment_is_never_starved_by_proportional_shares():
    """First H200 run: a 420 s budget gave the environment 13 s, under the 15 s minimum, and skipped it."""
    import time

    gv = _load()
    todo = list(gv.SECTIONS)
    assert gv.section_cap("environment", todo, time.time() + 420, "gpu") >= 15
