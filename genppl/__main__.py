"""``python -m genppl``: the same command line as the ``genppl`` script, for environments
where the script is not on PATH (a bare venv, ``subprocess`` with ``sys.executable``)."""

from genppl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
