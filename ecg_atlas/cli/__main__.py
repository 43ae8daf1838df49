"""`python -m ecg_atlas.cli COMMAND ...`: the same as the `ecg-atlas` console script."""

import sys

from ecg_atlas.cli import main

sys.exit(main())
