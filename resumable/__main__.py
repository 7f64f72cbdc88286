from resumable.cli import main

main()
