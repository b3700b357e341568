from cnncli.cli.app import main

main()
