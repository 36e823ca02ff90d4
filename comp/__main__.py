"""`python -m comp` (and `torchrun -m comp`) run the CLI."""

from comp.cli import main

main()
