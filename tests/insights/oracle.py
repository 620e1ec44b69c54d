"""Reference values for megamind's forecast statistics.

Reads a JSON object from stdin: {"series": [[y0, y1, ...], ...], "alpha": a, "beta": b,
"horizon": h}. For each series prints statsmodels' Holt (known initial state l0 = y0,
b0 = y1 - y0, fixed smoothing, no optimisation) final level, trend and the 1..h forecasts,
and scipy.stats.linregress over x = 0..n-1 (slope, intercept, stderr, p-value).
"""

import json
import sys

import numpy as np
from scipy import stats
from statsmodels.tsa.holtwinters import Holt


def main() -> None:
    request = json.load(sys.stdin)
    alpha, beta, horizon = request["alpha"], request["beta"], request["horizon"]
    out = []
    for series in request["series"]:
        y = np.asarray(series, dtype=float)
        model = Holt(
            y,
            initialization_method="known",
            initial_level=y[0],
            initial_trend=y[1] - y[0],
        ).fit(smoothing_level=alpha, smoothing_trend=beta, optimized=False)
        x = np.arange(len(y), dtype=float)
        fit = stats.linregress(x, y)
        out.append(
            {
                "level": float(model.level[-1]),
                "trend": float(model.trend[-1]),
                "forecast": [float(v) for v in model.forecast(horizon)],
                "sse": float(model.sse),
                "slope": float(fit.slope),
                "intercept": float(fit.intercept),
                "stderr": float(fit.stderr),
                "p_value": float(fit.pvalue),
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
