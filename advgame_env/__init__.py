"""advgame_env: the LM safety game (attacker vs defender, judged) as a PettingZoo environment.

import advgame_env
env = advgame_env.parallel_env(judge=advgame_env.RuleJudge())
"""

from advgame_env.distribution import check_top_level
from advgame_env.env import AdvGameEnv, env, parallel_env, raw_env, transcript
from advgame_env.game import Game, GameConfig, Phase, Round, Sample
from advgame_env.instruction_suite import InstructionPrompt, bundled_instruction_prompts, load_instruction_prompts
from advgame_env.judges import (
    ClassifyItem,
    FaithfulnessItem,
    Judge,
    JudgeError,
    LLMJudge,
    PairItem,
    PointItem,
    Rubric,
)
from advgame_env.parsing import PENALTY, Failure
from advgame_env.rewards import Classification, SelfRedTeamCoefficients, preference_pair
from advgame_env.rule_judge import RuleJudge
from advgame_env.seeds import Label, Seed, SeedFormatError, bundled_seeds, load_hf_seeds, load_seeds
from advgame_env.templates import TemplateSet
from advgame_env.wildguard import WildGuardJudge

ENV_ID = "advgame/AdvGame-v0"


def _register() -> None:
    """Register with PettingZoo's registry (1.27+); older versions have none."""
    import pettingzoo

    if hasattr(pettingzoo, "register") and ENV_ID not in pettingzoo.parallel_registry:
        pettingzoo.register("parallel", ENV_ID, entry_point="advgame_env.env:parallel_env")
        pettingzoo.register("aec", ENV_ID, entry_point="advgame_env.env:env")  # order-enforcing wrapper, as env()


check_top_level("advgame_env")
_register()

__all__ = [
    "ENV_ID",
    "PENALTY",
    "AdvGameEnv",
    "Classification",
    "ClassifyItem",
    "Failure",
    "FaithfulnessItem",
    "Game",
    "GameConfig",
    "InstructionPrompt",
    "Judge",
    "JudgeError",
    "LLMJudge",
    "Label",
    "PairItem",
    "Phase",
    "PointItem",
    "Round",
    "Rubric",
    "RuleJudge",
    "Sample",
    "Seed",
    "SeedFormatError",
    "SelfRedTeamCoefficients",
    "TemplateSet",
    "WildGuardJudge",
    "bundled_instruction_prompts",
    "bundled_seeds",
    "env",
    "load_hf_seeds",
    "load_instruction_prompts",
    "load_seeds",
    "parallel_env",
    "preference_pair",
    "raw_env",
    "transcript",
]
