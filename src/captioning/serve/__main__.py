"""`python -m captioning.serve [--release R] [--host H] [--port P] ...`."""

import argparse
import logging
import os
import sys

from captioning.errors import CaptioningError
from captioning.serve.server import add_arguments, run
from captioning.utils.logs import show_logs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning.serve",
                                     description="Serve a release: a JSON API and a web page.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up notes
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        with show_logs(logging.INFO):
            return run(args)
    except CaptioningError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
