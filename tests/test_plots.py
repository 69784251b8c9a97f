"""Plots and the HTML twin of the reports: made from hand-made figures, checked as pictures."""

import re

from PIL import Image

from advgame_env.metrics import rate
from algorithms.evaluation.evaluate import markdown_to_html
from algorithms.evaluation.plots import Point, pareto, topic_rates, training_curves


def _picture(path):
    with Image.open(path) as image:
        image.verify()  # a complete, readable PNG
    with Image.open(path) as image:
        return image.size, len(image.convert("L").getcolors(maxcolors=256) or [])


def test_training_curves_draw_the_logged_panels_and_skip_the_rest(tmp_path):
    records = [{"step": 0, "val/refusal_harmful": 0.0, "val/refusal_benign": 0.1}]
    records += [
        {"step": s, "game/defender_reward": 1.0 + s, "train/defender_loss": 0.69 - 0.01 * s, "game/attacker_valid": 0.0}
        for s in range(1, 6)
    ]
    records += [{"step": 5, "val/refusal_harmful": 0.6, "val/refusal_benign": 0.05}]
    path = training_curves(records, tmp_path / "curves.png", "run")
    (width, height), shades = _picture(path)
    assert width > height > 600 and shades > 20  # four panels in a 2x2 grid, with ink on them
    one = training_curves([{"step": 1, "train/defender_loss": 0.7}], tmp_path / "one.png")
    assert _picture(one)[0][0] < width  # one panel: one column
    assert training_curves([{"step": 1, "other": 1.0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_pareto_and_topic_pictures(tmp_path):
    points = [
        Point("step 0", rate(49, 50), rate(1, 50), run="demo"),
        Point("step 20", rate(10, 50), rate(5, 50), run="demo"),
        Point("other model", rate(25, 50), rate(20, 50), utility=0.4),
    ]
    (width, _), shades = _picture(pareto(points, tmp_path / "pareto.png"))
    assert shades > 20
    assert _picture(pareto(points[:2], tmp_path / "two.png"))[0][0] < width  # no utility panel without utility
    groups = {"harmful compliance by topic": {"drugs": rate(3, 4), "weapons": rate(0, 5), "empty": rate(0, 0)}}
    assert _picture(topic_rates(groups, tmp_path / "topics.png", "t"))[1] > 20
    assert topic_rates({"g": {"empty": rate(0, 0)}}, tmp_path / "no.png", "t") is None


def test_the_html_twin_keeps_tables_pictures_and_escapes_text():
    page = markdown_to_html(
        ["# Title <x>", "", "| measure | rate |", "|---|---|", "| a & b | 1% |", "", "![curves](training.png)", "text"]
    )
    compact = re.sub(r">\s+<", "><", page)  # the markdown library puts each cell on its own line
    assert "<h1>Title &lt;x&gt;</h1>" in page
    assert "<th>measure</th><th>rate</th>" in compact and "<td>a &amp; b</td><td>1%</td>" in compact
    image = re.search(r"<img [^>]*>", page)
    assert image and 'src="training.png"' in image[0] and 'alt="curves"' in image[0] and "<p>text</p>" in page
    assert "---" not in page  # the separator row is not a table row
