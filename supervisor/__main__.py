from supervisor.run_cli import main

main()
