"""`python -m gateway` is `quasar serve`."""

from quasar.cli import main

if __name__ == "__main__":
    main(["serve"], prog_name="python -m gateway")
