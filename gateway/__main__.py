"""`python -m gateway [OPTIONS]` is `quasar serve [OPTIONS]`."""

import sys

from quasar.entry import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]], prog_name="python -m gateway")
