"""``python -m stytr``: see :mod:`stytr.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
