"""``python -m ticketing_local.sandbox.mollie --host … --port … [--keys DIR]`` (see :func:`.main`)."""

from .server import main

if __name__ == "__main__":
    raise SystemExit(main())
