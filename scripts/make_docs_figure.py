"""Draw the README's figure with the package's own plotting: ``python scripts/make_docs_figure.py``.

Learns the default problem (chain3) with the paper's two-point rule on 4 simulated asynchronous
workers and writes ``docs/img/convergence.png`` (:func:`azopg.run.plots.plot_convergence`).
"""

from pathlib import Path

import azopg
from azopg.run.plots import plot_convergence

if __name__ == "__main__":
    result = azopg.train(azopg.get_problem("chain3"), seed=0, method="two-point", backend="simulated", workers=4,
                         target_gap=1e-4, max_time=60)
    out = Path(__file__).resolve().parents[1] / "docs" / "img" / "convergence.png"
    plot_convergence(result, out)
    print(f"{out}: {result.status}, gap {result.relative_gap:.2e} after {result.updates} updates")
