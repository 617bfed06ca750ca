from canary_client.cli import main

main()
