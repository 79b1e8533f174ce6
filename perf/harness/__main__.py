"""`python -m perf.harness`: see perf.harness.run."""

from perf.harness.run import main

raise SystemExit(main())
