"""The HTML viewer without plotly installed: one line, nothing written."""
import pytest

import landscape
from helpers import mlp_and_data


def without_plotly(monkeypatch):
    import sys
    for name in [m for m in sys.modules if m == "plotly" or m.startswith("plotly.")] + ["plotly"]:
        monkeypatch.setitem(sys.modules, name, None)   # every `import plotly...` now fails


def test_html_without_plotly_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from landscape.errors import run_cli
    from landscape.plots import plot_2d, viewer
    net, data = mlp_and_data()
    surf = str(tmp_path / "s.h5")
    landscape.surface(net, data, x="-1:1:2", y="-1:1:2", out=surf)
    before = sorted(p.name for p in tmp_path.iterdir())
    without_plotly(monkeypatch)
    assert run_cli(plot_2d.main, ["--surf_file", surf, "--html"]) == 2
    assert capsys.readouterr().err == "error: --html needs plotly: pip install 'loss-landscape[viewer]'\n"
    with pytest.raises(landscape.LandscapeError, match=r"pip install 'loss-landscape\[viewer\]'"):
        viewer.write_html(surf)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
