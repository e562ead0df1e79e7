from judgefree.cli import main

raise SystemExit(main())
