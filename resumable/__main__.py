"""python -m resumable: the command line."""

from resumable.cli import main

main()
