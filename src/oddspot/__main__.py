"""`python -m oddspot` runs the CLI."""

from oddspot.cli import main

main()
