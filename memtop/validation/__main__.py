"""``python3 -m memtop.validation OUTDIR [--quick] [--dry-run]``."""

from memtop.validation.cli import main

raise SystemExit(main())
