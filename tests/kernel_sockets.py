"""Kernels the tests start listen on Unix sockets in a folder of their own, as `resumable execute`'s do.

jupyter_client picks a kernel's five TCP ports by binding each to port 0 and closing it; the kernel
binds them a moment later. In between, any process on the machine may take one (another test's
kernel, an outgoing connection's ephemeral port), and the kernel dies at start with "Address already
in use" while nbclient waits out its 60 s start timeout. One CI run was lost that way. Unix sockets in
a folder no other kernel uses leave no such window. The transport is not what these tests test:
users' kernels run on either, and `resumable execute` uses these sockets itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resumable._headless.kernel import ipc_config


def kernel_config(folder: Path) -> Any:
    """The traitlets config for NotebookClient (``config=``), papermill (an engine keyword) or a KernelManager."""
    return ipc_config(str(folder))


def kernel_argv(folder: Path) -> list[str]:
    """The same, as options of a Jupyter command line (``jupyter nbconvert --execute``, a Jupyter server)."""
    return ["--KernelManager.transport=ipc", f"--KernelManager.ip={folder / 'kernel'}"]
