from valley_cli.main import main

raise SystemExit(main())
