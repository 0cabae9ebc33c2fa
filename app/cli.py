"""The ``cnnlab`` console command (``python -m cnnlab`` runs the same).

    cnnlab [--host H] [--port P]           one web process (guarded uvicorn: app/server.py)
    cnnlab --workers N                     N web processes sharing one socket (app/server.Supervisor)
    cnnlab worker [--burst]                a training worker (app/jobs/worker.py)
    cnnlab train --dataset digits …        train the tiny CNN, print its held-out accuracy (app/commands.py)
    cnnlab notebook "/conv?preset=seed"    a page's notebook on stdout, as its link gives it (app/commands.py)

``main`` dispatches on the first word (worker, train, notebook); anything else serves.
Several web processes, or workers, share classes, limits and trainings through Valkey, so
``--workers`` above 1 and ``cnnlab worker`` need ``CNNLAB_REDIS_URL``; and with it every
web process must sign cookies (and name uploads) with the same key, so ``CNNLAB_SECRET_KEY``
is required too. A missing one is a one-line error and exit code 2, before anything starts.
``train`` and ``notebook`` need neither.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

USAGE_ERROR = 2

SUBCOMMANDS = """other commands (each has its own --help):
  cnnlab worker [--burst]              run a training worker (needs CNNLAB_REDIS_URL)
  cnnlab train --dataset digits|mnist  train the lab's CNN here, print its held-out accuracy
                                       (--epochs, --batch-size, --lr, --optimizer, --seed,
                                       --save model.npz, --onnx model.onnx)
  cnnlab notebook PAGE                 write a page's Jupyter notebook to stdout:
                                       cnnlab notebook "/conv?preset=seed" > conv.ipynb"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cnnlab", description="Serve CNN Lab (http://127.0.0.1:8000 by default).",
        usage="%(prog)s [-h] [--host HOST] [--port PORT] [--workers N] [--reload]\n"
              "       %(prog)s {worker,train,notebook} [-h] ...",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SUBCOMMANDS)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="web processes serving the same address (default: %(default)s; "
                             "more than 1 needs CNNLAB_REDIS_URL)")
    parser.add_argument("--reload", action="store_true", help="restart when the code changes (development)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.reload and args.workers > 1:
        parser.error("--reload runs one process: leave out --workers")
    return args


def fail(message: str) -> None:
    """A start-up error: one line on stderr, exit code 2."""
    print(f"cnnlab: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(USAGE_ERROR)


def load_settings():  # -> Settings
    """The settings of this process's ``CNNLAB_*`` variables; a bad value is a start-up error."""
    from pydantic import ValidationError

    from cnnlab.app.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        fail(f"CNNLAB_{where.upper()}: {first.get('msg', exc)}")
        raise  # not reached


def check_shared(settings, *, needed_for: str | None) -> None:  # settings: Settings
    """``needed_for`` the shared engine (workers): CNNLAB_REDIS_URL must be set. With it,
    CNNLAB_SECRET_KEY must be set too."""
    if not settings.redis_url:
        if needed_for is not None:
            fail(f"{needed_for} needs CNNLAB_REDIS_URL (a Valkey or Redis server): without it, classes "
                 "and trainings are not shared between processes")
        return
    if "secret_key" not in settings.model_fields_set or not settings.secret_key.get_secret_value():
        fail("CNNLAB_REDIS_URL is set, so CNNLAB_SECRET_KEY must be set too, the same in every process "
             "(they must all sign cookies alike)")


def worker(argv: Sequence[str]) -> None:
    """``cnnlab worker``: run training jobs from the shared queue (app/jobs/worker.py)."""
    if any(arg in ("-h", "--help") for arg in argv):
        settings = None  # the worker's own help needs no settings
    else:
        settings = load_settings()
        check_shared(settings, needed_for="cnnlab worker")
    from cnnlab.app.jobs.worker import main as worker_main

    try:
        code = worker_main(list(argv))
    except KeyboardInterrupt:
        code = 0
    raise SystemExit(code or 0)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        worker(argv[1:])
        return
    if argv[:1] in (["train"], ["notebook"]):
        from cnnlab.app.commands import COMMANDS

        raise SystemExit(COMMANDS[argv[0]](argv[1:]))
    args = parse_args(argv)
    settings = load_settings()
    check_shared(settings, needed_for="--workers" if args.workers > 1 else None)
    print(f"CNN Lab: http://{args.host}:{args.port}/", flush=True)
    if args.reload:  # development only: uvicorn's reloader runs the app in a child of its own
        import uvicorn

        uvicorn.run("cnnlab.app.main:app", host=args.host, port=args.port, reload=True)
        return
    if args.workers > 1:
        from cnnlab.app.server import Supervisor

        raise SystemExit(Supervisor(args.host, args.port, args.workers).run())
    from cnnlab.app.main import app
    from cnnlab.app.server import make_server

    try:
        make_server(app, args.host, args.port, settings).run()
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has shut down cleanly
        pass


if __name__ == "__main__":
    main()
