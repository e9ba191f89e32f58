"""Put third-party browser assets into src/outreach/static/ from hash-pinned wheels.

They are not committed: `make setup` (and the Docker build) run this. pip downloads the
wheels named in requirements-assets.lock, checking their hashes; one file is taken from
each. Nothing of those packages is installed.
- Scalar's API reference bundle (star-openapi-scalar), for `{base}/doc`;
- the ALTCHA widget (django-altcha), for the development demo form `{base}/demo/contact`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements-assets.lock"
STATIC = ROOT / "src" / "outreach" / "static"
# wheel name prefix -> (member suffix, target file, smallest plausible size)
ASSETS = {
    "star_openapi_scalar": (
        "templates/scalar/js/scalar.standalone.js",
        STATIC / "scalar.standalone.js",
        100_000,
    ),
    "django_altcha": ("static/altcha/altcha.min.js", STATIC / "altcha.min.js", 20_000),
}


def _present() -> bool:
    return all(t.exists() and t.stat().st_size >= n for _, t, n in ASSETS.values())


def main() -> int:
    if _present():
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
        wheels = {w.name.split("-", 1)[0].lower(): w for w in Path(tmp).glob("*.whl")}
        for prefix, (suffix, target, _) in ASSETS.items():
            wheel = wheels.get(prefix)
            if wheel is None:
                print(f"no wheel for {prefix} in {sorted(wheels)}", file=sys.stderr)
                return 1
            with zipfile.ZipFile(wheel) as zf:
                members = [n for n in zf.namelist() if n.endswith(suffix)]
                if not members:
                    print(f"{suffix} not in {wheel.name}", file=sys.stderr)
                    return 1
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(members[0]))
            print(f"asset: {target.relative_to(ROOT)} ({target.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
