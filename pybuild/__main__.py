from pybuild.cli import main

main()
