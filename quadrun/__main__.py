from quadrun.cli import main

main()
