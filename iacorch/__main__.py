from iacorch.cli.main import main

main()
