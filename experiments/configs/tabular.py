"""Tabular decoding-based regression on one TALENT-format dataset: CE pretraining, RL fine-tuning
(GenRe² by default), then sampling-based evaluation of both.

Variants (the part after the colon; defined in genre_jax/recipes.py, described there):
  quick (default) | paper | tiny

Launch:
  python launch.py                                                   # quick, bundled airfoil_self_noise
  python launch.py --config=experiments/configs/tabular.py:paper --workdir=runs/airfoil-paper
  python launch.py --config=experiments/configs/tabular.py \
      --config.data_dir=/path/to/talent --config.dataset=houses --workdir=runs/houses
  python launch.py --workdir=runs/houses --config.phases=rl,eval --config.rl.method=remax \
      --config.data_dir=/path/to/talent --config.dataset=houses   # another method, same CE
  python launch.py --config=experiments/configs/tabular.py:tiny --config.tokenizer.name=ieee --workdir=/tmp/t
"""
# The recipes live in the library (an installed package builds them too); this file is the path
# launch.py's --config flag names, and the place the launch commands above are documented.
from genre_jax.recipes import DEFAULT_DATASET, QUICK_RL_EPOCHS, VARIANTS, get_config  # noqa: F401
