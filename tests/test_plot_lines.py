"""Lines of one training-curve panel that coincide stay visible: each has its own dash, marker
and width, the earlier (under) ones wider (the demo's training.png hid "valid" under "unfaithful")."""

from algorithms.evaluation.plots import curves_figure


def test_coinciding_lines_of_a_panel_stay_distinguishable():
    keys = ("game/attacker_valid", "game/attacker_bad_format", "game/attacker_unfaithful", "game/attacker_over_length")
    records = [{"step": s, **dict.fromkeys(keys, 0.0)} for s in range(1, 5)]
    fig = curves_figure(records)
    assert fig is not None
    (ax,) = [a for a in fig.axes if a.get_visible()]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["valid", "bad format", "unfaithful", "over length"]
    looks = {(line.get_linestyle(), line.get_marker()) for line in lines}
    widths = [line.get_linewidth() for line in lines]
    assert len(looks) == 4 and widths == sorted(widths, reverse=True) and len(set(widths)) == 4
