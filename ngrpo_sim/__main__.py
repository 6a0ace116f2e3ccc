import sys

from ngrpo_sim.cli import main

sys.exit(main())
