"""Before the studio opens: does Qt's display plugin find the system libraries it needs?

On a fresh Debian/Ubuntu (or Fedora) machine PySide6's wheel brings Qt but not the X11/xcb client
libraries its `xcb` platform plugin links against (libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1,
...). Qt then aborts with a cryptic "could not load the Qt platform plugin" message. This module
runs `ldd` on the plugin, lists the "not found" libraries, maps each to its distribution package,
and either installs them (when running as root with apt-get or dnf) or says in one line what to
run. It never imports Qt, so it works when Qt itself cannot load.

Only the studio calls it (`app.main.run_studio`); headless commands (`main.py run`, `./run.sh
--headless`) never get here. Platforms that need no display libraries (offscreen, minimal, vnc,
wayland chosen explicitly) skip the check.

    python -m app.qt_preflight            check, install when root, exit 0 when the studio can open
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Platforms chosen via QT_QPA_PLATFORM that do not use the xcb plugin's libraries
NO_XCB_PLATFORMS = {"offscreen", "minimal", "minimalegl", "vnc", "linuxfb", "eglfs", "wayland",
                    "wayland-egl", "vkkhrdisplay"}

# Debian/Ubuntu package per soname where the usual naming rule (below) does not give it
_DEBIAN_EXCEPTIONS = {
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libGLX.so.0": "libglx0",
    "libOpenGL.so.0": "libopengl0",
    "libGLdispatch.so.0": "libglvnd0",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libgobject-2.0.so.0": "libglib2.0-0",
    "libz.so.1": "zlib1g",
    "libbrotlidec.so.1": "libbrotli1",
    "libbrotlicommon.so.1": "libbrotli1",
    "libxcb-util.so.0": "libxcb-util0",
    "libpng16.so.16": "libpng16-16",
    "libgcrypt.so.20": "libgcrypt20",
}
_SONAME = re.compile(r"^(?P<base>lib[\w.+-]*?)\.so\.(?P<major>\d+)")
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$")


def missing_libraries(ldd_output: str) -> list[str]:
    """The sonames `ldd` reports as "not found", each once, in the order first seen."""
    seen: dict[str, None] = {}
    for line in ldd_output.splitlines():
        match = _NOT_FOUND.match(line)
        if match:
            seen.setdefault(match.group(1))
    return list(seen)


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships a library, by the policy's naming rule: the soname's
    base, lower-cased, plus its major version, with a "-" between them when the base ends in a
    digit (libxcb-icccm.so.4 -> libxcb-icccm4, libxkbcommon-x11.so.0 -> libxkbcommon-x11-0,
    libdbus-1.so.3 -> libdbus-1-3), plus the known exceptions (libGL.so.1 -> libgl1, ...)."""
    if soname in _DEBIAN_EXCEPTIONS:
        return _DEBIAN_EXCEPTIONS[soname]
    match = _SONAME.match(soname)
    if not match:
        return soname.lower()
    base, major = match.group("base").lower(), match.group("major")
    return f"{base}-{major}" if base[-1].isdigit() else f"{base}{major}"


def fedora_provide(soname: str) -> str:
    """What dnf installs a library by (it resolves sonames itself: no table to keep)."""
    return f"{soname}()(64bit)"


@dataclass
class Preflight:
    """What the check found; `ok` when the studio can try to open."""

    ok: bool
    missing: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)  # what installs them (without sudo)
    message: str = ""


def xcb_plugin_path() -> Path | None:
    """PySide6's xcb platform plugin, found without importing Qt (None when absent)."""
    import importlib.util

    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for candidate in (Path(root) / "Qt" / "plugins" / "platforms" / "libqxcb.so",
                          Path(root) / "plugins" / "platforms" / "libqxcb.so"):
            if candidate.is_file():
                return candidate
    return None


def needs_check(env: dict[str, str] | None = None, platform: str | None = None) -> bool:
    """True when the studio will use the xcb plugin: Linux, and no display-less or explicitly
    chosen non-X platform in QT_QPA_PLATFORM."""
    env = os.environ if env is None else env
    if (platform or sys.platform) != "linux":
        return False
    chosen = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip().lower()
    return chosen in ("", "xcb")


def package_manager() -> str | None:
    for tool in ("apt-get", "dnf"):
        if shutil.which(tool):
            return tool
    return None


def install_command(manager: str | None, missing: list[str]) -> tuple[list[str], list[str]]:
    """(packages, command without sudo) that install the missing libraries."""
    if manager == "dnf":
        packages = list(dict.fromkeys(fedora_provide(s) for s in missing))
        return packages, ["dnf", "install", "-y", *packages]
    packages = list(dict.fromkeys(debian_package(s) for s in missing))
    return packages, ["apt-get", "install", "-y", *packages]


def shell_line(command: list[str], as_root: bool) -> str:
    quoted = " ".join(f"'{part}'" if "(" in part else part for part in command)
    return quoted if as_root else f"sudo {quoted}"


def check(ldd_output: str | None = None, manager: str | None = "auto") -> Preflight:
    """Inspect the xcb plugin (or a given `ldd` output) and say what is missing and how to install
    it. Never installs anything."""
    if ldd_output is None:
        plugin = xcb_plugin_path()
        if plugin is None or shutil.which("ldd") is None:
            return Preflight(True)  # nothing to inspect: let Qt try and speak for itself
        try:
            ldd_output = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True,
                                        timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return Preflight(True)
    missing = missing_libraries(ldd_output)
    if not missing:
        return Preflight(True)
    manager = package_manager() if manager == "auto" else manager
    packages, command = install_command(manager, missing)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    message = (f"reelgraph: the studio needs system libraries Qt cannot find ({', '.join(missing)}); "
               f"install them with: {shell_line(command, as_root)}   "
               "(or run ./run.sh --headless to render without a window)")
    return Preflight(False, missing, packages, command, message)


def display_problem(env: dict[str, str] | None = None) -> str:
    """A one-line explanation when there is no display to open a window on, else ""."""
    env = os.environ if env is None else env
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return ""
    return ("reelgraph: no display to open the studio on (DISPLAY is not set): run it in a desktop "
            "session, under `xvfb-run -a ./run.sh`, or render headless with ./run.sh --headless")


def ensure(install: bool = True, out=None) -> int:
    """Check before the studio starts; install what is missing when root and `install`.
    Returns 0 when the studio can open, else 3 after printing one line on `out` (stderr)."""
    out = out or sys.stderr
    if not needs_check():
        return 0
    result = check()
    if not result.ok:
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        if install and as_root and result.command and shutil.which(result.command[0]):
            print(f"reelgraph: installing the libraries the studio's display needs: "
                  f"{' '.join(result.packages)}", file=out, flush=True)
            if _run_install(result.command):
                result = check()
        if not result.ok:
            print(result.message, file=out, flush=True)
            return 3
    problem = display_problem()
    if problem:
        print(problem, file=out, flush=True)
        return 3
    return 0


def _run_install(command: list[str]) -> bool:
    """Run the package manager (apt-get refreshes its lists once when a package is unknown, as in
    a fresh container whose lists are empty)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(command, env=env).returncode == 0:
        return True
    if command[0] == "apt-get" and subprocess.run(["apt-get", "update", "-qq"], env=env).returncode == 0:
        return subprocess.run(command, env=env).returncode == 0
    return False


if __name__ == "__main__":
    sys.exit(ensure(install="--no-install" not in sys.argv[1:]))
