"""A Ray instance that Reelgraph starts for a batch accepts no unauthenticated peer: Ray cannot
be bound to loopback (its gRPC servers listen on every interface), so a private Ray runs with
token authentication (Ray's default for a new local instance)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = textwrap.dedent("""
    import os
    from engine.batch.ray_executor import RayPool
    from engine.config import Settings
    with RayPool(Settings(), workers=1) as pool:
        print(os.environ.get("RAY_AUTH_MODE"))
""")


def test_a_private_ray_runs_with_token_authentication(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["HOME"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True,
                            text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "token"
    assert (tmp_path / ".ray" / "auth_token").stat().st_size > 0  # Ray made this user's token
