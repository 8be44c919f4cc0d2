"""One report from a GPU run's parts: the test suite's JUnit XML (``pytest --device cuda``) and ``timing.json``
(benchmarks/gpu_timing.py), written as ``gpu_report.json`` and ``gpu_report.md`` in the same folder.

    python benchmarks/gpu_report.py DIR      # reads DIR/pytest.xml and DIR/timing.json (either may be missing)

Exits 1 unless some test passed and no test and no timing item failed.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def read_tests(xml_path: Path) -> dict:
    """Counts and the failures and skip reasons of a JUnit XML file; ``{"status": "missing"}`` without one."""
    if not xml_path.is_file():
        return {"status": "missing: the test step did not write its report (killed by its time limit?)"}
    counts, skips, failures = Counter(), Counter(), []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        tag = "passed" if outcome is None else {"failure": "failed", "error": "errors"}.get(outcome.tag, "skipped")
        counts[tag] += 1
        message = "" if outcome is None else (outcome.get("message") or "")
        if tag == "skipped":
            skips[message.strip()[:200]] += 1
        elif tag != "passed":
            failures.append({"test": f"{case.get('classname')}::{case.get('name')}", "message": message[:500]})
    return {"counts": dict(counts), "failures": failures, "skip_reasons": dict(skips)}


def _ms(entry: dict | None) -> str:
    return f"{entry['median_ms']:.2f}" if isinstance(entry, dict) and "median_ms" in entry else "-"


def _num(x, fmt: str = "{:.3f}") -> str:
    return fmt.format(x) if isinstance(x, (int, float)) else "-"


def markdown(report: dict) -> str:
    timing = report.get("timing") or {}
    lines = [f"# GPU run ({timing.get('mode', 'no timings')})", ""]
    if timing.get("mode") == "rehearsal":
        lines += ["REHEARSAL on CPU at tiny shapes: these numbers measure nothing.", ""]
    env = timing.get("environment", {})
    lines += ["Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "", "## Tests", ""]
    tests = report["tests"]
    if "counts" not in tests:
        lines.append(tests["status"])
    else:
        lines.append(", ".join(f"{n} {k}" for k, n in sorted(tests["counts"].items())))
        lines += [f"- FAILED `{f['test']}`: {f['message'][:200]}" for f in tests["failures"]]
        lines += [f"- skipped x{n}: {why}" for why, n in tests["skip_reasons"].items()]
    sections = timing.get("sections", {})
    if kernels := sections.get("kernels"):
        lines += ["", "## Kernels, forward+backward", "", "| op | run | ms (median) | time / ours unsigned |"]
        lines.append("| --- | --- | --- | --- |")
        for op, r in kernels.items():
            lines.append(f"| {op} | {r['status']}: {r.get('shape', '')} | | |")
            runs = {k: v for k, v in r.items() if isinstance(v, dict) and k != "shape"} if r["status"] == "ok" else {}
            for name, v in runs.items():
                ratio = _num(v["median_ms"] / r["unsigned"]["median_ms"]) if "median_ms" in v else "-"
                lines.append(f"| | {name} | {v.get('skipped') or _ms(v)} | {ratio} |")
    if training := sections.get("training"):
        lines += ["", "## Training step (bf16 autocast, AdamW)", ""]
        lines += ["| model | status | batch x T | tokens/s | MFU (6N) | peak GiB | params |", "| --- " * 7 + "|"]
        for name, r in training.items():
            shape = f"{r.get('micro_batch', '-')} x {r.get('seq_len', '-')}"
            mfu = _num(r.get("mfu_6N"), "{:.1%}")
            row = f"| {name} | {r['status']} | {shape} | {_num(r.get('tokens_per_s'), '{:,.0f}')} | {mfu} | "
            lines.append(row + f"{_num(r.get('peak_memory_GiB'), '{:.1f}')} | {_num(r.get('params'), '{:,}')} |")
    if e2e := sections.get("e2e"):
        lines += ["", "## End to end", ""]
        for name, r in e2e.items():
            extra = ""
            if name == "train_py" and r.get("losses"):
                extra = f": loss {r['losses'][0][1]:.3f} -> {r['losses'][-1][1]:.3f} in {len(r['losses'])} logs"
            lines.append(f"- {name}: {r['status']}{extra}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(args[0])
    timing_path = folder / "timing.json"
    report = {
        "tests": read_tests(folder / "pytest.xml"),
        "timing": json.loads(timing_path.read_text()) if timing_path.is_file() else None,
    }
    (folder / "gpu_report.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (folder / "gpu_report.md").write_text(text)
    print(text)
    counts = report["tests"].get("counts", {})
    sections = (report["timing"] or {}).get("sections", {}).values()
    failed = [n for items in sections for n, item in items.items() if item["status"].startswith("failed")]
    return 0 if counts.get("passed") and not counts.get("failed") and not counts.get("errors") and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
