from __future__ import annotations

from pybuild.cli import main

if __name__ == "__main__":
    main()
