"""Play one round of the safety game with the bundled model as both players.

    python examples/play_one_round.py

The attacker rewrites a seed request twice, the defender answers each valid rewrite twice, the
model-free judge scores the answers, and the environment prints the transcript with rewards.
The untrained 135M model rarely keeps the attacker's strict <think>/<prompt> format (each miss
is paid -1, which is what training fixes), so a second, direct round sends a seed straight to
the defender to show its answers being judged.
"""

import advgame_env
from agents import HFBackend, load_model
from agents.policy import Policy

model, tokenizer = load_model("smollm2-135m-instruct")  # converted once from the bundled GGUF
backend = HFBackend(model, tokenizer)
attacker = Policy(backend, max_tokens=160, temperature=0.7, seed=0)
defender = Policy(backend, max_tokens=320, temperature=0.7, seed=1)
env = advgame_env.parallel_env(judge=advgame_env.RuleJudge(), render_mode="ansi")

for options in ({}, {"direct": True}):
    observations, infos = env.reset(seed=0, options=options)
    # Step 1: the attacker writes two rewrites (ignored in a direct round); the defender waits.
    rewrites = attacker.attack([observations["attacker_0"]], num_attacks=2)[0]
    observations, *_ = env.step({"attacker_0": rewrites, "defender_0": None})
    # Step 2: the defender answers each valid rewrite twice; the judge pays both players.
    answers = defender.respond([observations["defender_0"]], num_responses=2)[0]
    _, rewards, _, _, infos = env.step({"attacker_0": None, "defender_0": answers})
    print(env.render())
    print(f"rewards: {rewards}")
    print(f"DPO pairs: attacker {infos['attacker_0']['pairs']}, defender {infos['defender_0']['pairs']}\n")
