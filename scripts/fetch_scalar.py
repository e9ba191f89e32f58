"""Put Scalar's standalone bundle into src/outreach/static/ from a hash-pinned wheel.

The bundle is third-party code and is not committed: `make setup` (and the Docker build) run
this. pip downloads the wheel named in requirements-assets.lock, checking its hash; the one
JavaScript file is extracted. Nothing else of that package is installed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements-assets.lock"
TARGET = ROOT / "src" / "outreach" / "static" / "scalar.standalone.js"
MEMBER_SUFFIX = "templates/scalar/js/scalar.standalone.js"


def main() -> int:
    if TARGET.exists() and TARGET.stat().st_size > 100_000:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                "--only-binary=:all:",
                "-r",
                str(LOCK),
                "-d",
                tmp,
            ],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            print(f"expected one wheel, got {wheels}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheels[0]) as zf:
            members = [n for n in zf.namelist() if n.endswith(MEMBER_SUFFIX)]
            if not members:
                print(f"{MEMBER_SUFFIX} not in {wheels[0].name}", file=sys.stderr)
                return 1
            TARGET.parent.mkdir(parents=True, exist_ok=True)
            TARGET.write_bytes(zf.read(members[0]))
    print(f"Scalar bundle: {TARGET.relative_to(ROOT)} ({TARGET.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
