"""The tables and the figure of the speedup page (docs/speedup.md) from the studies' ``speedup.csv``.

Each study is one ``azopg speedup`` (or ``benchmarks/plain_speedup.py --out``) directory named
``BACKEND-PROBLEM-RULE`` under ``--root`` (e.g. ``sim-msd10-two-point``, ``async-tg1-natural``,
``sim-msd10-plain``); several directories of one study are merged if given as
``BACKEND-PROBLEM-RULE+SUFFIX`` (runs of the same repeat and W: the later directory wins); a suffix
``rK`` (``+r3``) numbers that directory's repeats from K (a study continued with ``--seed K``). For
every backend and problem it prints a markdown table, one row per W and one column per rule:
updates / rollouts / time to the target (virtual seconds for ``sim``, wall seconds otherwise) /
speedup ``T(1) / T(W)`` (median over the repeats; ``-`` where no run reached the target), and it
draws one figure: the speedup against W per problem, one line per rule and backend.

    python benchmarks/speedup_page.py --root runs/page --figure docs/img/speedup-page.png
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from azopg.run.speedup import SpeedupRun, summarize

RULES = ("plain", "two-point", "natural", "policy-iteration")
RULE_TITLES = {"plain": "two-point plain", "two-point": "two-point", "natural": "natural",
               "policy-iteration": "policy iteration"}
BACKENDS = {"sim": "simulated (virtual s)", "async": "async processes (wall s)", "ray": "Ray (wall s)"}


def read_studies(root: Path) -> dict[tuple[str, str, str], dict[tuple[int, int], dict[str, str]]]:
    """``(backend, problem, rule) -> {(repeat, W): row}`` from every ``*/speedup.csv`` under ``root``."""
    studies: dict[tuple[str, str, str], dict[tuple[int, int], dict[str, str]]] = defaultdict(dict)
    for path in sorted(root.glob("*/speedup.csv")):
        name, _, suffix = path.parent.name.partition("+")
        offset = int(suffix[1:]) if suffix[:1] == "r" and suffix[1:].isdigit() else 0
        backend, rest = name.split("-", 1)
        rule = next((r for r in RULES if rest.endswith("-" + r)), None)
        if rule is None:
            continue
        problem = rest[: -len(rule) - 1]
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                studies[backend, problem, rule][offset + int(row["repeat"]), int(row["workers"])] = row
    return studies


def _num(value: str) -> float:
    return float(value) if value not in ("", None) else math.inf


def summary(runs: dict[tuple[int, int], dict[str, str]]) -> dict[int, dict[str, Any]]:
    """Per W, :func:`azopg.run.speedup.summarize` of the study's runs (paired within each repeat),
    with the statuses of its runs."""
    study = [SpeedupRun(int(row["workers"]), row["backend"], k, _num(row["time_to_target_s"]), int(row["updates"]),
                        int(row["rollouts"]), int(row["max_delay"]), float(row["mean_delay"]), status=row["status"])
             for (k, _), row in sorted(runs.items())]
    rows = {row["workers"]: row for row in summarize(study)}
    for w, row in rows.items():
        row["status"] = ",".join(sorted({r.status for r in study if r.workers == w}))
    return rows


def cell(s: dict[str, Any] | None) -> str:
    """``updates / rollouts / T / paired speedup`` (medians over the repeats)."""
    if s is None:
        return "not run"
    if not s["reached"]:
        return f"not reached ({s['status']})"
    frac = "" if s["reached"] == s["runs"] else f" ({s['reached']} of {s['runs']} reached)"
    speed = "-" if not math.isfinite(s["paired_speedup"]) else f"{s['paired_speedup']:.2f}"
    return f"{s['updates']:,.0f} / {s['rollouts']:,.0f} / {s['time_to_target_s']:.4g} / {speed}{frac}"


def tables(studies: dict) -> str:
    lines = []
    for backend in BACKENDS:
        for problem in sorted({p for b, p, _ in studies if b == backend}):
            sums = {rule: summary(studies[backend, problem, rule]) for rule in RULES
                    if (backend, problem, rule) in studies}
            ws = sorted({w for s in sums.values() for w in s})
            lines.append(f"\n{problem}, {BACKENDS[backend]}: updates / rollouts / T / speedup\n")
            lines.append("| W | " + " | ".join(RULE_TITLES[r] for r in RULES) + " |")
            lines.append("|---" * (len(RULES) + 1) + "|")
            for w in ws:
                lines.append(f"| {w} | " + " | ".join(cell(sums[r].get(w)) if r in sums else "not run"
                                                      for r in RULES) + " |")
    return "\n".join(lines)


def figure(studies: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = sorted({p for _, p, _ in studies})
    fig, axes = plt.subplots(1, len(problems), figsize=(5.2 * len(problems), 4.6), constrained_layout=True,
                             squeeze=False)
    styles = {"sim": "-", "async": "--", "ray": ":"}
    for ax, problem in zip(axes[0], problems, strict=True):
        allw: set[int] = set()
        for i, rule in enumerate(RULES):
            for backend, ls in styles.items():
                if (backend, problem, rule) not in studies:
                    continue
                s = summary(studies[backend, problem, rule])
                ws = [w for w in s if math.isfinite(s[w]["paired_speedup"])]
                allw.update(s)
                marker = "o" if len(ws) > 1 else "*"
                ax.plot(ws, [max(s[w]["paired_speedup"], 0.25) for w in ws], ls=ls, marker=marker, color=f"C{i}",
                        ms=9 if marker == "*" else 5,
                        label=f"{RULE_TITLES[rule]}, {backend}")
        ws = sorted(allw)
        ax.plot(ws, ws, "k", lw=0.8, alpha=0.5, label="ideal S = W")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(ws, [str(w) for w in ws])
        ax.set_xlabel("workers W")
        ax.set_ylabel("speedup T(1) / T(W) to the target gap")
        ax.set_title(problem)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="runs/page")
    ap.add_argument("--figure", default=None, help="write the figure here (png)")
    a = ap.parse_args()
    studies = read_studies(Path(a.root))
    print(tables(studies))
    if a.figure:
        figure(studies, Path(a.figure))


if __name__ == "__main__":
    main()
