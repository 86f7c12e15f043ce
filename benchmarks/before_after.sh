#!/bin/bash
# The RL step before and after a change, beside the PyTorch peer, on this machine (issue 34): vs_peer.py
# with two genre_jax checkouts (the old one in a temporary git worktree) alternating with the peer at
# tiny, quick and paper, then bench_rl.py on this checkout. Run it with every other job paused; about
# 8 minutes on the 2-core VM. Writes benchmarks/results/vs_peer_cpu.json and rl_cpu.json.
#   bash ../shared/peers/torch_remax/setup.sh /tmp/torchpeer-venv   # once: the peer's venv
#   bash benchmarks/before_after.sh 90a3505                          # the commit to compare against
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: before_after.sh BASE_COMMIT}
DIR=$(mktemp -d /tmp/genre_jax_before.XXXX)
git worktree add --detach "$DIR" "$BASE" >/dev/null
trap 'git worktree remove --force "$DIR"' EXIT
.venv/bin/python benchmarks/vs_peer.py --peer_python=/tmp/torchpeer-venv/bin/python \
    --code "before=$DIR" --code after=. --sizes tiny,quick,paper --rounds 2 --repeats 3 \
    --out benchmarks/results/vs_peer_cpu.json
.venv/bin/python benchmarks/bench_rl.py --sizes paper,quick,tiny --repeats 3 --paper-repeats 2 \
    --out benchmarks/results/rl_cpu.json
