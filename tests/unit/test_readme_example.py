"""The README's example of the Python API (the fenced block after `<!-- api-example -->`) runs as written
and shows what the text around it says."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- api-example -->"


def example_code() -> str:
    text = (REPO / "README.md").read_text()
    assert text.count(MARKER) == 1, f"README.md must hold exactly one {MARKER}"
    block = re.match(r"\s*```python\n(.*?)```", text[text.index(MARKER) + len(MARKER):], re.S)
    assert block, f"no ```python block right after {MARKER} in README.md"
    return block.group(1)


def test_the_api_example_runs(capsys):
    namespace: dict = {"__name__": "readme_api_example"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. "the KAE does not reproduce the network"
        exec(compile(example_code(), "README.md <!-- api-example -->", "exec"), namespace)
    out = capsys.readouterr().out
    assert "surrogate mean" in out and "region" in out
    ka = namespace["ka"]
    xt, yt = namespace["xt"], namespace["yt"]
    score = ka.score(xt, yt)
    net, mean = score.loc[0, "macro"], score.loc[4, "macro"]
    assert net > 97 and abs(mean - net) < 2  # "98.4 %" and "98.0 (0.4) %"
    topo = namespace["topo"]
    assert set(topo["source"]) == {"layer", "kae"} and (topo["eps"] == 0.3).all()
    assert len(topo) == 3 + 3 * (ka.kae_config_.k + 1)
    unlearn = ka.unlearn(2, xt, yt, methods=("region",))
    assert isinstance(unlearn, pd.DataFrame)
    assert (unlearn["target_after"] < 2).all() and (unlearn["retained_after"] > 90).all()  # "class 2 at 0 %"
