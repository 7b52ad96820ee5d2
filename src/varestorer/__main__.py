from varestorer.cli.main import main

raise SystemExit(main())
