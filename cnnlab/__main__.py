from cnnlab.app.cli import main

main()
