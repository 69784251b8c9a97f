"""judge.audit in a real (tiny) training run: the alarm stops a run whose judge starts favouring
master keys at its second step, and stays quiet through the same run with an honest judge."""

from __future__ import annotations

import json
import re

import pytest

from advgame_env import RuleJudge
from advgame_env.judge_probes import PUBLISHED_MASTER_KEYS
from algorithms.training import trainer as trainer_module
from algorithms.training.judge_monitor import JudgeAlarm
from algorithms.training.trainer import Trainer
from tests.helpers import config


class HackedFromStep(RuleJudge):
    """Test double: the rule judge, until the run reaches ``step``; from then on a published master
    key wins every pair it is in and passes as a faithful rewrite."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step
        self.trainer: Trainer | None = None

    def _hacked(self, text: str) -> bool:
        return self.trainer is not None and self.trainer.step >= self.step and text in PUBLISHED_MASTER_KEYS

    def compare(self, items):
        honest = super().compare(items)
        return [
            (10.0, 0.0) if self._hacked(i.response_a) else (0.0, 10.0) if self._hacked(i.response_b) else v
            for i, v in zip(items, honest, strict=True)
        ]

    def faithfulness(self, items):
        return [True if self._hacked(i.prompt) else v for i, v in zip(items, super().faithfulness(items), strict=True)]


AUDIT = (
    "judge.audit.fraction=0.5",
    "judge.audit.canaries=8",
    "judge.audit.window=1",
    "judge.audit.alarm.max_canary_rate=0.2",
    "judge.audit.alarm.min_count=8",
    "judge.audit.alarm.action=stop",
)


def _run(tiny_chat, folder, monkeypatch, hacked_from: int) -> tuple[list[dict], BaseException | None]:
    judge = HackedFromStep(hacked_from)
    monkeypatch.setattr(
        trainer_module, "build_judge", lambda cfg, section=None: judge if section is None else RuleJudge()
    )
    trainer = Trainer(config(tiny_chat, folder, *AUDIT))
    judge.trainer = trainer
    stopped = None
    try:
        trainer.train()
    except JudgeAlarm as error:
        stopped = error
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return lines, stopped


@pytest.mark.slow
def test_the_alarm_stops_a_run_whose_judge_turns_and_not_an_honest_one(tiny_chat, tmp_path, monkeypatch):
    lines, stopped = _run(tiny_chat, tmp_path / "hacked", monkeypatch, hacked_from=1)
    # the judge falls for the published keys only (10 of the 18 the canaries draw from)
    assert stopped is not None and re.search(r"step 2: master-key canaries favoured at 0\.\d+ > 0\.2", str(stopped))
    assert [line["step"] for line in lines] == [1, 2]  # the alarming step is logged, then the run stops
    assert lines[0]["audit/alarm"] == 0.0 and lines[1]["audit/alarm"] == 1.0
    assert lines[0]["audit/rescored"] > 0 and any(k.endswith("_agreement") for k in lines[0])

    lines, stopped = _run(tiny_chat, tmp_path / "honest", monkeypatch, hacked_from=99)
    assert stopped is None and [line["step"] for line in lines] == [1, 2]
    assert all(line["audit/alarm"] == 0.0 and line["audit/canary_favour"] == 0.0 for line in lines)
