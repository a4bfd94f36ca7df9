"""The tables and the figure of the speedup page (docs/speedup.md) from the studies' ``speedup.csv``.

Each study is one ``azopg speedup`` (or ``benchmarks/plain_speedup.py --out``) directory named
``BACKEND-PROBLEM-RULE`` under ``--root`` (e.g. ``sim-msd10-two-point``, ``async-tg1-natural``,
``sim-msd10-plain``); several directories of one study are merged if given as
``BACKEND-PROBLEM-RULE+SUFFIX`` (runs of the same repeat and W: the later directory wins); a suffix
``rK`` (``+r3``) numbers that directory's repeats from K (a study continued with ``--seed K``). For
every backend and problem it prints a markdown table, one row per W and one column per rule:
updates / rollouts / time to the target (virtual seconds for ``sim``, wall seconds otherwise) /
speedup ``T(1) / T(W)`` (median over the repeats; ``-`` where no run reached the target), and it
draws one figure: the speedup against W per problem, one line per rule and backend. A file
``note.txt`` in a study's directory (e.g. ``gap 0.1``) is shown beside its rule in the figure and
listed under the table.

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
MARKERS = {"plain": "s", "two-point": "o", "natural": "^", "policy-iteration": "D"}
BACKENDS = {"sim": "simulated (virtual s)", "async": "async processes (wall s)",
            "ray": "Ray (wall s; speedup against the async run at W = 1)"}


NOTES: dict[tuple[str, str, str], str] = {}


def read_studies(root: Path) -> dict[tuple[str, str, str], dict[tuple[int, int], dict[str, str]]]:
    """``(backend, problem, rule) -> {(repeat, W): row}`` from every ``*/speedup.csv`` under ``root``
    (and their ``note.txt`` into :data:`NOTES`)."""
    studies: dict[tuple[str, str, str], dict[tuple[int, int], dict[str, str]]] = defaultdict(dict)
    for path in sorted(root.glob("*/speedup.csv")):
        name, _, suffix = path.parent.name.partition("+")
        offset = int(suffix[1:]) if suffix[:1] == "r" and suffix[1:].isdigit() else 0
        backend, rest = name.split("-", 1)
        rule = next((r for r in RULES if rest.endswith("-" + r)), None)
        if rule is None:
            continue
        problem = rest[: -len(rule) - 1]
        note = path.parent / "note.txt"
        if note.exists():
            NOTES[backend, problem, rule] = note.read_text().strip()
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


def with_reference(studies: dict, backend: str, problem: str, rule: str) -> dict[tuple[int, int], dict[str, str]]:
    """A study's runs; a Ray study's are paired with the async study's smallest W (the same repeats)."""
    runs = dict(studies[backend, problem, rule])
    ref = studies.get(("async", problem, rule))
    if backend == "ray" and ref:
        w0 = min(w for _, w in ref)
        runs.update({(k, w): row for (k, w), row in ref.items() if w == w0 and w0 < min(w for _, w in runs)})
    return runs


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
            sums = {rule: summary(with_reference(studies, backend, problem, rule)) for rule in RULES
                    if (backend, problem, rule) in studies}
            ws = sorted({w for (b, p, r) in studies if (b, p) == (backend, problem) for _, w in studies[b, p, r]})
            lines.append(f"\n{problem}, {BACKENDS[backend]}: updates / rollouts / T / speedup\n")
            lines.append("| W | " + " | ".join(RULE_TITLES[r] for r in RULES) + " |")
            lines.append("|---" * (len(RULES) + 1) + "|")
            for w in ws:
                lines.append(f"| {w} | " + " | ".join(cell(sums[r].get(w)) if r in sums else "not run"
                                                      for r in RULES) + " |")
            notes = [f"{RULE_TITLES[r]}: {NOTES[backend, problem, r]}" for r in RULES if (backend, problem, r) in NOTES]
            if notes:
                lines.append("\n" + "; ".join(notes) + ".")
    return "\n".join(lines)


def ratios(studies: dict, key: tuple[str, str, str]) -> str:
    """The acceptance table of one study: per W the paired updates ratio ``U_k(W) / U_k(W0)`` and paired
    speedup over the repeats k, median [min-max], and whether the median ratio is within 10 %."""
    runs = studies[key]
    lines = ["| W | repeats reached | updates to the target, median | U(W)/U(1) paired, median [min–max] | within 10 % "
             "| paired speedup, median [min–max] | mean delay |", "|---|---|---|---|---|---|---|"]
    for w, r in summary(runs).items():
        ok = "yes" if math.isfinite(r["updates_ratio"]) and abs(r["updates_ratio"] - 1) <= 0.1 else "no"
        ratio = (f"{r['updates_ratio']:.3f} [{r['updates_ratio_min']:.3f}–{r['updates_ratio_max']:.3f}]"
                 if math.isfinite(r["updates_ratio"]) else "–")
        speed = (f"{r['paired_speedup']:.2f} [{r['paired_speedup_min']:.2f}–{r['paired_speedup_max']:.2f}]"
                 if math.isfinite(r["paired_speedup"]) else "–")
        lines.append(f"| {w} | {r['reached']} of {r['runs']} | {r['updates']:,.0f} | {ratio} | {ok} | {speed} "
                     f"| {r['mean_delay']:.1f} |")
    per = defaultdict(dict)
    for (k, w), row in sorted(runs.items()):
        per[k][w] = f"{int(row['updates']):,}" if math.isfinite(_num(row["time_to_target_s"])) else row["status"]
    ws = sorted({w for _, w in runs})
    lines.append("\nPer repeat (seed k), updates to the target at W = " + " / ".join(map(str, ws)) + ": "
                 + "; ".join(f"k = {k}: " + " / ".join(v.get(w, "–") for w in ws) for k, v in per.items()) + ".")
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
                s = summary(with_reference(studies, backend, problem, rule))
                own = {w for _, w in studies[backend, problem, rule]}
                ws = [w for w in s if w in own and math.isfinite(s[w]["paired_speedup"])]
                allw.update(s)
                ray = backend == "ray"
                note = f" ({NOTES[backend, problem, rule]})" if (backend, problem, rule) in NOTES else ""
                ax.plot(ws, [max(s[w]["paired_speedup"], 0.25) for w in ws], ls=ls,
                        marker="*" if ray else MARKERS[rule], color=f"C{i}", ms=15 if ray else 5,
                        mec="k" if ray else None, zorder=3 if ray else 2,
                        label=f"{RULE_TITLES[rule]}, {backend}{note}")
        ws = sorted(allw)
        ax.plot(ws, ws, "k", lw=0.8, alpha=0.5, label="ideal S = W")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(ws, [str(w) for w in ws])
        ax.set_xlabel("workers W")
        ax.set_ylabel("speedup T(1) / T(W) to the target gap")
        ax.set_title(problem)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="runs/page")
    ap.add_argument("--figure", default=None, help="write the figure here (png)")
    ap.add_argument("--ratios", default=None, metavar="BACKEND-PROBLEM-RULE",
                    help="print only this study's acceptance table (paired updates ratios)")
    a = ap.parse_args()
    studies = read_studies(Path(a.root))
    if a.ratios:
        backend, rest = a.ratios.split("-", 1)
        rule = next(r for r in RULES if rest.endswith("-" + r))
        print(ratios(studies, (backend, rest[: -len(rule) - 1], rule)))
        return
    print(tables(studies))
    if a.figure:
        figure(studies, Path(a.figure))


if __name__ == "__main__":
    main()
