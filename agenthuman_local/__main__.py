from agenthuman_local.cli import main

main()
