"""Run Python code in a fresh interpreter where torch cannot be imported, as in `pip install oddspot[runtime]`.

An import hook refuses torch (and torchvision), so any import of it, however indirect, fails
exactly as it would in an environment without torch; the code also asserts at the end that
torch is not in `sys.modules`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent('''
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: torch-free runtime test)", name=name)
            return None
    sys.meta_path.insert(0, _NoTorch())
''')
CHECK = "\nimport sys as _s\nassert 'torch' not in _s.modules, 'torch was imported'\nprint('TORCH-FREE-OK')\n"


def run_without_torch(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` (with `sys.argv[1:] = args`) without torch; the result's stdout ends with TORCH-FREE-OK on success."""
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code) + CHECK, *args],
                          capture_output=True, text=True, timeout=timeout)


def cli_without_torch(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `oddspot ARGV...` without torch (the CLI's own entry point, in a fresh interpreter)."""
    code = "import sys\nfrom oddspot.cli import main\nsys.argv = ['oddspot', *sys.argv[1:]]\ntry:\n    main()\nexcept SystemExit as e:\n" \
           "    if e.code not in (0, None):\n        raise\n"
    return run_without_torch(code, *argv, timeout=timeout)
