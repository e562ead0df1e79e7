from judgefree.cli.main import main

raise SystemExit(main())
