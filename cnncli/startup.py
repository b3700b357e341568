"""Imported first by the package: Ctrl-C while the ``cnncli`` program is still importing
(NumPy takes a moment, before the CLI's own handler runs) ends with the CLI's one line and
exit 130, not a traceback.

Only for the program itself (the console script or ``python -m cnncli``, during whose
import ``sys.argv[0]`` is ``-m``): a library user's Ctrl-C stays theirs.
"""

import os
import sys


def quiet_interrupt_while_starting() -> None:
    program = os.path.splitext(os.path.basename(sys.argv[0]))[0] if sys.argv else ""
    if program not in ("cnncli", "-m", "cnncli-script"):
        return
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, traceback)
        sys.stderr.write("\ncnncli: interrupted\n")
        sys.stderr.flush()
        os._exit(130)

    sys.excepthook = hook


quiet_interrupt_while_starting()
