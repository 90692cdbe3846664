"""`python -m tests.tiny DIR`: build the tiny models and print the settings to use them."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.tiny.all import build_all


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models").resolve()
    for name, value in build_all(folder).items():
        print(f"export {name}={value}")


if __name__ == "__main__":
    main()
