from localrouter.cli import main

raise SystemExit(main())
