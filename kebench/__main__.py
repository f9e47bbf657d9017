"""`python -m kebench ...` (what torchrun starts: `torchrun --nproc_per_node 2 -m kebench run ...`)."""

from kebench.cli import main

main()
