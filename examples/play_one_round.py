"""Play one round of the safety game with the bundled model as both players.

    python examples/play_one_round.py

The attacker rewrites a seed request, the defender answers each rewrite twice, the model-free
judge scores the answers, and the environment prints the transcript with everyone's rewards.
"""

import advgame_env
from agents import HFBackend, load_model
from agents.policy import Policy

model, tokenizer = load_model("smollm2-135m-instruct")  # converted once from the bundled GGUF
backend = HFBackend(model, tokenizer)
attacker = Policy(backend, max_tokens=160, temperature=0.7, seed=0)
defender = Policy(backend, max_tokens=160, temperature=0.7, seed=1)

env = advgame_env.parallel_env(judge=advgame_env.RuleJudge(), render_mode="human")
observations, infos = env.reset(seed=0)
print(f"seed [{infos['attacker_0']['label']}]: {env.round.seed.prompt}\n")

# Step 1: the attacker writes two rewrites; the defender's action is ignored.
rewrites = attacker.attack([observations["attacker_0"]], num_attacks=2)[0]
observations, *_ = env.step({"attacker_0": rewrites, "defender_0": None})

# Step 2: the defender answers each valid rewrite twice; the judge pays both players.
answers = defender.respond([observations["defender_0"]], num_responses=2)[0]
_, rewards, _, _, infos = env.step({"attacker_0": None, "defender_0": answers})
print(f"\nrewards: {rewards}")
print(f"DPO pairs -- attacker: {infos['attacker_0']['pairs']}, defender: {infos['defender_0']['pairs']}")
