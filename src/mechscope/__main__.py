"""``python -m mechscope`` runs the command line."""

from mechscope.cli import main

main()
