"""The composition root: settings, the one wiring, the ``sonolake`` command line and the demo.

:mod:`sonolake.settings` reads every configurable value (``SONOLAKE_*``) and checks it;
:mod:`sonolake.wiring` turns settings into the lake, the registry and the serving engine for
every process; :mod:`sonolake.cli` and :mod:`sonolake.commands` are the command line;
:mod:`sonolake.demo` runs the whole loop. Nothing below this package reads settings.
"""
