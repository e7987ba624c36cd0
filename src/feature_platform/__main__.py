from feature_platform.cli import main

raise SystemExit(main())
